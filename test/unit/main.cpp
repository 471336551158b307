#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

#include "support/listener.hpp"  // per-test watchdog; prints RILL_SCHED_SEED on failure
