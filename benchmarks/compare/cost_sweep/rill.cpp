// cost_sweep, rill: the cost sweep's cells (common/README.md) through rill's DSL.
//
//   cost_sweep/rill/<cell>_workersW         no hints at all: no .fuse, .buffer or .batch_size
//                                          (par_map says .workers and .ordered = false, as
//                                          every peer's fan-out is unordered)
//   cost_sweep/rill_tuned/<layout>_<cell>_workersW   a hand layout; the report takes the best
//                                          of a cell's layouts as "rill hand-tuned":
//     fused           every stage in one fiber ({.fuse = true})
//     split           every stage in a fiber of its own ({.fuse = false}), batches adaptive
//     split_batch1    split, and every link hands over single items ({.batch_size = 1})
//     split_batch64   split, links in batches of up to 64 ({.batch_size = 64})
//     batch1          par_map handing single items to its workers ({.batch_size = 1})
//     batch16         par_map handing batches of up to 16 ({.batch_size = 16})
//   Cheap cells (cost1ns, cost100ns) have fused and split_batch64 (par_map: batch16); the
//   others split and split_batch1 (par_map: batch1 and batch16).
//
// The runtime has min(W, cores) workers: par_map over 8 sleeping workers runs on the cores
// there are (a sleeping fiber holds no thread).  The sleep is rill::this_fiber::sleep_for.
#include <optional>
#include <ranges>
#include <rill/rill.hpp>
#include <string>
#include <vector>

#include "work.hpp"

