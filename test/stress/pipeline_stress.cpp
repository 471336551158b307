// Stress tests of the pipeline DSL (ctest label "stress", sized by RILL_STRESS_SCALE):
// the cancellation matrix (T23), long daisy chains and the prime sieve (T26), backpressure
// over a long run (T25). Each prints FIGURE lines for CI to trend.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <optional>
#include <range/v3/view/iota.hpp>
#include <rill/pipeline.hpp>
#include <rill/rill.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "support/pipeline_support.hpp"
#include "support/run_with.hpp"

namespace {

using clock_type = std::chrono::steady_clock;

long ms_since(clock_type::time_point t0) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - t0).count());
}

enum class site { none, source, map, filter, sink };
enum class when { first, mid, last };
enum class stopper { exception, take, cancel };

const char* name(site s) {
  static const char* n[] = {"none", "source", "map", "filter", "sink"};
  return n[static_cast<int>(s)];
}
const char* name(when w) {
  static const char* n[] = {"first", "mid", "last"};
  return n[static_cast<int>(w)];
}
const char* name(stopper s) {
  static const char* n[] = {"exception", "take", "cancel"};
  return n[static_cast<int>(s)];
}

}  // namespace

TEST_CASE("pipeline stress: the cancellation matrix ends every run with one outcome, no leak",
          "[pipeline][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const int reps = test::stress_scale() * (test::sanitized ? 1 : 3);
  const int n = 500;
  long runs = 0, values = 0, exceptions = 0, cancels = 0;
  const auto t0 = clock_type::now();
  test::run_with(workers, [&] {
    for (int rep = 0; rep < reps; ++rep) {
      for (site where : {site::none, site::source, site::map, site::filter, site::sink}) {
        for (when at : {when::first, when::mid, when::last}) {
          for (stopper how : {stopper::exception, stopper::take, stopper::cancel}) {
            for (std::size_t cap : {std::size_t{0}, std::size_t{1}, std::size_t{16}}) {
              for (bool fusion : {true, false}) {
                INFO(name(where) << " at " << name(at) << ", stopped by " << name(how)
                                 << ", buffer " << cap << ", fusion " << fusion << ", rep " << rep);
                const int k = at == when::first ? 0 : at == when::mid ? n / 2 : n - 1;
                auto boom_at = [k, where](site here, int v) {
                  if (here == where && v == k) throw test::boom(v);
                };
                int next = 0;
                std::atomic<long> seen{0};
                auto p = rill::generate([&]() -> std::optional<test::tracked> {
                           if (next == n) return std::nullopt;
                           boom_at(site::source, next);
                           return test::tracked(next++);
                         }) |
                         rill::map(
                             [boom_at](test::tracked t) {
                               boom_at(site::map, t.v);
                               return t;
                             },
                             {.buffer = cap}) |
                         rill::filter(
                             [boom_at](const test::tracked& t) {
                               boom_at(site::filter, t.v);
                               return true;
                             },
                             {.buffer = cap, .fuse = false}) |
                         rill::par_map([](test::tracked t) { return t; },
                                       {.workers = 2, .buffer = cap}) |
                         rill::take(how == stopper::take ? static_cast<std::size_t>(k)
                                                         : std::size_t(n)) |
                         rill::for_each([&seen, boom_at](const test::tracked& t) {
                           boom_at(site::sink, t.v);
                           ++seen;
                           rill::this_fiber::yield();
                         });
                auto h = p.start({.fusion = fusion});
                if (how == stopper::cancel) {
                  // Cancel once the sink has seen k items, or soon anyway: after a failure
                  // the items in flight are dropped, so k may never be reached.
                  for (int y = 0; y < 5 * n && seen.load() < k; ++y) rill::this_fiber::yield();
                  h.cancel();
                }
                ++runs;
                try {
                  h.wait();
                  ++values;
                } catch (const test::boom& e) {
                  ++exceptions;
                  CHECK(where != site::none);
                  CHECK(e.at == k);
                } catch (const rill::pipeline_cancelled&) {
                  ++cancels;
                  CHECK(how == stopper::cancel);
                }
                CHECK(test::tracked::live.load() == 0);
              }
            }
          }
        }
      }
    }
  });
  std::printf(
      "FIGURE pipeline_cancel_matrix_runs_w%u=%ld\nFIGURE pipeline_cancel_matrix_ms_w%u=%ld\n"
      "FIGURE pipeline_cancel_matrix_values=%ld exceptions=%ld cancels=%ld\n",
      workers, runs, workers, ms_since(t0), values, exceptions, cancels);
  CHECK(values + exceptions + cancels == runs);
}

