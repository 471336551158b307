// Randomized tests of the pipeline DSL: every pipeline computes what the same plain range-v3
// loop computes, whatever the inputs, buffer sizes, worker counts and fusion; an exception
// at a random item in any stage position surfaces unchanged and leaks nothing; cancellation
// at a random moment ends every run; take and a slow sink keep the source within the bound
// of the links (concepts.hpp). The seed is printed on failure; RILL_TEST_SEED replays it.
#include <algorithm>
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <functional>
#include <limits>
#include <optional>
#include <random>
#include <range/v3/numeric/accumulate.hpp>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/chunk.hpp>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/for_each.hpp>
#include <range/v3/view/iota.hpp>
#include <range/v3/view/join.hpp>
#include <range/v3/view/repeat_n.hpp>
#include <range/v3/view/take.hpp>
#include <range/v3/view/transform.hpp>
#include <ranges>
#include <rill/pipeline.hpp>
#include <rill/rill.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/pipeline_support.hpp"
#include "support/run_with.hpp"

namespace rv = ranges::views;

namespace {

// The business logic of the random pipelines: plain functions, as users write them.
int f(int x) { return 3 * x - 7; }
bool p(int x) { return x % 3 != 0; }
int copies(int x) { return (x < 0 ? -x : x) % 4; }
std::vector<int> g(int x) { return std::vector<int>(static_cast<std::size_t>(copies(x)), x); }
long slow(int x) {  // parks on some items, so par_map workers finish out of order
  for (int i = 0; i < (x & 3); ++i) rill::this_fiber::yield();
  return 2L * x;
}

struct rand_gen {
  std::mt19937 rng;
  int between(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); }
  bool coin() { return between(0, 1) == 1; }
  std::size_t buffer() { return test::random_buffer(rng); }
  unsigned workers() {
    return std::array<unsigned, 3>{1, 2, 4}[static_cast<std::size_t>(between(0, 2))];
  }
  std::vector<int> input(int max_size) {
    std::vector<int> v(static_cast<std::size_t>(between(0, max_size)));
    for (int& x : v) x = between(-1000, 1000);
    return v;
  }
};

std::vector<long> sorted(std::vector<long> v) {
  std::sort(v.begin(), v.end());
  return v;
}

