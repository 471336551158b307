// fan_out_fan_in, tbb_flow: input_node -> limiter_node(64) -> function_node(concurrency W)
// -> serial `lightweight` sink ("lwsink"), which decrements the limiter.  workersW:
// tbb_workers(W).
#include <oneapi/tbb/flow_graph.h>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;

std::uint64_t run(std::uint64_t n, unsigned workers) {
  flow::graph g;
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  flow::input_node<std::uint64_t> source(g, [&](tbb::flow_control& fc) -> std::uint64_t {
    if (next >= n) {
      fc.stop();
      return 0;
    }
    return next++;
  });
  flow::limiter_node<std::uint64_t> limiter(g, bench::kCap);
  flow::function_node<std::uint64_t, std::uint64_t> map(
      g, workers, [](std::uint64_t v) { return bench::fan_map(v); });
  flow::function_node<std::uint64_t, flow::continue_msg, flow::queueing_lightweight> sink(
      g, flow::serial, [&](std::uint64_t v) {
        acc = bench::sum(acc, v);
        return flow::continue_msg();
      });
  flow::make_edge(source, limiter);
  flow::make_edge(limiter, map);
  flow::make_edge(map, sink);
  flow::make_edge(sink, limiter.decrementer());
  source.activate();
  g.wait_for_all();
  return acc;
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    bench::add("fan_out_fan_in/tbb_flow/input_lwsink_" + bench::cap_name(bench::kCap) + "_" +
                   bench::workers_name(workers),
               [=](benchmark::State& s) {
                 bench::tbb_workers tbb(workers);
                 const std::uint64_t n = bench::items_fan();
                 bench::measure(s, n, bench::expected_fan(n),
                                [&] { return tbb.arena.execute([&] { return run(n, workers); }); });
               });
  }
  return true;
}();

}  // namespace
