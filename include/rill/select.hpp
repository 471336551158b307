// rill/select.hpp: Go's select.
//
//   rill::select(rill::on_recv(a, [](std::optional<int> v) { ... }),   // v empty: a closed
//                rill::on_send(b, 42, [] { ... }),
//                rill::after(100ms, [] { ... }),                      // timeout
//                rill::otherwise([] { ... }));                        // default: never parks
//
// Exactly one case runs. When several are ready, the choice is uniformly random (Go's rule,
// so no case starves); with no case ready, `otherwise` runs if present, else select parks
// until a case is ready or the timeout passes. A receive case on a closed channel is ready
// (its callback gets an empty optional). A send case on a closed channel throws
// closed_channel, as Go panics. A case on a nil handle is never ready. select() returns the
// index of the case that ran. The callbacks run after every channel lock is released, so
// they may use channels freely.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

#include "rill/chan.hpp"

namespace rill {

namespace detail {

struct noop {
  void operator()() const noexcept {}
};

// The default fast path's probe of one channel case (nil: never ready): idle() starts a
// lock-free read of the channel's state, unchanged() checks that it stayed the same.
inline bool channel_idle(const chan_core* ch, bool recv, std::uint32_t& seq) noexcept {
  if (!ch) return true;
  seq = ch->mu_.read_begin();
  return recv ? !ch->recv_ready() : !ch->send_ready();
}
inline bool channel_unchanged(const chan_core* ch, std::uint32_t seq) noexcept {
  return !ch || ch->mu_.read_valid(seq);
}

// Cases on no channel never keep the default from running (it wins over an expired
// timeout too).
struct no_channel_probe {
  bool idle(std::uint32_t&) const noexcept { return true; }
  bool unchanged(std::uint32_t) const noexcept { return true; }
};

template <class T, class F>
struct recv_case {
  chan_core* ch;
  F f;
  std::optional<T> value;
  void describe(select_case& c) {
    c.ch = ch;
    c.kind = case_kind::recv;
    c.slot = &value;
  }
  // idle(seq)/unchanged(seq): the lock-free probe of the default fast path (see select()).
  bool idle(std::uint32_t& seq) const noexcept { return channel_idle(ch, true, seq); }
  bool unchanged(std::uint32_t seq) const noexcept { return channel_unchanged(ch, seq); }
  void run() {
    if constexpr (std::is_invocable_v<F&, std::optional<T>>) {
      std::invoke(f, std::move(value));
    } else {
      std::invoke(f);
    }
  }
};

template <class T, class F>
struct send_case {
  chan_core* ch;
  T value;
  F f;
  void describe(select_case& c) {
    c.ch = ch;
    c.kind = case_kind::send;
    c.slot = &value;
  }
  bool idle(std::uint32_t& seq) const noexcept { return channel_idle(ch, false, seq); }
  bool unchanged(std::uint32_t seq) const noexcept { return channel_unchanged(ch, seq); }
  void run() { std::invoke(f); }
};

template <class F>
struct timeout_case : no_channel_probe {
  std::int64_t deadline;
  F f;
  void describe(select_case& c) {
    c.kind = case_kind::timeout;
    c.deadline = deadline;
  }
  void run() { std::invoke(f); }
};

template <class F>
struct default_case : no_channel_probe {
  F f;
  void describe(select_case& c) { c.kind = case_kind::otherwise; }
  void run() { std::invoke(f); }
};

template <class C>
inline constexpr bool is_default_case = false;
template <class F>
inline constexpr bool is_default_case<default_case<F>> = true;

template <class Ch>
chan_core* core_of(const Ch& c) {
  return c.core();
}

}  // namespace detail

// on_recv(ch, f): ready when ch has a value or is closed; f(std::optional<T>) or f().
template <class Ch, class F = detail::noop>
auto on_recv(const Ch& ch, F f = {}) {
  using T = typename Ch::value_type;
  return detail::recv_case<T, F>{detail::core_of(ch), std::move(f), std::nullopt};
}

// on_send(ch, v, f): ready when v can be delivered or buffered; then f().
template <class Ch, class V, class F = detail::noop>
auto on_send(const Ch& ch, V&& v, F f = {}) {
  using T = typename Ch::value_type;
  return detail::send_case<T, F>{detail::core_of(ch), T(std::forward<V>(v)), std::move(f)};
}

// after(d, f): ready once d has passed since select() began.
template <class Rep, class Period, class F>
auto after(std::chrono::duration<Rep, Period> d, F f) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  const std::int64_t now = detail::now_ns();
  return detail::timeout_case<F>{{}, ns > INT64_MAX - now ? INT64_MAX : now + ns, std::move(f)};
}

// otherwise(f): Go's `default:`; runs when no other case is ready.
template <class F = detail::noop>
auto otherwise(F f = {}) {
  return detail::default_case<F>{{}, std::move(f)};
}

// select(cases...) runs exactly one case (see above) and returns its index.
template <class... Cases>
std::size_t select(Cases&&... cases) {
  static_assert(sizeof...(Cases) > 0, "rill::select: needs at least one case");
  constexpr int defaults = (0 + ... + detail::is_default_case<std::decay_t<Cases>>);
  static_assert(defaults <= 1, "rill::select: at most one otherwise() case");
  constexpr std::size_t n = sizeof...(Cases);
  constexpr bool has_default = defaults == 1;
  if constexpr (has_default) {
    // Go's non-blocking select: when no case is ready, run the default without a lock or a
    // call. Every channel is probed through its sequence lock and then checked unchanged
    // (a double collect), so at one instant no case was ready. Anything else (a case looks
    // ready, a channel was locked or changed meanwhile, schedule perturbation on) takes
    // select_core(), which decides under the locks.
    if (!detail::g_chaos.load(std::memory_order_relaxed)) {
      std::uint32_t seq[n] = {};
      std::size_t k = 0;
      if ((... && cases.idle(seq[k++]))) {
        k = 0;
        if ((... && cases.unchanged(seq[k++]))) {
          constexpr bool is_default[] = {detail::is_default_case<std::decay_t<Cases>>...};
          k = 0;
          ((is_default[k++] ? (cases.run(), 0) : 0), ...);
          std::size_t won = 0;
          while (!is_default[won]) ++won;
          return won;
        }
      }
    }
  }
  detail::select_case descs[n];
  std::size_t i = 0;
  (cases.describe(descs[i++]), ...);
  const std::size_t won = detail::select_core(descs, n);
  i = 0;
  ((i++ == won ? (cases.run(), 0) : 0), ...);
  return won;
}

}  // namespace rill
