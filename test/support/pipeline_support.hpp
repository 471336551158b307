// Test support for the pipeline DSL, shared by test/unit/pipeline*_test.cpp and
// test/stress/pipeline_stress.cpp: iteration scaling under sanitizers, a counting item type,
// a goleak-style leak gate for runs on the default runtime, and a random buffer size.
//
// Catch2 v2 is not thread-safe: assertions go in the main fiber (or the test's thread)
// only. Stage functions record what they see in atomics or in per-run state that the main
// fiber checks after run() returns.
#pragma once

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <iterator>
#include <numeric>
#include <random>
#include <range/v3/view/iota.hpp>
#include <rill/rill.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/run_with.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RILL_PIPELINE_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RILL_PIPELINE_TEST_SANITIZED 1
#endif
#endif
#ifndef RILL_PIPELINE_TEST_SANITIZED
#define RILL_PIPELINE_TEST_SANITIZED 0
#endif

namespace test {

// sanitized: built with ASan or TSan (iteration counts are cut, TSan is ~10x slower).
inline constexpr bool sanitized = RILL_PIPELINE_TEST_SANITIZED != 0;

// scaled(n): n normally, n / div (at least 1) under a sanitizer.
constexpr int scaled(int n, int div = 8) { return sanitized ? (n / div > 0 ? n / div : 1) : n; }

// declared_fibers(s): the run's fibers with the splits it made from measured time joined
// back to the fiber they left: the layout that the pipeline's declaration fixes
// (stage_boundary, .fuse = false, par_map's workers). A loaded machine can make cheap stages
// measure slow enough to split, so tests of the wiring compare this, not s.fibers.
inline std::vector<std::string> declared_fibers(const rill::pipeline_stats& s) {
  const auto first = [](const std::string& f) { return f.substr(0, f.find('|')); };
  const auto last = [](const std::string& f) { return f.substr(f.rfind('|') + 1); };
  std::vector<std::string> out = s.fibers;
  for (std::size_t k = 1; k < s.stages.size(); ++k) {
    if (s.stages[k].decision.rfind("split", 0) != 0) continue;
    const auto split = std::find_if(out.begin(), out.end(),
                                    [&](const auto& f) { return first(f) == s.stages[k].name; });
    const auto from = std::find_if(out.begin(), out.end(),
                                   [&](const auto& f) { return last(f) == s.stages[k - 1].name; });
    if (split == out.end() || from == out.end() || split == from) continue;
    *from += "|" + *split;
    out.erase(split);
  }
  return out;
}

// tracked: an item that counts its live instances, to prove that no item outlives a run.
struct tracked {
  static inline std::atomic<long> live{0};
  int v = 0;
  tracked() { ++live; }
  explicit tracked(int x) : v(x) { ++live; }
  tracked(const tracked& o) : v(o.v) { ++live; }
  tracked(tracked&& o) noexcept : v(o.v) { ++live; }
  tracked& operator=(const tracked&) = default;
  tracked& operator=(tracked&&) noexcept = default;
  ~tracked() { --live; }
};

// boom: the exception that test stage functions throw; `at` says which item threw.
struct boom : std::runtime_error {
  explicit boom(long at) : std::runtime_error("boom at " + std::to_string(at)), at(at) {}
  long at;
};

// wait_no_leaks(): the leak gate for runs on the default runtime, from a plain thread. A
// run's fibers are counted as gone when its run() or wait() returns; for anything else
// still ending when a test returns, poll as goleak does (up to 2 s), then check.
inline void wait_no_leaks() {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (std::chrono::steady_clock::now() < deadline) {
    const rill::stats s = rill::global_stats();
    if (s.live_fibers == 0 && s.live_stacks == 0 && s.pending_timers == 0) break;
    std::this_thread::yield();
  }
  check_no_leaks();
}

// leak_gate: for tests that run pipelines on the default runtime from the test's thread:
// wait_no_leaks() when the test ends, so its fibers are gone before the next test (in the
// same process) checks for leaks, and so that a leak is reported by the test that caused it.
struct leak_gate {
  leak_gate() = default;
  leak_gate(const leak_gate&) = delete;
  leak_gate& operator=(const leak_gate&) = delete;
  ~leak_gate() { wait_no_leaks(); }
};

// random_buffer(): a stage buffer size, small ones (the edge cases) most often.
inline std::size_t random_buffer(std::mt19937& rng) {
  static constexpr std::size_t sizes[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 64, 100, 256, 1000};
  return sizes[std::uniform_int_distribution<std::size_t>(0, std::size(sizes) - 1)(rng)];
}

// seed(): a fresh seed per test case, printed on failure (set RILL_TEST_SEED to replay).
inline std::uint32_t seed() {
  if (const char* s = std::getenv("RILL_TEST_SEED"))
    return static_cast<std::uint32_t>(std::strtoul(s, nullptr, 10));
  return std::random_device{}();
}

// iota_vec(n, from): {from, from + 1, ..., from + n - 1}.
inline std::vector<int> iota_vec(int n, int from = 0) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

// churn(): a stage function that parks for a while on some items, so that fibers
// interleave and finish out of order.
inline int churn(int v) {
  for (int i = 0; i < (v * 7) % 5; ++i) rill::this_fiber::yield();
  return v;
}

// no_default: an item type with no default constructor.
struct no_default {
  explicit no_default(int x) : v(x) {}
  int v;
};

// sieve(count): the first `count` primes by Go's concurrent sieve: a generator feeds a chain of
// filters, one pipeline (one fiber) per prime found so far: from(ch) | filter(not a multiple) |
// to(next).
inline std::vector<int> sieve(int count) {
  std::vector<int> primes;
  rill::chan<int> ch;
  auto gen = (rill::from(ranges::views::iota(2)) | rill::to(ch)).start();
  std::vector<rill::pipeline_handle<void>> filters;
  for (int i = 0; i < count; ++i) {
    const int prime = *ch.recv();
    primes.push_back(prime);
    rill::chan<int> next;
    filters.push_back(
        (rill::from(ch) | rill::filter([prime](int v) { return v % prime != 0; }) | rill::to(next))
            .start());
    ch = next;
  }
  gen.cancel();  // closes the generator's channel; the close travels down the chain
  while (ch.recv()) {
  }
  CHECK_THROWS_AS(gen.wait(), rill::pipeline_cancelled);  // Catch2: call from the main fiber
  for (auto& f : filters) f.wait();
  return primes;
}

// primes_by_trial_division(count): the first `count` primes, the plain way.
inline std::vector<int> primes_by_trial_division(int count) {
  std::vector<int> p;
  for (int v = 2; static_cast<int>(p.size()) < count; ++v) {
    if (std::all_of(p.begin(), p.end(), [v](int q) { return v % q != 0; })) p.push_back(v);
  }
  return p;
}

}  // namespace test
