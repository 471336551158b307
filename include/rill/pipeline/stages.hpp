// rill/pipeline/stages.hpp: the stages between a source and a terminal. Part of
// rill/pipeline.hpp.
//
// Each stage is a value (a description); at run() it becomes a sink: an object with
//   bool operator()(V&& item, M path = {})
//                               take one item; false: downstream wants no more (path:
//                               dynamic_path or fused_path, passed on downstream)
//   void flush_hint()           the fiber is about to wait for input
//   void finish()               end of stream
// wrapping the sink downstream of it. Adjacent stages fuse into one fiber by nesting
// their sinks; a fiber boundary is a channel (a link) between two fibers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <iterator>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>
#include <vector>

#include "rill/pipeline/links.hpp"
#include "rill/pipeline/run_context.hpp"

// range-v3's tag base of its views (<range/v3/range_fwd.hpp> defines it).
namespace ranges {
struct view_base;
}  // namespace ranges

namespace rill {
namespace detail {

// owns_elements_v<R>: whether a range passed as R (a forwarding-reference type) belongs to
// the stage, so its elements may be moved downstream: a container received or returned by
// value. An lvalue (the user's container, e.g. from(vector_of_vectors) | unbatch()) or a
// view (std or range-v3, over someone else's data) does not: its elements are copied.
// range-v3's views are told by their base, ranges::view_base, as range-v3's enable_view
// does by default; it is only declared here (above), so that a program without range-v3
// does not parse range-v3, and one with range-v3 views has its definition.
template <class R>
inline constexpr bool owns_elements_v =
    !std::is_lvalue_reference_v<R> && !std::ranges::view<std::remove_cvref_t<R>> &&
    !std::is_base_of_v<ranges::view_base, std::remove_cvref_t<R>>;

// element_of<R>(x): the element x of a range passed as R, moved if the range owns it.
template <class R, class X>
decltype(auto) element_of(X&& x) {
  if constexpr (owns_elements_v<R>) {
    return std::move(x);
  } else {
    return std::forward<X>(x);
  }
}

// An item type that marks a stage that cannot take its input (after a static_assert).
struct bad_item {};

// declared_out<F>: what f returns by its signature, when it has exactly one (a function
// pointer, a lambda that is not generic); bad_item when it has none or returns void. For a
// stage that failed its static_assert only: the types after it stay the ones the user
// meant, so code that uses the pipeline's result gives no second error.
template <class Sig>
struct signature_out {
  using type = bad_item;
};
template <class R, class C, class... A>
struct signature_out<R (C::*)(A...)> {
  using type = R;
};
template <class R, class C, class... A>
struct signature_out<R (C::*)(A...) const> {
  using type = R;
};
template <class R, class C, class... A>
struct signature_out<R (C::*)(A...) noexcept> {
  using type = R;
};
template <class R, class C, class... A>
struct signature_out<R (C::*)(A...) const noexcept> {
  using type = R;
};
template <class R, class... A>
struct signature_out<R (*)(A...)> {
  using type = R;
};
template <class R, class... A>
struct signature_out<R (*)(A...) noexcept> {
  using type = R;
};
template <class F, class = void>
struct declared_signature {
  using type = F;  // a function pointer, or no signature (signature_out gives bad_item)
};
template <class F>
struct declared_signature<F, std::void_t<decltype(&F::operator())>> {
  using type = decltype(&F::operator());
};
template <class F, class R = typename signature_out<typename declared_signature<F>::type>::type>
struct declared_out {
  using type = std::conditional_t<std::is_void_v<R>, bad_item, std::remove_cvref_t<R>>;
};

template <class F, class In, bool = std::is_invocable_v<F&, In&&>>
struct invoke_out {
  using type = typename declared_out<F>::type;  // f cannot take In: see declared_out
};
template <class F, class In>
struct invoke_out<F, In, true> {
  using type = std::remove_cvref_t<std::invoke_result_t<F&, In&&>>;
};

// maps_to_value<F, In>: f can take an In and returns a value. (Through invoke_out: naming
// std::invoke_result_t of a call that is not valid is a hard error, not false, and would
// bury the stage's static_assert under errors from <type_traits>.)
template <class F, class In>
inline constexpr bool maps_to_value =
    std::is_invocable_v<F&, In&&> && !std::is_void_v<typename invoke_out<F, In>::type>;

// ---- what every stage's sink has --------------------------------------------------------------

// passing_sink<Down>: the sink downstream, and the two signals a stage passes on as they
// come: the fiber is about to wait (flush_hint), the stream has ended (finish). A stage
// that holds items back (batch) handles finish itself.
template <class Down>
struct passing_sink {
  static constexpr bool inert = inert_v<Down>;
  Down* down;
  void flush_hint() { down->flush_hint(); }
  void finish() { down->finish(); }
};

// calling_sink<Stage, Down>: a sink that calls its stage's user function `f` (map, filter,
// tap, flat_map): an exception from it fails the run, named after the stage.
template <class Stage, class Down>
struct calling_sink : passing_sink<Down> {
  Stage* st;
  pipe_ctx* ctx;
  stage_id index;
  template <class... A>
  [[gnu::always_inline]] decltype(auto) call(A&&... a) {
    return guarded(*ctx, st->opt.name, Stage::kind, index, st->f, std::forward<A>(a)...);
  }
};

// ---- map ------------------------------------------------------------------------------------
template <class F>
struct map_stage {
  static constexpr const char* kind = "map";
  static constexpr bool parallel = false;
  F f;
  stage_options opt;

