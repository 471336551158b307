// rill/runtime.hpp: the M:N fiber runtime (Go's scheduler, for C++).
//
// rill::run(main) starts worker threads (GOMAXPROCS-like), runs `main` as the first fiber
// and returns its result once main and every fiber spawned with rill::go have finished.
// The calling thread is worker 0; the others come from a process-wide pool that keeps its
// threads (and a small run's stacks) for the next run, so calling run again and again costs
// microseconds, not thread starts (an idle pool thread exits after 5 s).
// Fibers are cooperatively scheduled: one switches only where it parks (a channel
// operation, a lock, a sleep, I/O) or yields. A fiber may resume on another worker thread,
// so code must not keep a `thread_local` address or `errno` across a suspension point.
// The C++ exception state travels with the fiber (`throw;` works across a suspension). The
// floating-point control state (rounding mode, exception masks: fesetround, fesetenv,
// _mm_setcsr) belongs to the worker thread, not to the fiber, as in Go: a fiber that changes
// it must restore it before it suspends. (Saving it at every switch, as Boost.Context does,
// cost more than the rest of the switch.)
//
// Thread safety: every function here may be called from any fiber of a runtime; `run` may
// also be called from any plain thread (several runtimes may coexist).
#pragma once

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "rill/detail/core.hpp"

namespace rill {

// options configures one runtime. It is an aggregate: `options o; o.workers = 2;`.
struct options {
  // Worker threads. 0: the RILL_WORKERS environment variable if set, else
  // std::thread::hardware_concurrency().
  unsigned workers = 0;
  // Bytes of address space reserved per fiber stack (committed lazily, page by page; a
  // guard page or canary zone, and the fiber's record, come out of it). README.md says
  // what fits in the default. An overflow aborts with a message naming the fiber. A
  // pipeline can ask for more for its fibers (run_options::stack_size,
  // stage_options::stack_size).
  std::size_t stack_size = 128 * 1024;
  // When every fiber is parked with no timer, I/O wait or outside thread able to wake
  // one, run() throws deadlock_error instead of hanging. Outside parties that count: a
  // plain thread waiting in rill (a channel, a lock, a socket), and another runtime of the
  // process that could still run a fiber (a worker busy, or a timer, I/O wait or blocking
  // call pending): while one exists the runtime waits and checks again. A plain thread
  // that is not inside rill is not seen: one that will send later needs
  // detect_deadlock = false.
  bool detect_deadlock = true;
  // The watchdog (as Go's sysmon): a fiber that holds its worker thread longer than this
  // without a scheduling point (a park, a yield) stalls every fiber queued behind it on
  // that worker, typically by a blocking call (sleep(), blocking I/O, a lock of another
  // library) that belongs in rill::blocking(), or a wait that belongs in
  // this_fiber::sleep_for(). The watchdog then writes one report per fiber to stderr: its
  // id and name (a pipeline's fibers are named after their stages) and how long it ran.
  // 0 turns the reports off. Its thread looks every half slice (detail::fiber_slice_ns),
  // only while a worker is awake: it also asks a pipeline's fused loop to yield once its
  // slice is over, whatever this setting. A switch costs one store more. Plain-thread pipelines run
  // on a default runtime whose threshold is RILL_WATCHDOG_MS (default 100), and
  // run_options::watchdog sets it per run.
  std::chrono::milliseconds watchdog{100};
  // Stack compaction, for programs that hold many fibers parked (a fiber per connection):
  // a fiber parked for at least this long (and at most twice as long) keeps only the bytes
  // its stack uses, and its stack's pages go back to the system; any access to that stack
  // (its wake, a pointer into it that another fiber holds) puts them back first, so nothing
  // changes for the program but memory and the cost of that first access (a page fault
  // served by the runtime's service thread). 0: the RILL_COMPACT_PARKED_MS environment
  // variable, else off. Needs
  // userfaultfd (Linux 6.8 or later; an unprivileged process also needs
  // vm.unprivileged_userfaultfd = 1); without it, runs as if off. stats() counts the
  // compacted fibers. A forked child must not touch the parent's compacted stacks. With it,
  // a chan::close() called in a fiber that wakes more than 1024 fibers lets them run before
  // it returns (a yield per 1024: woken compacted stacks are back in memory until their
  // fibers run), so it is a scheduling point there: do not hold a lock of another library
  // across it. A compacting runtime also gives the stacks of ended fibers back to the
  // system, a slab (a few hundred stacks) at a time, keeping a few slabs for new fibers.
  std::chrono::milliseconds compact_parked{0};
};

// Where a parked fiber waits; a deadlock report and the fiber dump name it.
enum class wait_reason : std::uint8_t {
  none,
  chan_send,
  chan_recv,
  select,
  sleep,
  wait_group,
  mutex,
  cond_var,
  io_read,
  io_write,
  blocking_call,
  pipeline,
};
const char* to_string(wait_reason r) noexcept;

// deadlock_error: every fiber of a runtime is parked forever. what() lists each parked
// fiber and what it waits on (Go: "all goroutines are asleep - deadlock!").
class deadlock_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
// watchdog_ms(): a watchdog setting in whole ms (at least 1 if positive; 0: off).
inline std::uint32_t watchdog_ms(std::chrono::milliseconds d) noexcept {
  const auto n = d.count();
  return n <= 0 ? 0 : n >= INT32_MAX ? INT32_MAX : static_cast<std::uint32_t>(n);
}

template <class Fn>
void invoke_closure(void* p) {
  Fn& fn = *static_cast<Fn*>(p);
  struct destroy {
    Fn& fn;
    ~destroy() { fn.~Fn(); }
  } guard{fn};
  std::invoke(fn);
}

template <class R>
struct main_slot {
  std::optional<R> value;
  template <class F>
  void call(F& f) {
    value.emplace(std::invoke(f));
  }
  R take() { return std::move(*value); }
};
template <>
struct main_slot<void> {
  template <class F>
  void call(F& f) {
    std::invoke(f);
  }
  void take() {}
};
}  // namespace detail

