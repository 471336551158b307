// Deadlock detection (research/reliability.md T27): when every fiber is parked and nothing
// (timer, I/O, blocking call, plain thread parked in rill) can wake one, run() throws
// rill::deadlock_error with a dump, after unwinding every parked fiber; no false positive
// while a timer or a plain thread can still wake a fiber; options.detect_deadlock = false
// turns it off.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <mutex>
#include <rill/rill.hpp>
#include <string>
#include <thread>

#include "sched/runtime.hpp"  // detail::g_external_waiters
#include "support/run_with.hpp"

namespace {

using namespace std::chrono_literals;

bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// expect_deadlock() runs f on `workers` workers and returns deadlock_error::what(); fails
// the test if run() returns or throws something else. The leak check runs after the throw.
template <class F>
std::string expect_deadlock(unsigned workers, F&& f) {
  try {
    test::run_with(workers, std::forward<F>(f));
  } catch (const rill::deadlock_error& e) {
    return e.what();
  }
  FAIL("run() returned without deadlock_error");
  return {};
}

// wait_past_grace() returns once a separate runtime (detection on, one fiber parked for
// ever) has reported its deadlock: at least the detector's grace period has passed, measured
// by the detector itself. Precondition: no plain thread is parked in rill (that would keep
// the separate runtime from declaring).
void wait_past_grace() {
  rill::options o;
  o.workers = 1;
  bool threw = false;
  try {
    rill::run(
        [] {
          rill::wait_group never;
          never.add(1);
          never.wait();
        },
        o);
  } catch (const rill::deadlock_error&) {
    threw = true;
  }
  CHECK(threw);
}

// wait_until_parked() spins (a plain thread, yielding its CPU) until the dump of every
// runtime shows `n` fibers parked on `what`.
void wait_until_parked(const char* what, int n) {
  const std::string needle = std::string("parked on ") + what;
  for (;;) {
    const std::string d = rill::dump_fibers();
    int found = 0;
    for (std::size_t p = d.find(needle); p != std::string::npos; p = d.find(needle, p + 1)) {
      ++found;
    }
    if (found >= n) return;
    std::this_thread::yield();
  }
}

}  // namespace

TEST_CASE("deadlock: main waiting on a wait_group nobody finishes is reported", "[deadlock]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const auto t0 = std::chrono::steady_clock::now();
  const std::string what = expect_deadlock(workers, [] {
    rill::wait_group wg;
    wg.add(1);
    wg.wait();
  });
  const auto latency = std::chrono::steady_clock::now() - t0;
  CHECK(contains(what, "deadlock"));
  CHECK(contains(what, "wait_group"));
  CHECK(contains(what, "main"));
  CHECK(latency < 5s);  // sanity bound; T27 asks for < 100 ms on an idle machine
  std::printf("FIGURE deadlock_detection_ms=%lld\n",
              static_cast<long long>(
                  std::chrono::duration_cast<std::chrono::milliseconds>(latency).count()));
}

TEST_CASE("deadlock: two fibers locking two mutexes in opposite orders are reported",
          "[deadlock]") {
  auto workers = GENERATE(1u, 2u, 4u);
  std::atomic<int> unwound{0};
  // Shared objects outlive run(): the aborted main fiber unwinds (destroying its locals)
  // while the other aborted fibers still unlock these mutexes.
  rill::mutex a, b;
  rill::wait_group both_hold, finished;
  const std::string what = expect_deadlock(workers, [&] {
    both_hold.add(2);
    finished.add(2);
    struct on_unwind {
      std::atomic<int>& n;
      ~on_unwind() { n.fetch_add(1); }
    };
    rill::go([&] {
      on_unwind u{unwound};
      std::lock_guard la(a);
      both_hold.done();
      both_hold.wait();
      std::lock_guard lb(b);  // b is held by the other fiber: parks for ever
      finished.done();
    });
    rill::go([&] {
      on_unwind u{unwound};
      std::lock_guard lb(b);
      both_hold.done();
      both_hold.wait();
      std::lock_guard la(a);
      finished.done();
    });
    finished.wait();
  });
  CHECK(contains(what, "deadlock"));
  CHECK(contains(what, "mutex"));
  CHECK(unwound.load() == 2);  // each aborted fiber ran its destructors
}

TEST_CASE("deadlock: a fiber waiting on a condition_variable nobody notifies is reported",
          "[deadlock]") {
  auto workers = GENERATE(1u, 2u);
  rill::mutex m;  // outlive run(): the aborted waiter re-locks m while unwinding
  rill::condition_variable cv;
  rill::wait_group wg;
  const std::string what = expect_deadlock(workers, [&] {
    wg.add(1);
    rill::go([&] {
      rill::this_fiber::name("cv-waiter");
      std::unique_lock lk(m);
      cv.wait(lk, [] { return false; });
      wg.done();
    });
    wg.wait();
  });
  CHECK(contains(what, "condition_variable"));
  CHECK(contains(what, "cv-waiter"));  // the dump names the fiber
}

