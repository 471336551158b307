// fan_out_fan_in and heavy_tail, std_threads: a source thread, W worker threads and the calling
// thread as the sink, linked by mutex + condition-variable queues; items in any order.  The
// layout is the config's first word:
//   peritem_   one item per queue operation, queues of capacity 64
//   batch16_   blocks of kFanBatch items through queues of link_slots(64, 16) blocks; a
//              worker maps a whole block
#include <atomic>
#include <thread>
#include <vector>

#include "batch_support.hpp"
#include "bounded_queue.hpp"
#include "work.hpp"

namespace {

// fan<Msg>(capacity, workers, produce, map, fold): over messages of type Msg (an item or a
// block) and queues of `capacity`: a source thread runs produce(in), then closes it; W
// worker threads push map(m) into out for each m they pop from in; the calling thread folds
// out's messages from 0.
template <class Msg, class Produce, class Map, class Fold>
std::uint64_t fan(std::size_t capacity, unsigned workers, Produce produce, Map map, Fold fold) {
  bench::bounded_queue<Msg> in(capacity);
  bench::bounded_queue<Msg> out(capacity);
  std::thread source([&] {
    produce(in);
    in.close();
  });
  std::atomic<unsigned> running{workers};
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      while (auto m = in.pop()) out.push(map(std::move(*m)));
      if (running.fetch_sub(1) == 1) out.close();
    });
  }
  std::uint64_t acc = 0;
  while (auto m = out.pop()) acc = fold(acc, *m);
  source.join();
  for (auto& t : pool) t.join();
  return acc;
}

template <class Fan>
std::uint64_t run(std::uint64_t n, unsigned workers, bool batched) {
  constexpr auto map_item = [](std::uint64_t v) { return Fan::map(v); };
  if (!batched) {
    return fan<std::uint64_t>(
        bench::kCap, workers,
        [n](auto& q) {
          for (std::uint64_t i = 0; i < n; ++i) q.push(i);
        },
        map_item, bench::item_fold{});
  }
  return fan<bench::block>(
      bench::link_slots(bench::kCap, bench::kFanBatch), workers,
      [n](auto& q) { bench::push_blocks(q, n, bench::kFanBatch); }, bench::block_map{map_item},
      bench::block_fold{});
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      for (bool batched : {false, true}) {
        bench::add(std::string(Fan::name) + "/std_threads/" +
                       bench::layout_name(batched ? bench::kFanBatch : 1) + "_" +
                       bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     const std::uint64_t n = Fan::items();
                     bench::measure(s, n, Fan::expected(n),
                                    [&] { return run<Fan>(n, workers, batched); });
                   });
      }
    }
  });
  return true;
}();

}  // namespace
