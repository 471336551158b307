// Tests of the pipeline DSL, stage by stage: every source, stage, option and terminal.
// Composition, where a run happens, cancellation, errors, backpressure and many fibers are in
// pipeline_run_test.cpp; randomized comparisons with plain loops in pipeline_property_test.cpp.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <range/v3/view/filter.hpp>
#include <range/v3/view/iota.hpp>
#include <range/v3/view/take.hpp>
#include <range/v3/view/transform.hpp>
#include <ranges>
#include <rill/pipeline.hpp>
#include <rill/rill.hpp>
#include <set>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <type_traits>
#include <variant>
#include <vector>

#include "support/pipeline_support.hpp"
#include "support/run_with.hpp"

using test::churn;
using test::iota_vec;
using test::no_default;

// ---- the roles of the pieces: what operator| takes where -------------------------------

namespace roles {
using V = std::vector<int>;
using src_t = decltype(rill::from(std::declval<V&>()));
using map_t = decltype(rill::map([](int v) { return v; }));
using par_t = decltype(rill::par_map([](int v) { return v; }));
using frag_t = decltype(rill::map([](int v) { return v; }) | rill::take(2));
using collect_t = decltype(rill::collect());
using sink_frag_t = decltype(rill::take(2) | rill::collect());
using bcast_t = decltype(rill::broadcast(rill::collect(), rill::count()));
struct plain {
  int kind;
};
using namespace rill::detail;
static_assert(pipeline_source<src_t> &&
              pipeline_source<decltype(rill::merge(std::declval<src_t>(), std::declval<src_t>()))>);
static_assert(!pipeline_source<map_t> && !pipeline_source<collect_t> && !pipeline_source<V>);
static_assert(pipeline_stage<map_t> && pipeline_stage<par_t> && pipeline_stage<frag_t>);
static_assert(!pipeline_stage<src_t> && !pipeline_stage<collect_t> && !pipeline_stage<plain>);
static_assert(one_terminal<collect_t> && one_terminal<bcast_t> && pipeline_terminal<sink_frag_t>);
static_assert(!pipeline_terminal<map_t> && !pipeline_terminal<src_t> && !pipeline_terminal<plain>);
}  // namespace roles

// ---- sources ---------------------------------------------------------------------------

TEST_CASE("pipeline: from(rvalue container) moves it in; collect keeps stream order",
          "[pipeline][source]") {
  test::leak_gate gate;  // runs on the default runtime
  auto p = rill::from(iota_vec(1000)) | rill::collect();
  CHECK(p.run() == iota_vec(1000));
  CHECK(p.run() == iota_vec(1000));  // the pipeline owns the vector: runs again
}

TEST_CASE("pipeline: from(lvalue container) refers to it and leaves it unchanged",
          "[pipeline][source]") {
  test::leak_gate gate;  // runs on the default runtime
  std::vector<std::string> words{"alpha", "beta", "gamma"};
  auto p = rill::from(words) | rill::map([](std::string s) { return s + "!"; }) | rill::collect();
  CHECK(p.run() == std::vector<std::string>{"alpha!", "beta!", "gamma!"});
  CHECK(words == std::vector<std::string>{"alpha", "beta", "gamma"});
  words.push_back("delta");  // referred to, not copied: the next run sees the change
  CHECK(p.run().size() == 4);

  std::list<int> l{3, 1, 2};
  CHECK((rill::from(l) | rill::collect()).run() == std::vector<int>{3, 1, 2});
  const std::map<int, char> m{{1, 'a'}, {2, 'b'}};
  auto keys = rill::from(m) |
              rill::map([](const std::pair<const int, char>& kv) { return kv.first; }) |
              rill::collect();
  CHECK(keys.run() == std::vector<int>{1, 2});
}

TEST_CASE("pipeline: from(range-v3 views), rvalue and lvalue", "[pipeline][source]") {
  test::leak_gate gate;  // runs on the default runtime
  auto evens = ranges::views::iota(0, 100) |
               ranges::views::filter([](int x) { return x % 2 == 0; }) |
               ranges::views::transform([](int x) { return x * 10; });
  auto p = rill::from(evens) | rill::reduce(0L, std::plus<>{});
  CHECK(p.run() == 10L * 2450);
  auto q = rill::from(ranges::views::iota(1) | ranges::views::take(10)) | rill::collect();
  CHECK(q.run() == iota_vec(10, 1));
  auto r = rill::from(ranges::views::iota(0)) | rill::take(3) | rill::collect();  // infinite
  CHECK(r.run() == std::vector<int>{0, 1, 2});
}

