// The M:N scheduler: workers, run queues, stealing, idle parking, deadlock detection.
//
// The problem. N worker threads run many fibers. A fiber runs until it parks (channel,
// lock, sleep, I/O) or yields; then its worker picks the next one. Work must spread to idle
// workers without a syscall per hand-off, idle workers must sleep (an idle runtime uses no
// CPU), and no wake-up may be lost.
//
// Where fibers wait to run (Go's design):
//   - runnext: one slot per worker for the fiber just made ready by a fiber of this worker
//     (a channel hand-off). It runs next, on this core, while the data is hot. A fiber that
//     keeps refilling runnext (a ping-pong pair) is capped at `runnext_cap` turns in a row so
//     the rest of the queue is not starved.
//   - the local run_queue (1024 slots, lock-free, others steal half of it; Go has 256,
//     but a burst of spawns that overflows it pays for the global queue's mutex and a walk
//     through cold fiber records, which made spawn+join in batches of 1000 slower);
//   - the global queue (mutex), for overflow and for fibers readied from outside threads;
//     checked every 61 scheduling ticks so nothing starves in it.
//
// Parking workers, without lost wake-ups. A worker that finds nothing first spins (it
// counts itself in nspinning_ and tries to steal), then parks: it registers in idle_ (under
// idle_mu_), increments nidle_, issues a full fence and checks every queue once more. Who
// makes work available pushes it, issues a full fence, then wakes an idle worker if
// nspinning_ == 0 and nidle_ > 0. By the two fences, either the parking worker sees the new
// work or the producer sees it idle (Dekker). A spinner that gives up decrements nspinning_
// and rechecks every queue the same way. A woken worker starts out spinning; when a spinner
// finds work and it was the last spinner, it wakes another, so work keeps spreading.
//
// Rejected: a wake (a futex syscall) for every fiber made ready, as Go's ready() does. A
// fiber readied into an empty runnext slot wakes nobody: the readier is usually about to
// park (channel ping-pong, a pipeline stage waiting for its next item), and the pair then
// runs on one core at the cost of a context switch. A fiber that lands in an empty run
// queue wakes an idle worker if nobody spins; one that lands behind others does not (the
// push that made the queue non-empty did: see wake_idle).
//
// Keeping communicating fibers together. Fibers that hand items to each other through
// channels run best on one worker: each hand-off is then a switch on a warm core. Split
// over two workers, every channel operation moves the channel's lock, its buffer and the
// fibers' records between cores, and the pipeline runs slower on two workers than on one
// (src/README.md, "Hand-offs between workers", has the measurements). So a spinning worker
// does not take whatever it finds queued: a fiber is worth moving once it has waited
// steal_age_ns, which means its worker is busy with something long (a CPU-bound fiber),
// when its worker's queue holds steal_backlog or more (a burst of spawns), or when it
// yielded (it waits for nobody: cooperative CPU-bound fibers spread at once, as Go's
// Gosched puts the goroutine on the global queue). A thief measures
// the wait itself, from two looks at the victim's queue head and runnext slot, so the
// owner's push and pop pay nothing for it. Between looks the thief reads only its clock:
// each look reads lines the busy owner writes at every switch, and frequent looks slowed
// the owner. After spin_ns of quick looks, a spinner that still sees another worker busy
// keeps watching, asleep between looks, and stays counted in nspinning_: a fiber readied
// or spawned inside the runtime then wakes nobody (the watcher will look), so the busy
// workers make no futex calls, while work from outside (another thread, the network) and a
// new earliest timer kick the watcher awake at once (kick_watcher). The watch ends when no
// worker runs fibers, so the last worker to park still looks for a deadlock.
//
// Timers: a heap per runtime. Busy workers fire due timers every 61 ticks; the one idle
// worker holding the `timer_sleeper_` role sleeps until the next deadline.
//
// Deadlock: when the last worker goes idle with no timer, I/O wait, blocking call or
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
#include "sched/runtime.hpp"

#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sstream>
#include <system_error>
#include <utility>

#include "io/poller.hpp"
#include "rill/fiber.hpp"
#include "sched/futex.hpp"

namespace rill::detail {

std::atomic<std::int64_t> g_abandoned_fibers{0};
std::atomic<std::int64_t> g_pending_timers{0};
std::atomic<bool> g_chaos{false};
std::atomic<std::int64_t> g_external_waiters{0};

}  // namespace rill::detail

// initial-exec: one %fs-relative load, not a __tls_get_addr call (the library is PIC).
// Read through current_worker() (runtime.hpp); written here only.
extern "C" {
[[gnu::visibility("hidden"),
  gnu::tls_model("initial-exec")]] __thread rill::detail::worker* rill_tls_worker = nullptr;
}

