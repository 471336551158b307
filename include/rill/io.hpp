// rill/io.hpp: fiber-aware waiting on file descriptors, and blocking calls off the workers.
//
// A fiber that waits for I/O is parked and its worker thread runs other fibers; the
// runtime's netpoller (epoll, edge-triggered) makes it runnable again when the fd is ready.
// A blocking call (file I/O, DNS, a C library that blocks) goes to rill::blocking(), which
// runs it on a separate thread pool while the fiber is parked (Go's syscall hand-off), so a
// worker is never stuck.
//
//   if (!rill::wait_readable(fd, std::chrono::steady_clock::now() + 100ms)) { /* timeout */ }
//   std::string text = rill::blocking([] { return read_whole_file("/etc/hosts"); });
//
// Errors: OS failures are std::system_error with the OS error (std::system_category());
// a passed deadline and a closed connection are std::system_error with an io_errc code,
// which compares equal to std::errc::timed_out and std::errc::bad_file_descriptor.
//
// Thread safety: every function may be called from any fiber and from plain threads
// (which then block). A fiber parked here counts as waiting on I/O, not as deadlocked.
#pragma once

#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <system_error>
#include <type_traits>
#include <utility>

#include "rill/detail/io_core.hpp"
#include "rill/runtime.hpp"

namespace rill {

// io_deadline: an absolute time on the steady clock; no_deadline: wait forever.
using io_deadline = std::chrono::steady_clock::time_point;
inline constexpr io_deadline no_deadline = io_deadline::max();

// io_errc: I/O outcomes that are not OS errors (Go: os.ErrDeadlineExceeded, net.ErrClosed,
// io.ErrUnexpectedEOF).
enum class io_errc {
  deadline_exceeded = 1,  // "i/o deadline exceeded"; == std::errc::timed_out
  closed,                 // "use of a closed connection"; == std::errc::bad_file_descriptor
  unexpected_eof,         // "unexpected end of stream" (the peer closed mid-message)
};
const std::error_category& io_category() noexcept;
inline std::error_code make_error_code(io_errc e) noexcept {
  return {static_cast<int>(e), io_category()};
}

// wait_readable() parks the calling fiber until `fd` (any fd epoll accepts: a socket, a
// pipe, a tty, an eventfd...) is readable, at end of stream or in error, or until `deadline`. Returns
// true when ready, false when the deadline passed. A regular file is always ready. The fd
// must stay open during the wait. Throws std::system_error (e.g. EBADF).
bool wait_readable(int fd, io_deadline deadline = no_deadline);
// wait_writable(): the same, for writing.
bool wait_writable(int fd, io_deadline deadline = no_deadline);

// live_io_registrations(): fds registered with any runtime's poller now (a leak check:
// 0 once every socket is closed).
inline std::size_t live_io_registrations() noexcept { return detail::io_live_registrations(); }

namespace detail {
template <class R>
struct blocking_slot {
  std::optional<R> value;
  template <class F>
  void call(F& f) { value.emplace(std::invoke(f)); }
  R take() { return std::move(*value); }
};
template <class R>
struct blocking_slot<R&> {
  R* value = nullptr;
  template <class F>
  void call(F& f) { value = &std::invoke(f); }
  R& take() { return *value; }
};
template <>
struct blocking_slot<void> {
  template <class F>
  void call(F& f) { std::invoke(f); }
  void take() {}
};
}  // namespace detail

// blocking() runs f() on rill's blocking-call thread pool and parks the calling fiber until
// it returns; returns f's result or rethrows its exception. The worker runs other fibers
// meanwhile. From a plain thread it just calls f. The pool grows on demand (up to 256
// threads; more calls queue) and idle pool threads exit after a few seconds. f runs on
// another thread: it must not use rill's fiber operations that park (channels are fine
// from plain threads, but a fiber-only API is not).
template <class F>
auto blocking(F&& f) -> std::invoke_result_t<F&> {
  using R = std::invoke_result_t<F&>;
  static_assert(std::is_invocable_v<F&>, "rill::blocking(f): f must be callable with no arguments");
  if (!detail::current_fiber()) return std::invoke(f);
  struct ctx_t {
    F& f;
    detail::blocking_slot<R> slot;
    std::exception_ptr error;
  } ctx{f, {}, nullptr};
  detail::blocking_call(
      [](void* p) noexcept {
        auto* c = static_cast<ctx_t*>(p);
        try {
          c->slot.call(c->f);
        } catch (...) {
          c->error = std::current_exception();
        }
      },
      &ctx);
  if (ctx.error) std::rethrow_exception(ctx.error);
  return ctx.slot.take();
}

}  // namespace rill

template <>
struct std::is_error_code_enum<rill::io_errc> : std::true_type {};