// clang 14 cannot instantiate libstdc++ 12's std views at all (view_interface), so the
// other tests use range-v3's; std views are tested where the compiler can build them.
#if !defined(__clang__) || __clang_major__ >= 15
TEST_CASE("pipeline: from(std views), including an infinite iota cut by take",
          "[pipeline][source]") {
  test::leak_gate gate;  // runs on the default runtime
  auto p = rill::from(std::views::iota(0)) | rill::map([](int v) { return v * v; }) |
           rill::take(5) | rill::collect();
  CHECK(p.run() == std::vector<int>{0, 1, 4, 9, 16});
  auto q = rill::from(std::views::iota(0, 10) | std::views::reverse) | rill::collect();
  CHECK(q.run() == std::vector<int>{9, 8, 7, 6, 5, 4, 3, 2, 1, 0});
  auto r = rill::from(iota_vec(4)) | rill::flat_map([](int v) { return std::views::iota(0, v); }) |
           rill::collect();
  CHECK(r.run() == std::vector<int>{0, 0, 1, 0, 1, 2});
}
#endif

TEST_CASE("pipeline: from(chan) takes values until the channel is closed", "[pipeline][source]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto fuse = GENERATE(true, false);
  test::run_with(workers, [fuse] {
    rill::chan<int> c(8);
    rill::go([c]() mutable {
      for (int i = 0; i < 1000; ++i) c.send(i);
      c.close();
    });
    auto out = (rill::from(c) | rill::map([](int v) { return v + 1; }) | rill::collect())
                   .run({.fusion = fuse});
    CHECK(out == iota_vec(1000, 1));

    rill::chan<int> d;  // unbuffered, through a receive-only handle
    rill::go([d]() mutable {
      for (int i = 0; i < 100; ++i) d.send(i);
      d.close();
    });
    rill::recv_chan<int> r = d;
    CHECK((rill::from(r) | rill::count()).run({.fusion = fuse}) == 100);
  });
}

TEST_CASE("pipeline: from(chan) with take leaves the rest in the channel", "[pipeline][source]") {
  test::run_with(2, [] {
    rill::chan<int> c(10);
    for (int i = 0; i < 10; ++i) c.send(i);
    CHECK((rill::from(c) | rill::take(3) | rill::collect()).run() == std::vector<int>{0, 1, 2});
    CHECK(c.size() == 7);
    c.close();
    CHECK((rill::from(c) | rill::collect()).run() == iota_vec(7, 3));
  });
}

TEST_CASE("pipeline: from(chan) waiting on an empty channel stops on cancel",
          "[pipeline][source]") {
  auto workers = GENERATE(1u, 2u);
  test::run_with(workers, [] {
    rill::chan<int> c;
    auto h = (rill::from(c) | rill::count()).start();
    rill::this_fiber::yield();
    h.cancel();
    CHECK_THROWS_AS(h.wait(), rill::pipeline_cancelled);
    CHECK_FALSE(c.closed());  // the user's channel is left alone
  });
}

TEST_CASE("pipeline: from(chan) stops on cancel even if the channel never runs dry",
          "[pipeline][source]") {
  test::run_with(2, [] {
    rill::chan<int> c(1);
    c.send(0);
    std::atomic<long> seen{0};
    // Each item is fed back into the source channel: try_recv() always finds one.
    auto h = (rill::from(c) | rill::tap([c](int v) mutable { (void)c.try_send(v + 1); }) |
              rill::for_each([&](int) {
                ++seen;
              })).start();
    while (seen.load() < 100) rill::this_fiber::yield();
    h.cancel();
    CHECK_THROWS_AS(h.wait(), rill::pipeline_cancelled);
  });
}

TEST_CASE("pipeline: generate(f) calls f until it returns nullopt", "[pipeline][source]") {
  test::leak_gate gate;  // runs on the default runtime
  int calls = 0;
  auto p = rill::generate([&calls]() -> std::optional<int> {
             ++calls;
             if (calls > 100) return std::nullopt;
             return calls;
           }) |
           rill::collect();
  CHECK(p.run() == iota_vec(100, 1));
  CHECK(calls == 101);
  // An infinite generator is stopped by take after exactly n calls (fused).
  int n = 0;
  auto q =
      rill::generate([&n]() -> std::optional<int> { return n++; }) | rill::take(7) | rill::count();
  CHECK(q.run() == 7);
  CHECK(n == 7);
}

