// Tests of select (rill/select.hpp) and of the time channels (rill/time.hpp): Go's select
// semantics, the scenarios of Go's select tests (TestSelectFairness, TestNonblockSelectRace,
// TestSelfSelect, TestSelectDuplicateChannel, TestSelectStress, TestPseudoRandomSend),
// timeouts, nil cases, and plain threads.
#include <array>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <rill/rill.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "support/chan_support.hpp"
#include "support/run_with.hpp"

using namespace std::chrono_literals;

namespace {

// select_over() selects over every channel of cs with one receive case each; `got` gets the
// value received.
template <std::size_t N, std::size_t... I>
std::size_t select_over(std::array<rill::chan<int>, N>& cs, std::optional<int>& got,
                        std::index_sequence<I...>) {
  return rill::select(rill::on_recv(cs[I], [&](std::optional<int> v) { got = v; })...);
}
template <std::size_t N>
std::size_t select_over(std::array<rill::chan<int>, N>& cs, std::optional<int>& got) {
  return select_over(cs, got, std::make_index_sequence<N>{});
}

std::size_t pending_timers() { return rill::runtime_stats().pending_timers; }

}  // namespace

// ---- basic semantics ----------------------------------------------------------------------

TEST_CASE("select: runs the one ready case, with its value, and returns its index", "[select]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> empty_c(1), ready(1), full(1);
    ready.send(5);
    full.send(0);
    std::optional<int> got;
    bool sent = false;
    const std::size_t won = rill::select(
        rill::on_recv(empty_c, [](std::optional<int>) { FAIL("empty channel chosen"); }),
        rill::on_recv(ready, [&](std::optional<int> v) { got = v; }),
        rill::on_send(full, 9, [&] { sent = true; }));
    CHECK(won == 1);
    CHECK(got == 5);
    CHECK_FALSE(sent);
    CHECK(full.size() == 1);

    // A callback may take no argument; on_send delivers to a parked receiver.
    bool ran = false;
    ready.send(6);
    CHECK(rill::select(rill::on_recv(ready, [&] { ran = true; })) == 0);
    CHECK(ran);
    CHECK(ready.size() == 0);

    rill::chan<int> u;
    rill::chan<int> back(1);
    rill::go([u, back]() mutable { back.send(*u.recv()); });
    test::await_receivers(u, 1);
    CHECK(rill::select(rill::on_recv(empty_c), rill::on_send(u, 42)) == 1);
    CHECK(back.recv() == 42);
  });
}

TEST_CASE("select: parks until a case becomes ready", "[select]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> a, b, c;
    rill::chan<std::pair<std::size_t, int>> result(1);
    rill::go([=]() mutable {
      int got = 0;
      const std::size_t won =
          rill::select(rill::on_recv(a, [&](std::optional<int> v) { got = *v; }),
                       rill::on_recv(b, [&](std::optional<int> v) { got = *v; }),
                       rill::on_recv(c, [&](std::optional<int> v) { got = *v; }));
      result.send({won, got});
    });
    test::await_receivers(b, 1);
    b.send(7);
    CHECK(result.recv() == std::pair<std::size_t, int>{1, 7});
    // The select took its waiters off the other channels.
    CHECK(test::queued(a.core(), false) == 0);
    CHECK(test::queued(c.core(), false) == 0);

    // A parked send case completes when a receiver comes.
    rill::chan<int> d;
    rill::go([=]() mutable {
      const std::size_t won = rill::select(rill::on_recv(a), rill::on_send(d, 11));
      result.send({won, 0});
    });
    test::await_senders(d, 1);
    CHECK(d.recv() == 11);
    CHECK(result.recv()->first == 1);
    CHECK(test::queued(a.core(), false) == 0);
  });
}

TEST_CASE("select: a receive case on a closed channel is ready with an empty optional",
          "[select][close]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> open, closed(2);
    closed.send(1);
    closed.close();
    std::optional<int> got;
    auto recv_closed = [&] {
      return rill::select(rill::on_recv(open),
                          rill::on_recv(closed, [&](std::optional<int> v) { got = v; }),
                          rill::otherwise());
    };
    CHECK(recv_closed() == 1);
    CHECK(got == 1);  // buffered values first
    CHECK(recv_closed() == 1);
    CHECK_FALSE(got.has_value());

    // close() wakes a parked select's receive case.
    rill::chan<int> c;
    rill::chan<int> result(1);
    rill::go([=]() mutable {
      int r = -1;
      rill::select(rill::on_recv(open),
                   rill::on_recv(c, [&](std::optional<int> v) { r = v ? 1 : 0; }));
      result.send(r);
    });
    test::await_receivers(c, 1);
    c.close();
    CHECK(result.recv() == 0);
  });
}

