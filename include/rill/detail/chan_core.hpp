// The untyped channel core under chan<T> (Go's hchan). Not API.
#pragma once

#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>

#include "rill/detail/core.hpp"

namespace rill {

// closed_channel: a send on a closed channel, or a second close (Go panics on both).
class closed_channel : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

// nil_channel: an operation on a handle that refers to no channel (moved-from, or made
// with nullptr, or a default-constructed send_chan/recv_chan).
class nil_channel : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

}  // namespace rill

namespace rill::detail {

// How the core moves values of the element type T without knowing it.
//   construct(raw, src): ::new (raw) T(std::move(*src)); may throw
//   emplace(opt, src):   static_cast<std::optional<T>*>(opt)->emplace(std::move(*src)); may throw
//   destroy(p):          p->~T()
struct chan_ops {
  void (*construct)(void* raw, void* src);
  void (*emplace)(void* opt, void* src);
  void (*destroy)(void* p) noexcept;
  std::size_t size;
  std::size_t align;
};

// recv_result: how a receive that did not park ended.
enum class recv_result : signed char {
  would_park = 0,  // nothing to take, and the channel is open
  received = 1,    // a value was emplaced into the caller's std::optional
  closed = -1,     // closed and drained
};

class chan_core {
 public:
  // create() allocates a channel of `capacity` slots (0: unbuffered). Throws
  // std::length_error for a capacity whose buffer cannot be addressed, std::bad_alloc.
  static chan_core* create(std::size_t capacity, const chan_ops* ops);
  void retain() noexcept { refs_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept;

  // send() moves *src into the channel; parks until it is delivered or buffered. Throws
  // closed_channel if the channel is or becomes closed (then *src is left as it was).
  void send(void* src);
  // try_send(): like send() but never parks; false when it would.
  bool try_send(void* src);
  // send_with_lock()/recv_with_lock(): send()/recv() for a caller that holds mu_ already
  // (an inline fast path that found it could not finish; they release mu_).
  void send_with_lock(void* src) RILL_RELEASE(mu_);
  bool recv_with_lock(void* opt) RILL_RELEASE(mu_);

  // The inline fast path of a buffered channel of a trivially copyable T (chan<T> uses it):
  // a value that goes to, or comes from, the ring buffer with nobody to hand over to is
  // copied under the lock with no call into the core. Anything else (unbuffered, full,
  // empty, waiters queued, closed, schedule perturbation on) continues in the core, the
  // lock held.
  template <class T>
  void send_buffered(T* src) {
    if (cap_ == 0 || g_chaos.load(std::memory_order_relaxed)) {
      send(src);
      return;
    }
    mu_.lock();
    const std::size_t n = count();
    if (n < cap_ && recvq_.empty() && !is_closed()) [[likely]] {
      std::memcpy(slot(n), src, sizeof(T));
      set_count(n + 1);
      mu_.unlock();
      return;
    }
    send_with_lock(src);
  }
  template <class T>
  bool recv_buffered(std::optional<T>* opt) {
    if (cap_ == 0 || g_chaos.load(std::memory_order_relaxed)) return recv(opt);
    mu_.lock();
    const std::size_t n = count();
    if (n > 0 && sendq_.empty()) [[likely]] {
      alignas(T) unsigned char raw[sizeof(T)];
      std::memcpy(raw, slot(0), sizeof(T));
      advance_head();
      set_count(n - 1);
      mu_.unlock();
      opt->emplace(std::bit_cast<T>(raw));
      return true;
    }
    return recv_with_lock(opt);
  }
  // recv() emplaces a value into *opt (an empty std::optional<T>); parks until one arrives.
  // Returns false, leaving *opt empty, once the channel is closed and drained.
  bool recv(void* opt);
  // try_recv() never parks: received (into *opt), would_park, or closed (and drained).
  recv_result try_recv(void* opt);
  void close();
  // try_close() closes the channel unless it already is; false if it was. Never throws,
  // never switches fibers.
  bool try_close() noexcept;
  bool close_chunked(bool may_yield) noexcept;  // both of them (src/sync/chan.cpp)
  std::size_t size() noexcept;
  std::size_t capacity() const noexcept { return cap_; }
  bool closed() noexcept;

  // For select (src/sync/select.cpp).
  //
  // count_, closed_ and the queues' heads are written under mu_ only, but are atomics
  // (relaxed) so that a lock-free probe may read them through mu_'s sequence (see
  // spinlock): try_send/try_recv that would fail, and select with default, then take no
  // lock at all (Go's fast paths).
  spinlock mu_;
  std::atomic<bool> closed_{false};  // guarded by mu_; false -> true once (I3)
  // A refill of the buffer from a parked sender threw: the buffer may stay short while
  // senders wait (I4's exception), until none does (debug builds track the end).
  bool short_ RILL_GUARDED_BY(mu_) = false;
  // A close is waking the waiters, a chunk at a time (I3's exception, while it lasts).
  bool draining_ RILL_GUARDED_BY(mu_) = false;
  std::size_t cap_ = 0;
  std::atomic<std::size_t> count_{0};  // guarded by mu_
  std::size_t count() const noexcept { return count_.load(std::memory_order_relaxed); }
  void set_count(std::size_t n) noexcept { count_.store(n, std::memory_order_relaxed); }
  bool is_closed() const noexcept { return closed_.load(std::memory_order_relaxed); }
  // recv_ready()/send_ready(): the operation would not park (it may still fail: a queued
  // waiter may belong to a select that another case already won). Under mu_, or in a probe.
  // (Not analysed: a probe reads the queues without the lock, validated by mu_'s sequence.)
  bool recv_ready() const noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
    return count() > 0 || !sendq_.empty() || is_closed();
  }
  bool send_ready() const noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
    return is_closed() || count() < cap_ || !recvq_.empty();
  }
  // probe_recv()/probe_send(): lock-free; 1 ready, 0 not ready (both at one instant during
  // the call), -1 unknown (the channel was locked or changed meanwhile).
  int probe_recv() const noexcept {
    const std::uint32_t v = mu_.read_begin();
    const bool r = recv_ready();
    return mu_.read_valid(v) ? r : -1;
  }
  int probe_send() const noexcept {
    const std::uint32_t v = mu_.read_begin();
    const bool r = send_ready();
    return mu_.read_valid(v) ? r : -1;
  }
  // check_invariants() aborts with a report unless I1-I4 of src/sync/chan.cpp hold; under
  // mu_. Debug builds of the library call it at the end of each locked operation.
  void check_invariants() noexcept RILL_REQUIRES(mu_);
  // head_: the next slot to receive from, < cap_ (0 if cap_ is 0).
  std::size_t head_ RILL_GUARDED_BY(mu_) = 0;
  wait_list recvq_ RILL_GUARDED_BY(mu_);
  wait_list sendq_ RILL_GUARDED_BY(mu_);
  const chan_ops* ops_ = nullptr;
  std::atomic<long> refs_{1};
  char* buf_ = nullptr;
  std::uint64_t id_ = 0;

