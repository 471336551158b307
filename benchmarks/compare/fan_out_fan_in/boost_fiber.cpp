// fan_out_fan_in, boost_fiber: a source fiber, W worker fibers and the main fiber as the
// sink, linked by buffered_channel(64) (holds 63 items).
//   rr_..._workers1   round_robin scheduler on one thread (W = 1)
//   ws_..._workersW   work_stealing scheduler on W threads (see fiber_support.hpp)
#include <atomic>
#include <vector>

#include "fiber_support.hpp"
#include "work.hpp"

namespace {

using boost::fibers::channel_op_status;

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
      while (in.pop(v) == channel_op_status::success) out.push(bench::fan_map(v));
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
  for (unsigned workers : bench::worker_counts()) {
    const std::string name = "fan_out_fan_in/boost_fiber/" +
                             std::string(workers == 1 ? "rr_" : "ws_") +
                             bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers);
    bench::add(name, [=](benchmark::State& s) {
      const std::uint64_t n = bench::items_fan();
      if (workers == 1) {
        bench::measure(s, n, bench::expected_fan(n),
                       [&] { return bench::run_round_robin([&] { return run(n, 1); }); });
        return;
      }
      bench::ws_pool* pool = bench::ws_pool::get(workers);
      if (pool == nullptr) {
        s.SkipWithError("work_stealing set up with another thread count already");
        return;
      }
      bench::measure(s, n, bench::expected_fan(n),
                     [&] { return pool->run([&] { return run(n, workers); }); });
    });
  }
  return true;
}();

}  // namespace
