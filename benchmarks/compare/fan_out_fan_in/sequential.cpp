// fan_out_fan_in, sequential: the plain loop over the uneven items, the limit for one thread.
#include "work.hpp"

namespace {

void loop(benchmark::State& state) {
  const std::uint64_t n = bench::items_fan();
  bench::measure(state, n, bench::expected_fan(n), [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc = bench::sum(acc, bench::fan_map(i));
    return acc;
  });
}

const bool registered = [] {
  bench::add("fan_out_fan_in/sequential/loop", loop);
  return true;
}();

}  // namespace