TEST_CASE("select: a send case on a closed channel throws closed_channel", "[select][close]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c(1);
    c.close();
    CHECK_THROWS_AS(rill::select(rill::on_send(c, 1)), rill::closed_channel);
    CHECK_THROWS_AS(rill::select(rill::on_send(c, 1), rill::otherwise()), rill::closed_channel);

    // Closed while the select is parked on it.
    rill::chan<int> u, other;
    rill::chan<int> result(1);
    rill::go([=]() mutable {
      try {
        rill::select(rill::on_recv(other), rill::on_send(u, 3));
        result.send(0);
      } catch (const rill::closed_channel&) {
        result.send(1);
      }
    });
    test::await_senders(u, 1);
    u.close();
    CHECK(result.recv() == 1);
    CHECK(test::queued(other.core(), false) == 0);
  });
}

TEST_CASE("select: callbacks run with no channel locked and may use the same channels",
          "[select]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c(1);
    c.send(1);
    for (int i = 0; i < 10; ++i) {
      rill::select(rill::on_recv(c, [&](std::optional<int> v) {
        c.send(*v + 1);  // would self-deadlock if c were still locked
        CHECK(c.size() == 1);
      }));
    }
    CHECK(c.recv() == 11);
    // An exception from a callback leaves select and nothing behind.
    c.send(0);
    CHECK_THROWS_AS(rill::select(rill::on_recv(c, [] { throw std::runtime_error("callback"); })),
                    std::runtime_error);
    CHECK(c.size() == 0);
    CHECK(c.try_send(1));
  });
}

// ---- default ------------------------------------------------------------------------------

TEST_CASE("select: otherwise runs only when no case is ready", "[select][default]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> ready(1), never;
    int defaults = 0;
    for (int i = 0; i < 1000; ++i) {
      ready.send(i);
      // The default case first, last or between: it never wins over a ready case.
      std::size_t won = 0;
      switch (i % 3) {
        case 0:
          won = rill::select(rill::otherwise(), rill::on_recv(never), rill::on_recv(ready));
          break;
        case 1:
          won = rill::select(rill::on_recv(ready), rill::on_recv(never), rill::otherwise()) + 2;
          break;
        default:
          won = rill::select(rill::on_recv(never), rill::otherwise(), rill::on_recv(ready));
          break;
      }
      if (won != 2) ++defaults;
    }
    CHECK(defaults == 0);
    CHECK(rill::select(rill::on_recv(ready), rill::on_send(never, 1), rill::otherwise()) == 2);
    CHECK(rill::select(rill::otherwise()) == 0);
  });
}

TEST_CASE(
    "select: a non-blocking select sees a value made ready before it started "
    "(Go TestNonblockSelectRace, Race2, TestNonblockRecvRace)",
    "[select][default]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int n = 1000;
    rill::chan<bool> done(1);
    for (bool close_c2 : {false, true}) {
      int no_chan_ready = 0;
      for (int i = 0; i < n; ++i) {
        rill::chan<int> c1(1), c2(1);
        c1.send(1);
        rill::go([c1, c2, done]() mutable {
          done.send(rill::select(rill::on_recv(c1), rill::on_recv(c2), rill::otherwise()) != 2);
        });
        if (close_c2) {
          c2.close();
        } else {
          c2.send(1);
        }
        rill::select(rill::on_recv(c1), rill::otherwise());
        if (!*done.recv()) ++no_chan_ready;
      }
      CHECK(no_chan_ready == 0);
    }
    int not_ready = 0;
    for (int i = 0; i < n; ++i) {
      rill::chan<int> c(1);
      c.send(1);
      rill::go([c, done]() mutable {
        done.send(rill::select(rill::on_recv(c), rill::otherwise()) == 0);
      });
      c.close();
      (void)c.recv();
      if (!*done.recv()) ++not_ready;
    }
    CHECK(not_ready == 0);
  });
}

// ---- fairness -----------------------------------------------------------------------------

