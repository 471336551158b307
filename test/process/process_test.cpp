// Tests that run in a process of their own (see CMakeLists.txt): hidden test cases ([.hang])
// that must be caught by the watchdog, and one that leaves an abandoned fiber behind.
#include <rill/rill.hpp>

#include <catch2/catch.hpp>

#include <stdexcept>

#include "support/run_with.hpp"

// Run by ctest through expect_failure.cmake with RILL_WATCHDOG_S=2: the test hangs, so the
// listener's per-test watchdog must print the fiber dump and abort.
TEST_CASE("watchdog: a fiber blocked forever is reported with the fiber dump", "[.hang]") {
  rill::options o;
  o.workers = 2;
  o.detect_deadlock = false;  // else the runtime would report the deadlock itself
  rill::run(
      [] {
        rill::chan<int> never;
        rill::wait_group wg;
        wg.add(1);
        rill::go([&] {
          rill::this_fiber::name("blocked-forever");
          (void)never.recv();
          wg.done();
        });
        wg.wait();
      },
      o);
}

TEST_CASE("watchdog: run_with reports a hang with the fiber dump", "[.hang_run_with]") {
  // run_with() arms its own watchdog too; with detection off nothing else ends this run.
  rill::options o;
  o.workers = 1;
  o.detect_deadlock = false;
  test::watchdog dog;
  rill::run([] { (void)rill::chan<int>().recv(); }, o);
}

// A deadlock aborts every parked fiber. One parked in a destructor while an exception
// unwinds its stack cannot be thrown out of its wait; it must stay parked (and is
// abandoned), not return as if the wait had ended -- here the wait_group would "return"
// while the fiber it waits for still used the frame being unwound.
TEST_CASE("deadlock: a fiber aborted while unwinding is abandoned, not resumed", "[abandon]") {
  bool wait_returned = false;
  struct wait_in_destructor {
    rill::wait_group& wg;
    bool& returned;
    ~wait_in_destructor() {
      wg.wait();
      returned = true;
    }
  };
  rill::options o;
  o.workers = 1;
  CHECK_THROWS_AS(rill::run(
                      [&] {
                        rill::chan<int> never;
                        rill::wait_group wg;
                        wg.add(1);
                        rill::go([&] {
                          (void)never.recv();
                          wg.done();
                        });
                        wait_in_destructor guard{wg, wait_returned};
                        throw std::runtime_error("unwinding");
                      },
                      o),
                  rill::deadlock_error);
  CHECK_FALSE(wait_returned);
  // The abandoned fiber is counted as leaked, by design.
  CHECK(rill::global_stats().live_fibers == 1);
}