  template <class In>
  static constexpr bool accepts = maps_to_value<F, In>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>,
                  "rill::map(f): f cannot be called with the upstream item type (or returns void)");
  }
  template <class In>
  using out_t = typename invoke_out<F, In>::type;

  template <class Down>
  struct sink : calling_sink<map_stage, Down> {
    static constexpr bool never_stops = never_stops_v<Down>;
    template <class V, class M = dynamic_path>
    [[gnu::always_inline]] bool operator()(V&& v, M m = {}) {
      return (*this->down)(this->call(std::forward<V>(v)), m);
    }
  };
  template <class In, class Down>
  sink<Down> make(Down& down, pipe_ctx& ctx, stage_id index) {
    return {{{&down}, this, &ctx, index}};
  }
};

// ---- filter ---------------------------------------------------------------------------------
template <class P>
struct filter_stage {
  static constexpr const char* kind = "filter";
  static constexpr bool parallel = false;
  P f;
  stage_options opt;

  template <class In>
  static constexpr bool accepts = std::is_invocable_r_v<bool, P&, const In&>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>,
                  "rill::filter(p): p cannot be called with the upstream item type, or does not "
                  "return something convertible to bool");
  }
  template <class In>
  using out_t = In;

  template <class Down>
  struct sink : calling_sink<filter_stage, Down> {
    static constexpr bool never_stops = never_stops_v<Down>;
    stage_counters* ctr;
    template <class V, class M = dynamic_path>
    [[gnu::always_inline]] bool operator()(V&& v, M m = {}) {
      if (this->call(std::as_const(v))) {
        count_out(ctr, 1);
        return (*this->down)(std::forward<V>(v), m);
      }
      return true;
    }
  };
  template <class In, class Down>
  sink<Down> make(Down& down, pipe_ctx& ctx, stage_id index) {
    return {{{&down}, this, &ctx, index}, counting(ctx, index)};
  }
};

// ---- tap ------------------------------------------------------------------------------------
template <class F>
struct tap_stage {
  static constexpr const char* kind = "tap";
  static constexpr bool parallel = false;
  F f;
  stage_options opt;

  template <class In>
  static constexpr bool accepts = std::is_invocable_v<F&, const In&>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>, "rill::tap(f): f cannot be called with the upstream item type");
  }
  template <class In>
  using out_t = In;

  template <class Down>
  struct sink : calling_sink<tap_stage, Down> {
    static constexpr bool never_stops = never_stops_v<Down>;
    template <class V, class M = dynamic_path>
    [[gnu::always_inline]] bool operator()(V&& v, M m = {}) {
      this->call(std::as_const(v));
      return (*this->down)(std::forward<V>(v), m);
    }
  };
  template <class In, class Down>
  sink<Down> make(Down& down, pipe_ctx& ctx, stage_id index) {
    return {{{&down}, this, &ctx, index}};
  }
};

// ---- flat_map -------------------------------------------------------------------------------
template <class R, class = void>
struct range_item {
  using type = bad_item;  // not a range (bad_item included)
};
template <class R>
struct range_item<R, std::void_t<decltype(*std::begin(std::declval<R&>()))>> {
  using type = std::remove_cvref_t<decltype(*std::begin(std::declval<R&>()))>;
};

