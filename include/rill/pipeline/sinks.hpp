// rill/pipeline/sinks.hpp: terminals, the stages that end a pipeline and give run() its
// result. Part of rill/pipeline.hpp.
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "rill/pipeline/stages.hpp"

namespace rill {
namespace detail {

// A terminal's sink stores its result in a result_slot<R> when the stream ends.
template <class R>
struct result_slot {
  std::optional<R> value;
  template <class V>
  void set(V&& v) {
    value.emplace(std::forward<V>(v));
  }
  R take() { return std::move(*value); }
};
template <>
struct result_slot<void> {
  void take() {}
};

template <class F>
struct sink_term {
  static constexpr const char* kind = "sink";
  F f;
  template <class In>
  static constexpr bool accepts = std::is_invocable_v<F&, In&&>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>, "rill::sink(f): f cannot be called with the upstream item type");
  }
  template <class In>
  using result_t = void;

  struct sink {
    static constexpr bool never_stops = true;
    sink_term* t;
    pipe_ctx* ctx;
    stage_id index;
    template <class V>
    bool operator()(V&& v, auto...) {
      guarded(*ctx, nullptr, kind, index, t->f, std::forward<V>(v));
      return true;
    }
    void flush_hint() {}
    void finish() {}
  };
  template <class In>
  sink make(pipe_ctx& ctx, result_slot<void>*, stage_id index) {
    return {this, &ctx, index};
  }
};

struct collect_term : takes_any {
  static constexpr const char* kind = "collect";
  template <class In>
  using result_t = std::vector<In>;

  template <class In>
  struct sink {
    static constexpr bool never_stops = true;
    result_slot<std::vector<In>>* out;
    std::vector<In> items;
    template <class V>
    bool operator()(V&& v, auto...) {
      items.push_back(std::forward<V>(v));
      return true;
    }
    void flush_hint() {}
    void finish() { out->set(std::move(items)); }
  };
  template <class In>
  sink<In> make(pipe_ctx&, result_slot<std::vector<In>>* out, stage_id) {
    return {out, {}};
  }
};

template <class T, class Op>
struct reduce_term {
  static constexpr const char* kind = "reduce";
  T init;
  Op op;
  template <class In>
  static constexpr bool accepts = std::is_invocable_r_v<T, Op&, T, In&&>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>,
                  "rill::reduce(init, op): op(acc, item) cannot be called with the accumulator "
                  "and the upstream item type, or its result does not convert to the accumulator");
  }
  template <class In>
  using result_t = T;

  struct sink {
    static constexpr bool never_stops = true;
    reduce_term* t;
    pipe_ctx* ctx;
    result_slot<T>* out;
    stage_id index;
    T acc;
    template <class V>
    bool operator()(V&& v, auto...) {
      using item_t = std::remove_cvref_t<V>;
      if constexpr (std::is_integral_v<item_t> && sizeof(item_t) <= sizeof(void*)) {
        // The accumulator lives in memory (this sink), and g++ reassociates a fused chain's
        // last constant into its add: `acc + (8i + 6) + 1` as a three-operand lea, two
        // cycles of latency per item where a plain loop's `acc += 8i + 7` takes one. An
        // item that comes in opaque keeps the accumulator's chain one add long.
        item_t item = v;
        asm("" : "+r"(item));
        acc = guarded(*ctx, nullptr, kind, index, t->op, std::move(acc), std::move(item));
      } else {
        acc = guarded(*ctx, nullptr, kind, index, t->op, std::move(acc), std::forward<V>(v));
      }
      return true;
    }
    void flush_hint() {}
    void finish() { out->set(std::move(acc)); }
  };
  template <class In>
  sink make(pipe_ctx& ctx, result_slot<T>* out, stage_id index) {
    return {this, &ctx, out, index, init};
  }
};

struct count_term : takes_any {
  static constexpr const char* kind = "count";
  template <class In>
  using result_t = std::size_t;

  struct sink {
    static constexpr bool never_stops = true;
    result_slot<std::size_t>* out;
    std::size_t n = 0;
    template <class V>
    bool operator()(V&&, auto...) {
      ++n;
      return true;
    }
    void flush_hint() {}
    void finish() { out->set(n); }
  };
  template <class In>
  sink make(pipe_ctx&, result_slot<std::size_t>* out, stage_id) {
    return {out, 0};
  }
};

template <class T>
struct to_term {
  static constexpr const char* kind = "to";
  send_chan<T> ch;
  template <class In>
  static constexpr bool accepts = std::is_constructible_v<T, In&&>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>, "rill::to(chan): the channel's type cannot be made from the item");
  }
  template <class In>
  using result_t = void;

  struct sink {
    to_term* t;
    pipe_ctx* ctx;
    template <class V>
    bool operator()(V&& v, auto...) {
      T x(std::forward<V>(v));
      if (t->ch.try_send(x)) return true;
      bool sent = false;
      select(on_send(t->ch, std::move(x), [&] { sent = true; }), on_recv(ctx->cancelled));
      return sent;
    }
    void flush_hint() {}
    void finish() { t->ch.core()->try_close(); }
    // A user function that throws in this fiber skips finish(): close ch here as well, so
    // that a reader ranging over it sees the end instead of waiting forever.
    ~sink() { t->ch.core()->try_close(); }
  };
  template <class In>
  sink make(pipe_ctx& ctx, result_slot<void>*, stage_id) {
    return {this, &ctx};
  }
};

}  // namespace detail

// sink(f) / for_each(f): calls f(v) for every item; run() returns void.
template <class F>
auto sink(F f) {
  return detail::sink_term<F>{std::move(f)};
}
template <class F>
auto for_each(F f) {
  return detail::sink_term<F>{std::move(f)};
}
// collect(): run() returns a std::vector of the items, in stream order.
inline auto collect() { return detail::collect_term{}; }
// reduce(init, op): run() returns op(...op(op(init, v1), v2)..., vn).
template <class T, class Op>
auto reduce(T init, Op op) {
  return detail::reduce_term<T, Op>{std::move(init), std::move(op)};
}
// count(): run() returns the number of items.
inline auto count() { return detail::count_term{}; }
// to(ch): sends every item on ch (waiting for room), then closes ch when the run ends,
// whatever its outcome (end of stream, an exception, cancellation).
template <class Ch>
auto to(const Ch& ch) {
  using T = typename Ch::value_type;
  return detail::to_term<T>{send_chan<T>(ch)};
}

}  // namespace rill
