// rill/pipeline/sources.hpp: where items come from. Part of rill/pipeline.hpp.
//
// A source drives a sink: drive(sink, ctx, at) pushes every item into it until the sink
// says stop or the run is cancelled, then calls sink.finish(). `at` says where its stats go.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <ranges>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "rill/pipeline/run_context.hpp"

namespace rill {
namespace detail {

// source_at: where a source stands among the run's stages (stage_id::slot), where the
// stages of the chains inside it start (a merge's sources), and how those are named.
struct source_at {
  int slot = 0;
  int inner = 0;
  std::string label;  // the prefix of the inner chains' stage names
};

// chunk_size: how many items a source sends before it reports them (tick) and checks the
// run's stop flag. It doubles from 1 up to 1024 while a chunk takes little time, and shrinks
// to what fits in grow_below_ns when one takes long: a fused fiber yields between chunks
// (its slice), so a chunk of slow items must stay short, or the fiber would hold its worker
// for 1024 of them. A chunk is also cut short when the fiber's slice is over (slice_check):
// items that turn slow in the middle of a chunk of cheap ones hold the worker for a few of
// them, not for the rest of the chunk.
struct chunk_size {
  static constexpr std::int64_t grow_below_ns = 200'000;
  static constexpr std::int64_t shrink_above_ns = 1'000'000;
  std::size_t n = 1;
  std::int64_t since = now_ns();
  // next(): the chunk just sent held `done` items.
  void next(std::size_t done) noexcept {
    const std::int64_t now = now_ns();
    const std::int64_t took = now - since;
    since = now;
    if (took < grow_below_ns) {
      if (n < 1024) n *= 2;
    } else if (took > shrink_above_ns) {
      const auto fit = static_cast<std::size_t>(static_cast<double>(done) * grow_below_ns /
                                                static_cast<double>(took));
      n = std::clamp<std::size_t>(fit, 1, std::max<std::size_t>(1, n / 2));
    }
  }
};

template <class R>
struct range_source {
  static constexpr const char* kind = "from";
  R range;
  std::size_t buffer = default_buffer;  // capacity of the channel after the source
  std::size_t stack_size = 0;           // stage_options::stack_size
  using value_type = std::remove_cvref_t<decltype(*std::ranges::begin(std::declval<R&>()))>;

  // drive(): the items go in chunks (chunk_size); after each, the sink hears how many went
  // (tick: the fiber measures its work per chunk, not per item) and the run's stop flag is
  // checked.
  template <class Sink>
  void drive(Sink& sink, pipe_ctx& ctx, const source_at& at = {}) {
    constexpr bool ticks = requires { sink.tick(std::size_t{}); };
    chunk_size chunk;
    std::atomic<bool>* slice_over = fiber_slice_flag();
    stage_counters* ctr = counting(ctx, {at.slot, 0});
    // chunk_done(n): after a chunk of n items: report them, let the chain take its turn if
    // the slice is over (its segment yields on the flag in tick(), and clears it; a chain
    // with no tick has nothing to yield for), size the next chunk; false: the run stops.
    auto chunk_done = [&](std::size_t n) {
      count_out(ctr, n);
      if constexpr (ticks) {
        sink.tick(n);
      } else {
        slice_over->store(false, std::memory_order_relaxed);
      }
      chunk.next(n);
      return !ctx.stop.load(std::memory_order_relaxed);
    };
    if constexpr (std::ranges::sized_range<R>) {
      ctx.source_size.store(static_cast<std::int64_t>(std::ranges::size(range)),
                            std::memory_order_relaxed);
    }
    if constexpr (never_stops_v<Sink> && std::ranges::sized_range<R>) {
      // No early exit inside a chunk (and size_t counters: iota's difference type may be
      // 128 bits wide), so the fused loop compiles like a plain one.
      auto it = std::ranges::begin(range);
      std::size_t left = static_cast<std::size_t>(std::ranges::size(range));
      // send(item): one item down the path chosen for this chunk; the chunk ends early
      // when the slice is over (the tick that follows yields).
      auto run = [&](std::size_t c, auto send) {
        std::size_t k = 0;
        for (;;) {
          const std::size_t e = c - k < slice_check ? c : k + slice_check;
          for (; k < e; ++k, ++it) send(*it);
          if (k == c || slice_over->load(std::memory_order_relaxed)) return k;
        }
      };
      while (left != 0) {
        std::size_t c = left < chunk.n ? left : chunk.n;
        if (inert_v<Sink> || chain_is_quiet(sink)) {
          c = run(c, [&](auto&& v) { push(sink, std::forward<decltype(v)>(v), fused_path{}); });
        } else if constexpr (!inert_v<Sink>) {
          c = run(c, [&](auto&& v) { sink(std::forward<decltype(v)>(v)); });
        }
        left -= c;
        if (!chunk_done(c)) break;
      }
    } else {
      auto it = std::ranges::begin(range);
      const auto end = std::ranges::end(range);
      // run(path): one chunk down `path`; false once the sink wants no more.
      auto run = [&](auto path, std::size_t& n) {
        for (; n < chunk.n && it != end; ++it) {
          ++n;
          if (!push(sink, *it, path)) return false;
          if (n % slice_check == 0 && slice_over->load(std::memory_order_relaxed)) {
            ++it;
            return true;
          }
        }
        return true;
      };
      while (it != end) {
        std::size_t n = 0;
        bool more;
        if constexpr (inert_v<Sink>) {
          more = run(fused_path{}, n);
        } else {
          more = chain_is_quiet(sink) ? run(fused_path{}, n) : run(dynamic_path{}, n);
        }
        if (!more) {
          count_out(ctr, n);
          break;
        }
        if (!chunk_done(n)) break;
      }
    }
    sink.finish();
  }
};

template <class T>
struct chan_source {
  static constexpr const char* kind = "from_chan";
  recv_chan<T> ch;
  using value_type = T;