TEST_CASE(
    "select: two always-ready cases share 10,000 trials 50% +- 2.2% "
    "(Go TestSelectFairness)",
    "[select][fairness]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [workers] {
    constexpr int trials = 10000;
    rill::chan<char> c1(trials + 1), c2(trials + 1), c3, c4, out, done;
    for (int i = 0; i < trials + 1; ++i) {
      c1.send(1);
      c2.send(2);
    }
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      for (;;) {
        char b = 0;
        auto take = [&](std::optional<char> v) { b = *v; };
        rill::select(rill::on_recv(c3, take), rill::on_recv(c4, take), rill::on_recv(c1, take),
                     rill::on_recv(c2, take));
        if (rill::select(rill::on_send(out, b), rill::on_recv(done)) == 1) break;
      }
      wg.done();
    });
    int cnt1 = 0, cnt2 = 0, other = 0;
    for (int i = 0; i < trials; ++i) {
      switch (*out.recv()) {
        case 1:
          ++cnt1;
          break;
        case 2:
          ++cnt2;
          break;
        default:
          ++other;
      }
    }
    done.close();
    wg.wait();
    const double share = static_cast<double>(cnt1) / trials;
    INFO("share " << share << " (" << cnt1 << " / " << cnt2 << ")");
    test::figure("select_fairness_share_w" + std::to_string(workers), share);
    CHECK(other == 0);
    CHECK(share > 0.5 - 0.022);
    CHECK(share < 0.5 + 0.022);
  });
}

TEST_CASE("select: four always-ready cases are chosen uniformly (chi-square p > 1e-5)",
          "[select][fairness]") {
  auto workers = GENERATE(1u, 2u);
  test::run_with(workers, [workers] {
    constexpr int trials = 10000;
    std::array<rill::chan<int>, 4> cs{rill::chan<int>(1), rill::chan<int>(1), rill::chan<int>(1),
                                      rill::chan<int>(1)};
    std::array<int, 4> hits{};
    for (int t = 0; t < trials; ++t) {
      for (auto& c : cs) (void)c.try_send(0);
      std::optional<int> got;
      ++hits[select_over(cs, got)];
    }
    double chi2 = 0;
    for (int h : hits) chi2 += (h - trials / 4.0) * (h - trials / 4.0) / (trials / 4.0);
    INFO("chi2 " << chi2 << " hits " << hits[0] << " " << hits[1] << " " << hits[2] << " "
                 << hits[3]);
    test::figure("select_chi2_3dof_w" + std::to_string(workers), chi2);
    CHECK(chi2 < 25.9);  // the 1 - 1e-5 quantile of chi-square with 3 degrees of freedom
  });
}

TEST_CASE("select: two send cases of one channel each go through (Go TestPseudoRandomSend)",
          "[select][fairness]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int n = 100;
    for (std::size_t cap : {std::size_t{0}, std::size_t{n}}) {
      rill::chan<int> c(cap);
      std::vector<int> got(n);
      rill::wait_group wg;
      wg.add(1);
      rill::go([&] {
        for (int i = 0; i < n; ++i) {
          rill::this_fiber::yield();
          got[i] = *c.recv();
        }
        wg.done();
      });
      for (int i = 0; i < n; ++i) rill::select(rill::on_send(c, 1), rill::on_send(c, 0));
      wg.wait();
      int ones = 0;
      for (int v : got) ones += v;
      INFO("capacity " << cap << ": " << ones << " ones of " << n);
      CHECK(ones > n / 10);
      CHECK(n - ones > n / 10);
    }
  });
}

// ---- self, duplicates, nil ----------------------------------------------------------------

TEST_CASE("select: send and receive on one channel in one select (Go TestSelfSelect)",
          "[select][self]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    for (std::size_t cap : {std::size_t{0}, std::size_t{10}}) {
      rill::chan<int> c(cap);
      std::atomic<int> self_receives{0};
      rill::wait_group wg;
      for (int p = 0; p < 2; ++p) {
        wg.add(1);
        rill::go([&, p] {
          auto check = [&](std::optional<int> v) {
            if (cap == 0 && v == p) ++self_receives;
          };
          for (int i = 0; i < 1000; ++i) {
            if (p == 0 || i % 2 == 0) {
              rill::select(rill::on_send(c, p), rill::on_recv(c, check));
            } else {
              rill::select(rill::on_recv(c, check), rill::on_send(c, p));
            }
          }
          wg.done();
        });
      }
      wg.wait();
      INFO("capacity " << cap);
      CHECK(self_receives.load() == 0);
    }
  });
}

