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
//
// On a shared 2-core VM one run's time moves by tens of % with the neighbours, more than
// any effect measured here. So each repetition runs every variant back to back (short runs,
// the order rotated per repetition), and the cost of a variant is the median over the
// repetitions of its time divided by the same repetition's "metrics off" time, with the
// quartiles of that ratio: a drift slower than one repetition cancels in each ratio.
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

// quantile(v, q): the q-quantile of v, linear between neighbours.
double quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  const double at = q * static_cast<double>(v.size() - 1);
  const auto lo = static_cast<std::size_t>(at);
  const std::size_t hi = std::min(lo + 1, v.size() - 1);
  return v[lo] + (v[hi] - v[lo]) * (at - static_cast<double>(lo));
}
double median(const std::vector<double>& v) { return quantile(v, 0.5); }

}  // namespace

int main(int argc, char** argv) {
  int reps = 21;
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) reps = std::atoi(argv[++i]);
    if (std::strcmp(argv[i], "--quick") == 0) quick = true;
  }
  const std::uint64_t n_linear = quick ? 1'000'000 : 5'000'000;
  const std::uint64_t n_fused = quick ? 10'000'000 : 50'000'000;
  const variant vs[] = {variant::off, variant::on, variant::progress, variant::trace};
  constexpr std::size_t nv = std::size(vs);
  struct workload {
    const char* name;
    double (*run)(variant, std::uint64_t);
    std::uint64_t n;
  } ws[] = {{"linear_trivial (fiber per stage, cap 1024, 2 workers)", linear_trivial, n_linear},
            {"fused3 (3 x 1 ns stages fused, 1 worker)", fused3, n_fused}};
  for (const workload& w : ws) {
    std::vector<std::vector<double>> t(nv), ratio(nv);
    w.run(variant::on, w.n / 10);  // warm up
    for (int r = 0; r < reps; ++r) {
      double now[nv];
      for (std::size_t i = 0; i < nv; ++i) {
        const std::size_t k = (i + static_cast<std::size_t>(r)) % nv;
        now[k] = w.run(vs[k], w.n);
      }
      for (std::size_t k = 0; k < nv; ++k) {
        t[k].push_back(now[k]);
        ratio[k].push_back(now[k] / now[0]);
      }
    }
    std::printf("%s, %d repetitions, each variant once per repetition:\n", w.name, reps);
    std::printf("  %-12s %10s %18s %22s\n", "variant", "ns/item", "spread (min-max)",
                "vs off: median [p25-p75]");
    for (std::size_t k = 0; k < nv; ++k) {
      const auto [lo, hi] = std::minmax_element(t[k].begin(), t[k].end());
      std::printf("  %-12s %10.3f %8.3f - %-8.3f %8.3f [%.3f-%.3f]\n", name(vs[k]), median(t[k]),
                  *lo, *hi, median(ratio[k]), quantile(ratio[k], 0.25), quantile(ratio[k], 0.75));
    }
    std::fflush(stdout);
  }
}