  std::size_t elem_size_ = 0;  // ops_->size, kept here: one load less per buffered op
  // slot(k): the k-th buffered value from the head, k <= cap_ (no division: head_ < cap_).
  char* slot(std::size_t k) const noexcept RILL_REQUIRES(mu_) {
    std::size_t i = head_ + k;
    if (i >= cap_) i -= cap_;
    return buf_ + i * elem_size_;
  }
  void advance_head() noexcept RILL_REQUIRES(mu_) {
    if (++head_ == cap_) head_ = 0;
  }
};

// One case of a select, as the core sees it.
enum class case_kind : std::uint8_t { recv, send, timeout, otherwise };
struct select_case {
  chan_core* ch = nullptr;  // nullptr: a nil channel (never ready), or a timeout/default
  case_kind kind = case_kind::recv;
  void* slot = nullptr;       // recv: std::optional<T>*; send: T*
  std::int64_t deadline = 0;  // timeout: now_ns() deadline
};

// select_core() runs a select over n cases and returns the index of the case that ran
// (for a recv case, *slot holds the value, or is empty if the channel was closed).
// Throws closed_channel when the chosen case is a send on a closed channel.
std::size_t select_core(select_case* cases, std::size_t n);

// Timers that send on a channel (time.hpp).
void start_after(chan_core* ch, std::int64_t deadline, void* value_src);
struct ticker_state;
ticker_state* start_ticker(chan_core* ch, std::int64_t period_ns);
void stop_ticker(ticker_state* t) noexcept;

}  // namespace rill::detail