TEST_CASE(
    "select: one channel twice in a select, with another waiter behind "
    "(Go TestSelectDuplicateChannel)",
    "[select][self]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c, d, e;
    rill::go([=]() mutable {  // A: queued twice on c, once on d
      rill::select(rill::on_recv(c), rill::on_recv(c), rill::on_recv(d));
      e.send(9);
    });
    test::await_receivers(c, 2);
    std::atomic<int> b_got{0};
    rill::wait_group wg;
    wg.add(1);
    rill::go([&, c]() mutable {  // B: queued on c behind A
      b_got = *c.recv();
      wg.done();
    });
    test::await_receivers(c, 3);
    d.send(7);  // wakes A, which takes both its waiters off c
    CHECK(e.recv() == 9);
    CHECK(test::queued(c.core(), false) == 1);
    c.send(8);  // must reach B
    wg.wait();
    CHECK(b_got.load() == 8);

    // Both cases on one ready channel: one of them runs, taking one value.
    rill::chan<int> b(2);
    b.send(1);
    b.send(2);
    std::optional<int> got;
    const auto take = [&](std::optional<int> v) { got = v; };
    CHECK(rill::select(rill::on_recv(b, take), rill::on_recv(b, take)) < 2);
    CHECK(got == 1);
    CHECK(b.size() == 1);
  });
}

TEST_CASE("select: a case on a nil channel is never ready; only nil cases throw", "[select][nil]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> nil(nullptr);
    rill::send_chan<int> nil_send;
    rill::recv_chan<int> nil_recv;
    rill::chan<int> ready(1);
    int nil_won = 0;
    for (int i = 0; i < 200; ++i) {
      ready.send(i);
      if (rill::select(rill::on_recv(nil), rill::on_send(nil_send, 1), rill::on_recv(nil_recv),
                       rill::on_recv(ready)) != 3) {
        ++nil_won;
      }
    }
    CHECK(nil_won == 0);
    CHECK(rill::select(rill::on_recv(nil), rill::on_send(nil, 1), rill::otherwise()) == 2);
    CHECK(rill::select(rill::on_recv(nil), rill::after(1ms, [] {})) == 1);
    CHECK_THROWS_AS(rill::select(rill::on_recv(nil)), std::logic_error);
    CHECK_THROWS_AS(rill::select(rill::on_recv(nil_recv), rill::on_send(nil_send, 1)),
                    std::logic_error);
    CHECK_THROWS_WITH(rill::select(rill::on_recv(nil)), Catch::Contains("nil"));
    // Go's idiom: a channel set to nil drops out of the select.
    rill::chan<int> a(1), b(1);
    a.send(1);
    a.close();
    b.send(2);
    int from_b = 0;
    for (int i = 0; i < 3; ++i) {
      rill::select(rill::on_recv(a,
                                 [&](std::optional<int> v) {
                                   if (!v) a = nullptr;
                                 }),
                   rill::on_recv(b, [&](std::optional<int> v) { from_b += *v; }));
    }
    CHECK(from_b == 2);
    CHECK_FALSE(static_cast<bool>(a));
  });
}

TEST_CASE("select: more than 16 cases", "[select]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    std::array<rill::chan<int>, 20> cs;
    for (auto& c : cs) c = rill::chan<int>(1);
    std::optional<int> got;
    for (std::size_t k = 0; k < cs.size(); ++k) {
      cs[k].send(static_cast<int>(k) * 10);
      CHECK(select_over(cs, got) == k);
      CHECK(got == static_cast<int>(k) * 10);
    }
    // Parked on all 20, woken by the 18th.
    rill::chan<std::size_t> result(1);
    rill::go([&cs, result]() mutable {
      std::optional<int> v;
      result.send(select_over(cs, v));
    });
    test::await_receivers(cs[17], 1);
    cs[17].send(170);
    CHECK(result.recv() == 17u);
    std::size_t left = 0;
    for (auto& c : cs) left += test::queued(c.core(), false);
    CHECK(left == 0);
  });
}

// ---- timeouts -----------------------------------------------------------------------------

