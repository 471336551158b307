// The public entry points (rill::run, go, the fiber's name and watchdog, the default
// runtime) and the runtime's stats.
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <utility>

#include "fiber/compact.hpp"
#include "rill/fiber.hpp"
#include "sched/process_wide.hpp"
#include "sched/runtime.hpp"
#include "sched/runtime_parts.hpp"

namespace rill::detail {

std::atomic<std::int64_t> g_abandoned_fibers{0};
std::atomic<std::int64_t> g_pending_timers{0};
std::atomic<bool> g_chaos{false};
std::atomic<std::int64_t> g_external_waiters{0};

ranked_mutex g_runtimes_mu{lock_rank::runtimes};
std::vector<runtime*> g_runtimes RILL_GUARDED_BY(g_runtimes_mu);

namespace {

// A fiber that spawns while its worker's queue holds this many fibers yields (fiber_start).
constexpr std::uint32_t spawn_yield_queue = run_queue::capacity / 2;

// Worker threads of rill::run come from a process-wide pool: a thread whose turn as a
// worker has ended waits for the next run's (and leaves after idle_exit without one), so a
// program that calls rill::run again and again starts its threads once, as oneTBB's workers
// and a Boost.Fiber pool's threads are started once. A loan is one worker's turn: lend()
// hands it to an idle thread, or to a new one; join() waits until its function has returned,
// after which the thread touches nothing of the run.
struct loan {
  void (*fn)(void*) noexcept = nullptr;
  void* arg = nullptr;
  bool done = false;  // under the pool's lock
};

class thread_pool {
 public:
  // lend(): l.fn(l.arg) runs on a pool thread. Throws std::system_error when there is no
  // idle thread and none can be started.
  void lend(loan& l) {
    {
      std::lock_guard lk(mu_);
      if (idle_) {
        idler* t = std::exchange(idle_, idle_->next);
        t->job = &l;
        t->cv.notify_one();
        return;
      }
    }
    std::thread([this, &l] { serve(&l); }).detach();
  }

  void join(loan& l) {
    std::unique_lock lk(mu_);
    done_cv_.wait(lk, [&] { return l.done; });
  }

 private:
  static constexpr std::chrono::seconds idle_exit{5};

  struct idler {
    std::condition_variable cv;
    loan* job = nullptr;
    idler* next = nullptr;
  };

  void serve(loan* l) {
    idler self;
    std::unique_lock lk(mu_);
    for (;;) {
      lk.unlock();
      l->fn(l->arg);
      lk.lock();
      l->done = true;
      done_cv_.notify_all();
      self.next = idle_;
      idle_ = &self;
      while (!self.job) {
        if (self.cv.wait_for(lk, idle_exit) == std::cv_status::timeout && !self.job) {
          idler** p = &idle_;
          while (*p != &self) p = &(*p)->next;
          *p = self.next;
          return;
        }
      }
      l = std::exchange(self.job, nullptr);
    }
  }

