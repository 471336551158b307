// Tests of chan<T>, send_chan<T>, recv_chan<T>: Go's channel semantics case by case (the
// scenarios of Go's runtime/chan_test.go and test/chan/*.go, not their code), element types
// that count, throw or cannot be copied, nil handles, ranges, and plain threads.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <exception>
#include <memory>
#include <optional>
#include <range/v3/range/conversion.hpp>
#include <range/v3/view/transform.hpp>
#include <ranges>
#include <rill/rill.hpp>
#include <stdexcept>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "support/chan_support.hpp"
#include "support/run_with.hpp"
#include "sync/chan_internal.hpp"

namespace {

// Clang 14 cannot instantiate libstdc++ 12's std::views adaptors (even over std::vector),
// so the std::views checks run under gcc and newer clang only; range-v3 runs everywhere.
#if defined(__clang__) && __clang_major__ < 15
#define RILL_TEST_STD_VIEWS 0
#else
#define RILL_TEST_STD_VIEWS 1
#endif

struct empty {};

// bomb: an element whose move constructor throws when the global countdown reaches it.
// A move that succeeds empties its source (value -1), as moving a resource would.
struct bomb_error : std::exception {};
struct bomb {
  static inline std::atomic<long> countdown{0};  // > 0: the countdown-th move from now throws
  static inline std::atomic<long> moves{0};
  static inline std::atomic<long> live{0};
  static void disarm() { countdown = 0; }

  explicit bomb(int v) : value(v) { ++live; }
  bomb(bomb&& o) : value(o.value) {
    ++moves;
    if (countdown.fetch_sub(1) == 1) throw bomb_error{};
    o.value = -1;
    ++live;
  }
  bomb(const bomb&) = delete;
  bomb& operator=(const bomb&) = delete;
  ~bomb() { --live; }
  int value;
};

}  // namespace

// ---- the Go TestChan matrix ---------------------------------------------------------------

TEST_CASE("chan: Go's TestChan checks hold for every capacity 0..19", "[chan][matrix]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    for (std::size_t cap = 0; cap < 20; ++cap) test::chan_matrix(cap);
  });
}

// ---- unbuffered and buffered semantics ----------------------------------------------------

TEST_CASE("chan: an unbuffered send completes only once a receiver has taken the value", "[chan]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int n = 200;
    rill::chan<int> c;
    std::atomic<int> completed{0};  // sends that have returned
    std::vector<int> marks(n, 0);   // plain memory: marks[i] is written before the i-th recv
    std::atomic<int> stale{0};
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      for (int i = 0; i < n; ++i) {
        c.send(i);
        // Go's memory model: an unbuffered receive happens before its send completes.
        if (marks[i] != i + 1) ++stale;
        completed = i + 1;
      }
      wg.done();
    });
    int early = 0, wrong = 0;
    for (int i = 0; i < n; ++i) {
      for (int k = 0; k < i % 3; ++k) rill::this_fiber::yield();  // give the sender a lead
      if (completed.load() > i) ++early;
      marks[i] = i + 1;
      if (c.recv() != i) ++wrong;
    }
    wg.wait();
    CHECK(early == 0);
    CHECK(wrong == 0);
    CHECK(stale.load() == 0);
  });
}

TEST_CASE("chan: a buffered send completes without a receiver while there is room", "[chan]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    // The control for the unbuffered test: with capacity 1 the first send returns at once
    // and the second parks.
    rill::chan<int> c(1);
    std::atomic<int> completed{0};
    rill::wait_group wg;
    wg.add(1);
    rill::go([&completed, &wg, c]() mutable {
      for (int i = 0; i < 2; ++i) {
        c.send(i);
        completed = i + 1;
      }
      wg.done();
    });
    test::await_senders(c, 1);
    CHECK(completed.load() == 1);
    CHECK(c.size() == 1);
    CHECK(c.recv() == 0);
    CHECK(c.recv() == 1);
    wg.wait();  // `completed` outlives the fiber's last write
  });
}

TEST_CASE("chan: a buffered channel is FIFO", "[chan]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto cap = GENERATE(as<std::size_t>{}, 1, 2, 7, 64, 1000);
  test::run_with(workers, [cap] {
    constexpr int n = 2000;
    rill::chan<int> c(cap);
    rill::go([c]() mutable {
      for (int i = 0; i < n; ++i) c.send(i);
      c.close();
    });
    int expect = 0;
    bool in_order = true;
    for (int v : c) in_order &= v == expect++;
    CHECK(in_order);
    CHECK(expect == n);
  });
}

