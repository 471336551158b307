#include "rill/sync.hpp"

#include <cstdio>
#include <exception>
#include <stdexcept>
#include <utility>

#include "sched/runtime.hpp"
#include "sync/wait.hpp"

namespace rill {

using detail::waiter;

void wait_group::add(int n) {
  const auto delta = static_cast<std::uint64_t>(static_cast<std::int64_t>(n)) << 32;
  const std::uint64_t s = state_.fetch_add(delta, std::memory_order_acq_rel) + delta;
  const auto count = static_cast<std::int64_t>(static_cast<std::int32_t>(s >> 32));
  if (count < 0) {  // below zero, or (n > 0) wrapped past INT32_MAX
    state_.fetch_sub(delta, std::memory_order_relaxed);
    throw std::logic_error(n > 0 ? "rill::wait_group: counter overflow"
                                 : "rill::wait_group: negative counter");
  }
  const auto counted = static_cast<std::uint32_t>(s);
  if (count > 0 || counted == 0) return;
  // The counter reached zero with waiters counted: each is on waiters_ once mu_ is ours
  // (it counted and queued itself under mu_). Wake those, and no more: a waiter that came
  // after the counter went up again is not ours (nor are waiters another add() that saw the
  // same zero took first).
  detail::wait_list wake;
  mu_.lock();
  std::uint32_t k = 0;
  while (k < counted) {
    waiter* w = waiters_.pop_front();
    if (!w) break;
    wake.push_back(w);
    ++k;
  }
  state_.fetch_sub(k, std::memory_order_relaxed);
  mu_.unlock();
  while (waiter* w = wake.pop_front()) detail::unpark(*w);
}

void wait_group::wait() {
  detail::chaos_point();
  if ((state_.load(std::memory_order_acquire) >> 32) == 0) return;
  detail::flush_before_park();
  mu_.lock();
  std::uint64_t s = state_.load(std::memory_order_acquire);
  do {
    if ((s >> 32) == 0) {
      mu_.unlock();
      return;
    }
  } while (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel,
                                         std::memory_order_acquire));
  waiter w;
  waiters_.push_back(&w);
  detail::park(w, mu_, waiters_, wait_reason::wait_group, this);
}

void mutex::lock() {
  detail::chaos_point();
  std::uint32_t s = 0;
  if (state_.compare_exchange_strong(s, locked_bit, std::memory_order_acquire)) return;
  for (int i = 0; i < 64; ++i) {  // brief spin: the holder may be running on another core
    s = state_.load(std::memory_order_relaxed);
    if (!(s & locked_bit) &&
        state_.compare_exchange_weak(s, s | locked_bit, std::memory_order_acquire)) {
      return;
    }
    __builtin_ia32_pause();
  }
  detail::flush_before_park();
  mu_.lock();
  for (;;) {
    s = state_.load(std::memory_order_relaxed);
    if (!(s & locked_bit)) {
      if (state_.compare_exchange_weak(s, s | locked_bit, std::memory_order_acquire)) {
        mu_.unlock();
        return;
      }
      continue;
    }
    if (s & waiters_bit) break;
    if (state_.compare_exchange_weak(s, s | waiters_bit, std::memory_order_relaxed)) break;
  }
  waiter w;
  waiters_.push_back(&w);
  detail::park(w, mu_, waiters_, wait_reason::mutex, this);
  // unlock() handed us the lock: locked_bit stayed set. Acquire its writes:
  (void)state_.load(std::memory_order_acquire);
}

bool mutex::try_lock() noexcept {
  std::uint32_t s = state_.load(std::memory_order_relaxed);
  while (!(s & locked_bit)) {
    if (state_.compare_exchange_weak(s, s | locked_bit, std::memory_order_acquire)) return true;
  }
  return false;
}

void mutex::unlock() {
  std::uint32_t s = locked_bit;
  if (state_.compare_exchange_strong(s, 0, std::memory_order_release)) return;
  if (!(s & locked_bit)) {
    std::fputs("rill::mutex: unlock of an unlocked mutex\n", stderr);
    std::terminate();
  }
  mu_.lock();
  waiter* w = waiters_.pop_front();
  if (!w) {
    state_.store(0, std::memory_order_release);
    mu_.unlock();
    return;
  }
  // Hand the lock over: locked_bit stays set.
  state_.store(waiters_.empty() ? locked_bit : (locked_bit | waiters_bit),
               std::memory_order_release);
  mu_.unlock();
  detail::unpark(*w);
}

void condition_variable::wait(std::unique_lock<mutex>& lk) {
  detail::chaos_point();
  detail::flush_before_park();
  mu_.lock();
  waiter w;
  waiters_.push_back(&w);
  try {
    lk.unlock();
  } catch (...) {
    waiters_.remove(&w);
    mu_.unlock();
    throw;
  }
  try {
    detail::park(w, mu_, waiters_, wait_reason::cond_var, this);
  } catch (...) {
    lk.lock();
    throw;
  }
  lk.lock();
}

void condition_variable::notify_one() noexcept {
  mu_.lock();
  waiter* w = waiters_.pop_front();
  mu_.unlock();
  if (w) detail::unpark(*w);
}

void condition_variable::notify_all() noexcept {
  mu_.lock();
  detail::wait_list all = std::move(waiters_);
  mu_.unlock();
  while (waiter* w = all.pop_front()) detail::unpark(*w);
}

}  // namespace rill
