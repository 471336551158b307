// fan_out_fan_in: one source, a par_map that fans the items out to several fibers doing
// uneven work, and a sink that takes the results back in input order.
//
// lookup() stands for a call to a slow service: it waits 1 to 5 ms (parking its fiber, not
// a thread), then does a little computing. With more workers the waits overlap, so the
// throughput grows with the worker count even on one core, as with goroutines.
#include <chrono>
#include <cstdio>
#include <range/v3/view/iota.hpp>
#include <rill/rill.hpp>

namespace {

struct result {
  int id;
  int steps;
};

// collatz_steps(): how many steps n takes to reach 1 (uneven work, by design).
int collatz_steps(long n) {
  int steps = 0;
  for (; n != 1; ++steps) n = n % 2 ? 3 * n + 1 : n / 2;
  return steps;
}

// lookup(): the business logic, a plain function.
result lookup(int id) {
  rill::this_fiber::sleep_for(std::chrono::milliseconds(1 + id * 7 % 5));  // the "service"
  return {id, collatz_steps(id)};
}

}  // namespace

int main() {
  const int n = 400;
  for (unsigned workers : {1u, 4u, 16u}) {
    long total_steps = 0;
    int next_id = 1;
    bool in_order = true;
    auto pipeline = rill::from(ranges::views::iota(1, n + 1)) |
                    rill::par_map(lookup, {.workers = workers, .ordered = true}) |
                    rill::for_each([&](const result& r) {
                      in_order = in_order && r.id == next_id++;
                      total_steps += r.steps;
                    });
    const auto t0 = std::chrono::steady_clock::now();
    pipeline.run();
    const std::chrono::duration<double> s = std::chrono::steady_clock::now() - t0;
    std::printf("%2u workers: %d lookups in %6.3f s = %6.0f lookups/s (steps %ld, %s)\n", workers,
                n, s.count(), n / s.count(), total_steps, in_order ? "in order" : "OUT OF ORDER");
    if (!in_order) return 1;
  }
  return 0;
}