// One random case of each pipeline shape, run with fusion on and off; each CHECK compares
// with range-v3.
void random_case(rand_gen& r) {
  const std::vector<int> v = r.input(1500);
  const bool fusion = r.coin();
  const rill::run_options o{.fusion = fusion};
  INFO("input size " << v.size() << ", fusion " << fusion);

  {  // map | filter | flat_map | tap | take
    const auto n = static_cast<std::size_t>(r.between(0, 2000));
    long tapped = 0;
    auto pipe = rill::from(v) | rill::map(f, {.buffer = r.buffer(), .fuse = r.coin()}) |
                rill::filter(p, {.buffer = r.buffer(), .fuse = r.coin()}) |
                rill::flat_map(g, {.buffer = r.buffer(), .fuse = r.coin()}) |
                rill::tap([&tapped](int) { ++tapped; }, {.buffer = r.buffer(), .fuse = r.coin()}) |
                rill::take(n, {.buffer = r.buffer(), .fuse = r.coin()}) | rill::collect();
    const std::vector<int> expect = v | rv::transform(f) | rv::filter(p) |
                                    rv::for_each([](int x) { return rv::repeat_n(x, copies(x)); }) |
                                    rv::take(n) | ranges::to<std::vector>();
    CHECK(pipe.run(o) == expect);
    CHECK(tapped >= static_cast<long>(expect.size()));
  }
  {  // batch | map(sum) | reduce
    const auto k = static_cast<std::size_t>(r.between(1, 70));
    auto pipe = rill::from(v) | rill::batch(k, {.buffer = r.buffer(), .fuse = r.coin()}) |
                rill::map([](const std::vector<int>& b) { return ranges::accumulate(b, 0L); },
                          {.buffer = r.buffer(), .fuse = r.coin()}) |
                rill::reduce(std::vector<long>{}, [](std::vector<long> acc, long s) {
                  acc.push_back(s);
                  return acc;
                });
    const std::vector<long> expect =
        v | rv::chunk(k) | rv::transform([](auto&& b) { return ranges::accumulate(b, 0L); }) |
        ranges::to<std::vector>();
    CHECK(pipe.run(o) == expect);
  }
  {  // batch | unbatch | par_map (ordered) | filter
    const auto k = static_cast<std::size_t>(r.between(1, 40));
    const unsigned w = r.workers();
    auto pipe =
        rill::from(v) | rill::batch(k, {.buffer = r.buffer(), .fuse = r.coin()}) |
        rill::unbatch({.buffer = r.buffer(), .fuse = r.coin()}) |
        rill::par_map(slow, {.workers = w, .ordered = true, .buffer = r.buffer()}) |
        rill::filter([](long x) { return x % 4 == 0; }, {.buffer = r.buffer(), .fuse = r.coin()}) |
        rill::collect();
    const std::vector<long> expect =
        v | rv::chunk(k) | rv::join | rv::transform([](int x) { return 2L * x; }) |
        rv::filter([](long x) { return x % 4 == 0; }) | ranges::to<std::vector>();
    CHECK(pipe.run(o) == expect);
  }
  {  // par_map (unordered) | map; the multiset of results
    const unsigned w = r.workers();
    auto pipe = rill::from(v) |
                rill::par_map(slow, {.workers = w, .ordered = false, .buffer = r.buffer()}) |
                rill::map([](long x) { return x + 1; }, {.buffer = r.buffer(), .fuse = r.coin()}) |
                rill::collect();
    const std::vector<long> expect =
        v | rv::transform([](int x) { return 2L * x + 1; }) | ranges::to<std::vector>();
    CHECK(sorted(pipe.run(o)) == sorted(expect));
  }
  {  // broadcast: each branch computes what its own range-v3 loop computes
    const auto n = static_cast<std::size_t>(r.between(0, 2000));
    auto pipe =
        rill::from(v) | rill::map(f, {.buffer = r.buffer(), .fuse = r.coin()}) |
        rill::broadcast(rill::filter(p, {.buffer = r.buffer(), .fuse = r.coin()}) | rill::collect(),
                        rill::take(n, {.buffer = r.buffer(), .fuse = r.coin()}) | rill::count(),
                        rill::flat_map(g, {.buffer = r.buffer(), .fuse = r.coin()}) |
                            rill::reduce(0L, std::plus<>{}));
    const auto [kept, taken, total] = pipe.run(o);
    const std::vector<int> mapped = v | rv::transform(f) | ranges::to<std::vector>();
    CHECK(kept == (mapped | rv::filter(p) | ranges::to<std::vector>()));
    CHECK(taken == std::min(n, mapped.size()));
    CHECK(total ==
          ranges::accumulate(
              mapped | rv::for_each([](int x) { return rv::repeat_n(x, copies(x)); }), 0L));
  }
  {  // merge of two sources: each keeps its order; together, every item once
    const std::vector<int> w = r.input(500);
    auto pipe =
        rill::merge(rill::from(v) | rill::map([](int x) { return 2 * x; }, {.fuse = r.coin()}),
                    rill::from(w) | rill::map([](int x) { return 2 * x + 1; })) |
        rill::collect();
    const std::vector<int> out = pipe.run(o);
    std::vector<int> evens, odds;
    for (int x : out) (x % 2 == 0 ? evens : odds).push_back(x);
    CHECK(evens == (v | rv::transform([](int x) { return 2 * x; }) | ranges::to<std::vector>()));
    CHECK(odds == (w | rv::transform([](int x) { return 2 * x + 1; }) | ranges::to<std::vector>()));
  }
  {  // chan -> pipeline -> chan, with a fiber on each end
    rill::chan<int> in(r.buffer()), out(r.buffer());
    rill::go([in, v]() mutable {
      for (int x : v) in.send(x);
      in.close();
    });
    std::vector<int> got;
    rill::wait_group wg;
    wg.add(1);
    rill::go([out, &got, &wg]() mutable {
      for (int x : out) got.push_back(x);
      wg.done();
    });
    (rill::from(in) | rill::map(f, {.buffer = r.buffer(), .fuse = r.coin()}) |
     rill::filter(p, {.buffer = r.buffer(), .fuse = r.coin()}) | rill::to(out))
        .run(o);
    wg.wait();
    CHECK(got == (v | rv::transform(f) | rv::filter(p) | ranges::to<std::vector>()));
  }
  {  // generate | take | count / reduce
    std::size_t i = 0;
    const auto n = static_cast<std::size_t>(r.between(0, 2000));
    auto pipe = rill::generate([&]() -> std::optional<int> {
                  if (i == v.size()) return std::nullopt;
                  return v[i++];
                }) |
                rill::stage_boundary | rill::take(n) | rill::reduce(0L, std::plus<>{});
    CHECK(pipe.run(o) == ranges::accumulate(v | rv::take(n), 0L));
    i = 0;
    auto counted = rill::generate([&]() -> std::optional<int> {
                     if (i == v.size()) return std::nullopt;
                     return v[i++];
                   }) |
                   rill::filter(p, {.fuse = r.coin()}) | rill::count();
    CHECK(counted.run(o) == static_cast<std::size_t>(ranges::distance(v | rv::filter(p))));
  }
}

