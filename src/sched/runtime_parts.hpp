// What the files that implement `runtime` share, and nothing outside src/sched/ needs:
//   scheduler.cpp   workers, run queues, stealing, the idle protocol, the netpoller's hooks
//   fiber_life.cpp  a fiber's creation, accounting, registry, entry and exit, reaping
//   deadlock.cpp    deadlock detection and the fiber dump
//   overflow.cpp    stack-overflow reporting (SIGSEGV handler, alternate signal stacks)
//   entry.cpp       the public entry points (run, go, names) and stats
//   env.cpp         defaults read from the environment
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

#include "sched/runtime.hpp"

namespace rill::detail {

// The most stacks a worker keeps in its cache; it takes and gives back half at a time.
inline constexpr std::size_t stack_cache_max = 64;

// Every live runtime, for dumps from plain threads (the test watchdog), global stats and the
// deadlock check's look at the other runtimes (entry.cpp).
extern ranked_mutex g_runtimes_mu;
extern std::vector<runtime*> g_runtimes RILL_GUARDED_BY(g_runtimes_mu);

// env.cpp. default_workers(): RILL_WORKERS, else the hardware's threads.
// default_watchdog_ms(): RILL_WATCHDOG_MS (0: off), else 100. read_chaos_seed():
// RILL_SCHED_SEED, else 0 (no perturbation).
unsigned default_workers();
std::uint32_t default_watchdog_ms();
std::uint64_t read_chaos_seed();
// default_compact_parked_ms(): RILL_COMPACT_PARKED_MS, else 0 (off).
std::uint32_t default_compact_parked_ms();
// fiber_parked_long(): the stack compaction's age function (fiber/compact.hpp).
bool fiber_parked_long(void* owner, bool now, char** sp, const void** key) noexcept;

// overflow.cpp. install_segv_handler(): once per process, the handler that reports a
// fiber's stack overflow. install_altstack()/remove_altstack(): the worker thread's
// alternate signal stack, where that handler runs (the fiber's own stack is spent).
void install_segv_handler();
void install_altstack(worker& w) noexcept;
void remove_altstack(worker& w) noexcept;

// scheduler.cpp. enter_worker_thread(): the calling thread becomes w's (its current worker,
// exception state, signal stack, timer slack). leave_worker_thread(): undoes that, and
// makes `restore` the thread's current worker.
void enter_worker_thread(worker& w);
void leave_worker_thread(worker& w, worker* restore) noexcept;

// fiber_main(): every fiber's first frame (fiber_life.cpp).
void fiber_main(bctx::transfer_t t) noexcept;

template <class F>
void runtime::for_each_fiber(F fn) {
  auto visit = [&](stack_slot& s) {
    std::lock_guard lk(s.lk);
    if (void* f = s.owner.load(std::memory_order_acquire)) fn(static_cast<fiber*>(f));
  };
  stacks_.for_each_slot(visit);
  lock_guard lk(pools_mu_);
  for (auto& p : more_stacks_) p->for_each_slot(visit);
}

}  // namespace rill::detail
