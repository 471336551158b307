// Tests of the watchdog (options::watchdog): a fiber that holds its worker without a
// scheduling point is reported once, by name; one that yields, or that the setting turns
// off, is not. No test sleeps: a fiber busy-waits until the watchdog has reported, or for
// long enough, and enough of its looks (watchdog_passes), that a report would have come.
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <rill/pipeline.hpp>
#include <rill/rill.hpp>
#include <string>
#include <thread>
#include <vector>

#include "sched/runtime.hpp"
#include "support/pipeline_support.hpp"
#include "support/run_with.hpp"

using namespace std::chrono_literals;

namespace {

namespace rd = rill::detail;

// spin_until_reported(): burns the CPU without a scheduling point until the watchdog has
// written more than `before` reports; false if that takes longer than a generous limit.
bool spin_until_reported(std::uint64_t before) {
  const auto limit = std::chrono::steady_clock::now() + 30s;
  while (rd::watchdog_reports() <= before) {
    if (std::chrono::steady_clock::now() > limit) return false;
  }
  return true;
}

// The threshold of the runtimes these tests watch.
constexpr auto threshold = 20ms;

// spin_past(): burns the CPU without a scheduling point for three thresholds, while the
// watchdog looks at least three more times (it looks every half slice while a worker is
// awake): enough for a report to have come, had one been due.
void spin_past() {
  const auto until = std::chrono::steady_clock::now() + 3 * threshold;
  const std::uint64_t passes = rd::watchdog_passes() + 3;
  while (std::chrono::steady_clock::now() < until || rd::watchdog_passes() < passes) {
  }
}

// stderr_capture: while it lives, what the process writes to stderr goes to a file.
class stderr_capture {
 public:
  stderr_capture() : file_(std::tmpfile()) {
    std::fflush(stderr);
    saved_ = ::dup(2);
    ::dup2(::fileno(file_), 2);
  }
  ~stderr_capture() {
    restore();
    std::fclose(file_);
  }
  std::string text() {
    restore();
    std::string out;
    std::rewind(file_);
    char buf[1024];
    for (std::size_t n; (n = std::fread(buf, 1, sizeof buf, file_)) > 0;) out.append(buf, n);
    return out;
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::FILE* file_;
  int saved_ = -1;
};

rill::options watched(unsigned workers, std::chrono::milliseconds ms) {
  rill::options o;
  o.workers = workers;
  o.watchdog = ms;
  return o;
}

// in_fiber(): runs body() in a fiber named `name` of a runtime of `workers` workers watched
// with `threshold`, and returns once it has.
template <class F>
void in_fiber(unsigned workers, const char* name, F body) {
  rill::run(
      [&] {
        rill::wait_group wg;
        wg.add(1);
        rill::go([&] {
          rill::this_fiber::name(name);
          body();
          wg.done();
        });
        wg.wait();
      },
      watched(workers, threshold));
}

}  // namespace

TEST_CASE("watchdog: a fiber that runs without a scheduling point is reported once, on stderr",
          "[watchdog]") {
  const unsigned workers = GENERATE(1u, 2u);
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  std::string report;
  std::string err;
  {
    stderr_capture cap;
    in_fiber(workers, "spinner", [&] {
      CHECK(spin_until_reported(before));
      spin_past();  // still stalled: no second report
    });
    err = cap.text();
  }
  report = rd::watchdog_last_report();
  CHECK(rd::watchdog_reports() == before + 1);
  INFO(report);
  CHECK(report.find("(spinner)") != std::string::npos);
  CHECK(report.find(" ms ") != std::string::npos);
  CHECK(report.find("rill::blocking") != std::string::npos);
  CHECK(report.find("this_fiber::sleep_for") != std::string::npos);
  CHECK(err.find(report) != std::string::npos);
  test::check_no_leaks();
}

TEST_CASE("watchdog: a fiber that stalls as soon as a timer woke its idle runtime is reported",
          "[watchdog]") {
  // Every worker is idle during the sleep, so the watchdog sleeps too; the worker that wakes
  // for the timer does not wake it (it wakes by itself for that timer): it must still look.
  const unsigned workers = GENERATE(1u, 2u);
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  {
    stderr_capture cap;
    in_fiber(workers, "sleeper", [&] {
      rill::this_fiber::sleep_for(5ms);
      CHECK(spin_until_reported(before));
    });
  }
  CHECK(rd::watchdog_reports() == before + 1);
  CHECK(rd::watchdog_last_report().find("(sleeper)") != std::string::npos);
  test::check_no_leaks();
}

TEST_CASE("watchdog: a fiber that yields is not reported, nor one on a runtime with watchdog 0",
          "[watchdog]") {
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  std::atomic<bool> unwatched_done{false};
  // A runtime with the watchdog off, whose fiber spins while the watchdog looks at the
  // other runtime (whose fiber yields, so that it stays awake and is looked at).
  std::thread unwatched([&] {
    rill::run([] { spin_past(); }, watched(1, 0ms));
    unwatched_done.store(true);
  });
  rill::run(
      [&] {
        while (!unwatched_done.load()) rill::this_fiber::yield();
      },
      watched(1, threshold));
  unwatched.join();
  CHECK(rd::watchdog_reports() == before);
  test::check_no_leaks();
}

TEST_CASE("watchdog: each stalled fiber is reported, each once", "[watchdog]") {
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  rill::run(
      [&] {
        for (int k = 1; k <= 2; ++k) {
          rill::wait_group wg;
          wg.add(1);
          rill::go([&] {
            CHECK(spin_until_reported(before + k - 1));
            wg.done();
          });
          wg.wait();
        }
      },
      watched(2, threshold));
  CHECK(rd::watchdog_reports() == before + 2);
}

TEST_CASE("watchdog: a plain-thread pipeline's report names the stage", "[watchdog][pipeline]") {
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  rill::run_options o;
  o.watchdog = threshold;
  auto p = rill::from(test::iota_vec(4)) |
           rill::par_map(
               [&](int v) {
                 spin_until_reported(before);
                 return v;
               },
               {.workers = 1, .name = "stalling"}) |
           rill::collect();
  CHECK(p.run(o).size() == 4);
  CHECK(rd::watchdog_reports() == before + 1);
  CHECK(rd::watchdog_last_report().find("(stalling)") != std::string::npos);
}

TEST_CASE("watchdog: a stage fused into the caller's fiber is reported under the stage's name",
          "[watchdog][pipeline]") {
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  std::vector<int> got;
  rill::run(
      [&] {
        auto p = rill::from(test::iota_vec(3)) |
                 rill::map(
                     [&](int v) {
                       spin_until_reported(before);
                       return v;
                     },
                     {.fuse = true, .name = "stall"}) |
                 rill::collect();
        got = p.run();
        // The caller's fiber has its own name back.
        CHECK(rill::dump_fibers().find("(main)") != std::string::npos);
      },
      watched(1, threshold));
  CHECK(got.size() == 3);
  CHECK(rd::watchdog_reports() == before + 1);
  CHECK(rd::watchdog_last_report().find("stall|collect)") != std::string::npos);
}

TEST_CASE("watchdog: run_options::watchdog = 0 silences a run's fibers", "[watchdog][pipeline]") {
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  rill::run_options o;
  o.watchdog = 0ms;
  auto p = rill::from(test::iota_vec(2)) | rill::map([](int v) {
             spin_past();
             return v;
           }) |
           rill::collect();
  rill::run([&] { CHECK(p.run(o).size() == 2); }, watched(2, threshold));
  CHECK(rd::watchdog_reports() == before);
}

TEST_CASE("watchdog: a fiber that runs its slice without a scheduling point is asked to yield",
          "[watchdog]") {
  // Whatever the report threshold (0: no reports), the watchdog sets the fiber's slice
  // flag once it has run fiber_slice_ns without a scheduling point; a pipeline's fused loop
  // reads it.
  test::watchdog dog;
  const auto reports_after = GENERATE(0ms, threshold);
  rill::run(
      [] {
        std::atomic<bool>* flag = rd::fiber_slice_flag();
        flag->store(false);
        const auto t0 = std::chrono::steady_clock::now();
        const auto limit = t0 + 30s;
        while (!flag->load() && std::chrono::steady_clock::now() < limit) {
        }
        CHECK(flag->load());
        // Measured from the watchdog's first look at this run of the fiber, which may
        // come a little before t0.
        CHECK(std::chrono::steady_clock::now() - t0 >=
              std::chrono::nanoseconds(rd::fiber_slice_ns / 2));
        flag->store(false);
      },
      watched(1, reports_after));
  // Outside a fiber the flag is one that is never set.
  CHECK_FALSE(rd::fiber_slice_flag()->load());
}