namespace rill::detail {

#if !RILL_INLINE_CURRENT_WORKER
worker* current_worker() noexcept {
  worker** p = &rill_tls_worker;
  asm volatile("" : "+r"(p)::"memory");
  return *p;
}
#endif

namespace {

constexpr std::size_t stack_cache_max = 64;
constexpr std::int64_t fiber_credit_batch = 64;  // see count_spawn
constexpr std::uint64_t id_block = 64;           // fiber ids a worker takes at a time
// The spinning worker's search (spin(); "Keeping communicating fibers together").
constexpr std::int64_t spin_ns = 20'000;          // looks in quick succession for this long,
constexpr std::int64_t spin_look_ns = 4'000;      // one every spin_look_ns,
constexpr std::int64_t watch_ns = 20'000;         // then one every watch_ns, asleep in between,
constexpr std::int64_t watch_max_ns = 1'000'000;  // or up to this when nothing was queued.
// A queued fiber is worth moving to another worker once it has waited steal_age_ns (seen by
// two looks), or when its queue holds steal_backlog fibers or more.
constexpr std::int64_t steal_age_ns = 40'000;
constexpr std::uint32_t steal_backlog = 8;
// A fiber that spawns while its worker's queue holds this many fibers yields (fiber_start).
constexpr std::uint32_t spawn_yield_queue = run_queue::capacity / 2;
constexpr unsigned long watch_slack_ns = 2'000;  // a worker thread's timer slack
// A worker about to block in epoll_wait first polls without blocking for up to this long.
// A blocked thread's wake-up is slow on a virtual machine (the idle vCPU halts and must be
// woken by an interrupt): a request-response peer usually answers sooner, and without the
// spin one connection's round trip was several times Go's. Bounded per idle period, so an
// idle runtime still sleeps.
constexpr std::int64_t io_spin_ns = 50'000;
constexpr std::int64_t deadlock_grace_ns = 20'000'000;
constexpr std::int64_t max_deadlock_recheck_ns = 200'000'000;  // see on_all_idle
constexpr std::uint64_t chaos_yield_odds = 64;  // RILL_SCHED_SEED: yield at 1 in 64 chaos points

// Every live runtime, for dumps from plain threads (the test watchdog).
mutex g_runtimes_mu;
std::vector<runtime*> g_runtimes RILL_GUARDED_BY(g_runtimes_mu);

unsigned default_workers() {
  if (const char* s = std::getenv("RILL_WORKERS")) {
    long n = std::strtol(s, nullptr, 10);
    if (n > 0 && n <= 1024) return static_cast<unsigned>(n);
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

// RILL_WATCHDOG_MS: the default runtime's watchdog threshold (0: off).
std::uint32_t default_watchdog_ms() {
  if (const char* s = std::getenv("RILL_WATCHDOG_MS")) {
    const long n = std::strtol(s, nullptr, 10);
    return n <= 0 ? 0 : static_cast<std::uint32_t>(std::min<long>(n, INT32_MAX));
  }
  return 100;
}

std::uint64_t read_chaos_seed() {
  if (const char* s = std::getenv("RILL_SCHED_SEED")) return std::strtoull(s, nullptr, 10);
  return 0;
}

// ---- stack overflow reporting -------------------------------------------------------

void write_str(const char* s) noexcept {
  ssize_t r = ::write(2, s, std::strlen(s));
  (void)r;
}

void write_num(std::uint64_t v) noexcept {
  char buf[24];
  int i = 23;
  buf[i] = 0;
  do {
    buf[--i] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  write_str(buf + i);
}

}  // namespace

namespace {
// Set by the first overflow report. An overflow of a checked stack may have corrupted a
// neighbouring stack before it was caught; another worker running that neighbour can crash
// while the report is being written. Its SIGSEGV handler then waits for the report's abort
// instead of killing the process with half a message.
std::atomic<bool> g_reporting_overflow{false};
}  // namespace

void report_overflow(const fiber* f) noexcept {
  if (g_reporting_overflow.exchange(true)) {
    for (;;) ::pause();  // another thread reports (and aborts)
  }
  write_str("rill: fiber ");
  write_num(f->id);
  if (f->name[0]) {
    write_str(" (");
    write_str(f->name);
    write_str(")");
  }
  write_str(" overflowed its ");
  write_num(f->stk.size);
  write_str("-byte stack");
  write_str(f->stk.guarded ? " (hit the guard page)" : " (canary destroyed)");
  write_str(
      "; a bigger stack: rill::options::stack_size, or for a pipeline "
      "run_options::stack_size or the stage's stage_options::stack_size\n");
  std::abort();
}

namespace {

struct sigaction g_prev_segv;

void on_segv(int sig, siginfo_t* si, void* uc) {
  worker* w = rill_tls_worker;
  if (w && w->running()) {
    const fiber* f = w->running();
    auto* a = static_cast<char*>(si->si_addr);
    if (a >= f->stk.base - 65536 && a < f->stk.limit()) report_overflow(f);
  }
  if (g_reporting_overflow.load()) {
    for (;;) ::pause();  // see g_reporting_overflow
  }
  if (g_prev_segv.sa_flags & SA_SIGINFO) {
    g_prev_segv.sa_sigaction(sig, si, uc);
  } else if (g_prev_segv.sa_handler != SIG_DFL && g_prev_segv.sa_handler != SIG_IGN) {
    g_prev_segv.sa_handler(sig);
  } else {
    ::signal(SIGSEGV, SIG_DFL);  // returning re-executes the fault and the default kills
  }
}

void install_segv_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &g_prev_segv);
  });
}

constexpr std::size_t altstack_size = 64 * 1024;

void enter_worker_thread(worker& w) {
  rill_tls_worker = &w;
  w.eh = thread_eh();
  san_thread_context(w.g0.san);
#if RILL_ASAN_WEAK
  if (asan_linked()) thread_stack(&w.g0_bottom, &w.g0_size);
#endif
  void* p =
      ::mmap(nullptr, altstack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p != MAP_FAILED) {
    stack_t ss{};
    ss.ss_sp = p;
    ss.ss_size = altstack_size;
    ::sigaltstack(&ss, nullptr);
    w.altstack = p;
  }
  // A watching spinner sleeps watch_ns between looks; the default slack (50 us) would
  // stretch that sleep several times over.
  w.timer_slack = ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  ::prctl(PR_SET_TIMERSLACK, watch_slack_ns, 0, 0, 0);
}

void leave_worker_thread(worker& w) {
  if (w.timer_slack > 0) ::prctl(PR_SET_TIMERSLACK, w.timer_slack, 0, 0, 0);
  if (w.altstack) {
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    ::sigaltstack(&ss, nullptr);
    ::munmap(w.altstack, altstack_size);
    w.altstack = nullptr;
  }
}

}  // namespace

[[gnu::noinline]] fiber* current_fiber() noexcept {
  worker* w = current_worker();
  return w ? w->running() : nullptr;
}

park_hooks* current_park_hooks() noexcept {
  fiber* f = current_fiber();
  return f ? &f->hooks : nullptr;
}

std::int64_t now_ns() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// ---- the fiber entry and exit -----------------------------------------------------------

namespace {

void after_reap(context* left, void*) noexcept {
  auto* f = static_cast<fiber*>(left);
  f->rt->reap(f);
}

}  // namespace

#if RILL_ASAN_WEAK
void asan_start_switch(void** fake, const context& to) noexcept {
  if (fake) *fake = nullptr;           // left so if ASan does not know this thread
  const worker* w = current_worker();  // the thread that switches: `to` may be its g0
  if (&to == &w->g0) {
    __sanitizer_start_switch_fiber(fake, w->g0_bottom, w->g0_size);
  } else {
    const stack& s = static_cast<const fiber&>(to).stk;  // every other context is a fiber's
    __sanitizer_start_switch_fiber(fake, s.limit(),
                                   static_cast<std::size_t>(s.usable_top() - s.limit()));
  }
}
#endif