  std::mutex mu_;
  std::condition_variable done_cv_;
  idler* idle_ = nullptr;  // guarded by mu_
};

thread_pool& worker_threads() { return process_wide<thread_pool>(); }

}  // namespace

// The workers' credit and cached stacks are read before the totals they are part of. A
// worker lowers a total before it lowers its own share (return_credit, the stack cache's
// release) and raises its credit before the total, so a snapshot taken while workers give
// back what they hold counts too few, never too many; and as each such move is marked
// (count_move, fiber_life.cpp), a snapshot that overlapped one is taken again, so that a
// runtime at rest reads exactly, even while its workers put away what its last run left.
//
// A retired fiber (fiber_retire) is out of live_fibers at once (its count moves into its
// worker's credit) and its stack out of live_stacks (retiring_stacks_, read first: reap()
// lowers it only after the stack is in a cache or back in the pool).
stats runtime::snapshot() noexcept {
  stats s;
  const compaction_stats c = compaction_counts();
  s.compacted_fibers = c.held;
  s.compacted_bytes = c.held_bytes;
  // moves(): the workers' move counts added up, or odd while one is under way (each only
  // grows, so an equal sum means no move began or ended in between).
  auto moves = [this] {
    std::uint64_t sum = 0, odd = 0;
    for (auto& w : workers_) {
      const std::uint64_t m = w->moves.load(std::memory_order_acquire);
      sum += m;
      odd |= m & 1;
    }
    return sum | odd;  // odd while any worker is in a move
  };
  // A move takes a few instructions; a worker preempted in the middle can hold one for a
  // time slice, so a snapshot gives up waiting after a while and keeps its low count.
  constexpr int max_tries = 10000;
  for (int tries = 0;; ++tries) {
    const std::uint64_t before = moves();
    if ((before & 1) != 0 && tries < max_tries) {
      if (tries >= 64) std::this_thread::yield();
      continue;
    }
    const std::int64_t retiring = retiring_stacks_.load(std::memory_order_acquire);
    std::int64_t credit = 0;
    std::size_t cached = 0;
    s.fibers_spawned = 0;
    s.steals = 0;
    for (auto& w : workers_) {
      credit += w->credit.load(std::memory_order_acquire);
      cached += w->cached.load(std::memory_order_acquire);
      s.fibers_spawned += w->spawned.load(std::memory_order_relaxed);
      s.steals += w->steals.load(std::memory_order_relaxed);
    }
    const std::int64_t live = live_fibers_.load(std::memory_order_acquire) - credit;
    s.live_fibers = live > 0 ? static_cast<std::size_t>(live) : 0;  // never below 0
    std::size_t stacks = stacks_.live();
    {
      lock_guard lk(pools_mu_);
      for (auto& p : more_stacks_) stacks += p->live();
    }
    const std::size_t idle = cached + static_cast<std::size_t>(retiring > 0 ? retiring : 0);
    s.live_stacks = stacks > idle ? stacks - idle : 0;
    std::atomic_thread_fence(std::memory_order_acquire);  // the values, then the moves
    if (moves() == before || tries >= max_tries) break;
  }
  {
    lock_guard lk(timer_mu_);
    s.pending_timers = timer_count_;
  }
  s.workers = workers();
  return s;
}

void runtime::rethrow_outcome() {
  if (std::exception_ptr d = last_deadlock()) std::rethrow_exception(d);
  if (main_exception_) std::rethrow_exception(main_exception_);
}

// ---- the public entry points --------------------------------------------------------------

void run_main(const run_config& cfg, void (*main)(void*), void* arg) {
  if (current_fiber()) {
    // From a fiber: the new runtime runs on a pool thread while this fiber parks. Run on
    // this thread, it would hold the caller's worker until it ends, and with one worker a
    // nested run that waits on a fiber of ours (a channel it fed) would never end.
    struct nested_t {
      const run_config& cfg;
      void (*main)(void*);
      void* arg;
      std::exception_ptr error;
    } n{cfg, main, arg, nullptr};
    nested_run_call(
        [](void* p) noexcept {
          auto* n = static_cast<nested_t*>(p);
          try {
            run_main(n->cfg, n->main, n->arg);
          } catch (...) {
            n->error = std::current_exception();
          }
        },
        &n);
    if (n.error) std::rethrow_exception(n.error);
    return;
  }
  runtime rt(cfg);
  worker* saved = current_worker();
  thread_pool& threads = worker_threads();
  std::vector<loan> loans(rt.workers());  // loans[i]: worker i's turn (0: this thread's)
  // The other workers first (they park until there is work), then the main fiber. If a
  // worker thread or the main fiber cannot be had, stop the workers already started and
  // report it: running with fewer workers than configured would break deadlock detection,
  // which waits for every worker to be idle.
  unsigned started = 1;
  try {
    for (; started < rt.workers(); ++started) {
      loans[started].fn = [](void* p) noexcept {
        worker& w = *static_cast<worker*>(p);
        enter_worker_thread(w);
        w.rt->run_worker(w);
        leave_worker_thread(w, nullptr);
      };
      loans[started].arg = &rt.worker_at(started);
      threads.lend(loans[started]);
    }
    rt.start_main(main, arg);
  } catch (...) {
    rt.abort_start();
    for (unsigned i = 1; i < started; ++i) threads.join(loans[i]);
    throw;
  }
  worker& w0 = rt.worker_at(0);
  enter_worker_thread(w0);
  rt.run_worker(w0);
  leave_worker_thread(w0, saved);
  for (unsigned i = 1; i < started; ++i) threads.join(loans[i]);
  rt.drop_timers();
  rt.rethrow_outcome();
}

void* fiber_create(std::size_t size, std::size_t align, void (*entry)(void*), fiber*& out,
                   std::size_t stack_size) {
  worker* w = current_worker();
  if (!w || !w->running()) throw std::logic_error("rill::go: called outside a rill runtime");
  out = w->rt->create_fiber(w, size, align, entry, stack_size);
  return out->closure;
}

void* fiber_create_in(runtime* rt, std::size_t size, std::size_t align, void (*entry)(void*),
                      fiber*& out, std::size_t stack_size) {
  worker* w = current_worker();
  out = rt->create_fiber(w && w->rt == rt ? w : nullptr, size, align, entry, stack_size);
  return out->closure;
}

void fiber_start(fiber* f, bool spread) noexcept {
  worker* w = current_worker();
  // Read before the start: once started, f may run on another worker, end and be reused.
  runtime* const rt = f->rt;
  rt->start_fiber(w, f, spread);
  // A fiber that has filled its worker's queue with new fibers lets them run before it
  // spawns more (as Go's scheduler would preempt it): they then finish, or park, on stacks
  // that are reused, instead of each spawn committing a fresh stack while the queue
  // overflows into the global queue.
  if (w && w->rt == rt && w->running() && w->queue.size() >= spawn_yield_queue) {
    this_fiber::yield();
  }
}

void fiber_discard(fiber* f) noexcept { f->rt->discard_fiber(f); }

void default_run_begin(bool watched) noexcept {
  (watched ? default_runtime()->watched_runs : default_runtime()->unwatched_runs)
      .fetch_add(1, std::memory_order_seq_cst);
}

void default_run_end(bool watched) noexcept {
  (watched ? default_runtime()->watched_runs : default_runtime()->unwatched_runs)
      .fetch_sub(1, std::memory_order_seq_cst);
}

std::exception_ptr fiber_take_abort() noexcept {
  fiber* f = current_fiber();
  if (!f || !f->aborted) return nullptr;
  f->aborted = false;
  return f->rt->last_deadlock();
}

run_wait::run_wait() noexcept : plain_(current_fiber() == nullptr) {
  if (plain_) g_external_waiters.fetch_sub(1, std::memory_order_seq_cst);
}
run_wait::~run_wait() {
  if (plain_) g_external_waiters.fetch_add(1, std::memory_order_seq_cst);
}

void fiber_retire() noexcept {
  if (fiber* f = current_fiber()) f->rt->retire(*f);
}

runtime* current_runtime() noexcept {
  worker* w = current_worker();
  return w ? w->rt : nullptr;
}

// The default runtime: started on first use by a plain thread that runs a pipeline; its
// workers are background threads that park when idle, and it lives until the process
// exits (like Go's). Its options leave deadlock detection off, as plain threads may feed
// it; it watches while every plain-thread run in flight asks for it (watches_deadlock()).
runtime* default_runtime() {
  static runtime* rt = [] {
    run_config cfg{0, 128 * 1024, false, true, default_watchdog_ms()};
    auto* r = new runtime(cfg);
    for (unsigned i = 0; i < r->workers(); ++i) {
      worker& w = r->worker_at(i);
      w.thread = std::thread([r, &w] {
        enter_worker_thread(w);
        r->run_worker(w);
        leave_worker_thread(w, nullptr);
      });
      w.thread.detach();
    }
    return r;
  }();
  return rt;
}

void fiber_set_name(const char* name) noexcept {
  if (fiber* f = current_fiber()) {
    // dump() reads names under the registry slot's lock, from any thread (the test watchdog).
    std::lock_guard lk(f->stk.slot()->lk);
    std::strncpy(f->name, name, sizeof f->name - 1);
    f->name[sizeof f->name - 1] = 0;
  }
}

void fiber_get_name(char* out, std::size_t n) noexcept {
  if (n == 0) return;
  out[0] = 0;
  if (fiber* f = current_fiber()) {
    std::lock_guard lk(f->stk.slot()->lk);
    std::strncpy(out, f->name, n - 1);
    out[n - 1] = 0;
  }
}

std::int32_t fiber_set_watchdog(std::int32_t ms) noexcept {
  fiber* f = current_fiber();
  if (!f) return -1;
  std::lock_guard lk(f->stk.slot()->lk);  // the watchdog reads it under this lock
  return std::exchange(f->watchdog_ms, ms < 0 ? -1 : ms);
}

std::atomic<bool>* fiber_slice_flag() noexcept {
  static std::atomic<bool> never{false};
  fiber* f = current_fiber();
  return f ? &f->slice_over : &never;
}

std::size_t current_stack_size() noexcept {
  fiber* f = current_fiber();
  return f ? f->stk.size : 0;
}

}  // namespace rill::detail

