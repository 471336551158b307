// Tests of the netpoller, fiber-aware I/O and rill::blocking: echo round trips (IPv4 and
// IPv6 loopback), many connections, close waking a reader, fd-number reuse, deadlines, a
// writer parked on a peer that stops reading, EMFILE in accept, timers and I/O sharing one
// wait, blocking() on the pool, the pipeline source and sink, and deadlock accounting.
// Loopback only; every wait is bounded (deadlines, the watchdog).
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cctype>
#include <chrono>
#include <cstring>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <rill/io.hpp>
#include <rill/net.hpp>
#include <rill/pipeline/io.hpp>
#include <rill/rill.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "io/poller.hpp"
#include "support/net_support.hpp"
#include "support/pipeline_support.hpp"

using namespace std::chrono_literals;
using rill::net::tcp_listener;
using rill::net::tcp_stream;
using clk = std::chrono::steady_clock;

namespace {

// ipv6_available(): the sandbox may lack ::1.
bool ipv6_available() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// round_trips(): n echo round trips of distinct messages on s; returns the mismatches.
int round_trips(tcp_stream& s, int n, std::size_t size = 0) {
  int bad = 0;
  std::string msg, got;
  for (int i = 0; i < n; ++i) {
    msg = "message " + std::to_string(i);
    if (size) msg.resize(size, static_cast<char>('a' + i % 26));
    s.write_all(msg);
    got.assign(msg.size(), '\0');
    if (!s.read_exact(got.data(), got.size()) || got != msg) ++bad;
  }
  return bad;
}

std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

// ---- echo --------------------------------------------------------------------------------

TEST_CASE("net: echo round trips over IPv4 loopback", "[net][echo]") {
  auto workers = GENERATE(1u, 2u, 4u);
  test::net_run(workers, [] {
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    CHECK(ln.port() != 0);
    CHECK(ln.local_endpoint().host == "127.0.0.1");
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      tcp_stream c = ln.accept();
      test::echo(c);
      wg.done();
    });
    tcp_stream s = tcp_stream::connect("127.0.0.1", ln.port());
    CHECK(s.remote_endpoint().port == ln.port());
    CHECK(round_trips(s, 1000) == 0);
    CHECK(round_trips(s, 20, 200'000) == 0);  // larger than the socket buffers
    s.shutdown_write();
    char b;
    CHECK(s.read(&b, 1) == 0);  // the server saw the end and closed
    wg.wait();
  });
}

TEST_CASE("net: echo round trips over IPv6 loopback", "[net][echo]") {
  if (!ipv6_available()) {
    WARN("no IPv6 loopback here: skipped");
    return;
  }
  test::net_run(2, [] {
    auto ln = tcp_listener::listen("::1", 0);
    CHECK(ln.local_endpoint().host == "::1");
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      tcp_stream c = ln.accept();
      test::echo(c);
      wg.done();
    });
    tcp_stream s = tcp_stream::connect("[::1]", ln.port());
    CHECK(round_trips(s, 500) == 0);
    s.close();
    wg.wait();
  });
}

TEST_CASE("net: 1000 concurrent loopback connections all echo correctly", "[net][many]") {
  REQUIRE(test::ensure_fds(4096));
  auto workers = GENERATE(2u, 4u);
  test::net_run(workers, [] {
    constexpr int conns = 1000, trips = 20;
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    std::atomic<int> served{0}, server_errors{0};
    rill::wait_group servers;
    servers.add(1);
    rill::go([&] {  // the accept loop: a fiber per connection
      for (int i = 0; i < conns; ++i) {
        try {
          auto c = std::make_shared<tcp_stream>(ln.accept());
          servers.add(1);
          rill::go([&, c] {
            try {
              test::echo(*c);
              ++served;
            } catch (...) {
              ++server_errors;
            }
            servers.done();
          });
        } catch (...) {
          ++server_errors;
        }
      }
      servers.done();
    });
    std::atomic<int> bad{0}, errors{0};
    rill::wait_group clients;
    for (int i = 0; i < conns; ++i) {
      clients.add(1);
      rill::go([&, i] {
        try {
          tcp_stream s = tcp_stream::connect("127.0.0.1", ln.port());
          bad += round_trips(s, trips, 64 + i % 7);
        } catch (...) {
          ++errors;
        }
        clients.done();
      });
    }
    clients.wait();
    servers.wait();
    CHECK(errors == 0);
    CHECK(bad == 0);
    CHECK(server_errors == 0);
    CHECK(served == conns);
  });
}

