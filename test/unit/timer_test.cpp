// Timers: this_fiber::sleep_for / sleep_until park the fiber (not its thread) for at least
// the requested time; many sleepers all wake; zero and negative durations yield; nothing is
// left pending.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <optional>
#include <random>
#include <rill/rill.hpp>
#include <thread>
#include <vector>

#include "support/run_with.hpp"

namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;

// Lateness bound: only a sanity check (the machine may be loaded); early wake-ups are the
// real failure and are checked exactly.
constexpr auto slack = 2s;

}  // namespace

TEST_CASE("timer: sleep_for parks for at least the duration", "[timer]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    for (auto d : {1ms, 5ms, 20ms}) {
      const auto t0 = clock_type::now();
      rill::this_fiber::sleep_for(d);
      const auto elapsed = clock_type::now() - t0;
      CHECK(elapsed >= d);
      CHECK(elapsed < d + slack);
    }
    CHECK(rill::runtime_stats().pending_timers == 0);
  });
}

TEST_CASE("timer: a sleeping fiber holds no worker", "[timer]") {
  // One worker: while main sleeps, another fiber runs to completion.
  test::run_with(1, [] {
    std::atomic<bool> ran{false};
    rill::go([&] { ran.store(true); });
    rill::this_fiber::sleep_for(10ms);
    CHECK(ran.load());
  });
}

TEST_CASE("timer: 1000 concurrent sleepers of 0..20 ms all wake, none early", "[timer]") {
  auto workers = GENERATE(1u, 2u, 4u);
  constexpr int n = 1000;
  std::atomic<int> woke{0}, early{0}, late{0};
  test::run_with(workers, [&] {
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> us(0, 20'000);
    rill::wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; ++i) {
      const auto d = std::chrono::microseconds(us(rng));
      rill::go([&, d] {
        const auto t0 = clock_type::now();
        rill::this_fiber::sleep_for(d);
        const auto elapsed = clock_type::now() - t0;
        if (elapsed < d) early.fetch_add(1);
        if (elapsed >= d + slack) late.fetch_add(1);
        woke.fetch_add(1);
        wg.done();
      });
    }
    wg.wait();
    CHECK(rill::runtime_stats().pending_timers == 0);
  });
  CHECK(woke.load() == n);
  CHECK(early.load() == 0);
  CHECK(late.load() == 0);
}

