// rill/pipeline/pipeline.hpp: composition with operator|, the builder that turns a
// composed pipeline into stage fibers, and pipeline<R> with run()/start(). Part of
// rill/pipeline.hpp.
//
// How a pipeline runs. The stages are split into segments; each segment runs in one fiber
// as nested sinks (fusion), and consecutive segments are joined by a link (a channel of
// batches, links.hpp). A segment ends at a stage with `fuse = false`, at stage_boundary,
// around par_map (whose n workers read one link and write another), and before every
// stage when fusion is off. Between two par_maps (or a par_map and the source or the
// terminal) the stages are built as one fused chain, whose every boundary is a split_point:
// the boundaries the user pinned split before the first item (segment::cut_pinned), the
// others while the run goes, when what the segment measures says a fiber of its own pays
// (links.hpp has the policy). One chain type per section, whatever the layout: a program
// compiles each stage's code once or twice, not once per pinned link before and after it.
// Only a chain that ends in a link writer (par_map's input, a merge's, a broadcast's) is cut
// at its pinned boundaries by cut(), as it never splits. A chain runs in the fiber that
// called run(), named after its stages meanwhile (so that a dump, an overflow report or a
// watchdog report names them), unless its stages ask for a bigger stack than that fiber
// has: then in a fiber of its own, which the caller waits for. A fiber that a split starts
// has the largest stack the stages after the split ask for (stage_options::stack_size), and
// at least the run's (run_options::stack_size).
//
// Cancellation and errors. The first exception from user code is recorded with the
// stage's name, and the run is cancelled: every link is closed, so blocked senders stop
// (their send fails) and blocked receivers see the end; sources also poll the stop flag
// and select on the `cancelled` channel when waiting on a user channel. run() waits for
// every stage fiber, then rethrows that exception (the original object: catch clauses for
// its type work). Cancellation never relies on an exception travelling through user code.
#pragma once

#include <atomic>
#include <memory>
#include <stop_token>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "rill/pipeline/concepts.hpp"
#include "rill/pipeline/links.hpp"
#include "rill/pipeline/sinks.hpp"
#include "rill/pipeline/sources.hpp"
#include "rill/pipeline/stages.hpp"