void fiber_main(bctx::transfer_t t) noexcept {
  on_landing(t);
  fiber* self = current_fiber();
  try {
    self->entry(self->closure);
  } catch (const fiber_aborted&) {
    // the runtime aborted this fiber after a deadlock; run() reports it
  } catch (...) {
    if (self->is_main) {
      self->rt->main_exception_ = std::current_exception();
    } else {
      std::string what = "unknown exception";
      try {
        throw;
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      std::fprintf(stderr, "rill: exception escaped fiber %llu%s%s%s: %s\n",
                   static_cast<unsigned long long>(self->id), self->name[0] ? " (" : "", self->name,
                   self->name[0] ? ")" : "", what.c_str());
      std::terminate();
    }
  }
  if (self->closure_on_heap) ::operator delete(self->closure);
  if (!self->stk.guarded && !self->stk.below_intact(true)) report_overflow(self);
  runtime* rt = self->rt;
  worker* w = current_worker();
  self->state.store(fiber_state::done, std::memory_order_relaxed);
  rt->remove_from_registry(self);
  probe_switch_stack();
  fiber* next = rt->next_local(*w);
  if (next) {
    w->set_current(next);
    next->state.store(fiber_state::running, std::memory_order_relaxed);
    exit_to(*self, *next, after_reap, nullptr);
  }
  w->set_current(nullptr);
  exit_to(*self, w->g0, after_reap, nullptr);
}

void check_stack_slow(fiber* self) noexcept {
  char* sp = static_cast<char*>(__builtin_frame_address(0));
  if (sp < self->stk.limit() || !self->stk.below_intact(false)) report_overflow(self);
}

void chaos_yield() noexcept {
  worker* w = current_worker();
  if (!w || !w->running() || !w->rt->chaos()) return;
  if (next_random(w->rng) % chaos_yield_odds == 0) this_fiber::yield();
}

// ---- runtime --------------------------------------------------------------------------

runtime::runtime(const run_config& cfg) : cfg_(cfg), stacks_(cfg.stack_size) {
  if (cfg_.workers == 0) cfg_.workers = default_workers();
  chaos_ = read_chaos_seed();
  if (chaos_) g_chaos.store(true, std::memory_order_relaxed);
  workers_.reserve(cfg_.workers);
  for (unsigned i = 0; i < cfg_.workers; ++i) {
    auto w = std::make_unique<worker>();
    w->rt = this;
    w->index = i;
    w->solo = cfg_.workers == 1;
    w->rng = 0x9E3779B97F4A7C15ULL * (i + 1) ^ (chaos_ ? chaos_ : 0x1234567ULL);
    if (w->rng == 0) w->rng = 1;
    w->stack_cache.reserve(stack_cache_max);  // reap() is noexcept: it must not allocate
    w->looks.resize(cfg_.workers);            // nor may the scheduler loop (steal())
    workers_.push_back(std::move(w));
  }
  idle_.reserve(cfg_.workers);
  install_segv_handler();
  {
    lock_guard lk(g_runtimes_mu);
    g_runtimes.push_back(this);
  }
  if (cfg_.watchdog_ms != 0) {
    try {
      watchdog_add(this);
    } catch (...) {
      lock_guard lk(g_runtimes_mu);
      g_runtimes.erase(std::find(g_runtimes.begin(), g_runtimes.end(), this));
      throw;
    }
  }
}

runtime::~runtime() {
  if (cfg_.watchdog_ms != 0) watchdog_remove(this);
  // An outside thread that readied the last fiber may still be in wake_idle().
  while (outside_readies_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  if (poller* p = poller_.load(std::memory_order_acquire)) {
    p->detach_runtime();
    p->release();  // sockets still open keep it until they are closed
  }
  // Fibers abandoned after a deadlock whose unwinding parked again: count them as leaked.
  g_abandoned_fibers.fetch_add(live_fibers_.load(), std::memory_order_relaxed);
  {
    lock_guard lk(g_runtimes_mu);
    g_runtimes.erase(std::find(g_runtimes.begin(), g_runtimes.end(), this));
  }
  for (auto& w : workers_) {
    for (stack& s : w->stack_cache) stacks_.release(s);
    w->cached.store(0, std::memory_order_release);
    w->stack_cache.clear();
  }
}

// The workers' credit and cached stacks are read before the totals they are part of. A
// worker lowers a total before it lowers its own share (return_credit, the stack cache's
// release) and raises its credit before the total, so a snapshot taken while workers give
// back what they hold may count too few for a moment, never too many: a leak check that
// polls until it sees zero sees no leak that is not there.
//
// A retired fiber (fiber_retire) is out of live_fibers at once (its count moves into its
// worker's credit) and its stack out of live_stacks (retiring_stacks_, read first: reap()
// lowers it only after the stack is in a cache or back in the pool).
stats runtime::snapshot() noexcept {
  stats s;
  const std::int64_t retiring = retiring_stacks_.load(std::memory_order_acquire);
  std::int64_t credit = 0;
  std::size_t cached = 0;
  for (auto& w : workers_) {
    credit += w->credit.load(std::memory_order_acquire);
    cached += w->cached.load(std::memory_order_acquire);
    s.fibers_spawned += w->spawned.load(std::memory_order_relaxed);
    s.steals += w->steals.load(std::memory_order_relaxed);
  }
  const std::int64_t live = live_fibers_.load(std::memory_order_acquire) - credit;
  s.live_fibers = live > 0 ? static_cast<std::size_t>(live) : 0;  // a racy sum: never below 0
  std::size_t stacks = stacks_.live();
  {
    lock_guard lk(pools_mu_);
    for (auto& p : more_stacks_) stacks += p->live();
  }
  const std::size_t idle = cached + static_cast<std::size_t>(retiring > 0 ? retiring : 0);
  s.live_stacks = stacks > idle ? stacks - idle : 0;
  {
    lock_guard lk(timer_mu_);
    s.pending_timers = timer_count_;
  }
  s.workers = workers();
  return s;
}

stack_pool& runtime::pool_for(std::size_t size) {
  const std::size_t rounded = stack_pool::rounded_size(size);
  if (size <= stacks_.stack_size() || rounded == stacks_.stack_size()) return stacks_;
  lock_guard lk(pools_mu_);
  for (auto& p : more_stacks_) {
    if (p->stack_size() == rounded) return *p;
  }
  more_stacks_.reserve(more_stacks_.size() + 1);  // push_back cannot throw after make_unique
  more_stacks_.push_back(std::make_unique<stack_pool>(size));
  return *more_stacks_.back();
}

stack_pool& runtime::pool_of(const stack& s) noexcept {
  if (s.size == stacks_.stack_size()) return stacks_;
  lock_guard lk(pools_mu_);
  for (auto& p : more_stacks_) {
    if (p->stack_size() == s.size) return *p;
  }
  std::abort();  // a stack of no pool of this runtime: corruption
}

void runtime::release_stack(const stack& s) noexcept { pool_of(s).release(s); }

fiber* runtime::create_fiber(worker* w, std::size_t size, std::size_t align, void (*entry)(void*),
                             std::size_t stack_size) {
  stack s;
  stack_pool& pool = stack_size == 0 ? stacks_ : pool_for(stack_size);
  if (&pool != &stacks_) {
    s = pool.allocate();  // no cache: such fibers are few (a pipeline's stages)
  } else if (w) {
    if (w->stack_cache.empty()) {
      // Refill half the cache under one pool lock (a spawn burst would otherwise take the
      // pool's mutex once per fiber).
      stack batch[stack_cache_max / 2];
      const std::size_t n = stacks_.allocate_many(batch, stack_cache_max / 2);
      for (std::size_t i = 0; i < n; ++i) w->stack_cache.push_back(batch[i]);  // reserved
    }
    s = w->stack_cache.back();
    w->stack_cache.pop_back();
    w->cached.store(w->stack_cache.size(), std::memory_order_release);
    san_unpoison(s.limit(), static_cast<std::size_t>(s.usable_top() - s.limit()));
  } else {
    s = stacks_.allocate();
  }
  auto align_down = [](char* p, std::size_t a) {
    return reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(p) & ~(a - 1));
  };
  // The record ends where the stack's registry slot begins (a coloured place: see
  // stack::slot()).
  char* rec = align_down(s.record_top() - sizeof(fiber), alignof(fiber));
  auto* f = ::new (rec) fiber;  // default-init: only the members with initializers
  f->name[0] = 0;
  f->rt = this;
  f->stk = s;
  f->entry = entry;
  if (w) {  // ids in blocks per worker: no shared counter per spawn
    if (w->id_next == w->id_end) {
      w->id_next = next_id_.fetch_add(id_block, std::memory_order_relaxed);
      w->id_end = w->id_next + id_block;
    }
    f->id = w->id_next++;
  } else {
    f->id = next_id_.fetch_add(1, std::memory_order_relaxed);
  }
  const std::size_t a = std::max<std::size_t>(align, 16);
  char* sp;
  if (size > s.size / 4 || a > 4096) {
    try {
      f->closure = ::operator new(size, std::align_val_t(a));
    } catch (...) {
      f->~fiber();
      pool.release(s);
      throw;
    }
    f->closure_on_heap = true;
    sp = align_down(rec, 16);
  } else {
    char* cl = align_down(rec - size, a);
    f->closure = cl;
    sp = align_down(cl, 16);  // the first frame shares the closure's line
  }
  const std::size_t usable = static_cast<std::size_t>(sp - s.limit());
  f->fctx = make_context(sp, usable, &fiber_main);
  san_fiber_created(f->san, s.limit(), static_cast<std::size_t>(s.usable_top() - s.limit()));
  add_to_registry(f);
  count_spawn(w);
  return f;
}

// Fiber accounting. live_fibers_ counts the live fibers plus the credit the workers hold:
// a worker takes credit for fiber_credit_batch spawns at a time, and keeps what its
// finishing fibers give back (up to twice that), so spawning and finishing do not each
// write one counter shared by every worker (spawn+join with 2 workers spent a tenth of its
// time on that line). A worker gives all its credit back whenever it runs out of work
// (find_runnable), so the count falls to zero once every fiber has finished and every
// worker has looked for work since: run() ends then.
void runtime::count_spawn(worker* w) noexcept {
  if (!w || w->rt != this) {
    live_fibers_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const std::int64_t c = w->credit.load(std::memory_order_relaxed);
  if (c == 0) {
    // Credit first, then the count: snapshot() may under-count for a moment, never over.
    w->credit.store(fiber_credit_batch - 1, std::memory_order_release);
    live_fibers_.fetch_add(fiber_credit_batch, std::memory_order_relaxed);
    return;
  }
  w->credit.store(c - 1, std::memory_order_release);
}

void runtime::uncount(std::int64_t n) noexcept {
  if (live_fibers_.fetch_sub(n, std::memory_order_acq_rel) == n && !cfg_.persistent) {
    begin_shutdown();
  }
}

void runtime::count_exit() noexcept {
  worker* w = current_worker();
  if (!w || w->rt != this) {
    uncount(1);
    return;
  }
  std::int64_t c = w->credit.load(std::memory_order_relaxed) + 1;
  if (c > 2 * fiber_credit_batch) {
    live_fibers_.fetch_sub(fiber_credit_batch, std::memory_order_acq_rel);  // c stays > 0
    c -= fiber_credit_batch;
  }
  w->credit.store(c, std::memory_order_release);
}

// retire(): f, running on a worker of this runtime, stops counting now: the waiter it is
// about to signal (run(), wait()) may read the stats as soon as it wakes. The count goes
// into the worker's credit, as at an exit, so live_fibers_ cannot reach zero (and shut a
// runtime down) before f has switched out: a worker gives its credit back only once it
// is out of work.
void runtime::retire(fiber& f) noexcept {
  if (f.retired) return;
  f.retired = true;
  retiring_stacks_.fetch_add(1, std::memory_order_release);
  count_exit();
}

// The count first, then the credit (see snapshot()).
void runtime::return_credit(worker& w) noexcept {
  const std::int64_t c = w.credit.load(std::memory_order_relaxed);
  if (c == 0) return;
  uncount(c);
  w.credit.store(0, std::memory_order_release);
}

void runtime::discard_fiber(fiber* f) noexcept {
  remove_from_registry(f);
  stack s = f->stk;  // never started: never retired
  if (f->closure_on_heap) ::operator delete(f->closure);
  san_fiber_destroyed(f->san);
  f->~fiber();
  release_stack(s);
  count_exit();
}

void runtime::start_fiber(worker* w, fiber* f) noexcept {
  f->state.store(fiber_state::runnable, std::memory_order_relaxed);
  if (w && w->rt == this) {
    w->spawned.store(w->spawned.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    if (!push_local(*w, f) || w->alone()) return;  // see worker::solo
  } else {
    push_global(f);
  }
  wake_idle();
}

void runtime::reap(fiber* f) noexcept {
  stack s = f->stk;
  const bool retired = f->retired;
  san_fiber_destroyed(f->san);
  f->~fiber();
  worker* w = current_worker();
  if (s.size != stacks_.stack_size()) {
    release_stack(s);
  } else if (w && w->rt == this) {
    if (w->stack_cache.size() == stack_cache_max) {
      // Give half back under one pool lock (see create_fiber).
      const std::size_t keep = stack_cache_max / 2;
      stacks_.release_many(w->stack_cache.data() + keep, stack_cache_max - keep);
      w->stack_cache.resize(keep);
    }
    w->stack_cache.push_back(s);
    w->cached.store(w->stack_cache.size(), std::memory_order_release);
  } else {
    stacks_.release(s);
  }
  if (retired) {
    retiring_stacks_.fetch_sub(1, std::memory_order_release);  // after the stack is put away
  } else {
    count_exit();
  }
}

void runtime::add_to_registry(fiber* f) noexcept {
  // No lock: a reader that finds the owner sees its record whole (release/acquire), and an
  // exit, not a spawn, is what a reader must be kept from.
  f->stk.slot()->owner.store(f, std::memory_order_release);
}

void runtime::remove_from_registry(fiber* f) noexcept {
  stack_slot* s = f->stk.slot();
  std::lock_guard lk(s->lk);
  s->owner.store(nullptr, std::memory_order_relaxed);
}

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

// ---- making fibers runnable -----------------------------------------------------------

void runtime::ready_outside(fiber* f) noexcept {
  outside_readies_.fetch_add(1, std::memory_order_acq_rel);  // see ~runtime
  push_global(f);
  wake_idle(true);
  outside_readies_.fetch_sub(1, std::memory_order_release);
}

void runtime::push_overflow(worker& w, fiber* f) noexcept {
  // Half the local queue moves to the global queue (Go's runqputslow), in chunks: this runs
  // on a fiber's stack, which may be small.
  fiber* chunk[32];
  std::uint32_t moved = 0;
  lock_guard lk(gq_mu_);
  while (moved < run_queue::capacity / 2) {
    const std::uint32_t n = w.queue.take_half(chunk, 32);
    if (n == 0) break;
    for (std::uint32_t i = 0; i < n; ++i) gq_.push_back(chunk[i]);
    moved += n;
  }
  gq_.push_back(f);
  gq_size_.fetch_add(moved + 1, std::memory_order_release);
}

void runtime::push_global(fiber* f) noexcept {
  lock_guard lk(gq_mu_);
  gq_.push_back(f);
  gq_size_.fetch_add(1, std::memory_order_release);
}

// pop_global() takes a fair share of the global queue: one to run, some more into w's
// local queue.
fiber* runtime::pop_global(worker& w) noexcept {
  if (gq_size_.load(std::memory_order_acquire) == 0) return nullptr;
  lock_guard lk(gq_mu_);
  std::uint32_t size = gq_size_.load(std::memory_order_relaxed);
  if (size == 0) return nullptr;
  std::uint32_t n = std::min<std::uint32_t>(size / workers() + 1, run_queue::capacity / 2);
  n = std::min(n, size);
  fiber* first = gq_.pop_front();
  for (std::uint32_t i = 1; i < n; ++i) {
    fiber* f = gq_.pop_front();
    if (!w.queue.push(f)) {  // cannot happen: the local queue is nearly empty here
      n = i;
      gq_.push_front(f);
      break;
    }
  }
  gq_size_.fetch_sub(n, std::memory_order_relaxed);
  return first;
}

// steal() looks at every other worker once and takes from the first whose queue or runnext
// slot holds a fiber worth moving (see "Keeping communicating fibers together").
// `queued`: set when some worker had a fiber waiting, worth moving or not.
fiber* runtime::steal(worker& w, std::int64_t now, bool& queued) noexcept {
  const unsigned n = workers();
  const unsigned start = static_cast<unsigned>(next_random(w.rng) % n);
  for (unsigned k = 0; k < n; ++k) {
    const unsigned i = (start + k) % n;  // not v.index: that line is the owner's, and hot
    worker& v = *workers_[i];
    if (&v == &w) continue;
    worker::victim_look& look = w.looks[i];
    const std::uint32_t head = v.queue.head();
    const std::uint32_t size = v.queue.size();
    if (look.head != head || size == 0) {  // a new oldest fiber (or none): its wait starts now
      look.head = head;
      look.since = now;
    }
    fiber* next = v.runnext.load(std::memory_order_acquire);
    if (look.next != next) {
      look.next = next;
      look.next_since = now;
    }
    if (size != 0 || next) queued = true;
    if (size != 0 &&
        (size >= steal_backlog || now - look.since >= steal_age_ns || v.queue.head_yielded())) {
      if (fiber* f = v.queue.steal_into(w.queue)) {
        w.steals.store(w.steals.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        return f;
      }
    }
    if (next && now - look.next_since >= steal_age_ns &&
        v.runnext.compare_exchange_strong(next, nullptr, std::memory_order_acq_rel)) {
      w.steals.store(w.steals.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      return next;
    }
  }
  return nullptr;
}

// spin() is a spinning worker's search (w.spinning, counted in nspinning_): a few looks at
// the other workers in quick succession, then, while another worker is busy, a look every
// watch_ns with a sleep in between (the watch). Returns a fiber to run, having stopped
// spinning, or nullptr: the caller parks (w.spinning still set).
fiber* runtime::spin(worker& w) {
  // While fibers wait on I/O the search is cut short: park_worker's poller spin (which polls
  // the network) is the better wait then; this spin in front of it made one echo
  // connection's round trip slower.
  if (io_waiters.load(std::memory_order_relaxed) > 0) return nullptr;
  const std::int64_t start = now_ns();
  std::int64_t now = start;
  std::int64_t interval = spin_look_ns;
  for (;;) {
    bool queued = false;
    if (fiber* f = steal(w, now, queued)) {
      stop_spinning(w);
      return f;
    }
    if (fiber* f = pop_global(w)) {
      stop_spinning(w);
      return f;
    }
    // The network is not polled here: a non-blocking epoll_wait per look, racing the worker
    // that holds the poller role, made one echo connection slower.
    const std::int64_t deadline = next_deadline_.load(std::memory_order_relaxed);
    if (deadline <= now || shutdown_.load(std::memory_order_relaxed) ||
        io_waiters.load(std::memory_order_relaxed) > 0) {
      return nullptr;  // the scheduler loop fires the timers, or park_worker polls
    }
    if (now - start < spin_ns) {
      // Spinning: the next look comes soon, and costs no wake-up. Only the clock is read
      // in between: each look reads lines that a busy owner writes at every switch.
      const std::int64_t until = now + spin_look_ns;
      while ((now = now_ns()) < until) {
        for (int i = 0; i < 16; ++i) __builtin_ia32_pause();
      }
      continue;
    }
    // Watching: another worker runs fibers and the next look may find one worth moving.
    // Nobody needs to wake us for a young fiber meanwhile (wake_idle), so the workers that
    // hand fibers to each other pay no futex calls; work from outside and new timers kick
    // the watcher (kick_watcher). A look that finds nothing queued anywhere doubles the
    // interval, up to watch_max_ns; once no worker runs fibers, the watch ends.
    if (nidle_.load(std::memory_order_seq_cst) + nspinning_.load(std::memory_order_seq_cst) >=
        workers()) {
      return nullptr;  // nobody runs fibers: park (the last to park looks for a deadlock)
    }
    interval = queued ? watch_ns : std::min(2 * interval, watch_max_ns);
    const std::int64_t timeout =
        deadline == INT64_MAX ? interval : std::min(interval, deadline - now);
    w.watch_word.store(0, std::memory_order_relaxed);
    watcher_.store(&w, std::memory_order_seq_cst);
    if (gq_size_.load(std::memory_order_seq_cst) == 0 &&
        next_deadline_.load(std::memory_order_seq_cst) == deadline &&
        !shutdown_.load(std::memory_order_seq_cst)) {
      futex_wait(w.watch_word, 0, timeout);
    }
    watcher_.store(nullptr, std::memory_order_relaxed);
    now = now_ns();
  }
}

void runtime::kick_watcher() noexcept {
  if (worker* v = watcher_.load(std::memory_order_seq_cst)) {
    v->watch_word.store(1, std::memory_order_release);
    futex_wake(v->watch_word);
  }
}

bool runtime::nothing_queued() noexcept {
  return next_deadline_.load(std::memory_order_relaxed) == INT64_MAX &&
         io_waiters.load(std::memory_order_relaxed) == 0 && !any_work();
}

bool runtime::any_work() noexcept {
  if (gq_size_.load(std::memory_order_seq_cst) != 0) return true;
  for (auto& w : workers_) {
    if (!w->queue.empty() || w->runnext.load(std::memory_order_seq_cst)) return true;
  }
  return false;
}

// wake_idle() is the pusher's half of the idle protocol: publish the work, fence, then look
// at nidle_ (park_worker does the mirror image: count itself idle, fence, look for work).
//
// A push onto a non-empty queue wakes nobody (push_local returns false). The push that
// made the queue non-empty ran wake_idle(), so a worker that went idle after it found the
// queue non-empty when it looked again; and a thief that emptied the queue since (unseen
// by the owner) is awake, and woke a spinner if it was the last (stop_spinning), which
// finds this push. Go's runqput + wakep skip the fence altogether. The fence and the two
// shared lines it reads cost a spawn with 2 workers ~7% of its time (the fence waits for
// the new fiber's record, whose lines the other worker last wrote).
void runtime::wake_idle(bool outside) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (nspinning_.load(std::memory_order_seq_cst) != 0) {
    if (outside) kick_watcher();
    return;
  }
  if (nidle_.load(std::memory_order_seq_cst) == 0) return;
  std::uint32_t zero = 0;
  if (!nspinning_.compare_exchange_strong(zero, 1, std::memory_order_seq_cst)) return;
  lock_guard lk(idle_mu_);
  if (idle_.empty()) {
    nspinning_.fetch_sub(1, std::memory_order_seq_cst);
    return;
  }
  wake_worker_locked(*idle_.back(), true);
}

void runtime::leave_idle_locked(worker& w) noexcept {
  // timer_sleeper_ is null or an idle worker (every way off the list clears it), so w is on
  // the list; found rather than assumed, as before this was one function.
  auto it = std::find(idle_.begin(), idle_.end(), &w);
  if (it != idle_.end()) idle_.erase(it);
  w.in_idle = false;
  if (timer_sleeper_ == &w) timer_sleeper_ = nullptr;
  nidle_.fetch_sub(1, std::memory_order_seq_cst);
}

void runtime::wake_worker_locked(worker& w, bool spinning) noexcept {
  leave_idle_locked(w);
  w.wake_spinning = spinning;
  idle_epoch_.fetch_add(1, std::memory_order_relaxed);
  w.wake_word.store(1, std::memory_order_release);
  futex_wake(w.wake_word);
  if (w.polling) poller_.load(std::memory_order_relaxed)->wakeup();  // blocked in epoll_wait
}

void runtime::stop_spinning(worker& w) noexcept {
  w.spinning = false;
  if (nspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) wake_idle();
}

void runtime::begin_shutdown() noexcept {
  shutdown_.store(true, std::memory_order_seq_cst);
  kick_watcher();
  lock_guard lk(idle_mu_);
  while (!idle_.empty()) wake_worker_locked(*idle_.back(), false);
}

fiber* runtime::find_runnable(worker& w) {
  for (;;) {
    if (shutdown_.load(std::memory_order_acquire)) return nullptr;
    if (next_deadline_.load(std::memory_order_relaxed) != INT64_MAX) run_due_timers(w);
    // A busy worker polls I/O now and then too, so ready fds do not wait behind a long queue.
    if (w.tick - w.poll_tick >= global_check_interval) {
      if (fiber* f = poll_io(w)) {
        if (w.spinning) stop_spinning(w);
        return f;
      }
    }
    if (fiber* f = pop_global(w)) {
      if (w.spinning) stop_spinning(w);
      return f;
    }
    if (fiber* f = next_local(w)) {
      if (w.spinning) stop_spinning(w);
      return f;
    }
    if (fiber* f = poll_io(w)) {  // Go's findrunnable: the network before stealing
      if (w.spinning) stop_spinning(w);
      return f;
    }
    return_credit(w);  // out of work: see count_spawn
    if (workers() > 1) {
      // Spin: look for work to steal. Cap spinners at half the busy workers (Go's rule).
      const std::uint32_t busy = workers() - nidle_.load(std::memory_order_relaxed);
      if (!w.spinning && 2 * nspinning_.load(std::memory_order_relaxed) < busy) {
        w.spinning = true;
        nspinning_.fetch_add(1, std::memory_order_seq_cst);
      }
      if (w.spinning) {
        if (fiber* f = spin(w)) return f;
      }
    }
    park_worker(w);
    watchdog_kick();  // awake again: the watchdog may be asleep for want of work
  }
}

void runtime::park_worker(worker& w) {
  if (w.spinning) {
    w.spinning = false;
    if (nspinning_.fetch_sub(1, std::memory_order_seq_cst) == 1) {
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (any_work()) return;  // the caller loops and looks again
    }
  }
  bool all_idle = false;
  {
    lock_guard lk(idle_mu_);
    if (shutdown_.load(std::memory_order_acquire) || gq_size_.load() != 0) return;
    w.in_idle = true;
    w.wake_spinning = false;
    w.wake_word.store(0, std::memory_order_relaxed);
    idle_.push_back(&w);
    all_idle = nidle_.fetch_add(1, std::memory_order_seq_cst) + 1 == workers();
    if (!timer_sleeper_ && next_deadline_.load(std::memory_order_relaxed) != INT64_MAX) {
      timer_sleeper_ = &w;
    }
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);
  auto leave_idle = [&]() {  // true if we took ourselves off idle_ (nobody is waking us)
    lock_guard lk(idle_mu_);
    if (!w.in_idle) return false;
    leave_idle_locked(w);
    return true;
  };
  if (any_work() || next_deadline_.load(std::memory_order_relaxed) <= now_ns()) {
    if (leave_idle()) return;
  } else if (all_idle && next_deadline_.load(std::memory_order_relaxed) == INT64_MAX &&
             io_waiters.load(std::memory_order_seq_cst) == 0) {
    on_all_idle(w);  // returns at once if woken meanwhile or shutting down
  }
  // The sleeper role: one idle worker sleeps until the next timer; while fibers wait on
  // I/O it sleeps in epoll_wait instead of on its futex (w.polling), so that timers and
  // I/O share one wait, and its wakers write the poller's eventfd.
  fiber* ready[2 * poller::max_events];
  int nready = 0;
  bool woken = false;
  for (;;) {
    std::int64_t timeout = -1;
    bool is_sleeper;
    bool polling = false;
    poller* p = poller_.load(std::memory_order_acquire);
    const bool io = p && io_waiters.load(std::memory_order_seq_cst) > 0;
    {
      lock_guard lk(idle_mu_);
      poll_waking_.store(false, std::memory_order_relaxed);
      is_sleeper = timer_sleeper_ == &w;
      if (!is_sleeper && w.in_idle) {
        const bool timers = next_deadline_.load(std::memory_order_relaxed) != INT64_MAX;
        if (!timer_sleeper_ && (timers || io)) {
          timer_sleeper_ = &w;  // the previous sleeper left: take the role
          is_sleeper = true;
        } else if (timer_sleeper_ && io && !timer_sleeper_->polling &&
                   !poll_sleeping_.load(std::memory_order_relaxed)) {
          // The sleeper waits on its futex while fibers wait on I/O: take the role over.
          wake_worker_locked(*timer_sleeper_, false);
          timer_sleeper_ = &w;
          is_sleeper = true;
        }
      }
      // At most one worker blocks in epoll_wait: epoll wakes a single waiter per event, so
      // a second one could swallow the eventfd write meant for the first.
      if (is_sleeper && io && !poll_sleeping_.load(std::memory_order_relaxed)) {
        w.polling = polling = true;
        poll_sleeping_.store(true, std::memory_order_seq_cst);
      }
    }
    if (is_sleeper) {
      const std::int64_t d = next_deadline_.load(std::memory_order_relaxed);
      if (d != INT64_MAX) timeout = std::max<std::int64_t>(d - now_ns(), 0);
    }
    if (polling) {
      bool fd_woken = false;
      if (w.wake_word.load(std::memory_order_acquire) == 0 && timeout != 0) {
        const std::int64_t until = now_ns() + io_spin_ns;
        do {
          nready = p->poll(0, ready, &fd_woken);
        } while (nready == 0 && !fd_woken && w.wake_word.load(std::memory_order_acquire) == 0 &&
                 now_ns() < until);
      }
      if (nready == 0 && !fd_woken && w.wake_word.load(std::memory_order_acquire) == 0) {
        nready = p->poll(timeout, ready, &fd_woken);
      }
      // Drain before giving up the role: a later poller's wake-up is never consumed here.
      if (fd_woken) p->drain_wakeup();
      {
        lock_guard lk(idle_mu_);
        w.polling = false;  // from here on, nobody writes the eventfd for us
        poll_sleeping_.store(false, std::memory_order_seq_cst);
        if (timer_sleeper_ && timer_sleeper_ != &w && io_waiters.load() > 0) {
          // A sleeper that could not poll while we were in epoll_wait: let it now.
          wake_worker_locked(*timer_sleeper_, false);
        }
      }
    } else if (w.wake_word.load(std::memory_order_acquire) == 0) {
      futex_wait(w.wake_word, 0, timeout);
    }
    if (w.wake_word.exchange(0, std::memory_order_acquire) != 0) {
      woken = true;
      break;
    }
    if (nready > 0 || (is_sleeper && next_deadline_.load(std::memory_order_relaxed) <= now_ns())) {
      if (leave_idle()) break;  // the loop fires the due timers / runs what I/O readied
      // someone is waking us right now: its word is set (under idle_mu_)
      w.wake_word.exchange(0, std::memory_order_acquire);
      woken = true;
      break;
    }
  }
  if (woken) {
    lock_guard lk(idle_mu_);
    if (w.wake_spinning) {
      w.spinning = true;  // the waker counted us in nspinning_
      w.wake_spinning = false;
    }
  }
  if (nready > 0) {  // this worker runs the first; the rest may be stolen
    ready[0]->state.store(fiber_state::runnable, std::memory_order_relaxed);
    push_local(w, ready[0]);
    inject(w, ready + 1, nready - 1);
  }
}

// ---- the netpoller's hooks (io/poller.cpp) ---------------------------------------------

poller* runtime::io_poller() {
  if (poller* p = poller_.load(std::memory_order_acquire)) return p;
  lock_guard lk(poller_mu_);
  poller* p = poller_.load(std::memory_order_relaxed);
  if (!p) {
    p = new poller(this);
    poller_.store(p, std::memory_order_release);
  }
  return p;
}

void runtime::io_parking(worker& w) noexcept {
  if (poll_sleeping_.load(std::memory_order_relaxed) ||
      poll_waking_.load(std::memory_order_relaxed) || nidle_.load(std::memory_order_relaxed) == 0 ||
      nspinning_.load(std::memory_order_relaxed) != 0) {
    return;  // somebody polls, or will soon
  }
  if (!w.running()) return;  // w goes back to its scheduler loop, which polls
  lock_guard lk(idle_mu_);
  if (poll_sleeping_.load(std::memory_order_relaxed) || idle_.empty()) return;
  poll_waking_.store(true, std::memory_order_relaxed);
  wake_worker_locked(timer_sleeper_ ? *timer_sleeper_ : *idle_.back(), false);
}

fiber* runtime::poll_io(worker& w) noexcept {
  w.poll_tick = w.tick;
  if (io_waiters.load(std::memory_order_relaxed) <= 0 ||
      poll_sleeping_.load(std::memory_order_relaxed)) {
    return nullptr;  // nothing to poll, or a worker blocked in epoll_wait gets the events
  }
  poller* p = poller_.load(std::memory_order_acquire);
  if (!p) return nullptr;
  fiber* ready[2 * poller::max_events];
  bool fd_woken = false;
  const int n = p->poll(0, ready, &fd_woken);  // leaves the eventfd to the blocked worker
  if (n == 0) return nullptr;
  if (n > 1) inject(w, ready + 1, n - 1);
  ready[0]->state.store(fiber_state::runnable, std::memory_order_relaxed);
  return ready[0];
}

void runtime::inject(worker& w, fiber** fs, int n) noexcept {
  for (int i = 0; i < n; ++i) {
    fs[i]->state.store(fiber_state::runnable, std::memory_order_relaxed);
    push_local(w, fs[i]);
  }
  if (n > 0) wake_idle(true);
}

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
    if (f->state.load(std::memory_order_relaxed) == fiber_state::parked) out.push_back(f);
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

void runtime::start_main(void (*main)(void*), void* arg) {
  worker& w0 = *workers_[0];
  struct ctx_t {
    void (*main)(void*);
    void* arg;
  };
  fiber* f = create_fiber(&w0, sizeof(ctx_t), alignof(ctx_t), [](void* p) {
    auto* c = static_cast<ctx_t*>(p);
    c->main(c->arg);
  });
  ::new (f->closure) ctx_t{main, arg};
  f->is_main = true;
  {
    std::lock_guard lk(f->stk.slot()->lk);  // f is registered: dump() may read its name already
    std::strncpy(f->name, "main", sizeof f->name - 1);
  }
  w0.spawned.store(1, std::memory_order_relaxed);
  f->state.store(fiber_state::runnable, std::memory_order_relaxed);
  push_local(w0, f);
}

void runtime::run_worker(worker& w) {
  while (fiber* f = find_runnable(w)) {
    w.set_current(f);
    f->state.store(fiber_state::running, std::memory_order_relaxed);
    switch_to(w.g0, *f, w.eh);
    // Back on the scheduler stack: the fiber that switched here parked or finished with
    // nothing else to run locally.
  }
  return_credit(w);  // shut down (or aborted at start): ~runtime counts what is left as leaked
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
  worker* saved = rill_tls_worker;
  // The other workers first (they park until there is work), then the main fiber. If a
  // worker thread or the main fiber cannot be had, stop the workers already started and
  // report it: running with fewer workers than configured would break deadlock detection,
  // which waits for every worker to be idle.
  unsigned started = 1;
  try {
    for (; started < rt.workers(); ++started) {
      worker& w = rt.worker_at(started);
      w.thread = std::thread([&rt, &w] {
        enter_worker_thread(w);
        rt.run_worker(w);
        leave_worker_thread(w);
        rill_tls_worker = nullptr;
      });
    }
    rt.start_main(main, arg);
  } catch (...) {
    rt.abort_start();
    for (unsigned i = 1; i < started; ++i) rt.worker_at(i).thread.join();
    throw;
  }
  worker& w0 = rt.worker_at(0);
  enter_worker_thread(w0);
  rt.run_worker(w0);
  leave_worker_thread(w0);
  rill_tls_worker = saved;
  for (unsigned i = 1; i < started; ++i) rt.worker_at(i).thread.join();
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

void fiber_start(fiber* f) noexcept {
  worker* w = current_worker();
  f->rt->start_fiber(w, f);
  // A fiber that has filled its worker's queue with new fibers lets them run before it
  // spawns more (as Go's scheduler would preempt it): they then finish, or park, on stacks
  // that are reused, instead of each spawn committing a fresh stack while the queue
  // overflows into the global queue.
  if (w && w->rt == f->rt && w->running() && w->queue.size() >= spawn_yield_queue) {
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
        leave_worker_thread(w);
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
