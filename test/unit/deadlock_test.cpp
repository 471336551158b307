// Deadlock detection (research/reliability.md T27): when every fiber is parked and nothing
// (timer, I/O, blocking call, plain thread parked in rill) can wake one, run() throws
// rill::deadlock_error with a dump, after unwinding every parked fiber; no false positive
// while a timer or a plain thread can still wake a fiber; options.detect_deadlock = false
// turns it off.
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <fstream>
#include <future>
#include <mutex>
#include <rill/rill.hpp>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "sched/runtime.hpp"  // detail::g_external_waiters
#include "support/pipeline_support.hpp"
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

TEST_CASE(
    "deadlock: a fiber that waits again while it unwinds after the abort completes that "
    "wait",
    "[deadlock]") {
  // The abort resumes every parked fiber with an exception. A destructor that then waits
  // (a blocking call; a mutex another unwinding fiber holds) is woken as usual when its
  // wait ends: its wait completes and the fiber finishes.
  auto workers = GENERATE(1u, 2u);
  std::atomic<int> blocking_done{0}, lock_done{0};
  rill::mutex m;
  const std::string what = expect_deadlock(workers, [&] {
    rill::wait_group never, started;
    never.add(1);
    started.add(2);
    rill::go([&] {  // holds m until the other fiber waits for it
      std::unique_lock hold(m);
      struct release_when_wanted {
        std::unique_lock<rill::mutex>& hold;
        ~release_when_wanted() {
          while (rill::dump_fibers().find("parked on mutex") == std::string::npos) {
            rill::this_fiber::yield();
          }
          hold.unlock();
        }
      } r{hold};
      started.done();
      never.wait();
    });
    rill::go([&] {
      struct lock_on_exit {
        rill::mutex& m;
        std::atomic<int>& done;
        ~lock_on_exit() {
          std::lock_guard g(m);
          done.fetch_add(1);
        }
      } l{m, lock_done};
      started.done();
      never.wait();
    });
    struct blocking_on_exit {
      std::atomic<int>& done;
      ~blocking_on_exit() {
        done.fetch_add(rill::blocking([] { return 1; }));
      }
    } b{blocking_done};
    started.wait();
    never.wait();
  });
  CHECK(contains(what, "wait_group"));
  CHECK(blocking_done.load() == 1);
  CHECK(lock_done.load() == 1);
  CHECK(m.try_lock());
  m.unlock();
}

// run_catching(): runs f as the main fiber of a runtime of one worker; what it throws is
// kept in `error`. With several runtimes at once, the leak check (global) waits for all.
template <class F>
void run_catching(F f, std::exception_ptr& error) {
  rill::options o;
  o.workers = 1;
  try {
    rill::run(f, o);
  } catch (...) {
    error = std::current_exception();
  }
}

// run_on_thread(): run_catching() on a plain thread (Catch's assertions are for the test's
// thread).
template <class F>
std::thread run_on_thread(F f, std::exception_ptr& error) {
  return std::thread([f, &error] { run_catching(f, error); });
}

TEST_CASE("deadlock: no false positive while a fiber of another runtime will wake ours",
          "[deadlock]") {
  // Runtime A's only fiber waits on a channel that a fiber of runtime B sends on once it
  // has slept (a timer of B) or computed (B busy) for longer than A's grace period: A sits
  // idle meanwhile, and must not call that a deadlock.
  const bool b_sleeps = GENERATE(true, false);
  test::watchdog dog;
  rill::chan<int> c;
  std::atomic<bool> b_started{false};
  std::exception_ptr b_error, a_error;
  std::thread b = run_on_thread(
      [&] {
        b_started.store(true);
        if (b_sleeps) {
          rill::this_fiber::sleep_for(100ms);
        } else {
          const auto until = std::chrono::steady_clock::now() + 100ms;
          while (std::chrono::steady_clock::now() < until) rill::this_fiber::yield();
        }
        c.send(7);
      },
      b_error);
  int v = 0;
  run_catching(
      [&] {
        while (!b_started.load()) rill::this_fiber::yield();  // B's runtime exists
        v = *c.recv();
      },
      a_error);
  b.join();
  CHECK_FALSE(a_error);
  CHECK_FALSE(b_error);
  CHECK(v == 7);
  test::check_no_leaks();
}