TEST_CASE("chan: a buffered channel is a counting semaphore (k-th recv before k+C-th send)",
          "[chan]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int limit = 3;
    rill::chan<empty> sem(limit);
    std::atomic<int> inside{0}, most{0};
    rill::wait_group wg;
    for (int f = 0; f < 16; ++f) {
      wg.add(1);
      rill::go([&] {
        for (int i = 0; i < 50; ++i) {
          sem.send(empty{});
          const int now = ++inside;
          int m = most.load();
          while (now > m && !most.compare_exchange_weak(m, now)) {
          }
          rill::this_fiber::yield();
          --inside;
          (void)sem.recv();
        }
        wg.done();
      });
    }
    wg.wait();
    CHECK(most.load() <= limit);
    CHECK(most.load() >= 1);
  });
}

// ---- try_send / try_recv ------------------------------------------------------------------

TEST_CASE("chan: try_send and try_recv never park", "[chan][try]") {
  auto workers = GENERATE(1u, 2u, 4u);
  // If either parked, no fiber could wake main and run() would throw deadlock_error.
  test::run_with(workers, [] {
    rill::chan<int> u;
    CHECK_FALSE(u.try_send(1));
    CHECK_FALSE(u.try_recv().has_value());

    rill::chan<int> b(2);
    CHECK_FALSE(b.try_recv().has_value());
    CHECK(b.try_send(1));
    CHECK(b.try_send(2));
    CHECK_FALSE(b.try_send(3));
    CHECK(b.size() == 2);
    CHECK(b.try_recv() == 1);
    CHECK(b.try_recv() == 2);
    CHECK_FALSE(b.try_recv().has_value());
  });
}

TEST_CASE("chan: try_send and try_recv pair with a parked partner on an unbuffered channel",
          "[chan][try]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c;
    rill::chan<int> got(1);
    rill::go([c, got]() mutable { got.send(*c.recv()); });
    test::await_receivers(c, 1);
    CHECK(c.try_send(5));
    CHECK(got.recv() == 5);

    rill::go([c]() mutable { c.send(6); });
    test::await_senders(c, 1);
    CHECK(c.try_recv() == 6);
  });
}

TEST_CASE("chan: try_send leaves its argument untouched when it returns false", "[chan][try]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<std::unique_ptr<int>> full(1);
    CHECK(full.try_send(std::make_unique<int>(1)));
    auto p = std::make_unique<int>(7);
    CHECK_FALSE(full.try_send(p));
    REQUIRE(p);
    CHECK(*p == 7);

    rill::chan<std::unique_ptr<int>> unbuffered;
    CHECK_FALSE(unbuffered.try_send(p));
    REQUIRE(p);
    CHECK(*p == 7);

    rill::chan<std::unique_ptr<int>> room(1);
    CHECK(room.try_send(p));
    CHECK_FALSE(p);  // moved into the channel
    CHECK(**room.recv() == 7);

    // On a closed channel it throws, and the argument stays with the caller too.
    auto q = std::make_unique<int>(8);
    room.close();
    CHECK_THROWS_AS(room.try_send(q), rill::closed_channel);
    REQUIRE(q);
    CHECK(*q == 8);
  });
}

// ---- close --------------------------------------------------------------------------------

TEST_CASE(
    "chan: close misuse throws closed_channel; recv on a closed, drained channel "
    "returns nullopt",
    "[chan][close]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c(3);
    c.send(1);
    c.send(2);
    CHECK_FALSE(c.closed());
    c.close();
    CHECK(c.closed());
    CHECK_THROWS_AS(c.close(), rill::closed_channel);
    CHECK_THROWS_WITH(c.close(), Catch::Contains("close of a closed channel"));
    CHECK_THROWS_AS(c.send(3), rill::closed_channel);
    CHECK_THROWS_WITH(c.send(3), Catch::Contains("send on a closed channel"));
    int v = 4;
    CHECK_THROWS_AS(c.try_send(v), rill::closed_channel);
    // Buffered values drain first, in order.
    CHECK(c.size() == 2);
    CHECK(c.recv() == 1);
    CHECK(c.try_recv() == 2);
    for (int i = 0; i < 3; ++i) {
      CHECK_FALSE(c.recv().has_value());
      CHECK_FALSE(c.try_recv().has_value());
    }
    // closed_channel is a std::logic_error, as Go panics on these.
    CHECK_THROWS_AS(c.close(), std::logic_error);

    rill::chan<int> u;
    rill::send_chan<int> s = u;
    s.close();
    CHECK_THROWS_AS(s.close(), rill::closed_channel);
    CHECK_FALSE(u.recv().has_value());
  });
}

