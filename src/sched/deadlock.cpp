// Deadlock detection. When the last worker goes idle with no timer, I/O wait, blocking call or
// outside thread in flight while fibers are alive, it waits a short grace period and, if
// nothing happened, declares a deadlock: run() will throw deadlock_error with a dump, and
// every parked fiber is taken off its wait list and resumed with fiber_aborted, so its
// destructors run. A fiber that parks again while unwinding is woken as usual when its wait
// ends, or abandoned at the next check. Runtimes of one process may share channels: while
// another runtime could still run a fiber (a worker awake, work queued, a timer, I/O wait
// or blocking call pending), or a plain thread waits in rill, no deadlock is declared, and
// the check is repeated. A plain thread that waits for a run to end (run_wait) does not
// count: it cannot wake a fiber. The default runtime lives on after a deadlock: each
// declaration aborts the fibers not aborted before, and leaves alone those that parked
// again while unwinding.
#include <algorithm>
#include <sstream>
#include <string>

#include "rill/runtime.hpp"
#include "sched/futex.hpp"
#include "sched/runtime.hpp"
#include "sched/runtime_parts.hpp"

namespace rill::detail {

namespace {

constexpr std::int64_t deadlock_grace_ns = 20'000'000;
constexpr std::int64_t max_deadlock_recheck_ns = 200'000'000;  // see on_all_idle

}  // namespace

bool runtime::may_act(bool self) noexcept {
  return nidle_.load(std::memory_order_seq_cst) != workers() || any_work() ||
         next_deadline_.load(std::memory_order_seq_cst) != INT64_MAX ||
         io_waiters.load(std::memory_order_seq_cst) != 0 ||
         blocking_calls.load(std::memory_order_seq_cst) != 0 ||
         outside_readies_.load(std::memory_order_seq_cst) != 0 ||
         (self && nested_runs.load(std::memory_order_seq_cst) != 0);
}

// others_may_act(): some other runtime of the process may act (see may_act()); else adds
// up their wake-up epochs in `epochs`, for the caller to compare across its grace period.
bool runtime::others_may_act(std::uint64_t& epochs) noexcept {
  lock_guard lk(g_runtimes_mu);
  for (runtime* rt : g_runtimes) {
    if (rt == this) continue;
    if (rt->may_act(false)) return true;
    epochs += rt->idle_epoch_.load(std::memory_order_seq_cst) + 1;  // +1: a runtime came or went
  }
  return false;
}

bool runtime::watches_deadlock() const noexcept {
  if (cfg_.detect_deadlock) return true;
  return cfg_.persistent && watched_runs.load(std::memory_order_seq_cst) > 0 &&
         unwatched_runs.load(std::memory_order_seq_cst) == 0;
}

void runtime::on_all_idle(worker& w) {
  // Every worker is idle and no timer is pending. If fibers are alive and nothing can wake
  // them, this is a deadlock; wait a grace period first, for outside threads. A fiber of
  // another runtime (a shared channel) or a plain thread waiting in rill may wake ours:
  // while one might, wait and look again (the wait grows to max_deadlock_recheck_ns; any
  // wake-up of this worker ends it).
  if (!watches_deadlock()) return;
  if (live_fibers_.load(std::memory_order_acquire) == 0) return;
  const std::uint64_t epoch = idle_epoch_.load(std::memory_order_relaxed);
  std::uint64_t before = 0;
  bool busy = others_may_act(before);
  for (std::int64_t grace = deadlock_grace_ns;;
       grace = std::min(2 * grace, max_deadlock_recheck_ns)) {
    const std::int64_t deadline = now_ns() + grace;
    while (w.wake_word.load(std::memory_order_acquire) == 0) {
      const std::int64_t left = deadline - now_ns();
      if (left <= 0) break;
      futex_wait(w.wake_word, 0, left);
    }
    if (w.wake_word.load(std::memory_order_acquire) != 0) return;
    if (live_fibers_.load(std::memory_order_acquire) == 0 || !watches_deadlock()) return;
    // A plain thread waiting in rill may wake a fiber of ours too, and when its wait ends
    // nothing here wakes up: look again later as well.
    std::uint64_t after = 0;
    const bool busy_now = others_may_act(after);
    if (!busy && !busy_now && after == before &&
        g_external_waiters.load(std::memory_order_seq_cst) == 0) {
      break;
    }
    busy = busy_now;  // this round's end is the next one's start
    before = after;
  }
  {
    lock_guard lk(idle_mu_);
    if (!w.in_idle || idle_epoch_.load() != epoch || may_act(true) ||
        g_external_waiters.load() != 0 || shutdown_.load() || !watches_deadlock()) {
      return;
    }
    if (deadlock_declared_ && !cfg_.persistent) {
      // Aborted fibers parked again while unwinding: abandon them and stop. (The default
      // runtime lives on: such fibers stay parked, and each deadlock aborts only the
      // fibers not aborted before.)
      shutdown_.store(true);
      while (!idle_.empty()) wake_worker_locked(*idle_.back(), false);
      return;
    }
    deadlock_declared_ = true;
    // Leave the idle list ourselves: this worker runs the aborted fibers. (With its timer
    // role: a timer armed and cancelled while it parked may have left it the sleeper, and a
    // later arm() would "wake" it, counting it out of nidle_ a second time.)
    leave_idle_locked(w);
    idle_epoch_.fetch_add(1);
    w.wake_word.store(1);
  }
  declare_deadlock();
}

std::vector<fiber*> runtime::parked_fibers() {
  std::vector<fiber*> out;
  for_each_fiber([&](fiber* f) {
    if (is_parked(f->state.load(std::memory_order_relaxed))) out.push_back(f);
  });
  return out;
}

bool runtime::declare_deadlock() {
  std::vector<fiber*> victims = parked_fibers();
  std::erase_if(victims, [](fiber* f) { return f->aborted; });
  if (victims.empty()) return false;  // only fibers that parked again while unwinding
  std::string msg = "rill: deadlock: all fibers are asleep\n" + dump();
  {
    lock_guard lk(deadlock_mu_);
    deadlock_ = std::make_exception_ptr(deadlock_error(msg));
  }
  for (fiber* f : victims) {
    f->aborted = true;
    f->abort_wake = true;
    if (f->cancel) f->cancel(f->cancel_arg);
    f->state.store(fiber_state::runnable, std::memory_order_relaxed);
    push_global(f);
  }
  return true;
}

std::exception_ptr runtime::last_deadlock() {
  lock_guard lk(deadlock_mu_);
  return deadlock_;
}

std::string runtime::dump() {
  std::ostringstream os;
  const std::int64_t now = now_ns();
  for_each_fiber([&](fiber* f) { format_fiber(os, f, now); });  // rill::dump's lines too
  return os.str();
}

}  // namespace rill::detail