// ---- close, reuse ------------------------------------------------------------------------

TEST_CASE("net: closing a stream wakes its parked reader with io_errc::closed", "[net][close]") {
  auto workers = GENERATE(1u, 2u);
  test::net_run(workers, [] {
    auto p = test::connected_pair();
    std::atomic<int> outcome{0};  // 1: closed error, 2: other error, 3: returned
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      try {
        char buf[16];
        (void)p.a.read(buf, sizeof buf);
        outcome = 3;
      } catch (const std::system_error& e) {
        outcome =
            e.code() == rill::io_errc::closed && e.code() == std::errc::bad_file_descriptor ? 1 : 2;
      }
      wg.done();
    });
    test::wait_parked_on("I/O read");
    const auto t0 = clk::now();
    p.a.close();
    wg.wait();
    CHECK(outcome == 1);
    CHECK(test::seconds_since(t0) < 1.0);
    // Operations after close fail the same way; a second close is a no-op.
    CHECK_THROWS_AS(p.a.write_all("x"), std::system_error);
    p.a.close();
    CHECK_FALSE(p.a.is_open());
  });
}

TEST_CASE("net: closing a listener wakes its parked accept", "[net][close]") {
  test::net_run(2, [] {
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    std::atomic<bool> closed_error{false};
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      try {
        (void)ln.accept();
      } catch (const std::system_error& e) {
        closed_error = e.code() == rill::io_errc::closed;
      }
      wg.done();
    });
    test::wait_parked_on("I/O read");
    ln.close();
    wg.wait();
    CHECK(closed_error);
  });
}

TEST_CASE("net: a reused fd number never receives another registration's wake-up", "[net][reuse]") {
  // Readiness is in flight on registration A (its peer writes while A is closed); B, opened
  // right after, usually gets A's fd number and A's descriptor (with a new seq). A wait on
  // B's read side, which has no data, must never report ready.
  auto workers = GENERATE(1u, 3u);
  test::net_run(workers, [] {
    constexpr int cycles = 2000;
    int misdelivered = 0, same_fd = 0, same_desc = 0;
    for (int i = 0; i < cycles; ++i) {
      int a[2], b[2];
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, a) == 0);
      auto ra = rill::detail::io_open(a[0], true);
      rill::wait_group wg;
      wg.add(1);
      rill::go([&] {  // a reader on A, and data arriving as A closes
        (void)rill::detail::io_wait(ra, rill::detail::io_read);
        wg.done();
      });
      rill::go([w = a[1]] {
        char x = 'A';
        for (int k = 0; k < 4; ++k) (void)!::send(w, &x, 1, MSG_NOSIGNAL);
        ::close(w);
      });
      rill::this_fiber::yield();
      rill::detail::io_close(ra);
      wg.wait();
      REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, b) == 0);
      auto rb = rill::detail::io_open(b[0], true);
      same_fd += b[0] == a[0];
      same_desc += rb.pd == ra.pd;
      rill::detail::io_set_deadline(rb, rill::detail::io_read,
                                    rill::detail::now_ns() + 100'000);  // 100 us
      if (rill::detail::io_wait(rb, rill::detail::io_read) == rill::detail::io_status::ready) {
        ++misdelivered;
      }
      rill::detail::io_close(rb);
      ::close(b[1]);
    }
    CHECK(misdelivered == 0);
    CHECK(same_fd > 0);    // the scenario happened
    CHECK(same_desc > 0);  // and the descriptor was reused under a new seq
  });
}

