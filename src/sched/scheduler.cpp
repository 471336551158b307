// The M:N scheduler: workers, run queues, stealing, idle parking (deadlock detection is in
// deadlock.cpp, a fiber's life in fiber_life.cpp).
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
// Invariants of the idle/spinning protocol (P1-P3 checked under idle_mu_ in debug builds,
// check_idle_locked):
//   P1  Under idle_mu_: w.in_idle exactly when w is on idle_, and nidle_ == idle_.size().
//       Both change only under idle_mu_ (park_worker adds, leave_idle_locked removes).
//   P2  timer_sleeper_ is nullptr or a worker on idle_ (every way off the list clears it).
//   P3  At most one worker blocks in the poller's epoll_wait (poll_sleeping_), and it
//       holds the timer-sleeper role: epoll wakes one waiter per event.
//   P4  No lost wake-up: whoever makes work available publishes it, fences, then reads
//       nspinning_ and nidle_ (wake_idle); a worker going idle counts itself in nidle_,
//       fences, then looks at every queue again (park_worker); the last spinner to give up
//       fences and looks again too. Either side sees the other (Dekker).
//   P5  nspinning_ counts the workers with w.spinning set and those woken as spinners
//       (w.wake_spinning) that have not yet taken the flag; while it is non-zero, a push
//       wakes nobody: a spinner will look (a watching one is kicked for outside work).
//   P6  A spinner that stops spinning and was the last wakes an idle worker
//       (stop_spinning), so work found by one spinner keeps spreading.
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
// new earliest timer kick the watcher awake at once (kick_watcher), and so does a push into
// an empty queue while the watcher sleeps long between looks (kick_drowsy_watcher). The watch ends
// when no worker runs fibers, so the last worker to park still looks for a deadlock.
//
// Timers: a heap per runtime. Busy workers fire due timers every 61 ticks; the one idle
// worker holding the `timer_sleeper_` role sleeps until the next deadline.
#include <sys/prctl.h>
#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <system_error>
#include <utility>

#include "io/poller.hpp"
#include "sched/futex.hpp"
#include "sched/runtime.hpp"
#include "sched/runtime_parts.hpp"

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

// The spinning worker's search (spin(); "Keeping communicating fibers together").
constexpr std::int64_t spin_ns = 20'000;          // looks in quick succession for this long,
constexpr std::int64_t spin_look_ns = 4'000;      // one every spin_look_ns,
constexpr std::int64_t watch_ns = 10'000;         // then one every watch_ns, asleep in between,
constexpr std::int64_t watch_max_ns = 1'000'000;  // or up to this when nothing was queued.
// A watcher that sleeps longer than drowsy_ns between looks is kicked by a push that makes a
// queue non-empty (kick_drowsy_watcher): else a run's fibers, spawned while the other
// workers had long been idle, waited up to watch_max_ns behind a busy worker (few slow
// items: a par_map's second worker started a slow item's time late).
constexpr std::int64_t drowsy_ns = 50'000;
// A queued fiber is worth moving to another worker once it has waited steal_age_ns (seen by
// two looks), or when its queue holds steal_backlog fibers or more.
constexpr std::int64_t steal_age_ns = 20'000;
constexpr std::uint32_t steal_backlog = 8;
constexpr unsigned long watch_slack_ns = 2'000;  // a worker thread's timer slack
// A worker about to block in epoll_wait first polls without blocking for up to this long.
// A blocked thread's wake-up is slow on a virtual machine (the idle vCPU halts and must be
// woken by an interrupt): a request-response peer usually answers sooner, and without the
// spin one connection's round trip was several times Go's. Bounded per idle period, so an
// idle runtime still sleeps.
constexpr std::int64_t io_spin_ns = 50'000;
// The timer sleeper wakes this long before the next timer is due and waits out the rest
// awake: a thread woken from a futex wait runs late on a virtual machine (the halted vCPU
// waits for an interrupt), and every fiber sleep paid it (benchmarks/README.md, "Figures
// behind design choices"). The cost is this much spinning per timer that finds its worker
// idle.
constexpr std::int64_t timer_spin_ns = 50'000;

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

// ---- worker threads -------------------------------------------------------------------

void enter_worker_thread(worker& w) {
  rill_tls_worker = &w;
  w.eh = thread_eh();
  san_thread_context(w.g0.san);
#if RILL_ASAN_WEAK
  if (asan_linked()) thread_stack(&w.g0_bottom, &w.g0_size);
#endif
  install_altstack(w);
  // A watching spinner sleeps watch_ns between looks; the kernel's default timer slack is
  // longer than that and would stretch each sleep several times over.
  w.timer_slack = ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
  ::prctl(PR_SET_TIMERSLACK, watch_slack_ns, 0, 0, 0);
}

