// cost_sweep, boost_fiber: the cost sweep's cells with a fiber per stage, linked by
// buffered_channel(64) (holds 63 items); the main fiber is the sink.
//   linear3: source fiber -> three stage fibers -> main; parmap, few, heavytail: source fiber
//   -> W worker fibers -> main (unordered); trickle: the source fiber sleeps 1 ms
//   (boost::this_fiber::sleep_for), then sends the item and its time; main records latency.
//   rr_..._workers1   round_robin scheduler on one thread
//   ws_..._workersW   (and wssuspend_, swsuspend_) a pool of min(W, cores) threads (see
//                     fiber_support.hpp):
//                     W fibers of par_map over 8 sleepers share the cores there are
// sleep1ms: boost::this_fiber::sleep_for (a fiber sleep: the thread runs other fibers).
#include <atomic>
#include <string>
#include <vector>

#include "fiber_support.hpp"
#include "work.hpp"

namespace {

using bench::cost;
using boost::fibers::channel_op_status;
template <class T>
using channel = boost::fibers::buffered_channel<T>;

struct fiber_sleep {
  void operator()() const { boost::this_fiber::sleep_for(bench::kSleepCost); }
};

template <class F>
std::uint64_t linear3(std::uint64_t n, F f) {
  channel<std::uint64_t> c0(bench::kCap), c1(bench::kCap), c2(bench::kCap), c3(bench::kCap);
  boost::fibers::fiber source([&] {
    for (std::uint64_t i = 0; i < n; ++i) c0.push(i);
    c0.close();
  });
  auto stage = [&f](channel<std::uint64_t>& in, channel<std::uint64_t>& out) {
    return boost::fibers::fiber([&f, &in, &out] {
      std::uint64_t v;
      while (in.pop(v) == channel_op_status::success) out.push(f(v));
      out.close();
    });
  };
  boost::fibers::fiber s1 = stage(c0, c1), s2 = stage(c1, c2), s3 = stage(c2, c3);
  std::uint64_t acc = 0;
  std::uint64_t v;
  while (c3.pop(v) == channel_op_status::success) acc = bench::sum(acc, v);
  source.join();
  s1.join();
  s2.join();
  s3.join();
  return acc;
}

template <class F>
std::uint64_t parmap(std::uint64_t n, F f, unsigned workers) {
  channel<std::uint64_t> in(bench::kCap), out(bench::kCap);
  boost::fibers::fiber source([&] {
    for (std::uint64_t i = 0; i < n; ++i) in.push(i);
    in.close();
  });
  std::atomic<unsigned> running{workers};
  std::vector<boost::fibers::fiber> pool;
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      std::uint64_t v;
      while (in.pop(v) == channel_op_status::success) out.push(f(v));
      if (running.fetch_sub(1) == 1) out.close();
    });
  }
  std::uint64_t acc = 0;
  std::uint64_t v;
  while (out.pop(v) == channel_op_status::success) acc = bench::sum(acc, v);
  source.join();
  for (auto& p : pool) p.join();
  return acc;
}

bench::trickle_item tstep(bench::trickle_item t) {
  t.v = bench::trivial_map(t.v);
  return t;
}

std::uint64_t trickle(std::uint64_t n, bool linear, unsigned workers,
                      bench::latency_recorder& rec) {
  using T = bench::trickle_item;
  channel<T> c0(bench::kCap), c1(bench::kCap), c2(bench::kCap), c3(bench::kCap);
  boost::fibers::fiber source([&] {
    for (std::uint64_t i = 0; i < n; ++i) {
      boost::this_fiber::sleep_for(bench::kTricklePeriod);
      c0.push(T{i, bench::now_ns()});
    }
    c0.close();
  });
  std::vector<boost::fibers::fiber> fibers;
  auto stage = [&fibers](channel<T>& in, channel<T>& out, std::atomic<unsigned>* running) {
    fibers.emplace_back([&in, &out, running] {
      T t;
      while (in.pop(t) == channel_op_status::success) out.push(tstep(t));
      if (running == nullptr || running->fetch_sub(1) == 1) out.close();
    });
  };
  std::atomic<unsigned> running{workers};
  channel<T>* last = &c3;
  if (linear) {
    stage(c0, c1, nullptr);
    stage(c1, c2, nullptr);
    stage(c2, c3, nullptr);
  } else {
    for (unsigned w = 0; w < workers; ++w) stage(c0, c1, &running);
    last = &c1;
  }
  std::uint64_t acc = 0;
  T t;
  while (last->pop(t) == channel_op_status::success) {
    rec.record(t);
    acc = bench::sum(acc, t.v);
  }
  source.join();
  for (auto& f : fibers) f.join();
  return acc;
}