TEST_CASE("net: a reader never sees the data of the connection that reuses its fd",
          "[net][reuse]") {
  // A reader loops on A while another fiber closes A and connects B (which takes A's fd
  // number); the reader holds a reference, so A's fd is not released under its read.
  test::net_run(2, [] {
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    int leaks = 0, reused = 0;
    for (int i = 0; i < 300; ++i) {
      auto a = tcp_stream::connect("127.0.0.1", ln.port());
      auto a_peer = ln.accept();
      const int a_fd = a.native_handle();
      std::atomic<bool> saw_b{false};
      rill::wait_group wg;
      wg.add(1);
      rill::go([&] {
        char buf[256];
        try {
          for (;;) {
            const std::size_t n = a.read(buf, sizeof buf);
            if (n == 0) break;
            if (std::memchr(buf, 'B', n)) saw_b = true;
          }
        } catch (const std::system_error&) {
        }
        wg.done();
      });
      a_peer.write_all("AAAA");
      rill::this_fiber::yield();
      a.close();
      auto b = tcp_stream::connect("127.0.0.1", ln.port());
      auto b_peer = ln.accept();
      reused += b.native_handle() == a_fd || b_peer.native_handle() == a_fd;
      b_peer.write_all("BBBB");
      wg.wait();
      leaks += saw_b;
    }
    CHECK(leaks == 0);
    CHECK(reused > 0);
  });
}

// ---- deadlines ---------------------------------------------------------------------------

TEST_CASE("net: a read deadline fires with io_errc::deadline_exceeded", "[net][deadline]") {
  auto workers = GENERATE(1u, 2u);
  test::net_run(workers, [] {
    auto p = test::connected_pair();
    char buf[8];
    const auto t0 = clk::now();
    p.a.set_read_deadline(t0 + 50ms);
    bool timed_out = false;
    try {
      (void)p.a.read(buf, sizeof buf);
    } catch (const std::system_error& e) {
      timed_out = e.code() == rill::io_errc::deadline_exceeded && e.code() == std::errc::timed_out;
      CHECK(std::string(e.what()).find("deadline") != std::string::npos);
    }
    const double took = test::seconds_since(t0);
    CHECK(timed_out);
    CHECK(took >= 0.050);
    CHECK(took < 1.0);
    // A passed deadline times out at once; data already there is still read.
    CHECK_THROWS_AS(p.a.read(buf, sizeof buf), std::system_error);
    p.b.write_all("hi");
    CHECK(p.a.read(buf, sizeof buf) == 2);
    // Removing the deadline: the next read waits for data again.
    p.a.set_read_deadline(rill::no_deadline);
    rill::go([&] {
      rill::this_fiber::sleep_for(20ms);
      p.b.write_all("yo");
    });
    CHECK(p.a.read(buf, sizeof buf) == 2);
  });
}

TEST_CASE("net: a deadline set while a read waits applies to that read", "[net][deadline]") {
  test::net_run(2, [] {
    auto p = test::connected_pair();
    std::atomic<int> outcome{0};
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      char buf[8];
      try {
        (void)p.a.read(buf, sizeof buf);
        outcome = 1;
      } catch (const std::system_error& e) {
        outcome = e.code() == rill::io_errc::deadline_exceeded ? 2 : 3;
      }
      wg.done();
    });
    test::wait_parked_on("I/O read");
    const auto t0 = clk::now();
    p.a.set_deadline(t0 + 20ms);
    wg.wait();
    CHECK(outcome == 2);
    CHECK(test::seconds_since(t0) >= 0.020);
    CHECK(test::seconds_since(t0) < 1.0);
  });
}

