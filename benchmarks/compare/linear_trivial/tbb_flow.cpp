// linear_trivial, tbb_flow: oneTBB flow graph source -> map -> sum, serial nodes.
//
// The layout is the config's first word:
//   peritem_   one item per message
//   batch<B>_  blocks of B = link_batch(C) items per message, through the same nodes, the
//              limiter counting blocks (limit_blocks: no more items in flight than C)
// Variants (the next word):
//   input_lightweight  input_node source; map and sink use the `lightweight` policy (the
//                      body runs in the thread that puts the message, no task spawned)
//   input_queueing     input_node source; default (queueing) policy: a task per message
//   tryput_lightweight the calling thread try_put()s every item into the (lightweight) map
//                      node, then waits for the graph (no input_node); unbounded only
// capC: a limiter_node with threshold C between source and map (threshold 1 for C = 0),
// decremented by the sink: at most C items in flight.  unbounded: no limiter (flow graph
// buffers are unbounded by default).  workersW: tbb_workers(W).
#include <oneapi/tbb/flow_graph.h>

#include "batch_support.hpp"
#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;
constexpr std::size_t kUnbounded = 0xffffffff;

constexpr auto map_item = [](std::uint64_t v) { return bench::trivial_map(v); };

// graph<Msg, Policy>(limit, source, map, fold): input_node(source) -> limiter_node(limit)
// -> map -> sink over messages of type Msg (an item or a block), serial nodes of Policy; no
// limiter for kUnbounded.  Returns the sink's fold of every message from 0.
template <class Msg, class Policy, class Source, class Map, class Fold>
std::uint64_t graph(std::size_t limit, Source source_body, Map map_body, Fold fold) {
  flow::graph g;
  std::uint64_t acc = 0;
  flow::input_node<Msg> source(g, source_body);
  flow::function_node<Msg, Msg, Policy> map(g, flow::serial, map_body);
  flow::function_node<Msg, flow::continue_msg, Policy> sink(g, flow::serial, [&](const Msg& m) {
    acc = fold(acc, m);
    return flow::continue_msg();
  });
  flow::limiter_node<Msg> limiter(g, limit);
  if (limit == kUnbounded) {
    flow::make_edge(source, map);
  } else {
    flow::make_edge(source, limiter);
    flow::make_edge(limiter, map);
    flow::make_edge(sink, limiter.decrementer());
  }
  flow::make_edge(map, sink);
  source.activate();
  g.wait_for_all();
  return acc;
}

template <class Policy>
std::uint64_t run_input(std::uint64_t n, std::size_t cap) {
  bench::item_source items(n);
  return graph<std::uint64_t, Policy>(
      cap == 0 ? 1 : cap, [&](tbb::flow_control& fc) { return items.take(fc); }, map_item,
      bench::item_fold{});
}

template <class Policy>
std::uint64_t run_input_blocks(std::uint64_t n, std::size_t cap) {
  const std::size_t batch = bench::link_batch(cap);
  bench::block_source blocks(n, batch);
  return graph<bench::block, Policy>(
      bench::limit_blocks(cap, batch), [&](tbb::flow_control& fc) { return blocks.take(fc); },
      bench::block_map{map_item}, bench::block_fold{});
}

template <class Policy>
std::uint64_t run_try_put(std::uint64_t n) {
  flow::graph g;
  std::uint64_t acc = 0;
  flow::function_node<std::uint64_t, std::uint64_t, Policy> map(g, flow::serial, map_item);
  flow::function_node<std::uint64_t, flow::continue_msg, Policy> sink(g, flow::serial,
                                                                      [&](std::uint64_t v) {
                                                                        acc = bench::sum(acc, v);
                                                                        return flow::continue_msg();
                                                                      });
  flow::make_edge(map, sink);
  for (std::uint64_t i = 0; i < n; ++i) map.try_put(i);
  g.wait_for_all();
  return acc;
}

template <class Run>
void add(const std::string& variant, unsigned workers, std::size_t cap, std::size_t batch,
         Run run) {
  const std::string name = "linear_trivial/tbb_flow/" + bench::layout_name(batch) + "_" + variant +
                           "_" +
                           (cap == kUnbounded ? std::string("unbounded") : bench::cap_name(cap)) +
                           "_" + bench::workers_name(workers);
  bench::add(name, [=](benchmark::State& s) {
    bench::tbb_workers tbb(workers);
    const std::uint64_t n = bench::items_trivial(cap == kUnbounded ? bench::kCap : cap);
    bench::measure(s, n, bench::expected_trivial(n),
                   [&] { return tbb.arena.execute([&] { return run(n, cap); }); });
  });
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (unsigned workers : {1u, hw}) {
    for (std::size_t cap : bench::trivial_caps()) {
      add("input_lightweight", workers, cap, 1, run_input<flow::queueing_lightweight>);
    }
    for (std::size_t cap : bench::batched_caps()) {
      add("input_lightweight", workers, cap, bench::link_batch(cap),
          run_input_blocks<flow::queueing_lightweight>);
    }
    if (hw == 1) break;
  }
  add("input_queueing", hw, bench::kCap, 1, run_input<flow::queueing>);
  add("input_queueing", hw, bench::kCap, bench::link_batch(bench::kCap),
      run_input_blocks<flow::queueing>);
  add("input_lightweight", hw, kUnbounded, 1, run_input<flow::queueing_lightweight>);
  add("tryput_lightweight", hw, kUnbounded, 1,
      [](std::uint64_t n, std::size_t) { return run_try_put<flow::queueing_lightweight>(n); });
  return true;
}();

}  // namespace
