// rill/pipeline/concepts.hpp: options, tags, the per-run context and the links between
// stage fibers. Part of rill/pipeline.hpp.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rill/chan.hpp"
#include "rill/fiber.hpp"
#include "rill/runtime.hpp"
#include "rill/select.hpp"
#include "rill/sync.hpp"

namespace rill {

// The default channel capacity after a stage, in items. Small, so a fast source never runs
// far ahead of a slow sink.
inline constexpr std::size_t default_buffer = 256;

// stage_options: per-stage settings, e.g. `rill::map(f, {.buffer = 16})`.
struct stage_options {
  // Capacity (items) of the channel after this stage, when the stage ends a fiber.
  std::size_t buffer = default_buffer;
  // false: the stage runs in a fiber of its own instead of being fused with its neighbours.
  bool fuse = true;
  // Name in error reports and stats (default: the stage kind and its position).
  const char* name = nullptr;
};

// par_options: settings of par_map, e.g. `{.workers = 4, .ordered = true}`.
struct par_options {
  unsigned workers = 0;  // 0: the runtime's worker count
  bool ordered = true;   // keep input order (bounded reorder window) or emit as finished
  std::size_t buffer = default_buffer;
  const char* name = nullptr;
};

// run_options: how one run executes.
struct run_options {
  // false: every stage in a fiber of its own (results are identical either way).
  bool fusion = true;
  // true: a private runtime with one worker, so the schedule (and the output order of an
  // unordered par_map) is the same on every run. For tests of the wiring.
  bool inline_mode = false;
};
// run(rill::inline_run): the deterministic one-worker mode.
inline constexpr run_options inline_run{true, true};

// pipeline_cancelled: run()/wait() of a pipeline stopped by cancel() or its stop_token.
class pipeline_cancelled : public std::runtime_error {
 public:
  pipeline_cancelled() : std::runtime_error("rill: pipeline cancelled") {}
};

// pipeline_stats: how the last run was laid out (which stages were fused into one fiber).
struct pipeline_stats {
  std::vector<std::string> fibers;  // one entry per stage fiber: its stages, '|'-separated
};

namespace detail {

struct source_tag {};
struct stage_tag {};
struct terminal_tag {};

template <class T>
inline constexpr bool is_source_v = std::is_base_of_v<source_tag, std::remove_cvref_t<T>>;
template <class T>
inline constexpr bool is_stage_v = std::is_base_of_v<stage_tag, std::remove_cvref_t<T>>;
template <class T>
inline constexpr bool is_terminal_v = std::is_base_of_v<terminal_tag, std::remove_cvref_t<T>>;

// Thrown (after the failure is recorded) out of a stage whose user function threw; the
// stage fiber swallows it.
struct stage_failed {};

// pipe_ctx: the state of one pipeline run, shared by all its fibers.
class pipe_ctx {
 public:
  bool fusion = true;
  std::atomic<bool> stop{false};
  wait_group fibers;
  chan<char> cancelled{0};  // closed on cancel: wakes sources/sinks blocked on user channels

  // fail() records the first failure (and the stage's name) and cancels the run.
  void fail(std::exception_ptr e, const std::string& stage) {
    mu_.lock();
    if (!error_) {
      error_ = std::move(e);
      try {
        failed_stage_ = stage;
      } catch (...) {
        // out of memory: the failure still surfaces, without its stage's name
      }
    }
    mu_.unlock();
    cancel();
  }

  // cancel() stops every stage: closes every link, which wakes blocked senders (they stop)
  // and receivers (they see the end).
  void cancel() noexcept {
    if (stop.exchange(true)) return;
    // Closed under mu_, not from a copy of links_: a copy may fail to allocate, and a link
    // left open can block a stage forever. try_close() never parks.
    mu_.lock();
    for (const chan_handle& h : links_) h.get()->try_close();
    mu_.unlock();
    cancelled.core()->try_close();
  }
  void user_cancel() noexcept {
    user_cancelled_.store(true);
    cancel();
  }

  // link() makes a channel between two stage fibers, closed on cancel.
  template <class C>
  C link(std::size_t capacity) {
    C c(capacity);
    c.core()->retain();
    chan_handle h(c.core());
    mu_.lock();
    try {
      links_.push_back(std::move(h));
    } catch (...) {
      mu_.unlock();
      throw;
    }
    mu_.unlock();
    if (stop.load()) c.core()->try_close();
    return c;
  }

  // release_links() drops the run's references to its links once every stage fiber has
  // ended, so that items a cancelled or failed run left in them are destroyed before
  // run() or wait() returns (not when the last copy of a pipeline_handle goes).
  void release_links() noexcept {
    std::vector<chan_handle> links;
    mu_.lock();
    links.swap(links_);
    mu_.unlock();
  }