TEST_CASE("net: many connections' read deadlines all fire on time", "[net][deadline]") {
  REQUIRE(test::ensure_fds(2048));
  test::net_run(2, [] {
    constexpr int n = 200;
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    std::vector<tcp_stream> clients, servers;
    for (int i = 0; i < n; ++i) {
      clients.push_back(tcp_stream::connect("127.0.0.1", ln.port()));
      servers.push_back(ln.accept());
    }
    std::atomic<int> timeouts{0};
    std::atomic<std::int64_t> worst_late_us{0};
    rill::wait_group wg;
    const auto deadline = clk::now() + 100ms;
    for (auto& c : clients) {
      wg.add(1);
      rill::go([&, s = &c] {
        s->set_read_deadline(deadline);
        char b;
        try {
          (void)s->read(&b, 1);
        } catch (const std::system_error& e) {
          if (e.code() == rill::io_errc::deadline_exceeded) ++timeouts;
        }
        const auto late =
            std::chrono::duration_cast<std::chrono::microseconds>(clk::now() - deadline).count();
        std::int64_t w = worst_late_us.load();
        while (late > w && !worst_late_us.compare_exchange_weak(w, late)) {
        }
        wg.done();
      });
    }
    wg.wait();
    CHECK(timeouts == n);
    CHECK(worst_late_us >= 0);
    CHECK(worst_late_us < 1'000'000);
  });
}

TEST_CASE("net: connect to a closed port reports ECONNREFUSED", "[net][errors]") {
  test::net_run(1, [] {
    std::uint16_t port;
    {
      auto ln = tcp_listener::listen("127.0.0.1", 0);
      port = ln.port();
    }
    bool refused = false;
    try {
      (void)tcp_stream::connect("127.0.0.1", port);
    } catch (const std::system_error& e) {
      refused = e.code() == std::errc::connection_refused;
    }
    CHECK(refused);
    CHECK_THROWS_AS(tcp_listener::listen("not an address!", 0), std::system_error);
  });
}

// ---- backpressure ------------------------------------------------------------------------

TEST_CASE("net: a peer that stops reading parks the writer, which uses no CPU", "[net][write]") {
  test::net_run(2, [] {
    auto p = test::connected_pair();
    constexpr std::size_t total = 16u << 20;  // far beyond the socket buffers
    std::string big(total, 'x');
    std::atomic<bool> written{false};
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      p.a.write_all(big);
      written = true;
      wg.done();
    });
    test::wait_parked_on("I/O write");
    const double cpu0 = test::cpu_seconds();
    rill::this_fiber::sleep_for(300ms);  // the writer stays parked meanwhile
    const double cpu = test::cpu_seconds() - cpu0;
    CHECK_FALSE(written);
    CHECK(cpu < 0.06);  // a spinning writer would burn ~0.3 s
    std::size_t got = 0;
    std::vector<char> buf(1 << 16);
    while (got < total) got += p.b.read(buf.data(), buf.size());
    wg.wait();
    CHECK(written);
    CHECK(got == total);
  });
}

TEST_CASE("net: a write deadline fires while the peer does not read", "[net][deadline]") {
  test::net_run(1, [] {
    auto p = test::connected_pair();
    std::string big(16u << 20, 'x');
    p.a.set_write_deadline(clk::now() + 50ms);
    bool timed_out = false;
    try {
      p.a.write_all(big);
    } catch (const std::system_error& e) {
      timed_out = e.code() == rill::io_errc::deadline_exceeded;
    }
    CHECK(timed_out);
  });
}

// ---- EMFILE ------------------------------------------------------------------------------

TEST_CASE("net: EMFILE in accept is reported and the listener keeps working", "[net][emfile]") {
  test::warm_worker_threads(2);
  test::net_run(2, [] {
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    auto client = tcp_stream::connect("127.0.0.1", ln.port());  // waits in the backlog
    const int lowest_free = ::dup(0);
    REQUIRE(lowest_free >= 0);
    ::close(lowest_free);
    bool emfile = false;
    {
      test::fd_limit limit(static_cast<rlim_t>(lowest_free));  // no new fd from here on
      try {
        (void)ln.accept();
      } catch (const std::system_error& e) {
        emfile = e.code() == std::errc::too_many_files_open;
      }
    }
    CHECK(emfile);
    CHECK(ln.is_open());
    tcp_stream s = ln.accept();  // the same connection, still queued
    client.write_all("ping");
    char buf[4];
    CHECK(s.read_exact(buf, 4));
    CHECK(std::string(buf, 4) == "ping");
  });
}

