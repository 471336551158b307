// rill/pipeline/run_context.hpp: the state one run shares among its stage fibers (pipe_ctx),
// each stage's live counters, and the small protocol every sink follows (paths, stage ids,
// user calls guarded against exceptions). Part of rill/pipeline.hpp.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <iosfwd>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rill/chan.hpp"
#include "rill/fiber.hpp"
#include "rill/pipeline/options.hpp"
#include "rill/runtime.hpp"
#include "rill/select.hpp"
#include "rill/sync.hpp"

namespace rill {
namespace detail {

// Thrown (after the failure is recorded) out of a stage whose user function threw; the
// stage fiber swallows it.
struct stage_failed {};

// join() waits for the fibers a run started. A deadlock does not cut it short: they were
// aborted too, and they use the caller's frames until they end. `deadlock` receives the
// deadlock_error if the caller is aborted while it waits.
inline void join(wait_group& fibers, std::exception_ptr& deadlock) {
  for (;;) {
    try {
      fibers.wait();
      return;
    } catch (...) {
      std::exception_ptr d = fiber_take_abort();
      if (!d) throw;
      deadlock = d;
    }
  }
}

// stage_counters: the live counters of one stage, written by the fibers that run it (at
// most once per chunk or batch of items, relaxed: they are statistics), summed on read.
// `out` is counted only by stages that change the count (sources, filter, flat_map, take,
// batch, unbatch, par_map); `sent`/`recvd` by the link after / before the stage.
// `starts` says where a chain begins: the stages of a merge's inner sources and of a
// broadcast's branches follow the pipeline's own in one array, and a stage's items_in come
// from the stage before it only within its chain.
struct alignas(64) stage_counters {
  enum class start : std::uint8_t { none, source, link };
  std::atomic<std::uint64_t> out{0}, sent{0}, recvd{0};
  std::atomic<std::int64_t> busy{0}, wait_in{0}, wait_out{0};
  std::atomic<bool> counts_out{false};
  std::atomic<start> starts{start::none};
  std::atomic<std::size_t> capacity{0};
  // The first and last moments a fiber ran the stage (a trace's stage span), as far as
  // published: per measuring window, per par_map unit.
  std::atomic<std::int64_t> first_ns{0}, last_ns{0};
};
// ran(): stage c's fiber ran it from t0 to t1 (widens the stage's span). par_map's workers
// call it per unit, all on one stage: the end moves only by span_grain_ns or more, so that
// most calls are two loads, not a contended write.
inline constexpr std::int64_t span_grain_ns = 10'000;
inline void ran(stage_counters& c, std::int64_t t0, std::int64_t t1) noexcept {
  std::int64_t f = c.first_ns.load(std::memory_order_relaxed);
  while ((f == 0 || t0 < f) &&
         !c.first_ns.compare_exchange_weak(f, t0, std::memory_order_relaxed)) {
  }
  std::int64_t l = c.last_ns.load(std::memory_order_relaxed);
  while (t1 - l >= span_grain_ns &&
         !c.last_ns.compare_exchange_weak(l, t1, std::memory_order_relaxed)) {
  }
}
// bump(): a relaxed add (several fibers may write one stage: par_map, merge).
inline void bump(std::atomic<std::uint64_t>& c, std::uint64_t n) noexcept {
  c.fetch_add(n, std::memory_order_relaxed);
}
inline void bump(std::atomic<std::int64_t>& c, std::int64_t n) noexcept {
  c.fetch_add(n, std::memory_order_relaxed);
}

// pipe_ctx: the state of one pipeline run, shared by all its fibers.
class pipe_ctx {
 public:
  pipe_ctx();
  ~pipe_ctx();
  pipe_ctx(const pipe_ctx&) = delete;
  pipe_ctx& operator=(const pipe_ctx&) = delete;

  bool fusion = true;
  // false (inline_run): no decision from measured time, so that a run's schedule is the
  // same every time: links and par_map use their largest batches, chains never split.
  bool adaptive = true;
  std::size_t stack_size = 0;     // run_options::stack_size
  std::int32_t watchdog_ms = -1;  // run_options::watchdog (-1: unset)
  unsigned workers = 1;           // of the runtime the run is on
  bool metrics = true;            // run_options::metrics
  bool progress = false;          // run_options::progress or RILL_PROGRESS
  std::atomic<bool> stop{false};
  wait_group fibers;
  chan<char> cancelled{0};  // closed on cancel: wakes sources/sinks blocked on user channels

  // fail() records the first failure (and the stage's name) and cancels the run.
  void fail(std::exception_ptr e, const std::string& stage);

  // cancel() stops every stage: closes every link, which wakes blocked senders (they stop)
  // and receivers (they see the end).
  void cancel() noexcept;
  void user_cancel() noexcept {
    user_cancelled_.store(true);
    cancel();
  }

  // link() makes a channel between two stage fibers, closed on cancel.
  template <class C>
  C link(std::size_t capacity) {
    C c(capacity);
    add_link(c.core());
    return c;
  }
  // add_link(): the run holds `core` (closed on cancel, and at once if cancelled already).
  void add_link(chan_core* core);

