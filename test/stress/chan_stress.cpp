// Stress tests of channels and select at Go's full sizes (the unit tests run the short
// ones): the TestChan matrix over capacities 0..199, TestSelectStress with N = 100,000,
// TestMultiConsumer, TestNonblockSelectRace at 100,000 iterations, timed selects, item
// accounting, and ports of test/chan/{doubleselect,goroutines,sieve1}.go. Sized by
// RILL_STRESS_SCALE (default 1).
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <optional>
#include <random>
#include <rill/rill.hpp>
#include <string>
#include <thread>
#include <vector>

#include "support/chan_support.hpp"
#include "support/run_with.hpp"

namespace {

std::string tag(unsigned workers) { return "_w" + std::to_string(workers); }

}  // namespace

TEST_CASE("chan stress: Go's TestChan checks hold for every capacity 0..199",
          "[chan][matrix][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    for (int round = 0; round < test::stress_scale(); ++round) {
      for (std::size_t cap = 0; cap < 200; ++cap) test::chan_matrix(cap);
    }
  });
}

TEST_CASE("chan stress: Go's TestSelectStress at N = 100,000", "[select][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const auto t0 = std::chrono::steady_clock::now();
  test::run_with(workers, [] { test::select_stress(100'000 * test::stress_scale()); });
  test::figure("select_stress_s" + tag(workers),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
}

TEST_CASE("chan stress: Go's TestMultiConsumer, repeated", "[chan][mpmc][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const int rounds = 3 * test::stress_scale();
  const auto t0 = std::chrono::steady_clock::now();
  test::run_with(workers, [rounds] {
    for (int r = 0; r < rounds; ++r) test::multi_consumer(23, 271828);
  });
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  test::figure("mpmc_items_per_s" + tag(workers), rounds * 271828.0 / s);
}

TEST_CASE("chan stress: timed selects racing, 10,000 values", "[select][timeout][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto cap = GENERATE(as<std::size_t>{}, 0, 1, 8);
  test::run_with(workers, [workers, cap] {
    test::timed_select_race(cap, 10'000 * test::stress_scale(),
                            "_cap" + std::to_string(cap) + tag(workers));
  });
}

TEST_CASE("chan stress: item accounting, 100 runs of up to 10,000 transfers",
          "[chan][accounting][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::counted::reset();
  test::run_with(workers, [workers] {
    test::item_accounting(100 * test::stress_scale(), 10'000, 777u + workers);
  });
  CHECK(test::counted::live() == 0);
  CHECK(test::counted::errors.load() == 0);
}

TEST_CASE("chan stress: a non-blocking select never misses a ready channel, 100,000 times",
          "[select][default][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    const int n = 100'000 * test::stress_scale();
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
  });
}

TEST_CASE("chan stress: send then try_recv never finds the channel empty (4 fibers x 25,000)",
          "[chan][try][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int fibers = 4;
    const int iters = 25'000 * test::stress_scale();
    rill::chan<int> c(fibers);
    std::atomic<int> empty_seen{0};
    rill::wait_group wg;
    for (int f = 0; f < fibers; ++f) {
      wg.add(1);
      rill::go([&] {
        for (int i = 0; i < iters; ++i) {
          c.send(i);
          if (!c.try_recv()) ++empty_seen;
        }
        wg.done();
      });
    }
    wg.wait();
    CHECK(empty_seen.load() == 0);
  });
}

TEST_CASE("chan stress: close racing senders and receivers, 300 rounds", "[chan][close][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [workers] {
    std::mt19937 rng(99 + workers);
    const int rounds = 300 * test::stress_scale();
    int bad = 0;
    for (int round = 0; round < rounds; ++round) {
      const std::size_t cap = rng() % 3 == 0 ? 0 : rng() % 20;
      const int senders = 1 + static_cast<int>(rng() % 8);
      const int receivers = 1 + static_cast<int>(rng() % 8);
      const int per_sender = 50 + static_cast<int>(rng() % 200);
      const int close_after = static_cast<int>(rng() % (senders * per_sender));
      rill::chan<int> c(cap);
      std::vector<std::vector<int>> accepted(senders), received(receivers);
      std::atomic<int> rejected{0}, nreceived{0};
      rill::wait_group wg;
      for (int s = 0; s < senders; ++s) {
        wg.add(1);
        rill::go([&, s] {
          for (int i = 0; i < per_sender; ++i) {
            try {
              c.send(s * per_sender + i);
              accepted[s].push_back(s * per_sender + i);
            } catch (const rill::closed_channel&) {
              ++rejected;
            }
          }
          wg.done();
        });
      }
      for (int r = 0; r < receivers; ++r) {
        wg.add(1);
        rill::go([&, r] {
          if (r == 0 && close_after == 0) c.close();
          for (int v : c) {
            received[r].push_back(v);
            if (++nreceived == close_after) c.close();
          }
          wg.done();
        });
      }
      wg.wait();
      std::vector<int> sent, got;
      for (auto& a : accepted) sent.insert(sent.end(), a.begin(), a.end());
      for (auto& r : received) got.insert(got.end(), r.begin(), r.end());
      std::sort(sent.begin(), sent.end());
      std::sort(got.begin(), got.end());
      if (got != sent) ++bad;
      if (sent.size() + static_cast<std::size_t>(rejected.load()) !=
          static_cast<std::size_t>(senders * per_sender)) {
        ++bad;
      }
    }
    CHECK(bad == 0);
  });
}

