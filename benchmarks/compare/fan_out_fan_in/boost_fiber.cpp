// fan_out_fan_in and heavy_tail, boost_fiber: a source fiber, W worker fibers and the main fiber as
// the sink, linked by buffered_channel(64) (holds 63 items).
//   rr_..._workers1   round_robin scheduler on one thread (W = 1)
//   ws_..._workersW   and wssuspend_, swsuspend_: a pool of W threads (fiber_support.hpp)
#include <atomic>
#include <vector>

#include "fiber_support.hpp"
#include "work.hpp"

namespace {

using boost::fibers::channel_op_status;

template <class Fan>
std::uint64_t run(std::uint64_t n, unsigned workers) {
  boost::fibers::buffered_channel<std::uint64_t> in(bench::kCap);
  boost::fibers::buffered_channel<std::uint64_t> out(bench::kCap);
  boost::fibers::fiber source([&] {
    for (std::uint64_t i = 0; i < n; ++i) in.push(i);
    in.close();
  });
  std::atomic<unsigned> running{workers};
  std::vector<boost::fibers::fiber> pool;
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      std::uint64_t v;
      while (in.pop(v) == channel_op_status::success) out.push(Fan::map(v));
      if (running.fetch_sub(1) == 1) out.close();
    });
  }
  std::uint64_t acc = 0;
  std::uint64_t v;
  while (out.pop(v) == channel_op_status::success) acc = bench::sum(acc, v);
  source.join();
  for (auto& f : pool) f.join();
  return acc;
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      for (const bench::fiber_way& way : bench::fiber_ways(workers)) {
        bench::add(std::string(Fan::name) + "/boost_fiber/" + way.prefix +
                       bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     bench::fiber_runner run_on;
                     if (!bench::runner_for(s, way, run_on)) return;
                     const std::uint64_t n = Fan::items();
                     bench::measure(s, n, Fan::expected(n),
                                    [&] { return run_on([&] { return run<Fan>(n, workers); }); });
                   });
      }
    }
  });
  return true;
}();

}  // namespace
