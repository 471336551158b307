// linear_trivial, rill: from(iota) | map(v*2+1) | reduce(+), on a runtime of W workers, in
// each layout of work.hpp ("Layouts"):
//   fused        the default run: one fiber, the map inlined into the source loop
//   auto         one fiber per stage (fusion off), links of capacity C with no hints: the
//                goroutine-per-stage shape, batches adapting up to link_batch(C)
//   peritem      the same with .batch_size = 1 on every link
//   batch<B>     the same with .batch_size = B = link_batch(C), the hand-batched peers' shape
// `rill_chan`: the pipeline written by hand, without the DSL, as Go's program is
// (benchmarks/go/linear_trivial): two fibers and the main fiber as the sink, chan<uint64_t>
// of capacity C, one item per channel operation.
#include <ranges>
#include <rill/rill.hpp>

#include "work.hpp"

namespace {

// batch: 0 for the adaptive links, else the pinned batch size.
std::uint64_t run(std::uint64_t n, std::size_t cap, bool fused, std::size_t batch) {
  auto p = rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = cap, .batch_size = batch}) |
           rill::map([](std::uint64_t v) { return bench::trivial_map(v); },
                     {.buffer = cap, .batch_size = batch}) |
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

void add(const std::string& config, unsigned workers, std::size_t cap, bool fused,
         std::size_t batch) {
  bench::add("linear_trivial/rill/" + config + "_" + bench::workers_name(workers),
             [=](benchmark::State& s) {
               const std::uint64_t n = bench::items_trivial(cap);
               rill::options o;
               o.workers = workers;
               bench::measure(s, n, bench::expected_trivial(n), [&] {
                 return rill::run([&] { return run(n, cap, fused, batch); }, o);
               });
             });
}

const bool registered = [] {
  for (unsigned workers : {1u, bench::hardware_threads()}) {
    // Fused, the capacity does not matter (no link): the item count of the largest.
    add("fused", workers, bench::trivial_caps().back(), true, 0);
    for (std::size_t cap : bench::trivial_caps()) {
      const std::string c = "_" + bench::cap_name(cap);
      // Capacity 0 has batches of one item whatever the hints: its one row is per item.
      if (bench::link_batch(cap) > 1) add("auto" + c, workers, cap, false, 0);
      add(bench::layout_name(1) + c, workers, cap, false, 1);
    }
    for (std::size_t cap : bench::batched_caps()) {
      const std::size_t b = bench::link_batch(cap);
      add(bench::layout_name(b) + "_" + bench::cap_name(cap), workers, cap, false, b);
    }
    if (bench::hardware_threads() == 1) break;
  }
  for (unsigned workers : bench::worker_counts()) {
    for (std::size_t cap : bench::trivial_caps()) {
      bench::add("linear_trivial/rill_chan/peritem_" + bench::cap_name(cap) + "_" +
                     bench::workers_name(workers),
                 [=](benchmark::State& s) {
                   const std::uint64_t n = bench::items_trivial(cap);
                   rill::options o;
                   o.workers = workers;
                   bench::measure(s, n, bench::expected_trivial(n), [&] {
                     return rill::run([&] { return run_by_hand(n, cap); }, o);
                   });
                 });
    }
  }
  return true;
}();

}  // namespace
