// io_lease: how pipeline sources and sinks (rill/pipeline/io.hpp) reach a stream or an fd
// (src/io/lease.cpp). Not API.
#pragma once

#include <atomic>
#include <cstddef>

#include "rill/detail/io_core.hpp"
#include "rill/net.hpp"

namespace rill::detail {

// io_lease: access to a stream (a borrowed reference on its registration) or to an fd
// (registered for the lease; non-blocking during it) for one source or sink.
class io_lease {
 public:
  explicit io_lease(net::tcp_stream& s);  // throws io_errc::closed if s is closed
  explicit io_lease(int fd);              // throws std::system_error (EBADF, ...)
  io_lease(io_lease&& o) noexcept;
  io_lease& operator=(io_lease&&) = delete;
  ~io_lease();

  // try_read/try_write: one syscall; -1 on EAGAIN. read/write: wait on EAGAIN; -1 once
  // *stop is set (checked before each wait).
  long try_read(void* buf, std::size_t n, const char* what);
  long try_write(const void* buf, std::size_t n, const char* what);
  long read(void* buf, std::size_t n, const std::atomic<bool>* stop, const char* what);
  long write(const void* buf, std::size_t n, const std::atomic<bool>* stop, const char* what);
  // ref(): the registration to interrupt on cancel (empty for a regular file).
  io_ref ref() const noexcept { return ref_; }

 private:
  enum kind_t : unsigned char { none, stream, fd_registered, file };
  io_ref ref_;
  int fd_ = -1;
  int saved_flags_ = -1;
  kind_t kind_ = none;
};

}  // namespace rill::detail
