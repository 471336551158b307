// linear_trivial, sequential: the limit every layout compares with, so its rows name no
// layout.
//   loop        the plain loop; each mapped value is materialized (DoNotOptimize), so the
//               compiler cannot vectorize or fold the loop away
//   rangefold   the same program as a user of ranges writes it (range-v3's accumulate over
//               iota | transform): source, map and sink fused, which the compiler is free to
//               vectorize
#include <range/v3/numeric/accumulate.hpp>
#include <range/v3/view/iota.hpp>
#include <range/v3/view/transform.hpp>

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

// The map and the fold are lambdas, as rill's rows pass them: gcc inlines a lambda, where it
// leaves a function pointer an out-of-line call per item.
void rangefold(benchmark::State& state) {
  const std::uint64_t n = bench::items_trivial(bench::kCap);
  bench::measure(state, n, bench::expected_trivial(n), [&] {
    return ranges::accumulate(
        ranges::views::iota(std::uint64_t{0}, n) |
            ranges::views::transform([](std::uint64_t v) { return bench::trivial_map(v); }),
        std::uint64_t{0}, [](std::uint64_t acc, std::uint64_t v) { return bench::sum(acc, v); });
  });
}

const bool registered = [] {
  bench::add("linear_trivial/sequential/loop", loop);
  bench::add("linear_trivial/sequential/rangefold", rangefold);
  return true;
}();

}  // namespace
