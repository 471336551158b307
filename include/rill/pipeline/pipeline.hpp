// rill/pipeline/pipeline.hpp: composition with operator|, the builder that turns a
// composed pipeline into stage fibers, and pipeline<R> with run()/start(). Part of
// rill/pipeline.hpp.
//
// How a pipeline runs. The stages are split into segments; each segment runs in one fiber
// as nested sinks (fusion), and consecutive segments are joined by a link (a channel of
// batches). A new segment starts before a stage with `fuse = false`, at stage_boundary,
// around par_map (whose n workers read one link and write another), and before every
// stage when fusion is off. The last segment runs in the fiber that called run().
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
struct fragment : stage_tag {
  std::tuple<Stages...> stages;
};
// sink_fragment: stages followed by a terminal, still without a source.
template <class Term, class... Stages>
struct sink_fragment : terminal_tag {
  std::tuple<Stages...> stages;
  Term term;
};

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
template <class Term, class In>
struct terminal_tail {
  using result_type = typename Term::template result_t<In>;
  Term* term;
  result_slot<result_type> result;
  int index;
  const char* name() const { return Term::kind; }
  auto make_sink(pipe_ctx& ctx) { return term->template make<In>(ctx, &result, index); }
};

template <class T>
struct link_tail {
  link_chan<T> ch;
  std::size_t batch_size;
  std::shared_ptr<std::atomic<int>> writers;
  const char* name() const { return "merge"; }
  link_writer<T> make_sink(pipe_ctx&) { return link_writer<T>(ch, batch_size, writers.get()); }
};

template <std::size_t I, class In, class Stages, class Tail, class Drive>
void build(Stages& st, Tail& tail, pipe_ctx& ctx, Drive drive, bool fresh, std::string seg,
           std::size_t buffer);

// cut(): the segment so far runs in a new fiber, feeding a link; building goes on from the
// link's reader, in the calling fiber.
template <std::size_t I, class In, class Stages, class Tail, class Drive>
void cut(Stages& st, Tail& tail, pipe_ctx& ctx, Drive drive, std::string seg, std::size_t buffer) {
  const link_shape shape = shape_for(buffer);
  auto l = ctx.template link<link_chan<In>>(shape.capacity);
  ctx.spawn(std::move(seg), [drive = std::move(drive),
                             w = link_writer<In>(l, shape.batch)]() mutable { drive(w); });
  build<I, In>(st, tail, ctx, link_driver<In>{l}, true, std::string(), default_buffer);
}

