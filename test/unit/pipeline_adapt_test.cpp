// The pipeline adapts to its items: few slow items spread over par_map's workers, a trickle
// source's items reach the sink before the next one is made (no item waits in a partial
// batch while its fiber parks), slow fused stages split into fibers of their own mid-run
// without losing, duplicating or reordering anything, and the explicit options still pin
// the layout. No wall-clock thresholds: waits are channels (a shortfall deadlocks, which
// rill::run reports) and costs are fiber sleeps far above the split threshold.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "support/pipeline_support.hpp"

using namespace std::chrono_literals;

namespace {

// upto(n): 0, 1, ..., n - 1.
std::vector<long> upto(long n) {
  std::vector<long> v(static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

// gate: the first `target` callers wait until `target` are in at once, then everyone goes
// through. If fewer than `target` can ever be in at once, every fiber parks and rill::run
// throws deadlock_error: the test fails instead of passing slowly.
struct gate {
  explicit gate(int target) : target(target) {}
  int target;
  std::atomic<int> inside{0};
  std::atomic<int> peak{0};
  std::atomic<bool> opened{false};
  rill::chan<char> open{0};
  void pass() {
    const int now = ++inside;
    int p = peak.load();
    while (now > p && !peak.compare_exchange_weak(p, now)) {
    }
    if (now == target && !opened.exchange(true)) open.close();
    if (now <= target) (void)open.recv();  // closed: returns at once from then on
    --inside;
  }
};

}  // namespace

TEST_CASE("adapt: par_map runs min(workers, items) slow items at once, with no hints",
          "[pipeline][adapt][par_map]") {
  const unsigned runtime_workers = GENERATE(1u, 2u);
  const unsigned workers = GENERATE(3u, 8u);
  const int items = GENERATE(2, 8, 40);
  INFO("runtime workers " << runtime_workers << ", par_map workers " << workers << ", items "
                          << items);
  const int expect = std::min<int>(static_cast<int>(workers), items);
  gate g(expect);
  auto out = test::run_with(runtime_workers, [&] {
    std::vector<int> in(static_cast<std::size_t>(items));
    for (int i = 0; i < items; ++i) in[static_cast<std::size_t>(i)] = i;
    return (rill::from(in) |
            rill::par_map(
                [&](int v) {
                  g.pass();
                  return v * 3;
                },
                {.workers = workers}) |
            rill::collect())
        .run();
  });
  CHECK(g.peak.load() == expect);
  REQUIRE(out.size() == static_cast<std::size_t>(items));
  for (int i = 0; i < items; ++i) CHECK(out[static_cast<std::size_t>(i)] == 3 * i);
}

TEST_CASE("adapt: a trickle source's item reaches the sink before the next one is made",
          "[pipeline][adapt][latency]") {
  // The source makes item i only once item i-1 has reached the sink: it waits on `ack`,
  // which the sink sends after each item. An item left in a partial batch anywhere on the
  // way would never reach the sink: every fiber would park (deadlock_error).
  const unsigned workers = GENERATE(1u, 2u);
  const int shape = GENERATE(0, 1, 2, 3, 4);
  INFO("workers " << workers << ", shape " << shape);
  constexpr int n = 50;
  auto got = test::run_with(workers, [&] {
    rill::chan<char> ack(1);
    int next = 0;
    auto src = rill::generate([&]() -> std::optional<int> {
      if (next > 0) (void)ack.recv();
      if (next == n) return std::nullopt;
      return next++;
    });
    auto inc = [](int v) { return v + 1; };
    std::vector<int> seen;
    auto sink = [&](int v) {
      seen.push_back(v);
      ack.send('a');
    };
    switch (shape) {
      case 0:  // three unfused stages
        (src | rill::map(inc, {.fuse = false}) | rill::map(inc, {.fuse = false}) |
         rill::map(inc, {.fuse = false}) | rill::for_each(sink))
            .run();
        break;
      case 1:  // a par_map
        (src | rill::par_map(inc, {.workers = 3}) | rill::map(inc, {.fuse = false}) |
         rill::for_each(sink))
            .run();
        break;
      case 2:  // an unordered par_map
        (src | rill::par_map(inc, {.workers = 3, .ordered = false}) | rill::for_each(sink)).run();
        break;
      case 3: {  // a broadcast whose other branch takes everything
        auto r = (src | rill::map(inc, {.fuse = false}) |
                  rill::broadcast(rill::count(), rill::map(inc) | rill::for_each(sink)))
                     .run();
        (void)r;
        break;
      }
      default:  // pinned batches are still sent when the fiber parks
        (src | rill::map(inc, {.fuse = false, .batch_size = 64}) |
         rill::map(inc, {.fuse = false, .batch_size = 64}) | rill::for_each(sink))
            .run();
        break;
    }
    return seen;
  });
  REQUIRE(got.size() == static_cast<std::size_t>(n));
  const int add = shape == 0 ? 3 : shape == 2 ? 1 : 2;
  for (int i = 0; i < n; ++i) CHECK(got[static_cast<std::size_t>(i)] == i + add);
}

namespace {

// slow(us): a stage function that parks for `us` microseconds per item (work that a fiber
// of its own overlaps with the other stages' on any worker count).
auto slow_add(int us, int add) {
  return [us, add](long v) {
    rill::this_fiber::sleep_for(std::chrono::microseconds(us));
    return v + add;
  };
}

}  // namespace

TEST_CASE("adapt: slow fused stages split into fibers mid-run, results unchanged",
          "[pipeline][adapt][fusion]") {
  const unsigned workers = GENERATE(1u, 2u);
  INFO("workers " << workers);
  constexpr long n = 60;
  auto res = test::run_with(workers, [&] {
    auto p = rill::from(upto(n)) | rill::map(slow_add(300, 1)) | rill::map(slow_add(300, 10)) |
             rill::collect();
    auto v = p.run();
    return std::make_pair(v, p.stats());
  });
  const auto& out = res.first;
  const auto& stats = res.second;
  REQUIRE(out.size() == static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) CHECK(out[static_cast<std::size_t>(i)] == i + 11);
  // Both maps are slow: they end up in fibers of their own.
  INFO("fibers: " << [&] {
    std::string s;
    for (auto& f : stats.fibers) s += "[" + f + "] ";
    return s;
  }());
  CHECK(stats.fibers.size() >= 2);
  REQUIRE(stats.stages.size() == 4);
  CHECK(stats.stages[0].name == "from");
  CHECK(stats.stages[1].name == "map#1");
  CHECK(stats.stages[2].name == "map#2");
  CHECK(stats.stages[3].name == "collect");
  CHECK_FALSE(stats.stages[2].fused);
  CHECK(stats.stages[2].decision.find("split") != std::string::npos);
}

TEST_CASE("adapt: heavy stages split all at once, a fiber each", "[pipeline][adapt][fusion]") {
  const unsigned workers = GENERATE(1u, 2u);
  INFO("workers " << workers);
  constexpr long n = 40;
  auto [out, stats] = test::run_with(workers, [&] {
    // Heavy pieces, but items below those that split at their first item (split_early).
    constexpr int us = 2 * rill::detail::split_all_min_ns / 1000;
    static_assert(3 * us * 1000 < rill::detail::probe_ns_slowest / 2);
    auto p = rill::from(upto(n)) | rill::map(slow_add(us, 1)) | rill::map(slow_add(us, 10)) |
             rill::map(slow_add(us, 100)) | rill::collect();
    auto v = p.run();
    return std::make_pair(v, p.stats());
  });
  REQUIRE(out.size() == static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) CHECK(out[static_cast<std::size_t>(i)] == i + 111);
  // One probe finds every piece heavy: each slow map gets a fiber, from the same decision
  // (the cheap source and collect stay with their neighbours). The fiber names are whole.
  std::vector<std::string> fibers = stats.fibers;
  std::sort(fibers.begin(), fibers.end());
  CHECK(fibers == std::vector<std::string>{"from|map#1", "map#2", "map#3|collect"});
  CHECK(stats.stages[3].decision.find("every piece") != std::string::npos);
  // The splits came from measured time: the declared layout is one fused chain.
  CHECK(test::declared_fibers(stats) == std::vector<std::string>{"from|map#1|map#2|map#3|collect"});
}

TEST_CASE("adapt: a pinned layout is the fused chain split where the user said",
          "[pipeline][adapt][fusion]") {
  // The pinned links are made by splitting the chain before its first item: the fibers are
  // the ones declared, each named after its stages, and stats() says why each pinned stage
  // has a fiber of its own.
  const unsigned workers = GENERATE(1u, 2u);
  INFO("workers " << workers);
  test::run_with(workers, [] {
    auto p = rill::from(upto(300)) | rill::map([](long v) { return v + 1; }) |
             rill::map([](long v) { return v * 2; }, {.fuse = false}) |
             rill::map([](long v) { return v - 2; }) | rill::stage_boundary | rill::collect();
    std::vector<long> want;
    for (long v = 0; v < 300; ++v) want.push_back(2 * v);
    CHECK(p.run() == want);
    const rill::pipeline_stats s = p.stats();
    CHECK(test::declared_fibers(s) ==
          std::vector<std::string>{"from|map#1", "map#2|map#3", "boundary#4|collect"});
    CHECK_FALSE(s.stages[2].fused);
    CHECK(s.stages[2].decision.find("pinned: .fuse = false") != std::string::npos);
    // map#3 is not pinned: fused with map#2 unless its measured cost split it off (a slow
    // sanitizer build on a loaded machine can), so only the reason is checked.
    CHECK(s.stages[3].decision.find("pinned") == std::string::npos);
    CHECK_FALSE(s.stages[4].fused);
    // With fusion off, every stage and the terminal read a link.
    CHECK(p.run(rill::run_options{.fusion = false}) == want);
    const rill::pipeline_stats off = p.stats();
    CHECK(off.fibers.size() == 6);
    for (std::size_t k = 1; k < off.stages.size(); ++k) {
      INFO(off.stages[k].name << ": " << off.stages[k].decision);
      CHECK_FALSE(off.stages[k].fused);
      CHECK(off.stages[k].decision.find("fusion = false") != std::string::npos);
    }
  });
}

TEST_CASE("adapt: a chain of slow items splits at its first item", "[pipeline][adapt][fusion]") {
  // An item that runs fused waits for the three sleeps one after the other. The first item
  // is timed at every boundary: at the first boundary it has taken a sleep already, so the
  // chain splits there, and the item goes on through the new link; the same happens in the
  // new fiber at the next boundary. Which fiber ran map#1 and map#3 for each item tells
  // how many ran fused: none.
  const unsigned workers = GENERATE(1u, 2u);
  INFO("workers " << workers);
  constexpr long n = 12;
  std::vector<const void*> first(n), last(n);
  char first_name[64] = {}, last_name[64] = {};  // the fibers' names at the last item
  auto out = test::run_with(workers, [&] {
    auto at = [&](std::vector<const void*>& seen, int us, int add) {
      char* name = &seen == &first ? first_name : last_name;
      return [&seen, us, add, name](long v) {
        seen[static_cast<std::size_t>(v)] = rill::detail::current_fiber();
        if (v == n - 1) rill::detail::fiber_get_name(name, 64);
        rill::this_fiber::sleep_for(std::chrono::microseconds(us));
        return v + add;
      };
    };
    // Each stage as slow as the items that decide on their first (probe_ns_slowest).
    constexpr int us = rill::detail::probe_ns_slowest / 1000;
    return (rill::from(upto(n)) | rill::map(at(first, us, 0)) | rill::map(slow_add(us, 0)) |
            rill::map(at(last, us, 0)) | rill::collect())
        .run();
  });
  REQUIRE(out == upto(n));
  long fused = 0;
  for (long i = 0; i < n; ++i)
    fused += first[static_cast<std::size_t>(i)] == last[static_cast<std::size_t>(i)];
  CHECK(fused == 0);
  // The rest ran split: map#1 and map#3 no longer share a fiber.
  CHECK(first[n - 1] != last[n - 1]);
  // Each fiber is named after the stages it runs since the split (a dump, an overflow
  // report or the watchdog names them), not after the chain it started with.
  // (A slow sanitizer build may also give the source a fiber of its own: "map#1".)
  const std::string first_fiber(first_name);
  CHECK((first_fiber == "from|map#1" || first_fiber == "map#1"));
  CHECK(std::string(last_name) == "map#3|collect");
}

TEST_CASE("adapt: a slow first item that computes does not split the chain at once",
          "[pipeline][adapt][fusion]") {
  // A first call that does lazy work (a cold cache, a table built once) looks like a very
  // slow item, but it does not park: the chain waits for the window's decision, which sees
  // that the stage after it is cheap, and stays one fiber.
  const unsigned workers = GENERATE(1u, 2u);
  INFO("workers " << workers);
  constexpr long n = 40;
  const void* first_at[2] = {nullptr, nullptr};  // the fibers that ran item 0 in each map
  auto [out, stats] = test::run_with(workers, [&] {
    bool first = true;
    auto lazy = [&first, &first_at](long v) {
      if (v == 0) first_at[0] = rill::detail::current_fiber();
      if (first) {
        first = false;
        const auto until = std::chrono::steady_clock::now() +
                           std::chrono::nanoseconds(2 * rill::detail::probe_ns_slowest);
        while (std::chrono::steady_clock::now() < until) {
        }
      }
      return v + 1;
    };
    auto twice = [&first_at](long v) {
      if (v == 1) first_at[1] = rill::detail::current_fiber();
      return v * 2;
    };
    auto p = rill::from(upto(n)) | rill::map(lazy) | rill::map(twice) | rill::collect();
    auto v = p.run();
    return std::make_pair(v, p.stats());
  });
  REQUIRE(out.size() == static_cast<std::size_t>(n));
  for (long i = 0; i < n; ++i) CHECK(out[static_cast<std::size_t>(i)] == (i + 1) * 2);
  // Item 0 went on through map#2 in the fiber that computed it: no split at the first item.
  // (What the windows decide after it is timing: a slow sanitizer build on a loaded machine
  // may split a cheap stage off later.)
  CHECK(first_at[0] == first_at[1]);
  CHECK_FALSE(stats.fibers.empty());
}

TEST_CASE("adapt: a link made by a split mid-run holds its buffer of slow items",
          "[pipeline][adapt][fusion]") {
  // Slow items make small batches (one item here); the link a split makes is shaped for
  // them, so the writer still runs up to `buffer` (256) items ahead. Shaped for the default
  // batches of 64 it held two of them: map#1 could not get 40 items ahead of a waiting
  // map#2, and every fiber parked (deadlock_error).
  const unsigned workers = GENERATE(1u, 2u);
  INFO("workers " << workers);
  constexpr long n = 60, wait_at = 10, ahead = 40;
  std::atomic<long> made{0};
  auto out = test::run_with(workers, [&] {
    rill::chan<char> far_enough(0);
    return (rill::from(upto(n)) | rill::map([&](long v) {
              rill::this_fiber::sleep_for(2ms);
              if (++made == wait_at + ahead) far_enough.close();
              return v;
            }) |
            rill::map([&](long v) {
              rill::this_fiber::sleep_for(2ms);
              if (v == wait_at) (void)far_enough.recv();
              return v;
            }) |
            rill::collect())
        .run();
  });
  CHECK(out == upto(n));
}

TEST_CASE("adapt: a busy stage fiber takes turns with the worker's other fibers",
          "[pipeline][adapt]") {
  // One worker, and a source that never parks: the fiber it starts with its first item
  // runs only if the stage fiber yields; until it has, the source goes on.
  auto items = test::run_with(1, [] {
    std::atomic<bool> other_ran{false};
    bool started = false;
    return (rill::generate([&]() -> std::optional<long> {
              if (!started) {
                started = true;
                rill::go([&] { other_ran = true; });
              }
              if (other_ran.load()) return std::nullopt;
              return 1L;
            }) |
            rill::map([](long v) { return v * 2; }) | rill::count())
        .run();
  });
  // The run ending is the test: without the yield the source would go on for ever (the
  // watchdog of run_with turns that into a failure). The other fiber starts during the
  // source's first call, so at least that item is counted; a preemption longer than the
  // time slice may end the first slice right after it.
  CHECK(items >= 1);
}

// largest_turn(handled, body): in a fiber of a one-worker runtime, runs body() (a pipeline
// whose stage counts its items in `handled`) while another fiber yields in a loop, and
// returns the most items handled between two turns of that fiber (the gap before its first
// turn after the run included): how long the chain held the worker, in items.
template <class Body>
int largest_turn(std::atomic<int>& handled, Body body) {
  std::atomic<bool> started{false}, done{false};
  int most = 0;
  rill::wait_group ticker;
  ticker.add(1);
  rill::go([&] {
    int last = handled.load();
    started = true;
    for (bool end = false; !end;) {
      end = done.load();
      rill::this_fiber::yield();
      const int now = handled.load();
      most = std::max(most, now - last);
      last = now;
    }
    ticker.done();
  });
  while (!started.load()) rill::this_fiber::yield();
  body();
  done = true;
  ticker.wait();
  return most;
}

TEST_CASE("adapt: a fused chain of slow items takes turns item by item, not chunk by chunk",
          "[pipeline][adapt]") {
  // The chain yields at the end of its time slice, which it checks between two of the
  // source's chunks: a chunk of slow items must stay short.
  const int most = test::run_with(1, [] {
    std::atomic<int> handled{0};
    return largest_turn(handled, [&] {
      const long n = (rill::from(upto(120)) | rill::map([&](long v) {
                        const auto end = std::chrono::steady_clock::now() + 1500us;  // CPU work
                        while (std::chrono::steady_clock::now() < end) {
                        }
                        handled.fetch_add(1);
                        return v;
                      }) |
                      rill::count())
                         .run();
      CHECK(n == 120);
    });
  });
  // A time slice holds a couple of these items, and a probe of the chain's boundaries (a
  // few items) does not yield; the chunks used to grow to dozens of items whatever they
  // cost.
  CHECK(most <= 8);
}

// turns_slow(cheap, us, handled): a stage that returns its item at once for the first
// `cheap` items and computes for `us` microseconds on each after them, counting those.
auto turns_slow(long cheap, int us, std::atomic<int>& handled) {
  return [cheap, us, &handled](long v) {
    if (v >= cheap) {
      const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
      while (std::chrono::steady_clock::now() < end) {  // CPU work
      }
      handled.fetch_add(1);
    }
    return v;
  };
}

TEST_CASE("adapt: a fused chain whose items turn slow mid-chunk yields and splits",
          "[pipeline][adapt]") {
  // Many cheap items grow the source's chunks and the segment's window to their largest;
  // then every item is slow. Counted in items at the old cost, the chunk and the window
  // would hold the worker for the whole slow tail. The watchdog's slice flag cuts
  // the chunk within a few items: on one worker, a fiber that yields in a loop gets turns.
  static constexpr long cheap = 100'000, slow = 100;
  SECTION("one worker: the other fibers get turns") {
    const int most = test::run_with(1, [] {
      std::atomic<int> handled{0};
      return largest_turn(handled, [&] {
        const long n = (rill::from(upto(cheap + slow)) |
                        rill::map(turns_slow(cheap, 1000, handled)) | rill::count())
                           .run();
        CHECK(n == cheap + slow);
        CHECK(handled.load() == slow);
      });
    });
    // A slice, the watchdog's look (every half slice) and the source's check (every
    // slice_check items) hold a couple of slice_check's worth of these items; scheduling
    // delays of the watchdog's thread add a few. Before the flag, the whole tail ran in one
    // turn.
    CHECK(most <= 50);
  }
  SECTION("two workers: the slow stages split") {
    auto stats = test::run_with(2, [] {
      std::atomic<int> handled{0};
      auto p = rill::from(upto(cheap + slow)) | rill::map(turns_slow(cheap, 1000, handled)) |
               rill::map(turns_slow(cheap, 1000, handled)) | rill::count();
      CHECK(p.run() == static_cast<std::size_t>(cheap + slow));
      CHECK(handled.load() == 2 * slow);
      return p.stats();
    });
    INFO("fibers: " << [&st = stats] {
      std::string s;
      for (auto& f : st.fibers) s += "[" + f + "] ";
      for (auto& g : st.stages) s += "\n  " + g.name + ": " + g.decision;
      return s;
    }());
    CHECK(stats.fibers.size() >= 2);
  }
}

TEST_CASE("adapt: a chain that reads a link yields within a few items when its items turn slow",
          "[pipeline][adapt]") {
  // The same shape behind a link: the slow stage reads batches (of up to 64 cheap items
  // from a declared boundary, or the finished units of an ordered par_map, up to its
  // window's worth at once). The slice flag cuts a batch: slice_check items after the slice
  // ended when the items were cheap until then, after the item under way once they are
  // known slow. A batch once ran to its end, and the window held up to 16k items.
  static constexpr long cheap = 100'000, slow = 100;
  auto shape = GENERATE(0, 1);
  INFO((shape == 0 ? "after stage_boundary" : "after par_map"));
  const int most = test::run_with(1, [shape] {
    std::atomic<int> handled{0};
    return largest_turn(handled, [&] {
      auto tail = rill::map(turns_slow(cheap, 1000, handled));
      const long n = shape == 0
                         ? (rill::from(upto(cheap + slow)) | rill::map([](long v) { return v; }) |
                            rill::stage_boundary | std::move(tail) | rill::count())
                               .run()
                         : (rill::from(upto(cheap + slow)) |
                            rill::par_map([](long v) { return v; }, {.workers = 1}) |
                            std::move(tail) | rill::count())
                               .run();
      CHECK(n == cheap + slow);
      CHECK(handled.load() == slow);
    });
  });
  // At the turn, a slice, the watchdog's look and slice_check items; then a slice and an
  // item at a time. Scheduling delays of the watchdog's thread add a few. Before, the
  // slow tail ran a batch of 64 or the whole window at a time.
  CHECK(most <= 32);
}

TEST_CASE("adapt: cheap stages stay fused", "[pipeline][adapt][fusion]") {
  const unsigned workers = GENERATE(1u, 2u);
  auto [sum, stats] = test::run_with(workers, [&] {
    auto p = rill::from(upto(200'000L)) | rill::map([](long v) { return v * 2 + 1; }) |
             rill::filter([](long v) { return v % 3 != 0; }) | rill::reduce(0L, std::plus<>{});
    auto s = p.run();
    return std::make_pair(s, p.stats());
  });
  long expect = 0;
  for (long v = 0; v < 200'000; ++v) {
    if ((v * 2 + 1) % 3 != 0) expect += v * 2 + 1;
  }
  CHECK(sum == expect);
  INFO("workers " << workers << ", layout: " << [&st = stats] {
    std::string s;
    for (auto& f : st.fibers) s += "[" + f + "] ";
    for (auto& g : st.stages) s += "\n  " + g.name + ": " + g.decision;
    return s;
  }());
  REQUIRE(stats.fibers.size() == 1);
  CHECK(stats.fibers[0] == "from|map#1|filter#2|reduce");
  for (const auto& s : stats.stages) CHECK((s.fused || s.name == "from"));
}

TEST_CASE("adapt: the explicit options pin the layout", "[pipeline][adapt][options]") {
  const unsigned workers = GENERATE(1u, 2u);
  SECTION(".fuse = true keeps slow stages in one fiber") {
    auto stats = test::run_with(workers, [&] {
      auto p = rill::from(upto(30L)) | rill::map(slow_add(300, 1), {.fuse = true}) |
               rill::map(slow_add(300, 1), {.fuse = true}) | rill::count();
      CHECK(p.run() == 30u);
      return p.stats();
    });
    // The terminal may still split off (nothing pins it), the maps may not.
    REQUIRE(!stats.fibers.empty());
    CHECK(stats.fibers[0].find("from|map#1|map#2") == 0);
  }
  SECTION(".fuse = false and .batch_size pin a link and its batches") {
    auto stats = test::run_with(workers, [&] {
      auto p = rill::from(upto(10'000L)) |
               rill::map([](long v) { return v + 1; }, {.fuse = false, .batch_size = 7}) |
               rill::map([](long v) { return v + 1; }, {.fuse = false}) | rill::count();
      CHECK(p.run() == 10'000u);
      return p.stats();
    });
    CHECK(stats.fibers.size() == 3);
    REQUIRE(stats.stages.size() == 4);
    CHECK(stats.stages[1].batch_size == 7);
    CHECK_FALSE(stats.stages[1].fused);
    CHECK_FALSE(stats.stages[2].fused);
  }
  SECTION(".batch_size past half of .buffer is cut to that half: the buffer bounds memory") {
    // A slow sink holds the link full: a batch of 64 items on a link of 10 would hold
    // 64 and more.
    std::atomic<long> produced{0}, consumed{0}, peak{0};
    auto stats = test::run_with(workers, [&] {
      long next = 0;
      auto p = rill::generate([&]() -> std::optional<long> {
                 if (next == 2'000) return std::nullopt;
                 ++produced;
                 return next++;
               }) |
               rill::map([](long v) { return v + 1; }, {.buffer = 10, .batch_size = 64}) |
               rill::stage_boundary | rill::for_each([&](long) {
                 peak = std::max(peak.load(), produced.load() - consumed.load());
                 ++consumed;
                 rill::this_fiber::yield();  // the slow sink
               });
      p.run();
      return p.stats();
    });
    CHECK(consumed.load() == 2'000);
    std::size_t batch = 0;
    for (const auto& s : stats.stages) {
      INFO(s.name << ": batch " << s.batch_size);
      CHECK(s.batch_size <= 5);
      batch = std::max(batch, s.batch_size);
    }
    CHECK(batch == 5);
    // The map's link (10), an item in each of the 2 fibers.
    INFO("peak in flight " << peak.load());
    CHECK(peak.load() <= 10 + 2);
  }
}

TEST_CASE("adapt: par_map hands cheap items out in units of up to half of its buffer",
          "[pipeline][adapt]") {
  // The unit is the batch on the link into the workers (the source's batch_size): sized
  // from the measured work per item, bounded by that link's shape (buffer / 2, at most 64:
  // the unit in a worker's hands is counted besides the buffer), and never past it whatever
  // the work.
  const unsigned workers = GENERATE(1u, 2u);
  const std::size_t buffer = GENERATE(std::size_t{40}, std::size_t{256});
  const std::size_t most = std::min<std::size_t>(buffer / 2, 64);
  // Cheap items: more than the 16 a unit once stopped at (and the 13 that a third of a
  // buffer of 40 gave). The size is the last one decided, from measured times, which a
  // preempted worker inflates: up to 5 runs may show it.
  const std::size_t enough = std::min<std::size_t>(most, 17);  // the most, or past 16
  std::size_t largest = 0;
  for (int attempt = 0; attempt < 5 && largest < enough; ++attempt) {
    auto stats = test::run_with(workers, [&] {
      auto p = rill::from(upto(20'000L), {.buffer = buffer}) |
               rill::par_map([](long v) { return v + 1; }, {.workers = 2, .buffer = buffer}) |
               rill::count();
      CHECK(p.run() == 20'000u);
      return p.stats();
    });
    REQUIRE(stats.stages.size() == 3);
    INFO("buffer " << buffer << ", unit " << stats.stages[0].batch_size);
    CHECK(stats.stages[0].batch_size <= most);
    largest = std::max(largest, stats.stages[0].batch_size);
  }
  INFO("buffer " << buffer << ", largest unit " << largest);
  CHECK(largest > 16);
}

TEST_CASE("adapt: a pinned par_map unit larger than half of its buffer is cut to that half",
          "[pipeline][adapt]") {
  // The buffer bounds memory whatever the options: .batch_size = 64 with .buffer = 10 hands
  // out units of 5, and the stats say so.
  auto stats = test::run_with(2, [&] {
    auto p = rill::from(upto(2'000L), {.buffer = 10}) |
             rill::par_map([](long v) { return v + 1; },
                           {.workers = 2, .buffer = 10, .batch_size = 64}) |
             rill::count();
    CHECK(p.run() == 2'000u);
    return p.stats();
  });
  REQUIRE(stats.stages.size() == 3);
  CHECK(stats.stages[0].batch_size == 5);
  CHECK(stats.stages[1].decision == "par_map, pinned hand-out of 5");
}

TEST_CASE("adapt: layout changes mid-run lose, duplicate and reorder nothing (property)",
          "[pipeline][adapt][property]") {
  // Random chains of map / filter / flat_map / batch+unbatch / take with random slow items
  // (fiber sleeps, so splits happen), against the plain loop's result.
  const unsigned workers = GENERATE(1u, 2u);
  const int cases = test::scaled(12, 3);
  std::mt19937 rng(12345u + workers);
  for (int c = 0; c < cases; ++c) {
    const int n = 20 + static_cast<int>(rng() % 60);
    const int slow_every = 1 + static_cast<int>(rng() % 3);  // which items are slow
    const int us = 100 + static_cast<int>(rng() % 300);
    const std::size_t take_n = static_cast<std::size_t>(rng() % (2 * n));
    const int k = 1 + static_cast<int>(rng() % 4);
    INFO("case " << c << ": n " << n << ", slow every " << slow_every << ", us " << us << ", take "
                 << take_n << ", batch " << k);
    auto cost = [=](long v) {
      if (v % slow_every == 0) rill::this_fiber::sleep_for(std::chrono::microseconds(us));
    };
    // Reference.
    std::vector<long> expect;
    for (long v = 0; v < n; ++v) {
      const long a = v * 3 + 1;
      if (a % 5 == 0) continue;
      for (long b : {a, -a}) {
        if (expect.size() < take_n) expect.push_back(b + 7);
      }
    }
    auto got = test::run_with(workers, [&] {
      return (rill::from(upto(static_cast<long>(n))) | rill::map([=](long v) {
                cost(v);
                return v * 3 + 1;
              }) |
              rill::filter([=](long v) {
                cost(v);
                return v % 5 != 0;
              }) |
              rill::flat_map([](long v) {
                return std::vector<long>{v, -v};
              }) |
              rill::batch(static_cast<std::size_t>(k)) | rill::unbatch() | rill::take(take_n) |
              rill::map([=](long v) {
                cost(v);
                return v + 7;
              }) |
              rill::collect())
          .run();
    });
    CHECK(got == expect);
  }
}

TEST_CASE(
    "adapt: slow chains that end in a link (par_map, a pinned boundary, a broadcast) run whole",
    "[pipeline][adapt][fusion]") {
  // The writer at the end of such a chain belongs to its fiber, so the chain stays in one
  // fiber however slow it is; the results are those of the plain loop.
  const unsigned workers = GENERATE(1u, 2u);
  const int shape = GENERATE(0, 1, 2);
  INFO("workers " << workers << ", shape " << shape);
  constexpr long n = 40;
  long expect = 0;
  for (long v = 0; v < n; ++v) expect += v + 11;
  auto got = test::run_with(workers, [&] {
    auto head = rill::from(upto(n)) | rill::map(slow_add(200, 1)) | rill::map(slow_add(200, 10));
    switch (shape) {
      case 0:
        return (head | rill::par_map([](long v) { return v; }, {.workers = 2}) |
                rill::reduce(0L, std::plus<>{}))
            .run();
      case 1:
        return (head | rill::map([](long v) { return v; }, {.fuse = false}) |
                rill::reduce(0L, std::plus<>{}))
            .run();
      default:
        return std::get<0>(
            (head | rill::broadcast(rill::reduce(0L, std::plus<>{}), rill::count())).run());
    }
  });
  CHECK(got == expect);
}
