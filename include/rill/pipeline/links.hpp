// rill/pipeline/links.hpp: the links between stage fibers (channels of batches, whose batch
// size adapts to the items), and the segments that decide, while a run goes, where a fused
// chain of stages splits into fibers. Part of rill/pipeline.hpp.
//
// The policy, in one place (the reasons are with each piece below):
//   - A link's writer batches items to amortize the channel, but no item waits in a partial
//     batch while the writer's fiber parks (the fiber's park hooks send it first, whatever
//     the fiber parks on), and a batch grows only while it fills within batch_fill_bound_ns
//     of the writer's running time: slow or scarce items go one at a time.
//   - par_map hands its workers units sized from their measured work per item
//     (handout_bound_ns): one item at a time when items are slow.
//   - Adjacent stages start fused in one fiber. A fiber measures its work per item in
//     windows (a clock read per window, not per item); when that work is large enough for a
//     split to matter, it measures each boundary for a few items and splits at the one that
//     balances the two sides best, if the lighter side is worth a fiber of its own
//     (split_min_ns: much more than a link's cost per item on several workers; with one
//     worker only a side that waits, e.g. on I/O, gains, so the bar is high). The split
//     happens between two items: the items before it went through the whole chain already,
//     so nothing is lost, duplicated or reordered.
//     When every piece is heavy (split_all_min_ns), it splits at every such boundary at once.
//   - The scheduler does not preempt: a stage fiber yields between two chunks once it has run
//     for slice_ns, so CPU-bound stage fibers on fewer workers take turns.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "rill/pipeline/run_context.hpp"