// ---- exception at item k ---------------------------------------------------------------

// item: a value that remembers which input produced it, and counts its instances.
struct item {
  int src = 0;
  test::tracked t;
};

enum class position {
  source,
  map,
  filter,
  flat_map,
  tap,
  par_map_ordered,
  par_map_unordered,
  after_batch,
  late_map,
  reduce,
  count_
};

const char* name(position pos) {
  static const char* names[] = {"source",
                                "map",
                                "filter",
                                "flat_map",
                                "tap",
                                "par_map ordered",
                                "par_map unordered",
                                "flat_map after batch",
                                "late map",
                                "reduce"};
  return names[static_cast<int>(pos)];
}

struct failure_case {
  position pos;
  int n;  // input size
  int k;  // the input whose processing throws
  bool fusion;
  std::size_t b1, b2;
  unsigned w;
};

// run_failing() runs a pipeline whose stage at `c.pos` throws boom(k) at input k, and
// returns how many items reached the sink and the largest input index among them.
// Every stage function sees every item, so the position is all that differs.
void run_failing(const failure_case& c, long& delivered, int& max_src) {
  delivered = 0;
  max_src = -1;
  const int k = c.k;
  auto at = [k](position here, position pos, int src) {
    if (here == pos && src == k) throw test::boom(src);
  };
  const position pos = c.pos;
  int next = 0;
  const int n = c.n;
  auto pipe =
      rill::generate([&, pos]() -> std::optional<item> {
        if (next == n) return std::nullopt;
        at(position::source, pos, next);
        return item{next++, test::tracked(0)};
      }) |
      rill::map(
          [at, pos](item x) {
            at(position::map, pos, x.src);
            return x;
          },
          {.buffer = c.b1, .fuse = false}) |
      rill::filter(
          [at, pos](const item& x) {
            at(position::filter, pos, x.src);
            return true;
          },
          {.buffer = c.b2}) |
      rill::flat_map(
          [at, pos](item x) {
            at(position::flat_map, pos, x.src);
            return std::vector<item>{x};
          },
          {.buffer = c.b1, .fuse = false}) |
      rill::tap([at, pos](const item& x) { at(position::tap, pos, x.src); }, {.buffer = c.b2}) |
      rill::par_map(
          [at, pos](item x) {
            at(position::par_map_ordered, pos, x.src);
            return x;
          },
          {.workers = c.w, .ordered = true, .buffer = c.b1}) |
      rill::par_map(
          [at, pos](item x) {
            at(position::par_map_unordered, pos, x.src);
            return x;
          },
          {.workers = c.w, .ordered = pos != position::par_map_unordered, .buffer = c.b2}) |
      rill::batch(3, {.buffer = c.b1}) |
      rill::flat_map(
          [at, pos](std::vector<item> b) {
            for (const item& x : b) at(position::after_batch, pos, x.src);
            return b;
          },
          {.fuse = false}) |
      rill::map([at, pos](item x) {
        at(position::late_map, pos, x.src);
        return x;
      }) |
      rill::reduce(0L, [&, at, pos](long acc, const item& x) {
        at(position::reduce, pos, x.src);
        ++delivered;
        max_src = std::max(max_src, x.src);
        return acc + 1;
      });
  try {
    pipe.run({.fusion = c.fusion});
    FAIL("run() returned although stage " << name(pos) << " threw at item " << k);
  } catch (const test::boom& e) {
    CHECK(e.at == k);
    CHECK(std::string(e.what()) == "boom at " + std::to_string(k));
  }
}