TEST_CASE("chan: close wakes every blocked receiver with nullopt", "[chan][close]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto cap = GENERATE(as<std::size_t>{}, 0, 1, 16);
  test::run_with(workers, [cap] {
    constexpr int receivers = 64;
    rill::chan<int> c(cap);
    std::atomic<int> got_nullopt{0}, got_value{0};
    rill::wait_group wg;
    for (int r = 0; r < receivers; ++r) {
      wg.add(1);
      rill::go([&] {
        (c.recv().has_value() ? got_value : got_nullopt)++;
        wg.done();
      });
    }
    test::await_receivers(c, receivers);
    c.close();
    wg.wait();
    CHECK(got_nullopt.load() == receivers);
    CHECK(got_value.load() == 0);
  });
}

TEST_CASE(
    "chan: close makes every blocked sender throw closed_channel; buffered items "
    "drain in order",
    "[chan][close]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto cap = GENERATE(as<std::size_t>{}, 0, 1, 16);
  test::run_with(workers, [cap] {
    constexpr int senders = 64;
    rill::chan<int> c(cap);
    for (std::size_t i = 0; i < cap; ++i) c.send(static_cast<int>(i));
    std::atomic<int> rejected{0}, delivered{0};
    rill::wait_group wg;
    for (int s = 0; s < senders; ++s) {
      wg.add(1);
      rill::go([&, s] {
        try {
          c.send(1000 + s);
          ++delivered;
        } catch (const rill::closed_channel&) {
          ++rejected;
        }
        wg.done();
      });
    }
    test::await_senders(c, senders);
    c.close();
    wg.wait();
    CHECK(rejected.load() == senders);
    CHECK(delivered.load() == 0);
    bool in_order = true;
    for (std::size_t i = 0; i < cap; ++i) in_order &= c.recv() == static_cast<int>(i);
    CHECK(in_order);
    CHECK_FALSE(c.recv().has_value());
  });
}

TEST_CASE("chan: close racing senders and receivers loses and duplicates nothing",
          "[chan][close]") {
  auto workers = GENERATE(1u, 2u, 4u);
  auto cap = GENERATE(as<std::size_t>{}, 0, 1, 16);
  test::run_with(workers, [cap] {
    constexpr int senders = 8, receivers = 8, per_sender = 200;
    rill::chan<int> c(cap);
    std::vector<std::vector<int>> accepted(senders), received(receivers);
    std::atomic<int> rejected{0}, nreceived{0};
    rill::wait_group wg;
    for (int s = 0; s < senders; ++s) {
      wg.add(1);
      rill::go([&, s] {
        for (int i = 0; i < per_sender; ++i) {
          const int v = s * per_sender + i;
          try {
            c.send(v);
            accepted[s].push_back(v);
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
        for (int v : c) {
          received[r].push_back(v);
          // A receiver closes it a third of the way through, while senders still send.
          if (++nreceived == senders * per_sender / 3) c.close();
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
    CHECK(sent.size() + static_cast<std::size_t>(rejected.load()) ==
          static_cast<std::size_t>(senders * per_sender));
    CHECK(got == sent);  // nothing lost, nothing duplicated
    CHECK(std::adjacent_find(got.begin(), got.end()) == got.end());
    CHECK(rejected.load() > 0);
  });
}

// ---- range-for ----------------------------------------------------------------------------

TEST_CASE("chan: range-for receives until closed and drained", "[chan][range]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c(5);
    for (int i = 0; i < 5; ++i) c.send(i);
    c.close();
    std::vector<int> got;
    for (int v : c) got.push_back(v);
    CHECK(got == std::vector<int>{0, 1, 2, 3, 4});
    for (int v : c) got.push_back(v);  // a closed, drained channel: an empty range
    CHECK(got.size() == 5);

    rill::chan<int> u;
    rill::go([u]() mutable {
      for (int i = 0; i < 100; ++i) u.send(i);
      u.close();
    });
    long sum = 0;
    for (int v : u) sum += v;
    CHECK(sum == 99 * 100 / 2);
  });
}

TEST_CASE("chan: range-for reads nothing ahead, so a break leaves the rest in the channel",
          "[chan][range]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> b(10);
    for (int i = 0; i < 5; ++i) b.send(i);
    for (int v : b) {
      if (v == 2) break;
    }
    CHECK(b.size() == 2);
    CHECK(b.recv() == 3);

    // Unbuffered: after the break the sender is still parked on its next value.
    rill::chan<int> u;
    rill::go([u]() mutable {
      for (int i = 0; i < 5; ++i) u.send(i);
      u.close();
    });
    for (int v : u) {
      if (v == 2) break;
    }
    test::await_senders(u, 1);
    CHECK(u.recv() == 3);
    CHECK(u.recv() == 4);
    CHECK_FALSE(u.recv().has_value());
  });
}

// ---- element types ------------------------------------------------------------------------

TEST_CASE("chan: move-only elements (std::unique_ptr) travel through every operation",
          "[chan][types]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    for (std::size_t cap : {0u, 1u, 8u}) {
      rill::chan<std::unique_ptr<int>> c(cap);
      rill::go([c]() mutable {
        for (int i = 0; i < 20; ++i) c.send(std::make_unique<int>(i));
        c.close();
      });
      int expect = 0;
      bool ok = true;
      for (auto& p : c) {
        std::unique_ptr<int> mine = std::move(p);
        ok &= mine && *mine == expect++;
      }
      CHECK(ok);
      CHECK(expect == 20);
    }
    rill::chan<std::unique_ptr<int>> s(1);
    rill::select(rill::on_send(s, std::make_unique<int>(3)));
    std::unique_ptr<int> out;
    rill::select(
        rill::on_recv(s, [&](std::optional<std::unique_ptr<int>> v) { out = std::move(*v); }));
    REQUIRE(out);
    CHECK(*out == 3);
  });
}