void leave_worker_thread(worker& w, worker* restore) noexcept {
  if (w.timer_slack > 0) ::prctl(PR_SET_TIMERSLACK, w.timer_slack, 0, 0, 0);
  remove_altstack(w);
  rill_tls_worker = restore;
}

// ---- runtime --------------------------------------------------------------------------

runtime::runtime(const run_config& cfg) : cfg_(cfg), stacks_(cfg.stack_size) {
  if (cfg_.workers == 0) cfg_.workers = default_workers();
  if (cfg_.compact_parked_ms == 0) cfg_.compact_parked_ms = default_compact_parked_ms();
  if (cfg_.compact_parked_ms > 0) {
    stacks_.compact_parked(std::chrono::milliseconds(cfg_.compact_parked_ms), fiber_parked_long);
  }
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
  try {
    watchdog_add(this);  // every runtime: its slices are watched, threshold or not
  } catch (...) {
    lock_guard lk(g_runtimes_mu);
    g_runtimes.erase(std::find(g_runtimes.begin(), g_runtimes.end(), this));
    throw;
  }
}

runtime::~runtime() {
  watchdog_remove(this);
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
    if (!w.queue.push(gq_.front())) {  // cannot happen: the local queue is nearly empty here
      n = i;
      break;
    }
    gq_.pop_front();
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
    // The runnext fiber's wait starts when it arrives. The same fiber seen there again is a
    // new arrival if the owner switched in between (the slot runs first at a switch): a
    // producer and a consumer taking turns put the same fiber back at every turn.
    fiber* next = v.runnext.load(std::memory_order_acquire);
    const std::uint64_t switches = v.switches.load(std::memory_order_relaxed);
    if (look.next != next || look.next_switches != switches) {
      look.next = next;
      look.next_switches = switches;
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
    w.watch_drowsy.store(timeout > drowsy_ns, std::memory_order_relaxed);
    watcher_.store(&w, std::memory_order_seq_cst);
    if (gq_size_.load(std::memory_order_seq_cst) == 0 &&
        next_deadline_.load(std::memory_order_seq_cst) == deadline &&
        !shutdown_.load(std::memory_order_seq_cst)) {
      futex_wait(w.watch_word, 0, timeout);
    }
    watcher_.store(nullptr, std::memory_order_relaxed);
    w.watch_drowsy.store(false, std::memory_order_relaxed);
    now = now_ns();
  }
}

namespace {
// kick(): the watcher v ends its sleep and looks now.
void kick(worker& v) noexcept {
  v.watch_word.store(1, std::memory_order_release);
  futex_wake(v.watch_word);
}
}  // namespace

void runtime::kick_watcher() noexcept {
  if (worker* v = watcher_.load(std::memory_order_seq_cst)) kick(*v);
}

