// hello_go: spawn fibers, wait for them with a wait_group, sleep without holding a thread.
#include <rill/rill.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>

int main() {
  using namespace std::chrono_literals;
  const long total = rill::run([] {
    rill::wait_group wg;
    std::atomic<long> sum{0};
    for (int i = 1; i <= 1000; ++i) {
      wg.add(1);
      rill::go([&wg, &sum, i] {
        if (i % 100 == 0) rill::this_fiber::sleep_for(10ms);  // parks the fiber, not the thread
        sum += i;
        wg.done();
      });
    }
    wg.wait();
    return sum.load();
  });
  std::printf("hello from 1000 fibers: sum = %ld (expected %ld)\n", total, 1000L * 1001 / 2);
  return total == 1000L * 1001 / 2 ? 0 : 1;
}