TEST_CASE("deadlock: two runtimes whose fibers wait on each other are both reported",
          "[deadlock]") {
  test::watchdog dog;
  rill::chan<int> to_a, to_b;
  std::exception_ptr b_error, a_error;
  std::thread b = run_on_thread(
      [&] {
        (void)to_b.recv();
        to_a.send(1);
      },
      b_error);
  run_catching(
      [&] {
        (void)to_a.recv();
        to_b.send(1);
      },
      a_error);
  b.join();
  auto what = [](const std::exception_ptr& e) -> std::string {
    try {
      if (e) std::rethrow_exception(e);
    } catch (const rill::deadlock_error& d) {
      return d.what();
    } catch (...) {
      return "another exception";
    }
    return "no exception";
  };
  CHECK(contains(what(a_error), "parked on chan recv"));
  CHECK(contains(what(b_error), "parked on chan recv"));
  test::check_no_leaks();
}

// blocked_in_poll(tid): the thread `tid` of this process is inside poll(2) (or ppoll).
bool blocked_in_poll(long tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long nr = -1;
  f >> nr;
#ifdef SYS_poll
  if (nr == SYS_poll) return true;
#endif
  return nr == SYS_ppoll;
}

// wait_until_in_poll(): returns once the thread that stored its id in `tid` is blocked in
// poll(2).
void wait_until_in_poll(const std::atomic<long>& tid) {
  while (tid.load() == 0 || !blocked_in_poll(tid.load())) std::this_thread::yield();
}

TEST_CASE(
    "deadlock: no false positive while every fiber waits on a plain thread blocked in a "
    "socket read",
    "[deadlock][net]") {
  // As above, with the plain thread blocked in rill's I/O (poll(2) on a socket of the
  // default runtime) rather than on a channel: it is counted as a party that can act.
  auto ln = rill::net::listen("127.0.0.1", 0);
  auto client = rill::net::connect("127.0.0.1", ln.port());
  auto server = ln.accept();
  rill::chan<int> got(1);
  std::atomic<long> reader_tid{0};
  std::thread reader([&] {
    reader_tid.store(static_cast<long>(::syscall(SYS_gettid)));
    char b;
    if (client.read(&b, 1) == 1) got.send(b);
  });
  wait_until_in_poll(reader_tid);
  std::thread releaser([&] {
    wait_until_parked("chan recv", 1);
    std::this_thread::sleep_for(100ms);  // idle for longer than the grace period
    server.write_all("x");
  });
  int v = 0;
  test::run_with(1, [&] { v = *got.recv(); });
  reader.join();
  releaser.join();
  CHECK(v == 'x');
}