TEST_CASE("chan stress: select fairness over 100,000 trials within the 5-nines bound",
          "[select][fairness][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [workers] {
    const int trials = 100'000 * test::stress_scale();
    rill::chan<int> a(1), b(1), never1, never2;
    int from_a = 0;
    for (int t = 0; t < trials; ++t) {
      (void)a.try_send(0);
      (void)b.try_send(0);
      if (rill::select(rill::on_recv(never1), rill::on_recv(a), rill::on_recv(never2),
                       rill::on_recv(b)) == 1) {
        ++from_a;
      }
    }
    const double share = static_cast<double>(from_a) / trials;
    test::figure("select_fairness_share_100k" + tag(workers), share);
    CHECK(std::abs(share - 0.5) < 4.4172 / (2 * std::sqrt(static_cast<double>(trials))));
  });
}

TEST_CASE(
    "chan stress: each value sent by a four-way select is received once "
    "(Go test/chan/doubleselect.go)",
    "[select][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    const int n = 100'000 * test::stress_scale();
    rill::chan<int> c1, c2, c3, c4, cmux;
    rill::go([=]() mutable {
      for (int i = 0; i < n; ++i) {
        rill::select(rill::on_send(c1, i), rill::on_send(c2, i), rill::on_send(c3, i),
                     rill::on_send(c4, i));
      }
      c1.close();
      c2.close();
      c3.close();
      c4.close();
    });
    rill::wait_group wg;
    for (rill::chan<int> in : {c1, c2, c3, c4}) {
      wg.add(1);
      rill::go([&wg, in, cmux]() mutable {
        for (int v : in) cmux.send(v);
        wg.done();
      });
    }
    rill::go([&wg, cmux]() mutable {
      wg.wait();
      cmux.close();
    });
    std::vector<char> seen(n, 0);
    int dup = 0, count = 0;
    for (int v : cmux) {
      if (seen[v]++) ++dup;
      ++count;
    }
    CHECK(dup == 0);
    CHECK(count == n);
  });
}

TEST_CASE(
    "chan stress: a value passes down a chain of 10,000 fibers "
    "(Go test/chan/goroutines.go)",
    "[chan][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    const int n = 10'000 * test::stress_scale();
    rill::chan<int> left;
    rill::chan<int> first = left;
    for (int i = 0; i < n; ++i) {
      rill::chan<int> right;
      rill::go([left, right]() mutable { left.send(*right.recv() + 1); });
      left = right;
    }
    left.send(0);
    CHECK(first.recv() == n);
  });
}

TEST_CASE("chan stress: the concurrent prime sieve (Go test/chan/sieve1.go)", "[chan][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int nprimes = 1000;
    rill::chan<int> ch;
    rill::chan<bool> quit;
    rill::go([ch, quit]() mutable {  // generate 2, 3, 4, ... until told to stop
      for (int i = 2;; ++i) {
        if (rill::select(rill::on_send(ch, i), rill::on_recv(quit)) == 1) return;
      }
    });
    std::vector<int> primes;
    std::vector<rill::chan<bool>> quits{quit};
    for (int k = 0; k < nprimes; ++k) {
      const int prime = *ch.recv();
      primes.push_back(prime);
      rill::chan<int> out;
      rill::chan<bool> q;
      rill::go([in = ch, out, q, prime]() mutable {  // filter out multiples of prime
        for (;;) {
          std::optional<int> v;
          if (rill::select(rill::on_recv(in, [&](std::optional<int> x) { v = x; }),
                           rill::on_recv(q)) == 1) {
            return;
          }
          if (*v % prime == 0) continue;
          if (rill::select(rill::on_send(out, *v), rill::on_recv(q)) == 1) return;
        }
      });
      quits.push_back(q);
      ch = out;
    }
    for (auto& q : quits) q.close();
    // Check against a plain sieve.
    std::vector<bool> composite(primes.back() + 1, false);
    std::vector<int> expect;
    for (int i = 2; i <= primes.back(); ++i) {
      if (composite[i]) continue;
      expect.push_back(i);
      for (int j = 2 * i; j <= primes.back(); j += i) composite[j] = true;
    }
    CHECK(primes == expect);
  });
}

TEST_CASE("chan stress: fibers and plain threads share one channel both ways",
          "[chan][threads][stress]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const int n = 200'000 * test::stress_scale();
  static constexpr int fibers = 4;
  rill::chan<int> c(8);
  rill::chan<bool> producer_done(1);
  std::atomic<long> thread_sum{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([c, &thread_sum]() mutable {
      for (int v : c) thread_sum += v;
    });
  }
  threads.emplace_back([c, producer_done, n]() mutable {
    for (int i = 0; i < n; ++i) c.send(1);
    producer_done.send(true);
  });
  const long fiber_sum = test::run_opts(test::no_detect(workers), [=]() mutable {
    std::atomic<long> sum{0};
    rill::wait_group senders, receivers;
    for (int f = 0; f < fibers; ++f) {
      senders.add(1);
      rill::go([&senders, c, n]() mutable {
        for (int i = 0; i < n / fibers; ++i) c.send(1);
        senders.done();
      });
      receivers.add(1);
      rill::go([&receivers, &sum, c]() mutable {
        for (int v : c) sum += v;
        receivers.done();
      });
    }
    senders.wait();
    (void)producer_done.recv();
    c.close();
    receivers.wait();
    return sum.load();
  });
  for (auto& t : threads) t.join();
  CHECK(fiber_sum + thread_sum.load() == n + fibers * (n / fibers));
}
