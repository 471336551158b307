// observe_ab: what seeing inside a pipeline costs, as A/B pairs in one process, interleaved
// (A B A B ...: a slow drift of the machine hits both alike). Medians of --reps runs.
//
//   observe_ab [--reps N] [--quick]
//
// Workloads (the budget: metrics <= 3%, progress <= 3% more):
//   linear_trivial  from(iota) | map(v*2+1) | reduce(+), a fiber per stage (fusion off),
//                   buffers of 1024, 2 workers: links move batches
//   fused3          from(iota) | map | map | map | reduce, cost 1 ns per stage, fused into
//                   one fiber ({.fuse = true}), 1 worker: the per-item path at its cheapest
// Variants: metrics off (run_options::metrics = false), metrics on (the default), progress
// on (its line goes to stderr, which the script sends to /dev/null: a plain line every few
// seconds), trace on (rill::trace_to around the run).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <ranges>
#include <rill/rill.hpp>
#include <string>
#include <vector>

namespace {

enum class variant { off, on, progress, trace };
const char* name(variant v) {
  switch (v) {
    case variant::off:
      return "metrics off";
    case variant::on:
      return "metrics on";
    case variant::progress:
      return "progress on";
    case variant::trace:
      return "trace on";
  }
  return "?";
}

std::uint64_t f(std::uint64_t v) { return v * 2 + 1; }

rill::run_options opts(variant v, bool fusion) {
  rill::run_options o;
  o.fusion = fusion;
  o.metrics = v != variant::off;
  o.progress = v == variant::progress;
  return o;
}

// ns_per_item(): one run of a workload, timed.
double linear_trivial(variant v, std::uint64_t n) {
  rill::options ro;
  ro.workers = 2;
  std::optional<rill::trace_session> t;
  if (v == variant::trace) t.emplace("/tmp/observe_ab_trace.json");
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t r = rill::run(
      [&] {
        return (rill::from(std::views::iota(std::uint64_t{0}, n), {.buffer = 1024}) |
                rill::map(f, {.buffer = 1024}) | rill::reduce(std::uint64_t{0}, std::plus<>{}))
            .run(opts(v, false));
      },
      ro);
  const auto t1 = std::chrono::steady_clock::now();
  if (r != n * n) std::abort();
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(n);
}

double fused3(variant v, std::uint64_t n) {
  rill::options ro;
  ro.workers = 1;
  std::optional<rill::trace_session> t;
  if (v == variant::trace) t.emplace("/tmp/observe_ab_trace.json");
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t r = rill::run(
      [&] {
        return (rill::from(std::views::iota(std::uint64_t{0}, n)) | rill::map(f, {.fuse = true}) |
                rill::map(f, {.fuse = true}) | rill::map(f, {.fuse = true}) |
                rill::reduce(std::uint64_t{0}, std::plus<>{}))
            .run(opts(v, true));
      },
      ro);
  const auto t1 = std::chrono::steady_clock::now();
  if (r == 0) std::abort();
  return std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(n);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  int reps = 7;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  }
  const std::uint64_t n_linear = quick ? 2'000'000 : 20'000'000;
  const std::uint64_t n_fused = quick ? 20'000'000 : 200'000'000;
  const variant vs[] = {variant::off, variant::on, variant::progress, variant::trace};
  struct workload {
    const char* name;
    double (*run)(variant, std::uint64_t);
    std::uint64_t n;
  } ws[] = {{"linear_trivial (fiber per stage, cap 1024, 2 workers)", linear_trivial, n_linear},
            {"fused3 (3 x 1 ns stages fused, 1 worker)", fused3, n_fused}};
  for (const workload& w : ws) {
    std::vector<std::vector<double>> t(std::size(vs));
    w.run(variant::on, w.n / 10);  // warm up
    for (int r = 0; r < reps; ++r) {
      for (std::size_t k = 0; k < std::size(vs); ++k) t[k].push_back(w.run(vs[k], w.n));
    }
    const double base = median(t[0]);
    std::printf("%s, %d runs each, interleaved:\n", w.name, reps);
    std::printf("  %-12s %10s %8s %16s\n", "variant", "ns/item", "ratio", "spread (min-max)");
    for (std::size_t k = 0; k < std::size(vs); ++k) {
      const double m = median(t[k]);
      const auto [lo, hi] = std::minmax_element(t[k].begin(), t[k].end());
      std::printf("  %-12s %10.3f %8.3f %7.3f - %.3f\n", name(vs[k]), m, m / base, *lo, *hi);
    }
    std::fflush(stdout);
  }
}
