// Helpers shared by the wait queues in src/sync.
#pragma once

#include "fiber/context.hpp"
#include "rill/detail/core.hpp"
#include "rill/runtime.hpp"

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

// park_fiber() parks `self` (the calling fiber): records why, switches out, runs
// after(self, after_arg) once its context is saved. Throws fiber_aborted if the runtime
// aborted the fiber after a deadlock (having called cancel(cancel_arg) first).
void park_fiber(fiber* self, wait_reason why, const void* object, after_switch_fn after,
                void* after_arg, void (*cancel)(void*), void* cancel_arg);

}  // namespace rill::detail
