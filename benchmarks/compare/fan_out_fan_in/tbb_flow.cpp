// fan_out_fan_in and heavy_tail, tbb_flow: input_node -> limiter_node(64) ->
// function_node(concurrency W) -> serial `lightweight` sink ("lwsink"), which decrements the
// limiter.  The layout is the config's first word:
//   peritem_   one item per message
//   batch16_   blocks of kFanBatch items per message through the same nodes, the limiter
//              counting blocks (limit_blocks: no more items in flight than 64)
// workersW: tbb_workers(W).
#include <oneapi/tbb/flow_graph.h>

#include "batch_support.hpp"
#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;

// graph<Msg>(limit, workers, source, map, fold): the graph over messages of type Msg (an
// item or a block); returns the sink's fold of every message from 0.
template <class Msg, class Source, class Map, class Fold>
std::uint64_t graph(std::size_t limit, unsigned workers, Source source_body, Map map_body,
                    Fold fold) {
  flow::graph g;
  std::uint64_t acc = 0;
  flow::input_node<Msg> source(g, source_body);
  flow::limiter_node<Msg> limiter(g, limit);
  flow::function_node<Msg, Msg> map(g, workers, map_body);
  flow::function_node<Msg, flow::continue_msg, flow::queueing_lightweight> sink(
      g, flow::serial, [&](const Msg& m) {
        acc = fold(acc, m);
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

template <class Fan>
std::uint64_t run(std::uint64_t n, unsigned workers, bool batched) {
  constexpr auto map_item = [](std::uint64_t v) { return Fan::map(v); };
  if (!batched) {
    bench::item_source items(n);
    return graph<std::uint64_t>(
        bench::kCap, workers, [&](tbb::flow_control& fc) { return items.take(fc); }, map_item,
        bench::item_fold{});
  }
  bench::block_source blocks(n, bench::kFanBatch);
  return graph<bench::block>(
      bench::limit_blocks(bench::kCap, bench::kFanBatch), workers,
      [&](tbb::flow_control& fc) { return blocks.take(fc); }, bench::block_map{map_item},
      bench::block_fold{});
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      for (bool batched : {false, true}) {
        bench::add(std::string(Fan::name) + "/tbb_flow/" +
                       bench::layout_name(batched ? bench::kFanBatch : 1) + "_input_lwsink_" +
                       bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     bench::tbb_workers tbb(workers);
                     const std::uint64_t n = Fan::items();
                     bench::measure(s, n, Fan::expected(n), [&] {
                       return tbb.arena.execute([&] { return run<Fan>(n, workers, batched); });
                     });
                   });
      }
    }
  });
  return true;
}();

}  // namespace
