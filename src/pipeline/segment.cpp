// src/pipeline/segment.cpp: what a fused chain's segment decides while a run goes (when
// and where it splits), out of line: the pipeline's templates call it, it needs no type
// of theirs, and compiling it once keeps it out of every program that composes a pipeline.
#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "rill/pipeline/links.hpp"

namespace rill {
namespace detail {

std::int64_t split_base::estimate(std::int64_t* v, int n) noexcept {
  std::sort(v, v + n);
  return n >= min_probe_samples ? v[(n - 1) / 2] : v[0];
}

void split_base::start_child(pipe_ctx& ctx, child_job job, void (*drive)(split_base*, segment&)) {
  children_.add(1);
  started_ = true;
  const std::size_t stack = job.stack;
  std::string fiber = job.fiber;
  try {
    ctx.spawn(
        std::move(fiber),
        [this, &ctx, job = std::move(job), drive]() mutable {
          struct leave {
            wait_group* wg;
            ~leave() { wg->done(); }
          } guard{&children_};
          // Not seg_: the segment that split here may be gone by the time this runs.
          segment child(ctx, job.fiber, std::move(job.after), true, std::move(job.moved));
          child.set_stages(job.first, job.last);
          if (!job.cuts.empty()) child.cut(std::move(job.cuts));
          drive(this, child);
        },
        /*record=*/false, stack);
  } catch (...) {
    children_.done();
    throw;
  }
}

split_base::probe_mark split_base::probe_enter() noexcept {
  segment* seg = seg_;
  const std::int64_t w0 = seg->waited_total();
  const std::int64_t t0 = now_ns();
  if (t_end_ != 0) sample_up((t0 - t_end_) - (w0 - w_end_));
  return {seg, t0, w0};
}

void split_base::probe_leave(probe_mark m) noexcept {
  const std::int64_t t1 = now_ns();
  const std::int64_t w1 = m.seg->waited_total();
  sample_down((t1 - m.t0) - (w1 - m.w0));
  t_end_ = t1;
  w_end_ = w1;
}

std::int64_t clock_cost_ns() noexcept {
  static const std::int64_t cost = [] {
    const std::int64_t t0 = now_ns();
    std::int64_t t = t0;
    for (int i = 0; i < 64; ++i) t = now_ns();
    return std::max<std::int64_t>(0, (t - t0) / 64);
  }();
  return cost;
}

segment::segment(pipe_ctx& ctx, std::string fiber_name, std::vector<split_base*> points,
                 bool may_split, std::vector<split_base*> split)
    : ctx_(&ctx),
      fiber_name_(std::move(fiber_name)),
      points_(std::move(points)),
      split_(std::move(split)),
      may_split_(may_split) {
  for (split_base* p : split_) p->join(this);
  threshold_ = ctx.workers > 1 ? split_min_ns_workers : split_min_ns_one;
  slice_over_ = fiber_slice_flag();
  win_start_ = now_ns();
  slice_start_ = win_start_;
  for (split_base* p : points_) {
    p->seg_ = this;
    if (!p->pinned_) probe_first(*p);
  }
}

// probe_first(): the first window (one item) is probed at p, so that very slow items can
// split after it (see end_window). A few clock reads, once.
void segment::probe_first(split_base& p) noexcept {
  if (windows_ != 0 || !ctx_->adaptive) return;
  if (!first_probe_ && (counted_hooks_ = current_park_hooks())) {
    park_note_.self = this;
    park_note_.run = [](park_hook* h) noexcept {
      static_cast<park_note*>(h)->self->parked_ = true;
    };
    add_park_hook(*counted_hooks_, park_note_);
    count_parks_from_here();
  }
  probing_ = first_probe_ = true;
  measure_only_ = false;
  p.mode_ = split_base::mode::probing;
  p.reset_samples();
  p.t_end_ = win_start_;
  p.w_end_ = waited_total_;
}

void segment::stop_counting_parks() noexcept {
  if (!counted_hooks_) return;
  remove_park_hook(*counted_hooks_, park_note_);
  counted_hooks_ = nullptr;
}

segment::~segment() {
  stop_counting_parks();
  if (first_ >= 0 && ctx_->counter(first_)) publish(now_ns(), /*last=*/true);
  for (split_base* p : points_) p->seg_ = nullptr;
  for (split_base* p : split_) {
    p->seg_ = nullptr;
    p->release();
  }
}

void segment::add(split_base& p) {
  if (!may_split_) {
    p.seg_ = nullptr;
    return;
  }
  points_.insert(std::find_if(points_.begin(), points_.end(),
                              [&](split_base* q) { return q->index() > p.index(); }),
                 &p);
  if (!p.pinned_) probe_first(p);
}

void segment::forget(split_base& p) noexcept {
  std::erase(points_, &p);
  std::erase(split_, &p);
}

void segment::end_window() {
  std::int64_t now = now_ns();
  const std::int64_t work = std::max<std::int64_t>(0, now - win_start_ - waited_);
  const std::int64_t per_item =
      work / static_cast<std::int64_t>(std::max<std::size_t>(1, win_items_));
  const bool metrics = first_ >= 0 && ctx_->counter(first_);
  if (metrics) publish(now);
  // (inline_run keeps its one schedule: it decides nothing from time.) A window with a
  // wait in it gave the worker away already: the slice starts again.
  if (waited_ != 0) slice_start_ = now;
  // The watchdog's flag: the worker has run this fiber for fiber_slice_ns without a
  // scheduling point.
  const bool slice_over = slice_over_->load(std::memory_order_relaxed) &&
                          slice_over_->exchange(false, std::memory_order_relaxed);
  if (ctx_->adaptive && (slice_over || now - slice_start_ >= slice_ns)) {
    const std::int64_t before = now;
    now = yield_slice();
    pub_start_ = now;  // the time other fibers had is not this one's work
    // Nor is it a probed item's: its samples take the segment's waits out. (A probe of
    // slow items lasts several slices: it must yield too.)
    waited_total_ += now - before;
  }
  // A link reader looks at the flag after every item when items are slow, and right after
  // a slice that ended in the middle of its batch: items that turned slow there would
  // otherwise run slice_check at a time until a window had measured them.
  check_every_ = slice_over || per_item >= check_each_ns ? 1 : slice_check;
  win_start_ = now;
  win_items_ = 0;
  waited_ = 0;
  ++windows_;
  const bool worth =
      per_item >= 2 * threshold_ && (last_decided_ == 0 || per_item >= 2 * last_decided_);
  // The metrics take a probe of their own now and then (at once, then every
  // measure_every_ns), to share the fiber's work among its stages; it decides nothing.
  const bool measure_due = metrics && (windows_ == 2 || (windows_ > 2 && now >= next_measure_));
  if (first_probe_) {
    // The first item was probed. Items this slow decide on it alone: each item that waits
    // for a longer probe runs fused, slow, and next to such an item a cold cache or a
    // preemption is noise (a split it misleads costs a link, little next to the item).
    // Faster items go on as if it had not been probed (their first item is cold).
    first_probe_ = false;
    stop_counting_parks();
    if (per_item < probe_ns_slowest) {
      probing_ = false;
      for (split_base* p : points_) p->mode_ = split_base::mode::fused;
    }
  }
  if (probing_) {
    if (measure_only_) {
      measure(per_item);
    } else {
      decide(per_item);
    }
  } else if ((windows_ > 1 || per_item >= probe_ns / 2) && !points_.empty() &&
             (worth || measure_due)) {
    // Worth a look. The first window, the fiber's first items, is left out unless they are
    // slow: a new fiber's first item pays for cold code and fresh stack pages, slow as it
    // may look, but next to a slow item that is noise, and each item that waits for a
    // second window runs fused (a probe that finds nothing costs a few clock reads).
    probing_ = true;
    measure_only_ = !worth;
    if (measure_only_) next_measure_ = now + measure_every_ns;
    const int least = per_item >= probe_ns_slowest ? min_probe_samples_slowest
                      : per_item >= probe_ns / 2   ? min_probe_samples_slow
                                                   : min_probe_samples;
    want_ = static_cast<int>(std::clamp<std::int64_t>(
        probe_ns / std::max<std::int64_t>(1, per_item), least, max_probe_samples));
    // The window ends when its last item has left the chain: the time from now to the next
    // item's arrival at a boundary is the first sample of the time before it.
    const std::int64_t waited = waited_total_;
    for (split_base* p : points_) {
      p->mode_ = split_base::mode::probing;
      p->reset_samples();
      p->t_end_ = now;
      p->w_end_ = waited;
    }
    budget_ = want_;
    return;
  }
  budget_ = std::clamp<std::int64_t>(window_ns / std::max<std::int64_t>(1, per_item), 1, 1 << 14);
}

// yield_slice(): let the worker's other fibers run (this fiber's partial batches go
// first, as before a park); the time from here is this fiber's again.
std::int64_t segment::yield_slice() {
  if (park_hooks* hooks = current_park_hooks(); hooks && hooks->armed) run_park_hooks(*hooks);
  this_fiber::yield();
  slice_start_ = now_ns();
  return slice_start_;
}

// decide(): every boundary has been timed over the last window's items; split at the
// one whose lighter side is heaviest, if that side is worth a fiber (when every piece
// is heavy, at every boundary that leaves heavy pieces on both sides).
void segment::decide(std::int64_t per_item) {
  probing_ = false;
  const std::int64_t clock2 = 2 * clock_cost_ns();
  const auto np = static_cast<std::int64_t>(points_.size());
  split_base* best = nullptr;
  std::int64_t best_min = 0;
  std::vector<std::int64_t> downs(points_.size(), -1), ups(points_.size(), -1);
  for (std::int64_t k = 0; k < np; ++k) {
    split_base* p = points_[static_cast<std::size_t>(k)];
    p->mode_ = split_base::mode::fused;
    if (p->ndown_ == 0 || p->nup_ == 0) continue;  // no item reached it
    // Each timed boundary adds two clock reads per item to the sides that contain it.
    const std::int64_t down = std::max<std::int64_t>(
        0, split_base::estimate(p->downs_, p->ndown_) - (np - 1 - k) * clock2);
    const std::int64_t up =
        std::max<std::int64_t>(0, split_base::estimate(p->ups_, p->nup_) - k * clock2);
    downs[static_cast<std::size_t>(k)] = down;
    ups[static_cast<std::size_t>(k)] = up;
    const std::int64_t m = std::min(up, down);
    ctx_->stage_at(p->index() + 1, [&](stage_stats& s) {
      s.decision = "fused: " + std::to_string(up) + " ns/item before it in its fiber, " +
                   std::to_string(down) + " from it on";
    });
    // A split must pay for a fiber and a link: the lighter side must be above the bar,
    // and at least a sixteenth of the fiber's work (else the gain is within the noise of
    // the measurement, and another fiber costs more than it gives).
    if (m > best_min && m >= threshold_ && m >= (up + down) / 16) {
      best_min = m;
      best = p;
    }
  }
  // What each stage after a boundary costs: the time after it, less the time after the
  // next boundary (the last: all of it).
  for (std::size_t k = 0; k < downs.size(); ++k) {
    if (downs[k] < 0) continue;
    const std::int64_t next = k + 1 < downs.size() && downs[k + 1] >= 0 ? downs[k + 1] : 0;
    ctx_->stage_at(points_[k]->index() + 1, [&](stage_stats& s) {
      s.cost_per_item = std::chrono::nanoseconds(std::max<std::int64_t>(0, downs[k] - next));
    });
  }
  learn_weights(ups, downs);
  last_decided_ = std::max<std::int64_t>(1, per_item);
  budget_ = std::clamp<std::int64_t>(window_ns / std::max<std::int64_t>(1, per_item), 1, 1 << 14);
  if (!best) return;
  std::vector<split_base*> cuts;
  if (best_min >= split_all_min_ns) {
    // Every piece heavy: cut wherever the piece before and the rest after stay heavy.
    std::int64_t prev = -1;  // the down time at the last cut (-1: none yet)
    for (std::size_t k = 0; k < downs.size(); ++k) {
      if (downs[k] < 0) continue;
      const std::int64_t piece = prev < 0 ? ups[k] : prev - downs[k];
      if (piece >= split_all_min_ns && downs[k] >= split_all_min_ns) {
        cuts.push_back(points_[k]);
        prev = downs[k];
      }
    }
  }
  if (cuts.empty()) cuts.push_back(best);
  split_base* first = cuts.front();
  cuts.erase(cuts.begin());
  ctx_->stage_at(first->index() + 1, [&](stage_stats& s) {
    s.fused = false;
    s.decision = "split into its own fiber: " + std::to_string(best_min) +
                 " ns/item on the lighter side, " + std::to_string(threshold_) + " needed (" +
                 std::to_string(ctx_->workers) + " workers)";
  });
  split_at(first, std::move(cuts));
}

void segment::set_stages(int first, int last) {
  first_ = first;
  last_ = last;
  weight_.assign(first >= 0 && last >= first ? static_cast<std::size_t>(last - first + 1) : 0, 0);
  pub_start_ = now_ns();
}

void segment::publish(std::int64_t now, bool last) noexcept {
  stage_counters* head = ctx_->counter(first_);
  if (!head || weight_.empty()) return;
  for (int k = first_; k <= last_; ++k) ran(*ctx_->counter(k), pub_start_, now);
  const std::int64_t waited = wait_in_ + wait_out_;
  std::int64_t work = std::max<std::int64_t>(0, now - pub_start_ - waited);
  if (wait_in_) bump(head->wait_in, wait_in_);
  if (wait_out_) bump(ctx_->counter(last_)->wait_out, wait_out_);
  pub_start_ = now;
  wait_in_ = 0;
  wait_out_ = 0;
  std::int64_t total = 0;
  for (std::int64_t w : weight_) total += w;
  // A chain that can measure its stages (it has boundaries) holds its work back until its
  // first probe has said how to share it; the last publish shares what is left evenly.
  if (total == 0 && !points_.empty() && !last) {
    held_ += work;
    return;
  }
  work += std::exchange(held_, 0);
  if (work == 0) return;
  const auto n = static_cast<std::int64_t>(weight_.size());
  std::int64_t given = 0;
  for (std::int64_t k = 0; k < n; ++k) {
    // Evenly while nothing is measured; the last stage takes what rounding left.
    std::int64_t part = total > 0 ? static_cast<std::int64_t>(static_cast<double>(work) *
                                                              static_cast<double>(weight_[k]) /
                                                              static_cast<double>(total))
                                  : work / n;
    if (k == n - 1) part = work - given;
    given += part;
    if (part) bump(ctx_->counter(first_ + static_cast<int>(k))->busy, part);
  }
}

void segment::learn_weights(const std::vector<std::int64_t>& ups,
                            const std::vector<std::int64_t>& downs) {
  if (weight_.empty() || points_.empty()) return;
  for (std::size_t k = 0; k < points_.size(); ++k) {
    if (ups[k] < 0 || downs[k] < 0) return;  // a boundary no item reached: keep the last
  }
  std::vector<std::int64_t> w(weight_.size(), 0);
  // spread(): a piece of the chain (stages a..b) took `ns` per item.
  auto spread = [&](int a, int b, std::int64_t ns) {
    a = std::max(a, first_);
    b = std::min(b, last_);
    if (b < a) return;
    const std::int64_t each = std::max<std::int64_t>(1, ns) * 16 / (b - a + 1);
    for (int s = a; s <= b; ++s)
      w[static_cast<std::size_t>(s - first_)] += std::max<std::int64_t>(1, each);
  };
  spread(first_, points_.front()->index(), ups.front());
  for (std::size_t k = 0; k < points_.size(); ++k) {
    const int from = points_[k]->index() + 1;
    const int to = k + 1 < points_.size() ? points_[k + 1]->index() : last_;
    const std::int64_t next = k + 1 < points_.size() ? downs[k + 1] : 0;
    spread(from, to, downs[k] - next);
  }
  weight_ = std::move(w);
}

void segment::measure(std::int64_t per_item) {
  probing_ = false;
  measure_only_ = false;
  const std::int64_t clock2 = 2 * clock_cost_ns();
  const auto np = static_cast<std::int64_t>(points_.size());
  std::vector<std::int64_t> downs(points_.size(), -1), ups(points_.size(), -1);
  for (std::int64_t k = 0; k < np; ++k) {
    split_base* p = points_[static_cast<std::size_t>(k)];
    p->mode_ = split_base::mode::fused;
    if (p->ndown_ == 0 || p->nup_ == 0) continue;
    downs[static_cast<std::size_t>(k)] = std::max<std::int64_t>(
        0, split_base::estimate(p->downs_, p->ndown_) - (np - 1 - k) * clock2);
    ups[static_cast<std::size_t>(k)] =
        std::max<std::int64_t>(0, split_base::estimate(p->ups_, p->nup_) - k * clock2);
  }
  learn_weights(ups, downs);
  budget_ = std::clamp<std::int64_t>(window_ns / std::max<std::int64_t>(1, per_item), 1, 1 << 14);
}

// cut(): split at once at each of `cuts` (in chain order), decided by the probe of the
// fiber this one split from, or pinned by the user (from this fiber, before its first item).
void segment::cut(std::vector<split_base*> cuts) {
  split_base* first = cuts.front();
  cuts.erase(cuts.begin());
  if (!first->pinned_) {
    ctx_->stage_at(first->index() + 1, [&](stage_stats& s) {
      s.fused = false;
      s.decision = "split into its own fiber with the stage before it: every piece at least " +
                   std::to_string(split_all_min_ns) + " ns/item";
    });
  }
  split_at(first, std::move(cuts));
}

void segment::cut_pinned() {
  std::vector<split_base*> cuts;
  for (split_base* p : points_) {
    if (p->pinned_) cuts.push_back(p);
  }
  if (!cuts.empty()) cut(std::move(cuts));
}

// split_early(): the stages before p in this fiber took probe_ns_slowest or more over the
// first item (less the fiber's waits for input), and parked meanwhile (a timer, I/O, a
// channel: the item waited on something): p splits before the item goes on, so that the
// next item need not wait for this one to leave the chain. The time after p is not known
// yet: a split it would not pay for costs a link hop, nothing next to such an item. Slow
// items that did not park (computation, a cold first call, a preemption of the worker: one
// sample cannot tell them apart) are left to end_window, which decides from the first item
// too when items are that slow, knowing both sides; so is the fiber's last boundary, where
// one stage follows (often a cheap sink), and the source's (its time is not a stage's).
bool segment::split_early(split_base& p) {
  if (!first_probe_ || p.nup_ != 1 || points_.back() == &p) return false;
  if (p.index() == 0) {
    if (counted_hooks_) count_parks_from_here();  // what the source did is not the stages'
    return false;
  }
  std::int64_t up = p.ups_[0];
  split_base* head = points_.front();
  if (head != &p && head->index() == 0 && head->nup_ == 1) up -= head->ups_[0];
  if (up < probe_ns_slowest || !parked_) return false;
  ctx_->stage_at(p.index() + 1, [&](stage_stats& s) {
    s.fused = false;
    s.decision = "split into its own fiber at the first item: " + std::to_string(up) +
                 " ns before it in its fiber";
  });
  split_at(&p, {});
  return true;
}

// split_at(): everything after `best` goes to a new fiber (with its boundaries), which
// splits again at `cuts`.
void segment::split_at(split_base* best, std::vector<split_base*> cuts) {
  // Everything that allocates comes first: once a boundary has left points_ or split_, no
  // throw may leave it pointing at this segment from nowhere (~segment would not clear it).
  auto it = std::find(points_.begin(), points_.end(), best);
  std::vector<split_base*> after(it + 1, points_.end());
  const std::size_t at = fiber_name_.find(best->name_after());
  std::string before = fiber_name_, gone = best->name_after();
  if (at != std::string::npos && at > 0) {
    before = fiber_name_.substr(0, at - 1);
    gone = fiber_name_.substr(at);
  }
  std::vector<split_base*> moved;
  moved.reserve(split_.size());
  split_.reserve(split_.size() + 1);
  // From here on nothing throws until split(), and its failure puts everything back (the
  // vectors keep their capacity).
  points_.erase(it, points_.end());
  ctx_->rename_fiber(fiber_name_, before, gone);
  fiber_name_.swap(before);             // `before` keeps the old name, for a failed split
  fiber_set_name(fiber_name_.c_str());  // a dump, an overflow or the watchdog names what is left
  // Boundaries of this fiber that split already, after `best`: their writers go too.
  for (auto q = split_.begin(); q != split_.end();) {
    if ((*q)->index() > best->index()) {
      (*q)->leave_fiber();
      moved.push_back(*q);
      q = split_.erase(q);
    } else {
      ++q;
    }
  }
  split_.push_back(best);
  const bool metrics = first_ >= 0 && ctx_->counter(first_);
  if (metrics)
    publish(now_ns(), /*last=*/true);  // what it held is shared out before the stages move
  try {
    best->split(after, moved, std::move(cuts), gone);
  } catch (...) {
    // No fiber started: the boundaries stay with this one (their segment is this one, and
    // they must be able to forget it when they go).
    split_.pop_back();
    for (split_base* q : moved) {
      q->join(this);
      split_.push_back(q);
    }
    points_.push_back(best);
    points_.insert(points_.end(), after.begin(), after.end());
    fiber_name_.swap(before);
    fiber_set_name(fiber_name_.c_str());
    throw;
  }
  if (first_ >= 0) set_stages(first_, best->index());  // the rest went to the new fiber
  last_decided_ = 0;                                   // what is left may split again
}

}  // namespace detail
}  // namespace rill
