// backpressure, tbb_pipeline: serial_in_order source -> serial_in_order sink (~2 µs per
// item), one item per token (peritem_).  tokens64: at most 64 items in flight.  workersW:
// tbb_workers(W).
#include <oneapi/tbb/parallel_pipeline.h>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, bench::flight_meter& meter) {
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  tbb::parallel_pipeline(
      bench::kCap,
      tbb::make_filter<void, bench::bp_item>(tbb::filter_mode::serial_in_order,
                                             [&](tbb::flow_control& fc) -> bench::bp_item {
                                               if (next >= n) {
                                                 fc.stop();
                                                 return {};
                                               }
                                               bench::bp_item item = bench::make_bp_item(next++);
                                               meter.produced();
                                               return item;
                                             }) &
          tbb::make_filter<bench::bp_item, void>(tbb::filter_mode::serial_in_order,
                                                 [&](const bench::bp_item& item) {
                                                   meter.consumed();
                                                   acc = bench::sum(acc, bench::slow_sink(item));
                                                 }));
  return acc;
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (unsigned workers : {1u, hw}) {
    bench::add("backpressure/tbb_pipeline/peritem_tokens" + std::to_string(bench::kCap) + "_" +
                   bench::workers_name(workers),
               [=](benchmark::State& s) {
                 bench::tbb_workers tbb(workers);
                 const std::uint64_t n = bench::items_backpressure();
                 bench::measure_backpressure(s, n, [&](bench::flight_meter& meter) {
                   return tbb.arena.execute([&] { return run(n, meter); });
                 });
               });
    if (hw == 1) break;
  }
  return true;
}();

}  // namespace
