// backpressure, sequential: produce an item, sink it; one item in flight, the limit.
#include "work.hpp"

namespace {

void loop(benchmark::State& state) {
  const std::uint64_t n = bench::items_backpressure();
  bench::measure_backpressure(state, n, [&](bench::flight_meter& meter) {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      const bench::bp_item item = bench::make_bp_item(i);
      meter.produced();
      meter.consumed();
      acc = bench::sum(acc, bench::slow_sink(item));
    }
    return acc;
  });
}

const bool registered = [] {
  bench::add("backpressure/sequential/loop", loop);
  return true;
}();

}  // namespace
