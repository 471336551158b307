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
  void run() { std::invoke(f); }
};

template <class F>
struct timeout_case {
  std::int64_t deadline;
  F f;
  void describe(select_case& c) {
    c.kind = case_kind::timeout;
    c.deadline = deadline;
  }
  void run() { std::invoke(f); }
};

template <class F>
struct default_case {
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
  return detail::timeout_case<F>{ns > INT64_MAX - now ? INT64_MAX : now + ns, std::move(f)};
}

// otherwise(f): Go's `default:`; runs when no other case is ready.
template <class F = detail::noop>
auto otherwise(F f = {}) {
  return detail::default_case<F>{std::move(f)};
}

// select(cases...) runs exactly one case (see above) and returns its index.
template <class... Cases>
std::size_t select(Cases&&... cases) {
  static_assert(sizeof...(Cases) > 0, "rill::select: needs at least one case");
  static_assert((0 + ... + detail::is_default_case<std::decay_t<Cases>>) <= 1,
                "rill::select: at most one otherwise() case");
  constexpr std::size_t n = sizeof...(Cases);
  detail::select_case descs[n];
  std::size_t i = 0;
  (cases.describe(descs[i++]), ...);
  const std::size_t won = detail::select_core(descs, n);
  i = 0;
  ((i++ == won ? (cases.run(), 0) : 0), ...);
  return won;
}

}  // namespace rill
