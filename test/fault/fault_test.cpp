// Fault injection (research/reliability.md T31c): fail the n-th allocation, or the n-th
// stack mapping, of a workload that spawns fibers, creates channels, selects with timeouts,
// sleeps and runs a pipeline; sweep n = 1..N. Every run must end with the right result or
// with std::bad_alloc / std::system_error out of rill::run() -- never a crash, a hang, a
// std::terminate, another exception, or a leak (heap blocks, fibers, stacks, timers,
// channels).
//
// A separate executable, because it replaces the global operator new/delete: the
// replacement counts live blocks and, when armed, throws std::bad_alloc at the n-th call
// (`once`: that call only; `persistent`: that call and every later one, so cleanup paths
// that allocate fail too).
//
// Usage: rill_fault_test [--max-points N] [--only CONFIG] [--from N]
//   --max-points N  caps the allocation points tried per configuration (default: all);
//                   beyond the first 400 points the sweep strides to stay under the cap.
//   --only CONFIG   one configuration (once.workers1, ..., persistent.workers2, stack).
//   --from N        starts the allocation sweep at point N (to replay a failure).
// RILL_FAULT_VERBOSE=1 prints each point before it runs.
// Prints one FIGURE line per configuration and a total; exits non-zero on any failure.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <new>
#include <numeric>
#include <rill/pipeline.hpp>
#include <rill/rill.hpp>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "fiber/stack.hpp"
#include "support/run_with.hpp"
#include "sync/chan_internal.hpp"

// ---- the counting, failing operator new ---------------------------------------------------