namespace rill {
namespace detail {

// Sanitizers and unoptimized (-O0) builds slow everything several times; the split bars
// scale with them, so that such a build lays out stages as an optimized one does.
// cost_scale scales the bars set against work; overhead_scale the one set against the
// pipeline's own cost per item (its probes and links), which ASan slows most: those are
// templates, compiled with the code that composes the pipeline (the tests: at -O0).
#if defined(__SANITIZE_ADDRESS__)
#define RILL_DETAIL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RILL_DETAIL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define RILL_DETAIL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RILL_DETAIL_TSAN 1
#endif
#endif
#if defined(RILL_DETAIL_ASAN)
inline constexpr std::int64_t cost_scale = 10;
inline constexpr std::int64_t overhead_scale = 30;
#elif defined(RILL_DETAIL_TSAN) || !defined(__OPTIMIZE__)
inline constexpr std::int64_t cost_scale = 10;
inline constexpr std::int64_t overhead_scale = 10;
#else
inline constexpr std::int64_t cost_scale = 1;
inline constexpr std::int64_t overhead_scale = 1;
#endif
#undef RILL_DETAIL_ASAN
#undef RILL_DETAIL_TSAN

// An item waits in a partial batch for at most about this much of its writer's running time.
inline constexpr std::int64_t batch_fill_bound_ns = 50'000;
// fill_bound_batch(p): the largest batch that fills within batch_fill_bound_ns when an item
// takes p ns to make (p > 0).
constexpr std::int64_t fill_bound_batch(std::int64_t p) noexcept {
  return batch_fill_bound_ns / p + 1;
}
// par_map hands a worker about this much work at a time.
inline constexpr std::int64_t handout_bound_ns = 50'000;
// A par_map worker yields after sending a unit of at least this much work (so that the
// fiber it woke need not wait for the next one), not after cheaper units.
inline constexpr std::int64_t handoff_yield_ns = 5'000;
// A fused fiber splits at a boundary only if both sides take at least this long per item.
inline constexpr std::int64_t split_min_ns_workers = 50 * overhead_scale;  // several workers
inline constexpr std::int64_t split_min_ns_one = 20'000 * cost_scale;      // one: only waits gain
// Pieces this heavy (each side of every cut) split all at once, a fiber each: a link costs
// nothing next to them, and each split found one probe at a time delays the rest.
inline constexpr std::int64_t split_all_min_ns = 20'000 * cost_scale;
// A fiber that has run this long since it last yielded yields at its next window, so that
// CPU-bound stage fibers on fewer workers share them in turn (the scheduler does not
// preempt): otherwise the last stage runs behind and drains alone at the end. The same slice
// after which the watchdog flags a fiber that has not yielded (fiber_slice_flag()).
inline constexpr std::int64_t slice_ns = fiber_slice_ns;
// How long a measuring window lasts, and how much sampling a split decision wants.
inline constexpr std::int64_t window_ns = 1'000'000;
inline constexpr std::int64_t probe_ns = 200'000;
// A probe takes at least 7 samples per side (its lower median stands while 3 of them were
// preempted or hit a cold cache); 3 when each item takes half a probe or more, 2 when it
// takes probe_ns_slowest or more (judged by their least: each must be inflated to mislead
// it). Every item a probe waits for runs fused: with slow items that is the cost that
// counts (fused, an item waits for every stage in turn instead of for the slowest).
inline constexpr int min_probe_samples = 7;
inline constexpr int min_probe_samples_slow = 3;
inline constexpr int min_probe_samples_slowest = 2;
inline constexpr std::int64_t probe_ns_slowest = 4 * probe_ns * cost_scale;
inline constexpr int max_probe_samples = 16;
// The metrics' own probes (each stage's share of a fused fiber's work) come this far apart
// in time: a window is at most 1 << 14 items, so with cheap items a cadence counted in
// windows probed every few microseconds, and each probe sends a whole chunk down the
// out-of-line path.
inline constexpr std::int64_t measure_every_ns = 16 * window_ns;

// A fused loop (a source's, a link reader's) looks at its fiber's slice flag
// (fiber_slice_flag()) after every slice_check items: a relaxed load per that many items,
// nothing per item. A link reader whose items take check_each_ns or more, or whose slice
// just ended, looks after every item (segment::check_every()): next to such an item the
// look is noise, and slice_check of them could hold the worker for many slices.
inline constexpr std::size_t slice_check = 16;
inline constexpr std::int64_t check_each_ns = 1'000;

// A batch of one item (links of batch size 1) holds it in `single`, so that a link moving
// one item at a time allocates nothing per item; larger batches use `items`.
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
  // each_from(k, f, slice_over, every): f(T&&) for the items from the k-th on, in order,
  // while f returns true (false if f stopped); k counts the items taken. It stops early,
  // after a multiple of `every` items, once *slice_over is set: items that turn slow in the
  // middle of a batch hold the fiber's worker for a few of them, not for the rest of the
  // batch (the caller reports the items so far, and its tick yields).
  template <class F>
  bool each_from(std::size_t& k, F&& f, const std::atomic<bool>& slice_over, std::size_t every) {
    if (single) {
      k = 1;
      return f(std::move(*single));
    }
    T* p = items.data() + k;
    T* const end = items.data() + items.size();
    bool more = true;
    while (p != end) {
      T* const e = static_cast<std::size_t>(end - p) < every ? end : p + every;
      while (p != e) {
        if (!f(std::move(*p++))) {
          more = false;
          break;
        }
      }
      if (!more || slice_over.load(std::memory_order_relaxed)) break;
    }
    k = static_cast<std::size_t>(p - items.data());
    return more;
  }
};

template <class T>
using link_chan = chan<batch<T>>;

// Bound: a link with `buffer` b holds at most b items: batches of at most B = clamp(b/3, 1,
// max_batch) items, channel capacity (b - 2B + 1) / B batches, plus one partial batch in the
// writer and one in the reader. max_batch is the largest batch the writer will want (0:
// none, up to 64), so that small batches get the slots to hold b items (batches of one item
// in the one slot that B = 21 leaves would hold 3 items of a buffer of 64).
struct link_shape {
  std::size_t batch;
  std::size_t capacity;
};
// shape_of(): batches of b, and the slots that hold `buffer` with a partial batch in the
// writer and one in the reader.
inline link_shape shape_of(std::size_t buffer, std::size_t b) {
  return {b, buffer >= 2 * b ? (buffer - 2 * b + 1) / b : 0};
}
inline link_shape shape_for(std::size_t buffer, std::size_t max_batch = 0) {
  return shape_of(buffer, std::clamp<std::size_t>(buffer / 3, 1, max_batch ? max_batch : 64));
}
// pinned_shape(): for batches the user pinned at n: B = n, cut to half of `buffer` (where a
// partial batch in the writer and one in the reader hold it all, through a rendezvous).
inline link_shape pinned_shape(std::size_t buffer, std::size_t n) {
  return shape_of(buffer, std::clamp<std::size_t>(n, 1, std::max<std::size_t>(1, buffer / 2)));
}
// unit_shape_for(): the link that feeds par_map's workers. Each worker's unit is counted
// besides `buffer` (as the ordered reorder window counts it), so the link holds up to
// `buffer` items in the writer's partial unit and its slots alone: units of up to half of
// `buffer` (at most 64, or the user's pinned size), and (buffer - U) / U slots.
inline link_shape unit_shape_for(std::size_t buffer, std::size_t pinned = 0) {
  const std::size_t u = std::clamp<std::size_t>(buffer / 2, 1, pinned ? pinned : 64);
  return {u, buffer > u ? (buffer - u) / u : 0};
}

class segment;
void segment_waited(segment* seg, std::int64_t ns) noexcept;

// batch_policy: how a link_writer sizes its batches.
struct batch_policy {
  std::size_t max = 64;  // never more items per batch (the link's shape)
  bool pinned = false;   // always up to `max` (the user's batch_size)
  // The reader's own limit, read at each batch (par_map: from its workers' measured work
  // per item); nullptr: none.
  const std::atomic<std::size_t>* reader_limit = nullptr;
  pipe_ctx* ctx = nullptr;  // for stats: the last batch size, on stage `stage`
  int stage = -1;
};

// link_writer: the sending end of a link, the last sink of a fiber's chain.
//
// Batch size. Adaptive (not pinned), the writer measures how long its fiber takes to produce
// an item (one clock read at the start of a batch and one at its flush, every batch while
// the size moves and one in eight at the top), and keeps a batch's fill time under
// batch_fill_bound_ns: it starts at one item and doubles while a batch fills in under a
// quarter of the bound. A batch is sent when full, when the fiber waits for input
// (flush_hint), and when the fiber parks for any other reason (its park hook: a channel, a
// timer, I/O, a lock, a blocking call), so an item never waits for a batch to fill while
// its fiber sleeps. The park hook only tries (a hook must not park): when the link is full
// the batch stays with the writer, and goes when the fiber next runs (the reader has a full
// link of items before it needs this batch).
template <class T>
class link_writer {
 public:
  static constexpr bool inert = true;  // see inert_v
  link_writer(link_chan<T> ch, batch_policy pol, std::atomic<int>* writers = nullptr)
      : ch_(std::move(ch)),
        pol_(pol),
        b_(pol.pinned ? pol.max : 1),
        writers_(writers),
        ctr_(pol.ctx ? pol.ctx->counter(pol.stage) : nullptr) {
    hook_.self = this;
  }
  // Moves only before first use (a used writer is on its fiber's hook list).
  link_writer(link_writer&& o) noexcept
      : ch_(std::move(o.ch_)), pol_(o.pol_), b_(o.b_), writers_(o.writers_), ctr_(o.ctr_) {
    hook_.self = this;
  }
  link_writer& operator=(link_writer&&) = delete;
  ~link_writer() {
    if (hooks_) remove_park_hook(*hooks_, hook_);
  }

