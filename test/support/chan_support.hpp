// Test support for channels and select, shared by test/unit/{chan,select}_test.cpp and
// test/stress/chan_stress.cpp: waiting (by polling, never sleeping) until fibers are parked
// on a channel, runtimes without deadlock detection for tests that plain threads feed, a
// counting element type, and the scenarios of Go's TestChan, sized by the caller.
//
// Catch2 v2 is not thread-safe: assertions go in the main fiber only (it may move between
// workers, but never runs on two at once). Other fibers count failures in atomics.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <map>
#include <optional>
#include <random>
#include <rill/rill.hpp>
#include <string>
#include <utility>
#include <vector>

#include "support/run_with.hpp"

namespace test {

// figure() prints a `FIGURE name=value` line for CI to trend (research/reliability.md, 2).
inline void figure(const std::string& name, double value) {
  std::printf("FIGURE %s=%g\n", name.c_str(), value);
  std::fflush(stdout);
}

// queued() counts the waiters on the receive (or send) queue of ch, including those of
// selects that already lost (they stay linked until their select cleans up).
inline std::size_t queued(rill::detail::chan_core* ch, bool senders) {
  ch->mu_.lock();
  std::size_t n = 0;
  for (const rill::detail::waiter* w = (senders ? ch->sendq_ : ch->recvq_).head; w; w = w->next) {
    ++n;
  }
  ch->mu_.unlock();
  return n;
}

// await_receivers() / await_senders() yield until at least n parties are parked receiving
// from (sending on) ch. From a plain thread they yield the thread.
template <class Ch>
void await_receivers(const Ch& ch, std::size_t n) {
  while (queued(ch.core(), false) < n) rill::this_fiber::yield();
}
template <class Ch>
void await_senders(const Ch& ch, std::size_t n) {
  while (queued(ch.core(), true) < n) rill::this_fiber::yield();
}

// run_opts() is run_with() with full options. Tests in which a plain thread feeds fibers
// turn deadlock detection off: a thread busy outside rill while every fiber waits for it
// looks like a deadlock if the OS deschedules it for longer than the grace period.
template <class F>
auto run_opts(rill::options o, F&& f) {
  watchdog dog;
  struct leak_check {
    ~leak_check() { check_no_leaks(); }
  } lc;
  return rill::run(std::forward<F>(f), o);
}

inline rill::options no_detect(unsigned workers) {
  rill::options o;
  o.workers = workers;
  o.detect_deadlock = false;
  return o;
}

// counted: an element type that counts its constructions and destructions, and poisons
// itself when destroyed so that a use after destruction or a double destruction shows.
struct counted {
  static inline std::atomic<long> created{0};
  static inline std::atomic<long> destroyed{0};
  static inline std::atomic<long> errors{0};  // double destruction, use of a dead object
  static long live() { return created.load() - destroyed.load(); }
  static void reset() {
    created = 0;
    destroyed = 0;
    errors = 0;
  }

  explicit counted(int v) : value(v) { ++created; }
  counted(const counted& o) : value(o.get()) { ++created; }
  counted(counted&& o) noexcept : value(o.get()) {
    o.value = -1;
    ++created;
  }
  counted& operator=(const counted&) = delete;
  ~counted() {
    if (alive != magic) ++errors;
    alive = 0;
    ++destroyed;
  }
  int get() const {
    if (alive != magic) ++errors;
    return value;
  }

