// The environment variables that set defaults: RILL_WORKERS, RILL_WATCHDOG_MS,
// RILL_SCHED_SEED, RILL_COMPACT_PARKED_MS (src/README.md, "Debugging").
#include <algorithm>
#include <climits>
#include <cstdlib>
#include <thread>

#include "sched/runtime_parts.hpp"

namespace rill::detail {

unsigned default_workers() {
  if (const char* s = std::getenv("RILL_WORKERS")) {
    long n = std::strtol(s, nullptr, 10);
    if (n > 0 && n <= 1024) return static_cast<unsigned>(n);
  }
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

// RILL_WATCHDOG_MS: the default runtime's watchdog threshold (0: off).
std::uint32_t default_watchdog_ms() {
  if (const char* s = std::getenv("RILL_WATCHDOG_MS")) {
    const long n = std::strtol(s, nullptr, 10);
    return n <= 0 ? 0 : static_cast<std::uint32_t>(std::min<long>(n, INT32_MAX));
  }
  return 100;
}

std::uint32_t default_compact_parked_ms() {
  if (const char* s = std::getenv("RILL_COMPACT_PARKED_MS")) {
    const long n = std::strtol(s, nullptr, 10);
    return n <= 0 ? 0 : static_cast<std::uint32_t>(std::min<long>(n, INT32_MAX));
  }
  return 0;
}

std::uint64_t read_chaos_seed() {
  if (const char* s = std::getenv("RILL_SCHED_SEED")) return std::strtoull(s, nullptr, 10);
  return 0;
}

}  // namespace rill::detail
