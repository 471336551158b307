// io_lease: how pipeline sources and sinks (rill/pipeline/io.hpp) reach a stream or an fd.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

#include "rill/detail/io_lease.hpp"

namespace rill::detail {

io_lease::io_lease(net::tcp_stream& s) : ref_(s.io_ref()), kind_(stream) {
  if (!s.is_open() || !io_acquire(ref_))
    throw_io_status(io_status::closed, "rill: read_lines/write_lines");
}

io_lease::io_lease(int fd) : fd_(fd) {
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0) throw_os_error(errno, "rill: read_lines/write_lines: fcntl");
  try {
    ref_ = io_open(fd, false);
  } catch (const std::system_error& e) {
    if (e.code() != std::errc::operation_not_permitted) throw;
    kind_ = file;  // epoll does not take regular files: they are always ready
    return;
  }
  if (!(flags & O_NONBLOCK) && ::fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0) {
    const int err = errno;
    io_close(ref_);
    throw_os_error(err, "rill: read_lines/write_lines: fcntl");
  }
  saved_flags_ = flags;
  kind_ = fd_registered;
}

io_lease::io_lease(io_lease&& o) noexcept
    : ref_(o.ref_), fd_(o.fd_), saved_flags_(o.saved_flags_), kind_(o.kind_) {
  o.kind_ = none;
}

io_lease::~io_lease() {
  switch (kind_) {
    case stream:
      io_release(ref_);
      break;
    case fd_registered:
      io_close(ref_);
      if (!(saved_flags_ & O_NONBLOCK)) ::fcntl(fd_, F_SETFL, saved_flags_);
      break;
    default:
      break;
  }
}

namespace {

// retry_eintr(): the result of syscall(), retried while it fails with EINTR; throws on any
// other failure.
template <class Syscall>
long retry_eintr(Syscall syscall, const char* what) {
  for (;;) {
    const ssize_t r = syscall();
    if (r >= 0) return static_cast<long>(r);
    const int err = errno;
    if (err != EINTR) throw_os_error(err, what);
  }
}

}  // namespace

long io_lease::try_read(void* buf, std::size_t n, const char* what) {
  if (kind_ != file) return io_try_read(ref_, buf, n, what);
  return retry_eintr([&] { return ::read(fd_, buf, n); }, what);
}

long io_lease::try_write(const void* buf, std::size_t n, const char* what) {
  if (kind_ != file) return io_try_write(ref_, buf, n, what);
  return retry_eintr([&] { return ::write(fd_, buf, n); }, what);
}

long io_lease::read(void* buf, std::size_t n, const std::atomic<bool>* stop, const char* what) {
  if (kind_ == file) return try_read(buf, n, what);
  return io_read_some(ref_, buf, n, stop, what);
}

long io_lease::write(const void* buf, std::size_t n, const std::atomic<bool>* stop,
                     const char* what) {
  if (kind_ == file) return try_write(buf, n, what);
  return io_write_some(ref_, buf, n, stop, what);
}

}  // namespace rill::detail
