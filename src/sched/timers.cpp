// Timers: an intrusive pairing heap per runtime under timer_mu_.
//
// Why a pairing heap: arm() runs inside after-switch actions (a sleeping fiber, a select
// with a timeout), where the fiber is already parked and nothing could report a failure; a
// heap in a std::vector had to std::terminate when it could not grow. The pairing heap
// links the timers themselves: insert O(1), delete-min and delete O(log n) amortized, no
// allocation anywhere.
//
// Arming and cancelling race with firing; the state machine in timers.hpp settles it:
// cancel() wins while the timer is idle or armed (it is never fired); once a worker has
// popped it (firing), cancel() waits until fire() has called fired(), so the owner may
// free the timer as soon as cancel() returns.
#include <thread>

#include "sched/futex.hpp"
#include "sched/runtime.hpp"

namespace rill::detail {
namespace {

// meld() joins two detached heaps (roots with no siblings and no prev) into one.
timer* meld(timer* a, timer* b) noexcept {
  if (!a) return b;
  if (!b) return a;
  if (b->when < a->when) {
    timer* t = a;
    a = b;
    b = t;
  }
  b->prev = a;
  b->sibling = a->child;
  if (a->child) a->child->prev = b;
  a->child = b;
  return a;
}

// merge_pairs() melds a sibling list into one heap: pairs left to right, then the results
// right to left (the two-pass rule that gives the amortized bounds).
timer* merge_pairs(timer* first) noexcept {
  timer* pairs = nullptr;  // melded pairs, most recent first (linked through `sibling`)
  while (first) {
    timer* a = first;
    timer* b = a->sibling;
    first = b ? b->sibling : nullptr;
    a->sibling = a->prev = nullptr;
    if (b) b->sibling = b->prev = nullptr;
    timer* m = meld(a, b);
    m->sibling = pairs;
    pairs = m;
  }
  timer* root = nullptr;
  while (pairs) {
    timer* next = pairs->sibling;
    pairs->sibling = nullptr;
    root = meld(root, pairs);
    pairs = next;
  }
  return root;
}

}  // namespace

void runtime::heap_insert(timer& t) noexcept {  // requires timer_mu_
  t.child = t.sibling = t.prev = nullptr;
  timer_root_ = meld(timer_root_, &t);
  ++timer_count_;
  next_deadline_.store(timer_root_->when, std::memory_order_relaxed);
  g_pending_timers.fetch_add(1, std::memory_order_relaxed);
}

void runtime::heap_remove(timer& t) noexcept {  // requires timer_mu_; t is in the heap
  if (&t == timer_root_) {
    timer_root_ = merge_pairs(t.child);
  } else {
    if (t.prev->child == &t) {
      t.prev->child = t.sibling;  // leftmost: prev is the parent
    } else {
      t.prev->sibling = t.sibling;
    }
    if (t.sibling) t.sibling->prev = t.prev;
    timer_root_ = meld(timer_root_, merge_pairs(t.child));
  }
  t.child = t.sibling = t.prev = nullptr;
  --timer_count_;
  next_deadline_.store(timer_root_ ? timer_root_->when : INT64_MAX, std::memory_order_relaxed);
  g_pending_timers.fetch_sub(1, std::memory_order_relaxed);
}

void runtime::arm(timer& t) noexcept {
  bool earliest = false;
  {
    lock_guard lk(timer_mu_);
    if (t.state.load(std::memory_order_relaxed) == timer_state::cancelled) return;
    t.state.store(timer_state::armed, std::memory_order_relaxed);
    heap_insert(t);
    earliest = timer_root_ == &t;
  }
  if (earliest) {
    // The sleeping worker (if any) must recompute its timeout; else wake an idle one.
    // A watching spinner sleeps until its next look or the old deadline: kick it too.
    std::atomic_thread_fence(std::memory_order_seq_cst);
    kick_watcher();
    worker* w = nullptr;
    {
      lock_guard lk(idle_mu_);
      if (timer_sleeper_) {
        w = timer_sleeper_;
      } else if (!idle_.empty() && nspinning_.load() == 0) {
        w = idle_.back();
      }
      if (w) claim_worker_locked(*w, false);
    }
    if (w) futex_wake(w->wake_word);
  }
}

void runtime::rearm(timer& t, std::int64_t when) noexcept {
  lock_guard lk(timer_mu_);
  t.when = when;
  t.state.store(timer_state::armed, std::memory_order_release);
  heap_insert(t);
}

bool runtime::cancel(timer& t) noexcept {
  for (;;) {
    {
      lock_guard lk(timer_mu_);
      // Acquire: fired() stores done outside timer_mu_, and the caller may end t's
      // lifetime as soon as this returns; the store's fire() must be over for it.
      switch (t.state.load(std::memory_order_acquire)) {
        case timer_state::idle:
          t.state.store(timer_state::cancelled, std::memory_order_relaxed);
          return true;
        case timer_state::armed:
          heap_remove(t);
          t.state.store(timer_state::cancelled, std::memory_order_relaxed);
          return true;
        case timer_state::cancelled:
          return true;
        case timer_state::done:
          return false;
        case timer_state::firing:
          break;
      }
    }
    // A worker is running fire(); it ends in done, or armed again for a periodic timer.
    while (t.state.load(std::memory_order_acquire) == timer_state::firing) {
      std::this_thread::yield();
    }
  }
}

void runtime::drop_timers() noexcept {
  lock_guard lk(timer_mu_);
  while (timer* t = timer_root_) {
    heap_remove(*t);
    t->state.store(timer_state::cancelled, std::memory_order_relaxed);
    if (t->drop) t->drop(t);
  }
}

void runtime::run_due_timers(worker& w) noexcept {
  const std::int64_t now = now_ns();
  if (next_deadline_.load(std::memory_order_relaxed) > now) return;
  for (;;) {
    timer* t;
    {
      lock_guard lk(timer_mu_);
      t = timer_root_;
      if (!t || t->when > now) break;
      heap_remove(*t);
      t->state.store(timer_state::firing, std::memory_order_relaxed);
    }
    t->fire(t);
  }
  (void)w;
}

}  // namespace rill::detail
