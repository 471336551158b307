// select_timeout: wait for a result, but not forever. A select with a receive case and an
// after() case runs whichever is ready first: here once with a worker fast enough to win,
// once with one too slow, whose late result nobody waits for.
#include <chrono>
#include <cstdio>
#include <optional>
#include <rill/rill.hpp>
#include <string>

using namespace std::chrono_literals;

namespace {

// fetch() starts a worker fiber that needs `work` to produce its answer, and waits for it at
// most `patience`. It returns what fired: the answer or the timeout.
std::string fetch(std::chrono::milliseconds work, std::chrono::milliseconds patience) {
  rill::chan<int> result(1);  // buffered: a late worker can still deliver, and exit
  rill::go([result, work]() mutable {
    rill::this_fiber::sleep_for(work);  // the slow part
    result.send(42);
  });
  std::string fired;
  rill::select(
      rill::on_recv(result, [&](std::optional<int> v) { fired = "result " + std::to_string(*v); }),
      rill::after(patience, [&] { fired = "timeout"; }));
  return fired;
}

}  // namespace

int main() {
  const bool ok = rill::run([] {
    const std::string fast = fetch(1ms, 2s);
    std::printf("worker needing 1 ms, waited for up to 2 s: %s\n", fast.c_str());
    const std::string slow = fetch(200ms, 20ms);
    std::printf("worker needing 200 ms, waited for up to 20 ms: %s\n", slow.c_str());
    return fast == "result 42" && slow == "timeout";
  });  // run() returns once the late worker has finished too
  return ok ? 0 : 1;
}
