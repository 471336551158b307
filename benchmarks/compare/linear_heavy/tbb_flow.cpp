// linear_heavy, tbb_flow: input_node -> limiter_node(64) -> function_node(concurrency W)
// [-> sequencer_node when ordered] -> serial sink.  The sink uses the `lightweight` policy
// (its body is a few instructions: it runs in the thread that delivers the message), hence
// "lwsink"; the map keeps the default queueing policy so that W tasks run it in parallel.
// peritem_: one item per message.  cap64: the limiter bounds items in flight to 64.
// workersW: tbb_workers(W).
#include <oneapi/tbb/flow_graph.h>

#include "reorder.hpp"
#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;

std::uint64_t run(std::uint64_t n, unsigned workers, bool is_ordered) {
  flow::graph g;
  std::uint64_t next = 0;
  std::uint64_t acc = is_ordered ? bench::kOrderedInit : 0;
  flow::input_node<std::uint64_t> source(g, [&](tbb::flow_control& fc) -> std::uint64_t {
    if (next >= n) {
      fc.stop();
      return 0;
    }
    return next++;
  });
  flow::limiter_node<std::uint64_t> limiter(g, bench::kCap);
  flow::function_node<std::uint64_t, bench::seq_item> map(g, workers, [](std::uint64_t v) {
    return bench::seq_item{v, bench::heavy_map(v)};
  });
  flow::sequencer_node<bench::seq_item> sequencer(g,
                                                  [](const bench::seq_item& it) { return it.seq; });
  flow::function_node<bench::seq_item, flow::continue_msg, flow::queueing_lightweight> sink(
      g, flow::serial, [&](const bench::seq_item& it) {
        acc = is_ordered ? bench::ordered(acc, it.value) : bench::sum(acc, it.value);
        return flow::continue_msg();
      });
  flow::make_edge(source, limiter);
  flow::make_edge(limiter, map);
  if (is_ordered) {
    flow::make_edge(map, sequencer);
    flow::make_edge(sequencer, sink);
  } else {
    flow::make_edge(map, sink);
  }
  flow::make_edge(sink, limiter.decrementer());
  source.activate();
  g.wait_for_all();
  return acc;
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    for (bool is_ordered : {true, false}) {
      bench::add("linear_heavy/tbb_flow/peritem_input_lwsink_" + bench::cap_name(bench::kCap) +
                     "_" + bench::workers_name(workers) + (is_ordered ? "_ordered" : "_unordered"),
                 [=](benchmark::State& s) {
                   bench::tbb_workers tbb(workers);
                   const std::uint64_t n = bench::items_heavy();
                   bench::measure(s, n, bench::expected_heavy(n, is_ordered), [&] {
                     return tbb.arena.execute([&] { return run(n, workers, is_ordered); });
                   });
                 });
    }
  }
  return true;
}();

}  // namespace
