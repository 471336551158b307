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

// pipeline<Msg>(tokens, source, map, fold): the pipeline over messages of type Msg (an item
// or a block); returns the sink's fold from 0.
template <class Msg, class Source, class Map, class Fold>
std::uint64_t pipeline(std::size_t tokens, Source source, Map map, Fold fold) {
  std::uint64_t acc = 0;
  tbb::parallel_pipeline(
      tokens, tbb::make_filter<void, Msg>(tbb::filter_mode::serial_in_order, source) &
                  tbb::make_filter<Msg, Msg>(tbb::filter_mode::parallel, map) &
                  tbb::make_filter<Msg, void>(tbb::filter_mode::serial_out_of_order,
                                              [&](const Msg& m) { acc = fold(acc, m); }));
  return acc;
}

template <class Fan>
std::uint64_t run(std::uint64_t n, std::size_t tokens, bool batched) {
  constexpr auto map_item = [](std::uint64_t v) { return Fan::map(v); };
  if (!batched) {
    bench::item_source items(n);
    return pipeline<std::uint64_t>(
        tokens, [&](tbb::flow_control& fc) { return items.take(fc); }, map_item,
        bench::item_fold{});
  }
  bench::block_source blocks(n, bench::kFanBatch);
  return pipeline<bench::block>(
      tokens, [&](tbb::flow_control& fc) { return blocks.take(fc); }, bench::block_map{map_item},
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
