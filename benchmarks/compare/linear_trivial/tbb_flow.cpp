// linear_trivial, tbb_flow: oneTBB flow graph source -> map -> sum, serial nodes.
//
// Variants (the first word of the config):
//   input_lightweight  input_node source; map and sink use the `lightweight` policy (the
//                      body runs in the thread that puts the message, no task spawned)
//   input_queueing     input_node source; default (queueing) policy: a task per message
//   tryput_lightweight the calling thread try_put()s every item into the (lightweight) map
//                      node, then waits for the graph (no input_node); unbounded only
// capC: a limiter_node with threshold C between source and map (threshold 1 for C = 0),
// decremented by the sink: at most C items in flight.  unbounded: no limiter (flow graph
// buffers are unbounded by default).  workersW: tbb_workers(W).
#include <oneapi/tbb/flow_graph.h>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;
constexpr std::size_t kUnbounded = 0xffffffff;

template <class Policy>
std::uint64_t run_input(std::uint64_t n, std::size_t cap) {
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
  flow::function_node<std::uint64_t, std::uint64_t, Policy> map(
      g, flow::serial, [](std::uint64_t v) { return bench::trivial_map(v); });
  flow::function_node<std::uint64_t, flow::continue_msg, Policy> sink(g, flow::serial,
                                                                      [&](std::uint64_t v) {
                                                                        acc = bench::sum(acc, v);
                                                                        return flow::continue_msg();
                                                                      });
  flow::limiter_node<std::uint64_t> limiter(g, cap == 0 ? 1 : cap);
  if (cap == kUnbounded) {
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
std::uint64_t run_try_put(std::uint64_t n) {
  flow::graph g;
  std::uint64_t acc = 0;
  flow::function_node<std::uint64_t, std::uint64_t, Policy> map(
      g, flow::serial, [](std::uint64_t v) { return bench::trivial_map(v); });
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
void add(const std::string& config, unsigned workers, std::size_t cap, Run run) {
  const std::string name = "linear_trivial/tbb_flow/" + config + "_" +
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
      add("input_lightweight", workers, cap, run_input<flow::queueing_lightweight>);
    }
    if (hw == 1) break;
  }
  add("input_queueing", hw, bench::kCap, run_input<flow::queueing>);
  add("input_lightweight", hw, kUnbounded, run_input<flow::queueing_lightweight>);
  add("tryput_lightweight", hw, kUnbounded,
      [](std::uint64_t n, std::size_t) { return run_try_put<flow::queueing_lightweight>(n); });
  return true;
}();

}  // namespace