template <std::size_t I, class In, class Stages, class Tail, class Drive>
void build(Stages& st, Tail& tail, pipe_ctx& ctx, Drive drive, bool fresh, std::string seg,
           std::size_t buffer) {
  constexpr std::size_t n = std::tuple_size_v<Stages>;
  auto join = [](std::string a, const std::string& b) {
    return a.empty() ? b : std::move(a) + "|" + b;
  };
  if constexpr (I == n) {
    if (!ctx.fusion && !fresh) {
      cut<I, In>(st, tail, ctx, std::move(drive), std::move(seg), buffer);
      return;
    }
    ctx.record_fiber(join(std::move(seg), tail.name()));
    auto sink = tail.make_sink(ctx);
    drive(sink);
  } else {
    using S = std::tuple_element_t<I, Stages>;
    S& s = std::get<I>(st);
    using Out = typename S::template out_t<In>;
    constexpr int index = static_cast<int>(I) + 1;
    if constexpr (S::parallel) {
      // Fan out: the segment so far feeds `in`; n workers map `in` to `out`.
      const link_shape shape = shape_for(s.opt.buffer);
      // Smaller input batches spread the work evenly over the workers; the link still holds
      // at most `buffer` items, in more batches.
      const link_shape in_shape = shape_for(s.opt.buffer, 16);
      auto in = ctx.template link<link_chan<In>>(in_shape.capacity);
      ctx.spawn(std::move(seg), [drive = std::move(drive),
                                 w = link_writer<In>(in, in_shape.batch)]() mutable { drive(w); });
      auto out = ctx.template link<link_chan<Out>>(shape.capacity);
      unsigned workers = s.opt.workers ? s.opt.workers : runtime_stats().workers;
      if (workers == 0) workers = 1;
      // Ordered: the reorder window's tokens (see reorder_driver); a worker takes one before
      // each batch. Unordered: a nil channel, no tokens.
      chan<char> tokens(nullptr);
      if (s.opt.ordered) {
        const std::size_t window = 2 * std::size_t{workers} + shape.capacity;
        tokens = ctx.template link<chan<char>>(window);
        try {
          for (std::size_t k = 0; k < window; ++k) (void)tokens.try_send('t');
        } catch (const closed_channel&) {
          // cancelled already: the workers will stop at once
        }
      }
      auto left = std::make_shared<std::atomic<unsigned>>(workers);
      const std::string name = stage_name(s.opt.name, S::kind, index);
      for (unsigned k = 0; k < workers; ++k) {
        ctx.spawn(name, [in, out, tokens, left, &s, &ctx]() mutable {
          struct last_closes {
            std::atomic<unsigned>* left;
            link_chan<In>* in;
            link_chan<Out>* out;
            chan<char>* tokens;
            ~last_closes() {
              // A worker leaves when the input has ended, downstream stopped, or the run
              // failed: in the last two cases upstream must stop, and in every case workers
              // waiting for a token must not wait for one forever.
              in->core()->try_close();
              if (*tokens) tokens->core()->try_close();
              if (left->fetch_sub(1) == 1) out->core()->try_close();
            }
          } guard{left.get(), &in, &out, &tokens};
          for (;;) {
            if (tokens && !tokens.recv()) break;  // ordered: wait for room in the window
            std::optional<batch<In>> b = in.recv();
            if (!b) break;
            batch<Out> r;
            r.seq = b->seq;
            if (b->single) {
              r.single.emplace(
                  guarded(ctx, s.opt.name, S::kind, index, s.f, std::move(*b->single)));
            } else {
              r.items.reserve(b->items.size());
              for (In& v : b->items) {
                r.items.push_back(guarded(ctx, s.opt.name, S::kind, index, s.f, std::move(v)));
              }
            }
            try {
              out.send(std::move(r));
            } catch (const closed_channel&) {
              return;  // downstream stopped: the guard stops upstream too
            }
            // The send may have readied the downstream fiber into this worker's runnext
            // slot, where it would wait for this worker's next park: a whole batch of work
            // later, with the ordered window's tokens held back meanwhile (the workers then
            // stall on them). Let it run now; it parks again as soon as it has delivered.
            this_fiber::yield();
          }
        });
      }
      if (s.opt.ordered) {
        build<I + 1, Out>(st, tail, ctx, reorder_driver<Out>{out, tokens}, true, std::string(),
                          s.opt.buffer);
      } else {
        build<I + 1, Out>(st, tail, ctx, link_driver<Out>{out}, true, std::string(), s.opt.buffer);
      }
    } else {
      if (!fresh && (!ctx.fusion || !s.opt.fuse)) {
        cut<I, In>(st, tail, ctx, std::move(drive), std::move(seg), buffer);
        return;
      }
      auto next = [drive = std::move(drive), &s, &ctx, index](auto& down) mutable {
        auto sink = s.template make<In>(down, ctx, index);
        drive(sink);
      };
      build<I + 1, Out>(st, tail, ctx, std::move(next), false,
                        join(std::move(seg), stage_name(s.opt.name, S::kind, index)), s.opt.buffer);
    }
  }
}

template <class Flow, class Tail>
void build_flow(Flow& fl, Tail& tail, pipe_ctx& ctx) {
  using In = typename decltype(fl.src)::value_type;
  auto drive = [&fl, &ctx](auto& sink) { fl.src.drive(sink, ctx); };
  std::size_t buffer = default_buffer;
  if constexpr (requires { fl.src.buffer; }) buffer = fl.src.buffer;
  build<0, In>(fl.stages, tail, ctx, std::move(drive), false, decltype(fl.src)::kind, buffer);
}

