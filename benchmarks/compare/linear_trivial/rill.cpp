// linear_trivial, rill: from(iota) | map(v*2+1) | reduce(+), on a runtime of W workers.
// Fused (the default: one fiber, the map inlined into the source loop) and `nofuse_` (one
// fiber per stage, channels of capacity C between them: the goroutine-per-stage shape).
// `rill_chan`: the same pipeline written by hand, without the DSL, as Go's program is
// (benchmarks/go/linear_trivial): two fibers and the main fiber as the sink, chan<uint64_t>
// of capacity C, one item per channel operation.
#include <ranges>
#include <rill/rill.hpp>

#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, std::size_t cap, bool fused) {
  auto p = rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = cap}) |
           rill::map([](std::uint64_t v) { return bench::trivial_map(v); }, {.buffer = cap}) |
           rill::reduce(std::uint64_t{0},
                        [](std::uint64_t a, std::uint64_t v) { return bench::sum(a, v); });
  return p.run(rill::run_options{.fusion = fused});
}

std::uint64_t run_by_hand(std::uint64_t n, std::size_t cap) {
  rill::chan<std::uint64_t> numbers(cap), results(cap);
  rill::go([numbers, n]() mutable {
    for (std::uint64_t i = 0; i < n; ++i) numbers.send(i);
    numbers.close();
  });
  rill::go([numbers, results]() mutable {
    for (std::uint64_t v : numbers) results.send(bench::trivial_map(v));
    results.close();
  });
  std::uint64_t acc = 0;
  for (std::uint64_t v : results) acc = bench::sum(acc, v);
  return acc;
}

const bool registered = [] {
  for (unsigned workers : {1u, bench::hardware_threads()}) {
    for (std::size_t cap : bench::trivial_caps()) {
      for (bool fused : {true, false}) {
        bench::add("linear_trivial/rill/" + std::string(fused ? "" : "nofuse_") +
                       bench::cap_name(cap) + "_" + bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     const std::uint64_t n = bench::items_trivial(cap);
                     rill::options o;
                     o.workers = workers;
                     bench::measure(s, n, bench::expected_trivial(n), [&] {
                       return rill::run([&] { return run(n, cap, fused); }, o);
                     });
                   });
      }
    }
    if (bench::hardware_threads() == 1) break;
  }
  for (unsigned workers : bench::worker_counts()) {
    for (std::size_t cap : bench::trivial_caps()) {
      bench::add(
          "linear_trivial/rill_chan/" + bench::cap_name(cap) + "_" + bench::workers_name(workers),
          [=](benchmark::State& s) {
            const std::uint64_t n = bench::items_trivial(cap);
            rill::options o;
            o.workers = workers;
            bench::measure(s, n, bench::expected_trivial(n),
                           [&] { return rill::run([&] { return run_by_hand(n, cap); }, o); });
          });
    }
  }
  return true;
}();

}  // namespace
