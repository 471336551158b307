// Fiber stacks: reserved virtual memory committed lazily by the kernel, carved from slabs,
// pooled and reused, with overflow detection.
//
// Overflow detection is tiered (research/reliability.md section 6):
//   guarded  the lowest page of the stack is PROT_NONE. A fault there is caught by the
//            runtime's SIGSEGV handler (on an alternate signal stack), which names the fiber
//            and aborts. Each guard splits a VMA, so guards are rationed: at most
//            `guard_budget` stacks of the process are guarded at once (the default
//            vm.max_map_count of 65530 allows ~32k).
//   checked  past the budget, a stack is checked instead. Every stack (and the page in
//            front of every slab) carries a canary zone in its top `canary_bytes`, a page
//            the stack touches anyway, so the check costs no memory. A checked stack that
//            overflows runs into the canary of the stack (or slab page) below it; the
//            runtime checks that neighbour's canary, and that the fiber's stack pointer is
//            in range, at every switch out of the fiber (sampled) and at its exit (fully),
//            and aborts with a message naming the fiber. Detected: any overflow by frames
//            of up to canary_bytes; never a silently unguarded stack. (A canary at the low
//            end of each stack would commit one more page per fiber.)
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <vector>

#include "fiber/compact.hpp"
#include "rill/detail/core.hpp"
#include "sched/lock_rank.hpp"

namespace rill::detail {

// stack_slot: one per stack a pool has carved, for as long as the pool lives (or, in a
// compacting pool, until the slab it is in is given back: a reader that reaches a slot from
// a fiber pointer alone, outside the pool's lock, holds slab_unmap_lock()). It is the
// runtime's registry of fibers, as Go's allgs: a stack is registered once, when it is
// carved, and a fiber that starts or ends on it writes only its own slot, so spawning and
// finishing touch no list shared with other workers. The slot lives in the stack itself,
// near the top of its usable area, in the line just above the fiber's record
// (stack::record_top()), in the page a spawn writes anyway. `owner` is the fiber running on
// the stack (nullptr while the stack is pooled): a spawn publishes it with a release store;
// an exit clears it under `lk`, which a reader (dump(), deadlock detection) holds while it
// reads the owner's record, so the record outlives the read. `lk` comes after a stack pool's
// lock and a poll descriptor's in the lock order (sched/lock_rank.hpp).
struct stack_slot {
  ranked_spinlock lk{lock_rank::stack_slot};
  std::atomic<void*> owner{nullptr};
  // below_held: the stack just below this one is held compacted (fiber/compact.cpp), its
  // canary zone with it: an overflow check skips it rather than bring the stack back (an
  // overflow into it brings it back, and clears this, before the write lands). Written by
  // the compaction service only.
  std::atomic<bool> below_held{false};
};

inline constexpr std::size_t canary_bytes = 1024;
inline constexpr std::size_t stack_page_size = 4096;

// A canary zone of canary_bytes at `zone`: written, and checked in full.
void fill_canary_zone(char* zone) noexcept;
bool canary_zone_intact(const char* zone) noexcept;

struct stack {
  char* base = nullptr;  // lowest address of the mapping (the guard page, when guarded)
  std::size_t size = 0;  // whole mapping, guard included
  bool guarded = false;

  // limit(): the lowest usable byte.
  char* limit() const noexcept { return guarded ? base + stack_page_size : base; }
  char* top() const noexcept { return base + size; }
  char* usable_top() const noexcept { return top() - canary_bytes; }  // below the canary zone
  // slot(): this stack's registry slot, constructed when the stack is carved. It sits at a
  // place "coloured" by the stack's address (one of 16 cache lines below usable_top()), so
  // that the slots and fiber records of many stacks do not all compete for the same cache
  // sets; record_top() is the slot's address, where a fiber's record may end.
  stack_slot* slot() const noexcept {
    const std::size_t color = ((reinterpret_cast<std::uintptr_t>(base) >> 12) % 16) * 64;
    return reinterpret_cast<stack_slot*>(usable_top() - color - 64);
  }
  char* record_top() const noexcept { return reinterpret_cast<char*>(slot()); }
  void write_canary() noexcept;  // writes this stack's canary zone (its top)
  // below_intact(): the canary zone just below this stack (the neighbour's, or the slab
  // page's) is intact; `full` checks every word, else a sample.
  bool below_intact(bool full) const noexcept;
};

// stack_pool hands out stacks of one size. Thread safety: allocate/release may be called
// from any thread (a mutex guards the free list and the slab list).
class stack_pool {
 public:
  explicit stack_pool(std::size_t stack_size);
  ~stack_pool();  // unmaps every slab; stacks still in use must not be touched afterwards
  stack_pool(const stack_pool&) = delete;
  stack_pool& operator=(const stack_pool&) = delete;

