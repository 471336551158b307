#include <rill/rill.hpp>
#include <catch2/catch.hpp>
#include <atomic>

TEST_CASE("runtime: run returns main's result", "[runtime]") {
  auto workers = GENERATE(1u, 2u, 4u);
  rill::options o;
  o.workers = workers;
  CHECK(rill::run([] { return 42; }, o) == 42);
}

TEST_CASE("runtime: go spawns fibers that all finish before run returns", "[runtime]") {
  auto workers = GENERATE(1u, 2u, 4u);
  rill::options o;
  o.workers = workers;
  std::atomic<int> n{0};
  rill::run([&] {
    for (int i = 0; i < 10000; ++i) rill::go([&] { n++; });
  }, o);
  CHECK(n == 10000);
  CHECK(rill::global_stats().live_fibers == 0);
}