// add(cell, workers, body): the cell once per way its threads can run (bench::fiber_ways):
// body(s, run), run being the way's fiber_runner.
template <class Body>
void add(const std::string& cell, unsigned workers, Body body) {
  for (const bench::fiber_way& way : bench::fiber_ways(bench::cs_run_workers(workers))) {
    bench::add("cost_sweep/boost_fiber/" +
                   bench::cs_config(cell, workers, way.prefix + bench::cap_name(bench::kCap)),
               [=](benchmark::State& s) {
                 bench::fiber_runner run;
                 if (bench::runner_for(s, way, run)) body(s, run);
               });
  }
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (cost c : bench::kCosts) {
    for (unsigned w : bench::cs_linear3_workers()) {
      add(std::string("linear3_") + bench::cost_token(c), w,
          [=](benchmark::State& s, const bench::fiber_runner& run) {
            const std::uint64_t n = bench::cs_items_linear3(c);
            const std::uint64_t expected = bench::cs_expected_linear3(c, n);
            bench::with_cost_stage(c, fiber_sleep{}, [&](auto f) {
              bench::measure(s, n, expected, [&] { return run([&] { return linear3(n, f); }); });
            });
          });
    }
    for (unsigned w : bench::cs_parmap_workers(c)) {
      add(std::string("parmap_") + bench::cost_token(c), w,
          [=](benchmark::State& s, const bench::fiber_runner& run) {
            const std::uint64_t n = bench::cs_items_parmap(c, w);
            const std::uint64_t expected = bench::cs_expected_parmap(c, n);
            bench::with_cost_stage(c, fiber_sleep{}, [&](auto f) {
              bench::measure(s, n, expected, [&] { return run([&] { return parmap(n, f, w); }); });
            });
          });
    }
  }
  for (cost c : bench::kFewCosts) {
    for (unsigned few : bench::kFewSizes) {
      const unsigned w = bench::cs_few_workers(c);
      add("few" + std::to_string(few) + "_" + bench::cost_token(c), w,
          [=](benchmark::State& s, const bench::fiber_runner& run) {
            const unsigned rounds = bench::cs_few_rounds(few, c);
            bench::with_cost_stage(c, fiber_sleep{}, [&](auto f) {
              bench::measure(s, std::uint64_t{few} * rounds, bench::cs_expected_few(c, few, rounds),
                             [&] {
                               return run([&] {
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
  add("heavytail", hw, [=](benchmark::State& s, const bench::fiber_runner& run) {
    const std::uint64_t n = bench::cs_items_heavytail();
    bench::measure(s, n, bench::cs_expected_heavytail(n), [&] {
      return run([&] {
        return parmap(
            n, [](std::uint64_t v) { return bench::heavy_tail_map(v); }, hw);
      });
    });
  });
  for (bool linear : {true, false}) {
    add(linear ? "trickle_linear3" : "trickle_parmap", hw,
        [=](benchmark::State& s, const bench::fiber_runner& run) {
          const std::uint64_t n = bench::cs_items_trickle();
          bench::measure_latency(s, n, bench::cs_expected_trickle(linear, n),
                                 [&](bench::latency_recorder& rec) {
                                   return run([&] { return trickle(n, linear, hw, rec); });
                                 });
        });
  }
  return true;
}();

}  // namespace