// ---- timers and I/O ------------------------------------------------------------------------

TEST_CASE("net: timers and I/O share the idle worker's wait", "[net][timers]") {
  auto workers = GENERATE(1u, 2u);
  test::net_run(workers, [] {
    auto p = test::connected_pair();
    const auto t0 = clk::now();
    std::mutex mu;
    std::vector<std::pair<std::string, double>> events;
    auto note = [&](const char* what) {
      std::lock_guard lk(mu);
      events.emplace_back(what, test::seconds_since(t0));
    };
    rill::wait_group wg;
    wg.add(3);
    rill::go([&] {  // a long timer, pending while the worker waits in epoll_wait
      rill::this_fiber::sleep_for(80ms);
      note("timer80");
      wg.done();
    });
    rill::go([&] {  // I/O that arrives before that timer
      char buf[4];
      (void)p.a.read_exact(buf, 4);
      note("read");
      wg.done();
    });
    rill::go([&] {  // a shorter timer, armed while the reader is parked
      rill::this_fiber::sleep_for(20ms);
      note("timer20");
      p.b.write_all("data");
      wg.done();
    });
    wg.wait();
    REQUIRE(events.size() == 3);
    CHECK(events[0].first == "timer20");
    CHECK(events[1].first == "read");
    CHECK(events[2].first == "timer80");
    CHECK(events[0].second >= 0.020);
    CHECK(events[2].second >= 0.080);
    CHECK(events[2].second < 1.0);
  });
}

TEST_CASE("net: timers fire on time while fibers stay parked on I/O", "[net][timers]") {
  test::net_run(2, [] {
    auto p = test::connected_pair();
    rill::wait_group wg;
    wg.add(1);
    std::atomic<bool> got{false};
    rill::go([&] {  // parked on I/O for the whole test
      char b;
      got = p.a.read(&b, 1) == 1;
      wg.done();
    });
    test::wait_parked_on("I/O read");
    double worst = 0;
    for (int i = 0; i < 10; ++i) {
      const auto t = clk::now();
      rill::this_fiber::sleep_for(10ms);
      worst = std::max(worst, test::seconds_since(t) - 0.010);
    }
    CHECK(worst >= 0);
    CHECK(worst < 0.5);
    p.b.write_all("x");
    wg.wait();
    CHECK(got);
  });
}

TEST_CASE("net: an idle runtime waiting on I/O uses no CPU", "[net][idle]") {
  test::net_run(4, [] {
    auto p = test::connected_pair();
    std::thread peer;
    std::promise<void> go_write;
    auto later = go_write.get_future();
    peer = std::thread([&] {
      later.wait_for(400ms);
      ::send(p.b.native_handle(), "z", 1, MSG_NOSIGNAL);
    });
    const double cpu0 = test::cpu_seconds();
    const auto t0 = clk::now();
    char b;
    CHECK(p.a.read(&b, 1) == 1);  // every worker idle meanwhile: one in epoll_wait
    const double wall = test::seconds_since(t0);
    const double cpu = test::cpu_seconds() - cpu0;
    peer.join();
    CHECK(wall >= 0.3);
    CHECK(cpu < 0.05 * wall + 0.01);
  });
}

// ---- deadlock accounting -------------------------------------------------------------------

TEST_CASE("net: a fiber waiting on I/O is not a deadlock; a later real one still is",
          "[net][deadlock]") {
  // Every fiber waits on I/O for longer than the detector's grace period; the data comes
  // from a plain thread the runtime cannot see.
  test::net_run(2, [] {
    auto p = test::connected_pair();
    std::thread peer([fd = p.b.native_handle()] {
      std::this_thread::sleep_for(100ms);
      ::send(fd, "late", 4, MSG_NOSIGNAL);
    });
    char buf[4];
    const bool ok = p.a.read_exact(buf, 4);
    peer.join();
    CHECK(ok);
  });
  CHECK_THROWS_AS(test::net_run(2,
                                [] {
                                  auto p = test::connected_pair();
                                  p.b.write_all("x");
                                  char b;
                                  (void)p.a.read(&b, 1);  // I/O done: io_waiters back to 0
                                  rill::chan<int> c;
                                  (void)c.recv();  // nobody sends
                                }),
                  rill::deadlock_error);
}

