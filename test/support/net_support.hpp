// Test support for the netpoller and sockets (test/unit/net_test.cpp,
// test/stress/net_stress.cpp): a runtime wrapper that also fails on leaked fd
// registrations, connected loopback pairs, an echo server fiber, and helpers that wait by
// polling (never sleeping) until a fiber is parked on I/O.
//
// Catch2 v2 is not thread-safe: assertions go in the main fiber only; other fibers count
// failures in atomics.
#pragma once

#include <sys/resource.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <rill/io.hpp>
#include <rill/net.hpp>
#include <rill/rill.hpp>
#include <string>
#include <system_error>
#include <utility>

#include "support/run_with.hpp"

namespace test {

// net_run(): run_with(), and no fd registration may outlive the run.
template <class F>
auto net_run(unsigned workers, F&& f) {
  struct io_leak_check {
    ~io_leak_check() { CHECK(rill::live_io_registrations() == 0); }
  } lc;
  return run_with(workers, std::forward<F>(f));
}

struct stream_pair {
  rill::net::tcp_stream a;  // the connecting side
  rill::net::tcp_stream b;  // the accepted side
};

// connected_pair(): two ends of one loopback TCP connection. connect() returns once the
// kernel finished the handshake, so accept() does not wait.
inline stream_pair connected_pair(const char* host = "127.0.0.1") {
  auto ln = rill::net::tcp_listener::listen(host, 0);
  auto a = rill::net::tcp_stream::connect(host, ln.port());
  auto b = ln.accept();
  return {std::move(a), std::move(b)};
}

// echo(): the echo loop of a server fiber: returns at end of stream.
inline void echo(rill::net::tcp_stream& c) {
  char buf[4096];
  while (std::size_t n = c.read(buf, sizeof buf)) c.write_all(buf, n);
}

// wait_parked_on(): yields until some fiber's dump line names `what` (e.g. "I/O read").
inline void wait_parked_on(const char* what) {
  while (rill::dump_fibers().find(what) == std::string::npos) rill::this_fiber::yield();
}

// cpu_seconds(): CPU time used by the whole process so far.
inline double cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) * 1e-9;
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// fd_limit: sets RLIMIT_NOFILE's soft limit for a scope, restores it after. UBSan's vptr
// check opens a pipe on its slow path (to probe memory), which fails with no fd left and
// reports a false "invalid vptr" on a caught std::system_error; the constructor first runs
// that check once for the types the tests use, so it is cached. A worker thread that starts
// inside the limit meets the same check on its first virtual call; warm_worker_threads()
// keeps that out of the limit.
class fd_limit {
 public:
  explicit fd_limit(rlim_t soft) {
    try {
      throw std::system_error(EMFILE, std::system_category(), "warm-up");
    } catch (const std::system_error& e) {
      volatile bool same = e.code() == std::errc::too_many_files_open;
      (void)same;
    }
    ::getrlimit(RLIMIT_NOFILE, &saved_);
    rlimit r = saved_;
    r.rlim_cur = soft < saved_.rlim_max ? soft : saved_.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &r);
  }
  ~fd_limit() { ::setrlimit(RLIMIT_NOFILE, &saved_); }
  fd_limit(const fd_limit&) = delete;
  fd_limit& operator=(const fd_limit&) = delete;

 private:
  rlimit saved_{};
};

// warm_worker_threads(): runs an empty rill::run on `workers` workers, so that the
// process-wide pool holds threads past their first call; a run right after lends those
// threads and starts none. A thread started by the run under test could otherwise make its
// first virtual call only once the test has taken every fd (see fd_limit).
inline void warm_worker_threads(unsigned workers) {
  rill::options o;
  o.workers = workers;
  rill::run([] {}, o);
}

// ensure_fds(): raises the soft RLIMIT_NOFILE to at least n (up to the hard limit).
inline bool ensure_fds(rlim_t n) {
  rlimit r{};
  ::getrlimit(RLIMIT_NOFILE, &r);
  if (r.rlim_cur >= n) return true;
  if (r.rlim_max < n) return false;
  r.rlim_cur = n;
  return ::setrlimit(RLIMIT_NOFILE, &r) == 0;
}

}  // namespace test
