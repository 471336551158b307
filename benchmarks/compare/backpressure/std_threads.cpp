// backpressure, std_threads: a fast source thread feeds the slow sink (the calling thread,
// bench::slow_sink) through a mutex + condition-variable queue of capacity 64, one item per
// queue operation (peritem_).
#include <thread>

#include "bounded_queue.hpp"
#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, bench::flight_meter& meter) {
  bench::bounded_queue<bench::bp_item> q(bench::kCap);
  std::thread source([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      bench::bp_item item = bench::make_bp_item(i);
      meter.produced();
      q.push(std::move(item));
    }
    q.close();
  });
  std::uint64_t acc = 0;
  while (auto item = q.pop()) {
    meter.consumed();
    acc = bench::sum(acc, bench::slow_sink(*item));
  }
  source.join();
  return acc;
}

const bool registered = [] {
  bench::add("backpressure/std_threads/peritem_" + bench::cap_name(bench::kCap),
             [](benchmark::State& s) {
               const std::uint64_t n = bench::items_backpressure();
               bench::measure_backpressure(
                   s, n, [&](bench::flight_meter& meter) { return run(n, meter); });
             });
  return true;
}();

}  // namespace