template <class F>
struct flat_map_stage {
  static constexpr const char* kind = "flat_map";
  static constexpr bool parallel = false;
  F f;
  stage_options opt;

  template <class In, class = void>
  struct returns_range : std::false_type {};
  template <class In>
  struct returns_range<
      In, std::void_t<decltype(std::begin(std::declval<std::invoke_result_t<F&, In&&>&>()))>>
      : std::true_type {};
  template <class In>
  static constexpr bool accepts = std::is_invocable_v<F&, In&&>&& returns_range<In>::value;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>,
                  "rill::flat_map(f): f cannot be called with the upstream item type, or does "
                  "not return a range");
  }
  template <class In>
  using out_t = typename range_item<typename invoke_out<F, In>::type>::type;

  template <class Down>
  struct sink : calling_sink<flat_map_stage, Down> {
    stage_counters* ctr;
    template <class V, class M = dynamic_path>
    bool operator()(V&& v, M m = {}) {
      auto&& r = this->call(std::forward<V>(v));
      for (auto&& x : r) {
        count_out(ctr, 1);
        if (!(*this->down)(element_of<decltype(r)>(std::forward<decltype(x)>(x)), m)) return false;
      }
      return true;
    }
  };
  template <class In, class Down>
  sink<Down> make(Down& down, pipe_ctx& ctx, stage_id index) {
    return {{{&down}, this, &ctx, index}, counting(ctx, index)};
  }
};

// ---- take -----------------------------------------------------------------------------------
struct take_stage : takes_any {
  static constexpr const char* kind = "take";
  static constexpr bool parallel = false;
  std::size_t n;
  stage_options opt;

  template <class In>
  using out_t = In;

  template <class Down>
  struct sink : passing_sink<Down> {
    std::size_t left;
    stage_counters* ctr;
    template <class V, class M = dynamic_path>
    bool operator()(V&& v, M m = {}) {
      if (left == 0) return false;
      --left;
      count_out(ctr, 1);
      const bool more = (*this->down)(std::forward<V>(v), m);
      return more && left > 0;  // false after the n-th item: upstream stops at once
    }
  };
  template <class In, class Down>
  sink<Down> make(Down& down, pipe_ctx& ctx, stage_id index) {
    return {{&down}, n, counting(ctx, index)};
  }
};

// ---- batch / unbatch ------------------------------------------------------------------------
struct batch_stage : takes_any {
  static constexpr const char* kind = "batch";
  static constexpr bool parallel = false;
  std::size_t n;
  stage_options opt;

  template <class In>
  using out_t = std::vector<In>;

  template <class In, class Down>
  struct sink : passing_sink<Down> {
    std::size_t n;
    std::vector<In> cur;
    stage_counters* ctr;
    template <class V, class M = dynamic_path>
    bool operator()(V&& v, M m = {}) {
      if (cur.empty()) cur.reserve(n);
      cur.push_back(std::forward<V>(v));
      if (cur.size() < n) return true;
      count_out(ctr, 1);
      return (*this->down)(std::exchange(cur, std::vector<In>{}), m);
    }
    void finish() {  // the last group, however short, goes first
      if (!cur.empty()) {
        count_out(ctr, 1);
        (*this->down)(std::exchange(cur, std::vector<In>{}));
      }
      this->down->finish();
    }
  };
  template <class In, class Down>
  sink<In, Down> make(Down& down, pipe_ctx& ctx, stage_id index) {
    return {{&down}, n == 0 ? 1 : n, {}, counting(ctx, index)};
  }
};

struct unbatch_stage {
  static constexpr const char* kind = "unbatch";
  static constexpr bool parallel = false;
  stage_options opt;

  template <class In, class = void>
  struct is_range : std::false_type {};
  template <class In>
  struct is_range<In, std::void_t<decltype(std::begin(std::declval<In&>()))>> : std::true_type {};
  template <class In>
  static constexpr bool accepts = is_range<In>::value;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>, "rill::unbatch(): the upstream item type is not a range");
  }
  template <class In>
  using out_t = typename range_item<std::conditional_t<accepts<In>, In, bad_item>>::type;

  template <class Down>
  struct sink : passing_sink<Down> {
    stage_counters* ctr;
    template <class V, class M = dynamic_path>
    bool operator()(V&& v, M m = {}) {
      for (auto&& x : v) {
        count_out(ctr, 1);
        if (!(*this->down)(element_of<V>(std::forward<decltype(x)>(x)), m)) return false;
      }
      return true;
    }
  };
  template <class In, class Down>
  sink<Down> make(Down& down, pipe_ctx& ctx, stage_id index) {
    return {{&down}, counting(ctx, index)};
  }
};