TEST_CASE("chan: an element type of size one with no state (struct empty)", "[chan][types]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<empty> b(3);
    for (int i = 0; i < 3; ++i) b.send(empty{});
    CHECK_FALSE(b.try_send(empty{}));
    CHECK(b.size() == 3);
    for (int i = 0; i < 3; ++i) CHECK(b.recv().has_value());
    CHECK_FALSE(b.try_recv().has_value());

    rill::chan<empty> u;
    rill::go([u]() mutable {
      for (int i = 0; i < 10; ++i) u.send(empty{});
      u.close();
    });
    int n = 0;
    for (empty e : u) {
      (void)e;
      ++n;
    }
    CHECK(n == 10);
    CHECK_THROWS_AS(rill::chan<empty>(SIZE_MAX), std::length_error);
  });
}

TEST_CASE("chan: channels of channels (a reply channel per request)", "[chan][types]") {
  auto workers = GENERATE(1u, 2u, 4u);
  const auto live_before = rill::detail::g_live_channels.load();
  test::run_with(workers, [] {
    struct request {
      int x;
      rill::send_chan<int> reply;
    };
    rill::chan<request> server;
    rill::go([server]() mutable {
      for (request& r : server) r.reply.send(r.x * r.x);
    });
    rill::wait_group wg;
    std::atomic<int> wrong{0};
    for (int c = 0; c < 8; ++c) {
      wg.add(1);
      rill::go([&, server, c]() mutable {
        rill::chan<int> reply;
        for (int i = 0; i < 20; ++i) {
          server.send(request{c * 100 + i, reply});
          if (reply.recv() != (c * 100 + i) * (c * 100 + i)) ++wrong;
        }
        wg.done();
      });
    }
    wg.wait();
    server.close();
    CHECK(wrong.load() == 0);

    // A chan<chan<int>> left holding channels releases them when it goes.
    rill::chan<rill::chan<int>> cc(4);
    for (int i = 0; i < 4; ++i) {
      rill::chan<int> inner(1);
      inner.send(i);
      cc.send(inner);
    }
    rill::chan<int> first = *cc.recv();
    CHECK(first.recv() == 0);
  });
  CHECK(rill::detail::g_live_channels.load() == live_before);
}