TEST_CASE("pipeline: take(0) asks its source for no item", "[pipeline][source]") {
  auto fuse = GENERATE(true, false);
  test::run_with(2, [fuse] {
    int calls = 0;
    auto p = rill::generate([&calls]() -> std::optional<int> { return calls++; }) |
             rill::map([](int v) { return v; }) | rill::take(0) | rill::collect();
    CHECK(p.run({.fusion = fuse}).empty());
    CHECK(calls == 0);
    // Nor from a channel (what is in it stays there), nor from the sources of a merge.
    rill::chan<int> c(2);
    c.send(1);
    auto q = rill::merge(rill::from(c),
                         rill::generate([&calls]() -> std::optional<int> { return calls++; })) |
             rill::take(0) | rill::count();
    CHECK(q.run({.fusion = fuse}) == 0);
    CHECK(calls == 0);
    CHECK(c.size() == 1);
  });
}

TEST_CASE("pipeline: merge interleaves sources, each keeping its order", "[pipeline][source]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c(4);
    rill::go([c]() mutable {
      for (int i = 0; i < 500; ++i) c.send(20000 + i);
      c.close();
    });
    int g = 0;
    auto p =
        rill::merge(rill::from(iota_vec(1000)),
                    rill::from(iota_vec(700)) | rill::map([](int v) { return 10000 + churn(v); }),
                    rill::from(c), rill::generate([&g]() -> std::optional<int> {
                      if (g == 300) return std::nullopt;
                      return 30000 + g++;
                    })) |
        rill::collect();
    const std::vector<int> out = p.run();
    REQUIRE(out.size() == 1000 + 700 + 500 + 300);
    std::vector<int> parts[4];
    for (int v : out) parts[v / 10000].push_back(v % 10000);
    CHECK(parts[0] == iota_vec(1000));
    CHECK(parts[1] == iota_vec(700));
    CHECK(parts[2] == iota_vec(500));
    CHECK(parts[3] == iota_vec(300));
    // take after merge stops every source.
    auto q = rill::merge(rill::from(ranges::views::iota(0)), rill::from(ranges::views::iota(0))) |
             rill::take(1000) | rill::count();
    CHECK(q.run() == 1000);
  });
}

TEST_CASE("pipeline: a source that throws fails the run", "[pipeline][source][error]") {
  test::leak_gate gate;  // runs on the default runtime
  auto thrower = ranges::views::iota(0, 100) | ranges::views::transform([](int v) {
                   if (v == 42) throw test::boom(v);
                   return v;
                 });
  auto p = rill::from(thrower) | rill::count();
  CHECK_THROWS_AS(p.run(), test::boom);
  int i = 0;
  auto q = rill::generate([&i]() -> std::optional<int> {
             if (i == 10) throw test::boom(i);
             return i++;
           }) |
           rill::map([](int v) { return v; }, {.fuse = false}) | rill::count();
  CHECK_THROWS_WITH(q.run(), "boom at 10");
}

// ---- stages ----------------------------------------------------------------------------

TEST_CASE("pipeline: map transforms each item, also to another type", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto p = rill::from(iota_vec(5)) | rill::map([](int v) { return std::to_string(v * 3); }) |
           rill::map([](const std::string& s) { return s.size(); }) | rill::collect();
  CHECK(p.run() == std::vector<std::size_t>{1, 1, 1, 1, 2});
}

TEST_CASE("pipeline: filter keeps the items its predicate accepts", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  auto p = rill::from(iota_vec(100)) | rill::filter([](int v) { return v % 7 == 0; }) |
           rill::filter([](int v) { return v > 20; }) | rill::collect();
  CHECK(p.run({.fusion = fuse}) ==
        std::vector<int>{21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 91, 98});
  CHECK((rill::from(iota_vec(10)) | rill::filter([](int) { return false; }) | rill::count())
            .run({.fusion = fuse}) == 0);
}

TEST_CASE("pipeline: flat_map expands each item into a range, in order", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  auto rep =
      rill::from(iota_vec(4)) |
      rill::flat_map([](int v) { return std::vector<int>(static_cast<std::size_t>(v), v); }) |
      rill::collect();
  CHECK(rep.run({.fusion = fuse}) == std::vector<int>{1, 2, 2, 3, 3, 3});
  auto view = rill::from(iota_vec(4)) |
              rill::flat_map([](int v) { return ranges::views::iota(0, v); }) | rill::collect();
  CHECK(view.run({.fusion = fuse}) == std::vector<int>{0, 0, 1, 0, 1, 2});
}