// ---- stage_boundary: an identity stage that starts a new fiber --------------------------------
struct boundary_stage : takes_any {
  static constexpr const char* kind = "boundary";
  static constexpr bool parallel = false;
  stage_options opt{default_buffer, false, nullptr};

  template <class In>
  using out_t = In;

  template <class Down>
  struct sink : passing_sink<Down> {
    template <class V, class M = dynamic_path>
    bool operator()(V&& v, M m = {}) {
      return (*this->down)(std::forward<V>(v), m);
    }
  };
  template <class In, class Down>
  sink<Down> make(Down& down, pipe_ctx&, stage_id) {
    return {{&down}};
  }
};

// ---- par_map: fan out to n fibers, fan in (handled by the builder in pipeline.hpp) -----------
template <class F>
struct par_map_stage {
  static constexpr const char* kind = "par_map";
  static constexpr bool parallel = true;
  F f;
  par_options opt;

  template <class In>
  static constexpr bool accepts = maps_to_value<F, In>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>,
                  "rill::par_map(f): f cannot be called with the upstream item type (or returns "
                  "void)");
  }
  template <class In>
  using out_t = typename invoke_out<F, In>::type;

  // work(): one worker's loop. Takes a unit of input (after room for `unit` items in the
  // reorder window, when ordered), maps it, and sends the results on as one batch with the
  // unit's `seq`.
  // Unless the hand-out is pinned, it times each unit and updates the shared hand-out size
  // (state.handout: about handout_bound_ns of work, 1 to `unit` items), which the writer that
  // feeds the workers reads at each batch: few slow items spread over every worker.
  template <class In, class Out, class State>
  void work(pipe_ctx& ctx, stage_id index, link_chan<In>& in, link_chan<Out>& out,
            reorder_window* room, std::size_t unit, State& state, std::size_t pinned) {
    struct last_closes {
      State* state;
      link_chan<In>* in;
      link_chan<Out>* out;
      reorder_window* room;
      ~last_closes() {
        // A worker leaves when the input has ended, downstream stopped, or the run failed:
        // in the last two cases upstream must stop, and in every case workers waiting for
        // room must not wait for it forever.
        in->core()->try_close();
        if (room) room->close();
        if (state->left.fetch_sub(1) == 1) out->core()->try_close();
      }
    } guard{&state, &in, &out, room};
    std::uint32_t units = 0;
    stage_counters* ctr = counting(ctx, index);
    for (;;) {
      // Waits are timed only when they happen (a try first): they are the stage's
      // waiting_output (the reorder window is full: downstream holds it back) and
      // waiting_input.
      if (room && !room->try_take(unit)) {
        const std::int64_t w0 = ctr ? now_ns() : 0;
        if (!room->take(unit)) break;  // ordered: wait for room in the window
        if (ctr) bump(ctr->wait_out, now_ns() - w0);
      }
      std::optional<batch<In>> b = in.try_recv();
      if (!b) {
        const std::int64_t w0 = ctr ? now_ns() : 0;
        b = in.recv();
        if (ctr) bump(ctr->wait_in, now_ns() - w0);
      }
      if (!b) break;
      if (room && b->size() < unit) room->give(unit - b->size());  // a unit is at most `unit`
      if (ctr) bump(ctr->recvd, b->size());
      // Timed: every unit while the hand-out moves; 1 in 8 once it is at its top (cheap
      // items, where two clock reads are a large share of a unit). With metrics on, every
      // unit (its busy time).
      const bool timed =
          ctr ||
          (!pinned && (state.handout.load(std::memory_order_relaxed) < unit || units++ % 8 == 0));
      const std::int64_t t0 = timed ? now_ns() : 0;
      batch<Out> r;
      r.seq = b->seq;
      if (b->single) {
        r.single.emplace(guarded(ctx, opt.name, kind, index, f, std::move(*b->single)));
      } else {
        r.items.reserve(b->items.size());
        for (In& v : b->items) {
          r.items.push_back(guarded(ctx, opt.name, kind, index, f, std::move(v)));
        }
      }
      // The unit's time: measured, else estimated from the measured cost per item (0: not
      // known).
      std::int64_t spent = 0;
      if (!timed) {
        spent = state.cost_ns.load(std::memory_order_relaxed) * static_cast<std::int64_t>(r.size());
      } else {
        const auto k = static_cast<std::int64_t>(r.size());
        const std::int64_t t1 = now_ns();
        spent = t1 - t0;
        if (ctr) {
          ran(*ctr, t0, t1);
          bump(ctr->busy, spent);
          bump(ctr->out, static_cast<std::uint64_t>(k));
        }
        const std::int64_t per = std::max<std::int64_t>(1, spent / std::max<std::int64_t>(1, k));
        const std::int64_t c = state.cost_ns.load(std::memory_order_relaxed);
        const std::int64_t avg = c == 0 ? per : (7 * c + per) / 8;
        state.cost_ns.store(avg, std::memory_order_relaxed);
        // Stored only when it changes: every worker and the feeding writer read this line.
        const auto h = static_cast<std::size_t>(
            std::clamp<std::int64_t>(handout_bound_ns / avg, 1, static_cast<std::int64_t>(unit)));
        if (state.handout.load(std::memory_order_relaxed) != h) {
          state.handout.store(h, std::memory_order_relaxed);
        }
      }
      const std::size_t sent = r.size();
      try {
        if (!ctr) {
          out.send(std::move(r));
        } else if (!out.try_send(r)) {
          const std::int64_t w0 = now_ns();
          out.send(std::move(r));
          bump(ctr->wait_out, now_ns() - w0);
        }
      } catch (const closed_channel&) {
        return;  // downstream stopped: the guard stops upstream too
      }
      if (ctr) bump(ctr->sent, sent);
      // The send may have readied the downstream fiber into this worker's runnext slot,
      // where it would wait for this worker's next park: a whole unit of work later, with
      // the ordered window's room held back meanwhile (the workers then stall on it).
      // Let it run now (it parks again as soon as it has delivered) when that unit is long;
      // after a cheap unit the yield's two switches cost more than the wait they save, and
      // the downstream fiber runs at this worker's next park (an empty link, a full one, or
      // no token), a few cheap units later. inline_run: always (no time may decide).
      if (!ctx.adaptive || spent == 0 || spent >= handoff_yield_ns) this_fiber::yield();
    }
  }
};

}  // namespace detail