TEST_CASE("timer: sleepers wake in deadline order on one worker", "[timer]") {
  std::vector<int> order;  // one worker: no race
  test::run_with(1, [&] {
    rill::wait_group wg;
    wg.add(5);
    // Deadlines from one base, 15 ms apart and the first 30 ms away: the order holds unless
    // the worker thread is descheduled for that long before every sleeper has parked.
    const auto base = clock_type::now();
    for (int i : {4, 2, 0, 3, 1}) {
      rill::go([&, i] {
        rill::this_fiber::sleep_until(base + std::chrono::milliseconds(30 + 15 * i));
        order.push_back(i);
        wg.done();
      });
    }
    wg.wait();
  });
  CHECK(order == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("timer: sleep_for of zero or a negative duration yields", "[timer]") {
  // One worker: the spawned fiber can only run if the sleeper gave up the worker.
  auto d = GENERATE(as<std::chrono::nanoseconds>{}, 0ns, -1ns, -std::chrono::nanoseconds(1s));
  test::run_with(1, [d] {
    bool ran = false;
    rill::go([&] { ran = true; });
    const auto t0 = clock_type::now();
    rill::this_fiber::sleep_for(d);
    CHECK(ran);
    CHECK(clock_type::now() - t0 < slack);
    CHECK(rill::runtime_stats().pending_timers == 0);
  });
}

TEST_CASE("timer: sleep_until a time point far in the past returns at once", "[timer]") {
  test::run_with(2, [] {
    const auto t0 = clock_type::now();
    rill::this_fiber::sleep_until(clock_type::time_point{});  // the clock's epoch
    rill::this_fiber::sleep_until(t0 - 1h);
    CHECK(clock_type::now() - t0 < slack);
    CHECK(rill::runtime_stats().pending_timers == 0);
  });
}

TEST_CASE("timer: sleep_until waits for the time point", "[timer]") {
  auto workers = GENERATE(1u, 2u);
  test::run_with(workers, [] {
    const auto until = clock_type::now() + 15ms;
    rill::this_fiber::sleep_until(until);
    CHECK(clock_type::now() >= until);
    CHECK(clock_type::now() < until + slack);
    // Past time points return at once.
    const auto t0 = clock_type::now();
    rill::this_fiber::sleep_until(t0 - 1s);
    CHECK(clock_type::now() - t0 < slack);
  });
}

TEST_CASE("timer: timers fire while every worker stays busy", "[timer]") {
  // The workers never go idle (fibers keep yielding), so timers must be fired from the
  // scheduling loop, not only by an idle worker.
  auto workers = GENERATE(1u, 2u);
  test::run_with(workers, [workers] {
    std::atomic<bool> woke{false};
    std::atomic<bool> timed_out{false};
    rill::wait_group wg;
    wg.add(1 + static_cast<int>(workers));
    rill::go([&] {
      rill::this_fiber::sleep_for(5ms);
      woke.store(true);
      wg.done();
    });
    for (unsigned i = 0; i < workers; ++i) {
      rill::go([&] {
        const auto deadline = clock_type::now() + 10s;
        while (!woke.load()) {
          if (clock_type::now() > deadline) {
            timed_out.store(true);
            break;
          }
          rill::this_fiber::yield();
        }
        wg.done();
      });
    }
    wg.wait();
    CHECK(woke.load());
    CHECK_FALSE(timed_out.load());
  });
}

TEST_CASE("timer: a sleeper wakes on time on a worker whose fibers yield once per round of work",
          "[timer]") {
  // Two fibers take turns on one worker, each computing a while between yields: the
  // worker never idles, and each switch hands it to the other. A fiber that sleeps in a
  // loop, for about two of their rounds each time, counts their rounds between two of its
  // wakes. A busy worker looked at its
  // timers only every global_check_interval switches (as many rounds here); the
  // watchdog's thread now asks it to look at its next switch once a timer is due.
  const int most = test::run_with(1, [] {
    std::atomic<int> rounds{0};
    std::atomic<bool> done{false};
    int most = 0;
    rill::wait_group wg;
    wg.add(3);
    for (int b = 0; b < 2; ++b) {
      rill::go([&] {
        while (!done.load()) {
          const auto end = clock_type::now() + 500us;  // CPU work
          while (clock_type::now() < end) {
          }
          rounds.fetch_add(1);
          rill::this_fiber::yield();
        }
        wg.done();
      });
    }
    rill::go([&] {
      int last = rounds.load();
      for (int wake = 0; wake < 40; ++wake) {
        rill::this_fiber::sleep_for(1ms);
        const int now = rounds.load();
        most = std::max(most, now - last);
        last = now;
      }
      done = true;
      wg.done();
    });
    wg.wait();
    return most;
  });
  // The sleep itself is two rounds; the watchdog looks every half slice, and its thread may
  // be late on a loaded machine: a few more. Half the rounds of the periodic look alone.
  CHECK(most <= 30);
}

TEST_CASE("timer: sleep_for on a plain thread sleeps the thread", "[timer]") {
  const auto t0 = clock_type::now();
  rill::this_fiber::sleep_for(2ms);
  CHECK(clock_type::now() - t0 >= 2ms);
  rill::this_fiber::sleep_for(-5ms);  // returns at once
}

TEST_CASE("timer: no timer is left pending after sleepers finish", "[timer]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::wait_group wg;
    wg.add(100);
    for (int i = 0; i < 100; ++i) {
      rill::go([&, i] {
        rill::this_fiber::sleep_for(std::chrono::microseconds(50 * (i % 10)));
        wg.done();
      });
    }
    // While they sleep, some timers are pending (those not yet fired).
    CHECK(rill::runtime_stats().pending_timers <= 100);
    wg.wait();
    CHECK(rill::runtime_stats().pending_timers == 0);
  });
  CHECK(rill::global_stats().pending_timers == 0);
}

TEST_CASE(
    "timer: select timeouts with random deadlines, half raced by a value, each end once "
    "and none early (the timer heap under arbitrary removals)",
    "[timer]") {
  // Every parked select arms a timer; those that receive first cancel it, which removes an
  // arbitrary node from the runtime's timer heap (a pairing heap) while others are added
  // and popped.
  auto workers = GENERATE(1u, 2u);
  constexpr int n = 1000;
  std::atomic<int> values{0}, timeouts{0}, early{0};
  test::run_with(workers, [&] {
    std::mt19937 rng(777);
    std::uniform_int_distribution<int> us(0, 10'000);
    rill::wait_group wg;
    wg.add(2 * n);
    for (int i = 0; i < n; ++i) {
      rill::chan<int> c(1);
      const auto d = std::chrono::microseconds(us(rng));
      const auto send_after = std::chrono::microseconds(us(rng));
      const bool raced = i % 2 == 0;
      rill::go([&, c, d]() mutable {
        const auto t0 = clock_type::now();
        rill::select(rill::on_recv(c, [&](std::optional<int>) { values.fetch_add(1); }),
                     rill::after(d, [&] {
                       timeouts.fetch_add(1);
                       if (clock_type::now() - t0 < d) early.fetch_add(1);
                     }));
        wg.done();
      });
      rill::go([&, c, send_after, raced]() mutable {
        if (raced) {
          rill::this_fiber::sleep_for(send_after);
          (void)c.try_send(1);
        }
        wg.done();
      });
    }
    wg.wait();
    CHECK(rill::runtime_stats().pending_timers == 0);
  });
  CHECK(values.load() + timeouts.load() == n);
  CHECK(timeouts.load() >= n / 2);  // the unraced half can only time out
  CHECK(early.load() == 0);
}
