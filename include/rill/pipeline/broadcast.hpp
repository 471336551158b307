// rill/pipeline/broadcast.hpp: broadcast(branch...), the terminal that sends every item to
// several branches, each a terminal or stages ending in one. Part of rill/pipeline.hpp.
//
//   auto p = rill::from(words)
//          | rill::broadcast(rill::count(),
//                            rill::filter(is_long) | rill::collect(),
//                            rill::map(length) | rill::reduce(0L, std::plus<>{}));
//   auto [n, long_words, letters] = p.run();  // std::tuple<std::size_t, std::vector, long>
//
// Each branch runs in fibers of its own, fed by a link of its own (default buffer); a branch
// whose terminal returns void gives std::monostate in the tuple. Every branch sees every
// item, in order; a slow branch makes the source wait (the links are bounded), and a branch
// that stops early (take) stops receiving while the others go on. Items are copied to every
// branch but the last, which gets the original: with several branches the item type must be
// copyable. An exception in any branch fails the whole run, as anywhere in a pipeline.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <variant>
#include <vector>

#include "rill/pipeline/pipeline.hpp"

namespace rill {
namespace detail {

template <class T>
struct as_branch {  // a bare terminal: a branch with no stages
  using type = sink_fragment<T>;
  static type get(T t) { return type{{}, std::move(t)}; }
};
template <class Term, class... S>
struct as_branch<sink_fragment<Term, S...>> {
  using type = sink_fragment<Term, S...>;
  static type get(type b) { return b; }
};

template <class B>
struct branch_traits;
template <class Term, class... S>
struct branch_traits<sink_fragment<Term, S...>> {
  template <class In>
  using out_t = typename fold_out<In, S...>::type;
  template <class In>
  static constexpr bool accepts() {
    if constexpr (!chain_accepts<false, In, S...>()) {
      return false;
    } else {
      return Term::template accepts<out_t<In>>;
    }
  }
  template <class In>
  static constexpr void check() {
    if constexpr (!chain_accepts<false, In, S...>()) {
      (void)chain_accepts<true, In, S...>();  // the failing stage's static_assert
    } else {
      Term::template check<out_t<In>>();
    }
  }
  template <class In>
  using raw_result_t = typename Term::template result_t<out_t<In>>;
  template <class In>
  using result_t =
      std::conditional_t<std::is_void_v<raw_result_t<In>>, std::monostate, raw_result_t<In>>;
};

// branch_slots<B>::value: the stats entries of a branch: its stages, its terminal, then
// its terminal's inner chains (a branch has no source: the broadcast's link feeds it).
template <class B>
struct branch_slots;
template <class Term, class... S>
struct branch_slots<sink_fragment<Term, S...>> {
  static constexpr int value = static_cast<int>(sizeof...(S)) + 1 + inner_slots_v<Term>;
};

template <class... B>
struct broadcast_term {
  static constexpr const char* kind = "broadcast";
  static constexpr bool holds_links = true;  // its chain must not split (links.hpp)
  static constexpr std::size_t n = sizeof...(B);
  static constexpr int inner_slots = (branch_slots<B>::value + ... + 0);
  std::tuple<B...> branches;

  // branch_offset<K>(): where branch K's entries start, after the broadcast's own.
  template <std::size_t K>
  static constexpr int branch_offset() {
    constexpr int sizes[] = {branch_slots<B>::value...};
    int o = 1;
    for (std::size_t j = 0; j < K; ++j) o += sizes[j];
    return o;
  }

  template <class In>
  static constexpr bool copyable = n == 1 || std::is_copy_constructible_v<std::remove_cvref_t<In>>;
  template <class In>
  static constexpr bool accepts = copyable<In> && (branch_traits<B>::template accepts<In>() && ...);
  template <class In>
  static constexpr void check() {
    static_assert(copyable<In>,
                  "rill::broadcast: the item type must be copyable to go to several branches");
    check_from<In, 0>();
  }
  template <class In, std::size_t K>
  static constexpr void check_from() {
    if constexpr (K < n) {
      using BK = std::tuple_element_t<K, std::tuple<B...>>;
      if constexpr (!branch_traits<BK>::template accepts<In>()) {
        branch_traits<BK>::template check<In>();
      } else {
        check_from<In, K + 1>();
      }
    }
  }
  template <class In>
  using result_t = std::tuple<typename branch_traits<B>::template result_t<In>...>;

  // What the branch fibers share with the sink: their results, and a count of those still
  // running (the sink's finish() waits for it before it assembles the tuple).
  template <class In>
  struct state {
    std::tuple<result_slot<typename branch_traits<B>::template raw_result_t<In>>...> results;
    bool done_ok[n] = {};  // done_ok[k]: branch k's terminal finished
    wait_group running;
  };

  template <class In>
  struct sink {
    std::shared_ptr<state<In>> st;
    std::vector<link_writer<In>> writers;
    std::vector<char> open;
    result_slot<result_t<In>>* out;

