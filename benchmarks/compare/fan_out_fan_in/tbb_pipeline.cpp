// fan_out_fan_in and heavy_tail, tbb_pipeline: serial_in_order source -> parallel map ->
// serial_out_of_order sink.  The layout is the config's first word:
//   peritem_   one item per token
//   batch16_   a block of kFanBatch items per token through the same filters
// tokensT: at most T tokens in flight.  workersW: tbb_workers(W).
#include <oneapi/tbb/parallel_pipeline.h>

#include "batch_support.hpp"
#include "tbb_support.hpp"
#include "work.hpp"

namespace {

template <class Fan>
std::uint64_t run(std::uint64_t n, std::size_t tokens, bool batched) {
  constexpr auto map_item = [](std::uint64_t v) { return Fan::map(v); };
  if (!batched) {
    bench::item_source items(n);
    return bench::pipeline3<std::uint64_t>(
        tokens, tbb::filter_mode::parallel, tbb::filter_mode::serial_out_of_order,
        [&](tbb::flow_control& fc) { return items.take(fc); }, map_item, bench::item_fold{});
  }
  bench::block_source blocks(n, bench::kFanBatch);
  return bench::pipeline3<bench::block>(
      tokens, tbb::filter_mode::parallel, tbb::filter_mode::serial_out_of_order,
      [&](tbb::flow_control& fc) { return blocks.take(fc); }, bench::block_map{map_item},
      bench::block_fold{});
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      for (std::size_t tokens : {16, 256}) {
        for (bool batched : {false, true}) {
          bench::add(std::string(Fan::name) + "/tbb_pipeline/" +
                         bench::layout_name(batched ? bench::kFanBatch : 1) + "_tokens" +
                         std::to_string(tokens) + "_" + bench::workers_name(workers),
                     [=](benchmark::State& s) {
                       bench::tbb_workers tbb(workers);
                       const std::uint64_t n = Fan::items();
                       bench::measure(s, n, Fan::expected(n), [&] {
                         return tbb.arena.execute([&] { return run<Fan>(n, tokens, batched); });
                       });
                     });
        }
      }
    }
  });
  return true;
}();

}  // namespace
