// rill/pipeline/merge.hpp: merge(sources...), a source that interleaves several sources,
// each running in fibers of its own and feeding one link. Part of rill/pipeline.hpp.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "rill/pipeline/pipeline.hpp"

namespace rill {
namespace detail {

// flow_slots_v<Flow>: the entries of a merge's inner source: its source, its stages, its
// link into the merge, then its own inner chains.
template <class Flow>
inline constexpr int flow_slots_v = static_cast<int>(std::tuple_size_v<decltype(Flow::stages)>) +
                                    2 + inner_slots_v<decltype(Flow::src)>;

template <class... Flows>
struct merge_source {
  static constexpr const char* kind = "merge";
  static constexpr int inner_slots = (flow_slots_v<Flows> + ... + 0);
  std::tuple<Flows...> flows;
  using value_type = std::common_type_t<typename Flows::value_type...>;

  template <class Sink>
  void drive(Sink& sink, pipe_ctx& ctx, const source_at& at = {});
};

// drive(): each inner source runs its own chain, in a fiber of its own, into one link; the
// merge's chain reads that link.
template <class... Flows>
template <class Sink>
void merge_source<Flows...>::drive(Sink& sink, pipe_ctx& ctx, const source_at& at) {
  using T = value_type;
  const link_shape shape = shape_for(default_buffer);
  auto l = ctx.template link<link_chan<T>>(shape.capacity);
  auto writers = std::make_shared<std::atomic<int>>(static_cast<int>(sizeof...(Flows)));
  // Inner source k's entries start after those of the sources before it; its tail (the
  // link into the merge) is the last of its own.
  int base = at.inner, k = 0;
  std::apply(
      [&](auto&... fl) {
        (
            [&] {
              using F = std::remove_cvref_t<decltype(fl)>;
              const int tail_slot =
                  base + static_cast<int>(std::tuple_size_v<decltype(F::stages)>) + 1;
              ctx.spawn("merge",
                        [&fl, &ctx,
                         tail = link_tail<T>{l, shape.batch, writers, tail_slot,
                                             at.label + "merge[" + std::to_string(k) +
                                                 "]/"}]() mutable { build_flow(fl, tail, ctx); });
              base += flow_slots_v<F>;
              ++k;
            }(),
            ...);
      },
      flows);
  // The merge counts what it takes from its sources as its own items.
  link_driver<T>{l, ctx.counter(at.slot)}(sink);
}

}  // namespace detail

// merge(sources...): one stream interleaving several sources, each in its own fiber(s);
// each keeps its own order.
template <class... Flows>
auto merge(Flows... fs) {
  static_assert(sizeof...(Flows) > 0, "rill::merge: needs at least one source");
  static_assert(((detail::pipeline_source<Flows> || detail::is_poisoned_v<Flows>)&&...),
                "rill::merge: every argument must be a source");
  return detail::flow<detail::merge_source<Flows...>>{{std::tuple<Flows...>(std::move(fs)...)}, {}};
}

}  // namespace rill
