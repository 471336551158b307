// work.hpp: the work, the item counts and the measurement that every implementation of a
// workload in benchmarks/compare/ shares, so that rill and its peers (and the Go programs in
// benchmarks/go/, which use the same constants) do exactly the same work.
//
// What a benchmarks/compare/<workload>/rill.cpp must use (the peers use nothing else):
//
//   bench::quick()                     true when RILL_BENCH_QUICK=1 (small item counts)
//   bench::worker_counts()             {1, 2, 4, ..., hardware_concurrency}
//   bench::trivial_caps()              {0, 64, 1024}: channel capacities for linear_trivial
//   bench::kCap                        64: the capacity every other workload uses
//
//   bench::items_trivial(cap)          item count of linear_trivial for that capacity
//   bench::items_heavy()               item count of linear_heavy
//   bench::items_fan()                 item count of fan_out_fan_in
//   bench::items_backpressure()        item count of backpressure
//
//   bench::trivial_map(v)              v * 2 + 1 (linear_trivial's map)
//   bench::work(v, iters)              the CPU work loop; bench::calibrated_iters() ~ 1 µs
//   bench::heavy_map(v)                work(v, calibrated_iters()) (linear_heavy's map)
//   bench::fan_map(v)                  work(v, fan_iters(v)): uneven cost, 1 µs on average
//   bench::bp_item / make_bp_item(i)   backpressure's 1 KiB item; slow_sink(item) ~ 2 µs
//   bench::sum(acc, v)                 the unordered sink's combine (wrapping +)
//   bench::ordered(acc, v)             the ordered sink's combine (order-sensitive hash)
//
//   bench::measure(state, items, expected, run)        run() -> std::uint64_t, once per iteration
//   bench::measure_backpressure(state, items, run)     run(bench::flight_meter&) -> sink's sum
//   bench::expected_trivial(n), expected_heavy(n, ordered), expected_fan(n)
//   bench::add(name, fn)                               registers with the suite's settings
//   bench::link_batch(cap), link_slots(cap), layout_name(b)   the layouts (see "Layouts")
//
// The source of every workload yields the integers 0 .. n-1 in order.  Names are
// `<workload>/<impl>/<config>`; the config holds the canonical tokens cap<C>, workers<W> and
// ordered|unordered that the report matches across implementations (a token an
// implementation lacks matches any value), plus implementation-specific words.
//
// cost_sweep (benchmarks/compare/cost_sweep/; names and cells in common/README.md):
//
//   bench::cost                        c1ns (v*2+1), c100ns, c10us, c1ms (calibrated CPU work),
//                                      sleep1ms (a 1 ms sleep, then v*2+1: I/O)
//   bench::cost_token(c)               "cost1ns", ..., "sleep1ms": the cell's cost word
//   bench::spin_iters(ns)              work() iterations of about ns nanoseconds (calibrated)
//   bench::spin_ns(v, ns)              work(v, spin_iters(ns))
//   bench::cpu_stage<C>                one stage of cost C (not sleep1ms): a functor v -> v'
//   bench::sleep_stage<Sleep>{sleep}   sleep(), then trivial_map(v)
//   bench::with_cost_stage(c, sleep, f)  f(the stage functor of cost c) (sleep: the impl's own)
//   bench::heavy_tail_iters(i), heavy_tail_map(v)  seeded: 99% ~1 us, 1% ~1 ms
//   bench::cs_items_linear3(c), cs_items_parmap(c, W), cs_few_rounds(n, c), cs_items_heavytail(),
//   bench::cs_items_trickle()          the item counts (full / quick)
//   bench::for_each_fan(f)             f(family) for fan_out_fan_in and heavy_tail: name,
//                                      map(v), items(), expected(n) (the fan-out shape)
//   bench::cs_parmap_workers(c), cs_linear3_workers()   the workers of each cell
//   bench::cs_expected_*               the sink's expected sum (computed once, outside timing)
//   bench::now_ns()                    steady clock, ns (the trickle's production stamp)
//   bench::latency_recorder            latencies of trickle items; p50/p99/max
//   bench::measure_latency(state, items, expected, run)  run(latency_recorder&) -> sum;
//                                      counters ns_per_item, p50_us, p99_us, max_us
#pragma once

