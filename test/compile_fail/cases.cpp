// Pipelines that must not compile, one per CASE, each with one readable error: the stage's
// static_assert, naming the stage (the acceptance rule of the pipeline issue), and none
// from the code that goes on to use the pipeline or its result. CASE 0 is the control: a
// correct pipeline, which must compile with the same command.
#include <memory>
#include <rill/rill.hpp>
#include <string>
#include <vector>

namespace {
struct nope {};
}  // namespace

int main() {
#if CASE == 0
  auto p = rill::from(std::vector<int>{1, 2, 3}) | rill::map([](int v) { return v * 2; }) |
           rill::filter([](int v) { return v > 2; }) | rill::collect();
  std::vector<int> r = p.run();
  (void)r;
#elif CASE == 1   // map(f) whose f takes another type; the result is used
  auto p = rill::from(std::vector<int>{1, 2, 3}) |
           rill::map([](const std::string& s) { return s.size(); }) | rill::collect();
  std::vector<std::size_t> r = p.run();
  (void)r;
#elif CASE == 2   // filter
  auto p =
      rill::from(std::vector<int>{1}) | rill::filter([](nope) { return true; }) | rill::count();
  (void)p.run();
#elif CASE == 3   // map(f) whose f returns void
  auto p = rill::from(std::vector<int>{1}) | rill::map([](int) {}) | rill::count();
  (void)p.run();
#elif CASE == 4   // reduce
  auto p = rill::from(std::vector<int>{1}) |
           rill::reduce(std::string(), [](std::string a, nope) { return a; });
  (void)p.run();
#elif CASE == 5   // a fragment composed before its source
  auto frag = rill::map([](const std::string& s) { return s.size(); }) |
              rill::filter([](std::size_t) { return true; });
  auto p = rill::from(std::vector<int>{1}) | frag | rill::collect();
  (void)p.run();
#elif CASE == 6   // par_map
  auto p =
      rill::from(std::vector<int>{1}) | rill::par_map([](nope) { return 1; }) | rill::collect();
  (void)p.run();
#elif CASE == 7   // the second of two maps, then sink
  auto p = rill::from(std::vector<int>{1}) | rill::map([](int v) { return v; }) |
           rill::map([](nope) { return 1; }) | rill::sink([](int) {});
  p.run();
#elif CASE == 8   // broadcast of move-only items to two branches
  auto p = rill::from(std::vector<int>{1}) |
           rill::map([](int v) { return std::make_unique<int>(v); }) |
           rill::broadcast(rill::count(), rill::count());
  (void)p.run();
#elif CASE == 9   // a broadcast branch whose stage cannot take the item
  auto p = rill::from(std::vector<int>{1}) |
           rill::broadcast(rill::count(), rill::filter([](nope) { return true; }) | rill::count());
  (void)p.run();
#elif CASE == 10  // the result of a bad pipeline, used as the good one's would be
  auto p = rill::from(std::vector<int>{1, 2, 3}) |
           rill::map([](const std::string& s) { return s.size(); }) | rill::collect();
  auto v = p.run();
  (void)v.size();
#elif CASE == 11  // stages after the bad one, start() and wait(), the result used
  auto p = rill::from(std::vector<int>{1}) | rill::map([](nope) { return std::string(); }) |
           rill::filter([](const std::string& s) { return !s.empty(); }) |
           rill::map([](const std::string& s) { return s.size(); }) |
           rill::reduce(std::size_t{0}, [](std::size_t a, std::size_t b) { return a + b; });
  auto sum = p.start().wait();
  return static_cast<int>(sum + 1);
#endif
}
