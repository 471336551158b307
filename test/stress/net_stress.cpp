// Stress tests of the netpoller (research/reliability.md T28, T29), sized by
// RILL_STRESS_SCALE: many connections and round trips, fd-number reuse with readiness in
// flight, many deadlines, a long stream of small messages under edge-triggered epoll, and
// an EMFILE storm. Loopback only. Figures are printed as `FIGURE name=value` lines.
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <rill/io.hpp>
#include <rill/net.hpp>
#include <rill/rill.hpp>
#include <string>
#include <vector>

#include "io/poller.hpp"
#include "support/net_support.hpp"

using namespace std::chrono_literals;
using rill::net::tcp_listener;
using rill::net::tcp_stream;
using clk = std::chrono::steady_clock;

namespace {

void figure(const char* name, double v) {
  std::printf("FIGURE %s=%g\n", name, v);
  std::fflush(stdout);
}

}  // namespace

TEST_CASE("net stress: 1000 connections x many round trips", "[net][stress]") {
  REQUIRE(test::ensure_fds(4096));
  test::net_run(0, [] {
    const int conns = 1000, trips = 100 * test::stress_scale();
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    rill::wait_group servers;
    std::atomic<int> server_errors{0};
    servers.add(1);
    rill::go([&] {
      for (int i = 0; i < conns; ++i) {
        auto c = std::make_shared<tcp_stream>(ln.accept());
        servers.add(1);
        rill::go([&, c] {
          try {
            test::echo(*c);
          } catch (...) {
            ++server_errors;
          }
          servers.done();
        });
      }
      servers.done();
    });
    std::atomic<long> bad{0}, errors{0};
    rill::wait_group clients;
    const auto t0 = clk::now();
    for (int i = 0; i < conns; ++i) {
      clients.add(1);
      rill::go([&, i] {
        try {
          tcp_stream s = tcp_stream::connect("127.0.0.1", ln.port());
          char msg[64], got[64];
          for (int k = 0; k < trips; ++k) {
            std::snprintf(msg, sizeof msg, "%d:%d", i, k);
            s.write_all(msg, sizeof msg);
            if (!s.read_exact(got, sizeof got) || std::memcmp(msg, got, sizeof msg) != 0) ++bad;
          }
        } catch (...) {
          ++errors;
        }
        clients.done();
      });
    }
    clients.wait();
    servers.wait();
    const double s = test::seconds_since(t0);
    figure("net_stress.round_trips_per_s", conns * trips / s);
    CHECK(errors == 0);
    CHECK(bad == 0);
    CHECK(server_errors == 0);
  });
}

TEST_CASE("net stress: fd reuse with readiness in flight never misdelivers", "[net][stress]") {
  test::net_run(3, [] {
    const int cycles = 100'000 * test::stress_scale();
    long misdelivered = 0, reused = 0;
    for (int i = 0; i < cycles; ++i) {
      int a[2], b[2];
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a) == 0);
      auto ra = rill::detail::io_open(a[0], true);
      rill::go([w = a[1]] {
        char x = 'A';
        (void)!::send(w, &x, 1, MSG_NOSIGNAL);
        ::close(w);
      });
      if (i % 2) rill::this_fiber::yield();
      rill::detail::io_close(ra);
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b) == 0);
      auto rb = rill::detail::io_open(b[0], true);
      reused += rb.pd == ra.pd && b[0] == a[0];
      rill::detail::io_set_deadline(rb, rill::detail::io_read, 0);  // passed: no parking
      rill::this_fiber::yield();  // let other workers dispatch what they polled
      if (rill::detail::io_wait(rb, rill::detail::io_read) == rill::detail::io_status::ready) {
        ++misdelivered;
      }
      rill::detail::io_close(rb);
      ::close(b[1]);
    }
    figure("net_stress.fd_reuse_cycles", cycles);
    figure("net_stress.fd_reuse_same_fd_and_desc", static_cast<double>(reused));
    CHECK(misdelivered == 0);
    CHECK(reused > 0);
  });
}

