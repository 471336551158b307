// rill/nats.hpp: pipelines across processes and hosts, through NATS JetStream. Target
// rill::nats (library rill_nats, built when the NATS C client, libnats, is found).
//
//   rill::nats::connection conn("nats://127.0.0.1:4222");
//   conn.add_stream({.name = "LINES", .subjects = {"lines"}});      // a work queue
//   conn.add_stream({.name = "COUNTS", .subjects = {"counts"}});
//
//   // a worker process; start as many as you like, on any host
//   rill::nats::consume<std::string>(conn, {.stream = "LINES", .durable = "split"})
//       | rill::map(split_words)                                    // plain T in, plain U out
//       | rill::nats::publish<std::vector<std::string>>(conn, "counts");
//
// consume<T>(conn, {...}) is a source over a JetStream pull consumer: processes that name
// the same stream and durable share its messages (a work queue: each message goes to one of
// them). publish<T>(conn, subject) is a terminal that publishes each item to a stream and
// waits for the server's acknowledgement. Items cross the wire through rill::codec<T>
// (rill/codec.hpp).
//
// Delivery: at least once, and no loss. A consumed message is acknowledged only once the
// item and everything derived from it have been handled by the terminal of this process:
// published with the server's publish acknowledgement received, or returned from a local
// sink (reduce, collect, sink, count, to). A process that dies leaves its unacknowledged
// messages to be redelivered to another after `ack_wait`. Each publish carries a message
// id (Nats-Msg-Id) derived from the input message (stream, sequence, and the output's
// index among that input's outputs), so the server drops the output of a redelivered input
// when it was already stored (within the stream's duplicate window, 2 min by default):
// end to end, each input yields its outputs once.
//
// How the acknowledgement follows an item. The stages between consume() and its terminal
// run in the consuming fiber, as nested calls (rill's fusion), so when the source's push of
// an item returns, every item derived from it has reached the terminal; a publish made
// meanwhile is tied to the message being pushed, and the message is acknowledged when the
// push has returned and every publish tied to it is acknowledged. Your functions see plain
// T. What that rules out, checked when the run starts (std::logic_error): a stage in a
// fiber of its own between consume() and the terminal (`.fuse = false`, stage_boundary,
// run_options{.fusion = false}), par_map, batch (it holds items across pushes), a broadcast
// terminal, and consume() inside merge(). Parallelism across items comes from more
// consuming processes (or more pipelines in one process, each with its own consume()).
//
// Backpressure: a consume() holds at most `buffer` messages that are fetched and not yet
// acknowledged (it fetches only what it has room for), and a publish() at most
// `max_pending` publishes waiting for their acknowledgement; a slow stage or a slow server
// makes the source wait, never memory grow.
//
// Fibers: every wait (connect, fetch, a publish acknowledgement, room to publish) parks the
// calling fiber; no rill worker thread blocks on NATS. Calls that block in the C client
// run on rill's blocking-call pool (rill::blocking); the C client's own threads only
// record acknowledgements and wake the waiting fiber (they never run your code).
//
// Errors: rill::nats::error (a std::runtime_error) with the server's or the client's
// message and codes: no server, authorization, stream not found, message too large,
// a publish not acknowledged in time. A message that does not decode fails the run with
// rill::nats::decode_error (naming the subject, stream and sequence); it is not
// acknowledged, so it is redelivered, up to `max_deliver` deliveries; at the last one it is
// copied to `dead_letter` (when set) and terminated.
//
// Thread safety: a connection may be used by any number of pipelines, fibers and threads
// at once. It must outlive the runs that use it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "rill/codec.hpp"
#include "rill/pipeline.hpp"

namespace rill::nats {

// error: a NATS failure. status(): the C client's natsStatus (0: none); js_code(): the
// JetStream error code (e.g. 10059 "stream not found", 10054 "message size exceeds
// maximum allowed"; 0: none).
class error : public std::runtime_error {
 public:
  error(const std::string& what, int status, int js_code)
      : std::runtime_error(what), status_(status), js_code_(js_code) {}
  int status() const noexcept { return status_; }
  int js_code() const noexcept { return js_code_; }

 private:
  int status_;
  int js_code_;
};

// decode_error: a consumed message that rill::codec<T> could not decode.
class decode_error : public error {
 public:
  decode_error(const std::string& what, std::string subject, std::uint64_t sequence)
      : error(what, 0, 0), subject_(std::move(subject)), sequence_(sequence) {}
  const std::string& subject() const noexcept { return subject_; }
  std::uint64_t sequence() const noexcept { return sequence_; }  // in the stream