TEST_CASE("chan: capacity SIZE_MAX throws length_error before allocating", "[chan]") {
  CHECK_THROWS_AS(rill::chan<int>(SIZE_MAX), std::length_error);
  CHECK_THROWS_AS(rill::chan<char>(SIZE_MAX), std::length_error);
  CHECK_THROWS_AS(rill::chan<int>(SIZE_MAX / sizeof(int)), std::length_error);
  struct big {
    char bytes[4096];
  };
  CHECK_THROWS_AS(rill::chan<big>(SIZE_MAX / 4096), std::length_error);
  // Large but addressable capacities are fine while nothing is buffered... up to memory.
  rill::chan<int> ok(1 << 16);
  CHECK(ok.capacity() == 1u << 16);
}

TEST_CASE("chan: chan<int> c(0) is an unbuffered channel, not a nil one", "[chan]") {
  rill::chan<int> c(0);
  CHECK(static_cast<bool>(c));
  CHECK(c.capacity() == 0);
  rill::chan<int> n = nullptr;
  CHECK_FALSE(static_cast<bool>(n));
}

TEST_CASE(
    "chan: counting elements: every object created is destroyed, none lost or "
    "duplicated",
    "[chan][types][accounting]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::counted::reset();
  test::run_with(workers, [] { test::item_accounting(100, 1000, 12345); });
  CHECK(test::counted::live() == 0);
  CHECK(test::counted::created.load() == test::counted::destroyed.load());
  CHECK(test::counted::errors.load() == 0);
}

TEST_CASE(
    "chan: an element whose move constructor throws stays with the sender or is "
    "delivered",
    "[chan][types][throwing]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int items = 100;
    for (std::size_t cap : {0u, 1u, 4u}) {
      INFO("capacity " << cap);
      // transfer() moves `items` bombs through a channel of capacity cap; returns how many
      // exceptions reached the sender or the receiver.
      std::atomic<int> errors{0};
      auto transfer = [&errors, cap] {
        rill::chan<bomb> c(cap);
        std::atomic<int> throws{0};
        rill::wait_group wg;
        wg.add(1);
        rill::go([&, c]() mutable {
          for (int i = 0; i < items; ++i) {
            if (i % 2 == 0) {
              for (;;) {
                try {
                  c.send(bomb(i));  // constructed in place: the channel's move is the first
                  break;
                } catch (const bomb_error&) {
                  ++throws;
                }
              }
              continue;
            }
            bomb b(i);
            for (;;) {
              try {
                if (c.try_send(b)) {
                  if (b.value != -1) ++errors;  // moved into the channel
                  break;
                }
                if (b.value != i) ++errors;  // false leaves it untouched
                rill::this_fiber::yield();
              } catch (const bomb_error&) {
                ++throws;
                if (b.value != i) ++errors;  // a throwing move leaves it untouched too
              }
            }
          }
          wg.done();
        });
        for (int i = 0; i < items; ++i) {
          for (;;) {
            try {
              auto v = c.recv();
              if (!v || v->value != i) ++errors;
              break;
            } catch (const bomb_error&) {
              ++throws;
            }
          }
        }
        wg.wait();
        // The channel is still usable.
        bomb::disarm();
        wg.add(1);
        rill::go([&wg, c]() mutable {
          c.send(bomb(items));
          wg.done();  // after its moved-from argument is gone, for the count of live bombs
        });
        auto last = c.recv();
        if (!last || last->value != items) ++errors;
        wg.wait();
        return throws.load();
      };

      bomb::disarm();
      bomb::moves = 0;
      CHECK(transfer() == 0);
      const long moves = bomb::moves.load();
      CHECK(moves >= items);
      int thrown = 0;
      for (long n = 1; n <= moves + 5; ++n) {
        bomb::countdown = n;
        const int t = transfer();
        if (t > 1) ++errors;
        thrown += t;
      }
      bomb::disarm();
      CHECK(errors.load() == 0);
      CHECK(thrown > moves / 2);  // most throws reach a caller (a refill of the buffer does not)
      CHECK(bomb::live.load() == 0);
    }
  });
}

