// fan_out_fan_in and heavy_tail, rill: from(iota) | par_map(the work, W fibers, unordered) |
// reduce, in three layouts (work.hpp, "Layouts"): `auto` (no hints: the hand-out adapts to
// the measured work, up to 16 items), `peritem` (.batch_size = 1) and `batch16`
// (.batch_size = 16, the hand-batched peers' shape).
#include <ranges>
#include <rill/rill.hpp>

#include "work.hpp"

namespace {

template <class Fan>
std::uint64_t run(std::uint64_t n, unsigned workers, std::size_t batch) {
  auto p = rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = bench::kCap}) |
           rill::par_map(
               [](std::uint64_t v) { return Fan::map(v); },
               {.workers = workers, .ordered = false, .buffer = bench::kCap, .batch_size = batch}) |
           rill::reduce(std::uint64_t{0},
                        [](std::uint64_t a, std::uint64_t v) { return bench::sum(a, v); });
  return p.run();
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      for (std::size_t batch : {std::size_t{0}, std::size_t{1}, bench::kFanBatch}) {
        const std::string layout = batch ? bench::layout_name(batch) : "auto";
        bench::add(std::string(Fan::name) + "/rill/" + layout + "_" + bench::cap_name(bench::kCap) +
                       "_" + bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     const std::uint64_t n = Fan::items();
                     rill::options o;
                     o.workers = workers;
                     bench::measure(s, n, Fan::expected(n), [&] {
                       return rill::run([&] { return run<Fan>(n, workers, batch); }, o);
                     });
                   });
      }
    }
  });
  return true;
}();

}  // namespace