// ---- wait_readable / wait_writable -----------------------------------------------------------

TEST_CASE("net: wait_readable and wait_writable on a pipe", "[net][wait]") {
  auto check = [](bool in_fiber) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    const auto t0 = clk::now();
    const bool early = rill::wait_readable(fds[0], t0 + 30ms);
    const double took = test::seconds_since(t0);
    const bool writable = rill::wait_writable(fds[1], clk::now() + 1s);
    (void)!::write(fds[1], "x", 1);
    const bool readable = rill::wait_readable(fds[0], clk::now() + 1s);
    ::close(fds[0]);
    ::close(fds[1]);
    CHECK_FALSE(early);
    CHECK(took >= 0.030);
    CHECK(writable);
    CHECK(readable);
    bool ebadf = false;
    try {
      rill::wait_readable(fds[0], clk::now() + 10ms);
    } catch (const std::system_error& e) {
      ebadf = e.code() == std::errc::bad_file_descriptor;
    }
    CHECK(ebadf);
    (void)in_fiber;
  };
  test::net_run(2, [&] { check(true); });
  check(false);  // a plain thread blocks in poll(2)
}

TEST_CASE("net: wait_readable on a rill socket's fd and on a regular file", "[net][wait]") {
  test::net_run(1, [] {
    auto p = test::connected_pair();
    CHECK_FALSE(rill::wait_readable(p.a.native_handle(), clk::now() + 10ms));
    p.b.write_all("x");
    CHECK(rill::wait_readable(p.a.native_handle(), clk::now() + 1s));
    const int f = ::open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    REQUIRE(f >= 0);
    CHECK(rill::wait_readable(f));  // regular files are always ready
    ::close(f);
  });
}

TEST_CASE("net: waiting on a rill socket's fd leaves the socket's own registration working",
          "[net][wait]") {
  for (unsigned workers : {1u, 2u}) {
    test::net_run(workers, [] {
      auto p = test::connected_pair();
      // The socket's fd is registered already (EEXIST): wait_readable waits on a duplicate,
      // and both directions' raw waits leave the socket's own registration in epoll.
      CHECK_FALSE(rill::wait_readable(p.a.native_handle(), clk::now() + 5ms));
      CHECK(rill::wait_writable(p.a.native_handle(), clk::now() + 1s));
      // A read that has to wait is still woken by data that arrives later.
      p.a.set_read_deadline(clk::now() + 10s);
      std::size_t got = 0;
      std::string error;
      rill::wait_group wg;
      wg.add(1);
      rill::go([&] {
        char b[4];
        try {
          got = p.a.read(b, sizeof b);
        } catch (const std::exception& e) {
          error = e.what();  // before the fix: "i/o deadline exceeded" after 10 s
        }
        wg.done();
      });
      test::wait_parked_on("I/O read");
      p.b.write_all("abc");
      wg.wait();
      CHECK(error.empty());
      CHECK(got == 3);
    });
  }
}

TEST_CASE("net: two fibers reading one stream at once is a logic_error", "[net][misuse]") {
  test::net_run(1, [] {
    auto p = test::connected_pair();
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      char b;
      try {
        (void)p.a.read(&b, 1);
      } catch (...) {
      }
      wg.done();
    });
    test::wait_parked_on("I/O read");
    char b;
    CHECK_THROWS_AS(p.a.read(&b, 1), std::logic_error);
    p.b.write_all("x");
    wg.wait();
  });
}

// ---- sockets across runtimes and threads -----------------------------------------------------

TEST_CASE("net: a stream that outlives its runtime can still be closed", "[net][lifetime]") {
  auto p = test::run_with(1, [] { return test::connected_pair(); });
  CHECK(rill::live_io_registrations() == 2);
  p.a.close();
  p.b.close();
  CHECK(rill::live_io_registrations() == 0);
}