  template <class V>
  [[gnu::always_inline]] bool operator()(V&& v, auto...) {
    if (fill_ == 0) [[unlikely]]
      begin_batch();
    if (lim_ == 1) {
      cur_.single.emplace(std::forward<V>(v));
      fill_ = 1;
      return flush_full();
    }
    if constexpr (direct) {
      cur_.items[fill_] = std::forward<V>(v);  // sized to lim_ by begin_batch
    } else {
      cur_.items.push_back(std::forward<V>(v));  // never reallocates: reserved to lim_
    }
    if (++fill_ < lim_) [[likely]]
      return true;
    return flush_full();
  }
  // flush() sends the partial batch; false once the reader has stopped.
  bool flush() {
    if (fill_ == 0 || !open_) return open_;
    measured_ = false;  // a partial batch says nothing of the fill time
    return send_batch();
  }
  void flush_hint() { flush(); }
  void finish() {
    flush();
    if (pol_.ctx) pol_.ctx->stage_at(pol_.stage, [&](stage_stats& s) { s.batch_size = b_; });
    if (!writers_ || writers_->fetch_sub(1) == 1) ch_.core()->try_close();
  }
  // close() ends the link without sending what is left (a run that failed or stopped).
  void close() noexcept { ch_.core()->try_close(); }
  std::size_t batch_size() const noexcept { return b_; }
  // set_segment(): the fiber's segment, told of the time spent waiting for room.
  void set_segment(segment* seg) noexcept { seg_ = seg; }
  // leave_fiber(): from the fiber that ran the writer, which hands it to another (a split
  // upstream of it): off this fiber's hook list; the next fiber joins at its first batch.
  void leave_fiber() noexcept {
    if (hooks_) remove_park_hook(*hooks_, hook_);
    hooks_ = nullptr;
    seg_ = nullptr;
  }

 private:
  struct hook_node : park_hook {
    link_writer* self = nullptr;
  };

  [[gnu::noinline]] void begin_batch() {
    if (!hooks_) [[unlikely]] {
      hooks_ = current_park_hooks();
      if (hooks_) {
        hook_.run = [](park_hook* h) noexcept { static_cast<hook_node*>(h)->self->try_flush(); };
        add_park_hook(*hooks_, hook_);
      }
    }
    if (hooks_) hooks_->armed = true;
    if (!pol_.pinned) {
      // Measure this batch while the size may move, and one batch in eight at the top.
      const bool measure = b_ < pol_.max || (++batches_ & 7) == 0;
      if (measure || measured_) {
        const std::int64_t now = now_ns();
        // One item a batch: the production time of the last item is from the end of its
        // send to now; otherwise it was measured from the batch's start to its flush.
        if (measured_ && last_lim_ == 1) adapt(now - t_end_);
        measured_ = measure;
        t_start_ = now;
      }
    }
    lim_ = b_;
    if (pol_.reader_limit) {
      lim_ = std::min(lim_,
                      std::max<std::size_t>(1, pol_.reader_limit->load(std::memory_order_relaxed)));
    }
    if (lim_ > 1) {
      if constexpr (direct) {
        cur_.items.resize(lim_);
      } else if (cur_.items.capacity() < lim_) {
        cur_.items.reserve(lim_);
      }
    }
  }
  // trim(): the batch holds its fill_ items alone (a direct batch is sized to lim_).
  void trim() noexcept {
    if constexpr (direct) {
      if (!cur_.single) cur_.items.resize(fill_);
    }
  }

  // adapt(p): p ns to produce one item: keep a batch's fill time, p * (b - 1), under the bound.
  void adapt(std::int64_t p) noexcept {
    if (p < 1) p = 1;
    const auto b = static_cast<std::int64_t>(b_);
    if (p * (b - 1) > batch_fill_bound_ns) {
      b_ = static_cast<std::size_t>(fill_bound_batch(p));
    } else if (p * (2 * b - 1) <= batch_fill_bound_ns / 4 && b_ < pol_.max) {
      b_ = std::min(pol_.max, 2 * b_);
    }
  }

  [[gnu::noinline]] bool flush_full() {
    if (!open_) {
      drop();
      return false;
    }
    if (measured_) {
      if (lim_ > 1) adapt((now_ns() - t_start_) / static_cast<std::int64_t>(lim_ - 1));
      last_lim_ = lim_;
    }
    const bool more = send_batch();
    if (measured_ && last_lim_ == 1) t_end_ = now_ns();
    return more;
  }

  bool send_batch() {
    busy_ = true;  // the park hook leaves the batch alone while it is being sent
    trim();
    cur_.seq = seq_++;
    const std::size_t n = cur_.size();
    try {
      if (!seg_) {
        ch_.send(std::move(cur_));
      } else if (!ch_.try_send(cur_)) {
        // Held back by the reader: time that the fiber's segment must not count as work.
        const std::int64_t t0 = now_ns();
        ch_.send(std::move(cur_));
        segment_waited(seg_, now_ns() - t0);
      }
      if (ctr_) bump(ctr_->sent, n);
    } catch (const closed_channel&) {
      open_ = false;  // downstream stopped (take, cancel): stop producing
    }
    busy_ = false;
    drop();
    return open_;
  }
  void drop() {
    cur_ = batch<T>{};
    fill_ = 0;
  }

  // try_flush(): the park hook. Never parks.
  void try_flush() noexcept {
    if (busy_ || fill_ == 0 || !open_) return;
    cur_.seq = seq_;
    trim();
    const std::size_t n = cur_.size();
    bool sent = false;
    try {
      sent = ch_.try_send(cur_);  // full: the batch stays (see the class comment)
    } catch (const closed_channel&) {
      open_ = false;
    } catch (...) {
      // an item's move threw: the batch stays, and goes with the next send
    }
    if (!sent) {
      if constexpr (direct) {
        if (!cur_.single) cur_.items.resize(lim_);  // its room again (no allocation)
      }
      return;
    }
    if (ctr_) bump(ctr_->sent, n);
    ++seq_;
    measured_ = false;
    cur_ = batch<T>{};
    fill_ = 0;
  }