template <class... Flows>
template <class Sink>
void merge_source<Flows...>::drive(Sink& sink, pipe_ctx& ctx) {
  using T = value_type;
  const link_shape shape = shape_for(default_buffer);
  auto l = ctx.template link<link_chan<T>>(shape.capacity);
  auto writers = std::make_shared<std::atomic<int>>(static_cast<int>(sizeof...(Flows)));
  std::apply(
      [&](auto&... fl) {
        (ctx.spawn("merge",
                   [&fl, &ctx, tail = link_tail<T>{l, shape.batch, writers}]() mutable {
                     build_flow(fl, tail, ctx);
                   }),
         ...);
      },
      flows);
  link_driver<T>{l}(sink);
}

// ---- pipeline<R> ------------------------------------------------------------------------------

template <class R>
struct pipeline_impl {
  virtual ~pipeline_impl() = default;
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

  R execute(pipe_ctx& ctx) override {
    using In = typename Flow::value_type;
    terminal_tail<Term, In> tail{
        &term, {}, static_cast<int>(std::tuple_size_v<decltype(flow.stages)>) + 1};
    try {
      build_flow(flow, tail, ctx);
    } catch (const stage_failed&) {
    } catch (...) {
      ctx.fail(std::current_exception(), "pipeline");
    }
    ctx.fibers.wait();
    ctx.release_links();
    this->stats_mu.lock();
    this->last = ctx.stats();
    this->stats_mu.unlock();
    if (std::exception_ptr e = ctx.error()) std::rethrow_exception(e);
    if (ctx.user_cancelled()) throw pipeline_cancelled();
    return tail.result.take();
  }
};

// run_on_default(): runs f in a fiber of the default runtime, blocking the calling thread.
template <class R, class F>
R run_on_default(F f) {
  result_slot<R> out;
  std::exception_ptr error;
  wait_group done;
  done.add(1);
  spawn_in(default_runtime(), [&] {
    try {
      if constexpr (std::is_void_v<R>) {
        f();
      } else {
        out.set(f());
      }
    } catch (...) {
      error = std::current_exception();
    }
    done.done();
  });
  done.wait();
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
      ctx.fusion = o.fusion;
      return im->execute(ctx);
    };
    return dispatch(o, body);
  }

  // run(stop): as run(), and requesting a stop on `stop` cancels the run.
  R run(std::stop_token stop, run_options o = {}) const {
    auto im = impl_;
    auto body = [im, o, stop]() -> R {
      detail::pipe_ctx ctx;
      ctx.fusion = o.fusion;
      std::stop_callback cb(stop, [&ctx] { ctx.user_cancel(); });
      return im->execute(ctx);
    };
    return dispatch(o, body);
  }

  // start() starts the pipeline (in a new fiber of the current runtime, or of the default
  // runtime from a plain thread) and returns at once.
  pipeline_handle<R> start(run_options o = {}) const;

  // stats(): the fiber layout of the last completed run.
  pipeline_stats stats() const {
    impl_->stats_mu.lock();
    pipeline_stats s = impl_->last;
    impl_->stats_mu.unlock();
    return s;
  }

 private:
  template <class F>
  static R dispatch(run_options o, F& body) {
    if (o.inline_mode) {
      options opts;
      opts.workers = 1;
      return rill::run(body, opts);
    }
    if (detail::current_fiber()) return body();
    return detail::run_on_default<R>(body);
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
    st_->done.wait();
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

 private:
  // stop() cancels a run that was not waited for and waits for it to end.
  void stop() noexcept {
    if (st_ && !waited_) {
      st_->ctx.user_cancel();
      st_->done.wait();
    }
  }

  std::shared_ptr<detail::handle_state<R>> st_;
  bool waited_ = false;
};

