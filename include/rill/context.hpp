// rill/context.hpp: cancellation trees (Go's context.Context, without values) and groups of
// fibers that fail together (Go's errgroup.Group). Included by rill/sync.hpp.
//
//   rill::context ctx = rill::context().with_timeout(200ms);
//   rill::error_group g(ctx);
//   for (auto& url : urls) g.go([&, url](const rill::context& c) { fetch(c, url); });
//   g.wait();  // rethrows the first exception; the others were told to stop through c
//
// A context is a cheap handle with shared ownership (copies refer to one context). It is
// cancelled once: by cancel(), by its deadline, or when its parent is; then done() is
// closed, stop_token() reports a stop, and err() says why. Cancelling a context cancels
// every context derived from it, never its parent. By the time done() is closed, the stop
// has been requested and every context derived from this one is cancelled. Contexts work
// from fibers of any runtime and from plain threads. A derived context keeps its parent
// alive, and a chain of contexts is released recursively when its last handle goes: keep
// chains hundreds, not thousands, of levels deep on a fiber's stack.
//
// Memory ordering: cancel() happens before a receive on done() that returns because it is
// closed, and before cancelled()/err() that report it.
#pragma once

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <type_traits>
#include <utility>
#include <variant>

#include "rill/chan.hpp"
#include "rill/runtime.hpp"
#include "rill/sync.hpp"

namespace rill {

// context_err: why a context ended (Go's context.Canceled and context.DeadlineExceeded).
enum class context_err : std::uint8_t { none, cancelled, deadline_exceeded };
const char* to_string(context_err e) noexcept;

// context_cancelled: thrown by context::throw_if_cancelled(); err() says why.
class context_cancelled : public std::runtime_error {
 public:
  explicit context_cancelled(context_err e);
  context_err err() const noexcept { return err_; }

 private:
  context_err err_;
};

namespace detail {
struct context_state;
}

class context {
 public:
  using time_point = std::chrono::steady_clock::time_point;

  // A new root: cancelled only by cancel() (Go's context.WithCancel(context.Background())).
  context();

  // Derived contexts: cancelled when this one is, or by their own cancel() or deadline.
  // A deadline later than this context's own changes nothing (Go's rule). The deadline's
  // timer costs no fiber, and does not keep run() from returning.
  context with_cancel() const;
  context with_deadline(time_point deadline) const;
  template <class Rep, class Period>
  context with_timeout(std::chrono::duration<Rep, Period> d) const {
    return with_deadline(std::chrono::steady_clock::now() +
                         std::chrono::duration_cast<std::chrono::steady_clock::duration>(d));
  }

  // cancel() cancels this context and every context derived from it (err(): cancelled);
  // a second cancel, or one after the deadline, changes nothing.
  void cancel() const noexcept;
  bool cancelled() const noexcept { return err() != context_err::none; }
  context_err err() const noexcept;
  // throw_if_cancelled() throws context_cancelled once the context is cancelled.
  void throw_if_cancelled() const;
  // deadline(): the earliest deadline of this context and its ancestors, if any.
  std::optional<time_point> deadline() const noexcept;
  // done() is closed when the context is cancelled (Go's Done()): receive from it, or use
  // it in a select: rill::on_recv(ctx.done(), [] { ... }).
  recv_chan<std::monostate> done() const noexcept;
  // stop_token() reports a stop when the context is cancelled: pipeline.run(ctx.stop_token())
  // and std::stop_callback work with it.
  std::stop_token stop_token() const noexcept;

 private:
  explicit context(std::shared_ptr<detail::context_state> s) noexcept : s_(std::move(s)) {}
  std::shared_ptr<detail::context_state> s_;
};

// error_group runs fibers that succeed or fail as one (Go's errgroup.Group). go(f) starts f
// in a new fiber; the first exception that escapes one of them is kept, and cancels the
// group's context, so the others can stop early; wait() waits for all of them and
// rethrows that exception. f may take the group's context: f(const context&).
class error_group {
 public:
  // A group whose context is a new root.
  error_group() : error_group(rill::context()) {}
  // A group whose context is derived from `parent` (Go's errgroup.WithContext).
  explicit error_group(const rill::context& parent) : ctx_(parent.with_cancel()) {}
  error_group(const error_group&) = delete;
  error_group& operator=(const error_group&) = delete;
  // The destructor waits for the group's fibers (they refer to the group); an exception
  // that wait() did not report is dropped.
  ~error_group() { wg_.wait(); }

  // The group's context: cancelled by the first failure, and when wait() returns.
  const rill::context& context() const noexcept { return ctx_; }

  // set_limit(n) lets at most n of the group's fibers run at once; go() parks while n are
  // running (Go's SetLimit). 0: no limit (the default). Call it while no fiber of the
  // group runs. Throws std::invalid_argument for a negative n, std::logic_error while fibers
  // of the group run.
  void set_limit(int n);

  // go(f) starts f() (or f(context())) in a new fiber of the calling fiber's runtime, after
  // waiting for room under the limit; like rill::go it throws std::logic_error outside a
  // runtime. try_go(f) starts it only if there is room now; false if not.
  template <class F>
  void go(F&& f) {
    if (limit_) slots_.send(std::monostate{});
    start(std::forward<F>(f));
  }
  template <class F>
  bool try_go(F&& f) {
    if (limit_) {
      std::monostate token;
      if (!slots_.try_send(token)) return false;
    }
    start(std::forward<F>(f));
    return true;
  }

  // wait() waits for every fiber the group started, cancels the group's context, and
  // rethrows the first exception that escaped one of them (again on each call).
  void wait();

 private:
  template <class F>
  void start(F&& f) {
    running_.fetch_add(1, std::memory_order_relaxed);
    wg_.add(1);
    try {
      rill::go([this, fn = std::forward<F>(f)]() mutable {
        try {
          if constexpr (std::is_invocable_v<decltype(fn)&, const rill::context&>) {
            fn(ctx_);
          } else {
            fn();
          }
        } catch (...) {
          fail(std::current_exception());
        }
        finish();
      });
    } catch (...) {
      finish();
      throw;
    }
  }
  void fail(std::exception_ptr e) noexcept;
  void finish() noexcept;

  rill::context ctx_;
  wait_group wg_;
  mutex mu_;
  std::exception_ptr first_;  // guarded by mu_
  int limit_ = 0;
  std::atomic<int> running_{0};    // fibers started and not finished
  chan<std::monostate> slots_{1};  // with a limit: one item per running fiber
};

}  // namespace rill
