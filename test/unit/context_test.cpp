// Tests of rill/context.hpp: context (cancellation, deadlines, the tree) and error_group.
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <memory>
#include <optional>
#include <rill/rill.hpp>
#include <stdexcept>
#include <stop_token>
#include <thread>
#include <vector>

#include "sched/runtime.hpp"  // detail::g_external_waiters: pending deadlines count there
#include "support/run_with.hpp"

using namespace std::chrono_literals;

namespace {

// done_closed(): done() is closed and a receive returns at once with nothing.
bool done_closed(const rill::context& c) {
  return c.done().closed() && !c.done().recv().has_value();
}

}  // namespace

// ---- context ------------------------------------------------------------------------------

TEST_CASE("context: cancel closes done, stops the token, and says why", "[context]") {
  rill::context c;
  CHECK_FALSE(c.cancelled());
  CHECK(c.err() == rill::context_err::none);
  CHECK_FALSE(c.done().closed());
  CHECK_FALSE(c.done().try_recv().has_value());
  CHECK_FALSE(c.stop_token().stop_requested());
  CHECK_FALSE(c.deadline().has_value());
  CHECK_NOTHROW(c.throw_if_cancelled());
  bool callback_ran = false;
  std::stop_callback cb(c.stop_token(), [&] { callback_ran = true; });

  rill::context copy = c;  // a handle: copies are the same context
  copy.cancel();
  CHECK(c.cancelled());
  CHECK(c.err() == rill::context_err::cancelled);
  CHECK(done_closed(c));
  CHECK(c.stop_token().stop_requested());
  CHECK(callback_ran);
  try {
    c.throw_if_cancelled();
    FAIL("throw_if_cancelled did not throw");
  } catch (const rill::context_cancelled& e) {
    CHECK(e.err() == rill::context_err::cancelled);
    CHECK(std::string(e.what()) == "context cancelled");
  }
  c.cancel();  // a second cancel changes nothing
  CHECK(c.err() == rill::context_err::cancelled);
}

TEST_CASE("context: cancelling a parent cancels its whole subtree, never the other way",
          "[context]") {
  rill::context root;
  rill::context a = root.with_cancel();
  rill::context a1 = a.with_cancel();
  rill::context a2 = a.with_timeout(1h);
  rill::context b = root.with_cancel();

  a1.cancel();  // a leaf: nobody else
  CHECK(a1.cancelled());
  CHECK_FALSE(a.cancelled());
  CHECK_FALSE(a2.cancelled());
  CHECK_FALSE(root.cancelled());

  a.cancel();  // a and its children; not its parent nor its sibling
  CHECK(a.cancelled());
  CHECK(a2.err() == rill::context_err::cancelled);
  CHECK(done_closed(a2));
  CHECK_FALSE(root.cancelled());
  CHECK_FALSE(b.cancelled());

  root.cancel();
  CHECK(b.err() == rill::context_err::cancelled);
  // A context derived from a cancelled one starts cancelled, with the parent's reason.
  rill::context late = root.with_timeout(1h);
  CHECK(late.err() == rill::context_err::cancelled);
  CHECK(done_closed(late));
}

TEST_CASE("context: cancelling the root of a long chain reaches its leaf", "[context]") {
  rill::context root;
  std::vector<rill::context> chain{root};
  for (int i = 0; i < 2000; ++i) chain.push_back(chain.back().with_cancel());
  root.cancel();
  CHECK(chain.back().err() == rill::context_err::cancelled);
  CHECK(chain.back().done().closed());
  while (!chain.empty()) chain.pop_back();  // leaf first: no deep release
}

TEST_CASE("context: children that go away are unlinked; the rest are cancelled", "[context]") {
  // Under ASan, a dead child left on its parent's list is a use after free at cancel().
  rill::context root;
  std::vector<rill::context> kept;
  for (int i = 0; i < 1000; ++i) {
    rill::context c = root.with_cancel();
    rill::context grandchild = c.with_cancel();  // holds c alive while it lives
    if (i % 2 == 0) kept.push_back(grandchild);
  }
  root.cancel();
  for (const rill::context& c : kept) CHECK(c.err() == rill::context_err::cancelled);
}

