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
//
// The source of every workload yields the integers 0 .. n-1 in order.  Names are
// `<workload>/<impl>/<config>`; the config holds the canonical tokens cap<C>, workers<W> and
// ordered|unordered that the report matches across implementations (a token an
// implementation lacks matches any value), plus implementation-specific words.
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

// measure() times run() once per iteration; run() processes `items` items and returns the
// sink's result, which must equal `expected`.  It sets items_processed and ns_per_item.
template <class Run>
void measure(benchmark::State& state, std::uint64_t items, std::uint64_t expected, Run&& run) {
  double total_ns = 0;
  std::uint64_t done = 0;
  for (auto _ : state) {
    const auto t0 = std::chrono::steady_clock::now();
    const std::uint64_t got = run();
    const auto t1 = std::chrono::steady_clock::now();
    total_ns += std::chrono::duration<double, std::nano>(t1 - t0).count();
    if (got != expected) {
      state.SkipWithError("wrong result: the pipeline lost, duplicated or reordered items");
      break;
    }
    done += items;
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

}  // namespace bench
