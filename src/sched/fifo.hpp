// fifo: an intrusive singly linked FIFO of T, through T::next. Not synchronized: guarded by
// its owner's lock. (The global run queue's fibers, the blocking pool's jobs.)
#pragma once

namespace rill::detail {

template <class T>
struct fifo {
  T* head = nullptr;
  T* tail = nullptr;

  bool empty() const noexcept { return head == nullptr; }
  void push_back(T* x) noexcept {
    x->next = nullptr;
    if (tail) {
      tail->next = x;
    } else {
      head = x;
    }
    tail = x;
  }
  void push_front(T* x) noexcept {
    x->next = head;
    head = x;
    if (!tail) tail = x;
  }
  T* pop_front() noexcept {
    T* x = head;
    if (x) {
      head = x->next;
      if (!head) tail = nullptr;
    }
    return x;
  }
};

}  // namespace rill::detail
