// cost_sweep, sequential: each cell's work as a plain loop on one thread (a thread sleep for
// sleep1ms).  Its config is the cell alone (no workers token: it compares with every W), and
// the report derives the cell's ideal from it (common/README.md, "cost_sweep").
#include <string>
#include <thread>

#include "work.hpp"

namespace {

using bench::cost;

struct thread_sleep {
  void operator()() const { std::this_thread::sleep_for(bench::kSleepCost); }
};

std::string name_of(const std::string& cell) { return "cost_sweep/sequential/" + cell; }

const bool registered = [] {
  for (cost c : bench::kCosts) {
    bench::add(name_of(std::string("linear3_") + bench::cost_token(c)), [=](benchmark::State& s) {
      const std::uint64_t n = bench::cs_items_linear3(c);
      bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
        bench::measure(s, n, bench::cs_expected_linear3(c, n), [&] {
          std::uint64_t acc = 0;
          for (std::uint64_t i = 0; i < n; ++i) acc = bench::sum(acc, f(f(f(i))));
          return acc;
        });
      });
    });
  }
  // par_map's item count depends on W for sleep1ms only: the loop runs W = 1's count.
  for (cost c : bench::kCosts) {
    bench::add(name_of(std::string("parmap_") + bench::cost_token(c)), [=](benchmark::State& s) {
      const std::uint64_t n = bench::cs_items_parmap(c, 1);
      bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
        bench::measure(s, n, bench::cs_expected_parmap(c, n), [&] {
          std::uint64_t acc = 0;
          for (std::uint64_t i = 0; i < n; ++i) acc = bench::sum(acc, f(i));
          return acc;
        });
      });
    });
  }
  for (cost c : bench::kFewCosts) {
    for (unsigned few : bench::kFewSizes) {
      bench::add(name_of("few" + std::to_string(few) + "_" + bench::cost_token(c)),
                 [=](benchmark::State& s) {
                   const unsigned rounds = bench::cs_few_rounds(few, c);
                   bench::with_cost_stage(c, thread_sleep{}, [&](auto f) {
                     bench::measure(s, std::uint64_t{few} * rounds,
                                    bench::cs_expected_few(c, few, rounds), [&] {
                                      std::uint64_t acc = 0;
                                      for (unsigned r = 0; r < rounds; ++r) {
                                        for (std::uint64_t i = 0; i < few; ++i) {
                                          acc = bench::sum(acc, f(i));
                                        }
                                      }
                                      return acc;
                                    });
                   });
                 });
    }
  }
  bench::add(name_of("heavytail"), [](benchmark::State& s) {
    const std::uint64_t n = bench::cs_items_heavytail();
    bench::measure(s, n, bench::cs_expected_heavytail(n), [&] {
      std::uint64_t acc = 0;
      for (std::uint64_t i = 0; i < n; ++i) acc = bench::sum(acc, bench::heavy_tail_map(i));
      return acc;
    });
  });
  // trickle: sleep 1 ms, produce, map, record: the latency of the work alone.
  for (bool linear : {true, false}) {
    bench::add(name_of(linear ? "trickle_linear3" : "trickle_parmap"), [=](benchmark::State& s) {
      const std::uint64_t n = bench::cs_items_trickle();
      bench::measure_latency(
          s, n, bench::cs_expected_trickle(linear, n), [&](bench::latency_recorder& rec) {
            std::uint64_t acc = 0;
            for (std::uint64_t i = 0; i < n; ++i) {
              std::this_thread::sleep_for(bench::kTricklePeriod);
              bench::trickle_item t{i, bench::now_ns()};
              t.v = linear ? bench::trivial_map(bench::trivial_map(bench::trivial_map(t.v)))
                           : bench::trivial_map(t.v);
              rec.record(t);
              acc = bench::sum(acc, t.v);
            }
            return acc;
          });
    });
  }
  return true;
}();

}  // namespace
