// linear_heavy, std_threads: a source thread, W map threads and the calling thread as the
// sink, linked by mutex + condition-variable queues of capacity 64.  Ordered: the sink puts
// items back in source order with a reorder buffer.  peritem_: one item per queue operation.
#include <atomic>
#include <thread>
#include <vector>

#include "bounded_queue.hpp"
#include "reorder.hpp"
#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, unsigned workers, bool is_ordered) {
  bench::bounded_queue<std::uint64_t> in(bench::kCap);
  bench::bounded_queue<bench::seq_item> out(bench::kCap);
  std::thread source([&] {
    for (std::uint64_t i = 0; i < n; ++i) in.push(i);
    in.close();
  });
  std::atomic<unsigned> running{workers};
  std::vector<std::thread> maps;
  for (unsigned w = 0; w < workers; ++w) {
    maps.emplace_back([&] {
      while (auto v = in.pop()) out.push({*v, bench::heavy_map(*v)});
      if (running.fetch_sub(1) == 1) out.close();
    });
  }
  std::uint64_t result = 0;
  if (is_ordered) {
    bench::reorderer sink(bench::kOrderedInit, bench::ordered);
    while (auto item = out.pop()) sink.push(*item);
    result = sink.result();
  } else {
    while (auto item = out.pop()) result = bench::sum(result, item->value);
  }
  source.join();
  for (auto& t : maps) t.join();
  return result;
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    for (bool is_ordered : {true, false}) {
      bench::add("linear_heavy/std_threads/peritem_" + bench::cap_name(bench::kCap) + "_" +
                     bench::workers_name(workers) + (is_ordered ? "_ordered" : "_unordered"),
                 [=](benchmark::State& s) {
                   const std::uint64_t n = bench::items_heavy();
                   bench::measure(s, n, bench::expected_heavy(n, is_ordered),
                                  [&] { return run(n, workers, is_ordered); });
                 });
    }
  }
  return true;
}();

}  // namespace