namespace rill {

template <class R>
class pipeline;
template <class R>
class pipeline_handle;

namespace detail {

// fragment: stages composed before a source exists (range-v3 style `a | b`).
template <class... Stages>
struct fragment {
  std::tuple<Stages...> stages;
};
template <class... S>
inline constexpr bool is_fragment_v<fragment<S...>> = true;
// sink_fragment: stages followed by a terminal, still without a source.
template <class Term, class... Stages>
struct sink_fragment {
  std::tuple<Stages...> stages;
  Term term;
};
template <class Term, class... S>
inline constexpr bool is_sink_fragment_v<sink_fragment<Term, S...>> = true;

template <class S>
struct as_stages {
  using type = std::tuple<S>;
  static std::tuple<S> get(S s) { return std::tuple<S>(std::move(s)); }
};
template <class... S>
struct as_stages<fragment<S...>> {
  using type = std::tuple<S...>;
  static std::tuple<S...> get(fragment<S...> f) { return std::move(f.stages); }
};

// ---- the builder ------------------------------------------------------------------------------

// Tails: where the last segment's items go.
// holds_links_v<Term>: the terminal writes to links of its own (broadcast).
template <class Term>
constexpr bool holds_links_v = requires {
  Term::holds_links;
};

// A tail knows its chain's place among the run's stats entries: `index` is its own (the
// chain's head, its source, is `index` - stages - 1), `label` prefixes the names of an inner
// chain's stages ("merge[0]/", "broadcast[1]/"), and the entries of the chains inside its
// terminal (inner_slots) follow `index`.
template <class Term, class In>
struct terminal_tail {
  using result_type = typename Term::template result_t<In>;
  static constexpr bool may_split = !holds_links_v<Term>;
  static constexpr int inner_slots = inner_slots_v<Term>;
  Term* term;
  result_slot<result_type> result;
  int index;   // its stats entry
  int number;  // its place in its chain (for its default name)
  std::string label = {};
  bool headless = false;  // a broadcast's branch: its head is the link, not a source
  const char* name() const { return Term::kind; }
  auto make_sink(pipe_ctx& ctx) {
    if constexpr (holds_links_v<Term>) {  // its branches' names go under this chain's label
      return term->template make<In>(ctx, &result, stage_id{index, number}, label);
    } else {
      return term->template make<In>(ctx, &result, stage_id{index, number});
    }
  }
};

template <class T>
struct link_tail {
  static constexpr bool may_split = false;
  static constexpr int inner_slots = 0;
  static constexpr bool headless = false;
  link_chan<T> ch;
  std::size_t batch_size;
  std::shared_ptr<std::atomic<int>> writers;
  int index;  // its stats entry ("merge[k]/to merge": the link into the merge)
  std::string label;
  const char* name() const { return "to merge"; }
  link_writer<T> make_sink(pipe_ctx& ctx) {
    return link_writer<T>(ch, batch_policy{batch_size, !ctx.adaptive}, writers.get());
  }
};

// name_at<K>(): the name of stage K of the chain (K == size: the tail), for stats and fibers.
template <std::size_t K, class Stages, class Tail>
std::string name_at(Stages& st, Tail& tail) {
  if constexpr (K == std::tuple_size_v<Stages>) {
    return tail.name();
  } else {
    using S = std::tuple_element_t<K, Stages>;
    return stage_name(std::get<K>(st).opt.name, S::kind, static_cast<int>(K) + 1);
  }
}

// is_parallel_at<K>(): stage K exists and is a par_map.
template <std::size_t K, class Stages>
constexpr bool is_parallel_at() {
  if constexpr (K < std::tuple_size_v<Stages>) {
    return std::tuple_element_t<K, Stages>::parallel;
  } else {
    return false;
  }
}

// slot_at<K>(tail): stage K's stats entry (0: the chain's source, size + 1: its tail).
template <std::size_t K, class Stages, class Tail>
int slot_at(const Tail& tail) noexcept {
  return tail.index - static_cast<int>(std::tuple_size_v<Stages>) - 1 + static_cast<int>(K);
}
// id_at<K>(tail): stage K as its sinks know it.
template <std::size_t K, class Stages, class Tail>
stage_id id_at(const Tail& tail) noexcept {
  return {slot_at<K, Stages>(tail), static_cast<int>(K)};
}

// may_split_before<K>(): whether the pipeline may split in front of stage K (the tail at
// K == size): that stage would be fused by default and the user did not pin it.
template <std::size_t K, class Stages>
bool may_split_before(Stages& st, pipe_ctx& ctx) {
  if (!ctx.fusion || !ctx.adaptive) return false;
  if constexpr (K == std::tuple_size_v<Stages>) {
    return true;
  } else {
    using S = std::tuple_element_t<K, Stages>;
    if constexpr (S::parallel) {
      return false;
    } else {
      return !std::get<K>(st).opt.fuse.has_value();
    }
  }
}

// pinned_before<K>(): the user's layout puts a link in front of stage K (the tail at
// K == size): that stage has `.fuse = false` (stage_boundary has it), or fusion is off.
template <std::size_t K, class Stages>
bool pinned_before(Stages& st, pipe_ctx& ctx) {
  if constexpr (K == std::tuple_size_v<Stages>) {
    return !ctx.fusion;
  } else {
    using S = std::tuple_element_t<K, Stages>;
    if constexpr (S::parallel) {
      return false;  // a link in front of it always
    } else {
      const auto& fuse = std::get<K>(st).opt.fuse;
      return !ctx.fusion || (fuse.has_value() && !*fuse);
    }
  }
}

// stack_from<K>(): the largest stack that stage K and those after it ask for.
template <std::size_t K, class Stages>
std::size_t stack_from(Stages& st) {
  if constexpr (K == std::tuple_size_v<Stages>) {
    return 0;
  } else {
    return std::max(std::get<K>(st).opt.stack_size, stack_from<K + 1>(st));
  }
}

// splittable_from<K>(): the chain from stage K to its tail can split at its split_points:
// it ends at a terminal that may split, with no par_map between. Its pinned links are then
// made by splitting the fused chain (segment::cut_pinned); elsewhere (a chain that ends in a
// link writer: par_map's input, a merge's, a broadcast's) by cut(), which instantiates the
// chain before the link and the chain after it once more each.
template <std::size_t K, class Stages, class Tail>
constexpr bool splittable_from() {
  if constexpr (K == std::tuple_size_v<Stages>) {
    return Tail::may_split;
  } else {
    return !std::tuple_element_t<K, Stages>::parallel && splittable_from<K + 1, Stages, Tail>();
  }
}

// join_names(): "a|b" (b alone when a is empty): the stages of one fiber.
std::string join_names(std::string a, const std::string& b);
// record_tail()/record_stage(): the stats entry of the terminal / of a stage, as built
// (`fresh`: it reads a link; `cut`: the fused chain splits in front of it before its first
// item, as the user's layout says; `pinned`: the user set its .fuse).
void record_tail(pipe_ctx& ctx, int index, const std::string& name, bool fresh, bool cut);
void record_stage(pipe_ctx& ctx, int index, const std::string& name, bool fresh, bool cut,
                  bool pinned);

// build(): `stack` is the largest stack size that the stages of the segment so far ask for;
// `first` the stats entry of the segment's first stage, for its metrics (-1: none).
template <std::size_t I, class In, class Stages, class Tail, class Drive>
void build(Stages& st, Tail& tail, pipe_ctx& ctx, Drive drive, bool fresh, std::string seg,
           std::size_t buffer, std::size_t batch_size, std::size_t stack = 0, int first = 0);

// next_first(): the first stage of the segment after a link in front of stage `n`.
inline int next_first(int first, int n) noexcept { return first < 0 ? -1 : n; }
// link_counter(): the counters of stage n (a link's reader), unless metrics are off there.
inline stage_counters* link_counter(pipe_ctx& ctx, int first, int n) noexcept {
  return first < 0 ? nullptr : ctx.counter(n);
}

// cut(): (a chain that ends in a link writer, at a pinned boundary) the segment so far runs
// in a new fiber, feeding a link; building goes on from the link's reader, in the calling
// fiber. `buffer` and `batch_size` are the options of the stage
// before the link.
template <std::size_t I, class In, class Stages, class Tail, class Drive>
void cut(Stages& st, Tail& tail, pipe_ctx& ctx, Drive drive, std::string seg, std::size_t buffer,
         std::size_t batch_size, std::size_t stack, int first) {
  const link_shape shape = batch_size ? pinned_shape(buffer, batch_size) : shape_for(buffer);
  auto l = ctx.template link<link_chan<In>>(shape.capacity);
  const int last = slot_at<I, Stages>(tail);
  if (stage_counters* c = link_counter(ctx, first, last)) c->capacity.store(buffer);
  batch_policy pol{shape.batch, batch_size != 0 || !ctx.adaptive, nullptr,
                   first < 0 ? nullptr : &ctx, last};
  ctx.spawn(
      seg,
      [drive = std::move(drive), w = link_writer<In>(l, pol), &ctx, seg, first, last]() mutable {
        segment sg(ctx, seg, {}, /*may_split=*/false);
        sg.set_stages(first, last);
        w.set_segment(&sg);
        drive(w, sg);
      },
      true, stack);
  build<I, In>(st, tail, ctx, link_driver<In>{l, link_counter(ctx, first, last + 1)}, true,
               std::string(), default_buffer, 0, 0, next_first(first, last + 1));
}

// run_tail(): runs the last segment, `body(drive)`, in the calling fiber when its stack is
// at least `stack` bytes (the fiber is named after the segment's stages meanwhile), else in
// a fiber of that size, which the caller waits for (the result is in the caller's tail).
void run_tail_in(pipe_ctx& ctx, const std::string& name, std::size_t stack, void (*f)(void*),
                 void* arg);
template <class Drive, class Body>
void run_tail(pipe_ctx& ctx, const std::string& name, std::size_t stack, Drive& drive, Body& body) {
  auto f = [&] { body(drive); };
  run_tail_in(
      ctx, name, stack, [](void* p) { (*static_cast<decltype(f)*>(p))(); }, &f);
}

template <std::size_t I, class In, class Stages, class Tail, class Drive>
void build(Stages& st, Tail& tail, pipe_ctx& ctx, Drive drive, bool fresh, std::string seg,
           std::size_t buffer, std::size_t batch_size, std::size_t stack, int first) {
  constexpr std::size_t n = std::tuple_size_v<Stages>;
  if constexpr (I == n) {
    if constexpr (!Tail::may_split) {
      if (!ctx.fusion && !fresh) {
        cut<I, In>(st, tail, ctx, std::move(drive), std::move(seg), buffer, batch_size, stack,
                   first);
        return;
      }
    }
    const std::string name = join_names(std::move(seg), tail.name());
    ctx.record_fiber(name);
    record_tail(ctx, tail.index, tail.label + tail.name(), fresh, !ctx.fusion && !fresh);
    const std::size_t need = std::max(stack, ctx.stack_size);
    auto body = [&ctx, &tail, &name, first](Drive& d) {
      segment sg(ctx, name, {}, Tail::may_split);
      sg.set_stages(first, tail.index);
      auto sink = tail.make_sink(ctx);
      d(sink, sg);
    };
    run_tail(ctx, name, need, drive, body);
  } else {
    using S = std::tuple_element_t<I, Stages>;
    S& s = std::get<I>(st);
    using Out = typename S::template out_t<In>;
    const stage_id index = id_at<I + 1, Stages>(tail);
    if constexpr (S::parallel) {
      build_par_map<I, In>(st, tail, ctx, std::move(drive), std::move(seg), stack, first);
    } else {
      const bool pinned_cut = !fresh && detail::pinned_before<I>(st, ctx);
      if constexpr (!splittable_from<I, Stages, Tail>()) {
        if (pinned_cut) {
          cut<I, In>(st, tail, ctx, std::move(drive), std::move(seg), buffer, batch_size, stack,
                     first);
          return;
        }
      }
      const std::string name = stage_name(s.opt.name, S::kind, index.number);
      record_stage(ctx, index.slot, tail.label + name, fresh, pinned_cut, s.opt.fuse.has_value());
      // The boundary after this stage, in front of what follows it in this fiber.
      std::string after_name = detail::name_at<I + 1>(st, tail);
      const bool may_split = detail::may_split_before<I + 1>(st, ctx);
      const bool pinned = splittable_from<I + 1, Stages, Tail>() && pinned_before<I + 1>(st, ctx);
      const std::size_t stack_after = stack_from<I + 1>(st);
      auto next = [drive = std::move(drive), &s, &ctx, after_name = std::move(after_name),
                   may_split, pinned, stack_after, index](auto& down, segment& sg) mutable {
        using Down = std::remove_cvref_t<decltype(down)>;
        if constexpr (detail::is_parallel_at<I + 1, Stages>()) {
          // The link to par_map follows: nothing to split.
          (void)may_split;
          (void)pinned;
          (void)stack_after;
          auto sink = s.template make<In>(down, ctx, index);
          drive(sink, sg);
        } else if constexpr (inert_v<Down>) {
          (void)may_split;
          (void)pinned;
          (void)stack_after;
          plain_point<Down> pp(down, sg);
          auto sink = s.template make<In>(pp, ctx, index);
          drive(sink, sg);
        } else {
          // A split_point wherever the chain may split (passive where this run may not):
          // one type per chain, not one per combination of boundaries (that doubled the
          // instantiations at every stage).
          split_point<Out, Down> sp(down, sg, index.slot, after_name, s.opt.buffer,
                                    s.opt.batch_size, may_split, pinned);
          sp.stack_after = stack_after;
          auto sink = s.template make<In>(sp, ctx, index);
          drive(sink, sg);
        }
      };
      build<I + 1, Out>(st, tail, ctx, std::move(next), false, join_names(std::move(seg), name),
                        s.opt.buffer, s.opt.batch_size, std::max(stack, s.opt.stack_size), first);
    }
  }
}

// par_state: what a par_map's workers share with the writer that feeds them.
struct par_state {
  // How many items to hand a worker at a time, from the workers' measured work per item.
  std::atomic<std::size_t> handout{1};
  std::atomic<std::int64_t> cost_ns{0};  // smoothed work per item (a racy average: a hint)
  std::atomic<unsigned> left{0};         // workers still running
};

// build_par_map(): the segment so far feeds `in`; n workers map `in` to `out`; building
// goes on from `out`'s reader (in input order when ordered).
template <std::size_t I, class In, class Stages, class Tail, class Drive>
void build_par_map(Stages& st, Tail& tail, pipe_ctx& ctx, Drive drive, std::string seg,
                   std::size_t stack, int first) {
  using S = std::tuple_element_t<I, Stages>;
  S& s = std::get<I>(st);
  using Out = typename S::template out_t<In>;
  const stage_id index = id_at<I + 1, Stages>(tail);
  // The entry of the stage before the link to the workers (none: a broadcast branch's
  // par_map that comes first is fed by the branch's link).
  const int before = I == 0 && tail.headless ? -1 : slot_at<I, Stages>(tail);
  if (before < 0) first = -1;
  // Pinned by the user, or (inline_run) at the largest unit, as no time may decide it.
  const std::size_t pinned = s.opt.batch_size ? s.opt.batch_size : ctx.adaptive ? 0 : 16;
  // Units of at most half of `buffer` (up to 64 items; or the user's, cut to that half) go
  // to the workers, and come back as one batch each: both links are shaped for them
  // (unit_shape_for), so that besides the unit in each worker's hands they hold up to
  // `buffer` items. Cheap items go in the largest units the buffer allows: each unit costs
  // its worker a few hand-offs between workers, a share of the unit's time that only larger
  // units make small.
  const link_shape shape = unit_shape_for(s.opt.buffer, pinned);
  auto state = std::make_shared<par_state>();
  auto in = ctx.template link<link_chan<In>>(shape.capacity);
  batch_policy pol{shape.batch, pinned != 0, pinned ? nullptr : &state->handout, &ctx, before};
  if (first < 0) pol.ctx = nullptr;  // nothing before the link to count
  if (stage_counters* c = link_counter(ctx, first, before)) c->capacity.store(s.opt.buffer);
  if (stage_counters* c = ctx.counter(index.slot)) c->capacity.store(s.opt.buffer);
  ctx.spawn(
      seg,
      [drive = std::move(drive), w = link_writer<In>(in, pol), &ctx, seg, state, first,
       before]() mutable {
        segment sg(ctx, seg, {}, /*may_split=*/false);
        sg.set_stages(first, before);
        w.set_segment(&sg);
        drive(w, sg);
      },
      true, stack);
  auto out = ctx.template link<link_chan<Out>>(shape.capacity);
  unsigned workers = s.opt.workers ? s.opt.workers : ctx.workers;
  if (workers == 0) workers = 1;
  // Ordered: the reorder window (see reorder_window): room for `buffer` finished items
  // waiting for a slower one ahead of them, besides a unit in each worker's hands.
  const std::size_t unit = pol.max;
  std::shared_ptr<reorder_window> room;
  if (s.opt.ordered) room = std::make_shared<reorder_window>(s.opt.buffer + workers * unit);
  window_hold hold(room);  // closes it if building fails before its driver runs
  state->left.store(workers);
  const std::string name = stage_name(s.opt.name, S::kind, index.number);
  ctx.stage_at(index.slot, [&](stage_stats& x) {
    x.name = tail.label + name;
    x.fibers = workers;
    x.decision = pinned ? "par_map, pinned hand-out of " + std::to_string(unit)
                        : "par_map, hand-out sized from measured work per item";
  });
  // Every worker but the first is spread: it goes to another worker thread at once, rather
  // than after waiting to be stolen behind a worker busy with the first one's items.
  for (unsigned k = 0; k < workers; ++k) {
    ctx.spawn(
        name,
        [in, out, room, unit, state, &s, &ctx, pinned, index]() mutable {
          s.template work<In, Out>(ctx, index, in, out, room.get(), unit, *state, pinned);
        },
        true, s.opt.stack_size, /*spread=*/k > 0);
  }
  // What follows reads the workers' link (its first stage's entry: index.slot + 1).
  const int next = index.slot + 1;
  stage_counters* after = ctx.counter(next);
  if (s.opt.ordered) {
    build<I + 1, Out>(st, tail, ctx, reorder_driver<Out>{out, std::move(hold), after}, true,
                      std::string(), s.opt.buffer, 0, 0, next);
  } else {
    build<I + 1, Out>(st, tail, ctx, link_driver<Out>{out, after}, true, std::string(),
                      s.opt.buffer, 0, 0, next);
  }
}

// takes_nothing(): the chain has a take(0), so no item of the source can reach its end.
template <class... S>
bool takes_nothing(const std::tuple<S...>& stages) {
  return std::apply(
      [](const auto&... s) {
        return ([&] {
          if constexpr (std::is_same_v<std::remove_cvref_t<decltype(s)>, take_stage>) {
            return s.n == 0;
          } else {
            return false;
          }
        }() || ...);
      },
      stages);
}

// whole_chain_v<Tail>: the chain ends at a terminal that handles each item before the push
// returns (not in a link: merge, broadcast).
template <class Tail>
inline constexpr bool whole_chain_v = false;
template <class Term, class In>
inline constexpr bool whole_chain_v<terminal_tail<Term, In>> = !holds_links_v<Term>;

template <class Flow, class Tail>
void build_flow(Flow& fl, Tail& tail, pipe_ctx& ctx) {
  using In = typename decltype(fl.src)::value_type;
  // A source that ties each item to what becomes of it downstream (rill::nats::consume
  // acknowledges a message once its push returns) needs the whole chain in its fiber: it
  // never splits, and the source checks that no stage asks for a fiber of its own.
  if constexpr (requires { decltype(fl.src)::one_fiber; }) {
    ctx.adaptive = false;
    fl.src.check_layout(fl.stages, ctx, whole_chain_v<Tail>);
  }
  std::size_t buffer = default_buffer;
  if constexpr (requires { fl.src.buffer; }) buffer = fl.src.buffer;
  std::size_t stack = 0;
  if constexpr (requires { fl.src.stack_size; }) stack = fl.src.stack_size;
  using Stages = decltype(fl.stages);
  // The source's entry, and those of the chains inside it (a merge's): after the chain's
  // own entries and its terminal's inner chains.
  source_at at{slot_at<0, Stages>(tail), tail.index + 1 + Tail::inner_slots, tail.label};
  ctx.stage_at(at.slot, [&](stage_stats& s) {
    s.name = tail.label + decltype(fl.src)::kind;
    s.decision = "source";
  });
  if (stage_counters* c = ctx.counter(at.slot)) c->starts.store(stage_counters::start::source);
  // The first boundary, between the source and the first stage: it also carries the
  // source's ticks to the segment.
  const bool candidate = detail::may_split_before<0>(fl.stages, ctx);
  const bool pinned = splittable_from<0, Stages, Tail>() && pinned_before<0>(fl.stages, ctx);
  // With a take(0) downstream, the source is not asked for a first item (a take(n) stops
  // it after its n-th): the chain only hears the end of the stream.
  const bool empty = takes_nothing(fl.stages);
  auto drive = [&fl, &ctx, buffer, candidate, pinned, empty, at,
                stack_after = stack_from<0>(fl.stages),
                first = detail::name_at<0>(fl.stages, tail)](auto& sink, segment& sg) {
    using Sink = std::remove_cvref_t<decltype(sink)>;
    auto run = [&](auto& head) {
      if (empty) {
        head.finish();
      } else if constexpr (requires { fl.src.drive(head, ctx, at); }) {
        fl.src.drive(head, ctx, at);
      } else {
        fl.src.drive(head, ctx);
      }
    };
    if constexpr (inert_v<Sink>) {
      (void)pinned;
      (void)stack_after;
      plain_point<Sink> head(sink, sg);
      run(head);
    } else {
      split_point<In, Sink> head(sink, sg, at.slot, first, buffer, 0, candidate && !empty, pinned);
      head.stack_after = stack_after;
      sg.cut_pinned();
      run(head);
    }
  };
  build<0, In>(fl.stages, tail, ctx, std::move(drive), false, decltype(fl.src)::kind, buffer, 0,
               stack, at.slot);
}

// ---- pipeline<R> ------------------------------------------------------------------------------

// ---- the graph (to_dot) ----------------------------------------------------------------------

// describe_stages(): one dot_stage per stage of a chain, numbered from `first`.
template <class Term>
void describe_term(const Term& t, dot_stage& d);

template <class... S>
void describe_stages(const std::tuple<S...>& st, std::vector<dot_stage>& out, int first) {
  std::apply(
      [&](const auto&... s) {
        int k = first;
        (
            [&] {
              using T = std::remove_cvref_t<decltype(s)>;
              dot_stage d;
              d.name = stage_name(s.opt.name, T::kind, k++);
              d.buffer = s.opt.buffer;
              if constexpr (T::parallel) {
                d.workers = s.opt.workers ? s.opt.workers : 0;
                d.parallel = true;
              } else {
                d.own_fiber = s.opt.fuse.has_value() && !*s.opt.fuse;
              }
              out.push_back(std::move(d));
            }(),
            ...);
        (void)k;
      },
      st);
}

template <class Term>
void describe_term(const Term& t, dot_stage& d) {
  d.name = Term::kind;
  if constexpr (requires { t.branches; }) {
    std::apply(
        [&](const auto&... b) {
          (
              [&] {
                std::vector<dot_stage> chain;
                describe_stages(b.stages, chain, 1);
                dot_stage end;
                describe_term(b.term, end);
                end.own_fiber = chain.empty();
                chain.push_back(std::move(end));
                chain.front().own_fiber = true;
                d.branches.push_back(std::move(chain));
              }(),
              ...);
        },
        t.branches);
  }
}

template <class Src>
std::size_t source_buffer(const Src& src) {
  if constexpr (requires { src.buffer; }) {
    return src.buffer;
  } else {
    return default_buffer;
  }
}

template <class R>
struct pipeline_impl {
  virtual ~pipeline_impl() = default;
  // describe(): the pipeline's stages as composed, in order (source and terminal too).
  virtual std::vector<dot_stage> describe() const = 0;
  // execute() runs the pipeline in the calling fiber (plus the stage fibers it spawns) and
  // returns when every one of them has finished.
  virtual R execute(pipe_ctx& ctx) = 0;

