// linear_heavy, boost_fiber: a source fiber, W map fibers and the main fiber as the sink,
// linked by buffered_channel(64) (holds 63 items).  Ordered: the sink puts items back in
// source order with a reorder buffer.  peritem_: one item per channel operation.
//   rr_..._workers1   round_robin scheduler on one thread (W = 1)
//   ws_..._workersW   and wssuspend_, swsuspend_: a pool of W threads (fiber_support.hpp)
#include <atomic>
#include <vector>

#include "fiber_support.hpp"
#include "reorder.hpp"
#include "work.hpp"

namespace {

using boost::fibers::channel_op_status;

std::uint64_t run(std::uint64_t n, unsigned workers, bool is_ordered) {
  boost::fibers::buffered_channel<std::uint64_t> in(bench::kCap);
  boost::fibers::buffered_channel<bench::seq_item> out(bench::kCap);
  boost::fibers::fiber source([&] {
    for (std::uint64_t i = 0; i < n; ++i) in.push(i);
    in.close();
  });
  std::atomic<unsigned> running{workers};
  std::vector<boost::fibers::fiber> maps;
  for (unsigned w = 0; w < workers; ++w) {
    maps.emplace_back([&] {
      std::uint64_t v;
      while (in.pop(v) == channel_op_status::success) out.push({v, bench::heavy_map(v)});
      if (running.fetch_sub(1) == 1) out.close();
    });
  }
  std::uint64_t result = 0;
  bench::seq_item item;
  if (is_ordered) {
    bench::reorderer sink(bench::kOrderedInit, bench::ordered);
    while (out.pop(item) == channel_op_status::success) sink.push(item);
    result = sink.result();
  } else {
    while (out.pop(item) == channel_op_status::success) result = bench::sum(result, item.value);
  }
  source.join();
  for (auto& f : maps) f.join();
  return result;
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    for (const bench::fiber_way& way : bench::fiber_ways(workers)) {
      for (bool is_ordered : {true, false}) {
        const std::string name = "linear_heavy/boost_fiber/peritem_" + std::string(way.prefix) +
                                 bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers) +
                                 (is_ordered ? "_ordered" : "_unordered");
        bench::add(name, [=](benchmark::State& s) {
          bench::fiber_runner run_on;
          if (!bench::runner_for(s, way, run_on)) return;
          const std::uint64_t n = bench::items_heavy();
          bench::measure(s, n, bench::expected_heavy(n, is_ordered),
                         [&] { return run_on([&] { return run(n, workers, is_ordered); }); });
        });
      }
    }
  }
  return true;
}();

}  // namespace
