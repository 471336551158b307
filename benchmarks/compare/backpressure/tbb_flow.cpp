// backpressure, tbb_flow: input_node -> serial sink (~2 µs per item), default queueing
// policy, one item per message (peritem_).
//   peritem_input_queueing_unbounded   the default: the sink's input buffer is unbounded,
//                                      so the source runs ahead and every item can end up
//                                      in flight
//   peritem_input_queueing_cap64       a limiter_node(64) before the sink, decremented by
//                                      the sink
// workersW: tbb_workers(W).
#include <oneapi/tbb/flow_graph.h>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;

std::uint64_t run(std::uint64_t n, bool bounded, bench::flight_meter& meter) {
  flow::graph g;
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  flow::input_node<bench::bp_item> source(g, [&](tbb::flow_control& fc) -> bench::bp_item {
    if (next >= n) {
      fc.stop();
      return {};
    }
    bench::bp_item item = bench::make_bp_item(next++);
    meter.produced();
    return item;
  });
  flow::limiter_node<bench::bp_item> limiter(g, bench::kCap);
  flow::function_node<bench::bp_item, flow::continue_msg> sink(
      g, flow::serial, [&](const bench::bp_item& item) {
        meter.consumed();
        acc = bench::sum(acc, bench::slow_sink(item));
        return flow::continue_msg();
      });
  if (bounded) {
    flow::make_edge(source, limiter);
    flow::make_edge(limiter, sink);
    flow::make_edge(sink, limiter.decrementer());
  } else {
    flow::make_edge(source, sink);
  }
  source.activate();
  g.wait_for_all();
  return acc;
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (unsigned workers : {1u, hw}) {
    for (bool bounded : {false, true}) {
      bench::add("backpressure/tbb_flow/peritem_input_queueing_" +
                     (bounded ? bench::cap_name(bench::kCap) : std::string("unbounded")) + "_" +
                     bench::workers_name(workers),
                 [=](benchmark::State& s) {
                   bench::tbb_workers tbb(workers);
                   const std::uint64_t n = bench::items_backpressure();
                   bench::measure_backpressure(s, n, [&](bench::flight_meter& meter) {
                     return tbb.arena.execute([&] { return run(n, bounded, meter); });
                   });
                 });
    }
    if (hw == 1) break;
  }
  return true;
}();

}  // namespace
