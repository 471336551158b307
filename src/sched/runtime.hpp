// The M:N scheduler's internals. See src/README.md for the vocabulary, and
// sched/lock_rank.hpp for the lock order.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "fiber/stack.hpp"
#include "fiber/switch.hpp"
#include "rill/detail/core.hpp"
#include "rill/runtime.hpp"
#include "sched/fifo.hpp"
#include "sched/lock_rank.hpp"
#include "sched/observe.hpp"
#include "sched/run_queue.hpp"
#include "sched/timers.hpp"

namespace rill::detail {

// fiber_state: where a fiber lives and who may move it. The transitions, each checked where
// it happens in debug builds (RILL_ASSERT_FIBER_STATE):
//   created -> runnable                 start_fiber, start_main
//   runnable -> running                 switch_to_next (the worker switches to it)
//   running -> parked | runnable        a park (park_fiber, sleep) | a yield
//   parked -> runnable                  ready(), the poller's readied fibers, an abort
//   running -> done                     the fiber's exit (fiber_main); then reap()
//   parked -> parked_long               compaction's pass saw it parked (fiber/compact.hpp)
enum class fiber_state : std::uint8_t {
  created,   // has a stack, not yet started; only its creator knows it
  runnable,  // in exactly one run queue (or a runnext slot); no thread owns its stack
  running,   // owned by the worker running it; in no queue
  parked,    // reachable only through the one waiter/timer that will wake it
  done,      // finished; its stack goes back to the pool on the landing side
  // parked, and seen so by a pass of the stack compaction service (fiber/compact.cpp): one
  // still so at its next pass has its stack compacted. Every reader of `parked` takes it
  // as parked (is_parked()).
  parked_long,
};
inline bool is_parked(fiber_state s) noexcept {
  return s == fiber_state::parked || s == fiber_state::parked_long;
}

// RILL_ASSERT_FIBER_STATE(f, s): in debug builds, aborts with a report unless fiber f is
// in state s (as marl's ASSERT_FIBER_STATE); nothing in release builds.
#ifdef NDEBUG
#define RILL_ASSERT_FIBER_STATE(f, s) ((void)0)
#else
#define RILL_ASSERT_FIBER_STATE(f, s) \
  ::rill::detail::assert_fiber_state((f), ::rill::detail::fiber_state::s, __FILE__, __LINE__)
#endif

// Thrown out of park() in a fiber that the runtime aborts after a deadlock; the fiber
// entry swallows it. Deliberately not derived from std::exception.
struct fiber_aborted {};

// ready_slot: where runtime::ready() puts a fiber made ready by a fiber of the same worker.
enum class ready_slot : bool {
  queue,    // the back of the worker's run queue (a timer, I/O, a finished blocking call)
  runnext,  // the worker's runnext slot: it runs next (a hand-off: channel, mutex, ...)
};

struct worker;
class runtime;
class poller;

struct fiber : machine_context {
  runtime* rt = nullptr;
  fiber* next = nullptr;  // global queue link (its spill list); guarded by runtime::gq_mu_
  std::uint64_t id = 0;
  void (*entry)(void*) = nullptr;
  void* closure = nullptr;
  bool closure_on_heap = false;
  bool is_main = false;
  // aborted: set by the deadlock handler before the fiber is readied; each later park
  // throws fiber_aborted, until the fiber takes the abort (fiber_take_abort()).
  bool aborted = false;
  // abort_wake: the wake that ends the fiber's current park is the deadlock handler's
  // (set with `aborted`, cleared by the woken fiber). A fiber that parks again while it
  // unwinds after the abort is woken normally, and its wait completes.
  bool abort_wake = false;
  // retired: fiber_retire() has already taken this fiber out of the counts (it is about to
  // end); its exit does not count it again. Owner fiber, then the worker that reaps it.
  bool retired = false;
  stack stk;
  std::atomic<fiber_state> state{fiber_state::created};  // informative (dumps); relaxed
  std::atomic<wait_reason> reason{};                     // relaxed: read by dumps only
  std::atomic<const void*> wait_object{nullptr};
  void (*cancel)(void*) = nullptr;  // how to take this fiber's waiter off its list
  void* cancel_arg = nullptr;
  park_hooks hooks;  // run before every park (flush_before_park); owner fiber only
  // The watchdog's threshold for this fiber in ms (-1: its runtime's; 0: never reported),
  // and whether the watchdog has reported it. Written under the registry slot's lock
  // (watchdog_ms also at creation, stall_reported only by the watchdog).
  std::int32_t watchdog_ms = -1;
  bool stall_reported = false;
  // slice_over: set by the watchdog once the fiber has run fiber_slice_ns without a
  // scheduling point; a pipeline's fused loop reads it (fiber_slice_flag()) to yield between
  // two items, and clears it. Relaxed: a hint.
  std::atomic<bool> slice_over{false};
  // When it last parked; kept only while g_observe asks for it (observe.hpp).
  std::atomic<std::int64_t> parked_at{0};
  char name[40];  // NUL-terminated; name[0] is set at creation (the rest is not cleared)
};
// The watchdog finds a fiber's registry slot from the record's address (watchdog.cpp).
static_assert(alignof(fiber) <= 64);

// set_parked(): the fiber, about to switch out to park, says so. Its saved context is nulled
// first: the switch's landing writes this park's, so a reader that sees the fiber parked with
// a non-null context knows it is this park's, not an earlier one's (stack compaction,
// fiber/compact.cpp, reads it from another thread; the same thread wrote both, in order).
inline void set_parked(fiber* self) noexcept {
  self->fctx = nullptr;
  self->state.store(fiber_state::parked, std::memory_order_relaxed);
}

struct alignas(64) worker {
  runtime* rt = nullptr;
  unsigned index = 0;
  machine_context g0;  // this thread's own stack, running the scheduler loop
  // The fiber this worker runs (nullptr: the scheduler loop). Written by the owner only,
  // through set_current(), with release (a plain store on x86): the watchdog loads it with
  // acquire and then locks the fiber's stack slot, which must be seen constructed.
  std::atomic<fiber*> current{nullptr};
  // switches: bumped at every set_current() and at a yield that finds nobody to yield to
  // (a scheduling point either way): unchanged across two looks, the worker ran one fiber
  // without a scheduling point in between. Owner writes (a plain store: one writer);
  // the watchdog reads.
  std::atomic<std::uint64_t> switches{0};
  // look_now: set by the watchdog when timers are due, the global queue holds fibers or
  // fibers wait on I/O while this worker, busy, went through fewer scheduling points since
  // its last look than next_local() lets pass between two looks (global_check_interval):
  // its next scheduling point looks (find_runnable), however long its fibers run between
  // them. Without it, a worker whose fibers yield once per slice went seconds without
  // running a due timer. Cleared by the owner.
  std::atomic<bool> look_now{false};
  eh_state* eh = nullptr;  // this thread's C++ exception state (thread_eh()), for switches
  run_queue queue;
  alignas(64) std::atomic<fiber*> runnext{nullptr};
  alignas(64) std::atomic<std::uint32_t> wake_word{0};  // futex: 1 once woken
  std::atomic<std::uint32_t> watch_word{0};             // futex: the watch's sleep (spin)
  // watch_drowsy: this worker watches asleep for longer than drowsy_ns (spin), so a fiber
  // queued behind a busy worker would wait that long to be seen: the push kicks it.
  std::atomic<bool> watch_drowsy{false};
  bool in_idle = false;        // guarded by runtime::idle_mu_
  bool wake_spinning = false;  // guarded by runtime::idle_mu_: set by the waker
  bool polling = false;        // guarded by runtime::idle_mu_: blocked in the poller's epoll_wait
  // solo: the runtime has this one worker, so nobody steals from it and no worker can be
  // idle while it runs a fiber: its runnext slot and queue head need no atomic
  // read-modify-write, and readying a fiber wakes nobody.
  bool solo = false;
  // alone(): solo and running a fiber (not the scheduler loop): no other worker exists to
  // steal or to be woken. Owner thread only.
  bool alone() const noexcept { return solo && running(); }
  // running(): the fiber this worker runs. Owner thread only (the watchdog loads `current`
  // itself).
  fiber* running() const noexcept { return current.load(std::memory_order_relaxed); }
  // set_current(): the worker is about to run f (nullptr: its scheduler loop); one more
  // scheduling point. Owner thread only.
  void set_current(fiber* f) noexcept {
    if (g_observe.load(std::memory_order_relaxed) != 0) [[unlikely]]
      observe_switch(this, f);  // a trace or park times (observe.cpp)
    current.store(f, std::memory_order_release);
    scheduling_point();
  }
  void scheduling_point() noexcept {
    switches.store(switches.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  // owner thread only:
  bool spinning = false;
  std::uint32_t tick = 0;
  std::uint32_t poll_tick = 0;  // tick of this worker's last non-blocking poll
  std::uint32_t runnext_streak = 0;
  std::uint64_t rng = 0;
  std::uint64_t id_next = 0, id_end = 0;  // this worker's block of fiber ids
  std::vector<stack> stack_cache;
  // A thief's look at each victim's queue (steal): the head it saw and since when.
  struct victim_look {
    std::uint32_t head = 0;
    std::int64_t since = 0;
    fiber* next = nullptr;
    std::uint64_t next_switches = 0;  // the owner's `switches` when `next` was seen
    std::int64_t next_since = 0;
  };
  std::vector<victim_look> looks;
  // written by the owner, read by stats from any thread:
  std::atomic<std::size_t> cached{0};
  std::atomic<std::uint64_t> steals{0};
  std::atomic<std::uint64_t> spawned{0};
  std::atomic<std::int64_t> credit{0};  // spawns counted in live_fibers_ ahead (count_spawn)
  // moves: odd while this worker moves a count between two of the totals snapshot() adds
  // up (its credit and live_fibers_, its stack cache and a pool, ...): see count_move.
  std::atomic<std::uint64_t> moves{0};
  std::thread thread;  // not used by worker 0 (the thread that called run)
  void* altstack = nullptr;
  long timer_slack = 0;  // the thread's own timer slack, restored when it stops being a worker
  // This thread's own stack (g0's), for the ASan of a sanitized program that links a
  // library built without it (asan_start_switch); unset without one.
  const void* g0_bottom = nullptr;
  std::size_t g0_size = 0;
  // The watchdog's view of this worker (watchdog.cpp); its thread only, under its lock.
  struct alignas(64) watch_state {
    std::uint64_t switches = 0;  // `switches` at the last look
    std::uint64_t looked = 0;    // `switches` at the pass before (look_now)
    std::int64_t since = 0;      // when that value was first seen
    std::int64_t need = 0;       // how long a stall must last to be reported
    bool done = true;            // this stall was looked at (or the worker was idle)
    bool asked = true;           // the fiber was asked to yield (slice_over), or is gone
  } watch;
};

class runtime {
 public:
  explicit runtime(const run_config& cfg);
  ~runtime();

  void start_main(void (*main)(void*), void* arg);
  void abort_start() noexcept { begin_shutdown(); }  // run() could not start: stop workers
  void run_worker(worker& w);                        // the scheduler loop; returns at shutdown
  void join_workers();
  void rethrow_outcome();

  // ready() makes a parked or new fiber runnable. From a worker of this runtime it goes
  // in that worker's runnext slot (ready_slot::runnext) or queue; otherwise in the global
  // queue.
  inline void ready(fiber* f, ready_slot where) noexcept;
  // next_timer(): the deadline of the runtime's earliest timer (INT64_MAX: none).
  std::int64_t next_timer() const noexcept {
    return next_deadline_.load(std::memory_order_relaxed);
  }
  // push_local() queues f on w (owner only). True when the push may need an idle worker
  // woken (see "A push onto a non-empty queue" in scheduler.cpp): the queue looked empty
  // before, or it was full and half of it went to the global queue.
  // `yielded`: f yields (see run_queue::push).
  inline bool push_local(worker& w, fiber* f, bool yielded = false) noexcept;
  void push_global(fiber* f) noexcept;
  // wake_idle(): wake an idle worker if none is spinning. `outside`: the work came from
  // outside the worker's own fibers (another thread, the network), and a watching spinner
  // is woken to look at once (see scheduler.cpp, "Keeping communicating fibers together").
  void wake_idle(bool outside = false) noexcept;

  // timers (sched/timers.cpp)
  void arm(timer& t) noexcept;
  bool cancel(timer& t) noexcept;
  void rearm(timer& t, std::int64_t when) noexcept;  // only from inside t.fire()
  void run_due_timers(worker& w) noexcept;
  void drop_timers() noexcept;  // at the end of run(): drop() every timer still armed
  void heap_insert(timer& t) noexcept RILL_REQUIRES(timer_mu_);
  void heap_remove(timer& t) noexcept RILL_REQUIRES(timer_mu_);  // t is in the heap

  // create_fiber(): w is the calling worker of this runtime, or nullptr from outside.
  // `stack_size`: bytes of stack at least (0, or at most the runtime's: the runtime's).
  fiber* create_fiber(worker* w, std::size_t size, std::size_t align, void (*entry)(void*),
                      std::size_t stack_size = 0);
  void discard_fiber(fiber* f) noexcept;
  void count_spawn(worker* w) noexcept;  // fiber accounting: see fiber_life.cpp
  void count_exit() noexcept;
  void return_credit(worker& w) noexcept;
  void uncount(std::int64_t n) noexcept;  // n fewer in live_fibers_; the last one shuts down
  void retire(fiber& f) noexcept;         // see fiber_retire (rill/detail/core.hpp)
  void start_fiber(worker* w, fiber* f, bool spread = false) noexcept;
  template <class F>
  void for_each_fiber(F f);      // f(fiber*) for every live fiber, under its registry slot's lock
  void reap(fiber* f) noexcept;  // on the landing side of a finished fiber

  inline fiber* next_local(worker& w) noexcept;  // runnext or queue, with the fairness rules
  // nothing_queued(): no fiber waits in any run queue or runnext slot, and no timer or I/O
  // wait is pending (for yield(); not a snapshot).
  bool nothing_queued() noexcept;
  std::string dump();

  const run_config& config() const noexcept { return cfg_; }
  std::int64_t watchdog_ns() const noexcept {
    return static_cast<std::int64_t>(cfg_.watchdog_ms) * 1'000'000;
  }
  // watch() is the watchdog's look at this runtime (watchdog.cpp): reports the workers that
  // ran one fiber without a scheduling point for longer than the threshold. Returns whether
  // a worker is awake (not idle). The watchdog's thread only, under its lock.
  bool watch(std::int64_t now);
  unsigned workers() const noexcept { return static_cast<unsigned>(workers_.size()); }
  worker& worker_at(unsigned i) noexcept { return *workers_[i]; }
  std::uint64_t chaos() const noexcept { return chaos_; }
  stats snapshot() noexcept;

  std::atomic<std::int64_t> io_waiters{0};      // fibers parked on the poller
  std::atomic<std::int64_t> blocking_calls{0};  // rill::blocking calls in flight
  std::atomic<std::int64_t> nested_runs{0};     // rill::run calls from fibers in flight
  // Plain-thread runs in flight on the default runtime (detail::default_run_begin): those
  // that watch for deadlocks, and the others (started pipelines, runs that opted out).
  std::atomic<std::int64_t> watched_runs{0};
  std::atomic<std::int64_t> unwatched_runs{0};
  // The deadlock_error of the last deadlock declared (nullptr if none).
  std::exception_ptr last_deadlock();

  // The netpoller (io/poller.cpp), created on first use; throws std::system_error.
  poller* io_poller();
  // io_parking(): a fiber of w has just parked on the poller (called on the landing side,
  // no lock held). If w runs another fiber and nobody polls, wake an idle worker to block
  // in epoll_wait.
  void io_parking(worker& w) noexcept;

 private:
  // The scheduler's own steps (scheduler.cpp; its essay has the protocol and P1-P6).
  // ready_outside(): f goes to the global queue, from a thread not a worker of this runtime.
  void ready_outside(fiber* f) noexcept;
  // push_overflow(): w's queue is full: half of it and f go to the global queue.
  void push_overflow(worker& w, fiber* f) noexcept;
  // find_runnable(): the scheduler loop's next fiber for w, parking w while there is none;
  // nullptr at shutdown.
  fiber* find_runnable(worker& w);
  // pop_global(): a fair share of the global queue into w's queue; returns one to run.
  fiber* pop_global(worker& w) noexcept;
  // steal(): one look at every other worker; a fiber worth moving, or nullptr. `queued`:
  // set when some worker had a fiber waiting, worth moving or not.
  fiber* steal(worker& w, std::int64_t now, bool& queued) noexcept;
  // spin(): a spinning worker's search (then its watch); a fiber, with w no longer
  // spinning, or nullptr: park (w.spinning still set).
  fiber* spin(worker& w);
  void kick_watcher() noexcept;         // the watching worker (if any) looks now
  void kick_drowsy_watcher() noexcept;  // the same, if it sleeps long between looks
  // any_work(): some run queue, runnext slot or the global queue holds a fiber.
  bool any_work() noexcept;
  // may_act(): this runtime could still run a fiber on its own: a worker is awake, work
  // is queued, or a timer, I/O wait, blocking call or outside ready() is in flight (a
  // snapshot: the deadlock check reads it of its own runtime, under idle_mu_, and of the
  // others, under g_runtimes_mu). A nested run in flight (a fiber of ours waiting in
  // rill::run) counts for ourselves only: the others see the nested runtime itself, and
  // the nested runtime must not wait for the fiber that waits for it.
  bool may_act(bool self) noexcept;
  // others_may_act(): another runtime may act (may_act(false)); else adds up their wake-up
  // epochs into `epochs`. Takes g_runtimes_mu.
  bool others_may_act(std::uint64_t& epochs) noexcept;
  // stop_spinning(): w found work and stops spinning; the last spinner wakes another (P6).
  void stop_spinning(worker& w) noexcept;
  // park_worker(): w goes idle until woken, a timer is due or I/O readies fibers (then
  // queued on w); returns at once if work appears while it registers (P4).
  void park_worker(worker& w);
  fiber* poll_io(worker& w) noexcept;                  // non-blocking poll; runs the first
  void inject(worker& w, fiber** fs, int n) noexcept;  // queue fibers made ready by I/O
  // wake_worker_locked(): w (on the idle list) leaves it and is woken; `spinning`: it starts
  // out spinning, already counted in nspinning_ by the caller (P5).
  void wake_worker_locked(worker& w, bool spinning) noexcept RILL_REQUIRES(idle_mu_);
  // claim_worker_locked(): wake_worker_locked() but for its futex call, which the caller
  // makes once it has let go of idle_mu_ (futex_wake(w.wake_word)): a woken worker's first
  // step takes idle_mu_, and woken under the lock it blocked on it at once (two more futex
  // calls on the path of the wake). Only where the runtime outlives the call.
  void claim_worker_locked(worker& w, bool spinning) noexcept RILL_REQUIRES(idle_mu_);
  // leave_idle_locked(): w (on the idle list) leaves it, and the timer-sleeper role.
  void leave_idle_locked(worker& w) noexcept RILL_REQUIRES(idle_mu_);
  // begin_shutdown(): run() ends: every worker is woken and its loop returns.
  void begin_shutdown() noexcept;
  // on_all_idle(): w is the last worker to go idle, with no timer or I/O pending: waits a
  // grace period and declares a deadlock if nothing could still wake a fiber
  // (deadlock.cpp). Returns at once if w is woken meanwhile.
  void on_all_idle(worker& w);
  // watches_deadlock(): deadlock detection is on: by the runtime's options, or (the default
  // runtime) while the plain-thread runs in flight all watch for it.
  bool watches_deadlock() const noexcept;
  // declare_deadlock() aborts every parked fiber not aborted before; false if there was none.
  bool declare_deadlock();
  static void add_to_registry(fiber* f) noexcept;  // see stack_slot
  // remove_from_registry(): f's slot no longer names it (under the slot's lock, so a
  // reader holding it sees f whole).
  static void remove_from_registry(fiber* f) noexcept;
  std::vector<fiber*> parked_fibers();  // a snapshot, through the registry
#ifndef NDEBUG
  // check_idle_locked(): aborts unless P1 and P2 of scheduler.cpp hold.
  void check_idle_locked() noexcept RILL_REQUIRES(idle_mu_);
  [[noreturn]] static void check_failed(const char* what) noexcept;
#endif

  // pool_for(): the pool of stacks of at least `size` bytes (stacks_ up to the runtime's
  // size); pool_of(): the pool a stack of s.size bytes came from. Pools other than stacks_
  // are made on first use (a stage asking for a bigger stack) and live as long as the
  // runtime; their stacks skip the workers' caches.
  stack_pool& pool_for(std::size_t size);
  stack_pool& pool_of(const stack& s) noexcept;
  void release_stack(const stack& s) noexcept;  // to its pool, for a stack of another size

  run_config cfg_;
  std::uint64_t chaos_ = 0;  // RILL_SCHED_SEED: random schedule perturbation when != 0
  std::vector<std::unique_ptr<worker>> workers_;
  stack_pool stacks_;
  ranked_mutex pools_mu_{lock_rank::pools};
  std::vector<std::unique_ptr<stack_pool>> more_stacks_ RILL_GUARDED_BY(pools_mu_);

  // The lock order is sched/lock_rank.hpp's; debug builds check it.
  ranked_mutex gq_mu_{lock_rank::global_queue};
  block_fifo<fiber> gq_ RILL_GUARDED_BY(gq_mu_);
  std::atomic<std::uint32_t> gq_size_{0};

  ranked_mutex idle_mu_{lock_rank::idle};
  std::vector<worker*> idle_ RILL_GUARDED_BY(idle_mu_);
  std::atomic<std::uint32_t> nidle_{0};
  std::atomic<std::uint32_t> nspinning_{0};
  std::atomic<std::uint64_t> idle_epoch_{0};  // bumped whenever an idle worker is woken
  std::atomic<worker*> watcher_{nullptr};     // the spinning worker asleep in its watch
  worker* timer_sleeper_ RILL_GUARDED_BY(idle_mu_) = nullptr;
  // The netpoller. The timer sleeper blocks in its epoll_wait (w.polling) instead of its
  // futex while fibers wait on I/O; poll_sleeping_: a worker is inside that epoll_wait
  // (at most one; written under idle_mu_); poll_waking_: an idle worker was woken to take
  // that role.
  std::atomic<poller*> poller_{nullptr};
  ranked_mutex poller_mu_{lock_rank::leaf};  // creation only
  std::atomic<bool> poll_sleeping_{false};
  std::atomic<bool> poll_waking_{false};
  std::atomic<bool> shutdown_{false};
  bool deadlock_declared_ RILL_GUARDED_BY(idle_mu_) = false;

  ranked_mutex timer_mu_{lock_rank::timers};
  timer* timer_root_ RILL_GUARDED_BY(timer_mu_) = nullptr;  // a pairing heap on `when`
  std::size_t timer_count_ RILL_GUARDED_BY(timer_mu_) = 0;
  std::atomic<std::int64_t> next_deadline_{INT64_MAX};

  std::atomic<std::int64_t> live_fibers_{0};
  // Stacks of retired fibers not yet reaped: counted in stacks_, not in snapshot().
  std::atomic<std::int64_t> retiring_stacks_{0};
  std::atomic<std::uint64_t> next_id_{1};
  std::exception_ptr main_exception_;  // written by the main fiber before it finishes
  ranked_mutex deadlock_mu_{lock_rank::leaf};
  std::exception_ptr deadlock_ RILL_GUARDED_BY(deadlock_mu_);
  // Outside threads (the blocking pool, a plain thread closing a socket or sending on a
  // channel) inside ready(): the fiber they ready may finish the runtime before ready()
  // returns, so the destructor waits for them.
  std::atomic<std::int64_t> outside_readies_{0};

  friend void fiber_main(bctx::transfer_t t) noexcept;
};

// The calling thread's worker (nullptr off the runtime's threads). A compiler may compute a
// thread_local's address once and reuse it across a call, and a fiber may come back from a
// switch on another thread, so every read must be a fresh one (the QEMU coroutine rule;
// research/reliability.md). On x86-64 ELF it is one volatile asm (the initial-exec load
// through %fs, which the compiler can neither cache nor merge); elsewhere a noinline
// accessor, recomputed on every call. (A call would slow every yield: it stands between
// the mispredicted return of the previous switch and the first load of the next.)
}  // namespace rill::detail
#if defined(__x86_64__) && defined(__ELF__)
#define RILL_INLINE_CURRENT_WORKER 1
extern "C" [[gnu::visibility("hidden"),
             gnu::tls_model("initial-exec")]] __thread rill::detail::worker* rill_tls_worker;
#else
#define RILL_INLINE_CURRENT_WORKER 0
#endif
namespace rill::detail {
#if RILL_INLINE_CURRENT_WORKER
inline worker* current_worker() noexcept {
  worker* w;
  asm volatile("movq rill_tls_worker@gottpoff(%%rip), %0\n\tmovq %%fs:(%0), %0"
               : "=r"(w)
               :
               : "memory");
  return w;
}
#else
[[gnu::noinline]] worker* current_worker() noexcept;
#endif

// Process-wide accounting and outside-thread activity.
extern std::atomic<std::int64_t> g_abandoned_fibers;  // left by runtimes that ended
extern std::atomic<std::int64_t> g_pending_timers;
extern std::atomic<std::int64_t> g_external_waiters;  // plain threads parked in rill

// The watchdog (watchdog.cpp). watchdog_add/remove: a runtime comes and
// goes (remove returns once the watchdog no longer looks at it). watchdog_kick(): a worker
// left its idle state (wakes the watchdog if it sleeps for want of work).
void watchdog_add(runtime* rt);
void watchdog_remove(runtime* rt) noexcept;
void watchdog_kick() noexcept;
// For tests: reports written so far, looks taken so far, and the last report's text.
std::uint64_t watchdog_reports() noexcept;
std::uint64_t watchdog_passes() noexcept;
std::string watchdog_last_report();
// nested_run_call(): from a fiber, runs fn(arg) on the blocking-call pool while the fiber
// parks, counted in runtime::nested_runs (io/blocking.cpp).
void nested_run_call(void (*fn)(void*) noexcept, void* arg);
// external_wait: counts the calling plain thread in g_external_waiters while it blocks in
// rill (deadlock detection waits while one could still act).
struct external_wait {
  external_wait() noexcept { g_external_waiters.fetch_add(1, std::memory_order_seq_cst); }
  ~external_wait() { g_external_waiters.fetch_sub(1, std::memory_order_seq_cst); }
  external_wait(const external_wait&) = delete;
  external_wait& operator=(const external_wait&) = delete;
};

// chaos_point() marks a decision point for schedule perturbation: the entry of a channel,
// select or park operation. With RILL_SCHED_SEED set, the calling fiber yields there with
// probability 1/64 (drawn from its worker's seeded generator); otherwise it costs one
// relaxed load. Call it with no lock held, from code that may yield.
void chaos_yield() noexcept;
inline void chaos_point() noexcept {
  if (g_chaos.load(std::memory_order_relaxed)) [[unlikely]]
    chaos_yield();
}

#ifndef NDEBUG
[[noreturn, gnu::cold]] void fiber_state_violation(const fiber* f, fiber_state want,
                                                   const char* file, int line) noexcept;
inline void assert_fiber_state(const fiber* f, fiber_state want, const char* file,
                               int line) noexcept {
  const fiber_state s = f->state.load(std::memory_order_relaxed);
  if (s != want && !(want == fiber_state::parked && s == fiber_state::parked_long)) [[unlikely]]
    fiber_state_violation(f, want, file, line);
}
#endif

// ---- the hot path, inline: every park, wake and yield goes through it ----------------

inline constexpr std::uint32_t runnext_cap = 64;  // runnext turns in a row before the queue
inline constexpr std::uint32_t global_check_interval = 61;  // ticks between global looks

inline std::uint64_t next_random(std::uint64_t& s) noexcept {  // xorshift64*
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  return s * 0x2545F4914F6CDD1DULL;
}

// A fiber made ready by a fiber of this worker goes to runnext (see scheduler.cpp, "Rejected":
// a runnext hand-off wakes nobody); the fiber it displaces goes to the queue.
inline void runtime::ready(fiber* f, ready_slot where) noexcept {
  bool to_runnext = where == ready_slot::runnext;
  RILL_ASSERT_FIBER_STATE(f, parked);
  f->state.store(fiber_state::runnable, std::memory_order_relaxed);
  worker* w = current_worker();
  if (!w || w->rt != this) [[unlikely]] {
    ready_outside(f);
    return;
  }
  if (chaos_ && (next_random(w->rng) & 1)) to_runnext = false;
  const bool alone = w->alone();
  if (to_runnext) {
    fiber* old;
    if (alone) {
      old = w->runnext.load(std::memory_order_relaxed);
      w->runnext.store(f, std::memory_order_relaxed);
    } else {
      old = w->runnext.exchange(f, std::memory_order_acq_rel);
    }
    if (!old) return;
    f = old;
  }
  if (push_local(*w, f) && !alone) wake_idle();
}

inline bool runtime::push_local(worker& w, fiber* f, bool yielded) noexcept {
  bool was_empty;
  if (!w.queue.push(f, was_empty, yielded)) [[unlikely]] {
    push_overflow(w, f);
    return true;
  }
  return was_empty;
}

// prefetch_run(): f is about to run, and `after` (a hint) is queued behind it. Fibers woken
// together (a close, a broadcast) each run on a stack page of their own, and each switch
// missed the TLB and the cache twice, on the record and on the saved registers: the record
// of the one behind is asked for one switch ahead, and f's registers, found through its
// record (asked for at the switch before), now.
// Nothing when none is behind (two fibers that take turns: their lines are hot already).
inline void prefetch_run(fiber* f, fiber* after) noexcept {
  if (!after) return;
  __builtin_prefetch(after);
  __builtin_prefetch(f->fctx);
}

inline fiber* runtime::next_local(worker& w) noexcept {
  ++w.tick;
  if ((w.tick % global_check_interval == 0 &&
       (gq_size_.load(std::memory_order_relaxed) != 0 ||
        next_deadline_.load(std::memory_order_relaxed) != INT64_MAX ||
        io_waiters.load(std::memory_order_relaxed) > 0)) ||
      w.look_now.load(std::memory_order_relaxed)) [[unlikely]] {
    return nullptr;  // let the scheduler loop look at the global queue, timers and I/O
  }
  // Schedule perturbation (RILL_SCHED_SEED): now and then run the queue before runnext.
  const bool skip_runnext = chaos_ && (next_random(w.rng) & 3) == 0;
  // The slot is read first: most calls find it empty, and the exchange (a locked RMW,
  // needed because thieves may take the slot too) is paid only when it is not.
  fiber* const next = w.runnext.load(std::memory_order_relaxed);
  if (w.solo) {  // see worker::solo
    if (next && w.runnext_streak < runnext_cap && !skip_runnext) {
      ++w.runnext_streak;
      w.runnext.store(nullptr, std::memory_order_relaxed);
      return next;
    }
    w.runnext_streak = 0;
    if (fiber* f = w.queue.pop_unshared()) {
      prefetch_run(f, w.queue.upcoming(false));
      return f;
    }
    if (next) w.runnext.store(nullptr, std::memory_order_relaxed);
    return next;
  }
  if (next && w.runnext_streak < runnext_cap && !skip_runnext) {
    if (fiber* f = w.runnext.exchange(nullptr, std::memory_order_acquire)) {
      ++w.runnext_streak;
      return f;
    }
  }
  w.runnext_streak = 0;
  if (fiber* f = w.queue.pop()) {
    prefetch_run(f, w.queue.upcoming(true));
    return f;
  }
  return next ? w.runnext.exchange(nullptr, std::memory_order_acquire) : nullptr;
}

// check_stack() aborts with a report if the calling fiber's checked stack overflowed.
[[noreturn]] void report_overflow(const fiber* f) noexcept;
void check_stack_slow(fiber* self) noexcept;
inline void check_stack(fiber* self) noexcept {
  if (!self->stk.guarded) check_stack_slow(self);
}

// probe_switch_stack() touches the stack as deep as the rest of a switch will go (the calls
// to thread_eh() and the jump, and the jump's register frame). A guarded stack that has no
// room for them then faults here, while w->current still names the fiber, so the SIGSEGV
// handler can name the fiber that overflowed (past this point w->current is the next one).
// `or $0` writes back what it read: nothing below the stack pointer is live.
inline void probe_switch_stack() noexcept {
#if defined(__x86_64__)
  asm volatile("orq $0, -256(%%rsp)" ::: "memory");
#endif
}

// switch_to_next() hands worker w to `next` (a fiber w took off its own queues: marked
// running, made current) or, when next is nullptr, to w's scheduler loop, and calls
// jump(to) with the context to switch to. Every switch away from a fiber (a park, a yield,
// an exit) and the scheduler loop's switch to a fiber go through it. Always inline, jump
// inlined into each branch: it is the tail of every park and yield.
template <class Jump>
[[gnu::always_inline]] inline void switch_to_next(worker& w, fiber* next, Jump&& jump) noexcept {
  if (next) {
    RILL_ASSERT_FIBER_STATE(next, runnable);
    w.set_current(next);
    next->state.store(fiber_state::running, std::memory_order_relaxed);
    jump(static_cast<machine_context&>(*next));
  } else {
    w.set_current(nullptr);
    jump(w.g0);
  }
}

// switch_out() parks the calling fiber (already marked parked or runnable by the caller)
// and runs the next fiber of this worker, or the scheduler. `after(self, arg)` runs once the
// fiber's context is saved. `w` is the calling worker, read before the switch.
inline void switch_out(fiber* self, worker* w, after_switch_fn after, void* arg) noexcept {
  check_stack(self);
  probe_switch_stack();
  switch_to_next(*w, self->rt->next_local(*w),
                 [&](machine_context& to) { switch_to(*self, to, w->eh, after, arg); });
}
inline void switch_out(fiber* self, after_switch_fn after, void* arg) noexcept {
  switch_out(self, current_worker(), after, arg);
}

}  // namespace rill::detail