TEST_CASE("select: an after() case fires when nothing else is ready, and leaves no timer",
          "[select][timeout]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> never;
    bool fired = false;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(rill::select(rill::on_recv(never), rill::after(5ms, [&] { fired = true; })) == 1);
    const auto waited = std::chrono::steady_clock::now() - t0;
    CHECK(fired);
    CHECK(waited >= 5ms);
    CHECK(waited < 5s);
    CHECK(pending_timers() == 0);
    CHECK(test::queued(never.core(), false) == 0);

    // Only a timeout: select sleeps. The earliest of two timeouts wins.
    CHECK(rill::select(rill::after(1h, [] {}), rill::after(1ms, [] {})) == 1);
    CHECK(pending_timers() == 0);
    // An expired timeout loses to a ready case, and wins over nothing.
    rill::chan<int> ready(1);
    ready.send(1);
    CHECK(rill::select(rill::after(0ms, [] {}), rill::on_recv(ready)) == 1);
    CHECK(rill::select(rill::after(-1ms, [] {}), rill::on_recv(ready)) == 0);
  });
}

TEST_CASE("select: when a case wins, the timeout's timer is cancelled", "[select][timeout]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c(1);
    c.send(1);
    CHECK(rill::select(rill::on_recv(c), rill::after(1h, [] {})) == 0);
    CHECK(pending_timers() == 0);

    // Parked with the timer armed, then woken by a sender.
    rill::chan<int> u;
    rill::go([u]() mutable {
      test::await_receivers(u, 1);
      u.send(2);
    });
    std::optional<int> got;
    CHECK(rill::select(rill::on_recv(u, [&](std::optional<int> v) { got = v; }),
                       rill::after(1h, [] {})) == 0);
    CHECK(got == 2);
    CHECK(pending_timers() == 0);
  });
}

TEST_CASE("select: timed selects racing each other deliver each value exactly once",
          "[select][timeout]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto cap = GENERATE(as<std::size_t>{}, 0, 1);
  test::run_with(workers, [cap, workers] {
    test::timed_select_race(cap, 2000,
                            "_cap" + std::to_string(cap) + "_w" + std::to_string(workers));
  });
}

// ---- time channels ------------------------------------------------------------------------

TEST_CASE("time: after(d) delivers the time once, no earlier than d", "[select][time]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    const auto t0 = std::chrono::steady_clock::now();
    rill::recv_chan<rill::clock_time> ch = rill::after(2ms);
    const auto t = ch.recv();
    REQUIRE(t.has_value());
    CHECK(*t - t0 >= 2ms);
    CHECK(std::chrono::steady_clock::now() - t0 >= 2ms);
    CHECK_FALSE(ch.try_recv().has_value());
    CHECK(pending_timers() == 0);

    // In a select, as a timeout channel (Go's `case <-time.After(d):`).
    rill::chan<int> never;
    CHECK(rill::select(rill::on_recv(never), rill::on_recv(rill::after(1ms))) == 1);
    CHECK(pending_timers() == 0);
  });
}

TEST_CASE("time: an after() channel nobody reads is dropped when its runtime ends",
          "[select][time]") {
  auto workers = GENERATE(1u, 2u);
  test::run_with(workers, [] {
    auto ch = rill::after(1h);
    CHECK(pending_timers() == 1);
  });  // run_with checks that no timer is left pending
}

TEST_CASE("time: a ticker ticks until stopped", "[select][time]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::ticker tk(1ms);
    auto c = tk.c();
    auto prev = *c.recv();
    bool increasing = true;
    for (int i = 0; i < 4; ++i) {
      auto t = *c.recv();
      increasing &= t > prev;
      prev = t;
    }
    CHECK(increasing);
    tk.stop();
    CHECK(pending_timers() == 0);
    (void)c.try_recv();  // a tick sent before stop() may still be buffered
    CHECK(rill::select(rill::on_recv(c), rill::after(5ms, [] {})) == 1);
    tk.stop();  // a second stop is harmless

    {
      rill::ticker scoped(1ms);
      (void)scoped.c().recv();
    }  // the destructor stops it
    CHECK(pending_timers() == 0);
  });
}

TEST_CASE("time: a ticker that outlives its runtime is dropped, then destroyed safely",
          "[select][time]") {
  std::optional<rill::ticker> tk;
  test::run_with(2u, [&] {
    tk.emplace(1ms);
    (void)tk->c().recv();
  });
  tk.reset();
}

// ---- plain threads ------------------------------------------------------------------------

