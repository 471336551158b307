// linear_heavy, sequential: the plain loop over ~1 µs items, the limit for one thread.
#include "work.hpp"

namespace {

void loop(benchmark::State& state) {
  const std::uint64_t n = bench::items_heavy();
  bench::measure(state, n, bench::expected_heavy(n, /*is_ordered=*/false), [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc = bench::sum(acc, bench::heavy_map(i));
    return acc;
  });
}

const bool registered = [] {
  bench::add("linear_heavy/sequential/loop", loop);
  return true;
}();

}  // namespace
