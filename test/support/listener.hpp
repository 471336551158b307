// Test support: a Catch2 listener included by the test mains (test/unit/main.cpp). For every
// test case it
//   - arms a watchdog (test::watchdog), so a test that hangs, with or without a runtime,
//     prints the fiber dump of every runtime and fails instead of running into the ctest
//     timeout. Limit: RILL_WATCHDOG_S if set, else 240 s (under the 300 s ctest timeout);
//   - prints RILL_SCHED_SEED=<seed> when the test fails, crashes, or a sanitizer reports,
//     so that the schedule perturbation of the failing run can be replayed.
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <memory>

#include "support/run_with.hpp"

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RILL_TEST_SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RILL_TEST_SANITIZED 1
#endif
#endif
#if RILL_TEST_SANITIZED
#include <sanitizer/common_interface_defs.h>
#endif

namespace test {

class rill_listener : public Catch::TestEventListenerBase {
 public:
  using TestEventListenerBase::TestEventListenerBase;

  void testRunStarting(const Catch::TestRunInfo& info) override {
    TestEventListenerBase::testRunStarting(info);
#if RILL_TEST_SANITIZED
    __sanitizer_set_death_callback([] { print_seed(); });  // TSan exits without a signal
#endif
  }
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    TestEventListenerBase::testCaseStarting(info);
    const char* s = std::getenv("RILL_WATCHDOG_S");
    dog_ = std::make_unique<watchdog>(std::chrono::seconds(s ? std::atoi(s) : 240));
  }
  // Also called from Catch's handler of a fatal signal (a crash, an abort), then with the
  // test failed; the watchdog may be the thread that aborted: leave it, do not join it.
  void testCaseEnded(const Catch::TestCaseStats& stats) override {
    if (dog_ && dog_->fired()) {
      (void)dog_.release();  // it printed the seed already
    } else {
      dog_.reset();
      if (stats.totals.assertions.failed > 0) print_seed();
    }
    TestEventListenerBase::testCaseEnded(stats);
  }

 private:
  std::unique_ptr<watchdog> dog_;
};

}  // namespace test

using rill_test_listener = test::rill_listener;  // the macro wants an unqualified name
CATCH_REGISTER_LISTENER(rill_test_listener)
