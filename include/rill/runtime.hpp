// rill/runtime.hpp: the M:N fiber runtime (Go's scheduler, for C++).
//
// rill::run(main) starts worker threads (GOMAXPROCS-like), runs `main` as the first fiber
// and returns its result once main and every fiber spawned with rill::go have finished.
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

#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
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
  // Bytes of address space reserved per fiber stack (committed lazily, page by page).
  std::size_t stack_size = 128 * 1024;
  // When every fiber is parked with no timer, I/O wait or outside thread able to wake
  // one, run() throws deadlock_error instead of hanging. Outside parties that count: a
  // plain thread waiting in rill (a channel, a lock, a socket), and another runtime of the
  // process that could still run a fiber (a worker busy, or a timer, I/O wait or blocking
  // call pending): while one exists the runtime waits and checks again. A plain thread
  // that is not inside rill is not seen: one that will send later needs
  // detect_deadlock = false.
  bool detect_deadlock = true;
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
// returns and every fiber it spawned has finished. The calling thread becomes worker 0.
// An exception that escapes main is rethrown here. Throws deadlock_error on a deadlock,
// std::system_error when worker threads cannot be started.
template <class F>
auto run(F&& main, options opts = {}) {
  using R = std::invoke_result_t<F&>;
  detail::main_slot<R> slot;
  struct ctx_t {
    F& f;
    detail::main_slot<R>& slot;
  } ctx{main, slot};
  detail::run_main(
      {opts.workers, opts.stack_size, opts.detect_deadlock, false},
      [](void* p) {
        auto* c = static_cast<ctx_t*>(p);
        c->slot.call(c->f);
      },
      &ctx);
  return slot.take();
}

// go() spawns `f` (any callable taking no arguments) as a new fiber of the current runtime.
// It goes on the calling worker's run queue. An exception escaping f terminates the
// program with a message naming the fiber (as std::thread does). Throws std::logic_error
// when called outside a runtime, std::bad_alloc when no stack can be had.
template <class F>
void go(F&& f) {
  using Fn = std::decay_t<F>;
  static_assert(std::is_invocable_v<Fn&>, "rill::go: f must be callable with no arguments");
  detail::fiber* h = nullptr;
  void* mem = detail::fiber_create(sizeof(Fn), alignof(Fn), &detail::invoke_closure<Fn>, h);
  try {
    ::new (mem) Fn(std::forward<F>(f));
  } catch (...) {
    detail::fiber_discard(h);
    throw;
  }
  detail::fiber_start(h);
}

namespace detail {
// spawn_in() spawns f as a fiber of rt, from any thread.
template <class F>
void spawn_in(runtime* rt, F&& f) {
  using Fn = std::decay_t<F>;
  detail::fiber* h = nullptr;
  void* mem = detail::fiber_create_in(rt, sizeof(Fn), alignof(Fn), &detail::invoke_closure<Fn>, h);
  try {
    ::new (mem) Fn(std::forward<F>(f));
  } catch (...) {
    detail::fiber_discard(h);
    throw;
  }
  detail::fiber_start(h);
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

}  // namespace rill