  // direct: an item is stored into a batch sized ahead, a plain store (push_back's growth path,
  // never taken here, kept the append out of line in long chains); trimmed before it goes.
  static constexpr bool direct = std::is_trivial_v<T>;

  link_chan<T> ch_;
  batch_policy pol_;
  std::size_t b_;        // the batch size the writer aims at
  std::size_t lim_ = 1;  // this batch's size
  std::size_t fill_ = 0;
  std::atomic<int>* writers_;  // shared by several writers (merge): the last one closes
  batch<T> cur_;
  std::uint64_t seq_ = 0;
  bool open_ = true;
  bool busy_ = false;
  bool measured_ = false;  // the current batch's times are being taken
  std::size_t last_lim_ = 0;
  std::uint32_t batches_ = 0;
  std::int64_t t_start_ = 0, t_end_ = 0;
  park_hooks* hooks_ = nullptr;
  segment* seg_ = nullptr;
  stage_counters* ctr_;  // the stage before the link: what was sent on it
  hook_node hook_;
};

// ---- segments: a fiber's fused chain, and where it may split ---------------------------------

class segment;

// split_base: a boundary between two fused stages (or a source and its first stage) that
// may become a link. The untyped part: what the segment measures and decides with.
class split_base {
 public:
  enum class mode : std::uint8_t { fused, probing, split };

  split_base(segment& seg, int index, std::string name_after)
      : seg_(&seg), index_(index), name_after_(std::move(name_after)) {}
  split_base(const split_base&) = delete;
  split_base& operator=(const split_base&) = delete;
  virtual ~split_base() = default;

  int index() const noexcept { return index_; }
  const std::string& name_after() const noexcept { return name_after_; }
  // The largest stack the stages after it ask for: the fiber a split here starts has it
  // (and at least the run's).
  std::size_t stack_after = 0;

 protected:
  friend class segment;
  // split(): make the link and start the fiber that runs everything after this boundary
  // (`after`: its boundaries still fused; `moved`: those already split, with their writers).
  // `cuts`: boundaries among `after` where the new fiber splits again at once; `fiber`:
  // the new fiber's name (the stages it runs).
  virtual void split(std::vector<split_base*> after, std::vector<split_base*> moved,
                     std::vector<split_base*> cuts, std::string fiber) = 0;
  // release(): let go of the link's writer (from the fiber that wrote to it).
  virtual void release() noexcept = 0;
  // leave_fiber()/join(): this boundary's link writer moves to the fiber of a split
  // upstream of it (leave_fiber from the old fiber, join from the new one).
  virtual void leave_fiber() noexcept = 0;
  virtual void join(segment* seg) noexcept = 0;

  // start_child(): the untyped half of split(): starts the fiber (named `fiber`, with a
  // stack of `stack` bytes) that makes a segment of `after` and `moved`, splits it at
  // `cuts`, then calls drive(this, that segment) to read the link into the rest of the
  // chain. A boundary that started a child waits for it before it goes (children_).
  struct child_job {
    std::vector<split_base*> after, moved, cuts;
    std::string fiber;
    std::size_t stack;
    int first = -1, last = -1;  // the stages the new fiber runs (for metrics; -1: none)
  };
  void start_child(pipe_ctx& ctx, child_job job, void (*drive)(split_base*, segment&));

  // probe_enter()/probe_leave(): around one item sent down the rest of the chain while
  // probing: sample the time before it and after it, less the segment's waits.
  struct probe_mark {
    segment* seg;
    std::int64_t t0, w0;
  };
  probe_mark probe_enter() noexcept;
  void probe_leave(probe_mark m) noexcept;

  // A probe's samples, per item that reaches the boundary: the time before it (since the
  // previous item left it: the rest of the fiber upstream) and after it (the rest of the
  // chain), less any time the fiber spent waiting meanwhile (for input or for room).
  static constexpr int max_samples = 16;
  void reset_samples() noexcept {
    nup_ = 0;
    ndown_ = 0;
    t_end_ = 0;
  }
  void sample_up(std::int64_t ns) noexcept {
    if (nup_ < max_samples) ups_[nup_++] = ns;
  }
  void sample_down(std::int64_t ns) noexcept {
    if (ndown_ < max_samples) downs_[ndown_++] = ns;
  }
  // sampled(): the probe has all the samples it can hold here. The items after that, up
  // to the end of the driver's chunk, pass untimed: their clock reads would be cost, not
  // measurement (a chunk holds up to 1024 items, a probe 16).
  bool sampled() const noexcept { return nup_ >= max_samples && ndown_ >= max_samples; }
  // estimate(): robust to the samples that a preemption of the worker inflated: the lower
  // median of a full probe; the least of a short one (every sample must be inflated to
  // mislead it: a short probe follows a window that looked slow, maybe from a preemption).
  static std::int64_t estimate(std::int64_t* v, int n) noexcept;