  // release_links() drops the run's references to its links once every stage fiber has
  // ended, so that items a cancelled or failed run left in them are destroyed before
  // run() or wait() returns (not when the last copy of a pipeline_handle goes).
  void release_links() noexcept;

  // configure() applies a run's options.
  void configure(const run_options& o) noexcept {
    fusion = o.fusion;
    adaptive = !o.inline_mode;
    stack_size = o.stack_size;
    if (o.watchdog) watchdog_ms = static_cast<std::int32_t>(detail::watchdog_ms(*o.watchdog));
    metrics = o.metrics;
    progress = o.progress || progress_from_env();
  }
  static bool progress_from_env() noexcept;

  // begin_run(): the run starts, with `stages` stages (source and terminal included); makes
  // their counters (before any stage fiber exists). end_run(): it has ended.
  void begin_run(int stages);
  void end_run() noexcept;
  void trace_spans() noexcept;  // (end_run, while a trace is recorded)
  // counter(index): stage `index`'s counters (nullptr with metrics off). Stage fibers call
  // it; its array does not change while they run.
  stage_counters* counter(int index) noexcept {
    if (!counters_ || index < 0) return nullptr;
    return &counters_[static_cast<std::size_t>(std::min(index, ncounters_ - 1))];
  }
  // source_size: the number of items the source will give, when it knows (-1: unknown).
  std::atomic<std::int64_t> source_size{-1};

  // spawn() runs f in a new stage fiber named `name`, with a stack of at least `stack`
  // bytes (and of the run's size); its failure fails the run. `record`: list it in the
  // run's stats now (false: f records its own layout as it builds it). `spread`: it is
  // meant to run beside its siblings (detail::fiber_start).
  template <class F>
  void spawn(std::string name, F f, bool record = true, std::size_t stack = 0,
             bool spread = false) {
    if (record) record_fiber(name);
    fibers.add(1);
    try {
      go_sized(
          std::max(stack, stack_size),
          [this, name = std::move(name), f = std::optional<F>(std::move(f))]() mutable {
            enter_fiber(name);
            guard_fiber(name, *f);
            // The stage's state (its links, the items left in its batches) goes before done():
            // run() may return as soon as done() is called, and must leave no item behind,
            // nor a fiber counted as live.
            f.reset();
            leave_fiber();
          },
          spread);
    } catch (...) {
      fibers.done();
      throw;
    }
  }

  // enter_fiber(): a stage fiber takes its name and the run's watchdog setting.
  // leave_fiber(): it stops counting as live, then as one of the run's fibers.
  void enter_fiber(const std::string& name) noexcept;
  void leave_fiber() noexcept;

  template <class F>
  void guard_fiber(const std::string& name, F& f) noexcept {
    try {
      f();
    } catch (const stage_failed&) {
    } catch (...) {
      fail(std::current_exception(), name);
    }
  }

  // stage_at(index, f): f(stats of stage `index`) under the lock; the entry is made on
  // first use. Stages are numbered from the source (0) to the terminal.
  template <class F>
  void stage_at(int index, F f) noexcept {
    stage_at(
        index, [](stage_stats& st, void* fp) { (*static_cast<F*>(fp))(st); }, &f);
  }
  void stage_at(int index, void (*f)(stage_stats&, void*), void* arg) noexcept;
  // rename_fiber(): a split moved stages out of the fiber listed as `from`.
  void rename_fiber(const std::string& from, const std::string& to, const std::string& added);

  void record_fiber(const std::string& stages);

  std::exception_ptr error();
  std::string failed_stage();
  bool user_cancelled() const noexcept { return user_cancelled_.load(); }
  pipeline_stats stats();