  // spawn() runs f in a new stage fiber named `name`; its failure fails the run. `record`:
  // list it in the run's stats now (false: f records its own layout as it builds it).
  template <class F>
  void spawn(std::string name, F f, bool record = true) {
    if (record) record_fiber(name);
    fibers.add(1);
    try {
      go([this, name = std::move(name), f = std::optional<F>(std::move(f))]() mutable {
        this_fiber::name(name.c_str());
        guard_fiber(name, *f);
        // The stage's state (its links, the items left in its batches) goes before done():
        // run() may return as soon as done() is called, and must leave no item behind.
        f.reset();
        fibers.done();
      });
    } catch (...) {
      fibers.done();
      throw;
    }
  }

  template <class F>
  void guard_fiber(const std::string& name, F& f) noexcept {
    try {
      f();
    } catch (const stage_failed&) {
    } catch (...) {
      fail(std::current_exception(), name);
    }
  }

  void record_fiber(const std::string& stages) {
    mu_.lock();
    try {
      stats_.fibers.push_back(stages);
    } catch (...) {
    }
    mu_.unlock();
  }

  std::exception_ptr error() {
    mu_.lock();
    auto e = error_;
    mu_.unlock();
    return e;
  }
  std::string failed_stage() {
    mu_.lock();
    auto s = failed_stage_;
    mu_.unlock();
    return s;
  }
  bool user_cancelled() const noexcept { return user_cancelled_.load(); }
  pipeline_stats stats() {
    mu_.lock();
    auto s = stats_;
    mu_.unlock();
    return s;
  }

 private:
  spinlock mu_;
  std::exception_ptr error_;        // guarded by mu_
  std::string failed_stage_;        // guarded by mu_
  std::vector<chan_handle> links_;  // guarded by mu_
  pipeline_stats stats_;            // guarded by mu_
  std::atomic<bool> user_cancelled_{false};
};

// never_stops_v<Sink>: the sink never returns false (no take, no link, no channel
// downstream), so a source may drive it without checking after every item.
template <class S>
constexpr bool never_stops_v = [] {
  if constexpr (requires { S::never_stops; }) {
    return S::never_stops;
  } else {
    return false;
  }
}();

// stage_name(): "map#2" or the user's name.
inline std::string stage_name(const char* user, const char* kind, int index) {
  if (user) return user;
  return std::string(kind) + "#" + std::to_string(index);
}

// guarded(): calls a user function; on an exception records it against the stage and
// throws stage_failed.
template <class F, class... A>
[[gnu::always_inline]] inline decltype(auto) guarded(pipe_ctx& ctx, const char* user,
                                                     const char* kind, int index, F& f, A&&... a) {
  try {
    return std::invoke(f, std::forward<A>(a)...);
  } catch (...) {
    ctx.fail(std::current_exception(), stage_name(user, kind, index));
    throw stage_failed{};
  }
}

// ---- links: channels of batches between stage fibers ---------------------------------------
//
// A link moves items in batches to amortize the channel's synchronization; the user still
// sees one item at a time. A writer sends its batch when it is full, or when its fiber is
// about to wait for input (flush_hint), so batching never delays an item indefinitely.
// Bound: a link with `buffer` b holds at most b items (batch size B = clamp(b/3, 1, 64),
// channel capacity (b - 2B + 1) / B batches, plus one partial batch in the writer and one
// in the reader).

// A batch of one item (links of batch size 1, e.g. `.buffer = 0`) holds it in `single`, so
// that an unbuffered link allocates nothing per item; larger batches use `items`.
template <class T>
struct batch {
  std::uint64_t seq = 0;  // position in the stream, for ordered par_map
  std::vector<T> items;
  std::optional<T> single;
  batch() = default;
  batch(batch&&) = default;
  // By hand: std::optional<T>'s is deleted for item types that are not assignable (a
  // std::pair<const K, V> from a map), and a batch is replaced, never assigned item-wise.
  batch& operator=(batch&& o) {
    seq = o.seq;
    items = std::move(o.items);
    single.reset();
    if (o.single) single.emplace(std::move(*o.single));
    return *this;
  }
  bool empty() const noexcept { return !single && items.empty(); }
  std::size_t size() const noexcept { return single ? 1 : items.size(); }
  // each(f): f(T&&) for every item, in order, while f returns true; false if f stopped.
  template <class F>
  bool each(F&& f) {
    if (single) return f(std::move(*single));
    for (T& v : items) {
      if (!f(std::move(v))) return false;
    }
    return true;
  }
};

template <class T>
using link_chan = chan<batch<T>>;

struct link_shape {
  std::size_t batch;
  std::size_t capacity;
};
// shape_for(buffer, max_batch): the batch size and channel capacity (in batches) of a link
// that holds at most `buffer` items.
inline link_shape shape_for(std::size_t buffer, std::size_t max_batch = 64) {
  const std::size_t b = std::clamp<std::size_t>(buffer / 3, 1, max_batch);
  const std::size_t cap = buffer >= 2 * b ? (buffer - 2 * b + 1) / b : 0;
  return {b, cap};
}

template <class T>
class link_writer {
 public:
  link_writer(link_chan<T> ch, std::size_t batch_size, std::atomic<int>* writers = nullptr)
      : ch_(std::move(ch)), b_(batch_size), writers_(writers) {
    if (b_ > 1) cur_.items.reserve(b_);
  }