  mode mode_ = mode::fused;
  segment* seg_;
  int index_;  // the stage before the boundary (0: the source)
  std::string name_after_;
  std::int64_t ups_[max_samples] = {};
  std::int64_t downs_[max_samples] = {};
  int nup_ = 0;
  int ndown_ = 0;
  std::int64_t t_end_ = 0;  // when the last probed item left the boundary
  std::int64_t w_end_ = 0;  // the segment's waiting total then
  wait_group children_;     // the fiber start_child() started, while it runs
  bool started_ = false;
  // The user's layout puts a link here (`.fuse = false`, stage_boundary, fusion off): the
  // segment splits here before its first item (segment::cut_pinned).
  bool pinned_ = false;
};

// clock_cost_ns(): what one clock read costs here (subtracted from probe samples).
std::int64_t clock_cost_ns() noexcept;

// segment: one fiber's fused chain of stages. Its driver (the source, or the link reader)
// calls tick() after every chunk or batch; at the end of each window (about window_ns of
// work) the segment looks at its work per item and, when a split could pay, measures its
// boundaries and splits at the best one. Owner fiber only.
class segment {
 public:
  // may_split: false for a chain that ends in a link writer (a cut, par_map's input, a
  // merge, a broadcast): the writer belongs to the fiber that runs it (its park hook, its
  // waits), so it must not move to a new fiber mid-run. Such a chain still measures itself.
  segment(pipe_ctx& ctx, std::string fiber_name, std::vector<split_base*> points = {},
          bool may_split = true, std::vector<split_base*> split = {});
  segment(const segment&) = delete;
  segment& operator=(const segment&) = delete;
  // The boundaries it owns may outlive it (they live in the frames of the fiber that
  // started the run; this segment may be a later fiber's): they forget it, and the links
  // it split into are let go here, by the fiber whose hook list holds their writers.
  ~segment();

  pipe_ctx& ctx() const noexcept { return *ctx_; }
  const std::string& fiber_name() const noexcept { return fiber_name_; }

  // add(): a boundary of this fiber's chain (built from the terminal back to the source).
  void add(split_base& p);
  // forget(): p is going away.
  void forget(split_base& p) noexcept;

  // quiet(): no boundary of this fiber is being probed or has split: every one passes
  // items straight on, so the driver may take fused_path until its next tick.
  bool quiet() const noexcept { return !probing_ && split_.empty(); }
  // check_every(): how many items a link reader's loop runs between two looks at the
  // slice flag (see check_each_ns).
  std::size_t check_every() const noexcept { return check_every_; }

  // waited(): the chain spent `ns` waiting for input, not working; waited_out(): waiting
  // for room downstream.
  void waited(std::int64_t ns) noexcept {
    waited_ += ns;
    waited_total_ += ns;
    wait_in_ += ns;
    if (counted_hooks_) count_parks_from_here();  // the parks so far were the driver's
  }
  void waited_out(std::int64_t ns) noexcept {
    waited_ += ns;
    waited_total_ += ns;
    wait_out_ += ns;
  }

  // set_stages(): this fiber runs stages first..last (numbered from the source, 0); its
  // time goes to their counters (first < 0: to none). first_stage()/last_stage(): them.
  void set_stages(int first, int last);
  int first_stage() const noexcept { return first_; }
  int last_stage() const noexcept { return last_; }
  // publish(): adds the time since the last publish to the stages' counters: its waits to
  // the first stage (input) and the last (output), its work to each stage by its measured
  // share (evenly until a probe has measured them).
  // `last`: the stages are about to leave this fiber (its end, a split): nothing is held.
  void publish(std::int64_t now, bool last = false) noexcept;
  // waited_total(): all the waiting so far (a probe takes what falls within its sample out).
  std::int64_t waited_total() const noexcept { return waited_total_; }

  // tick(): `items` more items entered the chain; `waited_ns` of the time since the last
  // tick was spent waiting for input (not work).
  // The window also ends when the fiber's slice is over (its items turned slow: the
  // watchdog's flag), so that it yields, and measures the new cost, without waiting for
  // the rest of a window counted in items at the old cost.
  void tick(std::size_t items, std::int64_t waited_ns = 0) {
    win_items_ += items;
    waited(waited_ns);
    budget_ -= static_cast<std::int64_t>(items);
    if (budget_ <= 0 || slice_over_->load(std::memory_order_relaxed)) [[unlikely]]
      end_window();
  }

 private:
  void end_window();

  // yield_slice(): let the worker's other fibers run (this fiber's partial batches go
  // first, as before a park); the time from here is this fiber's again.
  std::int64_t yield_slice();

  // decide(): every boundary has been timed over the last window's items; split at the
  // one whose lighter side is heaviest, if that side is worth a fiber (when every piece
  // is heavy, at every boundary that leaves heavy pieces on both sides).
  void decide(std::int64_t per_item);
  // measure(): a probe taken for the metrics only: learn each stage's share of the work.
  void measure(std::int64_t per_item);
  // learn_weights(): from a probe's time before (ups) and after (downs) each boundary, per
  // item, each stage's work per item (-1: the boundary saw no item).
  void learn_weights(const std::vector<std::int64_t>& ups, const std::vector<std::int64_t>& downs);

 public:
  // cut(): split at once at each of `cuts` (in chain order), decided by the probe of the
  // fiber this one split from, or pinned by the user (from this fiber, before its first item).
  void cut(std::vector<split_base*> cuts);
  // cut_pinned(): split at every pinned boundary of this fiber's chain; each driver calls it
  // before its first item. So a pinned layout is the fused chain split where the user said,
  // and a program instantiates one chain per pipeline, not one per section between links.
  void cut_pinned();
  // split_early(): p has timed the way of this fiber's first item to it; if that was very
  // slow, p splits at once, and the item goes on down the new link (true).
  bool split_early(split_base& p);

 private:
  // probe_first(): p is a boundary of this fiber's chain: time its first item there.
  void probe_first(split_base& p) noexcept;
  // split_at(): everything after `best` goes to a new fiber (with its boundaries), which
  // splits again at `cuts`.
  void split_at(split_base* best, std::vector<split_base*> cuts);