TEST_CASE("net stress: 1000 read deadlines fire within slack", "[net][stress]") {
  REQUIRE(test::ensure_fds(4096));
  test::net_run(0, [] {
    constexpr int n = 1000;
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    std::vector<tcp_stream> clients, servers;
    for (int i = 0; i < n; ++i) {
      clients.push_back(tcp_stream::connect("127.0.0.1", ln.port()));
      servers.push_back(ln.accept());
    }
    std::vector<double> late(n);
    std::atomic<int> timeouts{0};
    rill::wait_group wg;
    const auto deadline = clk::now() + 200ms;
    for (int i = 0; i < n; ++i) {
      wg.add(1);
      rill::go([&, i] {
        clients[i].set_read_deadline(deadline);
        char b;
        try {
          (void)clients[i].read(&b, 1);
        } catch (const std::system_error& e) {
          if (e.code() == rill::io_errc::deadline_exceeded) ++timeouts;
        }
        late[i] = std::chrono::duration<double>(clk::now() - deadline).count();
        wg.done();
      });
    }
    wg.wait();
    std::sort(late.begin(), late.end());
    figure("net_stress.deadline_lateness_p99_ms", late[n * 99 / 100] * 1e3);
    CHECK(timeouts == n);
    CHECK(late.front() >= 0);
    CHECK(late[n * 99 / 100] < 1.0);  // 1000 wake-ups at once, each an exception
  });
}

TEST_CASE("net stress: a million small messages under edge-triggered epoll, none stuck",
          "[net][stress]") {
  test::net_run(2, [] {
    const long msgs = 1'000'000L * test::stress_scale();
    auto p = test::connected_pair();
    rill::go([&] {
      char m[8] = {'m', 's', 'g', '.', '.', '.', '.', '\n'};
      for (long i = 0; i < msgs; ++i) p.a.write_all(m, sizeof m);
      p.a.shutdown_write();
    });
    long got = 0;
    char buf[8192];
    const auto t0 = clk::now();
    while (std::size_t n = p.b.read(buf, sizeof buf)) got += static_cast<long>(n);
    figure("net_stress.small_messages_per_s", msgs / test::seconds_since(t0));
    CHECK(got == msgs * 8);
  });
}

TEST_CASE("net stress: an EMFILE storm does not make a backing-off accept loop spin",
          "[net][stress]") {
  test::warm_worker_threads(2);
  test::net_run(2, [] {
    constexpr int clients_n = 40;
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    std::vector<tcp_stream> clients;
    for (int i = 0; i < clients_n; ++i)
      clients.push_back(tcp_stream::connect("127.0.0.1", ln.port()));
    std::vector<tcp_stream> accepted;
    std::atomic<int> emfiles{0};
    double storm_cpu = 0, storm_wall = 0;
    {
      const int lowest_free = ::dup(0);
      REQUIRE(lowest_free >= 0);
      ::close(lowest_free);
      test::fd_limit limit(static_cast<rlim_t>(lowest_free + 5));  // a few more fds at most
      const double cpu0 = test::cpu_seconds();
      const auto t0 = clk::now();
      // For 300 ms, the accept loop a server would run, backing off on EMFILE: it takes
      // what fits under the limit, then every accept fails.
      rill::wait_group storm;
      storm.add(1);
      rill::go([&] {
        auto backoff = 1ms;
        while (clk::now() - t0 < 300ms) {
          try {
            accepted.push_back(ln.accept());
            backoff = 1ms;
          } catch (const std::system_error& e) {
            if (e.code() != std::errc::too_many_files_open) throw;
            ++emfiles;
            rill::this_fiber::sleep_for(backoff);
            backoff = std::min(backoff * 2, std::chrono::milliseconds(50));
          }
        }
        storm.done();
      });
      storm.wait();
      storm_cpu = test::cpu_seconds() - cpu0;
      storm_wall = test::seconds_since(t0);
    }
    while (static_cast<int>(accepted.size()) < clients_n) accepted.push_back(ln.accept());
    figure("net_stress.emfile_storm_cpu_percent", 100 * storm_cpu / storm_wall);
    CHECK(emfiles > 0);
    CHECK(storm_cpu < 0.05 * storm_wall + 0.01);
    CHECK(static_cast<int>(accepted.size()) == clients_n);  // recovered: every client served
  });
}
