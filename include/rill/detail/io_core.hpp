// What the public I/O templates (rill/io.hpp, rill/net.hpp, rill/pipeline/io.hpp) need from
// the compiled netpoller in src/io. Not API.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace rill::detail {

struct poll_desc;

// io_status: how a wait on the poller ended.
enum class io_status : std::uint8_t {
  ready,    // the fd may be ready: retry the syscall (it can still say EAGAIN)
  timeout,  // the direction's deadline passed
  closed,   // the registration was closed (by io_close, from any fiber)
};

inline constexpr int io_read = 0;
inline constexpr int io_write = 1;

// io_ref: one registration of an fd with a runtime's poller. `seq` tells this registration
// from a later one that reuses the same descriptor: every call with a stale ref acts as on
// a closed one. A plain value: copying it shares the registration.
struct io_ref {
  poll_desc* pd = nullptr;
  std::uint32_t seq = 0;
  explicit operator bool() const noexcept { return pd != nullptr; }
};

// io_open() registers `fd` (its flags unchanged) with the poller of the calling
// fiber's runtime (from a plain thread: the default runtime's), edge-triggered for both
// directions. With `owns_fd`, the fd is closed when the registration ends. Throws
// std::system_error when epoll refuses the fd (EPERM: a regular file; EEXIST: already
// registered) or the poller cannot be created.
io_ref io_open(int fd, bool owns_fd);
// io_close() closes the registration: waiters wake with io_status::closed, later waits and
// io_acquire() fail. The epoll registration (and the fd, if owned) goes once no operation
// holds a reference. Once per registration (later calls are no-ops).
void io_close(io_ref r) noexcept;
// io_acquire() takes a reference for one operation (the fd is not closed under it);
// false if closed. io_release() drops it.
[[nodiscard]] bool io_acquire(io_ref r) noexcept;
void io_release(io_ref r) noexcept;
// io_fd(): the registered fd (valid while a reference is held).
int io_fd(io_ref r) noexcept;
// io_wait() parks the calling fiber until the fd may be ready in direction `dir`
// (io_read/io_write), the direction's deadline passes, or the registration is closed.
// Readiness that arrived since the last wait is not lost: it returns ready at once. From
// a plain thread it blocks the thread in poll(2). Throws std::logic_error if another fiber
// already waits in that direction, or if the calling fiber belongs to another runtime.
io_status io_wait(io_ref r, int dir);
// io_set_deadline(): the absolute deadline (now_ns() clock; INT64_MAX: none) for waits in
// direction `dir`, including one in progress.
void io_set_deadline(io_ref r, int dir, std::int64_t when_ns) noexcept;
// io_interrupt(): wakes the waiter of direction `dir` as if the fd were ready (a waiter
// that is not parked yet returns at once from its next wait).
void io_interrupt(io_ref r, int dir) noexcept;

// io_read_some() / io_write_some(): one read(2)/send(2) (MSG_NOSIGNAL on sockets), waiting
// on EAGAIN. Returns the byte count (0 from a read: end of stream). Returns -1 without
// transferring anything when `*stop` is set (checked before every wait). Throws
// std::system_error: the OS error, io_errc::deadline_exceeded, or io_errc::closed.
// Precondition: the caller holds a reference (io_acquire).
long io_read_some(io_ref r, void* buf, std::size_t n, const std::atomic<bool>* stop,
                  const char* what);
long io_write_some(io_ref r, const void* buf, std::size_t n, const std::atomic<bool>* stop,
                   const char* what);

// io_try_read() / io_try_write(): one read(2)/send(2), no wait: the byte count, or -1 on
// EAGAIN. Throws std::system_error on other errors.
long io_try_read(io_ref r, void* buf, std::size_t n, const char* what);
long io_try_write(io_ref r, const void* buf, std::size_t n, const char* what);

// io_live_registrations(): registrations alive in the process (0 between runs).
std::size_t io_live_registrations() noexcept;

[[noreturn]] void throw_os_error(int err, const char* what);
[[noreturn]] void throw_io_status(io_status s, const char* what);

// blocking_call() runs fn(arg) on the blocking-call thread pool and parks the calling
// fiber until it returns (on a plain thread: calls it directly). fn must not throw.
// Throws std::system_error if no pool thread can be started.
void blocking_call(void (*fn)(void*) noexcept, void* arg);

}  // namespace rill::detail
