// What the public templates need from the compiled core. Not API.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>

#include "rill/detail/thread_safety.hpp"

namespace rill {
enum class wait_reason : std::uint8_t;
}

namespace rill::detail {

struct fiber;
class runtime;

// fiber_create() reserves a stack for a new fiber of the current runtime and returns
// storage of `size` bytes aligned to `align` (at the top of that stack) for its closure.
// `entry(closure)` runs the closure and destroys it. `stack_size`: the stack's size at least
// (0, or no more than the runtime's stack size: the runtime's). Throws std::logic_error
// outside a runtime, std::bad_alloc when no stack can be had.
void* fiber_create(std::size_t size, std::size_t align, void (*entry)(void*), fiber*& out,
                   std::size_t stack_size = 0);
// fiber_create_in(): like fiber_create, for a given runtime, from any thread.
void* fiber_create_in(runtime* rt, std::size_t size, std::size_t align, void (*entry)(void*),
                      fiber*& out, std::size_t stack_size = 0);
// current_runtime(): the calling thread's runtime, nullptr on a plain thread.
runtime* current_runtime() noexcept;
// default_runtime(): the process-wide runtime that pipelines run on when started from a
// plain thread (RILL_WORKERS workers); started on first use.
runtime* default_runtime();
// fiber_start() makes a created fiber runnable on the calling worker (or, from outside its
// runtime, on that runtime's global queue). `spread`: the fiber is meant to run beside the
// caller (a par_map worker): it goes on the global queue, and an idle or watching worker is
// woken at once to take it, instead of its waiting to be stolen (steal_age_ns).
void fiber_start(fiber* f, bool spread = false) noexcept;
// fiber_discard() releases a created fiber that was never started.
void fiber_discard(fiber* f) noexcept;
// fiber_retire() takes the calling fiber out of the live counts (stats: live_fibers,
// live_stacks) before it ends, so that whoever its last signal wakes sees it gone: call it
// just before that signal (a wait_group's done()), with nothing after it that parks. The
// fiber still finishes as usual. No effect on a plain thread.
void fiber_retire() noexcept;
// fiber_set_name() names the calling fiber for dumps and error messages (truncated to
// fiber_name_max - 1 bytes); fiber_get_name() copies its name into out[0..n) ("" on a
// plain thread).
inline constexpr std::size_t fiber_name_max = 40;
void fiber_set_name(const char* name) noexcept;
void fiber_get_name(char* out, std::size_t n) noexcept;
// fiber_set_watchdog() sets the watchdog's threshold for the calling fiber in ms (-1: its
// runtime's; 0: never reported) and returns the previous setting (-1 on a plain thread).
std::int32_t fiber_set_watchdog(std::int32_t ms) noexcept;
// fiber_slice_flag(): the calling fiber's "slice over" flag, which the watchdog sets once the
// fiber has run fiber_slice_ns without a scheduling point (a flag that stays false on a
// plain thread). Code that runs long loops (a pipeline's fused chain) reads it now and
// then, yields when it is set, and clears it. The pointer stays valid for the fiber's life.
inline constexpr std::int64_t fiber_slice_ns = 2'000'000;
std::atomic<bool>* fiber_slice_flag() noexcept;
// current_stack_size(): the calling fiber's stack size in bytes (0 on a plain thread).
std::size_t current_stack_size() noexcept;

// Plain-thread runs on the default runtime (pipeline run() and start() from a thread that is
// not a worker). The runtime detects deadlocks while at least one run in flight watches
// for them and every run in flight does (a started pipeline does not: its thread may feed
// it from outside rill). default_run_begin() before the run's first fiber is spawned,
// default_run_end() once it has ended.
void default_run_begin(bool watched) noexcept;
void default_run_end(bool watched) noexcept;
// fiber_take_abort(): if a deadlock aborted the calling fiber, its runtime's
// deadlock_error, and the fiber waits normally again from here on (to join the fibers it
// started, which were aborted too and use its frames until they end); else nullptr.
std::exception_ptr fiber_take_abort() noexcept;
// run_wait: a plain thread that waits for a run to end cannot wake a fiber; while one of
// these lives, the thread's waits in rill do not hold back deadlock detection. No effect
// in a fiber (its waits are not counted as a plain thread's).
class run_wait {
 public:
  run_wait() noexcept;
  ~run_wait();
  run_wait(const run_wait&) = delete;
  run_wait& operator=(const run_wait&) = delete;

