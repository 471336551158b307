// The lock order: the one list. src/README.md ("Lock order") and the comments at the locks
// cite it; debug builds check it.
//
// Outer first (a thread holding a lock takes only locks listed below it):
//   a channel's or wait list's spinlock   (rill/detail/core.hpp spinlock; not checked)
//   the watchdog's mutex                   (watchdog.cpp; taken with no runtime lock held;
//                                           not checked)
//   g_runtimes_mu       lock_rank::runtimes      every live runtime; no runtime lock is held
//                                                when it is taken
//   runtime::timer_mu_  lock_rank::timers
//   runtime::idle_mu_   lock_rank::idle
//   runtime::gq_mu_     lock_rank::global_queue
//   runtime::pools_mu_  lock_rank::pools         the pools of stacks of other sizes
//   a stack pool's lock lock_rank::stack_pool
//   a poll descriptor's spinlock  lock_rank::poll_desc    held across its fiber's park
//       (io_wait), so what a switch takes (with tracing on, the next three) comes after it
//   a stack slot's spinlock       lock_rank::stack_slot   the fiber registry
//   g_rings_mu (observe.cpp)      lock_rank::trace_rings  the trace's list of rings
//   a trace ring's spinlock       lock_rank::trace_ring   observe.cpp
//   leaves (nothing is taken under them)     lock_rank::leaf: runtime::deadlock_mu_,
//       runtime::poller_mu_, the poller's table mutex
// No lock is held across a context switch, except the one an after-switch action releases
// (always a spinlock: a channel's, a wait list's or a poll descriptor's). Timer callbacks run
// with no lock held.
//
// Checked: the locks above that have a rank (ranked_mutex, ranked_spinlock; all in src/). A
// thread that takes a ranked lock while it holds one of the same or a later rank aborts with both
// ranks named. A lock held across a switch is released by the after-switch action on the thread
// that took it, so the per-thread stack stays right. The spinlocks in public headers
// (channels, rill::mutex and the other sync types, the pipeline's) are not checked: their
// layout must not depend on NDEBUG, and a rank check would add to every channel operation.
#pragma once

#include <cstdint>

#include "rill/detail/core.hpp"
#include "rill/detail/thread_safety.hpp"

namespace rill::detail {

enum class lock_rank : std::uint8_t {
  runtimes = 1,
  timers,
  idle,
  global_queue,
  pools,
  stack_pool,
  poll_desc,
  stack_slot,
  trace_rings,
  trace_ring,
  leaf,
};

// lock_rank_acquire()/lock_rank_release(): the calling thread's stack of ranked locks held
// (debug builds only; lock_rank.cpp). acquire aborts if `r` is not after every rank held.
void lock_rank_acquire(lock_rank r, const void* lock) noexcept;
void lock_rank_release(const void* lock) noexcept;

// ranked<M>: the lock M with its place in the lock order, checked per thread in debug
// builds; in release builds, M alone (same layout, same code).
template <class M>
class RILL_CAPABILITY("mutex") ranked {
 public:
  explicit ranked([[maybe_unused]] lock_rank r) noexcept
#ifndef NDEBUG
      : rank_(r)
#endif
  {
  }
  ranked(const ranked&) = delete;
  ranked& operator=(const ranked&) = delete;

  // (Not analysed: the body takes the inner lock, which the annotation calls this one.)
  void lock() RILL_ACQUIRE() RILL_NO_THREAD_SAFETY_ANALYSIS {
#ifndef NDEBUG
    lock_rank_acquire(rank_, this);
#endif
    m_.lock();
  }
  void unlock() RILL_RELEASE() RILL_NO_THREAD_SAFETY_ANALYSIS {
    m_.unlock();
#ifndef NDEBUG
    lock_rank_release(this);
#endif
  }

 private:
  M m_;
#ifndef NDEBUG
  lock_rank rank_;
#endif
};

using ranked_mutex = ranked<mutex>;
using ranked_spinlock = ranked<spinlock>;

}  // namespace rill::detail
