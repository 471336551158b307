// Contexts (rill/context.hpp): a tree of cancellation states, and the deadline service.
//
// Each state links its children in an intrusive list under its mutex; a child unlinks
// itself when it is cancelled or destroyed, so a long-lived root does not collect the
// children it has outlived. cancel() marks the states of the subtree one mutex at a time
// (err set once, children unlinked and kept alive by strong references), and then,
// holding no lock, finishes them deepest first: requests each one's stop (which runs the
// users' stop callbacks) and closes its done(). A child that is being destroyed (no
// strong reference left) has no descendants alive either: they would hold it as their
// parent. No two state mutexes are ever held at once; the deadline service's mutex is
// taken with none of them held.
//
// Deadlines: one service thread for the process, started on first use, sleeps until the
// earliest deadline. It holds no reference to a context (a context that nobody refers to
// any more takes its deadline out), and cancels a context that is still alive when its
// deadline passes. While deadlines are pending it counts as an outside party that can
// wake fibers (g_external_waiters), so deadlock detection does not fire on a fiber waiting
// for a deadline.
#include "rill/context.hpp"

#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "sched/runtime.hpp"

namespace rill {

namespace detail {

using time_point = rill::context::time_point;

struct context_state : std::enable_shared_from_this<context_state> {
  std::atomic<context_err> err{context_err::none};
  chan<std::monostate> done;  // never sent on: closed when cancelled
  std::stop_source stop;
  std::optional<time_point> deadline;  // the earliest of its own and its ancestors'
  std::shared_ptr<context_state> parent;

  std::mutex mu;
  context_state* first_child = nullptr;  // guarded by mu
  // links in the parent's list, guarded by the parent's mu:
  context_state* prev = nullptr;
  context_state* next = nullptr;
  bool linked = false;
  // A cancel() keeps the states of the subtree it cancels alive through these until it has
  // finished them (no allocation, no recursion); owned by that cancel() once unlinked.
  std::shared_ptr<context_state> cancel_keep;
  context_state* cancel_next = nullptr;  // on one of cancel_state()'s two stacks at a time

  bool own_deadline = false;  // set before the state is shared: a deadline of its own
  bool timed = false;         // guarded by the deadline service's mutex: in its queue
  std::multimap<time_point, context_state*>::iterator timer_pos;

  ~context_state();
};

namespace {

class deadline_service {
 public:
  void add(context_state* s, time_point when) {
    std::lock_guard lk(mu_);
    if (!started_) {
      std::thread([this] { loop(); }).detach();  // may throw std::system_error
      started_ = true;
    }
    const bool earliest = queue_.empty() || when < queue_.begin()->first;
    s->timer_pos = queue_.emplace(when, s);
    s->timed = true;
    g_external_waiters.fetch_add(1, std::memory_order_relaxed);
    if (earliest) cv_.notify_one();
  }
  void remove(context_state* s) noexcept {
    std::lock_guard lk(mu_);
    if (!s->timed) return;
    queue_.erase(s->timer_pos);
    s->timed = false;
    g_external_waiters.fetch_sub(1, std::memory_order_relaxed);
  }

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<time_point, context_state*> queue_;  // guarded by mu_
  bool started_ = false;                             // guarded by mu_
};

deadline_service& deadlines() {
  // Never destroyed: its thread runs until the process ends.
  static deadline_service* s = new deadline_service;
  return *s;
}

void cancel_state(context_state& s, context_err why) noexcept;

void deadline_service::loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    if (queue_.empty()) {
      cv_.wait(lk);
      continue;
    }
    const auto first = queue_.begin();
    if (const time_point when = first->first; std::chrono::steady_clock::now() < when) {
      cv_.wait_until(lk, when);  // a copy: the entry may go while we wait
      continue;
    }
    context_state* s = first->second;
    queue_.erase(first);
    s->timed = false;
    // Alive, or in its destructor (which waits for mu_ to take its deadline out, and will
    // find it gone): only a live one is cancelled.
    std::shared_ptr<context_state> keep = s->weak_from_this().lock();
    lk.unlock();
    if (keep) cancel_state(*keep, context_err::deadline_exceeded);
    keep.reset();  // may destroy the state: with mu_ released
    g_external_waiters.fetch_sub(1, std::memory_order_relaxed);
    lk.lock();
  }
}

void link_child(context_state& parent, context_state& c) noexcept {  // requires parent.mu
  c.next = parent.first_child;
  c.prev = nullptr;
  if (c.next) c.next->prev = &c;
  parent.first_child = &c;
  c.linked = true;
}

void unlink_child(context_state& parent, context_state& c) noexcept {  // requires parent.mu
  if (!c.linked) return;
  if (c.prev) {
    c.prev->next = c.next;
  } else {
    parent.first_child = c.next;
  }
  if (c.next) c.next->prev = c.prev;
  c.prev = c.next = nullptr;
  c.linked = false;
}

// mark() sets x's err, unless it has one, and moves x's children to the `pending` stack,
// each kept alive by its cancel_keep. False if x was cancelled already.
bool mark(context_state& x, context_err why, context_state*& pending) noexcept {
  std::lock_guard lk(x.mu);
  if (x.err.load(std::memory_order_relaxed) != context_err::none) return false;
  x.err.store(why, std::memory_order_release);
  for (context_state* c = x.first_child; c;) {
    context_state* next = c->next;
    c->prev = c->next = nullptr;
    c->linked = false;
    c->cancel_keep = c->weak_from_this().lock();  // empty: being destroyed, no descendants
    if (c->cancel_keep) {
      c->cancel_next = pending;
      pending = c;
    }
    c = next;
  }
  x.first_child = nullptr;
  return true;
}

// finish() completes the cancel of a marked state: its stop, then done() (whoever wakes on
// done() sees the stop), then its deadline goes.
void finish(context_state& x) noexcept {
  x.stop.request_stop();
  x.done.core()->try_close();
  if (x.own_deadline) deadlines().remove(&x);
}

// cancel_state() cancels s and its subtree without recursion (a chain of contexts may be
// deep). Every state is marked before its children are, and finished after its whole
// subtree: whoever sees done() closed sees every context derived from it cancelled too
// (and those derived from now on start cancelled: err is set). A subtree some other
// cancel() marked first is that cancel's to finish.
void cancel_state(context_state& s, context_err why) noexcept {
  context_state* pending = nullptr;  // through cancel_next: children to mark
  if (!mark(s, why, pending)) return;
  context_state* marked = nullptr;  // through cancel_next: most recently marked first
  while (context_state* c = pending) {
    pending = c->cancel_next;
    c->cancel_next = nullptr;
    if (mark(*c, why, pending)) {
      c->cancel_next = marked;
      marked = c;
    } else {
      c->cancel_keep.reset();
    }
  }
  // Marked after their ancestors, so finished before them.
  while (context_state* c = marked) {
    marked = c->cancel_next;
    c->cancel_next = nullptr;
    finish(*c);
    c->cancel_keep.reset();  // may destroy c: its parent is still kept (or is s)
  }
  finish(s);
  if (s.parent) {  // the others were unlinked by their parents' mark()
    std::lock_guard lk(s.parent->mu);
    unlink_child(*s.parent, s);
  }
}

}  // namespace

