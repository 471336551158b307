// A worker process for the tests that kill one: consume <in> | map(x * 2) | publish <out>.
//   nats_test_worker <url> <in-stream> <out-subject> <durable> <ack_wait_ms> <idle_ms> <delay_us>
// (delay_us: each item's map waits that long: a slow stage, so that a test can act mid-run).
// Exits 0 once the input stayed idle for idle_ms; prints the error and exits 1 on failure.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <rill/nats.hpp>
#include <string>

int main(int argc, char** argv) {
  if (argc != 8) {
    std::fprintf(stderr, "usage: %s url in out durable ack_wait_ms idle_ms delay_us\n", argv[0]);
    return 2;
  }
  try {
    rill::nats::connection conn(argv[1]);
    (rill::nats::consume<std::int64_t>(conn,
                                       {.stream = argv[2],
                                        .durable = argv[4],
                                        .buffer = 32,
                                        .ack_wait = std::chrono::milliseconds(std::atoll(argv[5])),
                                        .idle = std::chrono::milliseconds(std::atoll(argv[6]))}) |
     rill::map([delay = std::chrono::microseconds(std::atoll(argv[7]))](std::int64_t x) {
       if (delay.count()) rill::this_fiber::sleep_for(delay);
       return x * 2;
     }) |
     rill::nats::publish<std::int64_t>(conn, argv[3]))
        .run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "nats_test_worker: %s\n", e.what());
    return 1;
  }
  return 0;
}