 private:
  spinlock mu_;
  std::exception_ptr error_;        // guarded by mu_
  std::string failed_stage_;        // guarded by mu_
  std::vector<chan_handle> links_;  // guarded by mu_
  pipeline_stats stats_;            // guarded by mu_
  std::atomic<bool> user_cancelled_{false};
  std::unique_ptr<stage_counters[]> counters_;  // set by begin_run (read by stats under mu_)
  int ncounters_ = 0;
  std::atomic<std::int64_t> start_ns_{0}, end_ns_{0};
  void* progress_ = nullptr;  // the progress bar's thread (obs/progress.cpp), guarded by mu_
};

// The path an item takes through a fiber's chain of sinks: a sink's operator() takes it as
// an optional second argument and passes it on. dynamic_path (the default): each boundary
// looks whether it is being measured or split. fused_path: the driver knows that no
// boundary of its fiber is (segment::quiet(), checked once per chunk), so the chain compiles
// to the plain nested calls, with no out-of-line call that could touch the sinks' state
// (which would keep a reduce's accumulator in memory instead of a register).
struct dynamic_path {
  static constexpr bool fused = false;
};
struct fused_path {
  static constexpr bool fused = true;
};
// push(sink, v, path): one item down `path`. chain_is_quiet(sink): the chain the driver
// feeds may take fused_path for its next chunk (only a chain that starts at a boundary
// knows; any other takes dynamic_path).
template <class Sink>
inline constexpr bool has_fused_path_v = requires(const Sink& s) {
  s.quiet();
};
template <class Sink>
bool chain_is_quiet(const Sink& sink) noexcept {
  if constexpr (has_fused_path_v<Sink>) {
    return sink.quiet();
  } else {
    return false;
  }
}
template <class Sink, class V, class M>
[[gnu::always_inline]] inline bool push(Sink& sink, V&& v, M path) {
  if constexpr (M::fused && has_fused_path_v<Sink>) {
    return sink(std::forward<V>(v), path);
  } else {
    return sink(std::forward<V>(v));
  }
}

// stage_fiber_scope: while it lives, the calling fiber (the one that called run(), running
// the last stages itself) is named after those stages, so that a dump, a stack overflow or
// a watchdog report names them, and has the run's watchdog setting (watchdog_ms >= 0).
class stage_fiber_scope {
 public:
  stage_fiber_scope(const char* name, std::int32_t watchdog_ms) noexcept
      : set_watchdog_(watchdog_ms >= 0) {
    fiber_get_name(saved_name_, sizeof saved_name_);
    fiber_set_name(name);
    if (set_watchdog_) saved_watchdog_ = fiber_set_watchdog(watchdog_ms);
  }
  ~stage_fiber_scope() {
    fiber_set_name(saved_name_);
    if (set_watchdog_) fiber_set_watchdog(saved_watchdog_);
  }
  stage_fiber_scope(const stage_fiber_scope&) = delete;
  stage_fiber_scope& operator=(const stage_fiber_scope&) = delete;

 private:
  char saved_name_[fiber_name_max];
  bool set_watchdog_;
  std::int32_t saved_watchdog_ = -1;
};

// never_stops_v<Sink>: the sink never returns false (no take, no link, no channel
// downstream), so a source may drive it without checking after every item.
template <class S>
constexpr bool never_stops_v = requires {
  requires S::never_stops;
};

// inert_v<Sink>: the chain ends in a link writer (a cut, par_map's input, a merge): such a
// chain never splits (its writer belongs to its fiber; its segment has may_split false),
// so its boundaries are plain_points and its drivers compile the fused path alone.
template <class S>
constexpr bool inert_v = requires {
  requires S::inert;
};

// stage_id: a stage as the run knows it. `slot`: its entry in pipeline_stats::stages and
// its counters (the pipeline's own stages first, from its source at 0, then those of a
// merge's inner sources and a broadcast's branches); `number`: its place in its own chain,
// as its default name says ("map#2").
struct stage_id {
  int slot = 0;
  int number = 0;
};

// takes_any: the description of a stage or terminal that takes items of every type.
struct takes_any {
  template <class In>
  static constexpr bool accepts = true;
  template <class In>
  static constexpr void check() {}
};

// counting(ctx, id): the counters of a stage that counts the items it passes on
// (filter, flat_map, take, batch, unbatch, par_map, the sources); nullptr with metrics off.
inline stage_counters* counting(pipe_ctx& ctx, stage_id id) noexcept {
  stage_counters* c = ctx.counter(id.slot);
  if (c) c->counts_out.store(true, std::memory_order_relaxed);
  return c;
}
// count_out(): one more item passed on. A stage's items are passed on by one fiber at a
// time (the fiber that runs it; a split hands it over through a channel), so a load and a
// store, not a locked add.
[[gnu::always_inline]] inline void count_out(stage_counters* c, std::uint64_t n) noexcept {
  if (c) c->out.store(c->out.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

// dot_stage: one stage as composed, for to_dot().
struct dot_stage {
  std::string name;
  std::size_t buffer = default_buffer;           // of the link after it, when there is one
  unsigned workers = 0;                          // par_map: its workers (0: the runtime's count)
  bool parallel = false;                         // par_map
  bool own_fiber = false;                        // .fuse = false: starts a fiber
  std::vector<std::vector<dot_stage>> branches;  // broadcast: each branch's chain
};
// format_dot(): the Graphviz text of a chain (observe.cpp); `run`: what a run measured.
std::string format_dot(const std::vector<dot_stage>& chain, const pipeline_stats* run);

// fill_live(): the items and times of `s`'s stages from their counters (stats.cpp).
void fill_live(pipeline_stats& s, const stage_counters* c, int n);

// stage_name(): "map#2" or the user's name.
std::string stage_name(const char* user, const char* kind, int index);

// guarded(): calls a user function; on an exception records it against the stage and
// throws stage_failed.
template <class F, class... A>
[[gnu::always_inline]] inline decltype(auto) guarded(pipe_ctx& ctx, const char* user,
                                                     const char* kind, stage_id id, F& f,
                                                     A&&... a) {
  try {
    return std::invoke(f, std::forward<A>(a)...);
  } catch (...) {
    ctx.fail(std::current_exception(), stage_name(user, kind, id.number));
    throw stage_failed{};
  }
}

}  // namespace detail
}  // namespace rill