// I4 (src/sync/chan.cpp): senders park only on a full buffer, so a parked sender means a
// full buffer, except after a refill from a parked sender threw. Debug builds check I4 at
// the end of every locked operation; this walks through the exception's whole window.
TEST_CASE("chan: a refill that throws leaves the buffer short while senders wait; FIFO holds",
          "[chan][types][throwing]") {
  test::run_with(1, [] {
    bomb::disarm();
    {
      rill::chan<bomb> c(2);
      c.send(bomb(0));
      c.send(bomb(1));
      rill::wait_group wg;
      wg.add(2);
      for (int v : {2, 3}) {
        rill::go([&wg, c, v]() mutable {
          c.send(bomb(v));  // the buffer is full: parks
          wg.done();
        });
        test::await_senders(c, v - 1);  // 2 parks first, then 3
      }
      // The receive moves bomb 0 out (one move), then refills the buffer from sender 2
      // (the next): that move throws. The receiver still gets its value; sender 2 stays
      // parked with bomb 2, and the buffer holds one item while two senders wait.
      bomb::countdown = 2;
      auto first = c.recv();
      bomb::disarm();
      REQUIRE(first);
      CHECK(first->value == 0);
      CHECK(c.size() == 1);
      CHECK(test::queued(c.core(), true) == 2);
      // Each receive refills from the next sender: the buffer stays short until none waits.
      std::vector<int> got;
      for (int k = 0; k < 3; ++k) {
        auto v = c.recv();
        REQUIRE(v);
        got.push_back(v->value);
      }
      wg.wait();
      CHECK(got == std::vector<int>{1, 2, 3});
      // No sender waits: the buffer fills up to its capacity again, then a sender parks.
      c.send(bomb(4));
      c.send(bomb(5));
      CHECK(c.size() == 2);
      CHECK_FALSE(c.try_send(bomb(6)));
    }
    CHECK(bomb::live.load() == 0);
  });
}

// ---- nil handles --------------------------------------------------------------------------

TEST_CASE("chan: a nil handle throws nil_channel on every operation", "[chan][nil]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> made_nil(nullptr);
    rill::chan<int> moved_from(1);
    rill::chan<int> taker = std::move(moved_from);
    CHECK(static_cast<bool>(taker));
    for (rill::chan<int>* c : {&made_nil, &moved_from}) {
      CHECK_FALSE(static_cast<bool>(*c));
      CHECK(c->core() == nullptr);
      CHECK_THROWS_AS(c->send(1), rill::nil_channel);
      int v = 1;
      CHECK_THROWS_AS(c->try_send(v), rill::nil_channel);
      CHECK_THROWS_AS(c->recv(), rill::nil_channel);
      CHECK_THROWS_AS(c->try_recv(), rill::nil_channel);
      CHECK_THROWS_AS(c->close(), rill::nil_channel);
      CHECK_THROWS_AS(c->size(), rill::nil_channel);
      CHECK_THROWS_AS(c->capacity(), rill::nil_channel);
      CHECK_THROWS_AS(c->closed(), rill::nil_channel);
      CHECK_THROWS_AS(c->begin(), rill::nil_channel);
      CHECK_THROWS_WITH(c->recv(), Catch::Contains("nil channel"));
    }
    rill::send_chan<int> s;
    rill::recv_chan<int> r;
    CHECK_FALSE(static_cast<bool>(s));
    CHECK_FALSE(static_cast<bool>(r));
    CHECK_THROWS_AS(s.send(1), rill::nil_channel);
    CHECK_THROWS_AS(s.close(), rill::nil_channel);
    CHECK_THROWS_AS(s.size(), rill::nil_channel);
    CHECK_THROWS_AS(r.recv(), rill::nil_channel);
    CHECK_THROWS_AS(r.try_recv(), rill::nil_channel);
    CHECK_THROWS_AS(r.begin(), rill::nil_channel);
    CHECK_THROWS_AS(r.capacity(), rill::nil_channel);
    // nil_channel is a std::logic_error.
    CHECK_THROWS_AS(r.recv(), std::logic_error);
    // Handles made from a nil chan are nil too; assigning a real one makes them usable.
    rill::send_chan<int> s2 = made_nil;
    CHECK_FALSE(static_cast<bool>(s2));
    made_nil = rill::chan<int>(1);
    made_nil.send(4);
    CHECK(made_nil.recv() == 4);
  });
}

// ---- directions and handles ---------------------------------------------------------------

