// fan_out_fan_in and heavy_tail, std_threads: a source thread, W worker threads and the calling
// thread as the sink, linked by mutex + condition-variable queues of capacity 64; items in any
// order.
#include <atomic>
#include <thread>
#include <vector>

#include "bounded_queue.hpp"
#include "work.hpp"

namespace {

template <class Fan>
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
      while (auto v = in.pop()) out.push(Fan::map(*v));
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
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      bench::add(std::string(Fan::name) + "/std_threads/" + bench::cap_name(bench::kCap) + "_" +
                     bench::workers_name(workers),
                 [=](benchmark::State& s) {
                   const std::uint64_t n = Fan::items();
                   bench::measure(s, n, Fan::expected(n), [&] { return run<Fan>(n, workers); });
                 });
    }
  });
  return true;
}();

}  // namespace
