// cost_sweep, tbb_pipeline: the cost sweep's cells as tbb::parallel_pipeline:
//   linear3: serial_in_order source -> three serial_in_order filters -> serial_out_of_order
//   sink; parmap, few, heavytail: serial_in_order source -> one parallel filter ->
//   serial_out_of_order sink; trickle: the source filter sleeps 1 ms (the thread), then emits
//   the item and its time; the sink records its latency.
// tokensT: at most T items in flight (2W and 64; the report takes the better).  workersW:
// tbb_workers(W), W threads even where W exceeds the cores; sleep1ms sleeps the thread.
#include <oneapi/tbb/parallel_pipeline.h>

#include <string>
#include <thread>
#include <vector>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

using bench::cost;

struct thread_sleep {
  void operator()() const { std::this_thread::sleep_for(bench::kSleepCost); }
};

auto counter(std::uint64_t& next, std::uint64_t n) {
  return tbb::make_filter<void, std::uint64_t>(tbb::filter_mode::serial_in_order,
                                               [&next, n](tbb::flow_control& fc) -> std::uint64_t {
                                                 if (next >= n) {
                                                   fc.stop();
                                                   return 0;
                                                 }
                                                 return next++;
                                               });
}
auto summer(std::uint64_t& acc) {
  return tbb::make_filter<std::uint64_t, void>(
      tbb::filter_mode::serial_out_of_order, [&acc](std::uint64_t v) { acc = bench::sum(acc, v); });
}

template <class F>
std::uint64_t linear3(std::uint64_t n, F f, std::size_t tokens) {
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  auto stage = [&] {
    return tbb::make_filter<std::uint64_t, std::uint64_t>(tbb::filter_mode::serial_in_order, f);
  };
  tbb::parallel_pipeline(tokens, counter(next, n) & stage() & stage() & stage() & summer(acc));
  return acc;
}

template <class F>
std::uint64_t parmap(std::uint64_t n, F f, std::size_t tokens) {
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  tbb::parallel_pipeline(
      tokens, counter(next, n) &
                  tbb::make_filter<std::uint64_t, std::uint64_t>(tbb::filter_mode::parallel, f) &
                  summer(acc));
  return acc;
}

bench::trickle_item tstep(bench::trickle_item t) {
  t.v = bench::trivial_map(t.v);
  return t;
}

std::uint64_t trickle(std::uint64_t n, bool linear, std::size_t tokens,
                      bench::latency_recorder& rec) {
  using T = bench::trickle_item;
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  auto source =
      tbb::make_filter<void, T>(tbb::filter_mode::serial_in_order, [&](tbb::flow_control& fc) -> T {
        if (next >= n) {
          fc.stop();
          return {};
        }
        std::this_thread::sleep_for(bench::kTricklePeriod);
        return T{next++, bench::now_ns()};
      });
  auto sink = tbb::make_filter<T, void>(tbb::filter_mode::serial_out_of_order, [&](const T& t) {
    rec.record(t);
    acc = bench::sum(acc, t.v);
  });
  if (linear) {
    auto stage = [] { return tbb::make_filter<T, T>(tbb::filter_mode::serial_in_order, &tstep); };
    tbb::parallel_pipeline(tokens, source & stage() & stage() & stage() & sink);
  } else {
    tbb::parallel_pipeline(
        tokens, source & tbb::make_filter<T, T>(tbb::filter_mode::parallel, &tstep) & sink);
  }
  return acc;
}

std::vector<std::size_t> token_counts(unsigned workers) {
  const std::size_t t = 2 * std::size_t{workers};
  return t == 64 ? std::vector<std::size_t>{64} : std::vector<std::size_t>{t, 64};
}

std::string name_of(const std::string& cell, unsigned workers, std::size_t tokens) {
  return "cost_sweep/tbb_pipeline/" +
         bench::cs_config(cell, workers, "tokens" + std::to_string(tokens));
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (cost c : bench::kCosts) {
    for (unsigned w : bench::cs_linear3_workers()) {
      for (std::size_t t : token_counts(w)) {
        bench::add(name_of(std::string("linear3_") + bench::cost_token(c), w, t),
                   [=](benchmark::State& s) {
                     bench::tbb_workers tbb(w);
                     const std::uint64_t n = bench::cs_items_linear3(c);
                     const std::uint64_t expected = bench::cs_expected_linear3(c, n);
                     bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
                       bench::measure(s, n, expected, [&] {
                         return tbb.arena.execute([&] { return linear3(n, f, t); });
                       });
                     });
                   });
      }
    }
    for (unsigned w : bench::cs_parmap_workers(c)) {
      for (std::size_t t : token_counts(w)) {
        bench::add(
            name_of(std::string("parmap_") + bench::cost_token(c), w, t), [=](benchmark::State& s) {
              bench::tbb_workers tbb(w);
              const std::uint64_t n = bench::cs_items_parmap(c, w);
              const std::uint64_t expected = bench::cs_expected_parmap(c, n);
              bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
                bench::measure(s, n, expected,
                               [&] { return tbb.arena.execute([&] { return parmap(n, f, t); }); });
              });
            });
      }
    }
  }
  for (cost c : bench::kFewCosts) {
    for (unsigned few : bench::kFewSizes) {
      const unsigned w = bench::cs_few_workers(c);
      for (std::size_t t : token_counts(w)) {
        bench::add(name_of("few" + std::to_string(few) + "_" + bench::cost_token(c), w, t),
                   [=](benchmark::State& s) {
                     bench::tbb_workers tbb(w);
                     const unsigned rounds = bench::cs_few_rounds(few, c);
                     bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
                       bench::measure(s, std::uint64_t{few} * rounds,
                                      bench::cs_expected_few(c, few, rounds), [&] {
                                        return tbb.arena.execute([&] {
                                          std::uint64_t acc = 0;
                                          for (unsigned r = 0; r < rounds; ++r) {
                                            acc += parmap(few, f, t);
                                          }
                                          return acc;
                                        });
                                      });
                     });
                   });
      }
    }
  }
  for (std::size_t t : token_counts(hw)) {
    bench::add(name_of("heavytail", hw, t), [=](benchmark::State& s) {
      bench::tbb_workers tbb(hw);
      const std::uint64_t n = bench::cs_items_heavytail();
      bench::measure(s, n, bench::cs_expected_heavytail(n), [&] {
        return tbb.arena.execute([&] {
          return parmap(
              n, [](std::uint64_t v) { return bench::heavy_tail_map(v); }, t);
        });
      });
    });
    for (bool linear : {true, false}) {
      bench::add(
          name_of(linear ? "trickle_linear3" : "trickle_parmap", hw, t), [=](benchmark::State& s) {
            bench::tbb_workers tbb(hw);
            const std::uint64_t n = bench::cs_items_trickle();
            bench::measure_latency(
                s, n, bench::cs_expected_trickle(linear, n), [&](bench::latency_recorder& rec) {
                  return tbb.arena.execute([&] { return trickle(n, linear, t, rec); });
                });
          });
    }
  }
  return true;
}();

}  // namespace
