// Compaction of long-parked fibers' stacks (options::compact_parked).
//
// A parked fiber holds every page its stack has touched, usually one page, while the part of
// it in use (its record, its closure, the frames down to the park) is a fraction of that.
// With compaction on, one service thread per process takes the pages of a fiber seen parked
// on two of its passes (`after` apart) out of the stack, keeps only the bytes in use and
// returns the pages to the system; the first touch of that stack afterwards, by any thread,
// puts them back. src/fiber/compact.cpp has the protocol.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <mutex>

namespace rill::detail {

class stack_pool;

// compaction_age_fn: the scheduler's side of a pass, for the owner of a stack (a stack slot's
// owner, a fiber record): with `age`, a fiber seen parked for the first time is marked and the
// function returns false; one marked at an earlier pass (or, with `age` false, any parked
// fiber whose park has landed) returns true with its saved stack pointer in *sp and what it
// waits on in *key. Any other returns false. Called on the live record to choose, then on
// the record's copy in the moved pages to decide (age false: nothing is written).
using compaction_age_fn = bool (*)(void* record, bool age, char** sp, const void** key) noexcept;

// compaction_add(): the service compacts the parked fibers of pool's stacks parked for at
// least `after` (age tells which); starts the service on first use. False when this process cannot
// (userfaultfd refused: a seccomp filter, or an unprivileged process without
// vm.unprivileged_userfaultfd): the pool then runs as without it.
bool compaction_add(stack_pool* pool, std::chrono::nanoseconds after, compaction_age_fn age);
// compaction_slab_full(): every stack of the slab at `slab` has been carved (under the
// pool's lock): the service looks at its stacks from then on.
void compaction_slab_full(stack_pool* pool, char* slab);
// compaction_slab_release(): pool has forgotten the slab at `slab` (every stack of it free):
// the service unmaps it once no pass reads it. Called under the pool's lock. False if it
// cannot (out of memory): the pool keeps the slab.
bool compaction_slab_release(stack_pool* pool, char* slab, std::size_t bytes) noexcept;
// slab_unmap_lock(): a thread that reaches a stack slot from a fiber pointer alone, outside
// the pool's lock (the watchdog's pass: a worker's current fiber may end, and its slab be
// given back, between the look and the read), holds it over the read; the service unmaps the
// slabs given back only while it holds it. Never destroyed (the watchdog thread is detached).
std::mutex& slab_unmap_lock() noexcept;
// compaction_remove(): before pool unmaps its slabs. Drops what is held for its stacks.
void compaction_remove(stack_pool* pool) noexcept;

struct compaction_stats {
  std::uint64_t held = 0;            // stacks held compacted now
  std::uint64_t held_bytes = 0;      // bytes those hold, instead of their pages
  std::uint64_t compacted = 0;       // compactions so far
  std::uint64_t restored = 0;        // stacks put back so far
  std::uint64_t passes = 0;          // passes over the pools so far
  std::uint64_t faults = 0;          // faults served so far (a restore, or a page of zeros)
  std::uint64_t slabs_released = 0;  // slabs of free stacks given back to the system so far
};
compaction_stats compaction_counts() noexcept;
// compaction_holds(): p is in a stack held compacted now (tests).
bool compaction_holds(const void* p);
// compact_parked_now(): runs one pass that compacts every fiber parked now, however
// briefly, and returns once it is done (tests, benchmarks). False without the service.
bool compact_parked_now();

}  // namespace rill::detail
