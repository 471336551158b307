// linear_trivial, boost_fiber: a fiber per stage (source, map; the sink is the main fiber)
// linked by Boost.Fiber channels.  The layout is the config's first word:
//   peritem_   one item per channel operation: unbuffered_channel for cap0,
//              buffered_channel(C) otherwise (it holds C - 1 items)
//   batch<B>_  blocks of B = link_batch(C) items through buffered_channels of link_slots(C)
//              blocks (rounded up: buffered_capacity)
// The scheduler is the next word:
//   rr_..._workers1   round_robin scheduler, all fibers on one thread
//   ws_..._workersW   and wssuspend_, swsuspend_: a pool of W threads (fiber_support.hpp)
#include "batch_support.hpp"
#include "fiber_support.hpp"
#include "work.hpp"

namespace {

using boost::fibers::channel_op_status;

// stages(c1, c2, produce, map, fold): the pipeline over messages of type Msg (an item or a
// block): a source fiber runs produce(c1), then closes c1; a map fiber pushes map(m) into c2
// for each m of c1; the calling fiber folds c2's messages from 0.
template <class Msg, class C1, class C2, class Produce, class Map, class Fold>
std::uint64_t stages(C1& c1, C2& c2, Produce produce, Map map, Fold fold) {
  boost::fibers::fiber source([&] {
    produce(c1);
    c1.close();
  });
  boost::fibers::fiber mapper([&] {
    Msg m;
    while (c1.pop(m) == channel_op_status::success) c2.push(map(std::move(m)));
    c2.close();
  });
  std::uint64_t acc = 0;
  Msg m;
  while (c2.pop(m) == channel_op_status::success) acc = fold(acc, m);
  source.join();
  mapper.join();
  return acc;
}

constexpr auto map_item = [](std::uint64_t v) { return bench::trivial_map(v); };

std::uint64_t run(std::uint64_t n, std::size_t cap) {
  return bench::with_channel<std::uint64_t>(cap, [&](auto& c1) {
    return bench::with_channel<std::uint64_t>(cap, [&](auto& c2) {
      return stages<std::uint64_t>(
          c1, c2,
          [n](auto& c) {
            for (std::uint64_t i = 0; i < n; ++i) c.push(i);
          },
          map_item, bench::item_fold{});
    });
  });
}

std::uint64_t run_blocks(std::uint64_t n, std::size_t cap) {
  const std::size_t capacity = bench::buffered_capacity(bench::link_slots(cap));
  boost::fibers::buffered_channel<bench::block> c1(capacity);
  boost::fibers::buffered_channel<bench::block> c2(capacity);
  return stages<bench::block>(
      c1, c2, [n, cap](auto& c) { bench::push_blocks(c, n, bench::link_batch(cap)); },
      bench::block_map{map_item}, bench::block_fold{});
}

void add(const bench::fiber_way& way, unsigned workers, std::size_t cap, bool batched) {
  const std::size_t batch = batched ? bench::link_batch(cap) : 1;
  bench::add("linear_trivial/boost_fiber/" + bench::layout_name(batch) + "_" + way.prefix +
                 bench::cap_name(cap) + "_" + bench::workers_name(workers),
             [=](benchmark::State& s) {
               bench::fiber_runner run_on;
               if (!bench::runner_for(s, way, run_on)) return;
               const std::uint64_t n = bench::items_trivial(cap);
               bench::measure(s, n, bench::expected_trivial(n), [&] {
                 return run_on([&] { return batched ? run_blocks(n, cap) : run(n, cap); });
               });
             });
}

const bool registered = [] {
  const unsigned hw = bench::hardware_threads();
  for (unsigned workers : {1u, hw}) {
    for (const bench::fiber_way& way : bench::fiber_ways(workers)) {
      for (std::size_t cap : bench::trivial_caps()) add(way, workers, cap, false);
      for (std::size_t cap : bench::batched_caps()) add(way, workers, cap, true);
    }
    if (hw == 1) break;
  }
  return true;
}();

}  // namespace