TEST_CASE("context: a deadline cancels with deadline_exceeded and wakes a parked fiber",
          "[context]") {
  auto workers = GENERATE(1u, 2u);
  // With one worker and nothing else to run, deadlock detection must not fire while a
  // deadline is pending: it is what will wake the fiber.
  test::run_with(workers, [] {
    const auto start = std::chrono::steady_clock::now();
    rill::context c = rill::context().with_timeout(30ms);
    REQUIRE(c.deadline().has_value());
    CHECK(*c.deadline() >= start + 30ms);
    CHECK_FALSE(c.cancelled());
    CHECK_FALSE(c.done().recv().has_value());  // parks until the deadline closes done()
    CHECK(std::chrono::steady_clock::now() >= start + 30ms);
    CHECK(c.err() == rill::context_err::deadline_exceeded);
    CHECK(c.stop_token().stop_requested());
  });
}

TEST_CASE("context: deadlines inherit the earliest; one in the past cancels at once", "[context]") {
  rill::context root;
  rill::context soon = root.with_timeout(1h);
  rill::context later = soon.with_timeout(2h);  // the parent's deadline is earlier
  rill::context sooner = soon.with_timeout(30min);
  REQUIRE(later.deadline().has_value());
  CHECK(*later.deadline() == *soon.deadline());
  CHECK(*sooner.deadline() < *soon.deadline());
  CHECK_FALSE(later.cancelled());

  rill::context past = root.with_deadline(std::chrono::steady_clock::now() - 1s);
  CHECK(past.err() == rill::context_err::deadline_exceeded);
  CHECK(done_closed(past));
  CHECK_FALSE(root.cancelled());
  // Cancelling after the deadline changes nothing.
  past.cancel();
  CHECK(past.err() == rill::context_err::deadline_exceeded);
}

TEST_CASE("context: a context that goes away takes its pending deadline with it", "[context]") {
  const std::int64_t before = rill::detail::g_external_waiters.load();
  {
    rill::context c = rill::context().with_timeout(1h);
    CHECK(rill::detail::g_external_waiters.load() == before + 1);
  }
  CHECK(rill::detail::g_external_waiters.load() == before);
  {
    rill::context c = rill::context().with_timeout(1h);
    c.cancel();  // cancelled early: the deadline goes too
    CHECK(rill::detail::g_external_waiters.load() == before);
  }
}

TEST_CASE("context: select on done() with other cases; cancel from another fiber or thread",
          "[context]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::context c;
    rill::chan<int> never;
    rill::go([c] {
      rill::this_fiber::yield();
      c.cancel();
    });
    int which = -1;
    rill::select(rill::on_recv(never, [&] { which = 0; }),
                 rill::on_recv(c.done(), [&] { which = 1; }));
    CHECK(which == 1);
    CHECK(c.err() == rill::context_err::cancelled);

    // A plain thread cancels; fibers of this runtime wait on done().
    rill::context c2;
    rill::wait_group wg;
    std::atomic<int> woken{0};
    wg.add(8);
    for (int i = 0; i < 8; ++i) {
      rill::go([&, c2] {
        for (auto v : c2.done()) (void)v;  // ends when done() is closed
        woken.fetch_add(1);
        wg.done();
      });
    }
    std::thread t([c2] { c2.cancel(); });
    wg.wait();
    t.join();
    CHECK(woken.load() == 8);
  });
}

TEST_CASE("context: a pipeline runs until its context is cancelled", "[context][pipeline]") {
  test::run_with(2, [] {
    rill::context c;
    std::atomic<long> seen{0};
    auto p = rill::generate([n = 0L]() mutable -> std::optional<long> { return n++; }) |
             rill::sink([&](long) {
               if (seen.fetch_add(1) == 1000) c.cancel();
             });
    CHECK_THROWS_AS(p.run(c.stop_token()), rill::pipeline_cancelled);
    CHECK(seen.load() > 1000);
  });
}

TEST_CASE("context: concurrent derive and cancel on a shared tree", "[context]") {
  auto workers = GENERATE(2u, 4u);
  test::run_with(workers, [] {
    for (int round = 0; round < 20; ++round) {
      rill::context root;
      rill::wait_group wg;
      std::atomic<int> not_cancelled{0};
      wg.add(16);
      for (int i = 0; i < 16; ++i) {
        rill::go([&, root, i] {
          std::vector<rill::context> mine;
          for (int k = 0; k < 50; ++k) {
            rill::context parent = mine.empty() || k % 3 == 0 ? root : mine.back();
            mine.push_back(k % 2 ? parent.with_cancel() : parent.with_timeout(1h));
            if ((k + i) % 7 == 0) mine.back().cancel();
            if (k % 10 == 0) rill::this_fiber::yield();
          }
          if (i == 7) root.cancel();
          rill::this_fiber::yield();
          // Wait until the root is cancelled (by fiber 7), then every context must be.
          (void)root.done().recv();
          for (auto& c : mine) {
            if (!c.cancelled()) not_cancelled.fetch_add(1);
          }
          wg.done();
        });
      }
      wg.wait();
      REQUIRE(not_cancelled.load() == 0);
    }
  });
}

