// rill/pipeline/io.hpp: pipeline sources and sinks on sockets and fds.
//
//   auto conn = rill::net::tcp_stream::connect("127.0.0.1", port);
//   rill::read_lines(conn)                  // a source: one std::string per line
//       | rill::map(to_upper)
//       | rill::write_lines(out_fd)         // a terminal: each item and a '\n'
//       ;  .run();
//
// read_lines(src) reads until end of stream and yields each line without its '\n' (a last
// line without one is yielded too), and by default without a '\r' just before the line's
// end, so that CRLF text (HTTP, Windows files) reads as LF text does: Go's bufio.ScanLines
// does the same. read_lines(src, {.keep_cr = true}) keeps that '\r'; a '\r' anywhere else
// in a line is always kept. write_lines(dst) writes each item (anything that
// converts to std::string_view) followed by '\n', buffering up to 64 KiB and writing when
// the buffer fills, when the upstream stage is about to wait for input, and at the end.
// Both park their fiber on the netpoller while the fd is not ready; a cancelled run (an
// exception in another stage, take(n), cancel()) wakes them at once.
//
// `src`/`dst` is a net::tcp_stream (referred to, not owned: it must outlive the run; it is
// not closed at the end) or an fd: a socket, pipe, tty or regular file (not owned, not
// closed; made non-blocking for the run and restored after; a regular file is read and
// written directly). Errors (the OS error, io_errc::deadline_exceeded from the stream's
// deadline) fail the run like any stage's exception.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "rill/detail/io_lease.hpp"
#include "rill/io.hpp"
#include "rill/net.hpp"
#include "rill/pipeline/pipeline.hpp"
#include "rill/pipeline/run_context.hpp"
#include "rill/pipeline/sinks.hpp"
#include "rill/pipeline/sources.hpp"

namespace rill {

// line_options: how read_lines() cuts lines, e.g. `rill::read_lines(fd, {.keep_cr = true})`.
struct line_options {
  // false (the default): a '\r' just before a line's end is dropped, as Go's
  // bufio.ScanLines drops it. true: a line keeps it.
  bool keep_cr = false;
};

namespace detail {

// cancel_watch: a helper fiber that interrupts the lease's wait when the run is cancelled,
// so a source or sink parked on a silent peer stops promptly. Ends with its owner.
class cancel_watch {
 public:
  cancel_watch(pipe_ctx& ctx, io_ref r, int dir) {
    wg_.add(1);
    go([this, &ctx, r, dir] {
      select(on_recv(ctx.cancelled), on_recv(done_));
      if (ctx.stop.load()) io_interrupt(r, dir);
      fiber_retire();  // its owner's run may end as soon as done() wakes it
      wg_.done();
    });
  }
  cancel_watch(const cancel_watch&) = delete;
  cancel_watch& operator=(const cancel_watch&) = delete;
  ~cancel_watch() {
    done_.close();
    wg_.wait();
  }

 private:
  chan<char> done_{0};
  wait_group wg_;
};

template <class Target>
struct line_source {
  static constexpr const char* kind = "read_lines";
  using value_type = std::string;
  Target target;  // net::tcp_stream* or int
  bool keep_cr = false;

