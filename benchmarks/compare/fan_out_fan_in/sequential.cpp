// fan_out_fan_in and heavy_tail, sequential: the plain loop over the items, the limit for one
// thread.
#include "work.hpp"

namespace {

template <class Fan>
void loop(benchmark::State& state) {
  const std::uint64_t n = Fan::items();
  bench::measure(state, n, Fan::expected(n), [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc = bench::sum(acc, Fan::map(i));
    return acc;
  });
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    bench::add(std::string(Fan::name) + "/sequential/loop", loop<Fan>);
  });
  return true;
}();

}  // namespace