  spinlock stats_mu;
  pipeline_stats last;  // guarded by stats_mu
};

template <class R, class Flow, class Term>
struct pipeline_model final : pipeline_impl<R> {
  Flow flow;
  Term term;
  pipeline_model(Flow f, Term t) : flow(std::move(f)), term(std::move(t)) {}

  std::vector<dot_stage> describe() const override {
    std::vector<dot_stage> out;
    dot_stage src;
    src.name = decltype(flow.src)::kind;
    src.buffer = source_buffer(flow.src);
    out.push_back(std::move(src));
    describe_stages(flow.stages, out, 1);
    dot_stage end;
    describe_term(term, end);
    out.push_back(std::move(end));
    return out;
  }

  R execute(pipe_ctx& ctx) override {
    using In = typename Flow::value_type;
    ctx.workers = std::max(1u, runtime_stats().workers);
    constexpr int n = static_cast<int>(std::tuple_size_v<decltype(flow.stages)>);
    // The pipeline's own entries (source, stages, terminal), then its terminal's inner
    // chains, then its source's.
    ctx.begin_run(n + 2 + inner_slots_v<Term> + inner_slots_v<decltype(flow.src)>);
    struct run_end {
      pipe_ctx* ctx;
      ~run_end() { ctx->end_run(); }
    } ended{&ctx};
    terminal_tail<Term, In> tail{&term, {}, n + 1, n + 1};
    std::exception_ptr deadlock;
    try {
      build_flow(flow, tail, ctx);
    } catch (const stage_failed&) {
    } catch (...) {
      deadlock = fiber_take_abort();
      if (!deadlock) ctx.fail(std::current_exception(), "pipeline");
    }
    join(ctx.fibers, deadlock);
    ctx.release_links();
    ctx.end_run();
    this->stats_mu.lock();
    this->last = ctx.stats();
    this->stats_mu.unlock();
    if (deadlock) std::rethrow_exception(deadlock);
    if (std::exception_ptr e = ctx.error()) std::rethrow_exception(e);
    if (ctx.user_cancelled()) throw pipeline_cancelled();
    return tail.result.take();
  }
};

// run_on_default(): runs f in a fiber of the default runtime, blocking the calling thread.
template <class R, class F>
R run_on_default(F f, std::size_t stack_size, bool detect_deadlock) {
  result_slot<R> out;
  std::exception_ptr error;
  wait_group done;
  done.add(1);
  default_run_begin(detect_deadlock);
  struct end_run {
    bool watched;
    ~end_run() { default_run_end(watched); }
  } ended{detect_deadlock};
  spawn_in(
      default_runtime(),
      [&] {
        try {
          if constexpr (std::is_void_v<R>) {
            f();
          } else {
            out.set(f());
          }
        } catch (...) {
          error = std::current_exception();
        }
        fiber_retire();  // run() returns with this fiber counted as gone
        done.done();
      },
      stack_size);
  {
    run_wait waiting;
    done.wait();
  }
  if (error) std::rethrow_exception(error);
  return out.take();
}

template <class R>
struct handle_state {
  pipe_ctx ctx;
  wait_group done;
  result_slot<R> result;
  std::exception_ptr error;
};

}  // namespace detail

// pipeline<R>: a composed pipeline whose terminal yields R. Built by `source | ... |
// terminal`; nothing runs until run() or start(). A cheap handle: copies share the stages.
// Not for concurrent runs of one object (the stages' functions are shared).
template <class R>
class pipeline {
 public:
  using result_type = R;