TEST_CASE("pipeline: flat_map over the user's data copies, never moves from it",
          "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  std::vector<std::vector<std::string>> table{{"a", "b"}, {}, {"c"}};
  auto by_ref = rill::from(iota_vec(3)) |
                rill::flat_map([&table](int i) -> std::vector<std::string>& {
                  return table[static_cast<std::size_t>(i)];
                }) |
                rill::collect();
  auto by_span = rill::from(iota_vec(3)) | rill::flat_map([&table](int i) {
                   return std::span<std::string>(table[static_cast<std::size_t>(i)]);
                 }) |
                 rill::collect();
  const std::vector<std::string> abc{"a", "b", "c"};
  for (int k = 0; k < 2; ++k) {
    CHECK(by_ref.run() == abc);
    CHECK(by_span.run() == abc);
  }
  CHECK(table == std::vector<std::vector<std::string>>{{"a", "b"}, {}, {"c"}});
}

TEST_CASE("pipeline: tap sees every item and passes it on unchanged", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  std::vector<int> seen;
  auto p = rill::from(iota_vec(50)) | rill::tap([&seen](const int& v) { seen.push_back(v); }) |
           rill::map([](int v) { return -v; }) | rill::collect();
  const auto out = p.run({.fusion = fuse});
  CHECK(seen == iota_vec(50));
  CHECK(out.size() == 50);
  CHECK(out.back() == -49);
}

TEST_CASE("pipeline: take passes the first n items", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  auto n = GENERATE(0, 1, 9, 10, 11, 1000);
  auto p = rill::from(iota_vec(10)) | rill::take(static_cast<std::size_t>(n)) | rill::collect();
  CHECK(p.run({.fusion = fuse}) == iota_vec(std::min(n, 10)));
}

TEST_CASE("pipeline: batch groups n items; the last group may be short", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  auto p = rill::from(iota_vec(10)) | rill::batch(3) | rill::collect();
  CHECK(p.run({.fusion = fuse}) ==
        std::vector<std::vector<int>>{{0, 1, 2}, {3, 4, 5}, {6, 7, 8}, {9}});
  CHECK((rill::from(iota_vec(4)) | rill::batch(1) | rill::count()).run({.fusion = fuse}) == 4);
  CHECK((rill::from(iota_vec(4)) | rill::batch(4) | rill::count()).run({.fusion = fuse}) == 1);
  CHECK((rill::from(std::vector<int>{}) | rill::batch(4) | rill::count()).run({.fusion = fuse}) ==
        0);
}

TEST_CASE("pipeline: unbatch flattens batches; batch | unbatch is the identity",
          "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  auto n = GENERATE(1, 2, 7, 64);
  auto p = rill::from(iota_vec(1000)) | rill::batch(static_cast<std::size_t>(n)) | rill::unbatch() |
           rill::collect();
  CHECK(p.run({.fusion = fuse}) == iota_vec(1000));
  // Batches that belong to the user are copied from, not moved from: runs repeat.
  std::vector<std::vector<std::string>> vv{{"a", "b"}, {"c"}};
  auto q = rill::from(vv) | rill::unbatch() | rill::collect();
  CHECK(q.run({.fusion = fuse}) == std::vector<std::string>{"a", "b", "c"});
  CHECK(q.run({.fusion = fuse}) == std::vector<std::string>{"a", "b", "c"});
  CHECK(vv == std::vector<std::vector<std::string>>{{"a", "b"}, {"c"}});
}

TEST_CASE("pipeline: par_map ordered gives map's output in order, workers 1..4",
          "[pipeline][stage][par_map]") {
  auto workers = GENERATE(1u, 2u, 3u, 4u);
  test::run_with(2, [workers] {
    std::vector<int> expect = iota_vec(2000);
    for (int& v : expect) v = v * 3 + 1;
    auto p = rill::from(iota_vec(2000)) |
             rill::par_map([](int v) { return churn(v) * 3 + 1; },
                           {.workers = workers, .ordered = true}) |
             rill::collect();
    CHECK(p.run() == expect);
    const auto fibers = p.stats().fibers;
    CHECK(std::count(fibers.begin(), fibers.end(), "par_map#1") == workers);
  });
}

TEST_CASE("pipeline: par_map unordered gives every result once, workers 1..4",
          "[pipeline][stage][par_map]") {
  auto workers = GENERATE(1u, 2u, 3u, 4u);
  test::run_with(2, [workers] {
    auto p = rill::from(iota_vec(2000)) |
             rill::par_map([](int v) { return churn(v) * 3 + 1; },
                           {.workers = workers, .ordered = false}) |
             rill::collect();
    std::vector<int> out = p.run();
    std::sort(out.begin(), out.end());
    std::vector<int> expect = iota_vec(2000);
    for (int& v : expect) v = v * 3 + 1;
    CHECK(out == expect);
  });
}