namespace rill {

const char* to_string(wait_reason r) noexcept {
  switch (r) {
    case wait_reason::none:
      return "nothing";
    case wait_reason::chan_send:
      return "chan send";
    case wait_reason::chan_recv:
      return "chan recv";
    case wait_reason::select:
      return "select";
    case wait_reason::sleep:
      return "sleep";
    case wait_reason::wait_group:
      return "wait_group";
    case wait_reason::mutex:
      return "mutex";
    case wait_reason::cond_var:
      return "condition_variable";
    case wait_reason::io_read:
      return "I/O read";
    case wait_reason::io_write:
      return "I/O write";
    case wait_reason::blocking_call:
      return "blocking call";
    case wait_reason::pipeline:
      return "pipeline";
  }
  return "?";
}

stats runtime_stats() noexcept {
  detail::worker* w = detail::current_worker();
  return w ? w->rt->snapshot() : stats{};
}

stats global_stats() noexcept {
  stats s;
  {
    detail::lock_guard lk(detail::g_runtimes_mu);
    for (detail::runtime* rt : detail::g_runtimes) {
      const stats r = rt->snapshot();
      s.live_fibers += r.live_fibers;
      s.live_stacks += r.live_stacks;
    }
  }
  const auto abandoned = static_cast<std::size_t>(detail::g_abandoned_fibers.load());
  s.live_fibers += abandoned;
  s.live_stacks += abandoned;
  s.pending_timers = static_cast<std::size_t>(detail::g_pending_timers.load());
  const detail::compaction_stats c = detail::compaction_counts();
  s.compacted_fibers = c.held;
  s.compacted_bytes = c.held_bytes;
  return s;
}

std::string dump_fibers() {
  if (detail::worker* w = detail::current_worker()) return w->rt->dump();
  detail::lock_guard lk(detail::g_runtimes_mu);
  std::string out;
  for (detail::runtime* rt : detail::g_runtimes) out += rt->dump();
  return out;
}

}  // namespace rill
