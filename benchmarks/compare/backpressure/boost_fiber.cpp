// backpressure, boost_fiber: a fast source fiber feeds the slow sink (the main fiber, ~2 µs
// per item) through a buffered_channel(64) (holds 63 items), one item per channel operation.
//   peritem_rr_cap64_workers1   round_robin scheduler on one thread
//   peritem_ws_cap64_workersW   work_stealing scheduler on W threads (see fiber_support.hpp)
#include "fiber_support.hpp"
#include "work.hpp"

namespace {

using boost::fibers::channel_op_status;

std::uint64_t run(std::uint64_t n, bench::flight_meter& meter) {
  boost::fibers::buffered_channel<bench::bp_item> c(bench::kCap);
  boost::fibers::fiber source([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      bench::bp_item item = bench::make_bp_item(i);
      meter.produced();
      c.push(std::move(item));
    }
    c.close();
  });
  std::uint64_t acc = 0;
  bench::bp_item item;
  while (c.pop(item) == channel_op_status::success) {
    meter.consumed();
    acc = bench::sum(acc, bench::slow_sink(item));
  }
  source.join();
  return acc;
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (unsigned workers : {1u, hw}) {
    for (const bench::fiber_way& way : bench::fiber_ways(workers)) {
      bench::add("backpressure/boost_fiber/peritem_" + std::string(way.prefix) +
                     bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers),
                 [=](benchmark::State& s) {
                   bench::fiber_runner run_on;
                   if (!bench::runner_for(s, way, run_on)) return;
                   const std::uint64_t n = bench::items_backpressure();
                   bench::measure_backpressure(s, n, [&](bench::flight_meter& meter) {
                     return run_on([&] { return run(n, meter); });
                   });
                 });
    }
    if (hw == 1) break;
  }
  return true;
}();

}  // namespace
