// TCP on the netpoller: rill::net::tcp_listener and tcp_stream.
//
// Every socket is non-blocking and registered with the poller once, at creation. An
// operation takes a reference on the registration (io_acquire) for its whole duration, so
// a close() from another fiber cannot release the fd number under it; it then retries its
// syscall until it stops saying EAGAIN, waiting on the poller in between (poller.cpp).
// errno is copied into a local right after each syscall: the fiber may resume on another
// thread after a wait.
#include "rill/net.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <utility>

namespace rill::detail {

void socket_owner::close() noexcept {
  if (!closed_.exchange(true, std::memory_order_acq_rel) && ref_.pd) io_close(ref_);
}

}  // namespace rill::detail

namespace rill::net {

namespace {

using detail::io_ref;

struct sock_addr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family() const noexcept { return ss.ss_family; }
};

std::int64_t to_ns(io_deadline d) noexcept {
  if (d == no_deadline) return INT64_MAX;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(d.time_since_epoch()).count();
}

// parse_as<Sa, Family>(): h as a numeric address of that family (in `Sa`, a sockaddr_in or
// sockaddr_in6, whose address field is `addr`), with `port`; false if it is not one.
template <class Sa, int Family, class Addr>
bool parse_as(const std::string& h, std::uint16_t port, Addr Sa::*addr, sock_addr& out) {
  auto* sa = reinterpret_cast<Sa*>(&out.ss);
  if (::inet_pton(Family, h.c_str(), &(sa->*addr)) != 1) return false;
  if constexpr (Family == AF_INET) {
    sa->sin_family = AF_INET;
    sa->sin_port = htons(port);
  } else {
    sa->sin6_family = AF_INET6;
    sa->sin6_port = htons(port);
  }
  out.len = sizeof(Sa);
  return true;
}

// numeric(): a numeric IPv4/IPv6 address ("" and "*": any), or false.
bool numeric(std::string_view host, std::uint16_t port, bool passive, sock_addr& out) {
  std::string h(host);
  if (h.size() >= 2 && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  if (h.empty() || h == "*") h = passive ? "0.0.0.0" : "127.0.0.1";
  return parse_as<sockaddr_in, AF_INET>(h, port, &sockaddr_in::sin_addr, out) ||
         parse_as<sockaddr_in6, AF_INET6>(h, port, &sockaddr_in6::sin6_addr, out);
}

// resolve(): numeric addresses directly; names with getaddrinfo on the blocking pool.
sock_addr resolve(std::string_view host, std::uint16_t port, bool passive) {
  sock_addr a;
  if (numeric(host, port, passive, a)) return a;
  std::string name(host);
  addrinfo* res = nullptr;
  const int rc = blocking([&] {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = passive ? AI_PASSIVE : 0;
    return ::getaddrinfo(name.c_str(), nullptr, &hints, &res);
  });
  if (rc != 0 || !res) {
    const std::string msg = "rill::net: cannot resolve '" + name + "': " + ::gai_strerror(rc);
    if (res) ::freeaddrinfo(res);
    throw std::system_error(std::make_error_code(std::errc::host_unreachable), msg);
  }
  std::memcpy(&a.ss, res->ai_addr, res->ai_addrlen);
  a.len = res->ai_addrlen;
  ::freeaddrinfo(res);
  if (a.family() == AF_INET) reinterpret_cast<sockaddr_in*>(&a.ss)->sin_port = htons(port);
  if (a.family() == AF_INET6) reinterpret_cast<sockaddr_in6*>(&a.ss)->sin6_port = htons(port);
  return a;
}

endpoint to_endpoint(const sockaddr_storage& ss) {
  char buf[INET6_ADDRSTRLEN] = {};
  endpoint e;
  if (ss.ss_family == AF_INET) {
    const auto* v4 = reinterpret_cast<const sockaddr_in*>(&ss);
    ::inet_ntop(AF_INET, &v4->sin_addr, buf, sizeof buf);
    e.port = ntohs(v4->sin_port);
  } else if (ss.ss_family == AF_INET6) {
    const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&ss);
    ::inet_ntop(AF_INET6, &v6->sin6_addr, buf, sizeof buf);
    e.port = ntohs(v6->sin6_port);
  }
  e.host = buf;
  return e;
}

int new_socket(int family) {
  const int fd = ::socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) detail::throw_os_error(errno, "rill::net: socket");
  return fd;
}