// map(f): each item v becomes f(v).
template <class F>
auto map(F f, stage_options opt = {}) {
  return detail::map_stage<F>{std::move(f), opt};
}
// filter(p): keeps the items for which p(v) is true.
template <class P>
auto filter(P p, stage_options opt = {}) {
  return detail::filter_stage<P>{std::move(p), opt};
}
// tap(f): calls f(v) for its side effect and passes v on.
template <class F>
auto tap(F f, stage_options opt = {}) {
  return detail::tap_stage<F>{std::move(f), opt};
}
// flat_map(f): f(v) returns a range; its elements go on, in order.
template <class F>
auto flat_map(F f, stage_options opt = {}) {
  return detail::flat_map_stage<F>{std::move(f), opt};
}
// take(n): the first n items; then upstream stages stop promptly.
inline auto take(std::size_t n, stage_options opt = {}) { return detail::take_stage{{}, n, opt}; }
// batch(n): groups of n consecutive items as std::vector (the last may be shorter).
inline auto batch(std::size_t n, stage_options opt = {}) { return detail::batch_stage{{}, n, opt}; }
// unbatch(): each item is a range; its elements go on, in order.
inline auto unbatch(stage_options opt = {}) { return detail::unbatch_stage{opt}; }
// par_map(f, {.workers, .ordered}): f runs on `workers` fibers at once (f must be safe to call
// concurrently). ordered = true keeps input order with a bounded reorder window.
template <class F>
auto par_map(F f, par_options opt = {}) {
  return detail::par_map_stage<F>{std::move(f), opt};
}
// stage_boundary: what follows runs in a new fiber (fusion stops here).
inline constexpr detail::boundary_stage stage_boundary{};

}  // namespace rill