TEST_CASE("net: a plain thread can talk to a server fiber", "[net][threads]") {
  // Catch2 is not thread-safe: the server thread asserts nothing; the main thread checks.
  std::promise<std::uint16_t> port;
  std::exception_ptr server_error;
  test::watchdog dog;
  std::thread server([&] {
    try {
      rill::options o;
      o.workers = 2;
      rill::run(
          [&] {
            auto ln = tcp_listener::listen("127.0.0.1", 0);
            port.set_value(ln.port());
            tcp_stream c = ln.accept();
            test::echo(c);
          },
          o);
    } catch (...) {
      server_error = std::current_exception();
    }
  });
  {
    // From a plain thread: registered with the default runtime; waits block the thread.
    tcp_stream s = tcp_stream::connect("127.0.0.1", port.get_future().get());
    CHECK(round_trips(s, 100) == 0);
    s.set_read_deadline(clk::now() + 20ms);
    char b;
    CHECK_THROWS_AS(s.read(&b, 1), std::system_error);
  }
  server.join();
  CHECK_FALSE(server_error);
  test::check_no_leaks();
  CHECK(rill::live_io_registrations() == 0);
}

// ---- blocking() ----------------------------------------------------------------------------

TEST_CASE("blocking: runs on another thread and the worker keeps running fibers",
          "[net][blocking]") {
  test::run_with(1, [] {
    const auto worker_thread = std::this_thread::get_id();
    CHECK(rill::blocking([] { return std::this_thread::get_id(); }) != worker_thread);
    // The call blocks until a fiber of this (one-worker) runtime runs: it can only finish
    // if the worker is free.
    std::promise<void> ran;
    rill::go([&] { ran.set_value(); });
    rill::blocking([&] { ran.get_future().wait(); });
    // Results, references, move-only values and exceptions come back.
    CHECK(rill::blocking([] { return 6 * 7; }) == 42);
    int x = 0;
    int& r = rill::blocking([&]() -> int& { return x; });
    CHECK(&r == &x);
    auto u = rill::blocking([] { return std::make_unique<int>(5); });
    CHECK(*u == 5);
    CHECK_THROWS_AS(rill::blocking([]() -> int { throw std::runtime_error("boom"); }),
                    std::runtime_error);
  });
  // From a plain thread it runs inline.
  CHECK(rill::blocking([] { return std::this_thread::get_id(); }) == std::this_thread::get_id());
}

TEST_CASE("blocking: a fiber in a long blocking call is not a deadlock", "[net][blocking]") {
  test::run_with(2, [] {
    rill::blocking([] { std::this_thread::sleep_for(100ms); });  // > the 20 ms grace period
  });
}

TEST_CASE("blocking: calls run in parallel on the pool", "[net][blocking]") {
  test::run_with(2, [] {
    const auto t0 = clk::now();
    rill::wait_group wg;
    for (int i = 0; i < 50; ++i) {
      wg.add(1);
      rill::go([&] {
        rill::blocking([] { std::this_thread::sleep_for(50ms); });
        wg.done();
      });
    }
    wg.wait();
    CHECK(test::seconds_since(t0) < 1.5);  // 2.5 s if they ran one after another
  });
}

// ---- pipeline integration ----------------------------------------------------------------

TEST_CASE("net: a pipeline reads lines from a socket and writes lines to another",
          "[net][pipeline]") {
  auto workers = GENERATE(1u, 2u);
  test::net_run(workers, [] {
    auto in = test::connected_pair();
    auto out = test::connected_pair();
    constexpr int n = 5000;
    rill::go([&] {  // the producer: lines in odd-sized chunks, the last without '\n'
      std::string all;
      for (int i = 0; i < n; ++i) all += "line " + std::to_string(i) + (i + 1 < n ? "\n" : "");
      for (std::size_t k = 0; k < all.size(); k += 777) {
        in.b.write_all(all.substr(k, 777));
      }
      in.b.shutdown_write();
    });
    std::string received;
    rill::wait_group wg;
    wg.add(1);
    rill::go([&] {
      char buf[4096];
      while (std::size_t k = out.b.read(buf, sizeof buf)) received.append(buf, k);
      wg.done();
    });
    (rill::read_lines(in.a) | rill::map(upper) | rill::write_lines(out.a)).run();
    out.a.shutdown_write();
    wg.wait();
    std::string expected;
    for (int i = 0; i < n; ++i) expected += "LINE " + std::to_string(i) + "\n";
    CHECK(received == expected);
  });
}