  explicit pipeline(std::shared_ptr<detail::pipeline_impl<R>> impl) : impl_(std::move(impl)) {}

  // run() runs the pipeline and returns the terminal's result. From a fiber it parks the
  // fiber; from a plain thread it blocks the thread and runs on the default runtime
  // (RILL_WORKERS workers, started on first use). Rethrows the first exception of any
  // stage after every stage fiber has ended; throws pipeline_cancelled if cancelled.
  R run(run_options o = {}) const {
    auto im = impl_;
    auto body = [im, o]() -> R {
      detail::pipe_ctx ctx;
      ctx.configure(o);
      return im->execute(ctx);
    };
    return dispatch(o, body);
  }

  // run(stop): as run(), and requesting a stop on `stop` cancels the run. A stop may come
  // from outside rill: while one is possible, a plain-thread run declares no deadlock.
  R run(std::stop_token stop, run_options o = {}) const {
    if (stop.stop_possible() && !detail::current_fiber()) o.detect_deadlock = false;
    auto im = impl_;
    auto body = [im, o, stop]() -> R {
      detail::pipe_ctx ctx;
      ctx.configure(o);
      std::stop_callback cb(stop, [&ctx] { ctx.user_cancel(); });
      return im->execute(ctx);
    };
    return dispatch(o, body);
  }

