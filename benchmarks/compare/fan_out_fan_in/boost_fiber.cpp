// fan_out_fan_in and heavy_tail, boost_fiber: a source fiber, W worker fibers and the main fiber
// as the sink.  The layout is the config's first word:
//   peritem_   one item per channel operation, buffered_channel(64) links (hold 63 items)
//   batch16_   blocks of kFanBatch items through buffered_channels of link_slots(64, 16)
//              blocks (rounded up: buffered_capacity); a worker maps a whole block
// The scheduler is the next word:
//   rr_..._workers1   round_robin scheduler on one thread (W = 1)
//   ws_..._workersW   and wssuspend_, swsuspend_: a pool of W threads (fiber_support.hpp)
#include <atomic>
#include <vector>

#include "batch_support.hpp"
#include "fiber_support.hpp"
#include "work.hpp"

namespace {

using boost::fibers::channel_op_status;

// fan<Msg>(capacity, workers, produce, map, fold): over messages of type Msg (an item or a
// block) and channels of `capacity`: a source fiber runs produce(in), then closes it; W
// worker fibers push map(m) into out for each m they pop from in; the calling fiber folds
// out's messages from 0.
template <class Msg, class Produce, class Map, class Fold>
std::uint64_t fan(std::size_t capacity, unsigned workers, Produce produce, Map map, Fold fold) {
  boost::fibers::buffered_channel<Msg> in(capacity);
  boost::fibers::buffered_channel<Msg> out(capacity);
  boost::fibers::fiber source([&] {
    produce(in);
    in.close();
  });
  std::atomic<unsigned> running{workers};
  std::vector<boost::fibers::fiber> pool;
  for (unsigned w = 0; w < workers; ++w) {
    pool.emplace_back([&] {
      Msg m;
      while (in.pop(m) == channel_op_status::success) out.push(map(std::move(m)));
      if (running.fetch_sub(1) == 1) out.close();
    });
  }
  std::uint64_t acc = 0;
  Msg m;
  while (out.pop(m) == channel_op_status::success) acc = fold(acc, m);
  source.join();
  for (auto& f : pool) f.join();
  return acc;
}

template <class Fan>
std::uint64_t run(std::uint64_t n, unsigned workers, bool batched) {
  constexpr auto map_item = [](std::uint64_t v) { return Fan::map(v); };
  if (!batched) {
    return fan<std::uint64_t>(
        bench::kCap, workers,
        [n](auto& c) {
          for (std::uint64_t i = 0; i < n; ++i) c.push(i);
        },
        map_item, bench::item_fold{});
  }
  return fan<bench::block>(
      bench::buffered_capacity(bench::link_slots(bench::kCap, bench::kFanBatch)), workers,
      [n](auto& c) { bench::push_blocks(c, n, bench::kFanBatch); }, bench::block_map{map_item},
      bench::block_fold{});
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      for (const bench::fiber_way& way : bench::fiber_ways(workers)) {
        for (bool batched : {false, true}) {
          bench::add(std::string(Fan::name) + "/boost_fiber/" +
                         bench::layout_name(batched ? bench::kFanBatch : 1) + "_" + way.prefix +
                         bench::cap_name(bench::kCap) + "_" + bench::workers_name(workers),
                     [=](benchmark::State& s) {
                       bench::fiber_runner run_on;
                       if (!bench::runner_for(s, way, run_on)) return;
                       const std::uint64_t n = Fan::items();
                       bench::measure(s, n, Fan::expected(n), [&] {
                         return run_on([&] { return run<Fan>(n, workers, batched); });
                       });
                     });
        }
      }
    }
  });
  return true;
}();

}  // namespace
