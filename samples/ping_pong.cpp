// ping_pong: two fibers pass a counter back and forth over two unbuffered channels. Each
// send completes only when the other side has taken the value, so the fibers take strict
// turns; every hand-off is a channel rendezvous and a context switch.
//
//   ping_pong [rounds]     (default 100000)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <rill/rill.hpp>

int main(int argc, char** argv) {
  const long rounds = argc > 1 ? std::atol(argv[1]) : 100'000;
  if (rounds <= 0) {
    std::fprintf(stderr, "usage: ping_pong [rounds > 0]\n");
    return 2;
  }
  const auto t0 = std::chrono::steady_clock::now();
  const long last = rill::run([rounds] {
    rill::chan<long> ping, pong;
    rill::go([ping, pong]() mutable {  // the other player: add one and send it back
      for (long v : ping) pong.send(v + 1);
      pong.close();
    });
    long v = 0;
    for (long i = 0; i < rounds; ++i) {
      ping.send(v);          // completes when the other fiber has the value...
      v = *pong.recv() + 1;  // ...which comes back one higher; add ours
    }
    ping.close();                             // ends the other fiber's loop
    return pong.recv().has_value() ? -1 : v;  // nullopt: it has finished
  });
  const double ns =
      std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
  std::printf("ping_pong: %ld round trips, counter = %ld (expected %ld), %.0f ns per round trip\n",
              rounds, last, 2 * rounds, ns / static_cast<double>(rounds));
  return last == 2 * rounds ? 0 : 1;
}