  template <class Sink>
  void drive(Sink& sink, pipe_ctx& ctx, const source_at& at = {}) {
    stage_counters* ctr = counting(ctx, {at.slot, 0});
    for (;;) {
      // A channel that never runs dry never reaches the select below: check the stop flag
      // here too, or cancel() would not stop this source.
      if (ctx.stop.load(std::memory_order_relaxed)) break;
      std::optional<T> v = ch.try_recv();
      std::int64_t waited = 0;
      if (!v) {
        sink.flush_hint();
        // Wait for a value, the end of the channel, or the run's cancellation.
        const std::int64_t t0 = now_ns();
        select(on_recv(ch, [&](std::optional<T> x) { v = std::move(x); }), on_recv(ctx.cancelled));
        waited = now_ns() - t0;
        if (!v) break;
      }
      constexpr bool head = requires { sink.tick(std::size_t{}); };
      if constexpr (head) {
        if (waited) sink.waited(waited);
      }
      count_out(ctr, 1);
      if (!sink(std::move(*v))) break;
      if constexpr (head) sink.tick(1);
    }
    sink.finish();
  }
};

template <class F>
struct generate_source {
  static constexpr const char* kind = "generate";
  F f;
  using value_type = typename std::remove_cvref_t<std::invoke_result_t<F&>>::value_type;

  template <class Sink>
  void drive(Sink& sink, pipe_ctx& ctx, const source_at& at = {}) {
    stage_counters* ctr = counting(ctx, {at.slot, 0});
    for (;;) {
      if (ctx.stop.load(std::memory_order_relaxed)) break;
      auto v = guarded(ctx, nullptr, kind, {at.slot, 0}, f);
      if (!v) break;
      count_out(ctr, 1);
      if (!sink(std::move(*v))) break;
      if constexpr (requires { sink.tick(std::size_t{}); }) sink.tick(1);
    }
    sink.finish();
  }
};

// fold_out<In, Stages...>: the item type after the stages.
template <class In, class... S>
struct fold_out {
  using type = In;
};
template <class In, class S0, class... S>
struct fold_out<In, S0, S...> {
  using type = typename fold_out<typename S0::template out_t<In>, S...>::type;
};

// flow: a source followed by stages; itself a source.
template <class Src, class... Stages>
struct flow {
  Src src;
  std::tuple<Stages...> stages;
  using value_type = typename fold_out<typename Src::value_type, Stages...>::type;
};

// inner_slots_v<X>: how many stats entries the chains inside a source or a terminal take
// (a merge's sources, a broadcast's branches); they follow their chain's own entries.
template <class X>
constexpr int inner_slots() {
  if constexpr (requires { X::inner_slots; }) {
    return X::inner_slots;
  } else {
    return 0;
  }
}
template <class X>
inline constexpr int inner_slots_v = inner_slots<X>();

// range_ref: an lvalue range, referred to. Not std::views::all (ref_view/owning_view): their
// view_interface base cannot be instantiated by clang 14 with libstdc++ 12's <ranges> (the
// tsan preset's toolchain), which made every from(range) fail to compile there. An rvalue
// range is stored as it is, moved in.
template <class R>
struct range_ref {
  R* r;
  auto begin() const { return std::ranges::begin(*r); }
  auto end() const { return std::ranges::end(*r); }
  auto size() const requires std::ranges::sized_range<R> { return std::ranges::size(*r); }
};
template <class R>
using stored_range_t =
    std::conditional_t<std::is_lvalue_reference_v<R>, range_ref<std::remove_reference_t<R>>,
                       std::remove_cvref_t<R>>;

template <class T>
inline constexpr bool is_chan_v = false;
template <class T>
inline constexpr bool is_chan_v<chan<T>> = true;
template <class T>
inline constexpr bool is_chan_v<recv_chan<T>> = true;

}  // namespace detail

// from(range): the items of any std or range-v3 range (an lvalue is referred to, not
// copied: it must outlive the run; an rvalue is moved in).
// `opt.buffer` sets the capacity of the channel after the source, when the next stage runs
// in another fiber.
template <class R>
requires(std::ranges::viewable_range<R> &&
         !detail::is_chan_v<std::remove_cvref_t<R>>) auto from(R&& r, stage_options opt = {}) {
  using V = detail::stored_range_t<R>;
  if constexpr (std::is_lvalue_reference_v<R>) {
    return detail::flow<detail::range_source<V>>{{V{&r}, opt.buffer, opt.stack_size}, {}};
  } else {
    return detail::flow<detail::range_source<V>>{{V(std::move(r)), opt.buffer, opt.stack_size}, {}};
  }
}
// from(chan): the values received from a channel until it is closed. Cancellation wakes a
// source waiting on it; what the pipeline does not take stays in the channel.
template <class T>
auto from(const chan<T>& c) {
  return detail::flow<detail::chan_source<T>>{{recv_chan<T>(c)}, {}};
}
template <class T>
auto from(const recv_chan<T>& c) {
  return detail::flow<detail::chan_source<T>>{{c}, {}};
}
// generate(f): calls f() until it returns an empty std::optional.
template <class F>
auto generate(F f) {
  static_assert(std::is_invocable_v<F&>, "rill::generate(f): f must be callable with no arguments");
  return detail::flow<detail::generate_source<F>>{{std::move(f)}, {}};
}
}  // namespace rill