 private:
  std::string subject_;
  std::uint64_t sequence_;
};

// connect_options: e.g. `{.url = "nats://10.0.0.5:4222", .name = "worker-3"}`.
struct connect_options {
  std::string url = "nats://127.0.0.1:4222";  // a comma-separated list for a cluster
  std::string name = "rill";                  // shown by the server's monitoring
  std::chrono::milliseconds timeout{2000};    // to connect, and for JetStream API calls
  // Reconnection: the client reconnects by itself; publishes and acknowledgements made
  // meanwhile are buffered, fetches wait. -1: for ever.
  int max_reconnect = -1;
  std::chrono::milliseconds reconnect_wait{100};
  std::string user{};  // credentials, if the server wants them
  std::string password{};
  std::string token{};
};

// stream_options: a JetStream stream, e.g. `{.name = "LINES", .subjects = {"lines"}}`.
struct stream_options {
  std::string name{};
  std::vector<std::string> subjects{};         // empty: the stream's name
  bool file_storage = true;                    // false: memory (lost when the server stops)
  bool work_queue = true;                      // a message is removed once acknowledged
  std::int32_t max_msg_size = -1;              // bytes; -1: the server's limit
  std::chrono::seconds duplicate_window{120};  // how long a Nats-Msg-Id is remembered
};

// consumer_state: a durable consumer as the server sees it now.
struct consumer_state {
  std::uint64_t pending = 0;      // in the stream, not yet delivered
  std::uint64_t ack_pending = 0;  // delivered, not yet acknowledged
  std::uint64_t redelivered = 0;  // delivered more than once, not yet acknowledged
};

namespace detail {
struct conn_core;
}

// connection: one connection to a NATS server (or cluster). Movable, not copyable; the
// destructor closes it (after it flushed what was published).
class connection {
 public:
  // connection(url / options) connects, parking the calling fiber (blocking a plain
  // thread). Throws rill::nats::error (e.g. "no server available for connection").
  explicit connection(const std::string& url);
  explicit connection(const connect_options& o);
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  ~connection();

  // add_stream() creates the stream, or updates an existing one to these options.
  void add_stream(const stream_options& o);
  // delete_stream() deletes it; throws rill::nats::error if it does not exist.
  void delete_stream(const std::string& name);
  // stream_messages(): messages stored in the stream now.
  std::uint64_t stream_messages(const std::string& name);
  // consumer(): the state of a durable consumer; throws if it does not exist.
  consumer_state consumer(const std::string& stream, const std::string& durable);
  // flush() parks until the server has processed everything sent so far.
  void flush();

  detail::conn_core* core() const noexcept { return core_.get(); }

 private:
  std::unique_ptr<detail::conn_core> core_;
};

// consume_options: e.g. `{.stream = "LINES", .durable = "split", .buffer = 64}`.
struct consume_options {
  std::string stream{};  // required
  // The consumer's filter ("": the stream's subject, when it has only one).
  std::string subject{};
  // The durable consumer's name (no '.'): processes with the same one share the messages.
  // "": an ephemeral consumer of this run alone.
  std::string durable{};
  std::size_t buffer = 256;  // most messages fetched and not yet acknowledged
  // A message not acknowledged within ack_wait is delivered again (to any consumer).
  std::chrono::milliseconds ack_wait{30000};
  int max_deliver = 5;        // deliveries of one message before the server gives up (-1: no limit)
  std::string dead_letter{};  // subject a message that fails its last delivery is copied to
  // The stream ends once no message came for this long (0: never; the run then ends by
  // take(n) or cancellation).
  std::chrono::milliseconds idle{0};
};

// publish_options: e.g. `{.max_pending = 1024}`.
struct publish_options {
  std::size_t max_pending = 256;  // most publishes awaiting the server's acknowledgement
  // A publish not acknowledged within ack_timeout (or cut off by a lost connection) is sent
  // again, with the same message id, until retry_for has passed since the first try; then
  // the run fails. One that no stream answered is tried again for a few seconds (a server
  // that just restarted), then fails the run: no stream holds the subject.
  std::chrono::milliseconds ack_timeout{2000};
  std::chrono::milliseconds retry_for{60000};
};

namespace detail {

// message: a fetched message, as the source's template sees it.
struct message {
  void* handle = nullptr;  // natsMsg*
  std::string_view data;
};

struct consume_state;
struct inflight;

// consumer: the non-template core of consume(): the pull subscription, the messages in
// flight, and the run's "current message" for publish().
class consumer {
 public:
  consumer(connection& c, const consume_options& o, const void* run);
  consumer(const consumer&) = delete;
  consumer& operator=(const consumer&) = delete;
  // ~consumer(): messages fetched and not pushed, and one whose push threw, are negatively
  // acknowledged (redelivered at once); it waits for the publishes tied to messages in
  // flight to be acknowledged, then unsubscribes.
  ~consumer();

  // next() parks until a message is fetched (true) or the stream ends: the run stopped,
  // or `idle` passed with no message (false). Fetches only while fewer than `buffer`
  // messages are in flight. Throws rill::nats::error.
  bool next(message& m, const std::atomic<bool>& stop);
  // reject() handles a message that did not decode: negative acknowledgement (or, at its
  // last delivery, a copy to dead_letter and termination), then throws decode_error.
  [[noreturn]] void reject(message& m, const std::exception& why);
  // begin(): m is being pushed down the chain (publishes tie to it); end(): the push
  // returned (m is acknowledged once its publishes are).
  void begin(message& m);
  void end() noexcept;
  // finish() parks until every message in flight is acknowledged and the acknowledgements
  // reached the server.
  void finish();

