// Test support: run a body on a fresh runtime with a given worker count, under a watchdog,
// and fail on leaked fibers, stacks or timers.
#pragma once

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <rill/rill.hpp>
#include <thread>
#include <utility>

namespace test {

// sched_seed(): the schedule-perturbation seed of this process (RILL_SCHED_SEED), or
// nullptr. print_seed() writes "RILL_SCHED_SEED=<seed>" to stderr so that a failing
// interleaving can be replayed (the same seed gives the same perturbation decisions).
inline const char* sched_seed() noexcept { return std::getenv("RILL_SCHED_SEED"); }
inline void print_seed() noexcept {
  const char* s = sched_seed();
  const bool on = s && std::strtoull(s, nullptr, 10) != 0;
  std::fprintf(
      stderr, "RILL_SCHED_SEED=%s%s\n", on ? s : "0",
      on ? " (rerun with it to replay this schedule perturbation)" : " (perturbation off)");
  std::fflush(stderr);
}

// watchdog: if the scope lasts longer than `limit`, prints the fiber dump of every runtime
// and aborts the process (a hang becomes a failure with a diagnosis, not a ctest timeout).
// `what` names what is running (default "test"); it must outlive the watchdog.
class watchdog {
 public:
  explicit watchdog(std::chrono::seconds limit = limit_from_env(), const char* what = "test") {
    thread_ = std::thread([this, limit, what] {
      std::unique_lock lk(mu_);
      if (!cv_.wait_for(lk, limit, [this] { return done_; })) {
        fired_.store(true);
        lk.unlock();
        std::fprintf(stderr, "watchdog: %s still running after %llds; fibers:\n%s", what,
                     static_cast<long long>(limit.count()), rill::dump_fibers().c_str());
        print_seed();
        std::abort();
      }
    });
  }
  ~watchdog() {
    {
      std::lock_guard lk(mu_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // fired(): the limit passed; this watchdog's thread is printing the dump and aborting.
  bool fired() const noexcept { return fired_.load(); }
  static std::chrono::seconds limit_from_env() {
    const char* s = std::getenv("RILL_WATCHDOG_S");
    return std::chrono::seconds(s ? std::atoi(s) : 60);
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::atomic<bool> fired_{false};
  std::thread thread_;
};

inline void check_no_leaks() {
  const rill::stats s = rill::global_stats();
  CHECK(s.live_fibers == 0);
  CHECK(s.live_stacks == 0);
  CHECK(s.pending_timers == 0);
}

// run_with() runs f as the main fiber of a runtime with `workers` workers, returns its
// result, and checks that the runtime left nothing behind.
template <class F>
auto run_with(unsigned workers, F&& f) {
  watchdog dog;
  rill::options o;
  o.workers = workers;
  struct leak_check {
    ~leak_check() { check_no_leaks(); }
  } lc;
  return rill::run(std::forward<F>(f), o);
}

// stress_scale(): RILL_STRESS_SCALE (default 1), to size stress tests.
inline int stress_scale() {
  const char* s = std::getenv("RILL_STRESS_SCALE");
  int v = s ? std::atoi(s) : 1;
  return v > 0 ? v : 1;
}

}  // namespace test
