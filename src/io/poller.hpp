// The netpoller: one epoll instance per runtime. See poller.cpp for the protocol.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include "rill/detail/core.hpp"
#include "rill/detail/io_core.hpp"
#include "sched/lock_rank.hpp"

namespace rill::detail {

struct fiber;
class runtime;
class poller;

// io_waiter: the fiber parked on one direction of a poll_desc. On its stack.
struct io_waiter {
  enum result_t : std::uint8_t { pending, ready, closed, recheck };
  fiber* f = nullptr;
  result_t result = pending;  // written by the waker under the poll_desc's mu
};

// poll_desc: one registration of an fd (Go's pollDesc). Lives in its poller's table until
// the poller ends, recycled through a free list, so an event that names a descriptor always
// names valid memory; `seq` (in `state` and in each epoll event) tells a stale event, or a
// stale io_ref, from the current registration.
//
// Invariants (under mu unless said otherwise):
//   D1  dir[d].waiter != nullptr implies dir[d].ready == false (readiness is handed to a
//       waiter directly, or kept in `ready` for the next one).
//   D2  A waiter is unlinked (waiter = nullptr) by exactly one party: the dispatcher, its
//       timer, close, a deadline change, an interrupt or a deadlock abort; that party
//       readies the fiber. (runtime::io_waiters counts the fiber from before it parks
//       until it runs again, so a fiber on its way to a run queue is never "asleep".)
//   D3  state's seq changes only in finish() (under mu), after the fd left the epoll set.
//   D4  refs (in state) counts the owner (until close) plus operations in progress; the fd
//       is deregistered and closed only when refs is 0 and closing is set.
//   D5  A descriptor on the poller's free list holds no registration: fd is -1, refs 0, not
//       closing, and neither direction has a waiter or a ready edge (finish() leaves it so).
//   D6  index and owner are constant: owner->desc(index) is the descriptor itself.
//   D7  A linked waiter's result is pending; the party that unlinks it (D2) sets the result
//       before it readies the fiber, except a deadlock abort's cancel (the fiber throws).
//
// Debug builds check (poller.cpp, RILL_CHECK_DESC): D1 in both directions at each hand-off
// and where a waiter is linked; D2 and D7 at each hand-off and cancel (the waiter was
// pending) and when the parked fiber resumes (its result is set, its waiter unlinked); D4
// in io_release() (a reference was held) and finish() (refs 0, closing); D5 and D6 when
// open() takes a descriptor. D3 is not checked: its one writer is finish(), where a check
// would restate the code.
struct poll_desc {
  // state: [seq:32][closing:1][refs:31]. Atomic so that io_acquire() takes no lock.
  std::atomic<std::uint64_t> state{0};
  ranked_spinlock mu{lock_rank::poll_desc};  // held across a park: see sched/lock_rank.hpp
  int fd = -1;                               // constant during a registration
  bool owns_fd = false;                      // constant during a registration
  bool is_socket = false;
  std::uint32_t index = 0;  // constant: position in the poller's table
  poller* owner = nullptr;  // constant
  struct direction {
    bool ready = false;           // guarded by mu: an edge no waiter has consumed
    io_waiter* waiter = nullptr;  // guarded by mu
    std::atomic<std::int64_t> deadline{INT64_MAX};
  } dir[2];
  poll_desc* next_free = nullptr;  // guarded by the poller's mu_

  static constexpr std::uint64_t closing_bit = 1ULL << 31;
  static constexpr std::uint64_t refs_mask = closing_bit - 1;
  static std::uint32_t seq_of(std::uint64_t s) noexcept {
    return static_cast<std::uint32_t>(s >> 32);
  }
};

class poller {
 public:
  static constexpr int max_events = 128;

  explicit poller(runtime* rt);  // throws std::system_error
  poller(const poller&) = delete;
  poller& operator=(const poller&) = delete;

  // The runtime holds one reference, every live registration another: a socket closed
  // after its runtime ended still finds its epoll set.
  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept;

  runtime* rt() const noexcept { return rt_; }
  // rt_gone(): called by the runtime's destructor; waits from then on are misuse.
  void detach_runtime() noexcept { rt_ = nullptr; }

  // open() registers fd; see io_open(). Returns the new registration.
  io_ref open(int fd, bool owns_fd);
  // finish() ends a registration whose refs reached 0 with closing set (D4); `added`: its
  // fd is in the epoll set (false when EPOLL_CTL_ADD failed).
  void finish(poll_desc* pd, bool added = true) noexcept;

  // poll() waits up to timeout_ns (< 0: no limit; 0: just looks) for events and stores the
  // fibers they make runnable in out[0 .. 2 * max_events) (not yet readied: the caller
  // queues them); returns their count. *woken is set when the wake-up eventfd fired.
  int poll(std::int64_t timeout_ns, fiber** out, bool* woken) noexcept;
  // wakeup() makes a poll() blocked now, or the next one, return (eventfd write).
  void wakeup() noexcept;
  // drain_wakeup() resets the eventfd; only the worker that blocks in poll() calls it.
  void drain_wakeup() noexcept;

  poll_desc* desc(std::uint32_t index) const noexcept {
    poll_desc* chunk = chunks_[index / chunk_size].load(std::memory_order_acquire);
    return chunk + index % chunk_size;
  }

 private:
  ~poller();
  poll_desc* allocate();  // a free descriptor (fields reset), or a new one

  static constexpr std::uint32_t chunk_size = 1024;
  static constexpr std::uint32_t max_chunks = 4096;  // 4M registrations at once
  static constexpr std::uint64_t wake_token = ~0ULL;

  runtime* rt_;
  int epfd_ = -1;
  int evfd_ = -1;
  std::atomic<long> refs_{1};
  ranked_mutex mu_{lock_rank::leaf};
  poll_desc* free_ RILL_GUARDED_BY(mu_) = nullptr;
  std::uint32_t nchunks_ RILL_GUARDED_BY(mu_) = 0;
  std::atomic<poll_desc*> chunks_[max_chunks] = {};  // written under mu_, read lock-free
};

}  // namespace rill::detail
