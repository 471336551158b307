// rill/time.hpp: channels that deliver the time (Go's time.After and time.Ticker).
#pragma once

#include <chrono>

#include "rill/chan.hpp"

namespace rill {

using clock_time = std::chrono::steady_clock::time_point;

// after(d) returns a channel that receives the time once, after d (Go's time.After). The
// timer costs no fiber; a runtime that ends first simply drops it. From a plain thread a
// short-lived helper thread keeps the time.
template <class Rep, class Period>
recv_chan<clock_time> after(std::chrono::duration<Rep, Period> d) {
  chan<clock_time> c(1);
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  const std::int64_t now = detail::now_ns();
  detail::start_after(c.core(), ns > INT64_MAX - now ? INT64_MAX : now + ns, nullptr);
  return c;
}

// ticker delivers the time on c() every period (Go's time.Ticker); a tick the receiver is
// not ready for is dropped. Create it in a fiber; stop() (or the destructor) stops it, and
// it must be stopped before its runtime ends or it is dropped when the runtime ends.
class ticker {
 public:
  template <class Rep, class Period>
  explicit ticker(std::chrono::duration<Rep, Period> period)
      : c_(1),
        state_(detail::start_ticker(
            c_.core(), std::chrono::duration_cast<std::chrono::nanoseconds>(period).count())) {}
  ticker(const ticker&) = delete;
  ticker& operator=(const ticker&) = delete;
  ~ticker() { stop(); }

  recv_chan<clock_time> c() const noexcept { return c_; }
  void stop() noexcept {
    detail::stop_ticker(state_);
    state_ = nullptr;
  }

 private:
  chan<clock_time> c_;
  detail::ticker_state* state_;
};

}  // namespace rill
