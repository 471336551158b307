// backpressure, rill: a fast source and a slow sink in two fibers joined by a channel of
// capacity 64 (stage_boundary: the sink must not be fused into the source's loop): `auto`
// (no hints: the link's batches adapt) and `peritem` (.batch_size = 1, as the peers move
// items).
#include <ranges>
#include <rill/rill.hpp>

#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, std::size_t batch, bench::flight_meter& meter) {
  auto p = rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = bench::kCap}) |
           rill::map(
               [&meter](std::uint64_t i) {
                 bench::bp_item item = bench::make_bp_item(i);
                 meter.produced();
                 return item;
               },
               {.buffer = bench::kCap, .batch_size = batch}) |
           rill::stage_boundary |
           rill::reduce(std::uint64_t{0}, [&meter](std::uint64_t acc, const bench::bp_item& item) {
             meter.consumed();
             return bench::sum(acc, bench::slow_sink(item));
           });
  return p.run();
}

const bool registered = [] {
  for (unsigned workers : {1u, bench::hardware_threads()}) {
    for (std::size_t batch : {0, 1}) {
      bench::add("backpressure/rill/" + std::string(batch ? "peritem_" : "auto_") +
                     bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers),
                 [=](benchmark::State& s) {
                   const std::uint64_t n = bench::items_backpressure();
                   rill::options o;
                   o.workers = workers;
                   bench::measure_backpressure(s, n, [&](bench::flight_meter& meter) {
                     return rill::run([&] { return run(n, batch, meter); }, o);
                   });
                 });
    }
    if (bench::hardware_threads() == 1) break;
  }
  return true;
}();

}  // namespace
