// linear_heavy, rill: from(iota) | par_map(bench::heavy_map, W fibers) | reduce, on W workers:
// `auto` (no hints: the hand-out adapts to the measured work) and `peritem` (.batch_size = 1,
// as the peers move items).
#include <ranges>
#include <rill/rill.hpp>

#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, unsigned workers, bool is_ordered, std::size_t batch) {
  auto p =
      rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = bench::kCap}) |
      rill::par_map(
          [](std::uint64_t v) { return bench::heavy_map(v); },
          {.workers = workers, .ordered = is_ordered, .buffer = bench::kCap, .batch_size = batch}) |
      rill::reduce(is_ordered ? bench::kOrderedInit : std::uint64_t{0},
                   [is_ordered](std::uint64_t a, std::uint64_t v) {
                     return is_ordered ? bench::ordered(a, v) : bench::sum(a, v);
                   });
  return p.run();
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    for (bool is_ordered : {true, false}) {
      for (std::size_t batch : {0, 1}) {
        bench::add("linear_heavy/rill/" + std::string(batch ? "peritem_" : "auto_") +
                       bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers) +
                       (is_ordered ? "_ordered" : "_unordered"),
                   [=](benchmark::State& s) {
                     const std::uint64_t n = bench::items_heavy();
                     rill::options o;
                     o.workers = workers;
                     bench::measure(s, n, bench::expected_heavy(n, is_ordered), [&] {
                       return rill::run([&] { return run(n, workers, is_ordered, batch); }, o);
                     });
                   });
      }
    }
  }
  return true;
}();

}  // namespace
