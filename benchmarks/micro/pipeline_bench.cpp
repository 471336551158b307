// The seed's pipeline written by hand, as a Go user ports it first: three fibers, source ->
// map -> sink, each ranging over a rill::chan<std::int64_t>, on a fresh runtime of W workers.
// benchmarks/go/micro/main.go runs the same program (chan_pipeline3_*), so the figures
// compare with Go's at the same GOMAXPROCS.
//
//   chan/pipeline3             ns per item; map is v*2+1; capacity 0, 64 and 1024; 1, 2,
//                              4, ... workers up to the core count
//   chan/pipeline3_work1us     ns per item; map does ~1 us of CPU work (bench::heavy_map),
//                              capacity 64: the stages have work to spread over the workers
//   chan/pipeline3_work1us_sequential  the same work in a plain loop (the ratio's base)
//
// steals_per_kitem: fibers that one worker took from another's queue, per 1000 items.
//
// Each iteration runs the whole pipeline over a fixed item count; ns_per_item is the wall
// time per item (the fibers move between workers, so a thread's CPU clock would not do).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <rill/rill.hpp>
#include <thread>
#include <vector>

#include "work.hpp"

namespace {

struct pipeline_shape {
  std::size_t cap;
  std::int64_t items;
  bool heavy;
};

std::int64_t pipeline3(const pipeline_shape& s) {
  rill::chan<std::int64_t> numbers(s.cap), results(s.cap);
  rill::chan<std::int64_t> total;
  const std::int64_t n = s.items;
  rill::go([numbers, n]() mutable {
    for (std::int64_t i = 0; i < n; ++i) numbers.send(i);
    numbers.close();
  });
  rill::go([numbers, results, heavy = s.heavy]() mutable {
    for (std::int64_t v : numbers) {
      results.send(heavy
                       ? static_cast<std::int64_t>(bench::heavy_map(static_cast<std::uint64_t>(v)))
                       : v * 2 + 1);
    }
    results.close();
  });
  rill::go([results, total]() mutable {
    std::int64_t sum = 0;
    for (std::int64_t v : results) sum += v;
    total.send(sum);
  });
  return *total.recv();
}

std::int64_t expected(const pipeline_shape& s) {
  std::int64_t sum = 0;
  for (std::int64_t i = 0; i < s.items; ++i) {
    sum += s.heavy ? static_cast<std::int64_t>(bench::heavy_map(static_cast<std::uint64_t>(i)))
                   : i * 2 + 1;
  }
  return sum;
}

void run_pipeline(benchmark::State& state, const pipeline_shape& s, unsigned workers) {
  const std::int64_t want = expected(s);
  rill::options o;
  o.workers = workers;
  std::uint64_t steals = 0;
  rill::run(
      [&] {
        const std::uint64_t before = rill::runtime_stats().steals;
        for (auto _ : state) {
          if (pipeline3(s) != want) state.SkipWithError("pipeline3: wrong sum");
        }
        steals = rill::runtime_stats().steals - before;
      },
      o);
  // Fibers taken by one worker from another's queue: what moving work between workers cost
  // is in ns_per_item, how often it happened is here.
  state.counters["steals_per_kitem"] =
      static_cast<double>(steals) * 1000 / static_cast<double>(state.iterations() * s.items);
  state.SetItemsProcessed(state.iterations() * s.items);
  state.counters["ns_per_item"] =
      benchmark::Counter(static_cast<double>(state.iterations() * s.items),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

void chan_pipeline3(benchmark::State& state) {
  const auto cap = static_cast<std::size_t>(state.range(0));
  // A rendezvous per item costs more: fewer items keep an iteration near 0.1 s.
  run_pipeline(state, {cap, cap == 0 ? 200'000 : 2'000'000, false},
               static_cast<unsigned>(state.range(1)));
}

void chan_pipeline3_work1us(benchmark::State& state) {
  run_pipeline(state, {64, 20'000, true}, static_cast<unsigned>(state.range(0)));
}

void chan_pipeline3_work1us_sequential(benchmark::State& state) {
  constexpr std::int64_t items = 20'000;
  for (auto _ : state) {
    std::int64_t sum = 0;
    for (std::int64_t i = 0; i < items; ++i) {
      sum += static_cast<std::int64_t>(bench::heavy_map(static_cast<std::uint64_t>(i)));
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * items);
  state.counters["ns_per_item"] =
      benchmark::Counter(static_cast<double>(state.iterations() * items),
                         benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}

// 1, 2, 4, ... and the machine's core count (at least 2), as Go's WorkerCounts().
void worker_args(benchmark::internal::Benchmark* b, bool with_cap) {
  const unsigned hw = std::max(2u, std::thread::hardware_concurrency());
  std::vector<unsigned> counts;
  for (unsigned w = 1; w < hw; w *= 2) counts.push_back(w);
  counts.push_back(hw);
  for (const std::int64_t cap : {0, 64, 1024}) {
    for (unsigned w : counts) {
      if (with_cap) {
        b->Args({cap, w});
      } else {
        b->Args({w});
      }
    }
    if (!with_cap) break;
  }
}

}  // namespace

BENCHMARK(chan_pipeline3)
    ->Name("chan/pipeline3")
    ->ArgNames({"cap", "workers"})
    ->Apply([](benchmark::internal::Benchmark* b) { worker_args(b, true); })
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(chan_pipeline3_work1us)
    ->Name("chan/pipeline3_work1us")
    ->ArgName("workers")
    ->Apply([](benchmark::internal::Benchmark* b) { worker_args(b, false); })
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(chan_pipeline3_work1us_sequential)
    ->Name("chan/pipeline3_work1us_sequential")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