namespace {
template <class C>
concept can_send = requires(C c, int v) {
  c.send(v);
};
template <class C>
concept can_recv = requires(C c) {
  c.recv();
};
static_assert(can_send<rill::chan<int>> && can_recv<rill::chan<int>>);
static_assert(can_send<rill::send_chan<int>> && !can_recv<rill::send_chan<int>>);
static_assert(!can_send<rill::recv_chan<int>> && can_recv<rill::recv_chan<int>>);
static_assert(std::is_convertible_v<rill::chan<int>, rill::send_chan<int>>);
static_assert(std::is_convertible_v<rill::chan<int>, rill::recv_chan<int>>);
static_assert(!std::is_convertible_v<rill::send_chan<int>, rill::recv_chan<int>>);
static_assert(!std::is_convertible_v<rill::recv_chan<int>, rill::chan<int>>);
static_assert(!std::is_convertible_v<int, rill::chan<int>>);  // capacity is explicit
static_assert(std::is_nothrow_copy_constructible_v<rill::chan<int>>);
static_assert(std::is_nothrow_move_constructible_v<rill::chan<int>>);

void produce(rill::send_chan<int> out, int n) {
  for (int i = 0; i < n; ++i) out.send(i);
  out.close();
}
long consume(rill::recv_chan<int> in) {
  long sum = 0;
  for (int v : in) sum += v;
  return sum;
}
}  // namespace

TEST_CASE("chan: send_chan and recv_chan are views of one channel in one direction",
          "[chan][handles]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    rill::chan<int> c(4);
    rill::go([c] { produce(c, 100); });
    CHECK(consume(c) == 99 * 100 / 2);

    rill::chan<int> d(2);
    rill::chan<int> copy = d;  // copies share the channel
    CHECK(copy == d);
    CHECK_FALSE(copy == rill::chan<int>(2));
    rill::send_chan<int> s = d;
    rill::recv_chan<int> r = d;
    s.send(1);
    copy.send(2);
    CHECK(s.size() == 2);
    CHECK(r.capacity() == 2);
    CHECK(s.core() == r.core());
    CHECK(r.recv() == 1);
    CHECK(d.recv() == 2);
    s.close();
    CHECK(r.closed());
  });
}

// ---- ranges -------------------------------------------------------------------------------

static_assert(std::ranges::input_range<rill::chan<int>>);
static_assert(std::ranges::view<rill::chan<int>>);
static_assert(std::ranges::input_range<rill::recv_chan<int>>);
static_assert(std::ranges::view<rill::recv_chan<int>>);
static_assert(!std::ranges::forward_range<rill::chan<int>>);
static_assert(std::ranges::input_range<rill::chan<std::unique_ptr<int>>>);
static_assert(std::ranges::viewable_range<rill::chan<int>&>);
static_assert(ranges::input_range<rill::chan<int>>);
static_assert(ranges::view_<rill::chan<int>>);
static_assert(ranges::view_<rill::recv_chan<int>>);
static_assert(ranges::viewable_range<rill::recv_chan<int>&>);

TEST_CASE("chan: std::views and range-v3 views compose over a channel", "[chan][range]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    auto fill = [](rill::chan<int> c) {
      rill::go([c]() mutable {
        for (int i = 0; i < 10; ++i) c.send(i);
        c.close();
      });
    };
#if RILL_TEST_STD_VIEWS
    {
      rill::chan<int> c(2);
      fill(c);
      std::vector<int> got;
      for (int v : c | std::views::transform([](int x) { return x * 10; })) got.push_back(v);
      CHECK(got == std::vector<int>{0, 10, 20, 30, 40, 50, 60, 70, 80, 90});
    }
#endif
    rill::chan<int> d;
    fill(d);
    rill::recv_chan<int> r = d;
    auto got =
        r | ranges::views::transform([](int x) { return x + 1; }) | ranges::to<std::vector>();
    CHECK(got == std::vector<int>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10});
  });
}

// ---- plain threads ------------------------------------------------------------------------

TEST_CASE("chan: every operation works between plain threads with no runtime", "[chan][threads]") {
  test::watchdog dog;
  rill::chan<int> u;
  rill::chan<int> b(4);
  std::thread t([u, b]() mutable {
    for (int i = 0; i < 100; ++i) u.send(i);
    b.send(-1);
    while (!b.try_send(-2)) std::this_thread::yield();
    int v = -3;
    while (rill::select(rill::on_send(b, v), rill::otherwise()) != 0) std::this_thread::yield();
    u.close();
  });
  long sum = 0;
  for (int v : u) sum += v;
  CHECK(sum == 99 * 100 / 2);
  t.join();
  CHECK(b.recv() == -1);
  CHECK(b.try_recv() == -2);
  int got = 0;
  CHECK(rill::select(rill::on_recv(b, [&](std::optional<int> v) { got = *v; })) == 0);
  CHECK(got == -3);
  b.close();
  CHECK_FALSE(b.recv().has_value());
  CHECK(rill::global_stats().live_fibers == 0);
}

