// rill::blocking(): run a blocking call on a separate thread pool while the calling fiber is
// parked (Go's syscall hand-off, made explicit).
//
// Go hands its P to another thread when a goroutine enters a blocking syscall. A C++
// runtime cannot see a syscall coming, so the user marks the call: blocking(f) parks the
// fiber and a pool thread runs f, then makes the fiber runnable again. The worker runs
// other fibers meanwhile.
//
// The pool is process-wide and grows on demand: before parking, the caller makes sure a
// thread exists for every call in flight (up to max_threads; beyond that calls queue), so
// a job never waits behind a busy thread while fewer than max_threads run. Threads that
// stay idle for idle_exit leave. The job is queued only after the fiber's context is saved
// (an after-switch action), so the pool thread can ready the fiber as soon as f returns.
// Deadlock detection counts calls in flight (runtime::blocking_calls): a fiber parked here
// is not asleep forever. A rill::run called from a fiber goes the same way
// (runtime::nested_runs): the new runtime runs on a pool thread and the caller's worker
// stays free for the fibers the nested run may wait on.
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "rill/detail/io_core.hpp"
#include "sched/fifo.hpp"
#include "sched/process_wide.hpp"
#include "sched/runtime.hpp"
#include "sync/wait.hpp"

namespace rill::detail {
namespace {

struct job {
  void (*fn)(void*) noexcept;
  void* arg;
  fiber* f;
  job* next;
};

class blocking_pool {
 public:
  // reserve() counts a call in flight and starts a thread for it if needed. Throws
  // std::system_error only when no thread at all can run it.
  void reserve() {
    std::unique_lock lk(mu_);
    ++outstanding_;
    if (threads_ >= outstanding_ || threads_ >= max_threads) return;
    try {
      std::thread([this] { thread_main(); }).detach();
      ++threads_;
    } catch (...) {
      if (threads_ > 0) return;  // the call queues for the threads there are
      --outstanding_;
      throw;
    }
  }

  void submit(job* j) noexcept {
    {
      std::lock_guard lk(mu_);
      jobs_.push_back(j);
    }
    cv_.notify_one();
  }

 private:
  static constexpr unsigned max_threads = 256;
  static constexpr std::chrono::seconds idle_exit{5};

  void thread_main() {
    std::unique_lock lk(mu_);
    for (;;) {
      while (jobs_.empty()) {
        if (cv_.wait_for(lk, idle_exit) == std::cv_status::timeout && jobs_.empty() &&
            threads_ > outstanding_) {
          --threads_;
          return;
        }
      }
      job* j = jobs_.pop_front();
      lk.unlock();
      fiber* f = j->f;  // j lives on f's stack: not touched once f is readied
      j->fn(j->arg);
      lk.lock();
      --outstanding_;
      lk.unlock();
      f->rt->ready(f, ready_slot::queue);
      lk.lock();
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  fifo<job> jobs_;            // guarded by mu_
  unsigned threads_ = 0;      // guarded by mu_
  unsigned outstanding_ = 0;  // guarded by mu_: reserved calls not yet finished
};

blocking_pool& pool() { return process_wide<blocking_pool>(); }

void after_submit(machine_context*, void* arg) noexcept { pool().submit(static_cast<job*>(arg)); }

}  // namespace

namespace {

// hand_off(): parks the calling fiber while a pool thread runs fn(arg), counting the call in
// the runtime's `in_flight` counter meanwhile (for deadlock detection).
void hand_off(fiber* self, void (*fn)(void*) noexcept, void* arg,
              std::atomic<std::int64_t> runtime::*in_flight) {
  flush_before_park();
  pool().reserve();
  runtime* rt = self->rt;
  (rt->*in_flight).fetch_add(1, std::memory_order_seq_cst);
  struct done {
    runtime* rt;
    std::atomic<std::int64_t> runtime::*in_flight;
    ~done() { (rt->*in_flight).fetch_sub(1, std::memory_order_seq_cst); }
  } guard{rt, in_flight};
  job j{fn, arg, self, nullptr};
  park_fiber(self, wait_reason::blocking_call, nullptr, after_submit, &j, nullptr, nullptr);
}

}  // namespace

void blocking_call(void (*fn)(void*) noexcept, void* arg) {
  fiber* self = current_fiber();
  if (!self) {
    fn(arg);
    return;
  }
  hand_off(self, fn, arg, &runtime::blocking_calls);
}

void nested_run_call(void (*fn)(void*) noexcept, void* arg) {
  hand_off(current_fiber(), fn, arg, &runtime::nested_runs);
}

}  // namespace rill::detail