// run() runs `main` as the first fiber of a new runtime and returns its result when it
// returns and every fiber it spawned has finished. The calling thread becomes worker 0;
// called from a fiber, the new runtime runs on a thread of the blocking-call pool instead
// while the calling fiber parks, so that its worker stays free for the fibers the nested
// run may wait on (as with one worker, where nothing else would run them). An exception that
// escapes main is rethrown here. Throws deadlock_error on a deadlock, std::system_error when worker
// threads cannot be started.
template <class F>
auto run(F&& main, options opts = {}) {
  using R = std::invoke_result_t<F&>;
  detail::main_slot<R> slot;
  struct ctx_t {
    F& f;
    detail::main_slot<R>& slot;
  } ctx{main, slot};
  detail::run_main(
      {opts.workers, opts.stack_size, opts.detect_deadlock, false,
       detail::watchdog_ms(opts.watchdog),
       static_cast<std::uint32_t>(std::max<std::int64_t>(0, opts.compact_parked.count()))},
      [](void* p) {
        auto* c = static_cast<ctx_t*>(p);
        c->slot.call(c->f);
      },
      &ctx);
  return slot.take();
}

namespace detail {
// start_closure(): a new fiber made by create(size, align, entry, out) runs f.
template <class F, class Create>
void start_closure(F&& f, Create create, bool spread = false) {
  using Fn = std::decay_t<F>;
  detail::fiber* h = nullptr;
  void* mem = create(sizeof(Fn), alignof(Fn), &detail::invoke_closure<Fn>, h);
  try {
    ::new (mem) Fn(std::forward<F>(f));
  } catch (...) {
    detail::fiber_discard(h);
    throw;
  }
  detail::fiber_start(h, spread);
}

// go_sized(): go() with a stack of at least `stack_size` bytes (0: the runtime's);
// `spread`: see fiber_start().
template <class F>
void go_sized(std::size_t stack_size, F&& f, bool spread = false) {
  static_assert(std::is_invocable_v<std::decay_t<F>&>,
                "rill::go: f must be callable with no arguments");
  start_closure(
      std::forward<F>(f),
      [stack_size](std::size_t size, std::size_t align, void (*entry)(void*), fiber*& out) {
        return fiber_create(size, align, entry, out, stack_size);
      },
      spread);
}

}  // namespace detail

