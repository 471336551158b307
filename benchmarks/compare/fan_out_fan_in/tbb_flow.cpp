// fan_out_fan_in and heavy_tail, tbb_flow: input_node -> limiter_node(64) ->
// function_node(concurrency W)
// -> serial `lightweight` sink ("lwsink"), which decrements the limiter.  workersW:
// tbb_workers(W).
#include <oneapi/tbb/flow_graph.h>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;

template <class Fan>
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
      g, workers, [](std::uint64_t v) { return Fan::map(v); });
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
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      bench::add(std::string(Fan::name) + "/tbb_flow/input_lwsink_" + bench::cap_name(bench::kCap) +
                     "_" + bench::workers_name(workers),
                 [=](benchmark::State& s) {
                   bench::tbb_workers tbb(workers);
                   const std::uint64_t n = Fan::items();
                   bench::measure(s, n, Fan::expected(n), [&] {
                     return tbb.arena.execute([&] { return run<Fan>(n, workers); });
                   });
                 });
    }
  });
  return true;
}();

}  // namespace
