// The seed's pipeline written by hand, as a Go user ports it first: three fibers, source ->
// map -> sink, each ranging over a rill::chan<std::int64_t>, on a fresh runtime of W workers.
// benchmarks/go/micro/main.go runs the same program (chan_pipeline3_*), so the figures
// compare with Go's at the same GOMAXPROCS.
//
//   chan/pipeline3             ns per item; map is v*2+1; capacity 0, 64 and 1024; 1, 2,
//                              4, ... workers up to the core count
//   chan/pipeline3_work1us     ns per item; map does ~1 us of CPU work (bench::heavy_map),
//                              capacity 64: the stages have work to spread over the workers
//   chan/pipeline3_split1us    ns per item; the map and the sink do ~0.5 us each, capacity
//                              64: two stages with work, which two workers can overlap
//   chan/pipeline3_work1us_sequential  ~1 us of work per item in a plain loop (the base of
//                              both ratios: one stage cannot go faster, two can halve it)
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

// What each item costs: v*2+1 in the map (trivial), ~1 us of work in the map (heavy), or
// ~0.5 us in the map and ~0.5 us in the sink (split).
enum class load { trivial, heavy, split };

struct pipeline_shape {
  std::size_t cap;
  std::int64_t items;
  load kind;
};

std::int64_t map_fn(load kind, std::int64_t v) {
  const auto u = static_cast<std::uint64_t>(v);
  switch (kind) {
    case load::trivial:
      return v * 2 + 1;
    case load::heavy:
      return static_cast<std::int64_t>(bench::heavy_map(u));
    case load::split:
      return static_cast<std::int64_t>(bench::work(u, bench::calibrated_iters() / 2));
  }
  return v;
}
std::int64_t sink_fn(load kind, std::int64_t v) {
  return kind == load::split ? static_cast<std::int64_t>(bench::work(static_cast<std::uint64_t>(v),
                                                                     bench::calibrated_iters() / 2))
                             : v;
}

std::int64_t pipeline3(const pipeline_shape& s) {
  rill::chan<std::int64_t> numbers(s.cap), results(s.cap);
  rill::chan<std::int64_t> total;
  const std::int64_t n = s.items;
  rill::go([numbers, n]() mutable {
    for (std::int64_t i = 0; i < n; ++i) numbers.send(i);
    numbers.close();
  });
  rill::go([numbers, results, kind = s.kind]() mutable {
    for (std::int64_t v : numbers) results.send(map_fn(kind, v));
    results.close();
  });
  rill::go([results, total, kind = s.kind]() mutable {
    std::int64_t sum = 0;
    for (std::int64_t v : results) sum += sink_fn(kind, v);
    total.send(sum);
  });
  return *total.recv();
}

std::int64_t expected(const pipeline_shape& s) {
  std::int64_t sum = 0;
  for (std::int64_t i = 0; i < s.items; ++i) sum += sink_fn(s.kind, map_fn(s.kind, i));
  return sum;
}

// ns_per_item(items): a counter of wall nanoseconds per item (a rate counter, inverted, is
// seconds per item: the items are counted in billions).
benchmark::Counter ns_per_item(double items) {
  return benchmark::Counter(items * 1e-9,
                            benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
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
  state.counters["ns_per_item"] = ns_per_item(static_cast<double>(state.iterations() * s.items));
}

void chan_pipeline3(benchmark::State& state) {
  const auto cap = static_cast<std::size_t>(state.range(0));
  // A rendezvous per item costs more: fewer items keep an iteration near 0.1 s.
  run_pipeline(state, {cap, cap == 0 ? 200'000 : 2'000'000, load::trivial},
               static_cast<unsigned>(state.range(1)));
}

void chan_pipeline3_work1us(benchmark::State& state) {
  run_pipeline(state, {64, 20'000, load::heavy}, static_cast<unsigned>(state.range(0)));
}

void chan_pipeline3_split1us(benchmark::State& state) {
  run_pipeline(state, {64, 20'000, load::split}, static_cast<unsigned>(state.range(0)));
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
  state.counters["ns_per_item"] = ns_per_item(static_cast<double>(state.iterations() * items));
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
BENCHMARK(chan_pipeline3_split1us)
    ->Name("chan/pipeline3_split1us")
    ->ArgName("workers")
    ->Apply([](benchmark::internal::Benchmark* b) { worker_args(b, false); })
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
BENCHMARK(chan_pipeline3_work1us_sequential)
    ->Name("chan/pipeline3_work1us_sequential")
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);