  // start() starts the pipeline (in a new fiber of the current runtime, or of the default
  // runtime from a plain thread) and returns at once.
  pipeline_handle<R> start(run_options o = {}) const;

  // stats(): the last completed run: its fiber layout, and per stage its items, times and
  // links (empty before the first run). A running pipeline's: pipeline_handle::stats().
  pipeline_stats stats() const {
    impl_->stats_mu.lock();
    pipeline_stats s = impl_->last;
    impl_->stats_mu.unlock();
    return s;
  }

  // to_dot(): the pipeline as a Graphviz graph (`dot -Tsvg`): its stages, which share a
  // fiber (a box around them), par_map's workers, broadcast's branches and the buffers of
  // the links between fibers. After a run, as that run laid it out, with the items on each
  // edge and each stage's busy share.
  std::string to_dot() const {
    const pipeline_stats s = stats();
    return detail::format_dot(impl_->describe(), s.stages.empty() ? nullptr : &s);
  }

 private:
  template <class F>
  static R dispatch(run_options o, F& body) {
    if (o.inline_mode) {
      options opts;
      opts.workers = 1;
      opts.stack_size = std::max(opts.stack_size, o.stack_size);
      opts.detect_deadlock = o.detect_deadlock;
      return rill::run(body, opts);
    }
    if (detail::current_fiber()) return body();
    return detail::run_on_default<R>(body, o.stack_size, o.detect_deadlock);
  }

