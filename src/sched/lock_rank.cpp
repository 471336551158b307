// The debug build's check of the lock order (lock_rank.hpp): a stack per thread of the
// ranked locks it holds.
#include "sched/lock_rank.hpp"

#include <cstdio>
#include <cstdlib>

namespace rill::detail {

namespace {

struct held_lock {
  lock_rank rank;
  const void* lock;
};

// A thread holds a few ranked locks at most (one per rank); more means a lock is not
// released, which the check reports too.
constexpr int max_held = 16;
thread_local held_lock t_held[max_held];
thread_local int t_nheld = 0;

[[noreturn]] void lock_order_violation(const char* what, lock_rank taken, lock_rank held) {
  std::fprintf(stderr, "rill: lock order: %s (taking rank %d while holding rank %d; see %s)\n",
               what, static_cast<int>(taken), static_cast<int>(held), "src/sched/lock_rank.hpp");
  std::abort();
}

}  // namespace

void lock_rank_acquire(lock_rank r, const void* lock) noexcept {
  for (int i = 0; i < t_nheld; ++i) {
    if (t_held[i].rank >= r) {
      lock_order_violation("a lock taken under one that comes after it", r, t_held[i].rank);
    }
  }
  if (t_nheld == max_held) lock_order_violation("too many ranked locks held", r, r);
  t_held[t_nheld++] = {r, lock};
}

void lock_rank_release(const void* lock) noexcept {
  // Usually the last one taken; a lock_guard's scopes may end in another order.
  for (int i = t_nheld - 1; i >= 0; --i) {
    if (t_held[i].lock == lock) {
      for (int j = i; j + 1 < t_nheld; ++j) t_held[j] = t_held[j + 1];
      --t_nheld;
      return;
    }
  }
  std::fputs("rill: lock order: a ranked lock released by a thread that does not hold it\n",
             stderr);
  std::abort();
}

}  // namespace rill::detail
