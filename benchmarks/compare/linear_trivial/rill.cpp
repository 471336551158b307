// linear_trivial, rill: from(iota) | map(v*2+1) | reduce(+), on a runtime of W workers.
// Fused (the default: one fiber, the map inlined into the source loop) and `nofuse_` (one
// fiber per stage, channels of capacity C between them: the goroutine-per-stage shape).
#include <ranges>
#include <rill/rill.hpp>

#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, std::size_t cap, bool fused) {
  auto p = rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = cap}) |
           rill::map([](std::uint64_t v) { return bench::trivial_map(v); }, {.buffer = cap}) |
           rill::reduce(std::uint64_t{0},
                        [](std::uint64_t a, std::uint64_t v) { return bench::sum(a, v); });
  return p.run(rill::run_options{.fusion = fused});
}

const bool registered = [] {
  for (unsigned workers : {1u, bench::hardware_threads()}) {
    for (std::size_t cap : bench::trivial_caps()) {
      for (bool fused : {true, false}) {
        bench::add("linear_trivial/rill/" + std::string(fused ? "" : "nofuse_") +
                       bench::cap_name(cap) + "_" + bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     const std::uint64_t n = bench::items_trivial(cap);
                     rill::options o;
                     o.workers = workers;
                     bench::measure(s, n, bench::expected_trivial(n), [&] {
                       return rill::run([&] { return run(n, cap, fused); }, o);
                     });
                   });
      }
    }
    if (bench::hardware_threads() == 1) break;
  }
  return true;
}();

}  // namespace