TEST_CASE("pipeline stress: concurrent throws in three stages surface exactly one of them",
          "[pipeline][stress]") {
  auto workers = GENERATE(2u, 4u);
  test::run_with(workers, [] {
    for (int i = 0; i < 300 * test::stress_scale(); ++i) {
      auto thrower = [](const char* stage) {
        return [stage](int v) {
          if (v == 100) throw std::runtime_error(stage);
          return v;
        };
      };
      auto p = rill::from(ranges::views::iota(0, 1000)) | rill::map(thrower("a"), {.buffer = 0}) |
               rill::stage_boundary |
               rill::par_map([](int v) { return v; }, {.workers = 2, .ordered = false}) |
               rill::map(thrower("b"), {.fuse = false}) | rill::stage_boundary |
               rill::map(thrower("c")) | rill::count();
      try {
        (void)p.run();
        FAIL("run() returned");
      } catch (const std::runtime_error& e) {
        const std::string w = e.what();
        CHECK((w == "a" || w == "b" || w == "c"));
      }
    }
  });
}

TEST_CASE("pipeline stress: a daisy chain of pipelines, fused and unfused", "[pipeline][stress]") {
  auto fusion = GENERATE(true, false);
  const int n = (test::sanitized ? 2000 : 10000) * (fusion ? test::stress_scale() : 1);
  const int items = 100 * test::stress_scale();
  const auto t0 = clock_type::now();
  test::run_with(2, [&] {
    std::vector<rill::chan<int>> links(static_cast<std::size_t>(n) + 1, rill::chan<int>(nullptr));
    for (auto& c : links) c = rill::chan<int>(1);
    std::vector<rill::pipeline_handle<void>> stages;
    stages.reserve(static_cast<std::size_t>(n));
    for (std::size_t i = 0; i < static_cast<std::size_t>(n); ++i) {
      stages.push_back(
          (rill::from(links[i]) | rill::map([](int v) { return v + 1; }) | rill::to(links[i + 1]))
              .start({.fusion = fusion}));
    }
    rill::go([first = links.front(), items]() mutable {
      for (int v = 0; v < items; ++v) first.send(v);
      first.close();
    });
    long sum = 0, count = 0;
    for (int v : links.back()) {
      sum += v;
      ++count;
    }
    CHECK(count == items);
    CHECK(sum == 1L * items * (items - 1) / 2 + 1L * items * n);
    for (auto& h : stages) h.wait();
  });
  std::printf("FIGURE pipeline_daisy_chain_%s_stages=%d items=%d ms=%ld\n",
              fusion ? "fused" : "unfused", n, items, ms_since(t0));
}

TEST_CASE("pipeline stress: the prime sieve, first primes exact", "[pipeline][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const int count = test::sanitized ? 300 : 1000 + 500 * (test::stress_scale() - 1);
  const auto t0 = clock_type::now();
  std::vector<int> primes;
  test::run_with(workers, [&] { primes = test::sieve(count); });
  const std::vector<int> expect = test::primes_by_trial_division(count);
  CHECK(primes == expect);
  std::printf("FIGURE pipeline_sieve_primes=%d workers=%u ms=%ld\n", count, workers, ms_since(t0));
}

TEST_CASE("pipeline stress: a slow sink keeps a fast source within the links' bound, long run",
          "[pipeline][stress]") {
  auto workers = GENERATE(1u, 2u);
  const long n = (test::sanitized ? 100'000L : 1'000'000L) * test::stress_scale();
  std::atomic<long> produced{0}, consumed{0}, peak{0};
  const auto t0 = clock_type::now();
  test::run_with(workers, [&] {
    long next = 0;
    auto p = rill::generate([&]() -> std::optional<long> {
               if (next == n) return std::nullopt;
               ++produced;
               return next++;
             }) |
             rill::map([](long v) { return v * 2; }, {.buffer = 32, .fuse = false}) |
             rill::par_map([](long v) { return v + 1; }, {.workers = 2, .buffer = 32}) |
             rill::for_each([&](long) {
               peak = std::max(peak.load(), produced.load() - consumed.load());
               if ((consumed.fetch_add(1) & 15) == 0) rill::this_fiber::yield();
             });
    p.run();
  });
  CHECK(consumed.load() == n);
  // generate's link (default_buffer), map's link into par_map (32), par_map's reorder
  // window (2 * workers + capacity batches of 8) and output link, one item per fiber.
  const long bound = static_cast<long>(rill::default_buffer) + 32 + (2 * 2 + 2) * 8 + 32 + 8;
  INFO("peak " << peak.load() << ", bound " << bound);
  CHECK(peak.load() <= bound);
  std::printf("FIGURE pipeline_backpressure_items=%ld peak_in_flight=%ld ms=%ld\n", n, peak.load(),
              ms_since(t0));
}