void set_nodelay(int fd) noexcept {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// register_owned(): registers fd with the poller, which then owns it (closes it on error).
io_ref register_owned(int fd) {
  try {
    return detail::io_open(fd, true);
  } catch (...) {
    ::close(fd);
    throw;
  }
}

// op: a reference on the registration for one operation (io_acquire/io_release).
class op {
 public:
  op(io_ref r, const std::atomic<bool>& closed, const char* what) : r_(r) {
    if (closed.load(std::memory_order_acquire) || !detail::io_acquire(r)) {
      r_ = {};
      detail::throw_io_status(detail::io_status::closed, what);
    }
  }
  ~op() { detail::io_release(r_); }
  op(const op&) = delete;
  op& operator=(const op&) = delete;
  int fd() const noexcept { return detail::io_fd(r_); }

 private:
  io_ref r_;
};

endpoint sock_name(io_ref r, const std::atomic<bool>& closed, bool peer, const char* what) {
  op o(r, closed, what);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int rc = peer ? ::getpeername(o.fd(), reinterpret_cast<sockaddr*>(&ss), &len)
                      : ::getsockname(o.fd(), reinterpret_cast<sockaddr*>(&ss), &len);
  if (rc != 0) detail::throw_os_error(errno, what);
  return to_endpoint(ss);
}

}  // namespace

// ---- tcp_stream ----------------------------------------------------------------------------

tcp_stream tcp_stream::connect(std::string_view host, std::uint16_t port, io_deadline deadline) {
  const sock_addr a = resolve(host, port, false);
  const int fd = new_socket(a.family());
  set_nodelay(fd);
  int rc = ::connect(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len);
  int err = rc == 0 ? 0 : errno;
  if (rc != 0 && err != EINPROGRESS && err != EINTR) {
    ::close(fd);
    detail::throw_os_error(err, "rill::net::tcp_stream::connect");
  }
  tcp_stream s(register_owned(fd));
  if (rc == 0) return s;
  detail::io_set_deadline(s.ref_, detail::io_write, to_ns(deadline));
  for (;;) {
    const detail::io_status st = detail::io_wait(s.ref_, detail::io_write);
    if (st != detail::io_status::ready)
      detail::throw_io_status(st, "rill::net::tcp_stream::connect");
    int so_error = 0;
    socklen_t len = sizeof so_error;
    if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) so_error = errno;
    if (so_error != 0 && so_error != EINPROGRESS && so_error != EALREADY && so_error != EINTR) {
      detail::throw_os_error(so_error, "rill::net::tcp_stream::connect");
    }
    sockaddr_storage peer{};
    socklen_t plen = sizeof peer;
    if (::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) break;
    // ENOTCONN: a wake-up that was not the connection completing (Go checks the same way)
  }
  detail::io_set_deadline(s.ref_, detail::io_write, INT64_MAX);
  return s;
}

std::size_t tcp_stream::read(void* buf, std::size_t n) {
  op o(ref_, closed_, "rill::net::tcp_stream::read");
  return static_cast<std::size_t>(
      detail::io_read_some(ref_, buf, n, nullptr, "rill::net::tcp_stream::read"));
}

bool tcp_stream::read_exact(void* buf, std::size_t n) {
  op o(ref_, closed_, "rill::net::tcp_stream::read_exact");
  auto* p = static_cast<char*>(buf);
  std::size_t got = 0;
  while (got < n) {
    const long r =
        detail::io_read_some(ref_, p + got, n - got, nullptr, "rill::net::tcp_stream::read_exact");
    if (r == 0) {
      if (got == 0) return false;
      throw std::system_error(make_error_code(io_errc::unexpected_eof),
                              "rill::net::tcp_stream::read_exact");
    }
    got += static_cast<std::size_t>(r);
  }
  return true;
}

