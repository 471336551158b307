// The watchdog: Go's sysmon, for three of its jobs. It notices a worker that has run one
// fiber without a scheduling point for longer than its runtime's threshold and reports that
// fiber on stderr, once per fiber; it asks a fiber that has run fiber_slice_ns without one to
// yield (fiber::slice_over, which a pipeline's fused loop reads between items: Go's
// preemption request, without the signal); and it asks a busy worker to look at due timers,
// the global queue and the poller at its next scheduling point (worker::look_now) when its
// fibers switch too seldom for its periodic look to come soon.
//
// The problem. Scheduling is cooperative: a fiber that calls sleep(), blocks in a syscall or
// computes for a long time holds its worker thread, and every fiber queued on that worker
// waits (with every worker so held, every fiber of the runtime waits). Nothing fails: the
// program is just slow, and the user is not told that rill::blocking() or
// this_fiber::sleep_for() was what they wanted.
//
// The protocol.
//   1. Each worker counts its scheduling points in `switches` (worker::set_current(), and a
//      yield that found nobody to yield to): a relaxed store to the line that the switch
//      writes anyway (`current`). Nothing else is added to the switch path: no clock read.
//   2. One thread for the process looks at every runtime every half of the smallest
//      threshold (and of fiber_slice_ns). For each worker it reads `switches` and `current`;
//      the first time it sees a value of `switches` it notes the time. A worker whose count
//      has not moved for the fiber's threshold since then, running a fiber, has run that
//      fiber without a scheduling point for at least that long.
//   3. Before it reports, it takes the fiber's registry slot's lock (the record stays alive
//      under it: see stack_slot), checks that the slot still names that fiber and that the
//      worker's count has still not moved (so the fiber did not end or switch meanwhile),
//      reads the fiber's name and threshold, and marks it reported.
//   4. It sleeps while every worker of every watched runtime is idle, until the earliest
//      timer of those runtimes (`wake_at`; none: no deadline), so an idle process has no
//      periodic wake-up. A worker that leaves its idle state wakes it (watchdog_kick),
//      unless the watchdog wakes by itself soon: a worker woken by a timer does not pay a
//      futex call ahead of the sleeper it wakes for. Dekker: the watchdog sets `wake_at`,
//      then `asleep`, then looks at each runtime's idle count; a worker lowers its
//      runtime's idle count, then reads `asleep` and `wake_at` (all seq_cst): one of them
//      sees the other.
//
// Rejected: a thread per runtime (a thread start and join for every rill::run(), however
// short); a signal to the stalled thread so that it reports itself (it would interrupt the
// very sleep() or syscall being diagnosed: sleep() returns early on a signal); a clock read
// at every switch (the count suffices: the watchdog reads the clock, not the workers).
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "sched/runtime.hpp"

