// Tests of the watchdog (options::watchdog): a fiber that holds its worker without a
// scheduling point is reported once, by name; one that yields, or that the setting turns
// off, is not. No test sleeps: a fiber busy-waits until the watchdog has reported, or has
// taken enough looks (watchdog_passes) that a report would have come.
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

// spin_for_passes(): burns the CPU without a scheduling point while the watchdog looks `n`
// more times (enough for a report to have come, had one been due).
void spin_for_passes(std::uint64_t n) {
  const std::uint64_t until = rd::watchdog_passes() + n;
  while (rd::watchdog_passes() < until) {
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

rill::options watched(unsigned workers, std::chrono::milliseconds threshold) {
  rill::options o;
  o.workers = workers;
  o.watchdog = threshold;
  return o;
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
    rill::run(
        [&] {
          rill::wait_group wg;
          wg.add(1);
          rill::go([&] {
            rill::this_fiber::name("spinner");
            CHECK(spin_until_reported(before));
            spin_for_passes(4);  // still stalled: no second report
            wg.done();
          });
          wg.wait();
        },
        watched(workers, 20ms));
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

TEST_CASE("watchdog: a fiber that yields is not reported, nor one on a runtime with watchdog 0",
          "[watchdog]") {
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  std::atomic<bool> unwatched_done{false};
  // A runtime with the watchdog off, whose fiber spins while the watchdog looks at the
  // other runtime (whose fiber yields, so that it stays awake and is looked at).
  std::thread unwatched([&] {
    rill::run([] { spin_for_passes(6); }, watched(1, 0ms));
    unwatched_done.store(true);
  });
  rill::run(
      [&] {
        while (!unwatched_done.load()) rill::this_fiber::yield();
      },
      watched(1, 20ms));
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
      watched(2, 20ms));
  CHECK(rd::watchdog_reports() == before + 2);
}

TEST_CASE("watchdog: a plain-thread pipeline's report names the stage", "[watchdog][pipeline]") {
  test::watchdog dog;
  const std::uint64_t before = rd::watchdog_reports();
  rill::run_options o;
  o.watchdog = 20ms;
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
      watched(1, 20ms));
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
             spin_for_passes(6);
             return v;
           }) |
           rill::collect();
  rill::run([&] { CHECK(p.run(o).size() == 2); }, watched(2, 20ms));
  CHECK(rd::watchdog_reports() == before);
}
