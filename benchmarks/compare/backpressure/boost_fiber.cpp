// backpressure, boost_fiber: a fast source fiber feeds the slow sink (the main fiber, ~2 µs
// per item) through a buffered_channel(64) (holds 63 items).
//   rr_cap64_workers1   round_robin scheduler on one thread
//   ws_cap64_workersW   work_stealing scheduler on W threads (see fiber_support.hpp)
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
    const std::string name = "backpressure/boost_fiber/" +
                             std::string(workers == 1 ? "rr_" : "ws_") +
                             bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers);
    bench::add(name, [=](benchmark::State& s) {
      const std::uint64_t n = bench::items_backpressure();
      if (workers == 1) {
        bench::measure_backpressure(s, n, [&](bench::flight_meter& meter) {
          return bench::run_round_robin([&] { return run(n, meter); });
        });
        return;
      }
      bench::ws_pool* pool = bench::ws_pool::get(workers);
      if (pool == nullptr) {
        s.SkipWithError("work_stealing set up with another thread count already");
        return;
      }
      bench::measure_backpressure(s, n, [&](bench::flight_meter& meter) {
        return pool->run([&] { return run(n, meter); });
      });
    });
    if (hw == 1) break;
  }
  return true;
}();

}  // namespace
