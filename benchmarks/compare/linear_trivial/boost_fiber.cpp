// linear_trivial, boost_fiber: a fiber per stage (source, map; the sink is the main fiber)
// linked by Boost.Fiber channels: unbuffered_channel for cap0, buffered_channel(C) otherwise
// (it holds C - 1 items).
//   rr_..._workers1   round_robin scheduler, all fibers on one thread
//   ws_..._workersW   and wssuspend_, swsuspend_: a pool of W threads (fiber_support.hpp)
#include "fiber_support.hpp"
#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, std::size_t cap) {
  return bench::with_channel<std::uint64_t>(cap, [&](auto& c1) {
    return bench::with_channel<std::uint64_t>(cap, [&](auto& c2) {
      boost::fibers::fiber source([&] {
        for (std::uint64_t i = 0; i < n; ++i) c1.push(i);
        c1.close();
      });
      boost::fibers::fiber map([&] {
        std::uint64_t v;
        while (c1.pop(v) == boost::fibers::channel_op_status::success) {
          c2.push(bench::trivial_map(v));
        }
        c2.close();
      });
      std::uint64_t acc = 0;
      std::uint64_t v;
      while (c2.pop(v) == boost::fibers::channel_op_status::success) acc = bench::sum(acc, v);
      source.join();
      map.join();
      return acc;
    });
  });
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (unsigned workers : {1u, hw}) {
    for (const bench::fiber_way& way : bench::fiber_ways(workers)) {
      for (std::size_t cap : bench::trivial_caps()) {
        bench::add("linear_trivial/boost_fiber/" + std::string(way.prefix) + bench::cap_name(cap) +
                       "_" + bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     bench::fiber_runner run_on;
                     if (!bench::runner_for(s, way, run_on)) return;
                     const std::uint64_t n = bench::items_trivial(cap);
                     bench::measure(s, n, bench::expected_trivial(n),
                                    [&] { return run_on([&] { return run(n, cap); }); });
                   });
      }
    }
    if (hw == 1) break;
  }
  return true;
}();

}  // namespace
