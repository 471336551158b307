// echo_server: a TCP echo server on rill, one fiber per connection (the Go way: the code
// reads like blocking code, and a connection waiting for data holds no thread).
//
//   echo_server [PORT] [--host ADDR] [--workers N]     serve until killed (PORT 0: any)
//   echo_server --self-test                            serve 100 clients, check, exit
//
// It prints "echo_server: listening on ADDR:PORT" once it accepts connections.
// benchmarks/README.md ("Echo server (net)") compares it with a Go server.
#include <rill/net.hpp>
#include <rill/rill.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <system_error>

namespace {

using namespace std::chrono_literals;
using rill::net::tcp_listener;
using rill::net::tcp_stream;

// serve() echoes what one client sends until it closes.
void serve(tcp_stream& c) {
  char buf[4096];
  try {
    while (std::size_t n = c.read(buf, sizeof buf)) c.write_all(buf, n);
  } catch (const std::system_error&) {
    // the client reset the connection: just drop it
  }
}

// accept_loop() runs until the listener is closed. Out of fds (EMFILE), it backs off
// instead of spinning; the pending connections wait in the backlog.
void accept_loop(tcp_listener& ln) {
  auto backoff = 5ms;
  for (;;) {
    try {
      auto c = std::make_shared<tcp_stream>(ln.accept());
      backoff = 5ms;
      rill::go([c] { serve(*c); });
    } catch (const std::system_error& e) {
      if (e.code() == rill::io_errc::closed) return;
      std::fprintf(stderr, "echo_server: accept: %s\n", e.what());
      rill::this_fiber::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::duration_cast<decltype(backoff)>(1s));
    }
  }
}

int self_test() {
  return rill::run([] {
    auto ln = tcp_listener::listen("127.0.0.1", 0);
    std::printf("echo_server: listening on 127.0.0.1:%u\n", static_cast<unsigned>(ln.port()));
    rill::wait_group server;
    server.add(1);
    rill::go([&] {
      accept_loop(ln);
      server.done();
    });
    std::atomic<int> bad{0};
    rill::wait_group clients;
    for (int i = 0; i < 100; ++i) {
      clients.add(1);
      rill::go([&, i] {
        try {
          auto s = tcp_stream::connect("127.0.0.1", ln.port());
          for (int k = 0; k < 100; ++k) {
            char msg[64], got[64];
            std::snprintf(msg, sizeof msg, "client %d message %d", i, k);
            s.write_all(msg, sizeof msg);
            if (!s.read_exact(got, sizeof got) || std::memcmp(msg, got, sizeof msg) != 0) ++bad;
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "client %d: %s\n", i, e.what());
          ++bad;
        }
        clients.done();
      });
    }
    clients.wait();
    ln.close();
    server.wait();
    std::printf("echo_server: self-test: 100 clients x 100 round trips, %d bad\n", bad.load());
    return bad.load() == 0 ? 0 : 1;
  });
}

}  // namespace

int main(int argc, char** argv) {
  std::string host = "127.0.0.1";
  unsigned long port = 7007;
  rill::options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--self-test") return self_test();
    if (a == "--host" && i + 1 < argc) {
      host = argv[++i];
    } else if (a == "--workers" && i + 1 < argc) {
      opts.workers = static_cast<unsigned>(std::strtoul(argv[++i], nullptr, 10));
    } else if (!a.empty() && a.find_first_not_of("0123456789") == std::string::npos) {
      port = std::strtoul(a.c_str(), nullptr, 10);
    } else {
      std::fprintf(stderr, "usage: %s [PORT] [--host ADDR] [--workers N] | --self-test\n", argv[0]);
      return 2;
    }
  }
  if (port > 65535) {
    std::fprintf(stderr, "echo_server: bad port %lu\n", port);
    return 2;
  }
  try {
    rill::run(
        [&] {
          auto ln = tcp_listener::listen(host, static_cast<std::uint16_t>(port));
          std::printf("echo_server: listening on %s:%u (%u workers)\n", host.c_str(), static_cast<unsigned>(ln.port()),
                      rill::runtime_stats().workers);
          std::fflush(stdout);
          accept_loop(ln);
        },
        opts);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "echo_server: %s\n", e.what());
    return 1;
  }
}