TEST_CASE("deadlock: still reported once a plain thread that waited in rill has left",
          "[deadlock]") {
  // While a plain thread waits in rill (here wait_readable on a pipe, with a deadline) the
  // runtime does not declare; once the thread has left, a later check does.
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  std::atomic<long> tid{0};
  std::thread t([&] {
    tid.store(static_cast<long>(::syscall(SYS_gettid)));
    (void)rill::wait_readable(fds[0], std::chrono::steady_clock::now() + 150ms);
  });
  wait_until_in_poll(tid);
  const std::string what = expect_deadlock(1, [] {
    rill::wait_group never;
    never.add(1);
    never.wait();
  });
  t.join();
  ::close(fds[0]);
  ::close(fds[1]);
  CHECK(contains(what, "wait_group"));
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

// ---- pipelines run from a plain thread (the default runtime) ----------------------------

TEST_CASE("deadlock: a pipeline run from a plain thread on a channel nobody feeds is reported",
          "[deadlock][pipeline]") {
  // The same pipeline inside rill::run throws deadlock_error; from a plain thread it used to
  // hang. The report names each stage and what it waits on.
  test::watchdog dog;
  const bool fuse = GENERATE(true, false);
  rill::chan<int> ch(0);
  auto p =
      rill::from(ch) | rill::map([](int v) { return v + 1; }, {.name = "inc"}) | rill::collect();
  std::string what;
  try {
    (void)p.run({.fusion = fuse});
    FAIL("run() returned");
  } catch (const rill::deadlock_error& e) {
    what = e.what();
  }
  CHECK(contains(what, "(from_chan"));
  CHECK(contains(what, "parked on"));
  if (!fuse) CHECK(contains(what, "(inc): parked on chan recv"));
  test::wait_no_leaks();
  // The default runtime goes on: a run after the report completes.
  rill::chan<int> fed(2);
  fed.send(1);
  fed.send(2);
  fed.close();
  auto q = rill::from(fed) | rill::map([](int v) { return v + 1; }) | rill::collect();
  CHECK(q.run({.fusion = fuse}) == std::vector<int>{2, 3});
  test::wait_no_leaks();
}

TEST_CASE("deadlock: plain-thread runs in parallel that all wait for ever are all reported",
          "[deadlock][pipeline]") {
  test::watchdog dog;
  rill::chan<int> a(0);
  rill::chan<int> b(0);
  std::atomic<int> reported{0};
  auto run_on = [&reported](rill::chan<int>& ch) {
    try {
      (void)(rill::from(ch) | rill::count()).run();
    } catch (const rill::deadlock_error&) {
      ++reported;
    }
  };
  std::thread t([&] { run_on(a); });
  run_on(b);
  t.join();
  CHECK(reported.load() == 2);
  test::wait_no_leaks();
}

TEST_CASE("deadlock: detect_deadlock = false lets a plain thread feed a plain-thread run later",
          "[deadlock][pipeline]") {
  // The feeder is a plain thread outside rill: it sends only after the run has been parked
  // for longer than the grace period (measured by a separate runtime's own report).
  test::watchdog dog;
  rill::chan<int> ch(0);
  std::thread feeder([&] {
    wait_until_parked("select", 1);
    wait_past_grace();
    ch.send(7);
    ch.close();
  });
  auto p = rill::from(ch) | rill::collect();
  CHECK(p.run({.detect_deadlock = false}) == std::vector<int>{7});
  feeder.join();
  test::wait_no_leaks();
}

TEST_CASE("deadlock: a pipeline started from a plain thread is not declared while it waits",
          "[deadlock][pipeline]") {
  // start() returns at once: its thread may feed the run from outside rill, so nothing is
  // declared, also for a run() of another thread that would deadlock meanwhile... until the
  // started one ends.
  test::watchdog dog;
  rill::chan<int> ch(0);
  auto h = (rill::from(ch) | rill::collect()).start();
  wait_until_parked("select", 1);
  wait_past_grace();
  ch.send(5);
  ch.close();
  CHECK(h.wait() == std::vector<int>{5});
  test::wait_no_leaks();
}

TEST_CASE("deadlock: run(stop_token) from a plain thread waits for the stop",
          "[deadlock][pipeline]") {
  // A token that can be stopped may end the run from outside: no deadlock is declared.
  test::watchdog dog;
  rill::chan<int> ch(0);
  std::stop_source src;
  std::thread stopper([&] {
    wait_until_parked("select", 1);
    wait_past_grace();
    src.request_stop();
  });
  auto p = rill::from(ch) | rill::count();
  CHECK_THROWS_AS(p.run(src.get_token()), rill::pipeline_cancelled);
  stopper.join();
  test::wait_no_leaks();
}

TEST_CASE("deadlock: inline_run from a plain thread reports a deadlock too",
          "[deadlock][pipeline]") {
  test::watchdog dog;
  rill::chan<int> ch(0);
  auto p = rill::from(ch) | rill::collect();
  CHECK_THROWS_AS(p.run(rill::inline_run), rill::deadlock_error);
  test::wait_no_leaks();
}