namespace rill::detail {
namespace {

// A worker that leaves its idle state does not wake the watchdog when the watchdog wakes by
// itself within this long (a quarter slice: its looks come at most that much later).
constexpr std::int64_t kick_slack_ns = fiber_slice_ns / 4;
// The watchdog's own wake-up for a timer: at least this far off, and none beyond the max.
constexpr std::int64_t self_wake_min_ns = 100'000;
constexpr std::int64_t self_wake_max_ns = 3'600'000'000'000;

struct watchdog_state {
  std::mutex mu;
  std::condition_variable cv;
  std::vector<runtime*> runtimes;  // guarded by mu: the watched runtimes
  bool started = false;            // guarded by mu
  bool kicked = false;             // guarded by mu
  // The last report (a test hook), guarded by mu. A fixed buffer: a report allocates
  // nothing, so the first one, which comes when the machine stalls a fiber, does not leave
  // a block in a process that counts them (test/fault) nor fail out of memory.
  char last_report[768] = {};
  std::atomic<bool> asleep{false};
  std::atomic<std::int64_t> wake_at{INT64_MAX};  // while asleep: when it wakes by itself
  std::atomic<std::uint64_t> passes{0};
  std::atomic<std::uint64_t> reports{0};
};

// Never destroyed: the thread is detached and may outlive static destruction.
watchdog_state& state() {
  static watchdog_state* s = new watchdog_state;
  return *s;
}

// The slot of the stack a fiber record lives on: the record ends just below its slot, which
// is 64-byte aligned (see stack::slot() and runtime::create_fiber()). Computed from the
// address alone, because the record may be gone: the slot itself lives as long as its slab
// (watch() holds slab_unmap_lock() while it reads slots).
stack_slot* slot_of(const fiber* f) noexcept {
  const auto end = reinterpret_cast<std::uintptr_t>(f) + sizeof(fiber);
  return reinterpret_cast<stack_slot*>((end + 63) & ~std::uintptr_t{63});
}

void loop() {
  watchdog_state& s = state();
  std::unique_lock lk(s.mu);
  for (;;) {
    const std::int64_t now = now_ns();
    bool awake = false;
    std::int64_t period = INT64_MAX;
    for (runtime* rt : s.runtimes) {
      if (rt->watch(now)) awake = true;
      if (rt->watchdog_ns() > 0) period = std::min(period, rt->watchdog_ns() / 2);
    }
    // A fiber's slice ends fiber_slice_ns after its worker's last scheduling point: looking
    // every half of it asks within 1.5 slices.
    period = std::min(period, fiber_slice_ns / 2);
    s.passes.fetch_add(1, std::memory_order_release);
    if (!awake) {
      std::int64_t wake_at = INT64_MAX;
      for (runtime* rt : s.runtimes) wake_at = std::min(wake_at, rt->next_timer());
      // Not sooner than self_wake_min_ns from now (a timer overdue while every worker is
      // idle is about to wake one: no hot loop meanwhile), and none for a far timer.
      wake_at = std::max(wake_at, now + self_wake_min_ns);
      if (wake_at - now > self_wake_max_ns) wake_at = INT64_MAX;
      s.wake_at.store(wake_at, std::memory_order_seq_cst);
      s.asleep.store(true, std::memory_order_seq_cst);
      // Look again after announcing the sleep (see 4. above).
      const std::int64_t again = now_ns();
      for (runtime* rt : s.runtimes) awake = rt->watch(again) || awake;
      if (!awake) {
        const auto kicked = [&] { return s.kicked; };
        if (wake_at == INT64_MAX) {
          s.cv.wait(lk, kicked);
        } else {
          s.cv.wait_for(lk, std::chrono::nanoseconds(wake_at - again), kicked);
        }
      }
      s.kicked = false;
      s.asleep.store(false, std::memory_order_relaxed);
      continue;
    }
    s.cv.wait_for(lk, std::chrono::nanoseconds(std::max<std::int64_t>(period, 1'000'000)));
  }
}

}  // namespace

bool runtime::watch(std::int64_t now) {
  watchdog_state& s = state();
  // Work that a busy worker finds only when it looks (find_runnable): look_now below.
  const bool to_look = next_deadline_.load(std::memory_order_relaxed) <= now ||
                       gq_size_.load(std::memory_order_relaxed) != 0 ||
                       (io_waiters.load(std::memory_order_relaxed) > 0 &&
                        !poll_sleeping_.load(std::memory_order_relaxed));
  // The slots read below belong to fibers that may end meanwhile: their slabs stay mapped.
  std::lock_guard mapped(slab_unmap_lock());
  for (auto& wp : workers_) {
    worker& w = *wp;
    worker::watch_state& d = w.watch;
    const std::uint64_t n = w.switches.load(std::memory_order_acquire);
    fiber* f = w.current.load(std::memory_order_acquire);
    // Too few scheduling points since the last pass for next_local()'s periodic look to
    // have come (nor, idle, did it look for itself): ask it to look at the next one.
    if (to_look && f && n - d.looked < global_check_interval &&
        !w.look_now.load(std::memory_order_relaxed)) {
      w.look_now.store(true, std::memory_order_relaxed);
    }
    d.looked = n;
    if (n != d.switches || !f) {
      d.switches = n;
      d.since = now;
      d.need = watchdog_ns();
      d.done = f == nullptr;
      d.asked = f == nullptr;
      continue;
    }
    if (!d.asked && now - d.since >= fiber_slice_ns) {
      // Its slice is over: ask it to yield (a fused pipeline loop looks at the flag).
      d.asked = true;
      stack_slot* slot = slot_of(f);
      std::lock_guard slk(slot->lk);
      if (slot->owner.load(std::memory_order_acquire) == f &&
          w.switches.load(std::memory_order_acquire) == n) {
        f->slice_over.store(true, std::memory_order_relaxed);
      }
    }
    if (d.done || now - d.since < d.need) continue;
    // Stalled for at least the runtime's threshold: look at the fiber (3. above).
    char name[sizeof f->name];
    std::uint64_t id = 0;
    {
      stack_slot* slot = slot_of(f);
      std::lock_guard slk(slot->lk);
      if (slot->owner.load(std::memory_order_acquire) != f ||
          w.switches.load(std::memory_order_acquire) != n) {
        continue;  // it switched meanwhile: the next look sees a new count
      }
      const std::int64_t need =
          f->watchdog_ms < 0 ? watchdog_ns() : std::int64_t{f->watchdog_ms} * 1'000'000;
      if (need == 0 || f->stall_reported) {
        d.done = true;
        continue;
      }
      if (now - d.since < need) {
        d.need = need;  // this fiber's threshold is longer: look again then
        continue;
      }
      f->stall_reported = true;
      d.done = true;
      id = f->id;
      std::memcpy(name, f->name, sizeof name);
      name[sizeof name - 1] = 0;
    }
    char msg[768];
    std::snprintf(
        msg, sizeof msg,
        "rill: watchdog: fiber %llu%s%s%s has run for %lld ms on worker %u without a "
        "scheduling point; the fibers queued on that worker wait meanwhile. A blocking call "
        "(sleep(), blocking I/O, a lock of another library) belongs in rill::blocking(...); a "
        "wait, in rill::this_fiber::sleep_for(); a long computation should call "
        "rill::this_fiber::yield() now and then. (Reported once per fiber; the threshold is "
        "rill::options::watchdog, or run_options::watchdog for a pipeline; 0 turns it off.)\n",
        static_cast<unsigned long long>(id), name[0] ? " (" : "", name, name[0] ? ")" : "",
        static_cast<long long>((now - d.since) / 1'000'000), w.index);
    std::fputs(msg, stderr);
    std::fflush(stderr);
    static_assert(sizeof s.last_report == sizeof msg);
    std::memcpy(s.last_report, msg, sizeof msg);
    s.reports.fetch_add(1, std::memory_order_release);
  }
  return nidle_.load(std::memory_order_seq_cst) != workers();
}

void watchdog_add(runtime* rt) {
  watchdog_state& s = state();
  std::lock_guard lk(s.mu);
  if (!s.started) {
    std::thread(loop).detach();  // may throw std::system_error
    s.started = true;
  }
  s.runtimes.push_back(rt);  // may throw: rt is not watched then
  s.kicked = true;           // its workers start awake
  s.cv.notify_one();
}

void watchdog_remove(runtime* rt) noexcept {
  watchdog_state& s = state();
  std::lock_guard lk(s.mu);
  std::erase(s.runtimes, rt);
}

void watchdog_kick() noexcept {
  watchdog_state& s = state();
  if (!s.asleep.load(std::memory_order_seq_cst)) return;
  // It wakes by itself for a timer within kick_slack_ns: the worker woke for that timer.
  if (s.wake_at.load(std::memory_order_seq_cst) <= now_ns() + kick_slack_ns) return;
  std::lock_guard lk(s.mu);
  s.kicked = true;
  s.cv.notify_one();
}

std::uint64_t watchdog_reports() noexcept {
  return state().reports.load(std::memory_order_acquire);
}
std::uint64_t watchdog_passes() noexcept { return state().passes.load(std::memory_order_acquire); }
std::string watchdog_last_report() {
  watchdog_state& s = state();
  std::lock_guard lk(s.mu);
  return std::string(s.last_report);
}

}  // namespace rill::detail
