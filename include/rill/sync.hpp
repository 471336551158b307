// rill/sync.hpp: fiber-aware synchronization: wait_group, mutex, condition_variable.
//
// Each parks the calling fiber (not its thread) while it waits; called from a plain thread
// it blocks that thread instead. All may be constructed before any runtime exists, and
// used from fibers of several runtimes and from plain threads at once.
//
// Memory ordering: wait_group::done() happens before the wait() it releases returns;
// mutex::unlock() happens before the next lock() of that mutex returns; notify_*() happens
// before the wait() it wakes returns.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "rill/detail/core.hpp"
#include "rill/runtime.hpp"

namespace rill {

// wait_group waits for a collection of fibers to finish (Go's sync.WaitGroup).
class wait_group {
 public:
  wait_group() = default;
  wait_group(const wait_group&) = delete;
  wait_group& operator=(const wait_group&) = delete;

  // add() adds n (may be negative) to the counter; when it reaches zero every wait()
  // returns. Throws std::logic_error if the counter would go negative or past INT32_MAX
  // (the counter is left as it was).
  void add(int n = 1);
  // done() is add(-1).
  void done() { add(-1); }
  // wait() parks until the counter is zero; returns at once if it is.
  // Reuse (Go's rule): a wait_group may count a new set of events (add() from zero) only
  // after every wait() of the previous set has returned.
  void wait();

 private:
  // state_: the counter in the high 32 bits, the number of waiters counted in the low 32
  // (Go's WaitGroup): add() is one atomic add, unless it brings the counter to zero while
  // waiters are counted. A waiter counts itself, and queues itself on waiters_, in one
  // critical section of mu_, only while the counter is above zero.
  std::atomic<std::uint64_t> state_{0};
  detail::spinlock mu_;
  detail::wait_list waiters_;  // guarded by mu_
};

// mutex: a fiber-aware mutual exclusion lock; meets Lockable, so std::lock_guard and
// std::unique_lock work. A fiber waiting for it is parked; unlock() hands the lock to the
// longest waiter (FIFO, no barging past a parked waiter).
class mutex {
 public:
  mutex() = default;
  mutex(const mutex&) = delete;
  mutex& operator=(const mutex&) = delete;

  // lock() parks until the caller owns the mutex. Not recursive.
  void lock();
  // try_lock() takes the mutex if it is free; never parks.
  bool try_lock() noexcept;
  // unlock() releases the mutex, waking the next waiter. Precondition: held by the caller
  // (an unlock of an unlocked mutex terminates with a message).
  void unlock();

 private:
  static constexpr std::uint32_t locked_bit = 1, waiters_bit = 2;
  std::atomic<std::uint32_t> state_{0};
  detail::spinlock mu_;
  detail::wait_list waiters_;  // guarded by mu_
};

// condition_variable: for rill::mutex (std::condition_variable, for fibers).
class condition_variable {
 public:
  condition_variable() = default;
  condition_variable(const condition_variable&) = delete;
  condition_variable& operator=(const condition_variable&) = delete;

  // wait() atomically releases lk and parks until notified, then re-locks lk. Like
  // std::condition_variable it may wake spuriously: use the predicate form.
  void wait(std::unique_lock<mutex>& lk);
  template <class Pred>
  void wait(std::unique_lock<mutex>& lk, Pred pred) {
    while (!pred()) wait(lk);
  }
  void notify_one() noexcept;
  void notify_all() noexcept;

 private:
  detail::spinlock mu_;
  detail::wait_list waiters_;  // guarded by mu_
};

// once_flag / call_once: f runs exactly once; concurrent callers park until it has.
class once_flag {
 public:
  template <class F>
  void call_once(F&& f) {
    if (done_.load(std::memory_order_acquire)) return;
    std::lock_guard lk(mu_);
    if (done_.load(std::memory_order_relaxed)) return;
    f();
    done_.store(true, std::memory_order_release);
  }

 private:
  std::atomic<bool> done_{false};
  mutex mu_;
};

}  // namespace rill

#include "rill/context.hpp"  // context and error_group (they build on the above)