  std::shared_ptr<detail::pipeline_impl<R>> impl_;
};

// pipeline_handle<R>: a started pipeline. wait() returns its result (or rethrows);
// cancel() stops it. The destructor cancels a run that was not waited for and waits.
template <class R>
class pipeline_handle {
 public:
  explicit pipeline_handle(std::shared_ptr<detail::handle_state<R>> st) : st_(std::move(st)) {}
  pipeline_handle(pipeline_handle&& o) noexcept
      : st_(std::move(o.st_)), waited_(std::exchange(o.waited_, false)) {}
  pipeline_handle& operator=(pipeline_handle&& o) noexcept {
    if (this != &o) {
      stop();
      st_ = std::move(o.st_);
      waited_ = std::exchange(o.waited_, false);
    }
    return *this;
  }
  ~pipeline_handle() { stop(); }

  // wait() parks until the run ends; returns its result or rethrows its exception. Once
  // (a second call throws std::logic_error); failed_stage() stays available after it.
  R wait() {
    if (!st_ || waited_) throw std::logic_error("rill::pipeline_handle: wait() called twice");
    waited_ = true;
    wait_done();
    if (st_->error) std::rethrow_exception(st_->error);
    return st_->result.take();
  }
  // cancel() stops every stage promptly; wait() then throws pipeline_cancelled (unless
  // the run had already finished).
  void cancel() noexcept {
    if (st_) st_->ctx.user_cancel();
  }
  // failed_stage(): the name of the stage whose exception ended the run ("" if none).
  std::string failed_stage() { return st_ ? st_->ctx.failed_stage() : std::string(); }
  // stats(): the run so far (or as it ended): per stage its items, times and links. From
  // any fiber or thread, while the run goes or after it.
  pipeline_stats stats() const { return st_ ? st_->ctx.stats() : pipeline_stats{}; }

