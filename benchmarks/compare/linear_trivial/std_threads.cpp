// linear_trivial, std_threads: one std::thread per stage (source, map; the sink is the
// calling thread), linked by mutex + condition-variable queues.  The layout is the config's
// first word:
//   peritem_   one item per queue operation, queues of capacity C (0 is a rendezvous)
//   batch<B>_  blocks of B = link_batch(C) items through queues of link_slots(C) blocks
#include <thread>

#include "batch_support.hpp"
#include "bounded_queue.hpp"
#include "work.hpp"

namespace {

// stages<Msg>(capacity, produce, map, fold): the pipeline over messages of type Msg (an item
// or a block), queues of `capacity` messages: a source thread runs produce(q1), then closes
// q1; a map thread pushes map(m) into q2 for each m of q1; the calling thread folds q2's
// messages from 0.
template <class Msg, class Produce, class Map, class Fold>
std::uint64_t stages(std::size_t capacity, Produce produce, Map map, Fold fold) {
  bench::bounded_queue<Msg> q1(capacity);
  bench::bounded_queue<Msg> q2(capacity);
  std::thread source([&] {
    produce(q1);
    q1.close();
  });
  std::thread mapper([&] {
    while (auto m = q1.pop()) q2.push(map(std::move(*m)));
    q2.close();
  });
  std::uint64_t acc = 0;
  while (auto m = q2.pop()) acc = fold(acc, *m);
  source.join();
  mapper.join();
  return acc;
}

constexpr auto map_item = [](std::uint64_t v) { return bench::trivial_map(v); };

std::uint64_t run(std::uint64_t n, std::size_t cap) {
  return stages<std::uint64_t>(
      cap,
      [n](auto& q) {
        for (std::uint64_t i = 0; i < n; ++i) q.push(i);
      },
      map_item, bench::item_fold{});
}

std::uint64_t run_blocks(std::uint64_t n, std::size_t cap) {
  return stages<bench::block>(
      bench::link_slots(cap),
      [n, cap](auto& q) { bench::push_blocks(q, n, bench::link_batch(cap)); },
      bench::block_map{map_item}, bench::block_fold{});
}

void add(std::size_t cap, bool batched) {
  const std::size_t batch = batched ? bench::link_batch(cap) : 1;
  bench::add("linear_trivial/std_threads/" + bench::layout_name(batch) + "_" + bench::cap_name(cap),
             [=](benchmark::State& s) {
               const std::uint64_t n = bench::items_trivial(cap);
               bench::measure(s, n, bench::expected_trivial(n),
                              [&] { return batched ? run_blocks(n, cap) : run(n, cap); });
             });
}

const bool registered = [] {
  for (std::size_t cap : bench::trivial_caps()) add(cap, false);
  for (std::size_t cap : bench::batched_caps()) add(cap, true);
  return true;
}();

}  // namespace