TEST_CASE("pipeline: par_map with workers = 0 uses the runtime's worker count",
          "[pipeline][stage][par_map]") {
  auto workers = GENERATE(1u, 3u);
  test::run_with(workers, [workers] {
    auto p = rill::from(iota_vec(100)) | rill::par_map([](int v) { return v; }) | rill::count();
    CHECK(p.run() == 100);
    const auto fibers = p.stats().fibers;
    CHECK(std::count(fibers.begin(), fibers.end(), "par_map#1") == workers);
  });
}

TEST_CASE("pipeline: par_maps in a row, then take", "[pipeline][stage][par_map]") {
  auto ordered = GENERATE(true, false);
  test::run_with(2, [ordered] {
    auto p = rill::from(iota_vec(3000)) |
             rill::par_map([](int v) { return churn(v); }, {.workers = 3, .ordered = ordered}) |
             rill::par_map([](int v) { return v * 2; },
                           {.workers = 2, .ordered = ordered, .buffer = 8}) |
             rill::collect();
    std::vector<int> out = p.run();
    if (!ordered) std::sort(out.begin(), out.end());
    std::vector<int> expect = iota_vec(3000);
    for (int& v : expect) v *= 2;
    CHECK(out == expect);
    auto q = rill::from(ranges::views::iota(0)) |
             rill::par_map([](int v) { return v; }, {.workers = 2, .ordered = ordered}) |
             rill::take(100) | rill::count();
    CHECK(q.run() == 100);
  });
}

TEST_CASE("pipeline: stage_boundary starts a new fiber, same results", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto p = rill::from(iota_vec(100)) | rill::map([](int v) { return v + 1; }) |
           rill::stage_boundary | rill::map([](int v) { return v * 2; }) | rill::collect();
  std::vector<int> expect = iota_vec(100, 1);
  for (int& v : expect) v *= 2;
  CHECK(p.run() == expect);
  CHECK(test::declared_fibers(p.stats()) ==
        std::vector<std::string>{"from|map#1", "boundary#2|map#3|collect"});
}

TEST_CASE("pipeline: {.fuse = false} gives a stage a fiber of its own", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto p = rill::from(iota_vec(100)) | rill::map([](int v) { return v + 1; }) |
           rill::filter([](int v) { return v % 2 == 0; }, {.fuse = false}) | rill::tap([](int) {}) |
           rill::count();
  CHECK(p.run() == 50);
  CHECK(test::declared_fibers(p.stats()) ==
        std::vector<std::string>{"from|map#1", "filter#2|tap#3|count"});
}

namespace {

// says_at(ahead, n, at): a stage function that passes its items on and sends on `ahead`
// once `at` items have come through (n counts them); waits_at_first(ahead): one that, at its
// first item, waits for that. A link between the two must hold `at` items, or the run
// deadlocks.
auto says_at(rill::chan<int>& ahead, std::atomic<int>& n, int at) {
  return [&ahead, &n, at](int v) {
    if (n.fetch_add(1) + 1 == at) ahead.send(1);
    return v;
  };
}
auto waits_at_first(rill::chan<int>& ahead) {
  return [&ahead, first = true](int v) mutable {
    if (first) first = !ahead.recv();  // holds a value: false
    return v;
  };
}

// tried_until_it_happens(run): run() a scenario in which a reader waits for a writer that
// must not block on a full link first. A link counts its batches, so it holds its buffer of
// items only while they come in full batches; a fiber that yields at the end of its slice
// sends its partial batch first, and should that happen early (a loaded machine, ASan), the
// link fills early, the writer blocks on it and rill::run reports the deadlock: the
// scenario did not happen, and it is tried again, up to 5 times. A link shaped too small
// deadlocks every time; an item lost or repeated fails the run's own checks at once.
template <class Run>
void tried_until_it_happens(Run run) {
  int deadlocked = 0;
  for (int attempt = 0; attempt < 5; ++attempt) {
    try {
      run();
      break;
    } catch (const rill::deadlock_error& e) {
      UNSCOPED_INFO("attempt " << attempt << ": " << e.what());
      ++deadlocked;
    }
  }
  CHECK(deadlocked < 5);
}

}  // namespace