#include <benchmark/benchmark.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace bench {

// quick() is true when the environment has RILL_BENCH_QUICK=1: every item count shrinks (by
// 5x to 20x) so that the whole suite runs in seconds.
inline bool quick() {
  static const bool q = [] {
    const char* e = std::getenv("RILL_BENCH_QUICK");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  return q;
}

inline unsigned hardware_threads() {
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

// worker_counts() returns 1, 2, 4, ... and hardware_concurrency itself, ascending.
inline std::vector<unsigned> worker_counts() {
  std::vector<unsigned> out;
  const unsigned hw = hardware_threads();
  for (unsigned w = 1; w < hw; w *= 2) out.push_back(w);
  out.push_back(hw);
  return out;
}

inline constexpr std::size_t kCap = 64;
inline std::vector<std::size_t> trivial_caps() { return {0, 64, 1024}; }

// Item counts (full / quick).  Capacity 0 (a hand-off per item) runs 100x fewer items: a
// rendezvous per item costs 1-100 µs with threads, and ns_per_item is what is compared.
inline std::uint64_t items_trivial(std::size_t cap) {
  const std::uint64_t n = quick() ? 500'000 : 10'000'000;
  return cap == 0 ? n / 100 : n;
}
inline std::uint64_t items_heavy() { return quick() ? 20'000 : 200'000; }
inline std::uint64_t items_fan() { return quick() ? 20'000 : 200'000; }
inline std::uint64_t items_backpressure() { return quick() ? 20'000 : 100'000; }

// work() is the CPU work loop: an LCG step and an xorshift per iteration, one dependent
// chain (about 6 cycles an iteration), which the empty asm keeps the compiler from folding or
// vectorizing.  benchmarks/go/internal/bench.Work is the same loop with the same constants.
inline std::uint64_t work(std::uint64_t v, std::uint64_t iters) {
  for (std::uint64_t i = 0; i < iters; ++i) {
    v = v * 6364136223846793005ULL + 1442695040888963407ULL;
    v ^= v >> 29;
    asm volatile("" : "+r"(v));
  }
  return v;
}

// calibrated_iters() returns the iteration count of work() that takes about 1 µs on this
// machine, measured once (min of 9 timed runs) and printed to stderr.  RILL_BENCH_WORK_ITERS
// overrides it (scripts/bench pins it so that every process of a run does the same work).
inline std::uint64_t calibrated_iters() {
  static const std::uint64_t iters = [] {
    if (const char* e = std::getenv("RILL_BENCH_WORK_ITERS"); e != nullptr && *e != '\0') {
      const std::uint64_t v = std::strtoull(e, nullptr, 10);
      if (v > 0) {
        std::fprintf(stderr, "bench: work loop pinned to %llu iterations per ~1 us item\n",
                     static_cast<unsigned long long>(v));
        return v;
      }
    }
    constexpr std::uint64_t kProbe = 200'000;
    benchmark::DoNotOptimize(work(1, kProbe));  // warm up (and let the clock ramp)
    double best_ns = 1e300;
    for (int trial = 0; trial < 9; ++trial) {
      const auto t0 = std::chrono::steady_clock::now();
      benchmark::DoNotOptimize(work(static_cast<std::uint64_t>(trial) + 7, kProbe));
      const auto t1 = std::chrono::steady_clock::now();
      best_ns = std::min(best_ns, std::chrono::duration<double, std::nano>(t1 - t0).count());
    }
    const double ns_per_iter = best_ns / kProbe;
    const auto v = static_cast<std::uint64_t>(std::max(1.0, std::round(1000.0 / ns_per_iter)));
    std::fprintf(stderr, "bench: work loop %.3f ns/iteration; %llu iterations per ~1 us item\n",
                 ns_per_iter, static_cast<unsigned long long>(v));
    return v;
  }();
  return iters;
}

inline std::uint64_t trivial_map(std::uint64_t v) { return v * 2 + 1; }
inline std::uint64_t heavy_map(std::uint64_t v) { return work(v, calibrated_iters()); }

// fan_iters(i) is item i's uneven cost: base * (1 + (i * 2654435761 % 7)) iterations, with
// base a quarter of calibrated_iters(), so 1 µs on average and 0.25 µs to 1.75 µs.
inline std::uint64_t fan_iters(std::uint64_t i) {
  const std::uint64_t base = std::max<std::uint64_t>(1, calibrated_iters() / 4);
  return base * (1 + (i * 2654435761ULL) % 7);
}
inline std::uint64_t fan_map(std::uint64_t v) { return work(v, fan_iters(v)); }

// The sinks.  sum() ignores order; ordered() is an order-sensitive hash (FNV-1a-like), so an
// ordered pipeline that reorders items gets a wrong result.
inline std::uint64_t sum(std::uint64_t acc, std::uint64_t v) { return acc + v; }
inline std::uint64_t ordered(std::uint64_t acc, std::uint64_t v) {
  return (acc ^ v) * 1099511628211ULL;
}
inline constexpr std::uint64_t kOrderedInit = 14695981039346656037ULL;

// backpressure's item: 1 KiB, so that items in flight show in the resident set.
struct bp_item {
  std::uint64_t seq = 0;
  std::array<std::uint64_t, 127> pad{};
};
inline bp_item make_bp_item(std::uint64_t i) {
  bp_item item;
  item.seq = i;
  item.pad[0] = i;
  return item;
}
// slow_sink() is backpressure's sink work: about 2 µs per item.
inline std::uint64_t slow_sink(const bp_item& item) {
  return work(item.seq ^ item.pad[0] ^ item.pad[126], 2 * calibrated_iters());
}

// Expected results, computed once per item count (outside the timed region).
namespace detail {
template <class F>
std::uint64_t cached(const char* key, std::uint64_t n, F&& compute) {
  static std::mutex mu;
  static std::map<std::pair<std::string, std::uint64_t>, std::uint64_t> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto k = std::make_pair(std::string(key), n);
  if (auto it = cache.find(k); it != cache.end()) return it->second;
  const std::uint64_t v = compute();
  cache.emplace(k, v);
  return v;
}
}  // namespace detail

inline std::uint64_t expected_trivial(std::uint64_t n) { return n * n; }  // sum of 2i+1
inline std::uint64_t expected_heavy(std::uint64_t n, bool is_ordered) {
  return detail::cached(is_ordered ? "heavy_ordered" : "heavy", n, [&] {
    std::uint64_t acc = is_ordered ? kOrderedInit : 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      acc = is_ordered ? ordered(acc, heavy_map(i)) : sum(acc, heavy_map(i));
    }
    return acc;
  });
}
inline std::uint64_t expected_fan(std::uint64_t n) {
  return detail::cached("fan", n, [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc = sum(acc, fan_map(i));
    return acc;
  });
}
inline std::uint64_t expected_backpressure(std::uint64_t n) {
  return detail::cached("backpressure", n, [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc = sum(acc, slow_sink(make_bp_item(i)));
    return acc;
  });
}

// flight_meter counts items in flight for backpressure: the source calls produced() once per
// item before it hands the item on; the sink calls consumed() once per item it takes (one
// sink at a time).  peak() is the largest produced - consumed the sink observed.
class flight_meter {
 public:
  void produced() noexcept { produced_.fetch_add(1, std::memory_order_relaxed); }
  void consumed() noexcept {
    const std::uint64_t in_flight = produced_.load(std::memory_order_relaxed) - consumed_;
    peak_ = std::max(peak_, in_flight);
    ++consumed_;
  }
  [[nodiscard]] std::uint64_t peak() const noexcept { return peak_; }

 private:
  alignas(64) std::atomic<std::uint64_t> produced_{0};
  alignas(64) std::uint64_t consumed_ = 0;  // written by the sink only
  std::uint64_t peak_ = 0;                  // written by the sink only
};

// status_kib() reads a "Vm...:  N kB" line of /proc/self/status; -1 if absent.
inline long status_kib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::size_t klen = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, klen, key) == 0 && line.size() > klen && line[klen] == ':') {
      return std::strtol(line.c_str() + klen + 1, nullptr, 10);
    }
  }
  return -1;
}

