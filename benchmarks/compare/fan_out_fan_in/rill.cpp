// fan_out_fan_in, rill: from(iota) | par_map(uneven work, W fibers, unordered) | reduce.
#include <ranges>
#include <rill/rill.hpp>

#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, unsigned workers) {
  auto p = rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = bench::kCap}) |
           rill::par_map([](std::uint64_t v) { return bench::fan_map(v); },
                         {.workers = workers, .ordered = false, .buffer = bench::kCap}) |
           rill::reduce(std::uint64_t{0},
                        [](std::uint64_t a, std::uint64_t v) { return bench::sum(a, v); });
  return p.run();
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    bench::add(
        "fan_out_fan_in/rill/" + bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers),
        [=](benchmark::State& s) {
          const std::uint64_t n = bench::items_fan();
          rill::options o;
          o.workers = workers;
          bench::measure(s, n, bench::expected_fan(n),
                         [&] { return rill::run([&] { return run(n, workers); }, o); });
        });
  }
  return true;
}();

}  // namespace
