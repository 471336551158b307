// run_queue: a worker's bounded queue of runnable fibers (Go's runq).
//
// One owner (the worker) pushes and pops; any other worker may steal half. head_ is
// advanced by CAS (owner pops and thieves both consume); tail_ is written by the owner only.
// Invariants:
//   Q1  tail_ - head_ <= capacity (unsigned, wrapping arithmetic).
//   Q2  slots [head_, tail_) hold valid fibers; a thief reads them before its CAS on head_
//       and the CAS fails if anyone consumed them meanwhile, so no fiber is taken twice.
//   Q3  the owner overwrites a slot only after observing (acquire) a head_ past it, so a
//       thief's reads of that slot happen before the overwrite.
//   Q4  in a queue nobody steals from (pop_unshared()'s), front_ is the fiber in slot
//       head_, and nullptr exactly when the queue is empty.
//
// Debug builds check what the checking side knows exactly. Q1 where the owner reads head_
// (push, pop, take_half): tail_ is its own, and head_ only grows, so any head_ it reads is
// at least the one it read when tail_ last grew, where Q1 was checked (push reads head_
// first; steal_into() checks that its own queue is empty); Q2 as a fiber pushed, and every
// slot a consumer took with a CAS it won, being a fiber (a won CAS means the slots it read
// were still valid); Q4 in pop_unshared(). Not checked: what a thief reads of another
// worker's queue before its CAS, which the owner may change under it.
#pragma once

#include <atomic>
#include <cstdint>

namespace rill::detail {

struct fiber;

#ifdef NDEBUG
#define RILL_CHECK_RUN_QUEUE(cond, what) ((void)0)
#else
// run_queue_broken() reports the invariant `what` broken and aborts (scheduler.cpp).
[[noreturn, gnu::cold]] void run_queue_broken(const char* what) noexcept;
#define RILL_CHECK_RUN_QUEUE(cond, what) ((cond) ? (void)0 : ::rill::detail::run_queue_broken(what))
#endif

class run_queue {
 public:
  static constexpr std::uint32_t capacity = 1024;  // see scheduler.cpp, "Where fibers wait"

  // push() appends f (owner only); false when full. `was_empty` tells whether the owner saw
  // the queue empty before the push (a thief may have emptied it a moment ago unseen).
  // `yielded`: f gave its worker up of its own accord (this_fiber::yield) rather than being
  // made ready by a partner; thieves may take it at once (head_yielded()).
  bool push(fiber* f, bool& was_empty, bool yielded = false) noexcept {
    RILL_CHECK_RUN_QUEUE(f && !(reinterpret_cast<std::uintptr_t>(f) & 1),
                         "Q2: push of a null or misaligned fiber");
    const std::uint32_t t = tail_.load(std::memory_order_relaxed);
    const std::uint32_t h = head_.load(std::memory_order_acquire);  // keeps Q3
    if (t - h >= capacity) return false;
    buf_[t % capacity].store(yielded ? tag(f) : f, std::memory_order_relaxed);
    tail_.store(t + 1, std::memory_order_release);
    RILL_CHECK_RUN_QUEUE(t + 1 - head_.load(std::memory_order_relaxed) <= capacity,
                         "Q1: tail_ - head_ > capacity after push");
    was_empty = t == h;
    if (was_empty) front_ = f;
    return true;
  }
  bool push(fiber* f) noexcept {
    bool was_empty;
    return push(f, was_empty);
  }

