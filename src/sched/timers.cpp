// Timers: a binary min-heap per runtime under timer_mu_.
//
// Arming and cancelling race with firing; the state machine in timers.hpp settles it:
// cancel() wins while the timer is idle or armed (it is never fired); once a worker has
// popped it (firing), cancel() waits until fire() has called fired(), so the owner may
// free the timer as soon as cancel() returns.
#include <algorithm>
#include <thread>

#include "sched/futex.hpp"
#include "sched/runtime.hpp"

namespace rill::detail {
namespace {

bool earlier(const timer* a, const timer* b) noexcept { return a->when < b->when; }

void sift_up(std::vector<timer*>& h, std::size_t i) noexcept {
  while (i > 0) {
    std::size_t p = (i - 1) / 2;
    if (!earlier(h[i], h[p])) break;
    std::swap(h[i], h[p]);
    h[i]->heap_index = i;
    h[p]->heap_index = p;
    i = p;
  }
}

void sift_down(std::vector<timer*>& h, std::size_t i) noexcept {
  const std::size_t n = h.size();
  for (;;) {
    std::size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && earlier(h[l], h[m])) m = l;
    if (r < n && earlier(h[r], h[m])) m = r;
    if (m == i) break;
    std::swap(h[i], h[m]);
    h[i]->heap_index = i;
    h[m]->heap_index = m;
    i = m;
  }
}

void remove_at(std::vector<timer*>& h, std::size_t i) noexcept {
  const std::size_t last = h.size() - 1;
  if (i != last) {
    h[i] = h[last];
    h[i]->heap_index = i;
  }
  h.pop_back();
  if (i < h.size()) {
    sift_down(h, i);
    sift_up(h, i);
  }
}

}  // namespace

void runtime::arm(timer& t) noexcept {
  bool earliest = false;
  {
    std::lock_guard lk(timer_mu_);
    if (t.state.load(std::memory_order_relaxed) == timer_state::cancelled) return;
    t.state.store(timer_state::armed, std::memory_order_relaxed);
    t.heap_index = timer_heap_.size();
    try {
      timer_heap_.push_back(&t);
    } catch (...) {
      std::terminate();  // a timer that can never fire would hang its owner
    }
    sift_up(timer_heap_, t.heap_index);
    earliest = timer_heap_.front() == &t;
    next_deadline_.store(timer_heap_.front()->when, std::memory_order_relaxed);
    g_pending_timers.fetch_add(1, std::memory_order_relaxed);
  }
  if (earliest) {
    // The sleeping worker (if any) must recompute its timeout; else wake an idle one.
    std::lock_guard lk(idle_mu_);
    if (timer_sleeper_) {
      wake_worker_locked(*timer_sleeper_, false);
    } else if (!idle_.empty() && nspinning_.load() == 0) {
      wake_worker_locked(*idle_.back(), false);
    }
  }
}

void runtime::rearm(timer& t, std::int64_t when) noexcept {
  {
    std::lock_guard lk(timer_mu_);
    t.when = when;
    t.state.store(timer_state::armed, std::memory_order_release);
    t.heap_index = timer_heap_.size();
    try {
      timer_heap_.push_back(&t);
    } catch (...) {
      std::terminate();
    }
    sift_up(timer_heap_, t.heap_index);
    next_deadline_.store(timer_heap_.front()->when, std::memory_order_relaxed);
    g_pending_timers.fetch_add(1, std::memory_order_relaxed);
  }
}

bool runtime::cancel(timer& t) noexcept {
  for (;;) {
    std::unique_lock lk(timer_mu_);
    switch (t.state.load(std::memory_order_relaxed)) {
      case timer_state::idle:
        t.state.store(timer_state::cancelled, std::memory_order_relaxed);
        return true;
      case timer_state::armed:
        remove_at(timer_heap_, t.heap_index);
        next_deadline_.store(timer_heap_.empty() ? INT64_MAX : timer_heap_.front()->when,
                             std::memory_order_relaxed);
        g_pending_timers.fetch_sub(1, std::memory_order_relaxed);
        t.state.store(timer_state::cancelled, std::memory_order_relaxed);
        return true;
      case timer_state::cancelled:
        return true;
      case timer_state::done:
        return false;
      case timer_state::firing:
        break;
    }
    lk.unlock();
    // A worker is running fire(); it ends in done, or armed again for a periodic timer.
    while (t.state.load(std::memory_order_acquire) == timer_state::firing) {
      std::this_thread::yield();
    }
  }
}

void runtime::drop_timers() noexcept {
  std::lock_guard lk(timer_mu_);
  for (timer* t : timer_heap_) {
    g_pending_timers.fetch_sub(1, std::memory_order_relaxed);
    t->state.store(timer_state::cancelled, std::memory_order_relaxed);
    if (t->drop) t->drop(t);
  }
  timer_heap_.clear();
  next_deadline_.store(INT64_MAX, std::memory_order_relaxed);
}

void runtime::run_due_timers(worker& w) noexcept {
  const std::int64_t now = now_ns();
  if (next_deadline_.load(std::memory_order_relaxed) > now) return;
  for (;;) {
    timer* t;
    {
      std::lock_guard lk(timer_mu_);
      if (timer_heap_.empty() || timer_heap_.front()->when > now) break;
      t = timer_heap_.front();
      remove_at(timer_heap_, 0);
      next_deadline_.store(timer_heap_.empty() ? INT64_MAX : timer_heap_.front()->when,
                           std::memory_order_relaxed);
      g_pending_timers.fetch_sub(1, std::memory_order_relaxed);
      t->state.store(timer_state::firing, std::memory_order_relaxed);
    }
    t->fire(t);
  }
  (void)w;
}

}  // namespace rill::detail
