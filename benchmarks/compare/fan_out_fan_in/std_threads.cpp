// fan_out_fan_in, std_threads: a source thread, W worker threads and the calling thread as
// the sink, linked by mutex + condition-variable queues of capacity 64; items in any order.
#include <atomic>
#include <thread>
#include <vector>

#include "bounded_queue.hpp"
#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, unsigned workers) {
  bench::bounded_queue<std::uint64_t> in(bench::kCap);
  bench::bounded_queue<std::uint64_t> out(bench::kCap);
  std::thread source([&] {
    for (std::uint64_t i = 0; i < n; ++i) in.push(i);
    in.close();
  });
  std::atomic<unsigned> running{workers};
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      while (auto v = in.pop()) out.push(bench::fan_map(*v));
      if (running.fetch_sub(1) == 1) out.close();
    });
  }
  std::uint64_t acc = 0;
  while (auto v = out.pop()) acc = bench::sum(acc, *v);
  source.join();
  for (auto& t : pool) t.join();
  return acc;
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    bench::add("fan_out_fan_in/std_threads/" + bench::cap_name(bench::kCap) + "_" +
                   bench::workers_name(workers),
               [=](benchmark::State& s) {
                 const std::uint64_t n = bench::items_fan();
                 bench::measure(s, n, bench::expected_fan(n), [&] { return run(n, workers); });
               });
  }
  return true;
}();

}  // namespace
