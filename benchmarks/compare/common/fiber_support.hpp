// fiber_support.hpp: how the Boost.Fiber peers get their threads.
//
//   run_round_robin(f)   f() on a fresh thread with Boost.Fiber's default scheduler
//                        (round_robin): every fiber of f runs on that one thread.
//   ws_pool::get(n, s)   n threads running the multi-thread scheduler s; run(f) runs f() as the
//                        main fiber of one of them, and fibers it launches run on all n.
//   pool_scheds          the schedulers s a Boost.Fiber peer is measured with on several
//                        threads; the report takes its best. Their config prefixes:
//                          ws_         work_stealing, idle threads spin (Boost's default)
//                          wssuspend_  work_stealing, idle threads sleep (suspend = true)
//                          swsuspend_  shared_work (one queue for all), idle threads sleep
//
// Boost.Fiber's work_stealing keeps its schedulers in static arrays sized by the first
// thread count a process asks for (and numbers them with a counter that never resets), and
// shared_work's queue is static too, so a process can set up one pool: it lives as long as
// the process, and ws_pool::get() with another count or scheduler returns nullptr.
// scripts/bench runs one process per (workload, implementation, workers, scheduler).
//
// Between run() calls the pool's threads block on a std::condition_variable, so an idle pool
// does not spin (work_stealing's own idle loop spins while a run is in progress).
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <bit>
#include <boost/fiber/algo/shared_work.hpp>
#include <boost/fiber/algo/work_stealing.hpp>
#include <boost/fiber/all.hpp>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace bench {

// run_round_robin() runs f() on a new thread (round_robin scheduler) and returns its result.
template <class F>
std::uint64_t run_round_robin(F&& f) {
  std::uint64_t result = 0;
  std::thread t([&] { result = f(); });
  t.join();
  return result;
}

enum class pool_sched { ws, ws_suspend, sw_suspend };
inline constexpr pool_sched pool_scheds[] = {pool_sched::ws, pool_sched::ws_suspend,
                                             pool_sched::sw_suspend};
inline const char* sched_prefix(pool_sched s) {
  switch (s) {
    case pool_sched::ws:
      return "ws_";
    case pool_sched::ws_suspend:
      return "wssuspend_";
    case pool_sched::sw_suspend:
      return "swsuspend_";
  }
  return "?_";
}

class ws_pool {
 public:
  // get() returns the process's pool of n threads running s, starting it on first use;
  // nullptr if the process already has a pool of another size or scheduler.
  static ws_pool* get(unsigned n, pool_sched s = pool_sched::ws) {
    static std::mutex mu;
    static std::unique_ptr<ws_pool> pool;  // joined at exit
    std::lock_guard<std::mutex> lock(mu);
    if (!pool) pool.reset(new ws_pool(n, s));
    return pool->threads_.size() == n && pool->sched_ == s ? pool.get() : nullptr;
  }

  ws_pool(const ws_pool&) = delete;
  ws_pool& operator=(const ws_pool&) = delete;

  ~ws_pool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      shutdown_ = true;
      ++epoch_;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  // run() runs f() as the main fiber of pool thread 0 and blocks the calling (plain) thread
  // until it returns; fibers that f launches run on all the pool's threads.  f must join
  // every fiber it launches.
  std::uint64_t run(const std::function<std::uint64_t()>& f) {
    std::unique_lock<std::mutex> lock(mu_);
    job_ = &f;
    done_ = false;
    ++epoch_;
    wake_.notify_all();
    done_cv_.wait(lock, [&] { return done_; });
    return result_;
  }

 private:
  ws_pool(unsigned n, pool_sched s) : sched_(s) {
    for (unsigned k = 0; k < n; ++k) {
      threads_.emplace_back([this, k, n] { thread_main(k, n); });
    }
  }