  // allocate() returns a stack, reusing a pooled one when it can. Throws std::bad_alloc
  // (or std::system_error) when the address space cannot be reserved.
  stack allocate();
  // allocate_many() takes between 1 and n stacks into out[] under one lock (a worker's
  // stack cache refills in batches, as Go's stackcache does); returns how many. Throws as
  // allocate() when it can take none.
  std::size_t allocate_many(stack* out, std::size_t n);
  // release() returns s to the pool; release_many() returns n stacks under one lock.
  void release(stack s) noexcept;
  void release_many(const stack* s, std::size_t n) noexcept;

  std::size_t stack_size() const noexcept { return stack_size_; }
  // rounded_size(): the size of the stacks of a pool asked for `size` bytes.
  static std::size_t rounded_size(std::size_t size) noexcept;
  std::size_t live() const noexcept;  // stacks handed out and not yet released
  std::size_t per_slab() const noexcept { return per_slab_; }
  // compact_parked(): fibers parked on this pool's stacks for `after` have their stacks
  // compacted (fiber/compact.hpp). False where the process cannot.
  bool compact_parked(std::chrono::nanoseconds after, compaction_age_fn age);

  // for_each_slot() calls f(stack_slot&) for the slot of every stack carved so far, under
  // the pool's lock (lock order: the pool's lock before a slot's).
  template <class F>
  void for_each_slot(F f) {
    lock_guard lk(mu_);
    for (std::size_t i = 0; i < slabs_.size(); ++i) {
      const std::size_t n = i + 1 == slabs_.size() ? carved_ : per_slab_;
      for (std::size_t j = 0; j < n; ++j) f(*nth(i, j).slot());
    }
  }

 private:
  void add_slab() RILL_REQUIRES(mu_);
  // Compacting pools only: counts a stack in or out of free_ against its slab, and gives a
  // slab whose every stack is free back to the system (release_slab) when the pool keeps
  // enough free stacks without it.
  void count_free(const stack& s, bool in) RILL_REQUIRES(mu_);
  void release_slab(char* slab) RILL_REQUIRES(mu_);
  std::size_t carve(stack* out, std::size_t n) RILL_REQUIRES(mu_);  // fresh, of the newest slab
  stack nth(std::size_t slab, std::size_t k) const noexcept RILL_REQUIRES(mu_);

  std::size_t stack_size_;
  std::size_t per_slab_;
  // The pool's mutex spins a little before it sleeps: its critical sections are short
  // (a batch of 32 stacks) except when a slab is carved, and two workers trade stacks
  // through it all the time (one spawns, the other finishes what it stole and gives its
  // full cache back). A plain std::mutex made that a futex sleep and wake, slow on a virtual
  // machine, in some runs of every batch of spawn+join with 2 workers, doubling its cost.
  class RILL_CAPABILITY("mutex") spin_then_block {
   public:
    void lock() noexcept RILL_ACQUIRE() {
      for (int i = 0; i < 100; ++i) {
        if (mu_.try_lock()) return;
        for (int k = 0; k < 8; ++k) __builtin_ia32_pause();
      }
      mu_.lock();
    }
    void unlock() noexcept RILL_RELEASE() { mu_.unlock(); }

   private:
    std::mutex mu_;
  };
  mutable ranked<spin_then_block> mu_{lock_rank::stack_pool};
  std::vector<stack> free_ RILL_GUARDED_BY(mu_);
  std::vector<std::pair<char*, std::size_t>> slabs_ RILL_GUARDED_BY(mu_);
  // Stacks of the newest slab, and of every slab, handed out at least once.
  std::size_t carved_ RILL_GUARDED_BY(mu_) = 0;
  std::size_t carved_total_ RILL_GUARDED_BY(mu_) = 0;
  std::size_t live_ RILL_GUARDED_BY(mu_) = 0;
  bool compacting_ RILL_GUARDED_BY(mu_) = false;
  // Compacting pools: how many of each slab's stacks are in free_, by slab base. A pool that
  // compacts is one that holds many fibers; once they end, a slab of free stacks still holds
  // every page its fibers touched (brought back by their wake, if compacted), and a process
  // that woke all of them would keep them all: such a slab goes back to the system, as Go
  // frees a span of free stacks.
  std::map<char*, std::size_t> slab_free_ RILL_GUARDED_BY(mu_);
};

// Process-wide count of guarded stacks, and the cap (RILL_GUARD_BUDGET overrides it).
std::size_t guarded_stacks() noexcept;
std::size_t guard_budget() noexcept;

// Test hook: the n-th stack mapping attempt from now fails as if mmap had (0: never).
void inject_stack_failure_at(std::uint64_t n) noexcept;

}  // namespace rill::detail