// ---- error_group --------------------------------------------------------------------------

TEST_CASE("error_group: wait returns once every fiber has finished", "[error_group]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::error_group g;
    std::atomic<int> ran{0};
    for (int i = 0; i < 100; ++i) {
      g.go([&] {
        rill::this_fiber::yield();
        ran.fetch_add(1);
      });
    }
    g.wait();
    CHECK(ran.load() == 100);
    CHECK(g.context().cancelled());  // wait() cancels the group's context (Go's rule)
    g.wait();                        // again: nothing to wait for, nothing to throw
  });
}

TEST_CASE("error_group: the first exception cancels the others and wait rethrows it",
          "[error_group]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::error_group g;
    std::atomic<int> stopped_early{0};
    for (int i = 0; i < 10; ++i) {
      // Without the cancellation these would wait forever.
      g.go([&](const rill::context& c) {
        (void)c.done().recv();
        stopped_early.fetch_add(1);
        c.throw_if_cancelled();
      });
    }
    g.go([] { throw std::runtime_error("first"); });
    try {
      g.wait();
      FAIL("wait did not throw");
    } catch (const std::runtime_error& e) {
      CHECK(std::string(e.what()) == "first");  // not a context_cancelled of the others
    }
    CHECK(stopped_early.load() == 10);
    CHECK(g.context().err() == rill::context_err::cancelled);
    CHECK_THROWS_AS(g.wait(), std::runtime_error);  // reported again
  });
}

TEST_CASE("error_group: a parent context's cancel reaches the group", "[error_group]") {
  test::run_with(2, [] {
    rill::context parent;
    rill::error_group g(parent);
    g.go([](const rill::context& c) { (void)c.done().recv(); });
    parent.cancel();
    g.wait();
    CHECK(g.context().err() == rill::context_err::cancelled);
  });
}

TEST_CASE("error_group: set_limit bounds the fibers running at once; try_go", "[error_group]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::error_group g;
    g.set_limit(3);
    std::atomic<int> running{0}, most{0}, ran{0};
    for (int i = 0; i < 40; ++i) {
      g.go([&] {
        const int now = running.fetch_add(1) + 1;
        int m = most.load();
        while (now > m && !most.compare_exchange_weak(m, now)) {
        }
        for (int k = 0; k < 5; ++k) rill::this_fiber::yield();
        running.fetch_sub(1);
        ran.fetch_add(1);
      });
    }
    g.wait();
    CHECK(ran.load() == 40);
    CHECK(most.load() <= 3);
    CHECK(most.load() >= 1);

    // try_go: with the limit reached, it refuses instead of waiting.
    rill::error_group h;
    h.set_limit(1);
    rill::chan<int> gate;
    CHECK(h.try_go([gate]() mutable { (void)gate.recv(); }));
    CHECK_FALSE(h.try_go([] {}));
    gate.close();
    h.wait();
    CHECK(h.try_go([] {}));
    h.wait();
    CHECK_THROWS_AS(h.set_limit(-1), std::invalid_argument);
    rill::chan<int> gate2;
    h.set_limit(0);  // no limit
    h.go([gate2]() mutable { (void)gate2.recv(); });
    CHECK_THROWS_AS(h.set_limit(2), std::logic_error);  // a fiber of the group runs
    gate2.close();
    h.wait();
    h.set_limit(2);
  });
}

TEST_CASE("error_group: go() outside a runtime throws and leaves the group usable",
          "[error_group]") {
  rill::error_group g;
  g.set_limit(1);
  CHECK_THROWS_AS(g.go([] {}), std::logic_error);
  CHECK_THROWS_AS(g.go([] {}), std::logic_error);  // the slot the first took was given back
  g.wait();                                        // nothing counted as running
  SUCCEED();
}

TEST_CASE("error_group: the destructor waits for the group's fibers", "[error_group]") {
  test::run_with(2, [] {
    std::atomic<int> ran{0};
    {
      rill::error_group g;
      for (int i = 0; i < 20; ++i) {
        g.go([&] {
          rill::this_fiber::yield();
          ran.fetch_add(1);
        });
      }
    }  // no wait(): the destructor waits
    CHECK(ran.load() == 20);
  });
}