namespace {

std::atomic<long> g_live_blocks{0};
std::atomic<std::uint64_t> g_calls{0};    // operator new calls since arm()
std::atomic<std::uint64_t> g_fail_at{0};  // 0: disarmed
std::atomic<bool> g_persistent{false};
std::atomic<std::uint64_t> g_injected{0};

bool should_fail() noexcept {
  const std::uint64_t at = g_fail_at.load(std::memory_order_relaxed);
  if (at == 0) return false;
  const std::uint64_t c = g_calls.fetch_add(1, std::memory_order_relaxed) + 1;
  if (c == at || (c > at && g_persistent.load(std::memory_order_relaxed))) {
    g_injected.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

void* allocate(std::size_t n, std::size_t align) noexcept {
  if (should_fail()) return nullptr;
  if (n == 0) n = 1;
  void* p = nullptr;
  if (align <= alignof(std::max_align_t)) {
    p = std::malloc(n);
  } else if (::posix_memalign(&p, align, n) != 0) {
    p = nullptr;
  }
  if (p) g_live_blocks.fetch_add(1, std::memory_order_relaxed);
  return p;
}

void deallocate(void* p) noexcept {
  if (!p) return;
  g_live_blocks.fetch_sub(1, std::memory_order_relaxed);
  std::free(p);
}

void* allocate_or_throw(std::size_t n, std::size_t align) {
  void* p = allocate(n, align);
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) { return allocate_or_throw(n, 0); }
void* operator new[](std::size_t n) { return allocate_or_throw(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return allocate_or_throw(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return allocate_or_throw(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return allocate(n, 0); }
void* operator new(std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a, const std::nothrow_t&) noexcept {
  return allocate(n, static_cast<std::size_t>(a));
}
void operator delete(void* p) noexcept { deallocate(p); }
void operator delete[](void* p) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { deallocate(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete(void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }
void operator delete[](void* p, std::align_val_t, const std::nothrow_t&) noexcept { deallocate(p); }

namespace {

void arm(std::uint64_t at, bool persistent) {
  g_calls.store(0);
  g_persistent.store(persistent);
  g_fail_at.store(at);
}
std::uint64_t disarm() {
  g_fail_at.store(0);
  return g_calls.load();
}

// ---- the workload -------------------------------------------------------------------------

// group: fibers whose first exception is kept and rethrown by wait(); a failure closes the
// group's channels so that no peer waits forever for the fiber that failed (what an
// errgroup with a context does in Go). Its destructor waits for the fibers it started.
class group {
 public:
  template <class F>
  void go(F f) {
    wg_.add(1);
    try {
      rill::go([this, f = std::move(f)]() mutable {
        try {
          f();
        } catch (...) {
          fail(std::current_exception());
        }
        wg_.done();
      });
    } catch (...) {
      wg_.done();
      fail(std::current_exception());  // the fibers already started must not wait for us
      throw;
    }
  }
  // A group left by an exception cancels its fibers and waits for them.
  ~group() {
    if (!waited_) close_all();
    wg_.wait();
  }
  void fail(std::exception_ptr e) noexcept {
    mu_.lock();
    if (!err_) err_ = std::move(e);
    mu_.unlock();
    close_all();
  }
  void close_all() noexcept {
    for (rill::detail::chan_core* c : closers_) c->try_close();
  }
  // on_fail_close(c): close c when the group fails. Call before go().
  void on_fail_close(rill::detail::chan_core* c) { closers_.push_back(c); }
  void wait() {
    waited_ = true;
    wg_.wait();
    if (err_) std::rethrow_exception(err_);
  }

 private:
  rill::wait_group wg_;
  rill::mutex mu_;
  std::exception_ptr err_;
  std::vector<rill::detail::chan_core*> closers_;
  bool waited_ = false;
};

constexpr int n_items = 64;

// Fan-out/fan-in over an unbuffered and a buffered channel; returns the sum of squares.
long fan(int consumers) {
  rill::chan<int> jobs;         // unbuffered
  rill::chan<long> results(8);  // buffered
  group g;
  g.on_fail_close(jobs.core());
  g.on_fail_close(results.core());
  g.go([jobs]() mutable {
    for (int i = 0; i < n_items; ++i) jobs.send(i);
    jobs.close();
  });
  auto left = std::make_shared<std::atomic<int>>(consumers);
  for (int k = 0; k < consumers; ++k) {
    g.go([jobs, results, left]() mutable {
      std::vector<long> mine;  // allocates as it grows
      for (int v : jobs) mine.push_back(long{v} * v);
      for (long v : mine) results.send(v);
      if (left->fetch_sub(1) == 1) results.close();
    });
  }
  long sum = 0;
  for (long v : results) sum += v;
  g.wait();
  return sum;
}

// A select with more cases than the core keeps on its stack (its waiters go on the heap),
// with a timeout; plus a sleep, rill::after and a ticker (timers).
int selects() {
  std::vector<rill::chan<int>> cs;
  for (int i = 0; i < 10; ++i) cs.emplace_back(i % 2);
  group g;
  for (auto& c : cs) g.on_fail_close(c.core());
  g.go([c = cs[7]]() mutable {
    rill::this_fiber::sleep_for(std::chrono::microseconds(200));
    c.send(7);
  });
  int got = -1;
  auto on = [&](int i) {
    return rill::on_recv(cs[i], [&got, i](std::optional<int> v) { got = v ? *v : -100 - i; });
  };
  rill::select(on(0), on(1), on(2), on(3), on(4), on(5), on(6), on(7), on(8), on(9),
               rill::after(std::chrono::seconds(20), [&] { got = -2; }));
  g.wait();
  auto t = rill::after(std::chrono::microseconds(100));
  (void)t.recv();
  rill::ticker tick(std::chrono::microseconds(100));
  (void)tick.c().recv();
  tick.stop();
  return got;
}

// More fibers alive at once than one stack slab holds (so a second slab is mapped), joined
// through a wait_group; a rill::mutex and condition_variable hand a counter around.
long many_fibers() {
  constexpr int n = 300;
  rill::chan<int> gate;  // unbuffered: every fiber stays alive until main closes it
  rill::mutex mu;
  rill::condition_variable cv;
  long total = 0;
  int arrived = 0;
  group g;
  g.on_fail_close(gate.core());
  for (int i = 0; i < n; ++i) {
    g.go([&, i] {
      {
        std::lock_guard lk(mu);
        ++arrived;
      }
      cv.notify_one();
      (void)gate.recv();  // nullopt once closed
      std::lock_guard lk(mu);
      total += i;
    });
  }
  {
    std::unique_lock lk(mu);
    cv.wait(lk, [&] { return arrived == n; });
  }
  gate.close();
  g.wait();
  return total;
}

long pipeline_sum() {
  std::vector<int> in(n_items);
  std::iota(in.begin(), in.end(), 0);
  std::vector<long> out =
      (rill::from(in) | rill::map([](int v) { return long{v} * 3; }) |
       rill::filter([](long v) { return v % 2 == 0; }) |
       rill::par_map([](long v) { return v + 1; }, {.workers = 2}) | rill::collect())
          .run();
  // Unordered par_map, flat_map, batch and take, with fusion off (every stage a fiber).
  const long n = (rill::from(in) | rill::flat_map([](int v) {
                    return std::vector<int>{v, v};
                  }) |
                  rill::par_map([](int v) { return v; }, {.workers = 2, .ordered = false}) |
                  rill::batch(4) | rill::take(10) | rill::count())
                     .run({.fusion = false});
  return std::accumulate(out.begin(), out.end(), 0L) + n;
}

long expected() {
  long fan_sum = 0;
  for (long i = 0; i < n_items; ++i) fan_sum += i * i;
  long pipe = 0;
  for (long i = 0; i < n_items; ++i) {
    if ((i * 3) % 2 == 0) pipe += i * 3 + 1;
  }
  pipe += 10;  // take(10) batches
  const long many = 300 * 299 / 2;
  return fan_sum + 7 + pipe + many;
}

long workload() { return fan(3) + selects() + many_fibers() + pipeline_sum(); }

// ---- the sweep ----------------------------------------------------------------------------

enum class outcome { ok, bad_alloc, system_error, wrong };

struct config {
  const char* name;
  unsigned workers;
  bool persistent;
};

int failures = 0;
const bool verbose = std::getenv("RILL_FAULT_VERBOSE") != nullptr;
std::uint64_t first_point = 1;  // --from: start the sweep there (to replay one point)
std::uint64_t points_tried = 0;

long live_channels() { return rill::detail::g_live_channels.load(); }

outcome run_once(unsigned workers, std::string& what) {
  rill::options o;
  o.workers = workers;
  try {
    const long r = rill::run(workload, o);
    if (r != expected()) {
      what = "wrong result " + std::to_string(r);
      return outcome::wrong;
    }
    return outcome::ok;
  } catch (const std::bad_alloc&) {
    return outcome::bad_alloc;
  } catch (const std::system_error&) {
    return outcome::system_error;
  } catch (const std::exception& e) {
    what = std::string("unexpected exception: ") + e.what();
    return outcome::wrong;
  } catch (...) {
    what = "unexpected non-std exception";
    return outcome::wrong;
  }
}

// check_clean(): nothing left behind after a run. `blocks` is the live-block count before it.
bool check_clean(long blocks, const char* cfg, const char* kind, std::uint64_t n) {
  const rill::stats s = rill::global_stats();
  const long now_blocks = g_live_blocks.load();
  const long chans = live_channels();
  if (s.live_fibers || s.live_stacks || s.pending_timers || chans || now_blocks != blocks) {
    std::fprintf(stderr,
                 "FAIL %s %s n=%llu: leak: fibers %zu stacks %zu timers %zu channels %ld "
                 "heap blocks %+ld\n",
                 cfg, kind, static_cast<unsigned long long>(n), s.live_fibers, s.live_stacks,
                 s.pending_timers, chans, now_blocks - blocks);
    ++failures;
    return false;
  }
  return true;
}

struct tally {
  std::uint64_t points = 0, ok = 0, bad_alloc = 0, system_error = 0;
  void add(outcome o) {
    ++points;
    if (o == outcome::ok) ++ok;
    if (o == outcome::bad_alloc) ++bad_alloc;
    if (o == outcome::system_error) ++system_error;
  }
};

void sweep_alloc(const config& c, std::uint64_t max_points) {
  // A clean run first: it warms up what the process keeps (lazily created statics) and
  // counts the allocation points of one run.
  std::string what;
  long blocks = g_live_blocks.load();
  arm(UINT64_MAX, false);
  outcome o = run_once(c.workers, what);
  const std::uint64_t total = disarm();
  if (o != outcome::ok) {
    std::fprintf(stderr, "FAIL %s: the clean run failed: %s\n", c.name, what.c_str());
    ++failures;
    return;
  }
  blocks = g_live_blocks.load();
  // Every point up to 400, then a stride that keeps the total under max_points.
  const std::uint64_t dense = std::min<std::uint64_t>(total + 1, 400);
  std::uint64_t stride = 1;
  if (total + 1 > max_points && max_points > dense) {
    stride = (total + 1 - dense) / (max_points - dense) + 1;
  }
  tally t;
  for (std::uint64_t n = first_point; n <= total + 1; n += (n < dense ? 1 : stride)) {
    if (t.points >= max_points) break;
    what.clear();
    if (verbose)
      std::fprintf(stderr, "%s alloc n=%llu\n", c.name, static_cast<unsigned long long>(n));
    {
      test::watchdog dog(std::chrono::seconds(60));  // a hang prints the fibers and aborts
      arm(n, c.persistent);
      o = run_once(c.workers, what);
      disarm();
    }
    t.add(o);
    if (o == outcome::wrong) {
      std::fprintf(stderr, "FAIL %s alloc n=%llu: %s\n", c.name, static_cast<unsigned long long>(n),
                   what.c_str());
      ++failures;
    }
    check_clean(blocks, c.name, "alloc", n);
    blocks = g_live_blocks.load();
  }
  points_tried += t.points;
  std::printf(
      "FIGURE fault.alloc.%s points=%llu of %llu (stride %llu) ok=%llu bad_alloc=%llu "
      "system_error=%llu\n",
      c.name, static_cast<unsigned long long>(t.points), static_cast<unsigned long long>(total),
      static_cast<unsigned long long>(stride), static_cast<unsigned long long>(t.ok),
      static_cast<unsigned long long>(t.bad_alloc),
      static_cast<unsigned long long>(t.system_error));
}

void sweep_stacks(unsigned workers) {
  // Stacks come from slabs; the n-th slab mapping fails. A slab holds many stacks, so a run
  // maps few: try more points than it uses.
  tally t;
  std::string what;
  // A clean run first, as in sweep_alloc(): what the process keeps is not a leak.
  if (run_once(workers, what) != outcome::ok) {
    std::fprintf(stderr, "FAIL stack: the clean run failed: %s\n", what.c_str());
    ++failures;
    return;
  }
  for (std::uint64_t n = 1; n <= 4; ++n) {
    const long blocks = g_live_blocks.load();
    outcome o;
    {
      test::watchdog dog(std::chrono::seconds(60));
      rill::detail::inject_stack_failure_at(n);
      o = run_once(workers, what);
      rill::detail::inject_stack_failure_at(0);
    }
    t.add(o);
    if (o == outcome::wrong) {
      std::fprintf(stderr, "FAIL stack n=%llu: %s\n", static_cast<unsigned long long>(n),
                   what.c_str());
      ++failures;
    }
    check_clean(blocks, "stack", "mmap", n);
  }
  points_tried += t.points;
  std::printf("FIGURE fault.stack_mmap.workers%u points=%llu ok=%llu bad_alloc=%llu\n", workers,
              static_cast<unsigned long long>(t.points), static_cast<unsigned long long>(t.ok),
              static_cast<unsigned long long>(t.bad_alloc));
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t max_points = UINT64_MAX;
  const char* only = nullptr;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--max-points") && i + 1 < argc) {
      max_points = std::strtoull(argv[++i], nullptr, 10);
    } else if (!std::strcmp(argv[i], "--only") && i + 1 < argc) {
      only = argv[++i];
    } else if (!std::strcmp(argv[i], "--from") && i + 1 < argc) {
      first_point = std::strtoull(argv[++i], nullptr, 10);
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  const auto t0 = std::chrono::steady_clock::now();
  const config configs[] = {
      {"once.workers1", 1, false},
      {"once.workers2", 2, false},
      {"persistent.workers1", 1, true},
      {"persistent.workers2", 2, true},
  };
  for (const config& c : configs) {
    if (!only || !std::strcmp(only, c.name)) sweep_alloc(c, max_points);
  }
  if (!only || !std::strcmp(only, "stack")) {
    sweep_stacks(1);
    sweep_stacks(2);
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf("FIGURE fault.points_tried=%llu failures=%d injected=%llu seconds=%.1f\n",
              static_cast<unsigned long long>(points_tried), failures,
              static_cast<unsigned long long>(g_injected.load()), secs);
  if (failures) {
    test::print_seed();
    return 1;
  }
  return 0;
}
