// Micro benchmarks of the runtime (Google Benchmark), each on a fresh runtime with 1 and 2
// workers; the workloads match benchmarks/go/micro/main.go so the figures compare with Go's:
//
//   runtime/spawn_join        ns per fiber: spawn a batch of 1000 fibers, join them with a
//                             wait_group (stacks are reused: the steady state)
//   runtime/spawn_join_batches  spawn_join, each batch timed: the 10th, 50th and 90th
//                             percentile of a batch's time, in us (with 2 workers it moves
//                             in modes that last seconds: benchmarks/README.md)
//   runtime/spawn_join_fresh  ns per fiber: spawn 100k (and 1M) at once, then join, on a
//                             fresh runtime (its stacks are new: page faults)
//   runtime/yield             ns per yield, two fibers yielding to each other
//   runtime/parked            bytes of RSS per parked fiber (100k and 1M), and ns per fiber
//                             to wake and join them all: each fiber waits in a receive on
//                             one channel, and closing it wakes them all (Go's program does
//                             the same: `<-start`, then close(start))
//   runtime/parked_compacted  the same with stack compaction (options::compact_parked): RSS
//                             per parked fiber once a pass has compacted them all, the
//                             pass's time per fiber, and the wake and join of compacted
//                             fibers (each stack put back first)
//   runtime/idle              % of one core a runtime with nothing to do uses over 2 s
#include <benchmark/benchmark.h>
#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <rill/rill.hpp>
#include <string>
#include <vector>

#include "fiber/compact.hpp"  // detail::compact_parked_now()

namespace {

rill::options with_workers(const benchmark::State& state) {
  rill::options o;
  o.workers = static_cast<unsigned>(state.range(0));
  return o;
}

long rss_kib() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}