  pipe_ctx* ctx_;
  std::string fiber_name_;
  std::vector<split_base*> points_;  // in chain order
  std::vector<split_base*> split_;   // boundaries of this fiber that became links
  std::int64_t threshold_;
  std::int64_t win_start_;
  std::int64_t slice_start_;
  std::int64_t waited_ = 0;
  std::int64_t waited_total_ = 0;
  std::size_t win_items_ = 0;
  std::size_t check_every_ = slice_check;
  std::int64_t budget_ = 1;        // the first window is one item
  std::atomic<bool>* slice_over_;  // the fiber's (fiber_slice_flag())
  std::int64_t last_decided_ = 0;
  int windows_ = 0;
  std::int64_t next_measure_ = 0;  // when the metrics want their next probe
  int want_ = 0;
  bool probing_ = false;
  bool measure_only_ = false;  // the probe under way is for the metrics only
  bool first_probe_ = false;   // the probe under way is the first item's
  // While the first item is probed, a park hook notes whether the fiber parked since the
  // driver handed the item on (split_early: a park in the stages, not in the driver, says
  // the time before a boundary was a wait). A hook may not arm its list: it is armed again
  // where the driver's part ends (count_parks_from_here).
  struct park_note : park_hook {
    segment* self;
  };
  park_note park_note_{};
  park_hooks* counted_hooks_ = nullptr;
  bool parked_ = false;
  void count_parks_from_here() noexcept {
    parked_ = false;
    counted_hooks_->armed = true;
  }
  void stop_counting_parks() noexcept;
  bool may_split_;
  // Metrics: the stages this fiber runs, its waits since the last publish, and each stage's
  // measured work per item (its share of the fiber's work).
  int first_ = -1, last_ = -1;
  std::int64_t pub_start_ = 0;
  std::int64_t wait_in_ = 0, wait_out_ = 0;
  std::int64_t held_ = 0;  // work not yet shared out: no probe has measured the stages yet
  std::vector<std::int64_t> weight_;
};

inline void segment_waited(segment* seg, std::int64_t ns) noexcept { seg->waited_out(ns); }

// link_driver: drives a sink with the items of a link, in arrival order.
template <class T>
struct link_driver {
  link_chan<T> ch;
  stage_counters* ctr = nullptr;  // the stage after the link: what it took from it
  template <class Sink>
  void operator()(Sink& sink, segment* seg = nullptr) {
    if (seg) seg->cut_pinned();
    std::atomic<bool>* slice_over = fiber_slice_flag();
    for (;;) {
      std::optional<batch<T>> b = ch.try_recv();
      std::int64_t waited = 0;
      if (!b) {
        sink.flush_hint();  // about to wait: let what we produced go downstream
        constexpr bool ticks = requires { sink.tick(std::size_t{}); };
        const bool timed = seg || ticks;
        const std::int64_t t0 = timed ? now_ns() : 0;
        b = ch.recv();
        if (timed) waited = now_ns() - t0;
        if (!b) break;
      }
      // A merge's chain has no segment here: its first boundary takes the reports.
      constexpr bool head = requires { sink.tick(std::size_t{}); };
      if (waited) {
        if (seg) {
          seg->waited(waited);
        } else if constexpr (head) {
          sink.waited(waited);
        }
      }
      const std::size_t n = b->size();
      if (ctr) bump(ctr->recvd, n);
      // The batch goes down in one piece, or in several when the slice ends in it: the
      // path is chosen again for each piece, as the tick between two may have started a
      // probe or split the chain.
      for (std::size_t k = 0; k < n;) {
        const std::size_t from = k;
        std::size_t every = slice_check;
        if (seg) {
          every = seg->check_every();
        } else if constexpr (head) {
          every = sink.check_every();
        }
        // With a segment, the sink is the chain's first stage (every sink takes a path).
        bool ok;
        if constexpr (inert_v<Sink>) {
          ok = b->each_from(
              k, [&](T&& v) { return sink(std::move(v), fused_path{}); }, *slice_over, every);
        } else if (seg ? seg->quiet() : chain_is_quiet(sink)) {
          ok = b->each_from(
              k, [&](T&& v) { return sink(std::move(v), fused_path{}); }, *slice_over, every);
        } else {
          ok = b->each_from(
              k, [&](T&& v) { return sink(std::move(v)); }, *slice_over, every);
        }
        if (!ok) {
          ch.core()->try_close();  // stop upstream promptly
          sink.finish();
          return;
        }
        if (seg) {
          seg->tick(k - from);
        } else if constexpr (head) {
          sink.tick(k - from);
        } else {
          slice_over->store(false, std::memory_order_relaxed);  // no tick: nothing yields
        }
      }
    }
    sink.finish();
  }
  template <class Sink>
  void operator()(Sink& sink, segment& seg) {
    (*this)(sink, &seg);
  }
};

// reorder_window: an ordered par_map's bound, counted in items. A worker takes room for its
// largest unit before it takes a unit from its input, and gives back at once what the unit
// did not use; the reorder driver gives an item's room back as it delivers the item. So the
// items between the workers' input and the sink never outnumber the window, however uneven
// the work (without a bound, one slow item let the others pile up behind it), and while one
// worker is on a slow item the others go on through the window's worth of items: counted
// in units, as it once was, a window of units of one item held the other workers back
// after a few items. The driver closes the window when it ends, so that a worker waiting
// for room is never left waiting (a cancelled run ends the driver: its link is closed).
class reorder_window {
 public:
  explicit reorder_window(std::size_t items) noexcept : free_(items) {}
  reorder_window(const reorder_window&) = delete;
  reorder_window& operator=(const reorder_window&) = delete;

