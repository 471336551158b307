// include/rill/time.hpp's after() and ticker: timers that send the time on a channel.
#include <chrono>
#include <stdexcept>
#include <thread>

#include "rill/detail/chan_core.hpp"
#include "sched/runtime.hpp"

namespace rill::detail {

namespace {

using time_point = std::chrono::steady_clock::time_point;

void send_now(chan_core* ch) noexcept {
  time_point now = std::chrono::steady_clock::now();
  try {
    ch->try_send(&now);  // a full channel drops the tick (Go's ticker does the same)
  } catch (...) {
    // closed by its user: nothing to deliver
  }
}

struct after_timer : timer {
  chan_core* ch = nullptr;
};

}  // namespace

void start_after(chan_core* ch, std::int64_t deadline, void*) {
  worker* w = current_worker();
  ch->retain();
  if (!w) {
    // A plain thread has no runtime to keep the timer: a short-lived thread does.
    try {
      std::thread([ch, deadline] {
        const std::int64_t left = deadline - now_ns();
        if (left > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(left));
        send_now(ch);
        ch->release();
      }).detach();
    } catch (...) {
      ch->release();
      throw;
    }
    return;
  }
  after_timer* t;
  try {
    t = new after_timer;
  } catch (...) {
    ch->release();  // the reference taken for the timer
    throw;
  }
  t->ch = ch;
  t->when = deadline;
  t->fire = [](timer* tt) noexcept {
    auto* a = static_cast<after_timer*>(tt);
    send_now(a->ch);
    a->ch->release();
    a->fired();
    delete a;
  };
  t->drop = [](timer* tt) noexcept {
    auto* a = static_cast<after_timer*>(tt);
    a->ch->release();
    delete a;
  };
  w->rt->arm(*t);
}

struct ticker_state : timer {
  chan_core* ch = nullptr;
  runtime* rt = nullptr;
  std::int64_t period = 0;
  std::atomic<bool> dropped{false};
};

ticker_state* start_ticker(chan_core* ch, std::int64_t period_ns) {
  worker* w = current_worker();
  if (!w) throw std::logic_error("rill::ticker: needs a rill runtime (create it in a fiber)");
  if (period_ns <= 0) throw std::invalid_argument("rill::ticker: non-positive period");
  auto* t = new ticker_state;
  ch->retain();
  t->ch = ch;
  t->rt = w->rt;
  t->period = period_ns;
  t->when = now_ns() + period_ns;
  t->fire = [](timer* tt) noexcept {
    auto* k = static_cast<ticker_state*>(tt);
    send_now(k->ch);
    std::int64_t next = k->when + k->period;
    const std::int64_t now = now_ns();
    if (next <= now) next = now + k->period;  // fell behind: skip ticks rather than burst
    k->rt->rearm(*k, next);
  };
  t->drop = [](timer* tt) noexcept {
    static_cast<ticker_state*>(tt)->dropped.store(true, std::memory_order_release);
  };
  w->rt->arm(*t);
  return t;
}

void stop_ticker(ticker_state* t) noexcept {
  if (!t) return;
  if (!t->dropped.load(std::memory_order_acquire)) t->rt->cancel(*t);
  t->ch->release();
  delete t;
}

}  // namespace rill::detail