  template <class V>
  [[gnu::always_inline]] bool operator()(V&& v) {
    if (b_ == 1) {
      cur_.single.emplace(std::forward<V>(v));
      return flush();
    }
    cur_.items.push_back(std::forward<V>(v));  // never reallocates: reserved to b_
    if (cur_.items.size() < b_) [[likely]]
      return true;
    return flush();
  }
  // flush() sends the partial batch; false once the reader has stopped.
  [[gnu::noinline]] bool flush() {  // out of line: operator() must inline into the loop
    if (!open_) return false;
    if (cur_.empty()) return true;
    cur_.seq = seq_++;
    try {
      ch_.send(std::move(cur_));
    } catch (const closed_channel&) {
      open_ = false;  // downstream stopped (take, cancel): stop producing
    }
    cur_ = batch<T>{};
    if (b_ > 1) cur_.items.reserve(b_);
    return open_;
  }
  void flush_hint() { flush(); }
  void finish() {
    flush();
    if (!writers_ || writers_->fetch_sub(1) == 1) ch_.core()->try_close();
  }

 private:
  link_chan<T> ch_;
  std::size_t b_;
  std::atomic<int>* writers_;  // shared by several writers (merge): the last one closes
  batch<T> cur_;
  std::uint64_t seq_ = 0;
  bool open_ = true;
};

// link_driver: drives a sink with the items of a link, in arrival order.
template <class T>
struct link_driver {
  link_chan<T> ch;
  template <class Sink>
  void operator()(Sink& sink) {
    for (;;) {
      std::optional<batch<T>> b = ch.try_recv();
      if (!b) {
        sink.flush_hint();  // about to wait: let what we produced go downstream
        b = ch.recv();
        if (!b) break;
      }
      if (!b->each([&](T&& v) { return sink(std::move(v)); })) {
        ch.core()->try_close();  // stop upstream promptly
        sink.finish();
        return;
      }
    }
    sink.finish();
  }
};

// reorder_driver: like link_driver, but delivers batches in `seq` order (ordered par_map).
// The window is bounded by `tokens`: a par_map worker takes a token before it takes a batch,
// and the driver gives one back for each batch it delivers, so at most as many batches as
// there are tokens lie between the workers' input and the sink, however uneven the work
// (without this, one slow item let the others pile up in the window without bound).
template <class T>
struct reorder_driver {
  link_chan<T> ch;
  chan<char> tokens;
  void give_token() {
    try {
      (void)tokens.try_send('t');  // never full: tokens in the channel + taken <= capacity
    } catch (const closed_channel&) {
      // the workers are gone (end of input, or downstream stopped)
    }
  }
  template <class Sink>
  void operator()(Sink& sink) {
    std::vector<std::optional<batch<T>>> window;  // window[i] holds seq next + i
    std::uint64_t next = 0;
    auto deliver = [&](batch<T>& b) { return b.each([&](T&& v) { return sink(std::move(v)); }); };
    for (;;) {
      std::optional<batch<T>> b = ch.try_recv();
      if (!b) {
        sink.flush_hint();
        b = ch.recv();
        if (!b) break;
      }
      const std::uint64_t off = b->seq - next;
      if (off >= window.size()) window.resize(off + 1);
      window[off] = std::move(b);
      while (!window.empty() && window.front()) {
        if (!deliver(*window.front())) {
          ch.core()->try_close();
          if (tokens) tokens.core()->try_close();  // wakes workers waiting for a token
          sink.finish();
          return;
        }
        window.erase(window.begin());
        ++next;
        give_token();
      }
    }
    sink.finish();
  }
};

}  // namespace detail
}  // namespace rill
