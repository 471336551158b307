// nats_bench: a 3-stage distributed pipeline on NATS JetStream: producer -> worker(s) ->
// collector, each a process. benchmarks/nats/run drives it (and go_worker, the Go peer of
// the worker) and prints the table of benchmarks/README.md.
//
//   nats_bench setup     <url>                         streams BIN (bench.in), BOUT (bench.out)
//   nats_bench producer  <url> <n> <size> <rate>       n items of `size` bytes (rate/s; 0: flat
//   out) nats_bench worker    <url> <idle_ms>               BIN -> work() -> BOUT, until idle
//   nats_bench collector <url> <n>                     prints "items_per_s p50_us p99_us"
//
// An item: bytes 0..8 its number, 8..16 when it was produced (CLOCK_MONOTONIC ns: one clock
// for every process of the host), 16..24 the worker's checksum, then filler. work() is
// FNV-1a over the filler, as go_worker's is.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <rill/nats.hpp>
#include <string>
#include <vector>

namespace {

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

std::string work(std::string item) {
  std::uint64_t h = 14695981039346656037ull;
  for (std::size_t i = 24; i < item.size(); ++i) {
    h ^= static_cast<unsigned char>(item[i]);
    h *= 1099511628211ull;
  }
  std::memcpy(item.data() + 16, &h, 8);
  return item;
}

void streams(rill::nats::connection& conn) {
  conn.add_stream({.name = "BIN", .subjects = {"bench.in"}});
  conn.add_stream({.name = "BOUT", .subjects = {"bench.out"}});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: nats_bench setup|producer|worker|collector <url> ...\n");
    return 2;
  }
  const std::string role = argv[1];
  try {
    rill::nats::connection conn(argv[2]);
    if (role == "setup") {
      streams(conn);
    } else if (role == "producer" && argc == 6) {
      const std::int64_t n = std::atoll(argv[3]);
      const std::size_t size = std::max<std::size_t>(24, std::atoll(argv[4]));
      const double rate = std::atof(argv[5]);
      const std::int64_t start = now_ns();
      std::int64_t i = 0;
      (rill::generate([&]() -> std::optional<std::string> {
         if (i == n) return std::nullopt;
         if (rate > 0) {  // paced: item i leaves at start + i / rate
           const std::int64_t due = start + static_cast<std::int64_t>(i * 1e9 / rate);
           const std::int64_t wait = due - now_ns();
           if (wait > 0) rill::this_fiber::sleep_for(std::chrono::nanoseconds(wait));
         }
         std::string item(size, 'x');
         const std::int64_t t = now_ns();
         std::memcpy(item.data(), &i, 8);
         std::memcpy(item.data() + 8, &t, 8);
         ++i;
         return item;
       }) |
       rill::nats::publish<std::string>(conn, "bench.in", {.max_pending = 1024}))
          .run();
    } else if (role == "worker" && argc == 4) {
      (rill::nats::consume<std::string>(conn,
                                        {.stream = "BIN",
                                         .durable = "work",
                                         .idle = std::chrono::milliseconds(std::atol(argv[3]))}) |
       rill::map(work) | rill::nats::publish<std::string>(conn, "bench.out"))
          .run();
    } else if (role == "collector" && argc == 4) {
      const auto n = static_cast<std::size_t>(std::atoll(argv[3]));
      std::vector<std::int64_t> latency;
      latency.reserve(n);
      std::int64_t first = 0, last = 0;
      (rill::nats::consume<std::string>(conn, {.stream = "BOUT", .durable = "collect"}) |
       rill::take(n) | rill::sink([&](const std::string& item) {
         last = now_ns();
         if (latency.empty()) first = last;
         std::int64_t t;
         std::memcpy(&t, item.data() + 8, 8);
         latency.push_back(last - t);
       })).run();
      std::sort(latency.begin(), latency.end());
      auto pct = [&](double p) {
        return latency[std::min(latency.size() - 1, static_cast<std::size_t>(p * latency.size()))] /
               1e3;
      };
      const double secs = (last - first) / 1e9;
      std::printf("%.0f %.0f %.0f\n", secs > 0 ? (n - 1) / secs : 0.0, pct(0.50), pct(0.99));
    } else {
      std::fprintf(stderr, "nats_bench: bad arguments\n");
      return 2;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nats_bench %s: %s\n", role.c_str(), e.what());
    return 1;
  }
  return 0;
}