// rss_meter measures the peak resident-set growth of a region: start() returns free heap
// memory to the OS and resets the kernel's high-water mark (VmHWM, via /proc/self/clear_refs);
// peak_delta_kib() is VmHWM - VmRSS at start().
class rss_meter {
 public:
  void start() {
    malloc_trim(0);
    std::ofstream clear("/proc/self/clear_refs");
    clear << "5";
    clear.flush();
    hwm_reset_ = static_cast<bool>(clear);
    base_kib_ = status_kib("VmRSS");
  }
  [[nodiscard]] long peak_delta_kib() const { return status_kib("VmHWM") - base_kib_; }
  [[nodiscard]] bool hwm_reset() const { return hwm_reset_; }

 private:
  long base_kib_ = 0;
  bool hwm_reset_ = false;
};

// iterations(): timed runs per benchmark and process (each processes all items); scripts/bench
// repeats processes for repetitions.  RILL_BENCH_ITERATIONS overrides the default 1.
inline benchmark::IterationCount iterations() {
  if (const char* e = std::getenv("RILL_BENCH_ITERATIONS"); e != nullptr && *e != '\0') {
    const long v = std::strtol(e, nullptr, 10);
    if (v > 0) return v;
  }
  return 1;
}

// add() registers fn(benchmark::State&) under name with the suite's settings: real time,
// milliseconds, iterations().
template <class Fn>
benchmark::internal::Benchmark* add(const std::string& name, Fn&& fn) {
  return benchmark::RegisterBenchmark(name.c_str(), std::forward<Fn>(fn))
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond)
      ->Iterations(iterations());
}