  void thread_main(unsigned k, unsigned n) {
    // work_stealing's constructor waits for all n threads (a barrier).
    switch (sched_) {
      case pool_sched::ws:
        boost::fibers::use_scheduling_algorithm<boost::fibers::algo::work_stealing>(n);
        break;
      case pool_sched::ws_suspend:
        boost::fibers::use_scheduling_algorithm<boost::fibers::algo::work_stealing>(n, true);
        break;
      case pool_sched::sw_suspend:
        boost::fibers::use_scheduling_algorithm<boost::fibers::algo::shared_work>(true);
        break;
    }
    std::uint64_t seen = 0;
    for (;;) {
      const std::function<std::uint64_t()>* job = nullptr;
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return epoch_ != seen; });
        seen = epoch_;
        if (shutdown_) return;
        job = job_;
      }
      if (k == 0) {
        const std::uint64_t result = (*job)();
        {
          std::lock_guard<boost::fibers::mutex> lock(fiber_mu_);
          finished_epoch_ = seen;
        }
        fiber_done_.notify_all();
        {
          std::lock_guard<std::mutex> lock(mu_);
          result_ = result;
          done_ = true;
        }
        done_cv_.notify_all();
      } else {
        // Park this thread's main fiber, so its scheduler steals the run's fibers meanwhile.
        std::unique_lock<boost::fibers::mutex> lock(fiber_mu_);
        fiber_done_.wait(lock, [&] {
          return finished_epoch_ >= seen;
        });  // >=: a later run may have finished too
      }
    }
  }

  pool_sched sched_;
  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_;     // epoch_ changed
  std::condition_variable done_cv_;  // done_
  std::uint64_t epoch_ = 0;          // guarded by mu_; one per run() and one for shutdown
  bool shutdown_ = false;            // guarded by mu_
  const std::function<std::uint64_t()>* job_ = nullptr;  // guarded by mu_
  bool done_ = false;                                    // guarded by mu_
  std::uint64_t result_ = 0;                             // guarded by mu_
  boost::fibers::mutex fiber_mu_;
  boost::fibers::condition_variable fiber_done_;  // finished_epoch_ changed
  std::uint64_t finished_epoch_ = 0;              // guarded by fiber_mu_
};

// fiber_way: one way a Boost.Fiber peer runs on `threads` threads: round_robin on one
// thread ("rr_"), or a pool running one of pool_scheds. fiber_ways(threads) lists those to
// measure; runner_for() sets a fiber_runner up for one of them.
struct fiber_way {
  const char* prefix;  // the config's first word: "rr_", "ws_", "wssuspend_", "swsuspend_"
  unsigned threads;
  pool_sched sched;
};
inline std::vector<fiber_way> fiber_ways(unsigned threads) {
  if (threads <= 1) return {{"rr_", 1, pool_sched::ws}};
  std::vector<fiber_way> ways;
  for (pool_sched s : pool_scheds) ways.push_back({sched_prefix(s), threads, s});
  return ways;
}
// fiber_runner runs body() on the fiber threads of a way: round_robin on a helper thread
// (pool nullptr) or the process's pool.
struct fiber_runner {
  ws_pool* pool = nullptr;
  template <class Body>
  std::uint64_t operator()(Body body) const {
    return pool == nullptr ? run_round_robin(body) : pool->run(body);
  }
};
// runner_for(s, way, r): r set up for way; false, with an error on s, when the process has
// set up another pool (scripts/bench runs each way in a process of its own).
inline bool runner_for(benchmark::State& s, const fiber_way& way, fiber_runner& r) {
  if (way.threads <= 1) return true;
  r.pool = ws_pool::get(way.threads, way.sched);
  if (r.pool == nullptr) s.SkipWithError("Boost.Fiber: this process set up another pool already");
  return r.pool != nullptr;
}

// Channels of capacity 0 are Boost.Fiber's unbuffered_channel; others are buffered_channel,
// whose capacity must be a power of two and which holds at most capacity - 1 items.
// with_channel<T>(cap, f) calls f(channel&) with a fresh channel of that capacity.
template <class T, class F>
std::uint64_t with_channel(std::size_t cap, F&& f) {
  if (cap == 0) {
    boost::fibers::unbuffered_channel<T> c;
    return f(c);
  }
  boost::fibers::buffered_channel<T> c(cap);
  return f(c);
}

// buffered_capacity(slots): the capacity of a buffered_channel that holds at least `slots`
// messages (a hand-batched link of `slots` blocks): the power of two above slots, at least 2,
// which holds its capacity - 1; where slots + 1 is no power of two the channel is rounded up
// and holds more than slots.
inline std::size_t buffered_capacity(std::size_t slots) {
  return std::bit_ceil(std::max<std::size_t>(slots + 1, 2));
}

}  // namespace bench
