// Tests of the runtime: run(), go(), yield, options, stats, parallelism, stealing, and
// fibers made ready from plain threads.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <rill/rill.hpp>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sched/fifo.hpp"
#include "support/run_with.hpp"

namespace {

// run_opts() is test::run_with() with full options: tests where a plain thread wakes the
// fibers turn deadlock detection off, since a thread that is running (not parked in rill)
// when every fiber is parked is indistinguishable from a deadlock for longer than the
// detector's grace period if the OS deschedules it.
template <class F>
auto run_opts(rill::options o, F&& f) {
  test::watchdog dog;
  struct leak_check {
    ~leak_check() { test::check_no_leaks(); }
  } lc;
  return rill::run(std::forward<F>(f), o);
}

rill::options no_detect(unsigned workers) {
  rill::options o;
  o.workers = workers;
  o.detect_deadlock = false;
  return o;
}

// spin_work() burns roughly `iters` loop iterations of CPU without touching shared state.
void spin_work(int iters) {
  volatile unsigned x = 0;
  for (int i = 0; i < iters; ++i) x = x + static_cast<unsigned>(i);
}

struct custom_error : std::exception {
  explicit custom_error(int c) : code(c) {}
  const char* what() const noexcept override { return "custom"; }
  int code;
};

}  // namespace

// ---- run -------------------------------------------------------------------------------

TEST_CASE("runtime: run returns the main fiber's value", "[runtime][run]") {
  auto workers = GENERATE(1u, 2u, 4u);
  CHECK(test::run_with(workers, [] { return 42; }) == 42);
  CHECK(test::run_with(workers, [] { return std::string(1000, 'x'); }) == std::string(1000, 'x'));
}

TEST_CASE("runtime: run returns a move-only result", "[runtime][run]") {
  auto workers = GENERATE(1u, 2u, 4u);
  std::unique_ptr<int> p = test::run_with(workers, [] { return std::make_unique<int>(7); });
  REQUIRE(p);
  CHECK(*p == 7);
}

TEST_CASE("runtime: run with a void main returns once main and its fibers finish",
          "[runtime][run]") {
  auto workers = GENERATE(1u, 2u, 4u);
  std::atomic<int> n{0};
  test::run_with(workers, [&] {
    for (int i = 0; i < 100; ++i) {
      rill::go([&] {
        rill::this_fiber::yield();
        n.fetch_add(1);
      });
    }
  });  // main returns at once; run still waits for the 100 fibers
  CHECK(n.load() == 100);
}

TEST_CASE("runtime: an exception escaping main is rethrown by run with its type and message",
          "[runtime][run][exceptions]") {
  auto workers = GENERATE(1u, 2u, 4u);
  SECTION("std::runtime_error") {
    try {
      test::run_with(workers, []() -> int { throw std::runtime_error("main failed: 17"); });
      FAIL("run did not throw");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "main failed: 17");
    }
  }
  SECTION("a user type, thrown after fibers ran and parked") {
    std::atomic<int> n{0};
    try {
      test::run_with(workers, [&] {
        rill::wait_group wg;
        wg.add(10);
        for (int i = 0; i < 10; ++i) {
          rill::go([&] {
            n.fetch_add(1);
            wg.done();
          });
        }
        wg.wait();
        throw custom_error(99);
      });
      FAIL("run did not throw");
    } catch (const custom_error& e) {
      CHECK(e.code == 99);
    }
    CHECK(n.load() == 10);
  }
  SECTION("a non-std exception") {
    CHECK_THROWS_AS(test::run_with(workers, [] { throw 5; }), int);
  }
}

TEST_CASE("runtime: run can be called again after a run that threw", "[runtime][run]") {
  CHECK_THROWS_AS(test::run_with(2, [] { throw std::logic_error("x"); }), std::logic_error);
  CHECK(test::run_with(2, [] { return 3; }) == 3);
}