inline std::string cap_name(std::size_t cap) { return "cap" + std::to_string(cap); }
inline std::string workers_name(unsigned w) { return "workers" + std::to_string(w); }

// Layouts (issue 19): every row of linear_trivial, linear_heavy, fan_out_fan_in, heavy_tail
// and backpressure names how it moves items (sequential's rows name none: the loop is the
// limit that every layout compares with):
//   fused       source, stages and sink as nested calls in one thread of control, no
//               channel (rill's default; a goroutine's loop; one serial TBB filter)
//   peritem     one item per channel operation, as each library's users write it
//   batch<B>    hand-batched: up to B items per channel operation, in a channel of
//               link_slots() batches
//   auto        rill's links with no hints: batches that adapt, up to link_batch(cap)
// A batched link of `cap` items has rill's own link shape (shape_for in
// rill/pipeline/links.hpp): batches of link_batch(cap) items and a channel of
// link_slots(cap) batches, so that a batched row holds as many items in flight as rill's.
// par_map hands out at most 16 items at a time: fan workloads batch with max_batch 16.
inline std::size_t link_batch(std::size_t cap, std::size_t max_batch = 64) {
  return std::clamp<std::size_t>(cap / 3, 1, max_batch);
}
inline std::size_t link_slots(std::size_t cap, std::size_t max_batch = 64) {
  const std::size_t b = link_batch(cap, max_batch);
  return cap >= 2 * b ? (cap - 2 * b + 1) / b : 0;
}
inline std::string layout_name(std::size_t batch) {
  return batch == 1 ? "peritem" : "batch" + std::to_string(batch);
}
// The capacities of linear_trivial that get hand-batched rows (capacity 0 has batches of 1).
inline std::vector<std::size_t> batched_caps() { return {64, 1024}; }
inline constexpr std::size_t kFanBatch = 16;  // par_map's largest hand-out

// A run shorter than this is a warm-up, and then as many runs are timed as fill this long:
// in so short a run, a fresh process's first touches (page faults, cold caches, code paths
// taken for the first time) are a large share of the time, whatever the implementation,
// and one run held up by the machine (a neighbour, a fault storm) would be the whole
// sample. Go's harness (benchmarks/go/internal/bench) does the same.
inline constexpr double warm_up_below_ns = 20e6;