  template <class Sink>
  void drive(Sink& sink, pipe_ctx& ctx) {
    constexpr std::size_t chunk = 64 * 1024;
    constexpr const char* what = "rill::read_lines";
    io_lease io = open();
    std::unique_ptr<cancel_watch> watch;
    std::string buf;
    std::size_t start = 0, scanned = 0;
    // without_cr(end): where the line that ends at `end` stops (before a '\r' it drops).
    auto without_cr = [&](std::size_t end) {
      return !keep_cr && end > start && buf[end - 1] == '\r' ? end - 1 : end;
    };
    // The chain hears how many lines went after each buffer's worth, and how long a read
    // waited (as a channel source's wait for a value): its windows, slices and splits.
    constexpr bool head = requires { sink.tick(std::size_t{}); };
    for (;;) {
      bool stopped = false;
      std::size_t lines = 0;
      for (std::size_t nl; (nl = buf.find('\n', scanned)) != std::string::npos;) {
        ++lines;
        if (!sink(buf.substr(start, without_cr(nl) - start))) {
          stopped = true;
          break;
        }
        start = scanned = nl + 1;
      }
      if (stopped || ctx.stop.load(std::memory_order_relaxed)) break;
      if constexpr (head) {
        if (lines) sink.tick(lines);
      }
      buf.erase(0, start);
      start = 0;
      scanned = buf.size();
      buf.resize(scanned + chunk);
      long r = io.try_read(buf.data() + scanned, chunk, what);
      if (r < 0) {
        sink.flush_hint();  // about to wait: let what we produced go downstream
        if (!watch && io.ref()) watch = std::make_unique<cancel_watch>(ctx, io.ref(), io_read);
        const std::int64_t t0 = head ? now_ns() : 0;
        r = io.read(buf.data() + scanned, chunk, &ctx.stop, what);
        if constexpr (head) sink.waited(now_ns() - t0);
      }
      buf.resize(scanned + static_cast<std::size_t>(r < 0 ? 0 : r));
      if (r < 0) break;  // cancelled
      if (r == 0) {      // end of stream
        if (!buf.empty()) {
          buf.resize(without_cr(buf.size()));  // start is 0 here
          sink(std::move(buf));
        }
        break;
      }
    }
    sink.finish();
  }

 private:
  io_lease open() {
    if constexpr (std::is_same_v<Target, int>) {
      return io_lease(target);
    } else {
      return io_lease(*target);
    }
  }
};

template <class Target>
struct line_sink_term {
  static constexpr const char* kind = "write_lines";
  Target target;
  template <class In>
  static constexpr bool accepts = std::is_convertible_v<In&&, std::string_view>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>, "rill::write_lines: items must convert to std::string_view");
  }
  template <class In>
  using result_t = void;

  struct sink {
    pipe_ctx* ctx;
    io_lease io;
    std::string buf{};
    std::unique_ptr<cancel_watch> watch{};
    bool open = true;

    template <class V>
    bool operator()(V&& v, auto...) {
      const std::string_view s(v);
      buf.append(s.data(), s.size());
      buf.push_back('\n');
      if (buf.size() >= 64 * 1024) return flush();
      return true;
    }
    void flush_hint() { flush(); }
    void finish() { flush(); }

    // flush() writes the buffer; false once the run is cancelled.
    bool flush() {
      constexpr const char* what = "rill::write_lines";
      std::size_t put = 0;
      while (open && put < buf.size()) {
        long r = io.try_write(buf.data() + put, buf.size() - put, what);
        if (r < 0) {
          if (!watch && io.ref()) watch = std::make_unique<cancel_watch>(*ctx, io.ref(), io_write);
          r = io.write(buf.data() + put, buf.size() - put, &ctx->stop, what);
        }
        if (r < 0)
          open = false;  // cancelled: what is left is dropped
        else
          put += static_cast<std::size_t>(r);
      }
      buf.clear();
      return open;
    }
  };

  template <class In>
  sink make(pipe_ctx& ctx, result_slot<void>*, stage_id) {
    if constexpr (std::is_same_v<Target, int>) {
      return sink{&ctx, io_lease(target)};
    } else {
      return sink{&ctx, io_lease(*target)};
    }
  }
};

}  // namespace detail

// read_lines(stream) / read_lines(fd): a source of the lines read from a socket or an fd
// (a trailing '\r' dropped unless opt.keep_cr).
inline auto read_lines(net::tcp_stream& s, line_options opt = {}) {
  return detail::flow<detail::line_source<net::tcp_stream*>>{{&s, opt.keep_cr}, {}};
}
inline auto read_lines(int fd, line_options opt = {}) {
  return detail::flow<detail::line_source<int>>{{fd, opt.keep_cr}, {}};
}

// write_lines(stream) / write_lines(fd): a terminal that writes each item and a '\n'.
inline auto write_lines(net::tcp_stream& s) { return detail::line_sink_term<net::tcp_stream*>{&s}; }
inline auto write_lines(int fd) { return detail::line_sink_term<int>{fd}; }

}  // namespace rill