TEST_CASE("chan: a plain thread feeds a runtime and collects its results", "[chan][threads]") {
  auto workers = GENERATE(1u, 2u, 4u);
  constexpr int n = 1000;
  rill::chan<int> in;        // thread -> fibers
  rill::chan<long> out(16);  // fibers -> thread
  long thread_sum = 0;
  std::thread feeder([in, out, &thread_sum]() mutable {
    // Send and collect at once (a select from a plain thread): sending everything first
    // would deadlock once `out` is full.
    int i = 0;
    while (i < n) {
      rill::select(rill::on_send(in, i, [&] { ++i; }),
                   rill::on_recv(out, [&](std::optional<long> v) { thread_sum += *v; }));
    }
    in.close();
    for (long v : out) thread_sum += v;
  });
  test::run_opts(test::no_detect(workers), [in, out]() mutable {
    rill::wait_group wg;
    for (int f = 0; f < 4; ++f) {
      wg.add(1);
      rill::go([&, in, out]() mutable {
        for (int v : in) out.send(2L * v);
        wg.done();
      });
    }
    wg.wait();
    out.close();
  });
  feeder.join();
  CHECK(thread_sum == 2L * (n - 1) * n / 2);
}

TEST_CASE("chan: fibers and plain threads park on the same channel", "[chan][threads]") {
  auto workers = GENERATE(1u, 2u, 4u);
  rill::chan<int> c;
  std::atomic<long> thread_got{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([c, &thread_got]() mutable {
      for (int v : c) thread_got += v;
    });
  }
  long fiber_got = test::run_opts(test::no_detect(workers), [c]() mutable {
    std::atomic<long> got{0};
    rill::wait_group wg;
    for (int f = 0; f < 2; ++f) {
      wg.add(1);
      rill::go([&, c]() mutable {
        for (int i = 0; i < 300; ++i) {
          if (auto v = c.recv()) got += *v;
        }
        wg.done();
      });
    }
    for (int i = 1; i <= 1000; ++i) c.send(i);
    c.close();
    wg.wait();
    return got.load();
  });
  for (auto& t : threads) t.join();
  CHECK(fiber_got + thread_got.load() == 1000L * 1001 / 2);
}

// ---- Go's TestMultiConsumer ---------------------------------------------------------------

TEST_CASE("chan: 23 consumers move 271,828 items with exact count and sum", "[chan][mpmc]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] { test::multi_consumer(23, 271828); });
}

// ---- T5: linearizable try_recv (crossbeam) ------------------------------------------------

TEST_CASE("chan: a try_recv right after one's own send never finds the channel empty",
          "[chan][try]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    constexpr int fibers = 4, iters = 2000;
    rill::chan<int> c(fibers);
    std::atomic<int> empty_seen{0};
    rill::wait_group wg;
    for (int f = 0; f < fibers; ++f) {
      wg.add(1);
      rill::go([&] {
        for (int i = 0; i < iters; ++i) {
          c.send(i);
          if (!c.try_recv()) ++empty_seen;
          if (i % 16 == 0) rill::this_fiber::yield();
        }
        wg.done();
      });
    }
    wg.wait();
    CHECK(empty_seen.load() == 0);
    CHECK(c.size() == 0);
  });
}

// ---- happens-before (checked by TSan) -----------------------------------------------------

TEST_CASE("chan: a send happens before its receive completes; close before a closed receive",
          "[chan][memory]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::run_with(workers, [] {
    for (std::size_t cap : {0u, 1u, 16u}) {
      std::vector<long> data(64, 0);  // plain memory, published through the channel
      rill::chan<int> c(cap);
      rill::go([&data, c]() mutable {
        for (int i = 0; i < 64; ++i) {
          data[i] = i * 3L;
          c.send(i);
        }
        data[0] = -5;  // written before close, read after a receive that sees it closed
        c.close();
      });
      bool ok = true;
      for (int i = 0; i < 64; ++i) {
        auto v = c.recv();
        ok &= v == i && data[*v] == i * 3L;
      }
      ok &= !c.recv().has_value() && data[0] == -5;
      CHECK(ok);
    }
  });
}