// rill::run lends its workers threads from a process-wide pool, which keeps them between
// runs. A child process after fork() has none of them: its runs must start their own.
TEST_CASE("runtime: a child process after fork() runs with several workers and blocking calls",
          "[runtime][run]") {
#if defined(__SANITIZE_THREAD__)
#define RILL_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RILL_TEST_TSAN 1
#endif
#endif
#if RILL_TEST_TSAN
  WARN("not under TSan: it does not support threads started after a multi-threaded fork");
  return;
#endif
  // The parent's pools hold idle threads now (the child would wait for them for ever): the
  // workers' and rill::blocking's.
  REQUIRE(test::run_with(2, [] { return rill::blocking([] { return 1; }); }) == 1);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(30);  // a hang ends the child with SIGALRM rather than the test run
    int sum = 0;
    try {
      for (int i = 0; i < 3; ++i) {
        sum += rill::run(
            [] {
              rill::wait_group wg;
              std::atomic<int> n{0};
              for (int k = 0; k < 8; ++k) {
                wg.add(1);
                rill::go([&] {
                  n.fetch_add(rill::blocking([] { return 1; }));
                  wg.done();
                });
              }
              wg.wait();
              return n.load();
            },
            {.workers = 4});
      }
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(sum == 24 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

// The thread that calls rill::run is the user's: while it is a worker, rill's handler for
// a fiber's stack overflow runs on an alternate signal stack of rill's, and the thread's
// own comes back when run() returns.
TEST_CASE("runtime: run() gives the calling thread its own alternate signal stack back",
          "[runtime][run]") {
  std::vector<char> mine(64 * 1024);
  stack_t ss{};
  ss.ss_sp = mine.data();
  ss.ss_size = mine.size();
  stack_t before{};
  REQUIRE(::sigaltstack(&ss, &before) == 0);
  int seen_flags = -1;
  void* seen_sp = nullptr;
  for (unsigned workers : {1u, 2u}) {
    CHECK(rill::run(
              [&] {
                stack_t now{};
                ::sigaltstack(nullptr, &now);
                seen_sp = now.ss_sp;  // the fiber runs on a worker: rill's own stack
                return 1;
              },
              {.workers = workers}) == 1);
    CHECK(seen_sp != static_cast<void*>(mine.data()));
    stack_t after{};
    REQUIRE(::sigaltstack(nullptr, &after) == 0);
    seen_flags = after.ss_flags;
    CHECK(after.ss_sp == static_cast<void*>(mine.data()));
    CHECK(after.ss_size == mine.size());
    CHECK((seen_flags & SS_DISABLE) == 0);
  }
  REQUIRE(::sigaltstack(&before, nullptr) == 0);
}

TEST_CASE("runtime: go outside a runtime throws std::logic_error", "[runtime][go]") {
  CHECK_THROWS_AS(rill::go([] {}), std::logic_error);
  // Also from a plain thread while a runtime is running elsewhere.
  bool threw = false;
  test::run_with(2, [&] {
    std::thread t([&] {
      try {
        rill::go([] {});
      } catch (const std::logic_error&) {
        threw = true;
      }
    });
    t.join();
  });
  CHECK(threw);
  CHECK(rill::global_stats().live_fibers == 0);
}

// ---- go --------------------------------------------------------------------------------

TEST_CASE("runtime: 10,000 spawned fibers all run", "[runtime][go]") {
  auto workers = GENERATE(1u, 2u, 4u);
  constexpr int n = 10'000;
  std::vector<std::atomic<int>> ran(n);
  test::run_with(workers, [&] {
    for (int i = 0; i < n; ++i) rill::go([&ran, i] { ran[i].fetch_add(1); });
  });
  int once = 0;
  for (auto& r : ran) once += r.load() == 1;
  CHECK(once == n);
}

TEST_CASE("runtime: go accepts move-only closures and destroys them", "[runtime][go]") {
  auto workers = GENERATE(1u, 2u);
  auto alive = std::make_shared<int>(0);
  std::weak_ptr<int> weak = alive;
  test::run_with(workers, [&, p = std::move(alive)]() mutable {
    auto u = std::make_unique<std::shared_ptr<int>>(std::move(p));
    rill::go([u = std::move(u)] { **u += 1; });
  });
  CHECK(weak.expired());  // the closure (and the last shared_ptr) was destroyed
}

namespace {
void tree(int depth, std::atomic<int>& nodes, rill::wait_group& wg) {
  nodes.fetch_add(1);
  if (depth > 0) {
    wg.add(2);
    rill::go([depth, &nodes, &wg] { tree(depth - 1, nodes, wg); });
    rill::go([depth, &nodes, &wg] { tree(depth - 1, nodes, wg); });
  }
  wg.done();
}
}  // namespace

TEST_CASE("runtime: nested spawn trees run every node", "[runtime][go]") {
  auto workers = GENERATE(1u, 2u, 4u);
  constexpr int depth = 11;  // 4095 fibers
  std::atomic<int> nodes{0};
  test::run_with(workers, [&] {
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] { tree(depth, nodes, wg); });
    wg.wait();
    CHECK(nodes.load() == (1 << (depth + 1)) - 1);
  });
  CHECK(nodes.load() == (1 << (depth + 1)) - 1);
}

// ---- yield -----------------------------------------------------------------------------

TEST_CASE("runtime: on one worker, two yielding fibers alternate", "[runtime][yield]") {
  std::string seq;  // one worker: no data race
  test::run_with(1, [&] {
    rill::wait_group wg;
    wg.add(2);
    for (char c : {'A', 'B'}) {
      rill::go([&, c] {
        for (int i = 0; i < 20; ++i) {
          seq += c;
          rill::this_fiber::yield();
        }
        wg.done();
      });
    }
    wg.wait();
  });
  std::string expect;
  for (int i = 0; i < 20; ++i) expect += "AB";
  CHECK(seq == expect);
}

TEST_CASE("runtime: a fiber woken by a send runs before the waker's queued fibers when it parks",
          "[runtime][runnext]") {
  // Go's runnext: the receiver the send wakes runs next on the sender's worker, ahead of a
  // fiber that was queued earlier, so a producer and its consumer hand items to each other
  // without a trip through the queue. One worker: the order is the scheduler's, not timing's.
  std::string seq;
  test::run_with(1, [&] {
    rill::chan<int> ch;
    rill::wait_group wg;
    wg.add(2);
    rill::go([&] {
      seq += 'r';  // the receiver parks in recv below
      seq += static_cast<char>('0' + *ch.recv());
      wg.done();
    });
    rill::this_fiber::yield();  // the receiver runs and parks
    rill::go([&] {
      seq += 'q';
      wg.done();
    });
    ch.send(1);  // hands 1 to the receiver and readies it
    wg.wait();   // main parks: the receiver runs first, then the queued fiber
  });
  CHECK(seq == "r1q");
}

TEST_CASE("runtime: a spawn loop lets the fibers it spawned run before it holds too many",
          "[runtime][go]") {
  // 100k fibers spawned at once on one worker, each finishing at once: the spawner yields
  // when its queue is long, so the finished fibers' stacks are reused and only a bounded
  // number are ever live (each live one would commit a stack page of its own).
  constexpr int n = 100'000;
  std::size_t peak_live = 0;
  int ran = 0;
  test::run_with(1, [&] {
    rill::wait_group wg;
    wg.add(n);
    for (int i = 0; i < n; ++i) {
      rill::go([&] {
        ++ran;
        wg.done();
      });
      peak_live = std::max(peak_live, rill::runtime_stats().live_fibers);
    }
    wg.wait();
  });
  CHECK(ran == n);
  CHECK(peak_live <= 2048);
}

TEST_CASE("runtime: a fiber queued behind a fiber that never yields runs on another worker",
          "[runtime][steal]") {
  // The main fiber spawns a fiber onto its own worker, then spins without a scheduling point
  // until that fiber has run: only another worker can run it. The other workers are asleep
  // or watching (young fibers are left to their worker for a while); it must not matter.
  auto workers = GENERATE(2u, 4u);
  auto settle = GENERATE(false, true);
  test::run_with(workers, [&] {
    if (settle) rill::this_fiber::sleep_for(std::chrono::milliseconds(5));  // others asleep
    for (int round = 0; round < 20; ++round) {
      std::atomic<bool> ran{false};
      rill::wait_group wg;
      wg.add(1);
      rill::go([&] {
        ran.store(true);
        wg.done();
      });
      while (!ran.load()) {
      }
      wg.wait();
    }
  });
}

TEST_CASE("runtime: yield from a plain thread returns", "[runtime][yield]") {
  rill::this_fiber::yield();
  SUCCEED();
}

TEST_CASE("runtime: a yielding fiber does not starve the global queue", "[runtime][yield]") {
  // Fibers readied from a plain thread go to the global queue; a fiber that only yields
  // on the same worker must let them run.
  std::atomic<bool> seen{false};
  test::run_with(1, [&] {
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      wg.wait();  // readied later from the plain thread: lands in the global queue
      seen.store(true);
    });
    std::thread t([&] { wg.done(); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!seen.load() && std::chrono::steady_clock::now() < deadline) {
      rill::this_fiber::yield();
    }
    t.join();
    CHECK(seen.load());
  });
}

