// linear_trivial, std_threads: one std::thread per stage (source, map; the sink is the
// calling thread), linked by mutex + condition-variable queues of the given capacity
// (capacity 0 is a rendezvous).
#include <thread>

#include "bounded_queue.hpp"
#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, std::size_t cap) {
  bench::bounded_queue<std::uint64_t> q1(cap);
  bench::bounded_queue<std::uint64_t> q2(cap);
  std::thread source([&] {
    for (std::uint64_t i = 0; i < n; ++i) q1.push(i);
    q1.close();
  });
  std::thread map([&] {
    while (auto v = q1.pop()) q2.push(bench::trivial_map(*v));
    q2.close();
  });
  std::uint64_t acc = 0;
  while (auto v = q2.pop()) acc = bench::sum(acc, *v);
  source.join();
  map.join();
  return acc;
}

const bool registered = [] {
  for (std::size_t cap : bench::trivial_caps()) {
    bench::add("linear_trivial/std_threads/" + bench::cap_name(cap), [cap](benchmark::State& s) {
      const std::uint64_t n = bench::items_trivial(cap);
      bench::measure(s, n, bench::expected_trivial(n), [&] { return run(n, cap); });
    });
  }
  return true;
}();

}  // namespace