// measure() times run() once per iteration (when short: a warm-up, then runs until they
// span warm_up_below_ns); run() processes `items` items and returns the sink's result, which
// must equal `expected`.  It sets items_processed and ns_per_item (over the timed runs).
template <class Run>
void measure(benchmark::State& state, std::uint64_t items, std::uint64_t expected, Run&& run) {
  using clock = std::chrono::steady_clock;
  double total_ns = 0;
  std::uint64_t done = 0;
  for (auto _ : state) {
    auto t0 = clock::now();
    std::uint64_t got = run();
    double ns = std::chrono::duration<double, std::nano>(clock::now() - t0).count();
    std::uint64_t runs = 1;
    if (ns < warm_up_below_ns && got == expected) {
      ns = 0;
      runs = 0;
      do {
        t0 = clock::now();
        got = run();
        ns += std::chrono::duration<double, std::nano>(clock::now() - t0).count();
        ++runs;
      } while (got == expected && ns < warm_up_below_ns);
    }
    total_ns += ns;
    if (got != expected) {
      state.SkipWithError("wrong result: the pipeline lost, duplicated or reordered items");
      break;
    }
    done += items * runs;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
  if (done > 0) state.counters["ns_per_item"] = total_ns / static_cast<double>(done);
}

// measure_backpressure() is measure() for the backpressure workload: run(meter) returns the
// sink's sum and reports items through meter; it adds the counters peak_in_flight (items)
// and peak_rss_delta_kib (resident-set growth, KiB), the maxima over iterations.
template <class Run>
void measure_backpressure(benchmark::State& state, std::uint64_t items, Run&& run) {
  const std::uint64_t expected = expected_backpressure(items);
  double total_ns = 0;
  std::uint64_t done = 0;
  std::uint64_t peak_flight = 0;
  long peak_rss = 0;
  bool hwm_reset = true;
  for (auto _ : state) {
    flight_meter meter;
    rss_meter rss;
    rss.start();
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t got = run(meter);
    const auto t1 = std::chrono::steady_clock::now();
    total_ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
    peak_flight = std::max(peak_flight, meter.peak());
    peak_rss = std::max(peak_rss, rss.peak_delta_kib());
    hwm_reset = hwm_reset && rss.hwm_reset();
    if (got != expected) {
      state.SkipWithError("wrong result: the pipeline lost or duplicated items");
      break;
    }
    done += items;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
  if (done > 0) state.counters["ns_per_item"] = total_ns / static_cast<double>(done);
  state.counters["peak_in_flight"] = static_cast<double>(peak_flight);
  state.counters["peak_rss_delta_kib"] = static_cast<double>(peak_rss);
  if (!hwm_reset) state.counters["rss_hwm_not_reset"] = 1;
}

// ---- cost_sweep -------------------------------------------------------------------------------
// The cells of the cost sweep (benchmarks/compare/cost_sweep/, benchmarks/go/cost_sweep/): an
// item cost of ~1 ns, 100 ns, 10 us, 1 ms of CPU, or a 1 ms sleep, through 3 linear stages or a
// par_map over W; few items; heavy-tailed costs; a trickle source with a 1 ms period.

enum class cost { c1ns, c100ns, c10us, c1ms, sleep1ms };
inline constexpr cost kCosts[] = {cost::c1ns, cost::c100ns, cost::c10us, cost::c1ms,
                                  cost::sleep1ms};

inline const char* cost_token(cost c) {
  switch (c) {
    case cost::c1ns:
      return "cost1ns";
    case cost::c100ns:
      return "cost100ns";
    case cost::c10us:
      return "cost10us";
    case cost::c1ms:
      return "cost1ms";
    case cost::sleep1ms:
      return "sleep1ms";
  }
  return "?";
}
// cost_ns(c): the nominal cost of one stage on one item (1 ms for sleep1ms, which uses no CPU).
inline double cost_ns(cost c) {
  switch (c) {
    case cost::c1ns:
      return 1;
    case cost::c100ns:
      return 100;
    case cost::c10us:
      return 10'000;
    case cost::c1ms:
      return 1'000'000;
    case cost::sleep1ms:
      return 1'000'000;
  }
  return 0;
}

// spin_iters(ns): the work() iteration count of about ns nanoseconds: calibrated_iters() is
// ~1 us, so 100 ns is a tenth of it (at least 1 iteration).
inline std::uint64_t spin_iters(double ns) {
  return std::max<std::uint64_t>(1, static_cast<std::uint64_t>(std::llround(
                                        static_cast<double>(calibrated_iters()) * ns / 1000.0)));
}
inline std::uint64_t spin_ns(std::uint64_t v, double ns) { return work(v, spin_iters(ns)); }

// cpu_stage<C>: one stage of cost C on one item.  c1ns is trivial_map itself (v*2+1); the
// others are work() for spin_iters(cost_ns(C)), fixed when the functor is made.
template <cost C>
struct cpu_stage {
  static_assert(C != cost::sleep1ms, "cpu_stage: sleep1ms is sleep_stage");
  std::uint64_t iters = C == cost::c1ns ? 0 : spin_iters(cost_ns(C));
  std::uint64_t operator()(std::uint64_t v) const {
    if constexpr (C == cost::c1ns) {
      return trivial_map(v);
    } else {
      return work(v, iters);
    }
  }
};
// sleep_stage: the I/O stage: sleep() (each implementation's own 1 ms sleep: a fiber's or a
// thread's), then trivial_map(v).  Its result is the same as cpu_stage<c1ns>'s.
template <class Sleep>
struct sleep_stage {
  Sleep sleep;
  std::uint64_t operator()(std::uint64_t v) const {
    sleep();
    return trivial_map(v);
  }
};
// with_cost_stage(c, sleep, f): f(the stage functor of cost c); sleep is a callable that
// sleeps 1 ms the implementation's way (used for cost::sleep1ms only).
template <class Sleep, class F>
void with_cost_stage(cost c, Sleep sleep, F&& f) {
  switch (c) {
    case cost::c1ns:
      f(cpu_stage<cost::c1ns>{});
      return;
    case cost::c100ns:
      f(cpu_stage<cost::c100ns>{});
      return;
    case cost::c10us:
      f(cpu_stage<cost::c10us>{});
      return;
    case cost::c1ms:
      f(cpu_stage<cost::c1ms>{});
      return;
    case cost::sleep1ms:
      f(sleep_stage<Sleep>{sleep});
      return;
  }
}
// reference_stage(c, v): what one stage of cost c computes, without sleeping (for the
// expected results).
inline std::uint64_t reference_stage(cost c, std::uint64_t v) {
  switch (c) {
    case cost::c1ns:
    case cost::sleep1ms:
      return trivial_map(v);
    default:
      return work(v, spin_iters(cost_ns(c)));
  }
}

// heavy_tail_iters(i): item i's cost in heavytail: seeded (splitmix64 of i ^ kHeavyTailSeed),
// 1 item in 100 costs 1000x calibrated_iters() (~1 ms), the others calibrated_iters() (~1 us).
inline constexpr std::uint64_t kHeavyTailSeed = 0x5EEDC057ULL;
inline std::uint64_t mix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}
inline bool heavy_tail_is_slow(std::uint64_t i) { return mix64(i ^ kHeavyTailSeed) % 100 == 0; }
inline std::uint64_t heavy_tail_iters(std::uint64_t i) {
  return heavy_tail_is_slow(i) ? 1000 * calibrated_iters() : calibrated_iters();
}
inline std::uint64_t heavy_tail_map(std::uint64_t v) { return work(v, heavy_tail_iters(v)); }

// Item counts (full / quick): each cell's run takes ~50-300 ms on 2 cores in a full run.
inline std::uint64_t cs_items_linear3(cost c) {
  switch (c) {
    case cost::c1ns:
      return quick() ? 100'000 : 1'000'000;
    case cost::c100ns:
      return quick() ? 25'000 : 500'000;
    case cost::c10us:
      return quick() ? 500 : 5'000;
    case cost::c1ms:
    case cost::sleep1ms:
      return quick() ? 10 : 100;
  }
  return 0;
}
// par_map over W: sleep1ms runs 100 items per worker, so that every W takes ~100 ms.
inline std::uint64_t cs_items_parmap(cost c, unsigned workers) {
  switch (c) {
    case cost::c1ns:
      return quick() ? 100'000 : 1'000'000;
    case cost::c100ns:
      return quick() ? 50'000 : 1'000'000;
    case cost::c10us:
      return quick() ? 1'000 : 10'000;
    case cost::c1ms:
      return quick() ? 20 : 200;
    case cost::sleep1ms:
      return (quick() ? 10 : 100) * std::uint64_t{workers};
  }
  return 0;
}
// few: `rounds` fresh pipelines of n items each (8 or 40 items of 1 ms) in one timed run;
// items = rounds * n: 160 in a full run of cost1ms (on 2 cores: ~80 ms), 640 of sleep1ms
// (over 8 sleepers: ~80 ms).
inline constexpr unsigned kFewSizes[] = {8, 40};
inline unsigned cs_few_rounds(unsigned n, cost c) {
  if (quick()) return n >= 40 ? 1 : 2;
  return (n >= 40 ? 4 : 20) * (c == cost::sleep1ms ? 4 : 1);
}
inline std::uint64_t cs_items_heavytail() { return quick() ? 1'000 : 10'000; }
inline std::uint64_t cs_items_trickle() { return quick() ? 30 : 200; }
inline constexpr auto kTricklePeriod = std::chrono::milliseconds(1);
inline constexpr auto kSleepCost = std::chrono::milliseconds(1);

// Workers of each cell: linear3 at 1 and hardware_threads(); par_map at worker_counts(), and
// for sleep1ms 8 as well (sleeping workers hold no core); few at hardware_threads() (CPU) and
// 8 (sleep); heavytail and trickle at hardware_threads().
inline std::vector<unsigned> cs_linear3_workers() {
  const unsigned hw = hardware_threads();
  return hw == 1 ? std::vector<unsigned>{1} : std::vector<unsigned>{1, hw};
}
inline std::vector<unsigned> cs_parmap_workers(cost c) {
  std::vector<unsigned> w = worker_counts();
  if (c == cost::sleep1ms && std::find(w.begin(), w.end(), 8u) == w.end()) {
    w.push_back(8);
    std::sort(w.begin(), w.end());
  }
  return w;
}
inline unsigned cs_few_workers(cost c) { return c == cost::sleep1ms ? 8 : hardware_threads(); }
inline constexpr cost kFewCosts[] = {cost::c1ms, cost::sleep1ms};

// Cell words: "linear3_cost10us", "parmap_sleep1ms", "few8_cost1ms", "heavytail",
// "trickle_linear3", "trickle_parmap"; config = [variant_]cell_workersW.
inline std::string cs_config(const std::string& cell, unsigned workers,
                             const std::string& variant = "") {
  return (variant.empty() ? "" : variant + "_") + cell + "_" + workers_name(workers);
}
// run_workers(W): the threads an implementation that multiplexes (rill, Go, Boost.Fiber) uses
// for a fan-out of W: W, but no more than the cores (par_map over 8 sleeping workers runs on
// the machine's cores).  Thread-based peers (TBB) use W threads.
inline unsigned cs_run_workers(unsigned workers) { return std::min(workers, hardware_threads()); }

// Expected sums (wrapping), computed once per cell and item count.
inline std::uint64_t cs_expected_linear3(cost c, std::uint64_t n) {
  const std::string key = std::string("cs_linear3_") + cost_token(c);
  return detail::cached(key.c_str(), n, [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
      acc = sum(acc, reference_stage(c, reference_stage(c, reference_stage(c, i))));
    }
    return acc;
  });
}
inline std::uint64_t cs_expected_parmap(cost c, std::uint64_t n) {
  const std::string key = std::string("cs_parmap_") + cost_token(c);
  return detail::cached(key.c_str(), n, [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc = sum(acc, reference_stage(c, i));
    return acc;
  });
}
// few: the sum over `rounds` rounds of n items each.
inline std::uint64_t cs_expected_few(cost c, unsigned n, unsigned rounds) {
  return cs_expected_parmap(c, n) * rounds;
}
inline std::uint64_t cs_expected_heavytail(std::uint64_t n) {
  return detail::cached("cs_heavytail", n, [&] {
    std::uint64_t acc = 0;
    for (std::uint64_t i = 0; i < n; ++i) acc = sum(acc, heavy_tail_map(i));
    return acc;
  });
}
// ---- the fan-out families: one shape, two distributions of cost ------------------------------
//
// fan_out_fan_in and heavy_tail are the same program (a source, W workers mapping items in
// any order, a sink that sums them) over two costs. Each implementation's file registers
// both with for_each_fan(f), which calls f(family) with a type that has:
//   name                  the workload's name
//   map(v)                an item's work
//   items(), expected(n)  the item count, the sink's sum
// fan_out_fan_in: fan_map (uneven, repeating: see fan_iters). heavy_tail: heavy_tail_map
// (a seeded few items far costlier than the rest: see heavy_tail_iters), so that a worker
// that holds a slow item while the others idle shows (load balance).
struct fan_uneven {
  static constexpr const char* name = "fan_out_fan_in";
  static std::uint64_t map(std::uint64_t v) { return fan_map(v); }
  static std::uint64_t items() { return items_fan(); }
  static std::uint64_t expected(std::uint64_t n) { return expected_fan(n); }
};
struct fan_heavy_tail {
  static constexpr const char* name = "heavy_tail";
  static std::uint64_t map(std::uint64_t v) { return heavy_tail_map(v); }
  static std::uint64_t items() { return cs_items_heavytail(); }
  static std::uint64_t expected(std::uint64_t n) { return cs_expected_heavytail(n); }
};
template <class F>
void for_each_fan(F&& f) {
  f(fan_uneven{});
  f(fan_heavy_tail{});
}