context_state::~context_state() {
  if (parent) {
    std::lock_guard lk(parent->mu);
    unlink_child(*parent, *this);
  }
  if (own_deadline) deadlines().remove(this);
}

}  // namespace detail

const char* to_string(context_err e) noexcept {
  switch (e) {
    case context_err::none:
      return "not cancelled";
    case context_err::cancelled:
      return "context cancelled";
    case context_err::deadline_exceeded:
      return "context deadline exceeded";
  }
  return "?";
}

context_cancelled::context_cancelled(context_err e) : std::runtime_error(to_string(e)), err_(e) {}

context::context() : s_(std::make_shared<detail::context_state>()) {}

context context::with_cancel() const { return with_deadline(time_point::max()); }

context context::with_deadline(time_point deadline) const {
  auto c = std::make_shared<detail::context_state>();
  c->parent = s_;
  c->deadline = s_->deadline;
  const bool own = deadline != time_point::max() && (!s_->deadline || deadline < *s_->deadline);
  if (own) c->deadline = deadline;
  c->own_deadline = own;
  context_err parent_err;
  {
    std::lock_guard lk(s_->mu);
    parent_err = s_->err.load(std::memory_order_relaxed);
    if (parent_err == context_err::none) detail::link_child(*s_, *c);
  }
  if (parent_err != context_err::none) {
    detail::cancel_state(*c, parent_err);
  } else if (own) {
    if (deadline <= std::chrono::steady_clock::now()) {
      detail::cancel_state(*c, context_err::deadline_exceeded);
    } else {
      detail::deadlines().add(c.get(), deadline);  // the destructor unlinks c if this throws
    }
  }
  return context(std::move(c));
}

void context::cancel() const noexcept { detail::cancel_state(*s_, context_err::cancelled); }

context_err context::err() const noexcept { return s_->err.load(std::memory_order_acquire); }

void context::throw_if_cancelled() const {
  if (const context_err e = err(); e != context_err::none) throw context_cancelled(e);
}

std::optional<context::time_point> context::deadline() const noexcept { return s_->deadline; }

recv_chan<std::monostate> context::done() const noexcept { return s_->done; }

std::stop_token context::stop_token() const noexcept { return s_->stop.get_token(); }

// ---- error_group ------------------------------------------------------------------------

void error_group::set_limit(int n) {
  if (n < 0) throw std::invalid_argument("rill::error_group: negative limit");
  if (running_.load(std::memory_order_acquire) != 0) {
    throw std::logic_error("rill::error_group: set_limit while fibers of the group run");
  }
  limit_ = n;
  if (n > 0) slots_ = chan<std::monostate>(static_cast<std::size_t>(n));
}

void error_group::fail(std::exception_ptr e) noexcept {
  {
    std::lock_guard lk(mu_);
    if (!first_) first_ = std::move(e);
  }
  ctx_.cancel();
}

void error_group::finish() noexcept {
  if (limit_) (void)slots_.try_recv();
  running_.fetch_sub(1, std::memory_order_release);
  wg_.done();  // the last touch of the group: wait() may return and the group go away
}

void error_group::wait() {
  wg_.wait();
  ctx_.cancel();
  std::exception_ptr e;
  {
    std::lock_guard lk(mu_);
    e = first_;
  }
  if (e) std::rethrow_exception(e);
}

}  // namespace rill