TEST_CASE("pipeline: a link with a small pinned batch still holds its buffer of items",
          "[pipeline][stage]") {
  // The writer runs ahead of a reader that waits for it: 50 items must fit in a link of
  // buffer 64 whatever its batch size. A link shaped for the default batches (one slot of
  // 21) with batches of one item held 3, and the run deadlocked (rill::run throws).
  const std::size_t batch = GENERATE(1u, 2u, 7u, 21u);
  INFO("batch_size " << batch);
  tried_until_it_happens([batch] {
    test::run_with(2, [batch] {
      rill::chan<int> ahead(1);
      std::atomic<int> produced{0};
      auto p = rill::from(iota_vec(200)) |
               rill::map(says_at(ahead, produced, 50), {.buffer = 64, .batch_size = batch}) |
               rill::map(waits_at_first(ahead), {.fuse = false}) | rill::count();
      const std::size_t n = p.run();  // a deadlock leaves the run, to be tried again
      CHECK(n == 200);
    });
  });
}

TEST_CASE("pipeline: a partial batch held back by a full link keeps its items",
          "[pipeline][stage]") {
  // Batches of 8 in a link of 6 slots (buffer 64). The reader holds the first batch while it
  // waits at its first item, so after 56 items the link is full; at item 60 the writer's fiber
  // parks (a timer) holding 4 items: its park hook's send finds the link full and leaves the
  // batch with the writer, which goes on filling it. Then the writer lets the reader go.
  const unsigned workers = GENERATE(1u, 2u);
  INFO("workers " << workers);
  // The reader waits for the writer's item 61 (tried_until_it_happens: the writer's batches
  // may come out shorter than 8 on a loaded machine).
  tried_until_it_happens([workers] {
    test::run_with(workers, [] {
      rill::chan<int> go(1);
      auto writer = [&go](int v) {
        if (v == 60) rill::this_fiber::sleep_for(std::chrono::microseconds(1));
        if (v == 61) go.send(1);
        return v;
      };
      auto p = rill::from(iota_vec(200)) | rill::map(writer, {.buffer = 64, .batch_size = 8}) |
               rill::map(waits_at_first(go), {.fuse = false}) | rill::collect();
      const std::vector<int> got = p.run();
      CHECK(got == iota_vec(200));
    });
  });
}

TEST_CASE("pipeline: par_map's links hold their buffer of items with small pinned units",
          "[pipeline][stage][par_map]") {
  // The workers run ahead of a sink that waits for them: 50 results must fit in the link
  // back (buffer 64). Shaped for batches of 21 it had one slot, a unit of results each: with
  // units of 1 to 4 items it held too few, and the run deadlocked (rill::run throws).
  const std::size_t batch = GENERATE(1u, 2u, 4u);
  INFO("batch_size " << batch);
  test::run_with(2, [batch] {
    rill::chan<int> ahead(1);
    std::atomic<int> produced{0};
    auto p = rill::from(iota_vec(200)) |
             rill::par_map(says_at(ahead, produced, 50),
                           {.workers = 2, .ordered = false, .buffer = 64, .batch_size = batch}) |
             rill::map(waits_at_first(ahead), {.fuse = false}) | rill::count();
    CHECK(p.run() == 200);
  });
}

TEST_CASE("pipeline: {.buffer = n} of any size gives the same results", "[pipeline][stage]") {
  auto n = GENERATE(0u, 1u, 2u, 3u, 7u, 8u, 9u, 64u, 1000u);
  test::run_with(2, [n] {
    auto p = rill::from(iota_vec(3000)) | rill::map([](int v) { return v * 2; }, {.buffer = n}) |
             rill::filter([](int v) { return v % 3 != 0; }, {.buffer = n, .fuse = false}) |
             rill::par_map([](int v) { return churn(v); }, {.workers = 2, .buffer = n}) |
             rill::stage_boundary | rill::collect();
    std::vector<int> expect;
    for (int v : iota_vec(3000)) {
      if ((v * 2) % 3 != 0) expect.push_back(v * 2);
    }
    CHECK(p.run() == expect);
    CHECK(p.run({.fusion = false}) == expect);
  });
}

