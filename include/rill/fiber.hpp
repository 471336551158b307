// rill/fiber.hpp: what the running fiber can do to itself.
//
// Every function here also works on a plain thread (not running a fiber): it then acts on
// the thread (std::this_thread::yield, a thread sleep).
#pragma once

#include <chrono>
#include <cstdint>

#include "rill/runtime.hpp"

namespace rill::this_fiber {

// yield() lets the other runnable fibers of this worker run; the caller continues after
// them. It may resume on another worker thread.
void yield();

// sleep_until_ns() parks the calling fiber until detail::now_ns() >= deadline (a timer; a
// sleeping fiber holds no thread).
void sleep_until_ns(std::int64_t deadline);

// sleep_for() parks the calling fiber for at least d. A zero or negative d yields.
template <class Rep, class Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  const std::int64_t now = detail::now_ns();
  sleep_until_ns(ns > INT64_MAX - now ? INT64_MAX : now + ns);
}

// sleep_until() parks the calling fiber until the steady clock reaches t.
template <class Duration>
void sleep_until(std::chrono::time_point<std::chrono::steady_clock, Duration> t) {
  sleep_for(t - std::chrono::steady_clock::now());
}

// name() names the calling fiber in dumps, deadlock reports and error messages.
inline void name(const char* n) noexcept { detail::fiber_set_name(n); }

}  // namespace rill::this_fiber