 private:
  bool plain_;
};

// run_main() runs `main(arg)` as the first fiber of a new runtime on the calling thread
// and `workers - 1` more threads; returns when every fiber has finished. Rethrows an
// exception that escaped main; throws deadlock_error on a deadlock.
struct run_config {
  unsigned workers;
  std::size_t stack_size;
  bool detect_deadlock;
  bool persistent = false;              // keeps running with no fiber alive (the default runtime)
  std::uint32_t watchdog_ms = 100;      // see options::watchdog (0: off)
  std::uint32_t compact_parked_ms = 0;  // see options::compact_parked (0: RILL_COMPACT_PARKED_MS)
};
void run_main(const run_config& cfg, void (*main)(void*), void* arg);

// current_fiber() is the calling fiber, or nullptr on a thread that is not running one.
fiber* current_fiber() noexcept;

// Park hooks: work that a fiber must do before it parks, whatever it parks on (a channel,
// a select, a lock, a wait_group, a timer, I/O, a blocking call). The pipeline's link
// writers hang here, so that no item waits in a partial batch while the fiber that holds
// it sleeps. A hook's owner registers it once from the fiber that runs it and arms the
// list (a plain store) whenever it holds work; a fiber about to park runs every hook of
// an armed list, with no lock held, and disarms it. A hook must not park: it may only try.
struct park_hook {
  void (*run)(park_hook*) noexcept = nullptr;
  park_hook* next = nullptr;  // owner fiber only
};
struct park_hooks {
  park_hook* head = nullptr;  // owner fiber only
  bool armed = false;         // owner fiber only
};
// current_park_hooks(): the calling fiber's list; nullptr on a plain thread.
park_hooks* current_park_hooks() noexcept;
// add_park_hook()/remove_park_hook(): from the fiber that owns `hooks`.
inline void add_park_hook(park_hooks& hooks, park_hook& h) noexcept {
  h.next = hooks.head;
  hooks.head = &h;
}
inline void remove_park_hook(park_hooks& hooks, park_hook& h) noexcept {
  for (park_hook** p = &hooks.head; *p; p = &(*p)->next) {
    if (*p == &h) {
      *p = h.next;
      return;
    }
  }
}
// run_park_hooks() disarms the list and runs each hook once.
inline void run_park_hooks(park_hooks& hooks) noexcept {
  hooks.armed = false;
  for (park_hook* h = hooks.head; h; h = h->next) h->run(h);
}

// g_chaos: some runtime runs with RILL_SCHED_SEED set (schedule perturbation); inline fast
// paths in headers step aside for the compiled ones, which have the perturbation points.
extern std::atomic<bool> g_chaos;

// A spinlock for short critical sections in the core, which is also a sequence lock: its
// sequence is odd while a critical section is under way and grows by 2 with each, so a
// reader can take a consistent lock-free snapshot of atomic fields it guards:
//   v = read_begin(); ...relaxed loads...; if (read_valid(v)) the loads saw one state.
//
// The lock word and the sequence are two words. Only the holder writes the sequence, with
// plain stores; the lock word is taken with an exchange and released with a plain store.
// Kept in one word (odd while held, taken with a compare-exchange of the value just read,
// released by storing that value + 1), each lock and unlock cost about twice as much (a
// compare-exchange whose operands come from a load of the word that the last unlock
// stored waits on that store).
class RILL_CAPABILITY("spinlock") spinlock {
 public:
  void lock() noexcept RILL_ACQUIRE() {
    while (held_.exchange(1, std::memory_order_acquire) != 0) {
      while (held_.load(std::memory_order_relaxed) != 0) __builtin_ia32_pause();
    }
    begin_write();
  }
  bool try_lock() noexcept RILL_TRY_ACQUIRE(true) {
    if (held_.load(std::memory_order_relaxed) != 0 ||
        held_.exchange(1, std::memory_order_acquire) != 0) {
      return false;
    }
    begin_write();
    return true;
  }
  void unlock() noexcept RILL_RELEASE() {
    seq_.store(seq_.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    held_.store(0, std::memory_order_release);
  }

  // read_begin(): the sequence to validate a lock-free read with; odd (never valid) while
  // a critical section is under way.
  std::uint32_t read_begin() const noexcept { return seq_.load(std::memory_order_acquire); }
  // read_valid(v): true if no critical section began or ended since read_begin() gave v,
  // and none was under way then.
  bool read_valid(std::uint32_t v) const noexcept {
    std::atomic_thread_fence(std::memory_order_acquire);
    return !(v & 1) && seq_.load(std::memory_order_relaxed) == v;
  }

 private:
  // The sequence turns odd before the critical section writes anything (the fence orders
  // that store before the section's stores; a reader that sees one of them sees it too).
  void begin_write() noexcept {
    seq_.store(seq_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
  }

  std::atomic<std::uint32_t> held_{0};
  std::atomic<std::uint32_t> seq_{0};
};

// waiter: one fiber or one plain thread parked on a wait queue (Go's sudog). Lives on the
// parked party's stack for the duration of the wait.
struct waiter {
  waiter* next = nullptr;
  waiter* prev = nullptr;
  fiber* who = nullptr;                 // nullptr: a plain thread, woken through `futex`
  std::atomic<std::uint32_t> futex{0};  // thread waiters: 1 once woken
  void* slot = nullptr;                 // per-use payload (e.g. the value being handed over)
  void* select = nullptr;               // per-use: the select this waiter belongs to
  int index = 0;                        // per-use: the select case this waiter stands for
  bool success = false;                 // per-use: set by the waker before waking
  bool linked = false;                  // on a wait_list (guarded by that list's lock)
};

// wait_list: an intrusive FIFO of waiters. Not synchronized: guarded by its owner's lock.
// `head` is atomic (relaxed) so that a channel's lock-free readiness probe may read it.
struct wait_list {
  std::atomic<waiter*> head{nullptr};
  waiter* tail = nullptr;
  wait_list() = default;
  // Moving takes every waiter, leaving `o` empty.
  wait_list(wait_list&& o) noexcept : head(o.head.load(std::memory_order_relaxed)), tail(o.tail) {
    o.head.store(nullptr, std::memory_order_relaxed);
    o.tail = nullptr;
  }
  wait_list& operator=(wait_list&& o) noexcept {
    head.store(o.head.load(std::memory_order_relaxed), std::memory_order_relaxed);
    o.head.store(nullptr, std::memory_order_relaxed);
    tail = o.tail;
    o.tail = nullptr;
    return *this;
  }
  bool empty() const noexcept { return head.load(std::memory_order_relaxed) == nullptr; }
  void push_back(waiter* w) noexcept {
    w->next = nullptr;
    w->linked = true;
    w->prev = tail;
    if (tail) {
      tail->next = w;
    } else {
      head.store(w, std::memory_order_relaxed);
    }
    tail = w;
  }
  void push_front(waiter* w) noexcept {
    waiter* h = head.load(std::memory_order_relaxed);
    w->prev = nullptr;
    w->linked = true;
    w->next = h;
    if (h) {
      h->prev = w;
    } else {
      tail = w;
    }
    head.store(w, std::memory_order_relaxed);
  }
  waiter* pop_front() noexcept {
    waiter* w = head.load(std::memory_order_relaxed);
    if (w) remove(w);
    return w;
  }
  void remove(waiter* w) noexcept {  // w must be on this list
    if (w->prev) {
      w->prev->next = w->next;
    } else {
      head.store(w->next, std::memory_order_relaxed);
    }
    if (w->next) {
      w->next->prev = w->prev;
    } else {
      tail = w->prev;
    }
    w->linked = false;  // its next and prev are stale now: only `linked` is read off a list
  }
};

// The clock used by timers, in nanoseconds (CLOCK_MONOTONIC).
std::int64_t now_ns() noexcept;

}  // namespace rill::detail