  static constexpr unsigned magic = 0xC0FFEE;
  int value;
  unsigned alive = magic;
};

// chan_matrix() runs, in the calling fiber, the seven checks of Go's TestChan
// (runtime/chan_test.go) on channels of capacity `cap`. Parking is observed by polling the
// channel's queues instead of sleeping a millisecond as Go does.
inline void chan_matrix(std::size_t cap) {
  INFO("capacity " << cap);
  {
    // A receive from an empty channel parks; a non-blocking one does not.
    rill::chan<int> c(cap);
    std::atomic<bool> recv1{false}, recv2{false};
    rill::wait_group wg;
    wg.add(2);
    rill::go([&] {
      (void)c.recv();
      recv1 = true;
      wg.done();
    });
    rill::go([&] {
      if (c.recv().has_value()) recv2 = true;
      wg.done();
    });
    await_receivers(c, 2);
    CHECK_FALSE(recv1.load());
    CHECK_FALSE(recv2.load());
    CHECK_FALSE(c.try_recv().has_value());
    CHECK(rill::select(rill::on_recv(c), rill::otherwise()) == 1);
    c.send(0);
    c.send(0);
    wg.wait();
    CHECK(recv1.load());
    CHECK(recv2.load());
  }
  {
    // A send to a full channel parks; a non-blocking one does not.
    rill::chan<int> c(cap);
    for (std::size_t i = 0; i < cap; ++i) c.send(static_cast<int>(i));
    std::atomic<bool> sent{false};
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      c.send(0);
      sent = true;
      wg.done();
    });
    await_senders(c, 1);
    CHECK_FALSE(sent.load());
    int v = 0;
    CHECK_FALSE(c.try_send(v));
    CHECK(rill::select(rill::on_send(c, 0), rill::otherwise()) == 1);
    (void)c.recv();
    wg.wait();
    CHECK(sent.load());
  }
  {
    // A closed channel yields its buffered values in order, then nothing.
    rill::chan<int> c(cap);
    for (std::size_t i = 0; i < cap; ++i) c.send(static_cast<int>(i));
    c.close();
    bool in_order = true;
    for (std::size_t i = 0; i < cap; ++i) in_order &= c.recv() == static_cast<int>(i);
    CHECK(in_order);
    CHECK_FALSE(c.recv().has_value());
    CHECK_FALSE(c.recv().has_value());
    CHECK_FALSE(c.try_recv().has_value());
  }
  {
    // close() unblocks a receiver, which then sees the channel closed.
    rill::chan<int> c(cap);
    rill::chan<bool> done;
    rill::go([c, done]() mutable { done.send(!c.recv().has_value()); });
    await_receivers(c, 1);
    c.close();
    CHECK(done.recv() == true);
  }
  {
    // 100 values arrive intact and in order, twice over; then 4 senders and 4 receivers
    // of 1000 values each: every value arrives exactly once per sender.
    rill::chan<int> c(cap);
    for (int round = 0; round < 2; ++round) {
      rill::go([c]() mutable {
        for (int i = 0; i < 100; ++i) c.send(i);
      });
      bool in_order = true;
      for (int i = 0; i < 100; ++i) in_order &= c.recv() == i;
      CHECK(in_order);
    }
    constexpr int P = 4, L = 1000;
    for (int p = 0; p < P; ++p) {
      rill::go([c]() mutable {
        for (int i = 0; i < L; ++i) c.send(i);
      });
    }
    rill::chan<std::map<int, int>> done;
    for (int p = 0; p < P; ++p) {
      rill::go([c, done]() mutable {
        std::map<int, int> got;
        for (int i = 0; i < L; ++i) ++got[*c.recv()];
        done.send(std::move(got));
      });
    }
    std::map<int, int> got;
    for (int p = 0; p < P; ++p) {
      const std::map<int, int> part = *done.recv();  // not `: *done.recv()`: it dangles
      for (auto [k, n] : part) got[k] += n;
    }
    CHECK(got.size() == static_cast<std::size_t>(L));
    bool each_p_times = true;
    for (auto [k, n] : got) each_p_times &= n == P;
    CHECK(each_p_times);
  }
  {
    // size() and capacity().
    rill::chan<int> c(cap);
    CHECK(c.size() == 0);
    CHECK(c.capacity() == cap);
    for (std::size_t i = 0; i < cap; ++i) c.send(static_cast<int>(i));
    CHECK(c.size() == cap);
    CHECK(c.capacity() == cap);
  }
}

// multi_consumer(): Go's TestMultiConsumer. nwork workers range over q and forward to r; a
// feeder sends niter values from a fixed pattern; the count and sum received are exact.
inline void multi_consumer(int nwork, int niter) {
  static constexpr int pn[] = {2, 3, 7, 11, 13, 17, 19, 23, 27, 31};
  const std::size_t cap = static_cast<std::size_t>(nwork) * 3;
  rill::chan<int> q(cap), r(cap);
  rill::wait_group wg;
  for (int w = 0; w < nwork; ++w) {
    wg.add(1);
    rill::go([&wg, w, q, r]() mutable {
      for (int v : q) {
        if (pn[w % 10] == v) rill::this_fiber::yield();  // mess with the FIFO-ish order
        r.send(v);
      }
      wg.done();
    });
  }
  long expect = 0;  // written by the feeder; read after r's close, which it precedes
  rill::go([&, q, r]() mutable {
    for (int i = 0; i < niter; ++i) {
      const int v = pn[i % 10];
      expect += v;
      q.send(v);
    }
    q.close();
    wg.wait();
    r.close();
  });
  long n = 0, sum = 0;
  for (int v : r) {
    ++n;
    sum += v;
  }
  CHECK(n == niter);
  CHECK(sum == expect);
}

