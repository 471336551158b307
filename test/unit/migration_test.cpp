// Migration probe (research/reliability.md section 5, test T18): fibers are moved between
// worker threads, and the per-thread state that a suspension point can corrupt is checked
// after every resume:
//   - thread_local read through an opaque accessor is the *current* thread's (the runtime's
//     rule for its own TLS: research/reliability.md section 5, guard 1);
//   - the runtime's own "current fiber" accessor follows the fiber;
//   - `throw;` in a catch block that spans a suspension rethrows the fiber's own exception
//     (the runtime swaps __cxa_eh_globals at every switch);
//   - std::uncaught_exceptions() is per fiber while another fiber suspends during
//     unwinding;
//   - errno is the thread's: a switch does not touch it, and nobody carries it across a
//     migration (so code must not keep it across a suspension point).
//
// How fibers are made to move: a short sleep. The timer fires on whichever worker is
// running timers, which readies the fiber there, and an idle worker is woken to steal;
// measured, about half of the sleeps of 2-8 fibers on 2 workers resume on the other thread
// (a plain yield almost never moves a fiber: it stays in its worker's queue). Each probe
// runs until it has seen enough migrations (or an iteration cap) and reports the counts.
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <rill/rill.hpp>
#include <stdexcept>
#include <string>

#include "support/run_with.hpp"

namespace {

using namespace std::chrono_literals;

// The OS thread running the caller. Not `const` for the optimizer (unlike pthread_self()),
// so it is re-read after a suspension.
[[gnu::noinline]] long thread_tid() {
  const long t = ::syscall(SYS_gettid);
  asm volatile("" ::: "memory");
  return t;
}

thread_local long tls_slot = 0;  // each worker thread writes its own tid here

// tls_slot_address(): the runtime's rule for thread_local state: an opaque accessor that
// recomputes the address on every call (never cached across a suspension).
[[gnu::noinline]] long* tls_slot_address() {
  long* p = &tls_slot;
  asm volatile("" : "+r"(p)::"memory");
  return p;
}

[[gnu::noinline]] int* errno_address() {
  int* p = &errno;
  asm volatile("" : "+r"(p)::"memory");
  return p;
}

// suspend(): a suspension point that often resumes on another worker (see the top of the
// file).
void suspend(int) { rill::this_fiber::sleep_for(10us); }

struct tally {
  std::atomic<long> resumes{0};
  std::atomic<long> migrations{0};
  std::atomic<long> wrong{0};