TEST_CASE("deadlock: every parked fiber is unwound and nothing leaks", "[deadlock]") {
  auto workers = GENERATE(1u, 2u, 4u);
  constexpr int n = 300;
  std::atomic<int> constructed{0}, destroyed{0};
  struct counted {
    std::atomic<int>& d;
    explicit counted(std::atomic<int>& c, std::atomic<int>& dd) : d(dd) { c.fetch_add(1); }
    ~counted() { d.fetch_add(1); }
  };
  rill::mutex m;  // shared with the fibers: outlives run()
  rill::condition_variable cv;
  rill::wait_group never, started;
  expect_deadlock(workers, [&] {
    never.add(1);
    started.add(n);
    m.lock();  // main holds m for ever
    for (int i = 0; i < n; ++i) {
      rill::go([&, i] {
        counted c(constructed, destroyed);
        started.done();
        switch (i % 3) {
          case 0:
            never.wait();
            break;
          case 1: {
            std::lock_guard lk(m);
            break;
          }
          default: {
            rill::mutex local;
            std::unique_lock lk(local);
            cv.wait(lk);
            break;
          }
        }
      });
    }
    started.wait();
    counted c(constructed, destroyed);
    never.wait();
  });
  CHECK(constructed.load() == n + 1);
  CHECK(destroyed.load() == n + 1);
  const rill::stats s = rill::global_stats();
  CHECK(s.live_fibers == 0);
  CHECK(s.live_stacks == 0);
  CHECK(s.pending_timers == 0);
}

TEST_CASE("deadlock: a runtime runs normally after a deadlock was reported", "[deadlock]") {
  expect_deadlock(2, [] {
    rill::wait_group wg;
    wg.add(1);
    wg.wait();
  });
  CHECK(test::run_with(2, [] {
          rill::wait_group wg;
          wg.add(1);
          rill::go([&] { wg.done(); });
          wg.wait();
          return 5;
        }) == 5);
}

TEST_CASE("deadlock: a deadlock after timers have fired is still reported", "[deadlock]") {
  auto workers = GENERATE(1u, 2u);
  const std::string what = expect_deadlock(workers, [] {
    rill::wait_group wg;
    wg.add(1);
    rill::go([] { rill::this_fiber::sleep_for(5ms); });
    rill::this_fiber::sleep_for(10ms);
    wg.wait();
  });
  CHECK(contains(what, "wait_group"));
}

TEST_CASE("deadlock: no false positive while a fiber sleeps", "[deadlock]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      rill::this_fiber::sleep_for(50ms);  // longer than the detector's grace period
      wg.done();
    });
    wg.wait();
  });
  SUCCEED();
}

TEST_CASE(
    "deadlock: no false positive while a plain thread is parked on a wait_group the "
    "fibers finish",
    "[deadlock]") {
  auto workers = GENERATE(1u, 2u, 4u);
  for (int round = 0; round < 10; ++round) {
    rill::wait_group fibers_done, thread_done;
    constexpr int n = 20;
    fibers_done.add(n);
    thread_done.add(1);
    std::thread t([&] {
      fibers_done.wait();  // parked in rill until the fibers have all called done()
      thread_done.done();
    });
    test::run_with(workers, [&] {
      while (rill::detail::g_external_waiters.load() < 1) rill::this_fiber::yield();
      rill::wait_group gate;
      gate.add(1);
      for (int i = 0; i < n; ++i) {
        rill::go([&] {
          gate.wait();
          fibers_done.done();
        });
      }
      gate.done();
      thread_done.wait();  // every fiber finishes or parks; the plain thread wakes us
    });
    t.join();
  }
  SUCCEED();
}

TEST_CASE(
    "deadlock: no false positive while every fiber waits on a plain thread that is "
    "itself parked in rill",
    "[deadlock]") {
  // The runtime sits idle, its only fiber parked, for longer than the grace period, while a
  // plain thread (parked in rill, so counted) can still wake it: not a deadlock.
  rill::wait_group release_thread, main_may_go;
  release_thread.add(1);
  main_may_go.add(1);
  std::thread parked([&] {
    release_thread.wait();
    main_may_go.done();
  });
  std::thread releaser([&] {
    wait_until_parked("wait_group", 1);  // main is parked (and `parked` too, in rill)
    // Hold the idle state for longer than the detector's grace period. (wait_past_grace()
    // cannot serve here: the parked plain thread keeps every runtime from declaring.)
    std::this_thread::sleep_for(100ms);
    release_thread.done();
  });
  test::run_with(1, [&] {
    while (rill::detail::g_external_waiters.load() < 1) rill::this_fiber::yield();
    main_may_go.wait();
  });
  parked.join();
  releaser.join();
  SUCCEED();
}

TEST_CASE("deadlock: detect_deadlock = false leaves a fiber parked for a plain thread",
          "[deadlock]") {
  // main parks on a wait_group that only a plain thread (not parked in rill) will finish,
  // after another runtime with detection on has reported its own deadlock: by then this
  // runtime has been idle for longer than the grace period.
  rill::wait_group wg;
  wg.add(1);
  std::promise<void> main_waiting;
  std::thread t([&] {
    main_waiting.get_future().wait();
    wait_until_parked("wait_group", 1);
    wait_past_grace();
    wait_past_grace();
    wg.done();
  });
  rill::options o;
  o.workers = 2;
  o.detect_deadlock = false;
  test::watchdog dog;
  const int r = rill::run(
      [&] {
        main_waiting.set_value();
        wg.wait();
        return 1;
      },
      o);
  t.join();
  CHECK(r == 1);
  test::check_no_leaks();
}

TEST_CASE("deadlock: with detection on, the same shape is reported", "[deadlock]") {
  // The counterpart of the test above: the plain thread finishes the wait_group only after
  // run() has thrown, so the wait is a deadlock for the runtime.
  rill::wait_group wg;
  wg.add(1);
  std::promise<void> run_ended;
  std::thread t([&] {
    run_ended.get_future().wait();
    wg.done();
  });
  const std::string what = expect_deadlock(2, [&] { wg.wait(); });
  run_ended.set_value();
  t.join();
  CHECK(contains(what, "wait_group"));
}