    template <class V>
    bool operator()(V&& v, auto...) {
      bool any = false;
      if constexpr (n > 1) {  // copies to all but the last branch
        for (std::size_t k = 0; k + 1 < n; ++k) {
          if (open[k]) {
            open[k] = writers[k](static_cast<const std::remove_cvref_t<V>&>(v));
            any = any || open[k];
          }
        }
      }
      if (open[n - 1]) {
        open[n - 1] = writers[n - 1](std::forward<V>(v));
        any = any || open[n - 1];
      }
      return any;
    }
    void flush_hint() {
      for (std::size_t k = 0; k < n; ++k) {
        if (open[k]) writers[k].flush_hint();
      }
    }
    void finish() {
      for (auto& w : writers) w.finish();  // the branches see the end of the stream
      st->running.wait();
      if (all_ok(std::make_index_sequence<n>{})) {
        out->set(take_all(std::make_index_sequence<n>{}));
      }  // else a branch failed or the run was cancelled: run() throws, the tuple is unused
    }
    template <std::size_t... K>
    bool all_ok(std::index_sequence<K...>) {
      return (st->done_ok[K] && ...);
    }
    template <std::size_t K>
    auto take_one() {
      using R = typename branch_traits<
          std::tuple_element_t<K, std::tuple<B...>>>::template raw_result_t<In>;
      if constexpr (std::is_void_v<R>) {
        return std::monostate{};
      } else {
        return std::get<K>(st->results).take();
      }
    }
    template <std::size_t... K>
    result_t<In> take_all(std::index_sequence<K...>) {
      return result_t<In>(take_one<K>()...);
    }
  };

  template <class In>
  sink<In> make(pipe_ctx& ctx, result_slot<result_t<In>>* out, stage_id index,
                const std::string& label) {
    sink<In> s{std::make_shared<state<In>>(), {}, std::vector<char>(n, 1), out};
    s.writers.reserve(n);
    start_branches<In>(ctx, s, index, label, std::make_index_sequence<n>{});
    return s;
  }

  template <class In, std::size_t... K>
  void start_branches(pipe_ctx& ctx, sink<In>& s, stage_id index, const std::string& label,
                      std::index_sequence<K...>) {
    (start_branch<In, K>(ctx, s, index, label), ...);
  }

  template <class In, std::size_t K>
  void start_branch(pipe_ctx& ctx, sink<In>& s, stage_id index, const std::string& label) {
    using BK = std::tuple_element_t<K, std::tuple<B...>>;
    using Out = typename branch_traits<BK>::template out_t<In>;
    const link_shape shape = shape_for(default_buffer);
    auto l = ctx.template link<link_chan<In>>(shape.capacity);
    s.writers.emplace_back(l, batch_policy{shape.batch, !ctx.adaptive});
    s.st->running.add(1);
    // The branch's first stage (its terminal, if it has none) reads the link.
    const int first = index.slot + branch_offset<K>();
    if (stage_counters* c = ctx.counter(first)) c->starts.store(stage_counters::start::link);
    try {
      ctx.spawn(
          "broadcast#" + std::to_string(index.number) + "[" + std::to_string(K) + "]",
          [st = s.st, l, b = &std::get<K>(branches), &ctx, first,
           label = label + "broadcast[" + std::to_string(K) + "]/"]() mutable {
            struct leave {
              wait_group* wg;
              ~leave() { wg->done(); }
            } guard{&st->running};
            using Term = std::remove_cvref_t<decltype(b->term)>;
            using Stages = decltype(b->stages);
            constexpr int m = static_cast<int>(std::tuple_size_v<Stages>);
            terminal_tail<Term, Out> tail{&b->term,         {}, first + m, m + 1, label,
                                          /*headless=*/true};
            // A par_map's workers count what they take themselves.
            stage_counters* reads = is_parallel_at<0, Stages>() ? nullptr : ctx.counter(first);
            build<0, In>(b->stages, tail, ctx, link_driver<In>{l, reads}, true,
                         "broadcast[" + std::to_string(K) + "]", default_buffer, 0, 0, first);
            if constexpr (!std::is_void_v<typename terminal_tail<Term, Out>::result_type>) {
              if (!tail.result.value) return;  // the terminal never finished (stopped)
              std::get<K>(st->results).set(tail.result.take());
            }
            st->done_ok[K] = true;
          },
          /*record=*/false);
    } catch (...) {
      s.st->running.done();
      throw;
    }
  }
};

}  // namespace detail

// broadcast(branch...): a terminal that sends every item to each branch (a terminal, or
// stages ending in a terminal); run() returns a std::tuple of the branches' results, with
// std::monostate for a branch whose terminal gives void.
template <class... B>
auto broadcast(B... b) {
  static_assert(sizeof...(B) > 0, "rill::broadcast: needs at least one branch");
  static_assert(((detail::pipeline_terminal<B> || detail::is_poisoned_v<B>)&&...),
                "rill::broadcast: each branch must end in a terminal (collect(), sink(f), ...)");
  return detail::broadcast_term<typename detail::as_branch<B>::type...>{
      {detail::as_branch<B>::get(std::move(b))...}};
}

}  // namespace rill