TEST_CASE("pipeline: {.name} names a stage in stats and in failed_stage()", "[pipeline][stage]") {
  test::leak_gate gate;  // runs on the default runtime
  auto p = rill::from(iota_vec(10)) | rill::map([](int v) { return v; }, {.name = "identity"}) |
           rill::map(
               [](int v) {
                 if (v == 5) throw test::boom(v);
                 return v;
               },
               {.fuse = false, .name = "explode"}) |
           rill::count();
  CHECK_THROWS_AS(p.run(), test::boom);
  CHECK(test::declared_fibers(p.stats()) ==
        std::vector<std::string>{"from|identity", "explode|count"});
  test::wait_no_leaks();  // the default runtime's stage fibers, before run_with's own check
  test::run_with(2, [&p] {
    auto h = p.start();
    CHECK_THROWS_WITH(h.wait(), "boom at 5");
    CHECK(h.failed_stage() == "explode");
  });
}

// ---- terminals -------------------------------------------------------------------------

TEST_CASE("pipeline: sink and for_each call f per item, in order; run() returns void",
          "[pipeline][terminal]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  std::vector<int> a, b;
  auto p = rill::from(iota_vec(300)) | rill::sink([&a](int v) { a.push_back(v); });
  auto q = rill::from(iota_vec(300)) | rill::for_each([&b](int v) { b.push_back(v); });
  static_assert(std::is_void_v<decltype(p.run())>);
  p.run({.fusion = fuse});
  q.run({.fusion = fuse});
  CHECK(a == iota_vec(300));
  CHECK(b == iota_vec(300));
}

TEST_CASE("pipeline: reduce folds left to right from init", "[pipeline][terminal]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  auto sum = rill::from(iota_vec(1000)) | rill::reduce(0L, std::plus<>{});
  CHECK(sum.run({.fusion = fuse}) == 999L * 1000 / 2);
  auto cat =
      rill::from(std::vector<std::string>{"a", "b", "c", "d"}) |
      rill::reduce(std::string(">"), [](std::string acc, const std::string& s) { return acc + s; });
  CHECK(cat.run({.fusion = fuse}) == ">abcd");
  auto empty = rill::from(std::vector<int>{}) | rill::reduce(7, std::plus<>{});
  CHECK(empty.run({.fusion = fuse}) == 7);
  auto counts = rill::from(std::string("abracadabra")) |
                rill::reduce(std::map<char, int>{}, [](std::map<char, int> m, char c) {
                  ++m[c];
                  return m;
                });
  CHECK(counts.run({.fusion = fuse}) ==
        std::map<char, int>{{'a', 5}, {'b', 2}, {'c', 1}, {'d', 1}, {'r', 2}});
}

TEST_CASE("pipeline: count and collect", "[pipeline][terminal]") {
  test::leak_gate gate;  // runs on the default runtime
  auto fuse = GENERATE(true, false);
  CHECK((rill::from(iota_vec(12345)) | rill::count()).run({.fusion = fuse}) == 12345);
  CHECK((rill::from(std::vector<int>{}) | rill::count()).run({.fusion = fuse}) == 0);
  CHECK((rill::from(std::vector<int>{}) | rill::collect()).run({.fusion = fuse}).empty());
  std::vector<no_default> nd =
      (rill::from(iota_vec(3)) | rill::map([](int v) { return no_default(v); }) | rill::collect())
          .run({.fusion = fuse});
  REQUIRE(nd.size() == 3);
  CHECK(nd[2].v == 2);
}

TEST_CASE("pipeline: to(chan) sends every item, then closes the channel", "[pipeline][terminal]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> out(3);
    std::vector<int> got;
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      for (int v : out) got.push_back(v);  // ends when the pipeline closes `out`
      wg.done();
    });
    (rill::from(iota_vec(500)) | rill::map([](int v) { return v + 1; }) | rill::to(out)).run();
    wg.wait();
    CHECK(got == iota_vec(500, 1));
    CHECK(out.closed());
    rill::chan<long> wide;  // to() converts the item to the channel's type
    rill::send_chan<long> s = wide;
    rill::go([s] { (rill::from(iota_vec(3)) | rill::to(s)).run(); });
    long total = 0;
    for (long v : wide) total += v;
    CHECK(total == 3);
  });
}

TEST_CASE("pipeline: to(chan) closes the channel when the run fails",
          "[pipeline][terminal][error]") {
  auto workers = GENERATE(1u, 2u);
  auto fuse = GENERATE(true, false);
  test::run_with(workers, [fuse] {
    rill::chan<int> out(4);
    auto h = (rill::from(iota_vec(100)) | rill::map([](int v) {
                if (v == 10) throw test::boom(v);
                return v;
              }) |
              rill::to(out))
                 .start({.fusion = fuse});
    int n = 0;
    for (int v : out) n += v >= 0;  // ends: the channel is closed although map threw
    CHECK(n <= 10);
    CHECK_THROWS_AS(h.wait(), test::boom);
  });
}