// ---- options and stats -------------------------------------------------------------------

TEST_CASE("runtime: RILL_WORKERS sets the worker count when options.workers is 0",
          "[runtime][options]") {
  const char* old = std::getenv("RILL_WORKERS");
  const std::optional<std::string> saved = old ? std::optional<std::string>(old) : std::nullopt;
  auto n = GENERATE(1, 3);
  ::setenv("RILL_WORKERS", std::to_string(n).c_str(), 1);
  rill::options o;  // workers == 0
  const unsigned seen = rill::run([] { return rill::runtime_stats().workers; }, o);
  if (saved) {
    ::setenv("RILL_WORKERS", saved->c_str(), 1);
  } else {
    ::unsetenv("RILL_WORKERS");
  }
  CHECK(seen == static_cast<unsigned>(n));
  // An explicit count wins over the variable.
  ::setenv("RILL_WORKERS", "3", 1);
  rill::options two;
  two.workers = 2;
  CHECK(rill::run([] { return rill::runtime_stats().workers; }, two) == 2u);
  if (saved) {
    ::setenv("RILL_WORKERS", saved->c_str(), 1);
  } else {
    ::unsetenv("RILL_WORKERS");
  }
}

TEST_CASE("runtime: runtime_stats inside run counts workers, live and spawned fibers",
          "[runtime][stats]") {
  auto workers = GENERATE(1u, 2u, 4u);
  CHECK(rill::runtime_stats().workers == 0);  // outside a runtime: all zero
  CHECK(rill::runtime_stats().live_fibers == 0);
  // A snapshot may count too few fibers for a moment, never too many (a worker hands its
  // spawn credit back concurrently: see runtime::snapshot()): settled(n) looks again, a
  // bounded number of times, until it sees n.
  auto settled = [](std::size_t n) {
    rill::stats s = rill::runtime_stats();
    for (int i = 0; i < 100'000 && s.live_fibers < n; ++i) {
      rill::this_fiber::yield();
      s = rill::runtime_stats();
    }
    return s;
  };
  test::run_with(workers, [&] {
    rill::stats s = settled(1);
    CHECK(s.workers == workers);
    CHECK(s.live_fibers == 1);  // main
    CHECK(s.fibers_spawned == 1);
    CHECK(s.pending_timers == 0);
    // `left` keeps gate alive until every fiber is past gate.wait(): a fiber can be
    // between parked.done() and gate.wait() on another worker when gate opens (this test
    // used to return and destroy gate meanwhile, a use after scope seen under load).
    rill::wait_group gate, parked, left;
    gate.add(1);
    parked.add(50);
    left.add(50);
    for (int i = 0; i < 50; ++i) {
      rill::go([&] {
        parked.done();
        gate.wait();
        left.done();
      });
    }
    parked.wait();
    s = settled(51);
    CHECK(s.live_fibers == 51);  // main + 50 parked (or about to park)
    CHECK(s.fibers_spawned == 51);
    CHECK(s.live_stacks == 51);
    gate.done();
    left.wait();
  });
}

