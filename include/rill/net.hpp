// rill/net.hpp: TCP sockets on the netpoller (Go's net.Listen / net.Dial / net.Conn).
//
//   auto ln = rill::net::tcp_listener::listen("127.0.0.1", 0);   // port 0: any free port
//   rill::go([&] {
//     rill::net::tcp_stream c = ln.accept();                   // parks until a client comes
//     char buf[4096];
//     while (std::size_t n = c.read(buf, sizeof buf)) c.write_all(buf, n);  // echo
//   });
//   auto s = rill::net::tcp_stream::connect("127.0.0.1", ln.port());
//
// Every call that waits parks the calling fiber, never its worker thread: thousands of
// connections need thousands of fibers, not threads. From a plain thread the calls block
// that thread instead.
//
// Errors are std::system_error: the OS error as std::system_category() (ECONNREFUSED,
// ECONNRESET, EMFILE...), or rill::io_errc::deadline_exceeded (a deadline passed; equal to
// std::errc::timed_out), io_errc::closed (the socket was closed, possibly by another fiber
// while this one waited; equal to std::errc::bad_file_descriptor), io_errc::unexpected_eof.
//
// Addresses: numeric IPv4 ("127.0.0.1") and IPv6 ("::1", "[::1]"); "" and "0.0.0.0" / "::"
// listen on every address; another name is resolved with getaddrinfo on the blocking-call
// pool (rill::blocking), so resolution never blocks a worker.
//
// Thread safety: a socket belongs to the runtime it was opened in (from a plain thread: the
// default runtime). One fiber may read while another writes; close() and set_deadline()
// may be called from any fiber at any time, and wake the fibers waiting on the socket.
// Two fibers must not read (or write, or accept) one socket at the same time (the second
// gets std::logic_error). A socket that outlives its runtime can only be closed.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "rill/io.hpp"

namespace rill::detail {
// socket_owner: what tcp_stream and tcp_listener share: the poller registration they own,
// whether it is closed, closing, and moving (a moved-from socket is closed; a socket moved
// onto is closed first). Not API.
class socket_owner {
 public:
  socket_owner(socket_owner&& o) noexcept
      : ref_(std::exchange(o.ref_, {})),
        closed_(o.closed_.exchange(true, std::memory_order_acq_rel)) {}
  socket_owner& operator=(socket_owner&& o) noexcept {
    if (this != &o) {
      close();
      ref_ = std::exchange(o.ref_, {});
      closed_.store(o.closed_.exchange(true, std::memory_order_acq_rel), std::memory_order_release);
    }
    return *this;
  }
  socket_owner(const socket_owner&) = delete;
  socket_owner& operator=(const socket_owner&) = delete;
  ~socket_owner() { close(); }

  void close() noexcept;
  bool is_open() const noexcept { return ref_.pd && !closed_.load(std::memory_order_acquire); }

 protected:
  socket_owner() noexcept = default;
  explicit socket_owner(io_ref r) noexcept : ref_(r), closed_(false) {}

  io_ref ref_;
  std::atomic<bool> closed_{true};
};
}  // namespace rill::detail

namespace rill::net {

// endpoint: an address and a port, e.g. {"127.0.0.1", 8080} or {"::1", 8080}.
struct endpoint {
  std::string host;
  std::uint16_t port = 0;
};

class tcp_listener;

// tcp_stream: a connected TCP socket (TCP_NODELAY on, like Go). Movable, not copyable;
// the destructor closes it.
class tcp_stream : private detail::socket_owner {
 public:
  tcp_stream() noexcept = default;  // not connected: every operation throws io_errc::closed
  tcp_stream(tcp_stream&& o) noexcept = default;
  tcp_stream& operator=(tcp_stream&& o) noexcept = default;

  // connect() connects to host:port, parking until the connection is established or
  // fails, or until `deadline` (io_errc::deadline_exceeded). Throws std::system_error
  // (ECONNREFUSED, ...).
  static tcp_stream connect(std::string_view host, std::uint16_t port,
                            io_deadline deadline = no_deadline);

