// Micro benchmarks of channels and select (Google Benchmark), each on a fresh runtime with 1
// and 2 workers. The workloads match benchmarks/go/micro/main.go one for one, so the figures
// compare with Go's (and Boost.Fiber's, benchmarks/compare):
//
//   chan/pingpong          ns per round trip: two fibers, two unbuffered channels
//   chan/spsc_buffered1024 ns per item: one producer, one consumer, capacity 1024
//   chan/select_default    ns per select over two empty channels with a default
//   chan/select_ready      ns per select over a closed channel (always ready) and an empty one
//   chan/select_ready_buffered  the same over a channel refilled by a send each time
//                          (the send included)
//
// The timed loop runs in the main fiber, which may move between workers, so the times are
// wall-clock (UseRealTime: a thread's CPU clock would be read on two threads).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <optional>
#include <rill/rill.hpp>

namespace {

rill::options with_workers(const benchmark::State& state) {
  rill::options o;
  o.workers = static_cast<unsigned>(state.range(0));
  return o;
}

void chan_pingpong(benchmark::State& state) {
  rill::run(
      [&state] {
        rill::chan<int> ping, pong;
        rill::go([ping, pong]() mutable {
          for (int v : ping) pong.send(v);
          pong.close();
        });
        int i = 0;
        for (auto _ : state) {
          ping.send(i++);
          benchmark::DoNotOptimize(pong.recv());
        }
        ping.close();
        (void)pong.recv();
      },
      with_workers(state));
  state.SetItemsProcessed(state.iterations());
}

void chan_spsc_buffered1024(benchmark::State& state) {
  std::uint64_t steals = 0;
  rill::run(
      [&state, &steals] {
        const std::uint64_t before = rill::runtime_stats().steals;
        rill::chan<std::int64_t> c(1024);
        const std::int64_t n = static_cast<std::int64_t>(state.max_iterations);
        rill::go([c, n]() mutable {
          for (std::int64_t i = 0; i < n; ++i) c.send(i);
          c.close();
        });
        std::int64_t sum = 0;
        for (auto _ : state) sum += *c.recv();
        benchmark::DoNotOptimize(sum);
        if (c.recv().has_value()) state.SkipWithError("spsc: more items than iterations");
        steals = rill::runtime_stats().steals - before;
      },
      with_workers(state));
  state.SetItemsProcessed(state.iterations());
  state.counters["steals_per_kitem"] =
      static_cast<double>(steals) * 1000 / static_cast<double>(state.iterations());
}

void chan_select_default(benchmark::State& state) {
  rill::run(
      [&state] {
        rill::chan<int> a, b;
        int sink = 0;
        for (auto _ : state) {
          rill::select(rill::on_recv(a, [&](std::optional<int> v) { sink += *v; }),
                       rill::on_recv(b, [&](std::optional<int> v) { sink += *v; }),
                       rill::otherwise([&] { ++sink; }));
        }
        benchmark::DoNotOptimize(sink);
      },
      with_workers(state));
  state.SetItemsProcessed(state.iterations());
}

void chan_select_ready(benchmark::State& state) {
  rill::run(
      [&state] {
        rill::chan<int> a, b;
        a.close();
        int sink = 0;
        for (auto _ : state) {
          rill::select(rill::on_recv(a, [&](std::optional<int> v) { sink += v.value_or(0) + 1; }),
                       rill::on_recv(b, [&](std::optional<int> v) { sink += *v; }));
        }
        benchmark::DoNotOptimize(sink);
      },
      with_workers(state));
  state.SetItemsProcessed(state.iterations());
}

void chan_select_ready_buffered(benchmark::State& state) {
  rill::run(
      [&state] {
        rill::chan<int> a(1), b;
        int sink = 0, i = 0;
        for (auto _ : state) {
          a.send(i++);
          rill::select(rill::on_recv(a, [&](std::optional<int> v) { sink += *v; }),
                       rill::on_recv(b, [&](std::optional<int> v) { sink += *v; }));
        }
        benchmark::DoNotOptimize(sink);
      },
      with_workers(state));
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(chan_pingpong)->Name("chan/pingpong")->ArgName("workers")->Arg(1)->Arg(2)->UseRealTime();
BENCHMARK(chan_spsc_buffered1024)
    ->Name("chan/spsc_buffered1024")
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime();
BENCHMARK(chan_select_default)
    ->Name("chan/select_default")
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime();
BENCHMARK(chan_select_ready)
    ->Name("chan/select_ready")
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime();
BENCHMARK(chan_select_ready_buffered)
    ->Name("chan/select_ready_buffered")
    ->ArgName("workers")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime();