  // try_take(k): takes room for k items if there is; false if not, or once closed.
  bool try_take(std::size_t k) noexcept {
    std::size_t f = free_.load(std::memory_order_relaxed);
    while (f >= k) {
      if (free_.compare_exchange_weak(f, f - k, std::memory_order_acquire,
                                      std::memory_order_relaxed)) {
        return !closed_.load(std::memory_order_relaxed);
      }
    }
    return false;
  }
  // take(k): waits for room for k items; false once closed.
  bool take(std::size_t k) { return try_take(k) || take_slow(k); }
  // give(k): k items' room is free again.
  void give(std::size_t k) {
    free_.fetch_add(k, std::memory_order_seq_cst);
    if (waiters_.load(std::memory_order_seq_cst) != 0) wake();
  }
  void close();

 private:
  bool take_slow(std::size_t k);
  void wake();

  std::atomic<std::size_t> free_;
  std::atomic<int> waiters_{0};  // in take_slow: give() must wake them
  std::atomic<bool> closed_{false};
  rill::mutex mu_;  // a fiber waiting for room parks
  rill::condition_variable room_;
};

// window_hold: the reorder driver's hold on its window, which closes when the driver goes
// (its run ended, or failed before the driver's fiber could start), so that no worker waits
// for room forever. Move-only: a copy that went would close it early.
struct window_hold {
  std::shared_ptr<reorder_window> w;
  explicit window_hold(std::shared_ptr<reorder_window> p) noexcept : w(std::move(p)) {}
  window_hold(window_hold&&) noexcept = default;
  window_hold& operator=(window_hold&&) = delete;
  ~window_hold() {
    if (w) w->close();
  }
};

// reorder_driver: like link_driver, but delivers batches in `seq` order (ordered par_map),
// giving their items' room in the window back as it does.
template <class T>
struct reorder_driver {
  link_chan<T> ch;
  window_hold room;
  stage_counters* ctr = nullptr;  // the stage after par_map: what it took from it
  template <class Sink>
  void operator()(Sink& sink, segment& seg) {
    seg.cut_pinned();
    std::deque<std::optional<batch<T>>> window;  // window[i] holds seq next + i
    std::uint64_t next = 0;
    std::atomic<bool>* slice_over = fiber_slice_flag();
    // deliver(b): b's items down the chain, reported in pieces (the tick may yield: a slow
    // item held back many finished ones); false once the chain stopped.
    auto deliver = [&](batch<T>& b) {
      const std::size_t n = b.size();
      if (ctr) bump(ctr->recvd, n);
      for (std::size_t k = 0; k < n;) {
        const std::size_t from = k;
        if (!b.each_from(
                k, [&](T&& v) { return sink(std::move(v)); }, *slice_over, seg.check_every()))
          return false;
        seg.tick(k - from);
      }
      return true;
    };
    for (;;) {
      std::optional<batch<T>> b = ch.try_recv();
      std::int64_t waited = 0;
      if (!b) {
        sink.flush_hint();
        const std::int64_t t0 = now_ns();
        b = ch.recv();
        waited = now_ns() - t0;
        if (!b) break;
      }
      if (waited) seg.waited(waited);
      const std::uint64_t off = b->seq - next;
      if (off >= window.size()) window.resize(off + 1);
      window[off] = std::move(b);
      while (!window.empty() && window.front()) {
        const std::size_t k = window.front()->size();
        if (!deliver(*window.front())) {
          ch.core()->try_close();
          sink.finish();
          room.w->close();  // workers waiting for room stop
          return;
        }
        window.pop_front();
        ++next;
        room.w->give(k);
      }
    }
    sink.finish();
  }
};

// split_link<T>: the typed half of a boundary taking items of type T: the link it writes
// to once it has split (one instantiation per item type, not per chain).
template <class T>
class split_link : public split_base {
 protected:
  split_link(segment& seg, int index, std::string name_after, std::size_t buffer,
             std::size_t batch_size)
      : split_base(seg, index, std::move(name_after)), buffer_(buffer), batch_size_(batch_size) {}

  // drive_down(): in the fiber split() starts, read the link into the rest of the chain.
  virtual void drive_down(segment& child) = 0;

  void release() noexcept override {
    if (writer_) {
      writer_->close();
      writer_.reset();
    }
  }
  void leave_fiber() noexcept override {
    if (writer_) writer_->leave_fiber();
  }
  void join(segment* seg) noexcept override {
    seg_ = seg;
    if (writer_) writer_->set_segment(seg);
  }

  void split(std::vector<split_base*> after, std::vector<split_base*> moved,
             std::vector<split_base*> cuts, std::string fiber) override {
    pipe_ctx& ctx = seg_->ctx();
    const link_shape shape =
        batch_size_ ? pinned_shape(buffer_, batch_size_) : shape_for(buffer_, batch_hint());
    reader_ = ctx.template link<link_chan<T>>(shape.capacity);
    if (stage_counters* c = ctx.counter(index_))
      c->capacity.store(buffer_, std::memory_order_relaxed);
    batch_policy pol{shape.batch, batch_size_ != 0 || !ctx.adaptive, nullptr, &ctx, index_};
    writer_.emplace(reader_, pol);
    writer_->set_segment(seg_);
    try {
      start_child(
          ctx,
          {std::move(after), std::move(moved), std::move(cuts), std::move(fiber), this->stack_after,
           seg_->first_stage() < 0 ? -1 : index_ + 1, seg_->last_stage()},
          [](split_base* self, segment& child) {
            static_cast<split_link*>(self)->drive_down(child);
          });
    } catch (...) {
      writer_.reset();
      throw;
    }
    mode_ = mode::split;
  }

  // batch_hint(): the largest batch the writer will want, from the probe's time before
  // this boundary per item (the writer keeps a batch's fill time under
  // batch_fill_bound_ns); 0: not measured. The link is shaped for it: batches of slow
  // items are small, and a link shaped for the default batches would hold one of them (a
  // near rendezvous that parks and wakes both sides at every batch) where it can hold
  // `buffer` items.
  std::size_t batch_hint() noexcept {
    if (nup_ == 0) return 0;
    const std::int64_t per_item = estimate(ups_, nup_);
    if (per_item <= 0) return 0;
    return static_cast<std::size_t>(std::min<std::int64_t>(fill_bound_batch(per_item), 64));
  }