  // resumed() counts one resume that started on thread `before`; returns true if it moved.
  bool resumed(long before) {
    resumes.fetch_add(1, std::memory_order_relaxed);
    if (thread_tid() == before) return false;
    migrations.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
};

// Enough migrations to mean something, and a cap so that a runtime that never migrates
// fails the `migrations > 0` check instead of running long.
constexpr long want_migrations = 200;
constexpr int max_iterations = 3000;

void figure(const char* name, long value) {
  std::printf("FIGURE %s=%ld\n", name, value);
  std::fflush(stdout);
}

}  // namespace

TEST_CASE(
    "migration: thread_local through an opaque accessor is the current thread's after "
    "a move",
    "[migration][tls]") {
  tally t;
  std::atomic<long> naive_stale{0};
  std::atomic<long> wrong_fiber{0};
  test::run_with(2, [&] {
    rill::wait_group wg;
    constexpr int fibers = 8;
    wg.add(fibers);
    for (int i = 0; i < fibers; ++i) {
      rill::go([&, i] {
        const void* self = rill::detail::current_fiber();
        for (int k = 0; k < max_iterations && t.migrations.load() < want_migrations; ++k) {
          const long before = thread_tid();
          *tls_slot_address() = before;  // mark this thread's slot with its own tid
          const long naive_before = tls_slot;
          suspend(k + i);
          const bool moved = t.resumed(before);
          const long now = thread_tid();
          long* slot = tls_slot_address();
          if (*slot != 0 && *slot != now) t.wrong.fetch_add(1);  // another thread's slot
          if (moved && tls_slot == naive_before) naive_stale.fetch_add(1);
          if (rill::detail::current_fiber() != self) wrong_fiber.fetch_add(1);
        }
        wg.done();
      });
    }
    wg.wait();
  });
  figure("migration_tls_resumes", t.resumes.load());
  figure("migration_tls_migrations", t.migrations.load());
  figure("migration_tls_naive_stale_reads", naive_stale.load());  // compiler-dependent
  REQUIRE(t.migrations.load() > 0);
  CHECK(t.wrong.load() == 0);
  CHECK(wrong_fiber.load() == 0);
}

TEST_CASE(
    "migration: throw; in a catch block spanning a suspension rethrows the fiber's own "
    "exception",
    "[migration][exceptions]") {
  // 1 worker: the other fiber throws and catches while this one is suspended in its catch
  // block (the probe's eh1). 2 workers: the same while moving between threads (ehmig).
  auto workers = GENERATE(1u, 2u);
  tally t;
  std::atomic<long> own{0}, other{0}, rounds{0};
  test::run_with(workers, [&] {
    rill::wait_group wg;
    constexpr int fibers = 2;
    wg.add(fibers);
    for (int i = 0; i < fibers; ++i) {
      rill::go([&, i] {
        const std::string mine = "fiber " + std::to_string(i);
        for (int k = 0; k < 100 || (workers > 1 && k < max_iterations &&
                                    t.migrations.load() < want_migrations / 10);
             ++k) {
          rounds.fetch_add(1);
          try {
            throw std::runtime_error(mine);
          } catch (const std::exception&) {
            const long before = thread_tid();
            if (workers == 1) {
              rill::this_fiber::yield();
            } else {
              suspend(k);
            }
            t.resumed(before);
            try {
              throw;  // the current exception: this fiber's
            } catch (const std::runtime_error& e) {
              (mine == e.what() ? own : other).fetch_add(1);
            }
          }
        }
        wg.done();
      });
    }
    wg.wait();
  });
  figure(workers == 1 ? "eh1_rethrow_own" : "ehmig_rethrow_own", own.load());
  figure(workers == 1 ? "eh1_rethrow_other" : "ehmig_rethrow_other", other.load());
  figure(workers == 1 ? "eh1_migrations" : "ehmig_migrations", t.migrations.load());
  CHECK(rounds.load() >= 200);
  CHECK(own.load() == rounds.load());
  CHECK(other.load() == 0);
  if (workers > 1) CHECK(t.migrations.load() > 0);
}

TEST_CASE(
    "migration: uncaught_exceptions is per fiber while another suspends during "
    "unwinding",
    "[migration][exceptions]") {
  auto workers = GENERATE(1u, 2u);
  std::atomic<long> observer_wrong{0}, observations{0};
  std::atomic<long> unwinder_wrong{0};
  tally t;
  test::run_with(workers, [&] {
    rill::wait_group wg;
    wg.add(2);
    struct guard {
      int k;
      std::atomic<long>& wrong;
      tally& t;
      unsigned workers;
      ~guard() {
        if (std::uncaught_exceptions() != 1) wrong.fetch_add(1);
        const long before = thread_tid();
        if (workers == 1) {
          rill::this_fiber::yield();  // suspended in the middle of unwinding
        } else {
          suspend(k);
        }
        t.resumed(before);
        if (std::uncaught_exceptions() != 1) wrong.fetch_add(1);
      }
    };
    rill::go([&] {  // the unwinder
      for (int k = 0; k < 100; ++k) {
        try {
          guard g{k, unwinder_wrong, t, workers};
          throw 1;
        } catch (int) {
        }
        if (std::uncaught_exceptions() != 0) unwinder_wrong.fetch_add(1);
      }
      wg.done();
    });
    rill::go([&] {  // the observer: no exception is ever in flight in this fiber
      for (int k = 0; k < 300; ++k) {
        if (std::uncaught_exceptions() != 0) observer_wrong.fetch_add(1);
        observations.fetch_add(1);
        if (workers == 1) {
          rill::this_fiber::yield();
        } else {
          suspend(k);
        }
        if (std::uncaught_exceptions() != 0) observer_wrong.fetch_add(1);
      }
      wg.done();
    });
    wg.wait();
  });
  figure(workers == 1 ? "uncaught_observer_wrong_1w" : "uncaught_observer_wrong_2w",
         observer_wrong.load());
  figure(workers == 1 ? "uncaught_migrations_1w" : "uncaught_migrations_2w", t.migrations.load());
  CHECK(observations.load() == 300);
  CHECK(observer_wrong.load() == 0);
  CHECK(unwinder_wrong.load() == 0);
}

TEST_CASE("migration: a switch does not touch errno; it stays with the thread",
          "[migration][errno]") {
  SECTION("one worker: the resumed fiber sees the value the other fiber left on the thread") {
    // Two fibers alternate through yield on one worker (a switch in user space, no system
    // call in between). Each writes its own errno value and yields; the other must read
    // exactly that value: the runtime neither clobbers errno nor restores a per-fiber copy.
    std::atomic<int> mismatches{0};
    test::run_with(1, [&] {
      rill::wait_group wg;
      wg.add(2);
      for (int i = 0; i < 2; ++i) {
        rill::go([&, i] {
          for (int k = 0; k < 100; ++k) {
            *errno_address() = 10'000 + 1000 * i + k;
            rill::this_fiber::yield();
            // The other fiber ran in between and wrote its value for round k (or, for
            // fiber 1's last round, fiber 0 has finished).
            const int expect = i == 0 ? 10'000 + 1000 + k : 10'000 + (k + 1 < 100 ? k + 1 : k);
            if (!(i == 1 && k == 99) && *errno_address() != expect) mismatches.fetch_add(1);
          }
          wg.done();
        });
      }
      wg.wait();
    });
    CHECK(mismatches.load() == 0);
  }
  SECTION("two workers: after a move the fiber sees the new thread's errno") {
    tally t;
    std::atomic<long> carried{0};
    test::run_with(2, [&] {
      rill::wait_group wg;
      constexpr int fibers = 4;
      wg.add(fibers);
      for (int i = 0; i < fibers; ++i) {
        rill::go([&, i] {
          for (int k = 0; k < max_iterations && t.migrations.load() < want_migrations; ++k) {
            const int mine = 20'000 + 1000 * i + k % 1000;
            *errno_address() = mine;
            const long before = thread_tid();
            suspend(k);
            if (t.resumed(before) && *errno_address() == mine) carried.fetch_add(1);
          }
          wg.done();
        });
      }
      wg.wait();
    });
    // Informative: errno is not carried across a move (code must re-read it only right
    // after the call that set it, never across a suspension point).
    figure("errno_migrations", t.migrations.load());
    figure("errno_carried_across_migration", carried.load());
    REQUIRE(t.migrations.load() > 0);
  }
}