// select_stress(): Go's TestSelectStress. Channels of capacity 0, 0, 2 and 3; on each, a
// plain sender and a plain receiver of N values; plus one fiber that sends N values on each
// in one select, and one that receives N from each in one select, dropping a channel (set
// to nil) once its N are done. Passes if it does not deadlock and leaves nothing behind.
inline void select_stress(int N) {
  std::array<rill::chan<int>, 4> c{rill::chan<int>(0), rill::chan<int>(0), rill::chan<int>(2),
                                   rill::chan<int>(3)};
  rill::wait_group wg;
  for (int k = 0; k < 4; ++k) {
    wg.add(2);
    rill::go([&, k] {
      for (int i = 0; i < N; ++i) c[k].send(0);
      wg.done();
    });
    rill::go([&, k] {
      for (int i = 0; i < N; ++i) (void)c[k].recv();
      wg.done();
    });
  }
  wg.add(2);
  rill::go([&] {
    std::array<int, 4> n{};
    auto c1 = c;
    auto sent = [&](int k) {
      return [&, k] {
        if (++n[k] == N) c1[k] = nullptr;
      };
    };
    for (int i = 0; i < 4 * N; ++i) {
      rill::select(rill::on_send(c1[3], 0, sent(3)), rill::on_send(c1[2], 0, sent(2)),
                   rill::on_send(c1[0], 0, sent(0)), rill::on_send(c1[1], 0, sent(1)));
    }
    wg.done();
  });
  rill::go([&] {
    std::array<int, 4> n{};
    auto c1 = c;
    auto got = [&](int k) {
      return [&, k] {
        if (++n[k] == N) c1[k] = nullptr;
      };
    };
    for (int i = 0; i < 4 * N; ++i) {
      rill::select(rill::on_recv(c1[0], got(0)), rill::on_recv(c1[1], got(1)),
                   rill::on_recv(c1[2], got(2)), rill::on_recv(c1[3], got(3)));
    }
    wg.done();
  });
  wg.wait();
  for (auto& ch : c) CHECK(ch.size() == 0);
}

// timed_select_race(): a sender and a receiver, each selecting with a short timeout (0 to
// 30 us) against the other, n values through a channel of capacity cap. Every value arrives
// exactly once and in order: a side whose timeout won never also completed its channel case.
inline void timed_select_race(std::size_t cap, int n, const std::string& tag) {
  rill::chan<int> c(cap);
  std::atomic<int> send_timeouts{0};
  rill::go([&send_timeouts, c, n]() mutable {
    int tries = 0;
    for (int i = 0; i < n; ++i) {
      // Arrive at varying moments, so that sends land around the receiver's deadlines.
      const auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(i * 7 % 25);
      while (std::chrono::steady_clock::now() < until) {
      }
      // A retry gets the next timeout: retrying an expired one forever would never park,
      // and on one worker the receiver would never run.
      while (rill::select(rill::on_send(c, i),
                          rill::after(std::chrono::microseconds(tries++ % 4 * 10), [] {})) != 0) {
        ++send_timeouts;
      }
    }
    c.close();
  });
  int expect = 0, wrong = 0, recv_timeouts = 0;
  for (;;) {
    std::optional<int> got;
    const std::size_t won = rill::select(
        rill::on_recv(c, [&](std::optional<int> v) { got = v; }),
        rill::after(std::chrono::microseconds((expect + recv_timeouts) % 3 * 10), [] {}));
    if (won == 1) {
      ++recv_timeouts;
      continue;
    }
    if (!got) break;
    if (*got != expect++) ++wrong;
  }
  INFO("timeouts: send " << send_timeouts.load() << ", recv " << recv_timeouts);
  figure("timed_select_send_timeouts" + tag, send_timeouts.load());
  figure("timed_select_recv_timeouts" + tag, recv_timeouts);
  CHECK(wrong == 0);  // in order: none lost, none twice
  CHECK(expect == n);
  CHECK(rill::runtime_stats().pending_timers == 0);
}

// item_accounting(): crossbeam's `drops`. `runs` times: a random capacity, a random number
// of transfers (0..max_transfers) of `counted` values plus 0..50 more that are never
// received (left buffered when the channel goes, or rejected by close() in a blocked
// sender, or dropped with a select's losing send case). No object may outlive its run,
// and the values received are exactly the ones sent, in order.
inline void item_accounting(int runs, int max_transfers, unsigned seed) {
  std::mt19937 rng(seed);
  const std::size_t caps[] = {0, 1, 7, 64};
  int wrong = 0, lost_objects = 0;
  for (int run = 0; run < runs; ++run) {
    const std::size_t cap = caps[rng() % 4];
    const int transfers = static_cast<int>(rng() % (static_cast<unsigned>(max_transfers) + 1));
    const int extra = static_cast<int>(rng() % 51);
    {
      rill::chan<counted> c(cap);
      rill::wait_group wg;
      wg.add(1);
      // By reference: a copy of the handle in the fiber's closure could outlive the check
      // below and keep the buffered elements alive.
      rill::go([&] {
        try {
          for (int i = 0; i < transfers + extra; ++i) {
            if (i % 5 == 0) {
              // A select whose send case loses to the default drops its copy.
              while (rill::select(rill::on_send(c, counted(i)), rill::otherwise()) != 0) {
                rill::this_fiber::yield();
              }
            } else {
              c.send(counted(i));
            }
          }
        } catch (const rill::closed_channel&) {
          // the rest is rejected at close
        }
        wg.done();
      });
      for (int i = 0; i < transfers; ++i) {
        auto v = c.recv();
        if (!v || v->get() != i) ++wrong;
      }
      if (extra <= static_cast<int>(cap)) {
        // All the extra values fit: wait until they are buffered, then close.
        while (c.size() < static_cast<std::size_t>(extra)) rill::this_fiber::yield();
      }
      c.close();
      wg.wait();
    }  // the channel goes, destroying what it still buffers
    if (counted::live() != 0) ++lost_objects;
  }
  CHECK(wrong == 0);
  CHECK(lost_objects == 0);
}

}  // namespace test