template <class R>
pipeline_handle<R> pipeline<R>::start(run_options o) const {
  auto st = std::make_shared<detail::handle_state<R>>();
  st->ctx.fusion = o.fusion;
  st->done.add(1);
  auto root = [st, im = impl_]() {
    try {
      if constexpr (std::is_void_v<R>) {
        im->execute(st->ctx);
      } else {
        st->result.set(im->execute(st->ctx));
      }
    } catch (...) {
      st->error = std::current_exception();
    }
    st->done.done();
  };
  if (detail::current_fiber()) {
    go(std::move(root));
  } else {
    detail::spawn_in(detail::default_runtime(), std::move(root));
  }
  return pipeline_handle<R>(std::move(st));
}

// ---- operator| --------------------------------------------------------------------------------

namespace detail {

// A pipeline that failed a static_assert: further composition, and the use of its result,
// are accepted silently so that the first error stays the only one. (Never defined: the
// program does not compile.)
struct poisoned : source_tag, stage_tag, terminal_tag {
  template <class... A>
  poisoned run(A&&...) const;
  template <class... A>
  poisoned start(A&&...) const;
  poisoned stats() const;
  poisoned wait() const;
  template <class T>
  operator T() const;
};

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
    return poisoned{};
  } else {
    return flow<Src, Have..., Add...>{
        {}, std::move(f.src), std::tuple_cat(std::move(f.stages), std::move(add))};
  }
}

template <class Src, class... Have, class Term>
auto finish_with(flow<Src, Have...>&& f, Term&& t) {
  using F = flow<Src, Have...>;
  using In = typename F::value_type;
  using T = std::remove_cvref_t<Term>;
  if constexpr (!T::template accepts<In>) {
    T::template check<In>();
    return poisoned{};
  } else {
    using R = typename T::template result_t<In>;
    return pipeline<R>(
        std::make_shared<pipeline_model<R, F, T>>(std::move(f), std::forward<Term>(t)));
  }
}

// source | stage(s)
template <class Src, class... Have, class St>
requires(is_stage_v<St> && !std::is_same_v<std::remove_cvref_t<St>, poisoned>) auto operator|(
    flow<Src, Have...> f, St st) {
  return append(std::move(f), as_stages<St>::get(std::move(st)));
}
// source | terminal
template <class Src, class... Have, class T>
requires(is_terminal_v<T> && !is_stage_v<T>) auto operator|(flow<Src, Have...> f, T t) {
  return finish_with(std::move(f), std::move(t));
}
// source | stages + terminal
template <class Src, class... Have, class Term, class... S>
auto operator|(flow<Src, Have...> f, sink_fragment<Term, S...> sf) {
  auto g = append(std::move(f), std::move(sf.stages));
  if constexpr (std::is_same_v<decltype(g), poisoned>) {
    return poisoned{};
  } else {
    return finish_with(std::move(g), std::move(sf.term));
  }
}
// stage | stage: a fragment
template <class A, class B>
requires(is_stage_v<A>&& is_stage_v<B> && !is_source_v<A> && !is_terminal_v<B>) auto operator|(
    A a, B b) {
  return std::apply(
      [](auto&&... s) {
        return fragment<std::remove_cvref_t<decltype(s)>...>{{}, {std::move(s)...}};
      },
      std::tuple_cat(as_stages<A>::get(std::move(a)), as_stages<B>::get(std::move(b))));
}
// stage | terminal: a sink fragment
template <class A, class T>
requires(is_stage_v<A> && !is_source_v<A> && is_terminal_v<T> && !is_stage_v<T>) auto operator|(
    A a, T t) {
  return std::apply(
      [&](auto&&... s) {
        return sink_fragment<T, std::remove_cvref_t<decltype(s)>...>{
            {}, {std::move(s)...}, std::move(t)};
      },
      as_stages<A>::get(std::move(a)));
}
// anything | poisoned, poisoned | anything
template <class A>
poisoned operator|(poisoned, A&&) {
  return {};
}

}  // namespace detail
}  // namespace rill
