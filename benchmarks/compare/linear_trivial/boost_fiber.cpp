// linear_trivial, boost_fiber: a fiber per stage (source, map; the sink is the main fiber)
// linked by Boost.Fiber channels: unbuffered_channel for cap0, buffered_channel(C) otherwise
// (it holds C - 1 items).
//   rr_..._workers1   round_robin scheduler, all fibers on one thread
//   ws_..._workersW   work_stealing scheduler on W threads (see fiber_support.hpp)
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
  for (std::size_t cap : bench::trivial_caps()) {
    bench::add("linear_trivial/boost_fiber/rr_" + bench::cap_name(cap) + "_workers1",
               [=](benchmark::State& s) {
                 const std::uint64_t n = bench::items_trivial(cap);
                 bench::measure(s, n, bench::expected_trivial(n), [&] {
                   return bench::run_round_robin([&] { return run(n, cap); });
                 });
               });
  }
  if (hw > 1) {
    for (std::size_t cap : bench::trivial_caps()) {
      bench::add(
          "linear_trivial/boost_fiber/ws_" + bench::cap_name(cap) + "_" + bench::workers_name(hw),
          [=](benchmark::State& s) {
            bench::ws_pool* pool = bench::ws_pool::get(hw);
            if (pool == nullptr) {
              s.SkipWithError("work_stealing set up with another thread count already");
              return;
            }
            const std::uint64_t n = bench::items_trivial(cap);
            bench::measure(s, n, bench::expected_trivial(n),
                           [&] { return pool->run([&] { return run(n, cap); }); });
          });
    }
  }
  return true;
}();

}  // namespace