// kick_drowsy_watcher(): a push from inside the runtime (one that made a queue non-empty)
// while a worker watches. A watcher that looks often finds the fiber soon enough, and the
// pusher pays no futex call; one asleep for long is kicked, once per sleep.
void runtime::kick_drowsy_watcher() noexcept {
  worker* v = watcher_.load(std::memory_order_seq_cst);
  if (v && v->watch_drowsy.load(std::memory_order_relaxed) &&
      v->watch_drowsy.exchange(false, std::memory_order_relaxed)) {
    kick(*v);
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
// shared lines it reads are a visible share of a spawn with 2 workers (the fence waits for
// the new fiber's record, whose lines the other worker last wrote; benchmarks/README.md,
// "Figures behind design choices").
void runtime::wake_idle(bool outside) noexcept {
  std::atomic_thread_fence(std::memory_order_seq_cst);  // P4: the pusher's fence
  if (nspinning_.load(std::memory_order_seq_cst) != 0) {
    if (outside) {
      kick_watcher();
    } else {
      kick_drowsy_watcher();
    }
    return;
  }
  if (nidle_.load(std::memory_order_seq_cst) == 0) return;
  std::uint32_t zero = 0;
  if (!nspinning_.compare_exchange_strong(zero, 1, std::memory_order_seq_cst)) return;
  worker* w;
  {
    lock_guard lk(idle_mu_);
    if (idle_.empty()) {
      nspinning_.fetch_sub(1, std::memory_order_seq_cst);
      return;
    }
    w = idle_.back();
    claim_worker_locked(*w, true);
  }
  futex_wake(w->wake_word);
}

#ifndef NDEBUG
void runtime::check_idle_locked() noexcept {
  std::size_t in_idle = 0;
  for (auto& w : workers_) {
    const bool listed = std::find(idle_.begin(), idle_.end(), w.get()) != idle_.end();
    if (listed != w->in_idle) check_failed("P1: in_idle and the idle list disagree");
    in_idle += listed;
  }
  if (in_idle != idle_.size() || nidle_.load(std::memory_order_relaxed) != idle_.size()) {
    check_failed("P1: nidle_ is not the idle list's size");
  }
  if (timer_sleeper_ && !timer_sleeper_->in_idle) check_failed("P2: the timer sleeper is awake");
}

void runtime::check_failed(const char* what) noexcept {
  std::fprintf(stderr, "rill: scheduler invariant %s (src/sched/scheduler.cpp)\n", what);
  std::abort();
}

void run_queue_broken(const char* what) noexcept {
  std::fprintf(stderr, "rill: run queue invariant %s (src/sched/run_queue.hpp)\n", what);
  std::abort();
}
#endif

void runtime::leave_idle_locked(worker& w) noexcept {
  // timer_sleeper_ is null or an idle worker (every way off the list clears it), so w is on
  // the list; found rather than assumed, as before this was one function.
  auto it = std::find(idle_.begin(), idle_.end(), &w);
  if (it != idle_.end()) idle_.erase(it);
  w.in_idle = false;
  if (timer_sleeper_ == &w) timer_sleeper_ = nullptr;  // keeps P2
  nidle_.fetch_sub(1, std::memory_order_seq_cst);      // keeps P1
#ifndef NDEBUG
  check_idle_locked();
#endif
}

void runtime::wake_worker_locked(worker& w, bool spinning) noexcept {
  claim_worker_locked(w, spinning);
  futex_wake(w.wake_word);
}

void runtime::claim_worker_locked(worker& w, bool spinning) noexcept {
  leave_idle_locked(w);
  w.wake_spinning = spinning;
  idle_epoch_.fetch_add(1, std::memory_order_relaxed);
  w.wake_word.store(1, std::memory_order_release);
  // Under the lock: the eventfd protocol wants no write after the poller gave its role up.
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
    const bool poked = w.look_now.load(std::memory_order_relaxed) &&
                       w.look_now.exchange(false, std::memory_order_relaxed);
    if (next_deadline_.load(std::memory_order_relaxed) != INT64_MAX) run_due_timers(w);
    // A busy worker polls I/O now and then too, so ready fds do not wait behind a long queue.
    if (poked || w.tick - w.poll_tick >= global_check_interval) {
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
    // At its global-check tick next_local() returns nullptr with fibers still queued here
    // (it sends a switching fiber's worker to this loop). Spinning now would leave them
    // queued while this worker watches others, and steal into a queue that is not empty
    // (steal_into() needs it empty: Q1). This loop has looked at the global queue and the
    // timers: look again; the next tick returns the local fiber.
    if (!w.queue.empty() || w.runnext.load(std::memory_order_relaxed)) continue;
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
#ifndef NDEBUG
    check_idle_locked();
#endif
  }
  std::atomic_thread_fence(std::memory_order_seq_cst);  // P4: the parker's fence
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
      if (is_sleeper && timeout >= 0 && timeout <= timer_spin_ns) {
        // The last stretch before a timer: awake, so that it fires on time (see
        // timer_spin_ns). A wake-up ends it as it would the futex wait.
        const std::int64_t until = now_ns() + timeout;
        while (w.wake_word.load(std::memory_order_acquire) == 0 && now_ns() < until) {
          for (int i = 0; i < 16; ++i) __builtin_ia32_pause();
        }
      } else {
        futex_wait(w.wake_word, 0, is_sleeper && timeout > 0 ? timeout - timer_spin_ns : timeout);
      }
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
    RILL_ASSERT_FIBER_STATE(ready[0], parked);
    RILL_ASSERT_FIBER_STATE(ready[0], parked);
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
  RILL_ASSERT_FIBER_STATE(ready[0], parked);
  ready[0]->state.store(fiber_state::runnable, std::memory_order_relaxed);
  return ready[0];
}

void runtime::inject(worker& w, fiber** fs, int n) noexcept {
  for (int i = 0; i < n; ++i) {
    RILL_ASSERT_FIBER_STATE(fs[i], parked);
    fs[i]->state.store(fiber_state::runnable, std::memory_order_relaxed);
    push_local(w, fs[i]);
  }
  if (n > 0) wake_idle(true);
}

void runtime::run_worker(worker& w) {
  while (fiber* f = find_runnable(w)) {
    switch_to_next(w, f, [&](machine_context& to) { switch_to(w.g0, to, w.eh); });
    // Back on the scheduler stack: the fiber that switched here parked or finished with
    // nothing else to run locally.
  }
  return_credit(w);  // shut down (or aborted at start): ~runtime counts what is left as leaked
}

}  // namespace rill::detail