TEST_CASE("select: from a plain thread, with a timeout and with fibers on the other side",
          "[select][threads]") {
  test::watchdog dog;
  {
    // No runtime at all.
    rill::chan<int> never;
    const auto t0 = std::chrono::steady_clock::now();
    CHECK(rill::select(rill::on_recv(never), rill::after(3ms, [] {})) == 1);
    CHECK(std::chrono::steady_clock::now() - t0 >= 3ms);
    auto ch = rill::after(1ms);
    CHECK(ch.recv().has_value());
  }
  auto workers = GENERATE(1u, 2u, 4u);
  constexpr int n = 500;
  rill::chan<int> c;
  int expect = 0, wrong = 0, tries = 0;
  std::thread receiver([&, c]() mutable {
    for (;;) {
      std::optional<int> got;
      const std::size_t won =
          rill::select(rill::on_recv(c, [&](std::optional<int> v) { got = v; }),
                       rill::after(std::chrono::microseconds(tries++ % 3 * 20), [] {}));
      if (won == 1) continue;
      if (!got) break;
      if (*got != expect++) ++wrong;
    }
  });
  test::run_opts(test::no_detect(workers), [c]() mutable {
    int attempt = 0;
    for (int i = 0; i < n; ++i) {
      while (rill::select(rill::on_send(c, i),
                          rill::after(std::chrono::microseconds(attempt++ % 2 * 20), [] {})) != 0) {
      }
    }
    c.close();
  });
  receiver.join();
  CHECK(wrong == 0);
  CHECK(expect == n);
}

// ---- Go's TestSelectStress (short size) ---------------------------------------------------

TEST_CASE(
    "select: plain senders and receivers with a select-sender and a select-receiver "
    "do not deadlock (Go TestSelectStress)",
    "[select][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] { test::select_stress(2000); });
}

// ---- a handover whose move throws ---------------------------------------------------------

namespace {

// trap: an element whose next move, once armed, runs `on_move` and then throws. The hook
// runs inside a channel operation, under that channel's lock, while the select it hands
// over to is claimed: it stands for a party on another channel of the select at that
// moment.
struct trap_error : std::exception {};
struct trap {
  static inline std::function<void()> on_move;
  explicit trap(int v) : value(v) {}
  trap(trap&& o) : value(o.value) {
    if (auto hook = std::exchange(on_move, nullptr)) {
      hook();
      throw trap_error{};
    }
  }
  trap(const trap&) = delete;
  trap& operator=(const trap&) = delete;
  int value;
};

}  // namespace

TEST_CASE(
    "select: when the move into or out of a parked select throws, the thrower gets the "
    "exception and the select runs again on all its cases",
    "[select][throwing]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    // A receiving select: the sender's move throws while a sender on the select's other
    // channel finds the select claimed and drops its waiter there. The select must not be
    // left parked on the first channel alone.
    rill::chan<trap> a;
    rill::chan<int> b;
    rill::chan<std::pair<std::size_t, int>> result(1);
    rill::go([=]() mutable {
      int got = 0;
      const std::size_t won =
          rill::select(rill::on_recv(a, [&](std::optional<trap> v) { got = v ? v->value : -1; }),
                       rill::on_recv(b, [&](std::optional<int> v) { got = v.value_or(-1); }));
      result.send({won, got});
    });
    test::await_receivers(a, 1);
    test::await_receivers(b, 1);
    bool dropped_taken = true;
    trap::on_move = [&, b]() mutable { dropped_taken = b.try_send(0); };
    CHECK_THROWS_AS(a.send(trap{1}), trap_error);
    CHECK_FALSE(dropped_taken);  // the select was claimed: its waiter on b was dropped
    b.send(7);                   // deadlock_error if the select were parked on `a` alone
    CHECK(result.recv() == std::pair<std::size_t, int>{1, 7});
    CHECK(test::queued(a.core(), false) == 0);

    // A sending select: the receiver's move out of it throws while a receiver on the other
    // channel drops the select's waiter there.
    rill::chan<int> c;
    rill::go([=]() mutable {
      const std::size_t won = rill::select(rill::on_send(a, trap{2}), rill::on_send(c, 3));
      result.send({won, 0});
    });
    test::await_senders(a, 1);
    test::await_senders(c, 1);
    bool dropped_got = true;
    trap::on_move = [&, c]() mutable { dropped_got = c.try_recv().has_value(); };
    CHECK_THROWS_AS(a.recv(), trap_error);
    CHECK_FALSE(dropped_got);
    CHECK(c.recv() == 3);
    CHECK(result.recv()->first == 1);
    CHECK(test::queued(a.core(), true) == 0);
  });
}