  // read() parks until at least one byte is available and returns how many it read (at
  // most n), or 0 at end of stream (the peer closed or shut down writing).
  [[nodiscard]] std::size_t read(void* buf, std::size_t n);
  // read_exact() reads exactly n bytes. Returns false at a clean end of stream (no byte of
  // the n read); throws io_errc::unexpected_eof if the stream ends after some of them.
  bool read_exact(void* buf, std::size_t n);
  // write_all() writes all n bytes, parking while the peer's window is full (a peer that
  // stops reading parks the writer, which uses no CPU). Throws on error (EPIPE/ECONNRESET
  // when the peer is gone; never raises SIGPIPE).
  void write_all(const void* buf, std::size_t n);
  void write_all(std::string_view s) { write_all(s.data(), s.size()); }
  // shutdown_write() sends end of stream to the peer; reading still works.
  void shutdown_write();
  // close() closes the socket: fibers waiting on it wake with io_errc::closed; the fd
  // number is released once no operation is using it. Idempotent. (Also on destruction.)
  using socket_owner::close;

  // set_deadline() sets the read and write deadlines (Go's SetDeadline): an operation that
  // waits past it throws io_errc::deadline_exceeded. It applies to waits in progress and
  // to later ones; no_deadline removes it. A passed deadline makes every wait time out at
  // once (the data already received can still be read).
  void set_deadline(io_deadline d) noexcept;
  void set_read_deadline(io_deadline d) noexcept;
  void set_write_deadline(io_deadline d) noexcept;

  using socket_owner::is_open;
  // native_handle(): the fd (-1 when not open). Do not close it yourself.
  int native_handle() const noexcept;
  endpoint local_endpoint() const;
  endpoint remote_endpoint() const;
  // io_ref(): the poller registration (for rill's pipeline sources and sinks).
  detail::io_ref io_ref() const noexcept { return ref_; }

 private:
  friend class tcp_listener;
  explicit tcp_stream(detail::io_ref r) noexcept : socket_owner(r) {}
};

// tcp_listener: a listening TCP socket. Movable; the destructor closes it.
class tcp_listener : private detail::socket_owner {
 public:
  tcp_listener() noexcept = default;
  tcp_listener(tcp_listener&& o) noexcept = default;
  tcp_listener& operator=(tcp_listener&& o) noexcept = default;

  // listen() binds host:port (port 0: a free port, see port()) with SO_REUSEADDR and
  // listens. Throws std::system_error (EADDRINUSE, ...).
  static tcp_listener listen(std::string_view host, std::uint16_t port, int backlog = 4096);

  // accept() parks until a connection arrives and returns it. Throws std::system_error:
  // EMFILE/ENFILE when the process is out of fds (the connection stays queued and the
  // listener keeps working: back off, free fds, and call accept() again), io_errc::closed
  // when the listener is closed (also while waiting), io_errc::deadline_exceeded.
  tcp_stream accept();
  // close() closes the listener; a fiber waiting in accept() wakes with io_errc::closed.
  using socket_owner::close;
  // set_deadline(): deadline for accept() (including one waiting now).
  void set_deadline(io_deadline d) noexcept;

  using socket_owner::is_open;
  int native_handle() const noexcept;
  // port(): the bound port; local_endpoint(): the bound address.
  std::uint16_t port() const { return local_endpoint().port; }
  endpoint local_endpoint() const;
};

// listen() / connect(): Go's net.Listen("tcp", ...) and net.Dial("tcp", ...).
inline tcp_listener listen(std::string_view host, std::uint16_t port) {
  return tcp_listener::listen(host, port);
}
inline tcp_stream connect(std::string_view host, std::uint16_t port,
                          io_deadline deadline = no_deadline) {
  return tcp_stream::connect(host, port, deadline);
}

}  // namespace rill::net
