// Helpers shared by the wait queues in src/sync.
#pragma once

#include "rill/detail/core.hpp"

namespace rill::detail {

// list_cancel: lets the runtime take a deadlocked fiber's waiter off its list.
struct list_cancel {
  spinlock* lk;
  wait_list* list;
  waiter* w;

  static void run(void* p) {
    auto* c = static_cast<list_cancel*>(p);
    c->lk->lock();
    for (waiter* x = c->list->head; x; x = x->next) {
      if (x == c->w) {
        c->list->remove(x);
        break;
      }
    }
    c->lk->unlock();
  }
};

}  // namespace rill::detail