// check_failure(): the promises of a failed run, checked right after run() has thrown.
void check_failure(const failure_case& c, long delivered, int max_src) {
  CHECK(test::tracked::live.load() == 0);      // no item outlives run()
  if (c.pos != position::par_map_unordered) {  // (there, later items may overtake item k)
    CHECK(delivered <= c.k);
    CHECK(max_src < c.k);  // nothing at or after the failing item reaches the terminal
  }
  if (c.pos == position::reduce) CHECK(delivered == c.k);  // the terminal saw all before k
}

}  // namespace

TEST_CASE("pipeline property: random pipelines compute what the plain range-v3 loop computes",
          "[pipeline][property]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const std::uint32_t seed = test::seed();
  INFO("seed " << seed << " (RILL_TEST_SEED replays it)");
  rand_gen r{std::mt19937(seed)};
  test::run_with(workers, [&r] {
    for (int i = 0; i < test::scaled(25); ++i) random_case(r);
  });
}

TEST_CASE("pipeline property: run() from a plain thread computes the same",
          "[pipeline][property]") {
  const std::uint32_t seed = test::seed();
  INFO("seed " << seed << " (RILL_TEST_SEED replays it)");
  rand_gen r{std::mt19937(seed)};
  test::watchdog dog;
  for (int i = 0; i < test::scaled(5); ++i) {
    // Channels need fibers on both ends: run the chan shape from a fiber of the default
    // runtime, the rest from this thread.
    const std::vector<int> v = r.input(3000);
    const unsigned w = r.workers();
    auto pipe = rill::from(v) | rill::map(f, {.buffer = r.buffer()}) |
                rill::par_map(slow, {.workers = w, .ordered = r.coin(), .buffer = r.buffer()}) |
                rill::filter([](long x) { return x % 3 != 0; }, {.fuse = r.coin()}) |
                rill::collect();
    const std::vector<long> expect = v | rv::transform([](int x) { return 2L * f(x); }) |
                                     rv::filter([](long x) { return x % 3 != 0; }) |
                                     ranges::to<std::vector>();
    CHECK(sorted(pipe.run({.fusion = r.coin()})) == sorted(expect));
  }
  test::wait_no_leaks();
}

TEST_CASE("pipeline property: an exception at a random item in any stage surfaces, leaking nothing",
          "[pipeline][property][error]") {
  const std::uint32_t seed = test::seed();
  INFO("seed " << seed << " (RILL_TEST_SEED replays it)");
  rand_gen r{std::mt19937(seed)};
  const int runs = test::scaled(1000, 4);
  int plain_thread_runs = 0;
  for (int i = 0; i < runs; ++i) {
    failure_case c{};
    c.pos = static_cast<position>(i % static_cast<int>(position::count_));
    c.n = r.between(1, 400);
    c.k = r.between(0, c.n - 1);
    c.fusion = r.coin();
    c.b1 = r.buffer();
    c.b2 = r.buffer();
    c.w = r.workers();
    INFO("run " << i << ": stage " << name(c.pos) << ", throws at " << c.k << " of " << c.n
                << ", fusion " << c.fusion << ", buffers " << c.b1 << "/" << c.b2
                << ", par_map workers " << c.w);
    long delivered = 0;
    int max_src = -1;
    if (i % 4 == 0) {  // from this thread, on the default runtime
      ++plain_thread_runs;
      test::watchdog dog;
      run_failing(c, delivered, max_src);
      check_failure(c, delivered, max_src);
      test::wait_no_leaks();
    } else {  // in a fresh runtime of 1, 2 or 4 workers; run_with checks leaks after it
      test::run_with(r.workers(), [&] {
        run_failing(c, delivered, max_src);
        check_failure(c, delivered, max_src);
      });
    }
  }
  CHECK(plain_thread_runs > 0);
}