  // write(): an item down the link, once split: one function per item type, not per chain.
  template <class V>
  [[gnu::noinline]] bool write(V&& v) {
    return (*writer_)(std::forward<V>(v));
  }

  std::size_t buffer_;
  std::size_t batch_size_;
  std::optional<link_writer<T>> writer_;
  link_chan<T> reader_{nullptr};  // the link's reading end, for the fiber split() starts
};

// plain_point<Down>: a boundary in a chain that ends in a link writer (inert_v): it passes
// items on, and the source's reports (when it is the chain's first) to the segment.
template <class Down>
class plain_point {
 public:
  static constexpr bool never_stops = never_stops_v<Down>;
  static constexpr bool inert = true;
  plain_point(Down& down, segment& seg) noexcept : down_(&down), seg_(&seg) {}
  template <class V, class M = dynamic_path>
  [[gnu::always_inline]] bool operator()(V&& v, M m = {}) {
    return (*down_)(std::forward<V>(v), m);
  }
  bool quiet() const noexcept { return true; }
  std::size_t check_every() const noexcept { return seg_->check_every(); }
  void flush_hint() { down_->flush_hint(); }
  void finish() { down_->finish(); }
  void tick(std::size_t items) { seg_->tick(items); }
  void waited(std::int64_t ns) noexcept { seg_->waited(ns); }

 private:
  Down* down_;
  segment* seg_;
};

// split_point<T, Down>: a boundary in a fused chain, in front of `down` (the rest of the
// chain), taking items of type T. Fused, it passes each item on (one predictable branch);
// probing, it times the rest of the chain; split, it writes to a link that a new fiber
// reads to run `down` (and everything after it). The new fiber runs the very sink objects
// this one ran, so the state of stateful stages (take's count, batch's partial group)
// carries over; they live in this fiber's frames, so whoever leaves a frame holding a
// split point first waits for the fiber it started.
template <class T, class Down>
class split_point final : public split_link<T> {
  using base = split_link<T>;
  using mode = split_base::mode;

 public:
  static constexpr bool never_stops = never_stops_v<Down>;

  // candidate: the pipeline may split here (false: the user pinned this boundary fused;
  // the point then only passes ticks on). pinned: the user's layout splits here.
  split_point(Down& down, segment& seg, int index, std::string name_after, std::size_t buffer,
              std::size_t batch_size, bool candidate = true, bool pinned = false)
      : base(seg, index, std::move(name_after), buffer, batch_size), down_(&down), tick_seg_(&seg) {
    if (candidate || pinned) {
      this->pinned_ = pinned;
      seg.add(*this);
    } else {
      this->seg_ = nullptr;
    }
  }
  ~split_point() override {
    this->release();  // a run that unwinds: the new fiber sees the end
    if (this->started_) {
      // The rest of the chain finishing is a wait for this fiber's stages, not their work.
      const std::int64_t t0 = this->seg_ ? now_ns() : 0;
      this->children_.wait();
      if (this->seg_) this->seg_->waited_out(now_ns() - t0);
    }
    if (this->seg_) this->seg_->forget(*this);
  }

  template <class V, class M = dynamic_path>
  [[gnu::always_inline]] bool operator()(V&& v, M m = {}) {
    if constexpr (M::fused) {
      return (*down_)(std::forward<V>(v), m);
    } else {
      if (this->mode_ == mode::fused) [[likely]]
        return (*down_)(std::forward<V>(v));
      if (this->mode_ == mode::split) return to_link(std::forward<V>(v));
      return slow(std::forward<V>(v));
    }
  }
  // quiet(): no boundary of this fiber's chain is measured or split now (the driver may
  // send its next chunk down fused_path).
  bool quiet() const noexcept { return tick_seg_->quiet(); }
  std::size_t check_every() const noexcept { return tick_seg_->check_every(); }
  void flush_hint() {
    if (this->mode_ == mode::split) {
      this->writer_->flush_hint();
    } else {
      down_->flush_hint();
    }
  }
  void finish() {
    if (this->mode_ == mode::split) {
      this->writer_->finish();
      this->writer_.reset();  // off this fiber's hook list before the fiber goes on
    } else {
      down_->finish();
    }
  }
  // tick(): the source's report, when this is the first boundary of the chain.
  void tick(std::size_t items) { tick_seg_->tick(items); }
  void waited(std::int64_t ns) noexcept { tick_seg_->waited(ns); }

 private:
  // to_link(): split, the item goes down the link.
  template <class V>
  bool to_link(V&& v) {
    const bool more = this->write(std::forward<V>(v));
    return never_stops || more;  // a never-stopping chain stops on the run's stop flag
  }
  // slow(): probing (only its segment sets that, so seg_ is set): time both sides.
  template <class V>
  [[gnu::noinline]] bool slow(V&& v) {
    if (this->sampled()) return (*down_)(std::forward<V>(v));
    const typename base::probe_mark m = this->probe_enter();
    if (m.seg->split_early(*this)) [[unlikely]]
      return to_link(std::forward<V>(v));  // split now: the item goes down the link
    const bool more = (*down_)(std::forward<V>(v));
    this->probe_leave(m);
    return more;
  }

  void drive_down(segment& child) override {
    link_driver<T>{this->reader_, child.ctx().counter(this->index_ + 1)}(*down_, child);
  }

  Down* down_;
  segment* tick_seg_;  // the head's segment (the first boundary stays in its fiber)
};

}  // namespace detail
}  // namespace rill
