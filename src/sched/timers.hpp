// Timers: a pairing heap on `when` per runtime (a heap-ordered tree: the earliest timer is the
// root), fired by the workers (see scheduler.cpp's find_runnable and timers.cpp). A timer object
// belongs to its user (usually on a parked fiber's stack).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace rill::detail {

// timer_state: who owns a timer and what may happen next.
//   idle -> armed (arm) -> firing (a worker popped it) -> done (fire() said so)
//   idle or armed -> cancelled (cancel)
//   firing -> armed (rearm, from inside fire(): periodic timers)
enum class timer_state : std::uint8_t { idle, armed, firing, done, cancelled };

struct timer {
  std::int64_t when = 0;  // deadline, now_ns() clock
  // fire() runs on a worker with no lock held; it must not park. It must call
  // t->fired() before anything that may end t's lifetime (e.g. waking the fiber that
  // owns it).
  void (*fire)(timer* t) noexcept = nullptr;
  // drop() runs instead of fire() for a timer still armed when its runtime ends.
  void (*drop)(timer* t) noexcept = nullptr;
  // Links of the runtime's pairing heap, guarded by timer_mu_. Intrusive, so that arming
  // never allocates: arm() runs in after-switch actions, where a failure could not be
  // reported to anyone.
  timer* child = nullptr;    // leftmost child
  timer* sibling = nullptr;  // next sibling to the right
  timer* prev = nullptr;     // left sibling, or the parent of a leftmost child; root: nullptr
  std::atomic<timer_state> state{timer_state::idle};

  void fired() noexcept { state.store(timer_state::done, std::memory_order_release); }
};

}  // namespace rill::detail
