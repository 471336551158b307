// linear_trivial, sequential: the plain loop, the limit.  Each mapped value is materialized
// (DoNotOptimize), so the compiler cannot vectorize or fold the loop away.
#include "work.hpp"

namespace {

void loop(benchmark::State& state) {
  const std::uint64_t n = bench::items_trivial(bench::kCap);
  bench::measure(state, n, bench::expected_trivial(n), [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      std::uint64_t v = bench::trivial_map(i);
      benchmark::DoNotOptimize(v);
      acc = bench::sum(acc, v);
    }
    return acc;
  });
}

const bool registered = [] {
  bench::add("linear_trivial/sequential/loop", loop);
  return true;
}();

}  // namespace