TEST_CASE("net: read_lines on a pipe fd, collected", "[net][pipeline]") {
  test::net_run(2, [] {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);  // blocking: the source makes it non-blocking
    rill::go([w = fds[1]] {
      const std::string text = "a\n\nbb\nccc\n";
      (void)!::write(w, text.data(), text.size());
      ::close(w);
    });
    auto lines = (rill::read_lines(fds[0]) | rill::collect()).run();
    CHECK(lines == std::vector<std::string>{"a", "", "bb", "ccc"});
    CHECK((::fcntl(fds[0], F_GETFL) & O_NONBLOCK) == 0);  // restored
    ::close(fds[0]);
  });
}

TEST_CASE("net: read_lines drops the '\\r' of CRLF lines unless keep_cr", "[net][pipeline]") {
  auto keep_cr = GENERATE(false, true);
  test::net_run(2, [keep_cr] {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    rill::go([w = fds[1]] {
      // CRLF lines, an empty one, a '\r' inside a line, and a last line without '\n'.
      const std::string text = "a\r\nbb\r\n\r\nc\rd\r\nlf\ne\r";
      (void)!::write(w, text.data(), text.size());
      ::close(w);
    });
    auto lines = (rill::read_lines(fds[0], {.keep_cr = keep_cr}) | rill::collect()).run();
    if (keep_cr) {
      CHECK(lines == std::vector<std::string>{"a\r", "bb\r", "\r", "c\rd\r", "lf", "e\r"});
    } else {
      CHECK(lines == std::vector<std::string>{"a", "bb", "", "c\rd", "lf", "e"});
    }
    ::close(fds[0]);
  });
}

TEST_CASE("net: read_lines from a plain thread: wait() returns with the run's fibers gone",
          "[net][pipeline]") {
  // The source parks on an empty pipe, so a helper fiber watches for cancellation; it too
  // must be counted as gone when wait() returns.
  test::watchdog dog;
  test::wait_no_leaks();  // what earlier tests left behind is theirs
  int counted = 0;        // returns after which a fiber or a stack still counted
  for (int k = 0; k < 20; ++k) {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    auto h = (rill::read_lines(fds[0]) | rill::count()).start();
    test::wait_parked_on("I/O read");
    (void)!::write(fds[1], "x\ny\n", 4);
    ::close(fds[1]);
    REQUIRE(h.wait() == 2);
    const rill::stats s = rill::global_stats();
    if (s.live_fibers != 0 || s.live_stacks != 0) ++counted;
    ::close(fds[0]);
  }
  CHECK(counted == 0);
}

TEST_CASE("net: cancelling a pipeline wakes a source parked on a silent socket",
          "[net][pipeline]") {
  test::net_run(2, [] {
    auto in = test::connected_pair();
    auto out = test::connected_pair();  // its peer never reads: the sink parks too
    auto h = (rill::read_lines(in.a) | rill::write_lines(out.a)).start();
    in.b.write_all(std::string(16u << 20, 'y') + "\n");  // more than the buffers hold
    test::wait_parked_on("I/O write");
    const auto t0 = clk::now();
    h.cancel();
    CHECK_THROWS_AS(h.wait(), rill::pipeline_cancelled);
    CHECK(test::seconds_since(t0) < 1.0);
    auto h2 = (rill::read_lines(in.a) | rill::count()).start();
    test::wait_parked_on("I/O read");
    h2.cancel();
    CHECK_THROWS_AS(h2.wait(), rill::pipeline_cancelled);
  });
}
