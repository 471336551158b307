// src/pipeline/pipe_ctx.cpp: the untyped parts of a pipeline run's shared state (failure,
// cancellation, the links it holds, its stats), compiled once rather than in every program
// that composes a pipeline. None of it is on an item's path.
#include <exception>
#include <string>
#include <utility>
#include <vector>

#include "rill/pipeline/pipeline.hpp"

namespace rill {
namespace detail {

pipe_ctx::pipe_ctx() = default;
pipe_ctx::~pipe_ctx() = default;

void pipe_ctx::fail(std::exception_ptr e, const std::string& stage) {
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

void pipe_ctx::cancel() noexcept {
  if (stop.exchange(true)) return;
  // Closed under mu_, not from a copy of links_: a copy may fail to allocate, and a link
  // left open can block a stage forever. try_close() never parks.
  mu_.lock();
  for (const chan_handle& h : links_) h.get()->try_close();
  mu_.unlock();
  cancelled.core()->try_close();
}

void pipe_ctx::add_link(chan_core* core) {
  core->retain();
  chan_handle h(core);
  mu_.lock();
  try {
    links_.push_back(std::move(h));
  } catch (...) {
    mu_.unlock();
    throw;
  }
  mu_.unlock();
  if (stop.load()) core->try_close();
}

bool reorder_window::take_slow(std::size_t k) {
  std::unique_lock<rill::mutex> lk(mu_);
  // Counted before the look at free_ (both seq_cst, as give()'s add and load): either the
  // look sees give()'s room, or give() sees this waiter and wakes it under mu_.
  waiters_.fetch_add(1, std::memory_order_seq_cst);
  bool ok;
  for (;;) {
    if (closed_.load(std::memory_order_relaxed)) {
      ok = false;
      break;
    }
    std::size_t f = free_.load(std::memory_order_seq_cst);
    if (f >= k && free_.compare_exchange_strong(f, f - k, std::memory_order_seq_cst)) {
      ok = true;
      break;
    }
    if (f < k) room_.wait(lk);
  }
  waiters_.fetch_sub(1, std::memory_order_relaxed);
  return ok;
}

void reorder_window::wake() {
  std::lock_guard<rill::mutex> lk(mu_);
  room_.notify_all();
}

void reorder_window::close() {
  std::lock_guard<rill::mutex> lk(mu_);
  closed_.store(true, std::memory_order_relaxed);
  room_.notify_all();
}

void pipe_ctx::release_links() noexcept {
  std::vector<chan_handle> links;
  mu_.lock();
  links.swap(links_);
  mu_.unlock();
}

void pipe_ctx::stage_at(int index, void (*f)(stage_stats&, void*), void* arg) noexcept {
  mu_.lock();
  try {
    if (index >= 0) {
      const auto k = static_cast<std::size_t>(index);
      if (stats_.stages.size() <= k) stats_.stages.resize(k + 1);
      f(stats_.stages[k], arg);
    }
  } catch (...) {
    // out of memory: the stats miss this entry
  }
  mu_.unlock();
}

void pipe_ctx::rename_fiber(const std::string& from, const std::string& to,
                            const std::string& added) {
  mu_.lock();
  try {
    for (std::string& f : stats_.fibers) {
      if (f == from) {
        f = to;
        break;
      }
    }
    stats_.fibers.push_back(added);
  } catch (...) {
  }
  mu_.unlock();
}

void pipe_ctx::record_fiber(const std::string& stages) {
  mu_.lock();
  try {
    stats_.fibers.push_back(stages);
  } catch (...) {
  }
  mu_.unlock();
}

std::exception_ptr pipe_ctx::error() {
  mu_.lock();
  auto e = error_;
  mu_.unlock();
  return e;
}

std::string pipe_ctx::failed_stage() {
  mu_.lock();
  auto s = failed_stage_;
  mu_.unlock();
  return s;
}

pipeline_stats pipe_ctx::stats() {
  pipeline_stats s;
  mu_.lock();
  try {
    s = stats_;
    if (counters_) fill_live(s, counters_.get(), ncounters_);
  } catch (...) {
    // out of memory: what was copied so far
  }
  mu_.unlock();
  const std::int64_t start = start_ns_.load(std::memory_order_acquire);
  const std::int64_t end = end_ns_.load(std::memory_order_acquire);
  s.finished = end != 0;
  if (start != 0) s.elapsed = std::chrono::nanoseconds((end != 0 ? end : now_ns()) - start);
  return s;
}

std::string stage_name(const char* user, const char* kind, int index) {
  if (user) return user;
  return std::string(kind) + "#" + std::to_string(index);
}

void pipe_ctx::enter_fiber(const std::string& name) noexcept {
  this_fiber::name(name.c_str());
  if (watchdog_ms >= 0) fiber_set_watchdog(watchdog_ms);
}

void pipe_ctx::leave_fiber() noexcept {
  fiber_retire();
  fibers.done();
}

std::string join_names(std::string a, const std::string& b) {
  return a.empty() ? b : std::move(a) + "|" + b;
}

// pinned_decision(): why a stage starts a fiber of its own, as the user's layout says.
static const char* pinned_decision(const pipe_ctx& ctx) noexcept {
  return ctx.fusion ? "reads a link (pinned: .fuse = false or stage_boundary)"
                    : "reads a link (pinned: run_options::fusion = false)";
}

void record_tail(pipe_ctx& ctx, int index, const std::string& name, bool fresh, bool cut) {
  ctx.stage_at(index, [&](stage_stats& s) {
    s.name = name;
    s.fused = !fresh && !cut;
    if (cut) {
      s.decision = pinned_decision(ctx);
    } else if (s.decision.empty()) {
      s.decision = fresh ? "reads a link" : "fused";
    }
  });
}

void record_stage(pipe_ctx& ctx, int index, const std::string& name, bool fresh, bool cut,
                  bool pinned) {
  ctx.stage_at(index, [&](stage_stats& x) {
    x.name = name;
    x.fused = !fresh && !cut;
    x.decision = fresh    ? "reads a link"
                 : cut    ? pinned_decision(ctx)
                 : pinned ? "fused (pinned: .fuse = true)"
                          : "fused";
  });
}

void run_tail_in(pipe_ctx& ctx, const std::string& name, std::size_t stack, void (*f)(void*),
                 void* arg) {
  if (stack <= current_stack_size()) {
    stage_fiber_scope scope(name.c_str(), ctx.watchdog_ms);
    f(arg);
    return;
  }
  // A fiber of that size runs it (its state stays in the caller's frames, which wait).
  wait_group ran;
  ran.add(1);
  try {
    ctx.spawn(
        name,
        [&ran, f, arg] {
          struct leave {
            wait_group* wg;
            ~leave() { wg->done(); }
          } guard{&ran};
          f(arg);
        },
        /*record=*/false, stack);
  } catch (...) {
    ran.done();
    throw;
  }
  std::exception_ptr deadlock;
  join(ran, deadlock);
  if (deadlock) std::rethrow_exception(deadlock);
}

}  // namespace detail
}  // namespace rill