void tcp_stream::write_all(const void* buf, std::size_t n) {
  op o(ref_, closed_, "rill::net::tcp_stream::write_all");
  const auto* p = static_cast<const char*>(buf);
  std::size_t put = 0;
  while (put < n) {
    put += static_cast<std::size_t>(
        detail::io_write_some(ref_, p + put, n - put, nullptr, "rill::net::tcp_stream::write_all"));
  }
}

void tcp_stream::shutdown_write() {
  op o(ref_, closed_, "rill::net::tcp_stream::shutdown_write");
  if (::shutdown(o.fd(), SHUT_WR) != 0) {
    detail::throw_os_error(errno, "rill::net::tcp_stream::shutdown_write");
  }
}

void tcp_stream::set_deadline(io_deadline d) noexcept {
  set_read_deadline(d);
  set_write_deadline(d);
}
void tcp_stream::set_read_deadline(io_deadline d) noexcept {
  if (is_open()) detail::io_set_deadline(ref_, detail::io_read, to_ns(d));
}
void tcp_stream::set_write_deadline(io_deadline d) noexcept {
  if (is_open()) detail::io_set_deadline(ref_, detail::io_write, to_ns(d));
}

int tcp_stream::native_handle() const noexcept { return is_open() ? detail::io_fd(ref_) : -1; }

endpoint tcp_stream::local_endpoint() const {
  return sock_name(ref_, closed_, false, "rill::net::tcp_stream::local_endpoint");
}
endpoint tcp_stream::remote_endpoint() const {
  return sock_name(ref_, closed_, true, "rill::net::tcp_stream::remote_endpoint");
}

// ---- tcp_listener ----------------------------------------------------------------------------

tcp_listener tcp_listener::listen(std::string_view host, std::uint16_t port, int backlog) {
  const sock_addr a = resolve(host, port, true);
  const int fd = new_socket(a.family());
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (::bind(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) {
    const int err = errno;
    ::close(fd);
    detail::throw_os_error(err, "rill::net::tcp_listener::listen: bind");
  }
  if (::listen(fd, backlog) != 0) {
    const int err = errno;
    ::close(fd);
    detail::throw_os_error(err, "rill::net::tcp_listener::listen");
  }
  tcp_listener l;
  l.ref_ = register_owned(fd);
  l.closed_.store(false, std::memory_order_release);
  return l;
}

tcp_stream tcp_listener::accept() {
  op o(ref_, closed_, "rill::net::tcp_listener::accept");
  for (;;) {
    const int fd = ::accept4(o.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    const int err = fd < 0 ? errno : 0;
    if (fd >= 0) {
      set_nodelay(fd);
      return tcp_stream(register_owned(fd));
    }
    switch (err) {
      case EINTR:
      case ECONNABORTED:  // the client gave up before we took it: take the next one
        continue;
      case EAGAIN: {
        const detail::io_status st = detail::io_wait(ref_, detail::io_read);
        if (st != detail::io_status::ready) {
          detail::throw_io_status(st, "rill::net::tcp_listener::accept");
        }
        continue;
      }
      default:
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays queued; the listener is fine.
        detail::throw_os_error(err, "rill::net::tcp_listener::accept");
    }
  }
}

void tcp_listener::set_deadline(io_deadline d) noexcept {
  if (is_open()) detail::io_set_deadline(ref_, detail::io_read, to_ns(d));
}

int tcp_listener::native_handle() const noexcept { return is_open() ? detail::io_fd(ref_) : -1; }

endpoint tcp_listener::local_endpoint() const {
  return sock_name(ref_, closed_, false, "rill::net::tcp_listener::local_endpoint");
}

}  // namespace rill::net
