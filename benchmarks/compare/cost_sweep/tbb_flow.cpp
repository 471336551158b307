// cost_sweep, tbb_flow: the cost sweep's cells as oneTBB flow graphs:
//   input_node -> limiter_node(64) -> stages -> serial `lightweight` sink, which decrements
//   the limiter ("input_cap64").  linear3: three serial function_nodes; parmap, few,
//   heavytail: one function_node of concurrency W.  trickle: the input_node's body sleeps
//   1 ms (the thread), then emits the item and its time; the sink records its latency.
// workersW: tbb_workers(W), W threads even where W exceeds the cores (par_map over 8
// sleepers): sleep1ms sleeps the thread (std::this_thread::sleep_for), which is how TBB code
// waits, so a sleeping item holds a thread.
#include <oneapi/tbb/flow_graph.h>

#include <string>
#include <thread>
#include <vector>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

namespace flow = tbb::flow;
using bench::cost;

struct thread_sleep {
  void operator()() const { std::this_thread::sleep_for(bench::kSleepCost); }
};

// run_graph(g, make, stages, sink_body): runs the graph input_node(make) -> limiter ->
// stages... -> serial sink(sink_body); `stages` are function_nodes of g, linked in order.
template <class T, class Make, class Sink>
void run_graph(flow::graph& g, Make make, std::vector<flow::function_node<T, T>*> stages,
               Sink sink_body) {
  flow::input_node<T> source(g, make);
  flow::limiter_node<T> limiter(g, bench::kCap);
  flow::function_node<T, flow::continue_msg, flow::queueing_lightweight> sink(
      g, flow::serial, [&](const T& v) {
        sink_body(v);
        return flow::continue_msg();
      });
  flow::make_edge(source, limiter);
  flow::make_edge(limiter, *stages.front());
  for (std::size_t k = 1; k < stages.size(); ++k) flow::make_edge(*stages[k - 1], *stages[k]);
  flow::make_edge(*stages.back(), sink);
  flow::make_edge(sink, limiter.decrementer());
  source.activate();
  g.wait_for_all();
}

// counter: the input_node body that yields 0 .. n-1.
struct counter {
  std::uint64_t* next;
  std::uint64_t n;
  std::uint64_t operator()(tbb::flow_control& fc) const {
    if (*next >= n) {
      fc.stop();
      return 0;
    }
    return (*next)++;
  }
};

template <class F>
std::uint64_t linear3(std::uint64_t n, F f) {
  flow::graph g;
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  flow::function_node<std::uint64_t, std::uint64_t> s1(g, flow::serial, f), s2(g, flow::serial, f),
      s3(g, flow::serial, f);
  run_graph<std::uint64_t>(g, counter{&next, n}, {&s1, &s2, &s3},
                           [&](std::uint64_t v) { acc = bench::sum(acc, v); });
  return acc;
}

template <class F>
std::uint64_t parmap(std::uint64_t n, F f, unsigned workers) {
  flow::graph g;
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  flow::function_node<std::uint64_t, std::uint64_t> m(g, workers, f);
  run_graph<std::uint64_t>(g, counter{&next, n}, {&m},
                           [&](std::uint64_t v) { acc = bench::sum(acc, v); });
  return acc;
}

bench::trickle_item tstep(bench::trickle_item t) {
  t.v = bench::trivial_map(t.v);
  return t;
}

std::uint64_t trickle(std::uint64_t n, bool linear, unsigned workers,
                      bench::latency_recorder& rec) {
  using T = bench::trickle_item;
  flow::graph g;
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  auto make = [&](tbb::flow_control& fc) -> T {
    if (next >= n) {
      fc.stop();
      return {};
    }
    std::this_thread::sleep_for(bench::kTricklePeriod);
    return T{next++, bench::now_ns()};
  };
  auto sink = [&](const T& t) {
    rec.record(t);
    acc = bench::sum(acc, t.v);
  };
  if (linear) {
    flow::function_node<T, T> s1(g, flow::serial, tstep), s2(g, flow::serial, tstep),
        s3(g, flow::serial, tstep);
    run_graph<T>(g, make, {&s1, &s2, &s3}, sink);
  } else {
    flow::function_node<T, T> m(g, workers, tstep);
    run_graph<T>(g, make, {&m}, sink);
  }
  return acc;
}

std::string name_of(const std::string& cell, unsigned workers) {
  return "cost_sweep/tbb_flow/" + bench::cs_config(cell, workers, "input_cap64");
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (cost c : bench::kCosts) {
    for (unsigned w : bench::cs_linear3_workers()) {
      bench::add(
          name_of(std::string("linear3_") + bench::cost_token(c), w), [=](benchmark::State& s) {
            bench::tbb_workers tbb(w);
            const std::uint64_t n = bench::cs_items_linear3(c);
            const std::uint64_t expected = bench::cs_expected_linear3(c, n);
            bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
              bench::measure(s, n, expected,
                             [&] { return tbb.arena.execute([&] { return linear3(n, f); }); });
            });
          });
    }
    for (unsigned w : bench::cs_parmap_workers(c)) {
      bench::add(
          name_of(std::string("parmap_") + bench::cost_token(c), w), [=](benchmark::State& s) {
            bench::tbb_workers tbb(w);
            const std::uint64_t n = bench::cs_items_parmap(c, w);
            const std::uint64_t expected = bench::cs_expected_parmap(c, n);
            bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
              bench::measure(s, n, expected,
                             [&] { return tbb.arena.execute([&] { return parmap(n, f, w); }); });
            });
          });
    }
  }
  for (cost c : bench::kFewCosts) {
    for (unsigned few : bench::kFewSizes) {
      const unsigned w = bench::cs_few_workers(c);
      bench::add(name_of("few" + std::to_string(few) + "_" + bench::cost_token(c), w),
                 [=](benchmark::State& s) {
                   bench::tbb_workers tbb(w);
                   const unsigned rounds = bench::cs_few_rounds(few, c);
                   bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
                     bench::measure(s, std::uint64_t{few} * rounds,
                                    bench::cs_expected_few(c, few, rounds), [&] {
                                      return tbb.arena.execute([&] {
                                        std::uint64_t acc = 0;
                                        for (unsigned r = 0; r < rounds; ++r) {
                                          acc += parmap(few, f, w);
                                        }
                                        return acc;
                                      });
                                    });
                   });
                 });
    }
  }
  bench::add(name_of("heavytail", hw), [=](benchmark::State& s) {
    bench::tbb_workers tbb(hw);
    const std::uint64_t n = bench::cs_items_heavytail();
    bench::measure(s, n, bench::cs_expected_heavytail(n), [&] {
      return tbb.arena.execute([&] {
        return parmap(
            n, [](std::uint64_t v) { return bench::heavy_tail_map(v); }, hw);
      });
    });
  });
  for (bool linear : {true, false}) {
    bench::add(
        name_of(linear ? "trickle_linear3" : "trickle_parmap", hw), [=](benchmark::State& s) {
          bench::tbb_workers tbb(hw);
          const std::uint64_t n = bench::cs_items_trickle();
          bench::measure_latency(
              s, n, bench::cs_expected_trickle(linear, n), [&](bench::latency_recorder& rec) {
                return tbb.arena.execute([&] { return trickle(n, linear, hw, rec); });
              });
        });
  }
  return true;
}();

}  // namespace