TEST_CASE("pipeline property: cancel at a random moment ends the run, leaking nothing",
          "[pipeline][property][cancel]") {
  const std::uint32_t seed = test::seed();
  INFO("seed " << seed << " (RILL_TEST_SEED replays it)");
  rand_gen r{std::mt19937(seed)};
  int cancelled = 0, finished = 0;
  const int runs = test::scaled(150, 3);
  for (int i = 0; i < runs; ++i) {
    const bool endless = r.coin();
    const int n = r.between(0, 3000);
    const bool fusion = r.coin();
    const unsigned w = r.workers();
    const std::size_t b = r.buffer();
    const int delay = r.between(0, 300);
    INFO("run " << i << ": endless " << endless << ", n " << n << ", fusion " << fusion
                << ", delay " << delay);
    auto make = [&] {
      return rill::from(ranges::views::iota(0, endless ? std::numeric_limits<int>::max() : n)) |
             rill::map([](int x) { return test::tracked(x); }, {.buffer = b, .fuse = r.coin()}) |
             rill::par_map([](test::tracked t) { return t.v; },
                           {.workers = w, .ordered = r.coin(), .buffer = b}) |
             rill::filter([](int x) { return x % 5 != 0; }, {.fuse = r.coin()}) | rill::count();
    };
    const std::size_t expect = static_cast<std::size_t>(n - (n + 4) / 5);
    auto outcome = [&](rill::pipeline_handle<std::size_t>& h) {
      try {
        const std::size_t got = h.wait();
        CHECK_FALSE(endless);
        CHECK(got == expect);
        ++finished;
      } catch (const rill::pipeline_cancelled&) {
        ++cancelled;
      }
      CHECK(test::tracked::live.load() == 0);
    };
    if (i % 3 == 0) {  // from a plain thread: cancel after a random spin
      test::watchdog dog;
      auto pipe = make();
      auto h = pipe.start({.fusion = fusion});
      volatile int spin = 0;
      for (int s = 0; s < delay * 100; ++s) spin = s;
      (void)spin;
      h.cancel();
      outcome(h);
      test::wait_no_leaks();
    } else {  // from a fiber: cancel after a random number of yields
      test::run_with(r.workers(), [&] {
        auto pipe = make();
        auto h = pipe.start({.fusion = fusion});
        for (int y = 0; y < delay; ++y) rill::this_fiber::yield();
        h.cancel();
        outcome(h);
      });
    }
  }
  INFO("cancelled " << cancelled << ", finished " << finished);
  CHECK(cancelled + finished == runs);
  CHECK(cancelled > 0);
}

// ---- the bounds of the links -----------------------------------------------------------

namespace {

// layout: the links and fibers the builder makes for `source | s1 | s2 | s3 | terminal`
// (pipeline.hpp): a segment ends before a stage with fuse = false (or before every stage
// and the terminal when fusion is off); the link after a segment has the buffer of the
// segment's last stage (default_buffer after the source).
struct layout {
  long sum_buffers = 0;
  long fibers = 1;
};
layout layout_of(const std::array<std::size_t, 3>& buffers, const std::array<bool, 3>& fuse,
                 bool fusion) {
  layout l;
  std::size_t last = rill::default_buffer;
  for (std::size_t i = 0; i < 3; ++i) {
    if (!fusion || !fuse[i]) {
      l.sum_buffers += static_cast<long>(last);
      ++l.fibers;
    }
    last = buffers[i];
  }
  // A link before the terminal too: with fusion off always, and with fusion on when the
  // pipeline splits the terminal off mid-run (nothing pins that boundary). The bound is the
  // documented one: every boundary that may become a link counts its buffer.
  l.sum_buffers += static_cast<long>(last);
  ++l.fibers;
  return l;
}

}  // namespace

