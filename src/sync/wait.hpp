// Helpers shared by the wait queues in src/sync.
#pragma once

#include "fiber/switch.hpp"
#include "rill/detail/core.hpp"
#include "rill/runtime.hpp"
#include "sched/runtime.hpp"

namespace rill::detail {

// list_cancel: lets the runtime take a deadlocked fiber's waiter off its list.
struct list_cancel {
  spinlock* lk;
  wait_list* list;
  waiter* w;

  static void run(void* p) {
    auto* c = static_cast<list_cancel*>(p);
    c->lk->lock();
    if (c->w->linked) c->list->remove(c->w);
    c->lk->unlock();
  }
};

// armed_park_hooks(): the calling fiber's park hooks if they are armed, else nullptr.
// Every operation that may park asks before it parks; one that holds a lock drops it,
// runs them (run_park_hooks) and decides again, since a hook may have changed what it
// waits for (a flushed batch may have woken its reader).
inline park_hooks* armed_park_hooks() noexcept {
  worker* wk = current_worker();
  fiber* self = wk ? wk->running() : nullptr;
  if (!self || !self->hooks.armed) [[likely]]
    return nullptr;
  return &self->hooks;
}
// flush_before_park(lk): for an operation that decided to park under lk: if hooks are armed,
// drops lk, runs them, retakes lk and returns true (decide again); else false (park).
inline bool flush_before_park(spinlock& lk) noexcept RILL_REQUIRES(lk) {
  park_hooks* h = armed_park_hooks();
  if (!h) [[likely]]
    return false;
  lk.unlock();
  run_park_hooks(*h);
  lk.lock();
  return true;
}
// flush_before_park(): for an operation that holds no lock: runs the armed hooks, if any.
inline void flush_before_park() noexcept {
  if (park_hooks* h = armed_park_hooks()) [[unlikely]]
    run_park_hooks(*h);
}

void park_fiber_aborted(fiber* self);  // throws fiber_aborted, or parks for good
void park_thread(waiter& w, spinlock& lk) RILL_RELEASE(lk);
// throw_unless_unwinding(): park() in a fiber the runtime has aborted after a deadlock.
// Not unwinding: takes w off `list`, releases lk and throws fiber_aborted. Unwinding (a
// destructor that waits): returns, and the fiber parks as usual.
void throw_unless_unwinding(waiter& w, spinlock& lk, wait_list& list) RILL_REQUIRES(lk);
// wake_thread(): wakes the plain thread blocked on `word` (a waiter's or a select's futex).
void wake_thread(std::atomic<std::uint32_t>& word) noexcept;

// park_fiber() parks `self` (the calling fiber): records why, switches out, runs
// after(self, after_arg) once its context is saved. Throws fiber_aborted if the runtime
// aborted the fiber after a deadlock while it was parked here (having called
// cancel(cancel_arg) first).
inline void park_fiber(fiber* self, worker* w, wait_reason why, const void* object,
                       after_switch_fn after, void* after_arg, void (*cancel)(void*),
                       void* cancel_arg) {
  self->reason.store(why, std::memory_order_relaxed);
  self->wait_object.store(object, std::memory_order_relaxed);
  self->cancel = cancel;
  self->cancel_arg = cancel_arg;
  RILL_ASSERT_FIBER_STATE(self, running);
  set_parked(self);
  switch_out(self, w, after, after_arg);
  // reason and wait_object are left as they are: they are read only while the fiber is
  // parked (dump()), and every park sets both.
  if (self->abort_wake) [[unlikely]]
    park_fiber_aborted(self);
}
inline void park_fiber(fiber* self, wait_reason why, const void* object, after_switch_fn after,
                       void* after_arg, void (*cancel)(void*), void* cancel_arg) {
  park_fiber(self, current_worker(), why, object, after, after_arg, cancel, cancel_arg);
}

// after_unlock: park()'s after-switch action, which releases the lock park() was given
// (the analysis cannot follow a lock through a context switch).
inline void after_unlock(machine_context*, void* arg) noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
  static_cast<spinlock*>(arg)->unlock();
}

// park() parks the caller (fiber or plain thread) until unpark(w) is called. `lk` is held
// by the caller, and w is already on `list`, guarded by lk; park() releases lk once the
// caller is parked (for a fiber: after its context is saved) and returns with lk released.
// If the runtime aborts the fiber after a deadlock, it takes w off `list` (under lk) and
// park() throws fiber_aborted.
// (Not analysed: in a fiber, lk is released by the after-switch action.)
inline void park(waiter& w, spinlock& lk, wait_list& list, wait_reason why, const void* object)
    RILL_RELEASE(lk) RILL_NO_THREAD_SAFETY_ANALYSIS {
  worker* wk = current_worker();
  fiber* self = wk ? wk->running() : nullptr;
  if (!self) {
    park_thread(w, lk);
    return;
  }
  if (self->aborted) [[unlikely]]
    throw_unless_unwinding(w, lk, list);
  w.who = self;
  list_cancel cancel{&lk, &list, &w};
  park_fiber(self, wk, why, object, after_unlock, &lk, &list_cancel::run, &cancel);
}

// wake_party() wakes a parked party: the fiber `who` (into its waker's runnext slot), or,
// when who is nullptr, the plain thread blocked on `word`.
inline void wake_party(fiber* who, std::atomic<std::uint32_t>& word) noexcept {
  if (who) {
    who->rt->ready(who, ready_slot::runnext);
  } else {
    wake_thread(word);
  }
}

// unpark() wakes the party parked on w. The caller must have taken w off its list, and
// must not touch w afterwards (its owner may return at once).
inline void unpark(waiter& w) noexcept { wake_party(w.who, w.futex); }

}  // namespace rill::detail
