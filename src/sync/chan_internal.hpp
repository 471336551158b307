// Shared by chan.cpp and select.cpp.
#pragma once

#include <atomic>
#include <cstdint>

#include "rill/detail/chan_core.hpp"
#include "sched/runtime.hpp"

namespace rill::detail {

// select_state: one parked select. `done` is claimed once: 0 -> winning case index + 1.
struct select_state {
  std::atomic<std::uint32_t> done{0};
  fiber* who = nullptr;                 // the selecting fiber; nullptr: a plain thread
  std::atomic<std::uint32_t> futex{0};  // plain thread: 1 once woken
  void wake() noexcept;
};

// dequeue() pops the first waiter of q that is not a lost select waiter (claiming the
// select for it); nullptr if none. Requires the channel's lock.
waiter* dequeue(wait_list& q) noexcept;
// requeue() puts back a waiter whose operation failed (a throwing move), unclaiming it.
void requeue(wait_list& q, waiter* w) noexcept;
// wake() wakes the owner of a dequeued waiter. Call with no channel lock held.
void wake(waiter* w) noexcept;

bool send_locked(chan_core& c, void* src);
int recv_locked(chan_core& c, void* opt);

extern std::atomic<std::int64_t> g_live_channels;

}  // namespace rill::detail