TEST_CASE("pipeline property: take(n) stops the source within n + buffers + fibers items",
          "[pipeline][property][backpressure]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const std::uint32_t seed = test::seed();
  INFO("seed " << seed << " (RILL_TEST_SEED replays it)");
  rand_gen r{std::mt19937(seed)};
  test::run_with(workers, [&r] {
    for (int i = 0; i < test::scaled(40, 4); ++i) {
      const std::array<std::size_t, 3> b{r.buffer(), r.buffer(), r.buffer()};
      const std::array<bool, 3> fuse{r.coin(), r.coin(), r.coin()};
      const bool fusion = r.coin();
      const auto n = static_cast<std::size_t>(r.between(0, 300));
      std::atomic<long> produced{0};
      auto pipe = rill::from(ranges::views::iota(0)) | rill::tap([&produced](int) { ++produced; }) |
                  rill::map([](int x) { return x; }, {.buffer = b[0], .fuse = fuse[0]}) |
                  rill::map([](int x) { return x; }, {.buffer = b[1], .fuse = fuse[1]}) |
                  rill::take(n, {.buffer = b[2], .fuse = fuse[2]}) | rill::count();
      CHECK(pipe.run({.fusion = fusion}) == n);
      // The tap starts fused with the source; with fusion off it has a fiber and a link too,
      // and with fusion on it may get them mid-run (its boundary is not pinned).
      layout l = layout_of(b, fuse, fusion);
      l.sum_buffers += static_cast<long>(rill::default_buffer);
      ++l.fibers;
      INFO("buffers " << b[0] << "/" << b[1] << "/" << b[2] << ", fuse " << fuse[0] << fuse[1]
                      << fuse[2] << ", fusion " << fusion << ", n " << n << ": produced "
                      << produced.load());
      CHECK(produced.load() <= static_cast<long>(n) + l.sum_buffers + l.fibers);
    }
  });
}

TEST_CASE("pipeline property: with a slow sink, items in flight stay within buffers + fibers",
          "[pipeline][property][backpressure]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const std::uint32_t seed = test::seed();
  INFO("seed " << seed << " (RILL_TEST_SEED replays it)");
  rand_gen r{std::mt19937(seed)};
  test::run_with(workers, [&r] {
    for (int i = 0; i < test::scaled(12, 4); ++i) {
      const std::array<std::size_t, 3> b{r.buffer(), r.buffer(), r.buffer()};
      const std::array<bool, 3> fuse{r.coin(), r.coin(), r.coin()};
      const bool fusion = r.coin();
      const int n = test::scaled(3000, 4);
      std::atomic<long> produced{0}, consumed{0}, peak{0};
      int next = 0;
      auto pipe = rill::generate([&]() -> std::optional<int> {
                    if (next == n) return std::nullopt;
                    ++produced;
                    return next++;
                  }) |
                  rill::map([](int x) { return x; }, {.buffer = b[0], .fuse = fuse[0]}) |
                  rill::tap([](int) {}, {.buffer = b[1], .fuse = fuse[1]}) |
                  rill::map([](int x) { return x; }, {.buffer = b[2], .fuse = fuse[2]}) |
                  rill::for_each([&](int) {
                    peak = std::max(peak.load(), produced.load() - consumed.load());
                    ++consumed;
                    rill::this_fiber::yield();  // the slow sink
                  });
      pipe.run({.fusion = fusion});
      const layout l = layout_of(b, fuse, fusion);
      INFO("buffers " << b[0] << "/" << b[1] << "/" << b[2] << ", fuse " << fuse[0] << fuse[1]
                      << fuse[2] << ", fusion " << fusion << ": peak " << peak.load() << ", bound "
                      << l.sum_buffers + l.fibers);
      CHECK(consumed.load() == n);
      CHECK(peak.load() <= l.sum_buffers + l.fibers);
    }
  });
}
