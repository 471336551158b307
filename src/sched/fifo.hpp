// fifo: an intrusive singly linked FIFO of T, through T::next. Not synchronized: guarded by
// its owner's lock. (The blocking pool's jobs.)
//
// block_fifo: a FIFO of T* in blocks of pointers, for the global run queue. Taking a share
// of a fifo follows each fiber's `next` through records that sit on as many stacks, a cache
// and TLB miss each, one after the other: when a close woke a million fibers, that walk was
// a large part of the wake. A block_fifo reads the share's pointers from its blocks. A
// block it cannot allocate sends the pushes to an intrusive fifo behind the blocks
// (`spill_`, through T::next) until that has drained, so nothing is lost and the order
// holds. Not synchronized: guarded by its owner's lock.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <utility>

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
  T* pop_front() noexcept {
    T* x = head;
    if (x) {
      head = x->next;
      if (!head) tail = nullptr;
    }
    return x;
  }
};

// The blocks' memory: nullptr when there is none (the pushes spill).
struct nothrow_blocks {
  static void* allocate(std::size_t n) noexcept { return ::operator new(n, std::nothrow); }
  static void deallocate(void* p) noexcept { ::operator delete(p); }
};

template <class T, class Blocks = nothrow_blocks>
class block_fifo {
 public:
  static constexpr std::uint32_t block_items = 254;  // with the header, a power of two

  block_fifo() = default;
  block_fifo(const block_fifo&) = delete;
  block_fifo& operator=(const block_fifo&) = delete;
  ~block_fifo() {
    free_chain(head_);
    free_chain(spare_);
  }

  bool empty() const noexcept { return !head_ && spill_.empty(); }
  bool spilling() const noexcept { return !spill_.empty(); }  // pushes go to the spill list
  void push_back(T* x) noexcept {
    if (spill_.empty()) {
      if (!tail_ || tail_->end == block_items) {
        if (block* b = take_block()) {
          (tail_ ? tail_->next : head_) = b;
          tail_ = b;
        }
      }
      if (tail_ && tail_->end < block_items) {
        tail_->items[tail_->end++] = x;
        return;
      }
    }
    spill_.push_back(x);
  }
  T* front() const noexcept { return head_ ? head_->items[head_->begin] : spill_.head; }
  T* pop_front() noexcept {
    if (!head_) return spill_.pop_front();
    T* x = head_->items[head_->begin++];
    if (head_->begin == head_->end) {  // a block in the queue is never empty
      block* b = head_;
      head_ = b->next;
      if (!head_) tail_ = nullptr;
      give_block(b);
    }
    return x;
  }

 private:
  static constexpr std::uint32_t spares_max = 2;
  struct block {
    block* next = nullptr;
    std::uint32_t begin = 0;
    std::uint32_t end = 0;
    T* items[block_items];
  };

  block* take_block() noexcept {
    if (block* b = spare_) {
      spare_ = b->next;
      --spares_;
      b->next = nullptr;
      b->begin = b->end = 0;
      return b;
    }
    void* p = Blocks::allocate(sizeof(block));
    return p ? ::new (p) block : nullptr;
  }
  void give_block(block* b) noexcept {
    if (spares_ == spares_max) {
      Blocks::deallocate(b);
      return;
    }
    b->next = spare_;
    spare_ = b;
    ++spares_;
  }
  static void free_chain(block* b) noexcept {
    while (b) Blocks::deallocate(std::exchange(b, b->next));
  }

  block* head_ = nullptr;
  block* tail_ = nullptr;
  block* spare_ = nullptr;
  std::uint32_t spares_ = 0;
  fifo<T> spill_;
};

}  // namespace rill::detail
