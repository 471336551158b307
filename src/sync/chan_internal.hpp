// Shared by chan.cpp and select.cpp.
#pragma once

#include <atomic>
#include <cstdint>

#include "rill/detail/chan_core.hpp"
#include "sched/runtime.hpp"
#include "sync/wait.hpp"

namespace rill::detail {

// select_state: one parked select. `done` is claimed once: 0 -> winning case index + 1, or
// -> `retry` when the winner's handover failed (a move threw) and the select must run again.
struct select_state {
  static constexpr std::uint32_t retry = 0xffffffffu;
  std::atomic<std::uint32_t> done{0};
  fiber* who = nullptr;                 // the selecting fiber; nullptr: a plain thread
  std::atomic<std::uint32_t> futex{0};  // plain thread: 1 once woken
  void wake() noexcept;
};

// dequeue() pops the first waiter of q that is not a lost select waiter (claiming the
// select for it); nullptr if none. Requires the channel's lock.
inline waiter* dequeue(wait_list& q) noexcept {
  while (waiter* w = q.pop_front()) {
    if (!w->select) return w;
    auto* st = static_cast<select_state*>(w->select);
    std::uint32_t open = 0;
    if (st->done.compare_exchange_strong(open, static_cast<std::uint32_t>(w->index) + 1,
                                         std::memory_order_acq_rel)) {
      return w;
    }
    // Lost: another case of that select already won; its owner cleans up the rest.
  }
  return nullptr;
}
// wake() wakes the owner of a dequeued waiter. Call with no channel lock held.
inline void wake(waiter* w) noexcept {
  if (!w->select) {
    unpark(*w);
    return;
  }
  static_cast<select_state*>(w->select)->wake();
}

bool send_locked(chan_core& c, void* src);
recv_result recv_locked(chan_core& c, void* opt);

extern std::atomic<std::int64_t> g_live_channels;

}  // namespace rill::detail
