// many_parked: N fibers parked at once, as a server holds one per idle connection, with stack
// compaction on (rill::options::compact_parked). Prints the resident memory per parked fiber
// before and after their stacks were compacted, then wakes them all with one close and checks
// that each one's locals survived.
//
//   many_parked [N]     (default 20000; 10000000 holds ten million on a 24 GB machine)
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <rill/rill.hpp>
#include <string>

using namespace std::chrono_literals;

namespace {

// status_kib("VmRSS:"): a figure of this process's, from /proc/self/status.
long status_kib(const std::string& field) {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind(field, 0) == 0) return std::stol(line.substr(field.size()));
  }
  return 0;
}
long rss_kib() { return status_kib("VmRSS:"); }

// wait_for_compaction(): until `want` stacks are held compacted, or no progress for a second
// (compaction unavailable, or nothing left that it can take).
void wait_for_compaction(std::size_t want) {
  std::size_t last = 0;
  auto since = std::chrono::steady_clock::now();
  for (;;) {
    const std::size_t now = rill::runtime_stats().compacted_fibers;
    if (now >= want) return;
    if (now != last) {
      last = now;
      since = std::chrono::steady_clock::now();
    } else if (std::chrono::steady_clock::now() - since > 1s) {
      return;
    }
    rill::this_fiber::sleep_for(20ms);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 20'000;
  rill::options o;
  o.compact_parked = 50ms;  // parked this long (at most twice): compacted
  // One close wakes every fiber: it runs long without a scheduling point, which the
  // watchdog would report.
  o.watchdog = 0ms;
  long intact = 0;
  rill::run(
      [&] {
        rill::chan<int> start;  // closed to wake them all
        rill::wait_group done;
        std::atomic<long> ok{0};
        const long before = rss_kib();
        long peak = 0;
        long spawned = 0;
        while (spawned < n) {
          // In chunks: a fiber holds its page until its stack is compacted, so spawning
          // millions at once would hold them all first.
          const long chunk = std::min<long>(n - spawned, 250'000);
          done.add(static_cast<int>(chunk));
          for (long i = 0; i < chunk; ++i, ++spawned) {
            rill::go([&, id = spawned] {
              const long mine = id * 7 + 3;  // a local, on this fiber's stack
              (void)start.recv();
              if (mine == id * 7 + 3) ok.fetch_add(1);
              done.done();
            });
          }
          peak = std::max(peak, rss_kib());
          // All but the newest slab's stacks (a few hundred) can be compacted.
          wait_for_compaction(static_cast<std::size_t>(std::max(0L, spawned - 1000)));
        }
        const rill::stats s = rill::runtime_stats();
        const double per = (rss_kib() - before) * 1024.0 / static_cast<double>(n);
        std::printf(
            "%ld fibers parked: %zu compacted, holding %.0f bytes each (kept bytes: %.0f);\n", n,
            s.compacted_fibers, per,
            s.compacted_fibers
                ? static_cast<double>(s.compacted_bytes) / static_cast<double>(s.compacted_fibers)
                : 0.0);
        std::printf(
            "  resident set %.2f GB now, %.2f GB at its peak (a page each until compacted); "
            "page tables %.2f GB\n",
            (rss_kib() - before) / 1048576.0, (peak - before) / 1048576.0,
            status_kib("VmPTE:") / 1048576.0);
        const auto t0 = std::chrono::steady_clock::now();
        start.close();
        done.wait();
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
        intact = ok.load();
        std::printf("  woke and joined all in %.0f ms; %ld of %ld kept their locals\n", ms, intact,
                    n);
        // The stacks of ended fibers go back to the system a slab at a time (a compacting
        // pool keeps a few slabs of them).
        std::printf("  resident set %.2f GB once they ended; %.2f GB at the process's peak\n",
                    (rss_kib() - before) / 1048576.0, (status_kib("VmHWM:") - before) / 1048576.0);
      },
      o);
  return intact == n ? 0 : 1;
}