  // current(): the message being pushed by this fiber (for publish()), or nullptr.
  inflight* current() const noexcept;

 private:
  std::shared_ptr<consume_state> s_;
};

struct publish_state;

// publisher: the non-template core of publish().
class publisher {
 public:
  publisher(connection& c, std::string subject, const publish_options& o, const void* run);
  publisher(publisher&&) noexcept;
  publisher& operator=(publisher&&) = delete;
  ~publisher();
  // publish() parks while max_pending publishes await their acknowledgement, then sends
  // `bytes` (tied to the consuming message this fiber pushes, if any). Throws
  // rill::nats::error: a failure of this or of an earlier publish.
  void publish(std::string_view bytes);
  // finish() parks until every publish is acknowledged; throws the first failure.
  void finish();

 private:
  std::shared_ptr<publish_state> s_;
};

// check_one_fiber(): the pipeline layout that consume() needs (see the top of this file).
template <class Stages>
void check_one_fiber(Stages& st, const rill::detail::pipe_ctx& ctx, bool to_terminal) {
  auto fail = [](const char* why) {
    throw std::logic_error(std::string("rill::nats::consume: ") + why +
                           ": the stages after consume() must run in its fiber, so that a "
                           "message is acknowledged only once what it became was handled");
  };
  if (!to_terminal) fail("it feeds a merge() or a broadcast()");
  if (!ctx.fusion) fail("run_options{.fusion = false}");
  std::apply(
      [&](auto&... s) {
        (
            [&](auto& one) {
              using S = std::remove_cvref_t<decltype(one)>;
              if constexpr (S::parallel) {
                fail("par_map() follows it");
              } else {
                if (std::string_view(S::kind) == "batch") fail("batch() follows it");
                if (one.opt.fuse.has_value() && !*one.opt.fuse) {
                  fail("a stage has .fuse = false (or is a stage_boundary)");
                }
              }
            }(s),
            ...);
      },
      st);
}

template <class T>
struct consume_source {
  static constexpr const char* kind = "nats::consume";
  // The pipeline builder keeps the chain after this source in one fiber (no split) and
  // asks check_layout() whether the stages allow it.
  static constexpr bool one_fiber = true;
  using value_type = T;
  connection* conn;
  consume_options opt;

  template <class Stages>
  static void check_layout(Stages& st, const rill::detail::pipe_ctx& ctx, bool to_terminal) {
    check_one_fiber(st, ctx, to_terminal);
  }

  template <class Sink>
  void drive(Sink& sink, rill::detail::pipe_ctx& ctx) {
    consumer c(*conn, opt, &ctx);
    message m;
    while (c.next(m, ctx.stop)) {
      std::optional<T> v;
      try {
        v.emplace(codec<T>::decode(m.data));
      } catch (const std::exception& e) {
        c.reject(m, e);
      }
      c.begin(m);
      const bool more = sink(std::move(*v));
      c.end();
      if (!more) break;
      if constexpr (requires { sink.tick(std::size_t{}); }) sink.tick(1);
    }
    sink.finish();
    c.finish();
  }
};

template <class T>
struct publish_term {
  static constexpr const char* kind = "nats::publish";
  connection* conn;
  std::string subject;
  publish_options opt;

  template <class In>
  static constexpr bool accepts = std::is_convertible_v<In&&, const T&>;
  template <class In>
  static constexpr void check() {
    static_assert(accepts<In>, "rill::nats::publish<T>: the upstream item does not convert to T");
  }
  template <class In>
  using result_t = void;

  struct sink {
    publisher pub;
    std::string buf{};
    template <class V>
    bool operator()(V&& v, auto...) {
      buf.clear();
      codec<T>::encode(static_cast<const T&>(v), buf);
      pub.publish(buf);
      return true;
    }
    void flush_hint() {}
    void finish() { pub.finish(); }
  };
  template <class In>
  sink make(rill::detail::pipe_ctx& ctx, rill::detail::result_slot<void>*, rill::detail::stage_id) {
    return sink{publisher(*conn, subject, opt, &ctx)};
  }
};

}  // namespace detail

// consume<T>(conn, opt): a source of the messages of a JetStream stream, decoded as T, over
// a pull consumer (opt.durable: shared by every process that names it). See the top of this
// file for acknowledgement, backpressure and the layout it needs.
template <class T>
auto consume(connection& conn, consume_options opt) {
  static_assert(sizeof(codec<T>) > 0, "rill::nats::consume<T>: T needs a rill::codec<T>");
  return rill::detail::flow<detail::consume_source<T>>{{&conn, std::move(opt)}, {}};
}

// publish<T>(conn, subject, opt): a terminal that publishes each item, encoded as T, to the
// stream that holds `subject`, and waits for the server's acknowledgements (run() returns
// once every item is acknowledged). Items convert to T first (publish<std::string> takes a
// const char*).
template <class T>
auto publish(connection& conn, std::string subject, publish_options opt = {}) {
  static_assert(sizeof(codec<T>) > 0, "rill::nats::publish<T>: T needs a rill::codec<T>");
  return detail::publish_term<T>{&conn, std::move(subject), opt};
}

}  // namespace rill::nats