void runtime_spawn_join(benchmark::State& state) {
  constexpr int batch = 1000;
  rill::run(
      [&state] {
        for (auto _ : state) {
          rill::wait_group wg;
          wg.add(batch);
          for (int i = 0; i < batch; ++i) rill::go([&wg] { wg.done(); });
          wg.wait();
        }
      },
      with_workers(state));
  state.SetItemsProcessed(state.iterations() * batch);
  state.counters["ns_per_fiber"] =
      benchmark::Counter(static_cast<double>(state.iterations() * batch),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void runtime_spawn_join_batches(benchmark::State& state) {
  constexpr int batch = 1000;
  std::vector<double> us;
  rill::run(
      [&] {
        for (auto _ : state) {
          const auto t0 = std::chrono::steady_clock::now();
          rill::wait_group wg;
          wg.add(batch);
          for (int i = 0; i < batch; ++i) rill::go([&wg] { wg.done(); });
          wg.wait();
          us.push_back(
              std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0)
                  .count());
        }
      },
      with_workers(state));
  std::sort(us.begin(), us.end());
  auto pct = [&](double p) { return us[static_cast<std::size_t>(p * (us.size() - 1))]; };
  state.counters["batch_us_p10"] = pct(0.10);
  state.counters["batch_us_p50"] = pct(0.50);
  state.counters["batch_us_p90"] = pct(0.90);
}

void runtime_spawn_join_fresh(benchmark::State& state) {
  const int n = static_cast<int>(state.range(1));
  for (auto _ : state) {
    rill::run(
        [n] {
          rill::wait_group wg;
          wg.add(n);
          for (int i = 0; i < n; ++i) rill::go([&wg] { wg.done(); });
          wg.wait();
        },
        with_workers(state));
  }
  state.SetItemsProcessed(state.iterations() * n);
  state.counters["ns_per_fiber"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// runtime_run_empty: rill::run of a main that returns at once, again and again: what a
// program pays to start and end a runtime of W workers (the threads, the stacks, the
// watchdog's notice), as a CLI tool or a test that runs one pipeline after another does.
void runtime_run_empty(benchmark::State& state) {
  for (auto _ : state) benchmark::DoNotOptimize(rill::run([] { return 1; }, with_workers(state)));
}

void runtime_yield(benchmark::State& state) {
  rill::run(
      [&state] {
        std::atomic<bool> stop{false};
        rill::wait_group wg;
        wg.add(1);
        rill::go([&] {
          while (!stop.load(std::memory_order_relaxed)) rill::this_fiber::yield();
          wg.done();
        });
        for (auto _ : state) rill::this_fiber::yield();
        stop = true;
        wg.wait();
      },
      with_workers(state));
  // Each iteration is one yield of the timed fiber and one of its partner.
  state.SetItemsProcessed(state.iterations() * 2);
  state.counters["ns_per_yield"] =
      benchmark::Counter(static_cast<double>(state.iterations() * 2),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void parked(benchmark::State& state, bool compacted) {
  const long n = state.range(1);
  double bytes = 0, wake_ns = 0, compact_ns = 0;
  rill::options o = with_workers(state);
  if (compacted) o.compact_parked = std::chrono::hours(1);  // one pass, asked for below
  for (auto _ : state) {
    rill::run(
        [&] {
          const long before = rss_kib();
          rill::wait_group started, done;
          rill::chan<int> start;
          started.add(static_cast<int>(n));
          done.add(static_cast<int>(n));
          for (long i = 0; i < n; ++i) {
            rill::go([&] {
              started.done();
              (void)start.recv();
              done.done();
            });
          }
          started.wait();
          // Let the last ones reach the receive (with 2 workers this fiber may run while
          // they are between done() and recv()), as Go's program does.
          rill::this_fiber::sleep_for(std::chrono::milliseconds(10));
          if (compacted) {
            const auto c0 = std::chrono::steady_clock::now();
            if (!rill::blocking([] { return rill::detail::compact_parked_now(); })) {
              state.SkipWithError("userfaultfd is not available: no compaction");
            }
            compact_ns =
                std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - c0)
                    .count() /
                static_cast<double>(n);
          }
          bytes = (rss_kib() - before) * 1024.0 / static_cast<double>(n);
          const auto t0 = std::chrono::steady_clock::now();
          start.close();
          done.wait();
          wake_ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0)
                        .count() /
                    static_cast<double>(n);
        },
        o);
  }
  state.counters["bytes_per_parked_fiber"] = bytes;
  state.counters["wake_join_ns_per_fiber"] = wake_ns;
  state.counters["wake_join_ms_total"] = wake_ns * static_cast<double>(n) / 1e6;
  if (compacted) state.counters["compact_ns_per_fiber"] = compact_ns;
}

void runtime_parked(benchmark::State& state) { parked(state, false); }
void runtime_parked_compacted(benchmark::State& state) { parked(state, true); }

void runtime_idle(benchmark::State& state) {
  double pct = 0;
  for (auto _ : state) {
    rill::run(
        [&] {
          rusage a{}, b{};
          getrusage(RUSAGE_SELF, &a);
          const auto t0 = std::chrono::steady_clock::now();
          rill::this_fiber::sleep_for(std::chrono::seconds(2));
          getrusage(RUSAGE_SELF, &b);
          const double wall =
              std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
          auto secs = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
          const double cpu =
              secs(b.ru_utime) - secs(a.ru_utime) + secs(b.ru_stime) - secs(a.ru_stime);
          pct = 100.0 * cpu / wall;
        },
        with_workers(state));
  }
  state.counters["idle_cpu_percent_of_one_core"] = pct;
}

BENCHMARK(runtime_spawn_join)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(runtime_spawn_join_batches)->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(runtime_spawn_join_fresh)
    ->Args({1, 100'000})
    ->Args({2, 100'000})
    ->Args({1, 1'000'000})
    ->Args({2, 1'000'000})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(runtime_run_empty)->Arg(1)->Arg(2)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(runtime_yield)->Arg(1)->Arg(2)->UseRealTime();
// The parked rows: 100k and 1M fibers, 1 and 2 workers, one run each (a million take seconds).
void parked_rows(benchmark::internal::Benchmark* b) {
  b->Args({1, 100'000})
      ->Args({2, 100'000})
      ->Args({1, 1'000'000})
      ->Args({2, 1'000'000})
      ->Iterations(1)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
}
BENCHMARK(runtime_parked)->Apply(parked_rows);
BENCHMARK(runtime_parked_compacted)->Apply(parked_rows);
BENCHMARK(runtime_idle)->Arg(2)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace
