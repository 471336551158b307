// The README's promise, as a real test: business logic is a plain function, tested with
// plain REQUIREs and no concurrency at all; the same function wired into a pipeline is
// tested deterministically with rill::inline_run (one worker, a fixed schedule).
#include <rill/rill.hpp>

#include <catch2/catch.hpp>

#include <functional>
#include <vector>

#include <range/v3/view/iota.hpp>

namespace {

int process(int v) { return v * 2 + 1; }  // the business logic: pure, knows no concurrency

}  // namespace

TEST_CASE("process: doubles and adds one (a plain function, plain REQUIREs)", "[process]") {
  REQUIRE(process(0) == 1);
  REQUIRE(process(1) == 3);
  REQUIRE(process(20) == 41);
  REQUIRE(process(-1) == -1);
  REQUIRE(process(-20) == -39);
}

TEST_CASE("process: the wiring, deterministically, with rill::inline_run", "[process][pipeline]") {
  auto p = rill::from(std::vector{1, 2, 3}) | rill::map(process) | rill::collect();
  REQUIRE(p.run(rill::inline_run) == std::vector{3, 5, 7});

  // The README's pipeline: sum of 2v + 1 over v < n is n * n.
  const int n = 100'000;
  auto total = rill::from(ranges::views::iota(0, n)) | rill::map(process) | rill::reduce(0L, std::plus<>{});
  REQUIRE(total.run(rill::inline_run) == 1L * n * n);

  // Inline, even the completion order of an unordered par_map is the same on every run.
  auto unordered = rill::from(ranges::views::iota(0, 1000)) |
                   rill::par_map(process, {.workers = 4, .ordered = false}) | rill::collect();
  const std::vector<int> first = unordered.run(rill::inline_run);
  REQUIRE(first.size() == 1000);
  for (int i = 0; i < 4; ++i) REQUIRE(unordered.run(rill::inline_run) == first);
}