 private:
  // stop() cancels a run that was not waited for and waits for it to end.
  void stop() noexcept {
    if (st_ && !waited_) {
      st_->ctx.user_cancel();
      wait_done();
    }
  }
  void wait_done() {
    detail::run_wait waiting;
    st_->done.wait();
  }

  std::shared_ptr<detail::handle_state<R>> st_;
  bool waited_ = false;
};

template <class R>
pipeline_handle<R> pipeline<R>::start(run_options o) const {
  auto st = std::make_shared<detail::handle_state<R>>();
  st->ctx.configure(o);
  st->done.add(1);
  const bool outside = !detail::current_fiber();
  auto root = [st, im = impl_, outside]() {
    try {
      if constexpr (std::is_void_v<R>) {
        im->execute(st->ctx);
      } else {
        st->result.set(im->execute(st->ctx));
      }
    } catch (...) {
      st->error = std::current_exception();
    }
    if (outside) detail::default_run_end(false);
    detail::fiber_retire();  // wait() returns with this fiber counted as gone
    st->done.done();
  };
  if (!outside) {
    detail::go_sized(o.stack_size, std::move(root));
  } else {
    // Its thread may feed it from outside rill: the default runtime declares no deadlock
    // while it runs.
    detail::default_run_begin(false);
    try {
      detail::spawn_in(detail::default_runtime(), std::move(root), o.stack_size);
    } catch (...) {
      detail::default_run_end(false);
      throw;
    }
  }
  return pipeline_handle<R>(std::move(st));
}

// ---- operator| --------------------------------------------------------------------------------

namespace detail {

// A pipeline that failed a static_assert: further composition, and the use of its result,
// are accepted silently so that the first error stays the only one. (Never defined: the
// program does not compile.) poisoned_flow<V>: stages after a source, one of which failed;
// V is the item type the user meant, as far as the failed stage's function tells it
// (declared_out), else bad_item. poisoned<R>: the same with a terminal; R is the result
// run() would have had, so `auto v = p.run(); v.size();` compiles on. With no such type
// (bad_item), run() gives a poisoned that converts to anything.
template <class R>
struct poisoned {
  using result_type = std::conditional_t<std::is_same_v<R, bad_item>, poisoned, R>;
  template <class... A>
  result_type run(A&&...) const;
  template <class... A>
  poisoned start(A&&...) const;
  pipeline_stats stats() const;
  std::string to_dot() const;
  result_type wait() const;
  template <class T>
  operator T() const;
};

template <class V>
struct poisoned_flow {
  using value_type = V;
};

template <class R>
inline constexpr bool is_poisoned_v<poisoned<R>> = true;
template <class V>
inline constexpr bool is_poisoned_v<poisoned_flow<V>> = true;

// result_guess_t<Term, In>: the terminal's result for In, or bad_item if it cannot take In.
template <class Term, class In, bool = Term::template accepts<In>>
struct result_guess {
  using type = bad_item;
};
template <class Term, class In>
struct result_guess<Term, In, true> {
  using type = typename Term::template result_t<In>;
};
template <class Term, class In>
using result_guess_t = typename result_guess<Term, In>::type;

// chain_accepts<Report, In, S...>(): every stage takes what the one before gives; with
// Report, the first stage that does not fires its static_assert.
template <bool Report, class In>
constexpr bool chain_accepts() {
  return true;
}
template <bool Report, class In, class S0, class... S>
constexpr bool chain_accepts() {
  if constexpr (!S0::template accepts<In>) {
    if constexpr (Report) S0::template check<In>();
    return false;
  } else {
    return chain_accepts<Report, typename S0::template out_t<In>, S...>();
  }
}

template <class Src, class... Have, class... Add>
auto append(flow<Src, Have...>&& f, std::tuple<Add...>&& add) {
  using In = typename flow<Src, Have...>::value_type;
  if constexpr (!chain_accepts<true, In, Add...>()) {
    return poisoned_flow<typename fold_out<In, Add...>::type>{};
  } else {
    return flow<Src, Have..., Add...>{std::move(f.src),
                                      std::tuple_cat(std::move(f.stages), std::move(add))};
  }
}

template <class Src, class... Have, class Term>
auto finish_with(flow<Src, Have...>&& f, Term&& t) {
  using F = flow<Src, Have...>;
  using In = typename F::value_type;
  using T = std::remove_cvref_t<Term>;
  if constexpr (!T::template accepts<In>) {
    T::template check<In>();
    return poisoned<bad_item>{};
  } else {
    using R = typename T::template result_t<In>;
    return pipeline<R>(
        std::make_shared<pipeline_model<R, F, T>>(std::move(f), std::forward<Term>(t)));
  }
}

// source | stage(s)
template <class Src, class... Have, class St>
requires pipeline_stage<St>
auto operator|(flow<Src, Have...> f, St st) {
  return append(std::move(f), as_stages<St>::get(std::move(st)));
}
// source | terminal
template <class Src, class... Have, class T>
requires one_terminal<T>
auto operator|(flow<Src, Have...> f, T t) { return finish_with(std::move(f), std::move(t)); }
// source | stages + terminal
template <class Src, class... Have, class Term, class... S>
auto operator|(flow<Src, Have...> f, sink_fragment<Term, S...> sf) {
  auto g = append(std::move(f), std::move(sf.stages));
  if constexpr (is_poisoned_v<decltype(g)>) {
    return poisoned<result_guess_t<Term, typename decltype(g)::value_type>>{};
  } else {
    return finish_with(std::move(g), std::move(sf.term));
  }
}
// stage | stage: a fragment
template <class A, class B>
requires(pipeline_stage<A>&& pipeline_stage<B>) auto operator|(A a, B b) {
  return std::apply(
      [](auto&&... s) { return fragment<std::remove_cvref_t<decltype(s)>...>{{std::move(s)...}}; },
      std::tuple_cat(as_stages<A>::get(std::move(a)), as_stages<B>::get(std::move(b))));
}
// stage | terminal: a sink fragment
template <class A, class T>
requires(pipeline_stage<A>&& one_terminal<T>) auto operator|(A a, T t) {
  return std::apply(
      [&](auto&&... s) {
        return sink_fragment<T, std::remove_cvref_t<decltype(s)>...>{{std::move(s)...},
                                                                     std::move(t)};
      },
      as_stages<A>::get(std::move(a)));
}
// poisoned | anything: the types go on as they would have (see poisoned).
template <class V, class Stages>
struct fold_tuple_out;
template <class V, class... S>
struct fold_tuple_out<V, std::tuple<S...>> : fold_out<V, S...> {};

template <class V, class St>
requires pipeline_stage<St>
auto operator|(poisoned_flow<V>, St) {
  return poisoned_flow<typename fold_tuple_out<V, typename as_stages<St>::type>::type>{};
}
template <class V, class T>
requires one_terminal<T>
auto operator|(poisoned_flow<V>, T) { return poisoned<result_guess_t<T, V>>{}; }
template <class V, class Term, class... S>
auto operator|(poisoned_flow<V>, sink_fragment<Term, S...>) {
  return poisoned<result_guess_t<Term, typename fold_out<V, S...>::type>>{};
}
template <class R, class A>
poisoned<R> operator|(poisoned<R>, A&&) {
  return {};
}

}  // namespace detail
}  // namespace rill