// trickle: the linear form maps trivial_map three times, the par_map form once.
inline std::uint64_t cs_expected_trickle(bool linear, std::uint64_t n) {
  std::uint64_t acc = 0;
  for (std::uint64_t i = 0; i < n; ++i) {
    acc = sum(acc, linear ? trivial_map(trivial_map(trivial_map(i))) : trivial_map(i));
  }
  return acc;
}

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// trickle_item: a trickle item and the steady-clock time it was produced at.
struct trickle_item {
  std::uint64_t v = 0;
  std::int64_t born_ns = 0;
};

// latency_recorder: the latencies (sink time - production time) of one run's items, recorded
// by one sink at a time.
class latency_recorder {
 public:
  explicit latency_recorder(std::size_t n = 0) { ns_.reserve(n); }
  void record(const trickle_item& item) { ns_.push_back(now_ns() - item.born_ns); }
  void record_ns(std::int64_t ns) { ns_.push_back(ns); }
  [[nodiscard]] const std::vector<std::int64_t>& samples() const { return ns_; }

 private:
  std::vector<std::int64_t> ns_;
};

// percentile_ns(sorted, q): the q-quantile (nearest rank) of sorted samples; 0 if none.
inline double percentile_ns(const std::vector<std::int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const auto rank = static_cast<std::size_t>(std::ceil(q * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::min(sorted.size() - 1, rank == 0 ? 0 : rank - 1)]);
}

// measure_latency() is measure() for the trickle cells: run(recorder) returns the sink's sum
// and records each item's latency; it adds the counters p50_us, p99_us and max_us over every
// item of every iteration.
template <class Run>
void measure_latency(benchmark::State& state, std::uint64_t items, std::uint64_t expected,
                     Run&& run) {
  double total_ns = 0;
  std::uint64_t done = 0;
  std::vector<std::int64_t> all;
  for (auto _ : state) {
    latency_recorder rec(items);
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t got = run(rec);
    const auto t1 = std::chrono::steady_clock::now();
    total_ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
    if (got != expected || rec.samples().size() != items) {
      state.SkipWithError("wrong result: the pipeline lost, duplicated or reordered items");
      break;
    }
    all.insert(all.end(), rec.samples().begin(), rec.samples().end());
    done += items;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(done));
  if (done == 0) return;
  state.counters["ns_per_item"] = total_ns / static_cast<double>(done);
  std::sort(all.begin(), all.end());
  state.counters["p50_us"] = percentile_ns(all, 0.50) / 1000.0;
  state.counters["p99_us"] = percentile_ns(all, 0.99) / 1000.0;
  state.counters["max_us"] = static_cast<double>(all.back()) / 1000.0;
}

}  // namespace bench