namespace {

using bench::cost;

struct fiber_sleep {
  void operator()() const { rill::this_fiber::sleep_for(bench::kSleepCost); }
};

auto source(std::uint64_t n) { return rill::from(std::views::iota(std::uint64_t{0}, n)); }
auto sum_sink() {
  return rill::reduce(std::uint64_t{0},
                      [](std::uint64_t a, std::uint64_t v) { return bench::sum(a, v); });
}

enum class layout { none, fused, split, split_batch1, split_batch64, batch1, batch16 };

const char* layout_word(layout l) {
  switch (l) {
    case layout::none:
      return "";
    case layout::fused:
      return "fused";
    case layout::split:
      return "split";
    case layout::split_batch1:
      return "split_batch1";
    case layout::split_batch64:
      return "split_batch64";
    case layout::batch1:
      return "batch1";
    case layout::batch16:
      return "batch16";
  }
  return "?";
}

bool cheap(cost c) { return c == cost::c1ns || c == cost::c100ns; }

using stage_opts = rill::stage_options;

// linear3: source | f | f | f | sum.
template <class F>
std::uint64_t linear3(std::uint64_t n, F f, layout l) {
  switch (l) {
    case layout::fused:
      return (source(n) | rill::map(f, {.fuse = true}) | rill::map(f, {.fuse = true}) |
              rill::map(f, {.fuse = true}) | sum_sink())
          .run();
    case layout::split:
      return (source(n) | rill::map(f, {.fuse = false}) | rill::map(f, {.fuse = false}) |
              rill::map(f, {.fuse = false}) | sum_sink())
          .run();
    case layout::split_batch1:
    case layout::split_batch64: {
      const stage_opts o{.fuse = false, .batch_size = l == layout::split_batch1 ? 1u : 64u};
      return (rill::from(std::views::iota(std::uint64_t{0}, n), o) | rill::map(f, o) |
              rill::map(f, o) | rill::map(f, o) | sum_sink())
          .run();
    }
    default:
      return (source(n) | rill::map(f) | rill::map(f) | rill::map(f) | sum_sink()).run();
  }
}

// parmap (also few and heavytail): source | par_map(f, W, unordered) | sum.
template <class F>
std::uint64_t parmap(std::uint64_t n, F f, unsigned workers, layout l) {
  switch (l) {
    case layout::batch1:
    case layout::batch16:
      return (source(n) |
              rill::par_map(f, {.workers = workers,
                                .ordered = false,
                                .batch_size = l == layout::batch1 ? 1u : 16u}) |
              sum_sink())
          .run();
    default:
      return (source(n) | rill::par_map(f, {.workers = workers, .ordered = false}) | sum_sink())
          .run();
  }
}

// trickle: generate (a fiber sleep of 1 ms, then the item and its time) | 3 maps or a
// par_map | for_each, which records each item's latency.
bench::trickle_item tstep(bench::trickle_item t) {
  t.v = bench::trivial_map(t.v);
  return t;
}

std::uint64_t trickle(std::uint64_t n, bool linear, unsigned workers, layout l,
                      bench::latency_recorder& rec) {
  std::uint64_t i = 0;
  auto gen = rill::generate([&i, n]() -> std::optional<bench::trickle_item> {
    if (i >= n) return std::nullopt;
    rill::this_fiber::sleep_for(bench::kTricklePeriod);
    return bench::trickle_item{i++, bench::now_ns()};
  });
  std::uint64_t acc = 0;
  auto sink = rill::for_each([&](const bench::trickle_item& t) {
    rec.record(t);
    acc = bench::sum(acc, t.v);
  });
  if (linear) {
    switch (l) {
      case layout::fused:
        (gen | rill::map(tstep, {.fuse = true}) | rill::map(tstep, {.fuse = true}) |
         rill::map(tstep, {.fuse = true}) | sink)
            .run();
        break;
      case layout::split:
        (gen | rill::map(tstep, {.fuse = false}) | rill::map(tstep, {.fuse = false}) |
         rill::map(tstep, {.fuse = false}) | sink)
            .run();
        break;
      case layout::split_batch1:
        // The first map shares the source's fiber, so that every link is one of single
        // items (generate takes no options): fibers [generate|map], [map], [map|for_each].
        (gen | rill::map(tstep, {.fuse = true, .batch_size = 1}) |
         rill::map(tstep, {.fuse = false, .batch_size = 1}) |
         rill::map(tstep, {.fuse = false, .batch_size = 1}) | sink)
            .run();
        break;
      default:
        (gen | rill::map(tstep) | rill::map(tstep) | rill::map(tstep) | sink).run();
    }
  } else {
    switch (l) {
      case layout::batch1:
      case layout::batch16:
        (gen |
         rill::par_map(
             tstep,
             {.workers = workers, .ordered = false, .batch_size = l == layout::batch1 ? 1u : 16u}) |
         sink)
            .run();
        break;
      default:
        (gen | rill::par_map(tstep, {.workers = workers, .ordered = false}) | sink).run();
    }
  }
  return acc;
}

rill::options run_opts(unsigned workers) {
  rill::options o;
  o.workers = bench::cs_run_workers(workers);
  return o;
}

std::string name_of(layout l, const std::string& cell, unsigned workers) {
  return std::string("cost_sweep/") + (l == layout::none ? "rill/" : "rill_tuned/") +
         bench::cs_config(cell, workers, layout_word(l));
}

void add_linear3(cost c, unsigned workers, layout l) {
  const std::string cell = std::string("linear3_") + bench::cost_token(c);
  bench::add(name_of(l, cell, workers), [=](benchmark::State& s) {
    const std::uint64_t n = bench::cs_items_linear3(c);
    const std::uint64_t expected = bench::cs_expected_linear3(c, n);
    bench::with_cost_stage(c, fiber_sleep{}, [&](auto f) {
      bench::measure(s, n, expected, [&] {
        return rill::run([&] { return linear3(n, f, l); }, run_opts(workers));
      });
    });
  });
}

void add_parmap(cost c, unsigned workers, layout l) {
  const std::string cell = std::string("parmap_") + bench::cost_token(c);
  bench::add(name_of(l, cell, workers), [=](benchmark::State& s) {
    const std::uint64_t n = bench::cs_items_parmap(c, workers);
    const std::uint64_t expected = bench::cs_expected_parmap(c, n);
    bench::with_cost_stage(c, fiber_sleep{}, [&](auto f) {
      bench::measure(s, n, expected, [&] {
        return rill::run([&] { return parmap(n, f, workers, l); }, run_opts(workers));
      });
    });
  });
}

void add_few(unsigned few, cost c, unsigned workers, layout l) {
  const std::string cell = "few" + std::to_string(few) + "_" + bench::cost_token(c);
  bench::add(name_of(l, cell, workers), [=](benchmark::State& s) {
    const unsigned rounds = bench::cs_few_rounds(few, c);
    const std::uint64_t expected = bench::cs_expected_few(c, few, rounds);
    bench::with_cost_stage(c, fiber_sleep{}, [&](auto f) {
      bench::measure(s, std::uint64_t{few} * rounds, expected, [&] {
        return rill::run(
            [&] {
              std::uint64_t acc = 0;
              for (unsigned r = 0; r < rounds; ++r) acc += parmap(few, f, workers, l);
              return acc;
            },
            run_opts(workers));
      });
    });
  });
}

void add_heavytail(unsigned workers, layout l) {
  bench::add(name_of(l, "heavytail", workers), [=](benchmark::State& s) {
    const std::uint64_t n = bench::cs_items_heavytail();
    bench::measure(s, n, bench::cs_expected_heavytail(n), [&] {
      return rill::run(
          [&] {
            return parmap(
                n, [](std::uint64_t v) { return bench::heavy_tail_map(v); }, workers, l);
          },
          run_opts(workers));
    });
  });
}

void add_trickle(bool linear, unsigned workers, layout l) {
  bench::add(name_of(l, linear ? "trickle_linear3" : "trickle_parmap", workers),
             [=](benchmark::State& s) {
               const std::uint64_t n = bench::cs_items_trickle();
               bench::measure_latency(
                   s, n, bench::cs_expected_trickle(linear, n), [&](bench::latency_recorder& rec) {
                     return rill::run([&] { return trickle(n, linear, workers, l, rec); },
                                      run_opts(workers));
                   });
             });
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (cost c : bench::kCosts) {
    for (unsigned w : bench::cs_linear3_workers()) {
      add_linear3(c, w, layout::none);
      const std::vector<layout> tuned =
          cheap(c) ? std::vector<layout>{layout::fused, layout::split_batch64}
                   : std::vector<layout>{layout::split, layout::split_batch1};
      for (layout l : tuned) {
        add_linear3(c, w, l);
      }
    }
  }
  for (cost c : bench::kCosts) {
    for (unsigned w : bench::cs_parmap_workers(c)) {
      add_parmap(c, w, layout::none);
      if (!cheap(c)) add_parmap(c, w, layout::batch1);
      add_parmap(c, w, layout::batch16);
    }
  }
  for (cost c : bench::kFewCosts) {
    for (unsigned few : bench::kFewSizes) {
      for (layout l : {layout::none, layout::batch1, layout::batch16}) {
        add_few(few, c, bench::cs_few_workers(c), l);
      }
    }
  }
  for (layout l : {layout::none, layout::batch1, layout::batch16}) add_heavytail(hw, l);
  for (layout l : {layout::none, layout::fused, layout::split, layout::split_batch1}) {
    add_trickle(true, hw, l);
  }
  for (layout l : {layout::none, layout::batch1, layout::batch16}) add_trickle(false, hw, l);
  return true;
}();

}  // namespace
