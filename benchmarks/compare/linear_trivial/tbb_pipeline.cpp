// linear_trivial, tbb_pipeline: tbb::parallel_pipeline.  The layout is the config's first
// word:
//   peritem_   three serial_in_order filters (source, map, sum), one item per token
//   batch<B>_  the same filters, a block of B = link_batch(C) items per token (for C in
//              batched_caps(); a pipeline has no capacity: its tokens bound what is in flight)
//   fused      one serial_in_order filter that takes, maps and sums an item per call, one
//              token, on one thread
// tokensT: at most T tokens in flight.  workersW: tbb_workers(W).
#include <oneapi/tbb/parallel_pipeline.h>

#include "batch_support.hpp"
#include "tbb_support.hpp"
#include "work.hpp"

namespace {

constexpr auto map_item = [](std::uint64_t v) { return bench::trivial_map(v); };

std::uint64_t run(std::uint64_t n, std::size_t tokens) {
  bench::item_source items(n);
  return bench::pipeline3<std::uint64_t>(
      tokens, tbb::filter_mode::serial_in_order, tbb::filter_mode::serial_in_order,
      [&](tbb::flow_control& fc) { return items.take(fc); }, map_item, bench::item_fold{});
}

std::uint64_t run_blocks(std::uint64_t n, std::size_t tokens, std::size_t batch) {
  bench::block_source blocks(n, batch);
  return bench::pipeline3<bench::block>(
      tokens, tbb::filter_mode::serial_in_order, tbb::filter_mode::serial_in_order,
      [&](tbb::flow_control& fc) { return blocks.take(fc); }, bench::block_map{map_item},
      bench::block_fold{});
}

std::uint64_t run_fused(std::uint64_t n) {
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  tbb::parallel_pipeline(1, tbb::make_filter<void, void>(tbb::filter_mode::serial_in_order,
                                                         [&](tbb::flow_control& fc) {
                                                           if (next >= n) {
                                                             fc.stop();
                                                             return;
                                                           }
                                                           acc = bench::sum(acc, map_item(next++));
                                                         }));
  return acc;
}

template <class Run>
void add(const std::string& config, unsigned workers, Run run) {
  bench::add("linear_trivial/tbb_pipeline/" + config, [=](benchmark::State& s) {
    bench::tbb_workers tbb(workers);
    const std::uint64_t n = bench::items_trivial(bench::kCap);
    bench::measure(s, n, bench::expected_trivial(n),
                   [&] { return tbb.arena.execute([&] { return run(n); }); });
  });
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (unsigned workers : {1u, hw}) {
    for (std::size_t tokens : {2, 16, 256}) {
      const std::string config =
          "_tokens" + std::to_string(tokens) + "_" + bench::workers_name(workers);
      add(bench::layout_name(1) + config, workers,
          [tokens](std::uint64_t n) { return run(n, tokens); });
      for (std::size_t cap : bench::batched_caps()) {
        const std::size_t batch = bench::link_batch(cap);
        add(bench::layout_name(batch) + config, workers,
            [tokens, batch](std::uint64_t n) { return run_blocks(n, tokens, batch); });
      }
    }
    if (hw == 1) break;
  }
  add("fused", 1, run_fused);
  return true;
}();

}  // namespace