// ---- parallelism and stealing --------------------------------------------------------------

TEST_CASE("runtime: fibers run in parallel on several workers", "[runtime][parallel]") {
  // Each fiber raises its flag and spins, without yielding, until it sees the other's: only
  // possible if both run at the same time on different threads.
  auto workers = GENERATE(2u, 4u);
  std::atomic<bool> a{false}, b{false};
  std::atomic<bool> timed_out{false};
  std::thread::id ta, tb;
  test::run_with(workers, [&] {
    rill::wait_group wg;
    wg.add(2);
    auto spin = [&](std::atomic<bool>& mine, std::atomic<bool>& other, std::thread::id& tid) {
      tid = std::this_thread::get_id();
      mine.store(true);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (!other.load()) {
        if (std::chrono::steady_clock::now() > deadline) {
          timed_out.store(true);
          break;
        }
      }
      wg.done();
    };
    rill::go([&] { spin(a, b, ta); });
    rill::go([&] { spin(b, a, tb); });
    wg.wait();
  });
  CHECK_FALSE(timed_out.load());
  CHECK(ta != tb);
}

TEST_CASE("runtime: idle workers steal work spawned on one worker", "[runtime][steal]") {
  auto workers = GENERATE(2u, 4u);
  test::run_with(workers, [&] {
    std::uint64_t steals = 0;
    std::set<std::thread::id> threads;
    std::mutex threads_mu;
    for (int round = 0; round < 50 && steals == 0; ++round) {
      rill::wait_group wg;
      wg.add(500);
      for (int i = 0; i < 500; ++i) {
        rill::go([&] {
          spin_work(20'000);
          {
            std::lock_guard lk(threads_mu);  // never held across a switch
            threads.insert(std::this_thread::get_id());
          }
          wg.done();
        });
      }
      wg.wait();
      steals = rill::runtime_stats().steals;
    }
    CHECK(steals > 0);
    CHECK(threads.size() >= 2);
  });
}

// ---- fibers readied from plain threads -------------------------------------------------------

TEST_CASE("runtime: a fiber readied from a plain thread runs", "[runtime][external]") {
  auto workers = GENERATE(1u, 2u, 4u);
  SECTION("through a wait_group") {
    int got = 0;
    run_opts(no_detect(workers), [&] {
      rill::wait_group wg;
      wg.add(1);
      int value = 0;
      std::thread t([&] {
        value = 11;
        wg.done();
      });
      wg.wait();  // the plain thread's done() happens before this returns
      got = value;
      t.join();
    });
    CHECK(got == 11);
  }
  SECTION("through a mutex the thread holds") {
    rill::mutex m;
    m.lock();  // held by this plain thread
    std::atomic<bool> locked_by_fiber{false};
    std::thread unlocker;
    run_opts(no_detect(workers), [&] {
      unlocker = std::thread([&] {
        // Wait until the fiber is parked on the mutex, then hand it over.
        while (rill::dump_fibers().find("parked on mutex") == std::string::npos) {
          std::this_thread::yield();
        }
        m.unlock();
      });
      std::lock_guard lk(m);  // parks until the plain thread unlocks
      locked_by_fiber.store(true);
    });
    unlocker.join();
    CHECK(locked_by_fiber.load());
  }
  SECTION("through a condition_variable") {
    rill::mutex m;
    rill::condition_variable cv;
    bool ready = false;
    std::thread t;
    int woken = 0;
    run_opts(no_detect(workers), [&] {
      rill::wait_group wg;
      wg.add(10);
      for (int i = 0; i < 10; ++i) {
        rill::go([&] {
          std::unique_lock lk(m);
          cv.wait(lk, [&] { return ready; });
          ++woken;
          wg.done();
        });
      }
      t = std::thread([&] {
        {
          std::lock_guard lk(m);
          ready = true;
        }
        cv.notify_all();
      });
      wg.wait();
    });
    t.join();
    CHECK(woken == 10);
  }
}

TEST_CASE("runtime: many fibers readied from several plain threads all run",
          "[runtime][external]") {
  auto workers = GENERATE(1u, 2u, 4u);
  constexpr int per_thread = 200, threads = 3;
  std::vector<std::unique_ptr<rill::wait_group>> gates;
  for (int i = 0; i < per_thread * threads; ++i) {
    gates.push_back(std::make_unique<rill::wait_group>());
    gates.back()->add(1);
  }
  std::atomic<int> ran{0};
  std::vector<std::thread> ts;
  run_opts(no_detect(workers), [&] {
    for (int i = 0; i < per_thread * threads; ++i) {
      rill::go([&, i] {
        gates[i]->wait();
        ran.fetch_add(1);
      });
    }
    for (int k = 0; k < threads; ++k) {
      ts.emplace_back([&, k] {
        for (int i = k; i < per_thread * threads; i += threads) gates[i]->done();
      });
    }
  });
  for (auto& t : ts) t.join();
  CHECK(ran.load() == per_thread * threads);
}

// ---- the global queue's container ---------------------------------------------------------

namespace {

struct queued_item {
  queued_item* next = nullptr;
  int value = 0;
};

// Blocks for block_fifo that run out after `left` allocations.
struct limited_blocks {
  static inline int left = 0;
  static inline int made = 0;
  static inline int freed = 0;
  static void* allocate(std::size_t n) noexcept {
    if (left == 0) return nullptr;
    --left;
    ++made;
    return ::operator new(n, std::nothrow);
  }
  static void deallocate(void* p) noexcept {
    ++freed;
    ::operator delete(p);
  }
};

}  // namespace

TEST_CASE("runtime: the global queue's block FIFO keeps order across blocks and without blocks",
          "[runtime][global_queue]") {
  using q_t = rill::detail::block_fifo<queued_item, limited_blocks>;
  constexpr int per_block = static_cast<int>(q_t::block_items);
  std::vector<queued_item> items(9 * per_block);
  for (std::size_t i = 0; i < items.size(); ++i) items[i].value = static_cast<int>(i);
  limited_blocks::made = limited_blocks::freed = 0;
  {
    q_t q;
    CHECK(q.empty());
    CHECK(q.pop_front() == nullptr);
    int pushed = 0, popped = 0;
    auto push = [&](int k) {
      for (int i = 0; i < k; ++i) q.push_back(&items[static_cast<std::size_t>(pushed++)]);
    };
    auto pop = [&](int k) {
      for (int i = 0; i < k; ++i) {
        queued_item* front = q.front();
        queued_item* x = q.pop_front();
        REQUIRE(x != nullptr);
        REQUIRE(x == front);
        REQUIRE(x->value == popped++);
      }
    };
    // Two blocks, then no memory: the rest spills behind them.
    limited_blocks::left = 2;
    push(3 * per_block);
    CHECK(limited_blocks::made == 2);
    CHECK(q.spilling());
    pop(per_block + 10);
    // Memory again: while the spill holds items, pushes still go behind it.
    limited_blocks::left = 100;
    push(per_block);
    CHECK(limited_blocks::made == 2);
    pop(pushed - popped);
    CHECK(q.empty());
    CHECK(!q.spilling());
    // The spill drained: pushes go to blocks again (the spare ones first, then new ones).
    push(4 * per_block);
    CHECK(!q.spilling());
    CHECK(limited_blocks::made > 2);
    pop(pushed - popped - 7);  // the last 7 stay: their blocks are freed with the queue
  }
  CHECK(limited_blocks::freed == limited_blocks::made);
}