// ---- broadcast -----------------------------------------------------------------------

TEST_CASE("pipeline: broadcast gives every branch every item, in order; run() returns a tuple",
          "[pipeline][terminal][broadcast]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto fuse = GENERATE(true, false);
  test::run_with(workers, [fuse] {
    std::vector<int> seen;
    auto p = rill::from(iota_vec(1000)) | rill::map([](int v) { return churn(v); }) |
             rill::broadcast(
                 rill::collect(), rill::filter([](int v) { return v % 3 == 0; }) | rill::count(),
                 rill::map([](int v) { return long{v}; }) | rill::reduce(0L, std::plus<>{}),
                 rill::sink([&seen](int v) { seen.push_back(v); }));
    static_assert(std::is_same_v<decltype(p.run()),
                                 std::tuple<std::vector<int>, std::size_t, long, std::monostate>>);
    for (int round = 0; round < 2; ++round) {  // a pipeline runs again with fresh branches
      seen.clear();
      auto [all, thirds, sum, none] = p.run({.fusion = fuse});
      (void)none;
      CHECK(all == iota_vec(1000));
      CHECK(thirds == 334);
      CHECK(sum == 999L * 1000 / 2);
      CHECK(seen == iota_vec(1000));
    }
    // Each branch runs in fibers of its own, named after its position.
    const auto fibers = p.stats().fibers;
    CHECK(std::count_if(fibers.begin(), fibers.end(),
                        [](const std::string& f) { return f.rfind("broadcast[", 0) == 0; }) == 4);
  });
}

TEST_CASE("pipeline: a broadcast branch that stops early leaves the others every item",
          "[pipeline][terminal][broadcast]") {
  auto workers = GENERATE(1u, 2u);
  test::run_with(workers, [] {
    auto p =
        rill::from(iota_vec(5000)) | rill::broadcast(rill::take(3) | rill::collect(), rill::count(),
                                                     rill::take(0) | rill::count());
    auto [first, n, zero] = p.run();
    CHECK(first == std::vector{0, 1, 2});
    CHECK(n == 5000);
    CHECK(zero == 0);
    // When every branch has stopped, so does the source, even an endless one.
    auto q = rill::from(ranges::views::iota(0)) |
             rill::broadcast(rill::take(10) | rill::count(), rill::take(20) | rill::collect());
    auto [ten, twenty] = q.run();
    CHECK(ten == 10);
    CHECK(twenty.size() == 20);
  });
}

TEST_CASE("pipeline: an exception in a broadcast branch fails the run and names the stage",
          "[pipeline][terminal][broadcast][error]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto fuse = GENERATE(true, false);
  test::run_with(workers, [fuse] {
    test::tracked::live = 0;
    auto p = rill::from(iota_vec(2000)) | rill::map([](int v) { return test::tracked{v}; }) |
             rill::broadcast(rill::count(), rill::map(
                                                [](const test::tracked& t) {
                                                  if (t.v == 777) throw test::boom(t.v);
                                                  return t.v;
                                                },
                                                {.name = "explode"}) |
                                                rill::collect());
    auto h = p.start({.fusion = fuse});
    CHECK_THROWS_WITH(h.wait(), "boom at 777");
    CHECK(h.failed_stage() == "explode");
    CHECK(test::tracked::live == 0);  // no item outlives the run
  });
}

TEST_CASE("pipeline: cancel() stops an endless source feeding a broadcast",
          "[pipeline][terminal][broadcast][cancel]") {
  auto workers = GENERATE(1u, 2u);
  test::run_with(workers, [] {
    std::atomic<long> seen{0};
    auto h = (rill::from(ranges::views::iota(0)) |
              rill::broadcast(rill::count(), rill::for_each([&seen](int) {
                                ++seen;
                                rill::this_fiber::yield();
                              })))
                 .start();
    while (seen.load() < 100) rill::this_fiber::yield();
    h.cancel();
    CHECK_THROWS_AS(h.wait(), rill::pipeline_cancelled);
  });
}

TEST_CASE("pipeline: broadcast with one branch takes move-only items",
          "[pipeline][terminal][broadcast]") {
  test::run_with(2, [] {
    auto p =
        rill::from(iota_vec(100)) | rill::map([](int v) { return std::make_unique<int>(v); }) |
        rill::broadcast(rill::map([](std::unique_ptr<int> u) { return *u; }) | rill::collect());
    auto [out] = p.run();
    CHECK(out == iota_vec(100));
  });
}