// go() spawns `f` (any callable taking no arguments) as a new fiber of the current runtime.
// It goes on the calling worker's run queue. An exception escaping f terminates the
// program with a message naming the fiber (as std::thread does). Throws std::logic_error
// when called outside a runtime, std::bad_alloc when no stack can be had.
// go() never parks, but it may yield: a fiber that has filled its worker's run queue lets
// the queued fibers run before it spawns more (as Go's scheduler preempts a goroutine that
// spawns in a loop), so a spawn loop reuses the stacks of fibers that finished instead of
// holding a fresh one for each. Do not hold a std::mutex across go() that the new fibers
// take.
template <class F>
void go(F&& f) {
  detail::go_sized(0, std::forward<F>(f));
}

namespace detail {
// spawn_in() spawns f as a fiber of rt, from any thread (a stack of at least `stack_size`
// bytes; 0: rt's).
template <class F>
void spawn_in(runtime* rt, F&& f, std::size_t stack_size = 0) {
  start_closure(std::forward<F>(f), [rt, stack_size](std::size_t size, std::size_t align,
                                                     void (*entry)(void*), fiber*& out) {
    return fiber_create_in(rt, size, align, entry, out, stack_size);
  });
}
}  // namespace detail

// stats: counts of the calling thread's runtime (all zero outside a runtime). After run()
// returns, the runtime is gone; runtime_stats_after_run() gives the counts it left.
struct stats {
  std::size_t live_fibers = 0;
  std::size_t live_stacks = 0;
  std::size_t pending_timers = 0;
  std::uint64_t fibers_spawned = 0;
  std::uint64_t steals = 0;
  unsigned workers = 0;
  // Stack compaction (options::compact_parked), for the whole process: stacks held
  // compacted now, and the bytes they hold instead of their pages.
  std::size_t compacted_fibers = 0;
  std::size_t compacted_bytes = 0;
};
stats runtime_stats() noexcept;
// global_stats(): fibers, stacks and timers alive in all runtimes of the process. 0 between
// runs: when rill::run, a pipeline's run() or a pipeline handle's wait() returns, the fibers
// that run started are no longer counted, nor their stacks (a pipeline's fibers stop
// counting just before they signal their end, not once they have switched out).
stats global_stats() noexcept;

// dump_fibers() describes every fiber of the calling thread's runtime, or of every runtime
// when called from a plain thread: id, name, state and what it waits on.
std::string dump_fibers();

// dump(os) writes every live fiber of every runtime, as Go's goroutine dump does: its id,
// its name (a pipeline's fibers are named after their stages), its state, what it waits on
// (channel, select, timer, I/O, mutex, ...) and, while park times are kept (RILL_DUMP_ON or
// a trace), for how long. From any fiber or thread. With RILL_DUMP_ON=SIGQUIT (or SIGUSR1,
// SIGUSR2) the process writes it to stderr on that signal and goes on (Go: SIGQUIT; a
// thread of rill's writes it, not the signal handler).
void dump(std::ostream& os);

// trace_session: while it lives, the runtime records a trace: per worker thread, the slices
// in which each fiber ran (named by fiber and stage), and per fiber its parks (with their
// reason) inside its lifetime span. Its end (the destructor, or stop()) writes the Chrome
// trace-event JSON that ui.perfetto.dev and chrome://tracing open. Memory is bounded: each
// worker keeps its latest events in a ring. One session at a time. RILL_TRACE=path traces
// the whole process and writes the file at exit.
class trace_session {
 public:
  trace_session() = default;
  explicit trace_session(std::string path);  // starts; throws std::logic_error if one runs
  trace_session(trace_session&& o) noexcept : path_(std::move(o.path_)), on_(o.on_) {
    o.on_ = false;
  }
  trace_session& operator=(trace_session&&) = delete;
  ~trace_session() { stop(); }
  // stop() ends the session and writes the file (once; false if it could not be written).
  bool stop() noexcept;

 private:
  std::string path_;
  bool on_ = false;
};
// trace_to(path): `auto t = rill::trace_to("run.json");` traces until t goes.
[[nodiscard]] inline trace_session trace_to(std::string path) {
  return trace_session(std::move(path));
}

}  // namespace rill