  // pop() takes the oldest fiber (owner only); nullptr when empty.
  fiber* pop() noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t t = tail_.load(std::memory_order_relaxed);
      RILL_CHECK_RUN_QUEUE(t - h <= capacity, "Q1: tail_ - head_ > capacity at pop");
      if (t == h) return nullptr;
      fiber* f = buf_[h % capacity].load(std::memory_order_relaxed);
      if (head_.compare_exchange_weak(h, h + 1, std::memory_order_release,
                                      std::memory_order_acquire)) {
        RILL_CHECK_RUN_QUEUE(untag(f) != nullptr, "Q2: pop took an empty slot");
        return untag(f);
      }
    }
  }

  // pop_unshared(): pop() for a queue nobody steals from (a runtime of one worker): no
  // read-modify-write, and the oldest fiber comes from front_, one load rather than two
  // (head_, then its cell): a yield waits for that load, and for the stack pointer it finds
  // there, before its mispredicted return can resolve.
  fiber* pop_unshared() noexcept {
    fiber* const f = front_;
#ifndef NDEBUG
    {
      const std::uint32_t h0 = head_.load(std::memory_order_relaxed);
      const std::uint32_t t0 = tail_.load(std::memory_order_relaxed);
      RILL_CHECK_RUN_QUEUE(t0 - h0 <= capacity, "Q1: tail_ - head_ > capacity at pop");
      RILL_CHECK_RUN_QUEUE((f == nullptr) == (t0 == h0), "Q4: front_ disagrees with emptiness");
      RILL_CHECK_RUN_QUEUE(!f || f == untag(buf_[h0 % capacity].load(std::memory_order_relaxed)),
                           "Q4: front_ is not the oldest fiber");
    }
#endif
    if (!f) return nullptr;
    const std::uint32_t h = head_.load(std::memory_order_relaxed) + 1;
    head_.store(h, std::memory_order_relaxed);
    front_ = tail_.load(std::memory_order_relaxed) != h
                 ? untag(buf_[h % capacity].load(std::memory_order_relaxed))
                 : nullptr;
    return f;
  }

  // upcoming(): the fiber that the next pop() (`shared`) or pop_unshared() would return, or
  // any pointer when none would: a hint to prefetch, never to dereference (a thief may take
  // it meanwhile). Owner only.
  fiber* upcoming(bool shared) const noexcept {
    if (!shared) return front_;
    return untag(
        buf_[head_.load(std::memory_order_relaxed) % capacity].load(std::memory_order_relaxed));
  }

  // take_half() removes half of the fibers, at most `max`, from the head (owner only, when
  // push() failed) into out[], returning how many; the caller moves them to the global
  // queue.
  std::uint32_t take_half(fiber** out, std::uint32_t max) noexcept {
    std::uint32_t h = head_.load(std::memory_order_acquire);
    for (;;) {
      const std::uint32_t t = tail_.load(std::memory_order_relaxed);
      RILL_CHECK_RUN_QUEUE(t - h <= capacity, "Q1: tail_ - head_ > capacity at take_half");
      std::uint32_t n = (t - h) / 2;
      if (n > max) n = max;
      if (n == 0) return 0;
      for (std::uint32_t i = 0; i < n; ++i) {
        out[i] = untag(buf_[(h + i) % capacity].load(std::memory_order_relaxed));
      }
      if (head_.compare_exchange_weak(h, h + n, std::memory_order_release,
                                      std::memory_order_acquire)) {
#ifndef NDEBUG
        for (std::uint32_t i = 0; i < n; ++i) {
          RILL_CHECK_RUN_QUEUE(out[i] != nullptr, "Q2: take_half took an empty slot");
        }
#endif
        front_ =
            t != h + n ? untag(buf_[(h + n) % capacity].load(std::memory_order_relaxed)) : nullptr;
        return n;
      }
    }
  }

  // steal_into() moves half of this queue's fibers into `dst` (owned by the caller, and
  // empty) and returns one of them to run at once; nullptr when there was nothing.
  fiber* steal_into(run_queue& dst) noexcept {
    const std::uint32_t dt = dst.tail_.load(std::memory_order_relaxed);
    // dst empty keeps Q1 there (n <= capacity / 2). Read with a read-modify-write, which
    // sees the latest head_ (a plain load may see an older one); it changes nothing, so a
    // thief's CAS on dst is unaffected.
    RILL_CHECK_RUN_QUEUE(dst.head_.fetch_add(0, std::memory_order_relaxed) == dt,
                         "Q1: steal_into into a queue that is not empty");
    std::uint32_t n = 0;
    for (;;) {
      std::uint32_t h = head_.load(std::memory_order_acquire);
      const std::uint32_t t = tail_.load(std::memory_order_acquire);
      n = t - h;
      n = n - n / 2;
      if (n == 0) return nullptr;
      if (n > capacity / 2) continue;  // read head_ and tail_ at different times; retry
      for (std::uint32_t i = 0; i < n; ++i) {
        dst.buf_[(dt + i) % capacity].store(
            buf_[(h + i) % capacity].load(std::memory_order_relaxed), std::memory_order_relaxed);
      }
      if (head_.compare_exchange_weak(h, h + n, std::memory_order_acq_rel,
                                      std::memory_order_relaxed)) {
        break;
      }
    }
#ifndef NDEBUG
    for (std::uint32_t i = 0; i < n; ++i) {
      RILL_CHECK_RUN_QUEUE(dst.buf_[(dt + i) % capacity].load(std::memory_order_relaxed),
                           "Q2: a steal took an empty slot");
    }
#endif
    --n;
    fiber* f = untag(dst.buf_[(dt + n) % capacity].load(std::memory_order_relaxed));
    if (n != 0) dst.tail_.store(dt + n, std::memory_order_release);
    return f;
  }

  // head(): the index of the oldest fiber; head_yielded(): the oldest fiber was pushed by
  // its yield. For thieves deciding whether to steal: a snapshot, possibly stale.
  std::uint32_t head() const noexcept { return head_.load(std::memory_order_acquire); }
  bool head_yielded() const noexcept {
    const std::uint32_t h = head_.load(std::memory_order_acquire);
    if (tail_.load(std::memory_order_acquire) == h) return false;
    return reinterpret_cast<std::uintptr_t>(buf_[h % capacity].load(std::memory_order_relaxed)) & 1;
  }

  bool empty() const noexcept {
    return head_.load(std::memory_order_acquire) == tail_.load(std::memory_order_acquire);
  }
  std::uint32_t size() const noexcept {
    return tail_.load(std::memory_order_acquire) - head_.load(std::memory_order_acquire);
  }

 private:
  // A slot holds a fiber pointer with bit 0 set when it was pushed by a yield (fibers are
  // at least 8-byte aligned); every way out of the queue clears it.
  static fiber* tag(fiber* f) noexcept {
    return reinterpret_cast<fiber*>(reinterpret_cast<std::uintptr_t>(f) | 1);
  }
  static fiber* untag(fiber* f) noexcept {
    return reinterpret_cast<fiber*>(reinterpret_cast<std::uintptr_t>(f) & ~std::uintptr_t{1});
  }

  alignas(64) std::atomic<std::uint32_t> head_{0};
  alignas(64) std::atomic<std::uint32_t> tail_{0};
  // front_: the owner's copy of the oldest fiber (nullptr when empty), kept by push(),
  // take_half() and pop_unshared(). Only pop_unshared() (and upcoming(false)) reads it: with
  // thieves about (pop(), steal_into()) it goes stale, and nothing reads it then.
  fiber* front_ = nullptr;
  std::atomic<fiber*> buf_[capacity];
};

}  // namespace rill::detail
