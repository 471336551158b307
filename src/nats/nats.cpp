// rill::nats: the connection, the consuming and the publishing cores over the NATS C client.
//
// The problem. The C client blocks its caller (connect, fetch, JetStream API calls) and
// runs callbacks on threads of its own (a publish acknowledgement arrives on the thread of
// the context's reply subscription). A rill worker thread must never block, and user code
// must only run in fibers.
//
// The protocol.
//   1. Every call that can block in the client goes to rill::blocking (the pool thread
//      blocks, the fiber parks). The client's last-error text is thread-local: it is read
//      on the pool thread, in the same job (`call`).
//   2. Publishing is asynchronous (js_PublishMsgAsync). One JetStream context per
//      connection has one acknowledgement handler (on_pub_ack), which runs on the client's
//      thread: it finds the publish in conn_core::pending by its natsMsg*, and either
//      completes it (records a failure, releases the consumed message it was tied to,
//      rings the publisher's doorbell) or queues it to be sent again, same message id,
//      after a timeout, a lost connection, or (for a few seconds, with backoff) no
//      responders. The connection's resender thread sends it: the handler does not
//      re-enter the client, and the publishing fiber may be parked elsewhere. Neither runs
//      user code or waits for a fiber.
//   3. A doorbell is an eventfd: a fiber that must wait for something the client's thread
//      completes (room under max_pending or buffer, every acknowledgement in) parks on it
//      in the netpoller (rill::wait_readable), so the wait counts as I/O, not a deadlock.
//      The ringer writes only when a waiter announced itself (Dekker: the waiter stores
//      `waiting` then reads the state; the ringer changes the state then reads `waiting`,
//      all seq_cst), so a publish that nobody waits for costs no syscall.
//   4. A consumed message is an `inflight` record with a count of holders: the source's
//      push (one, until the push returns) and each publish tied to it (until its
//      acknowledgement). The last holder to let go acknowledges the message (or, if a
//      holder failed, negatively acknowledges it: redelivered at once) and frees a place
//      in the consumer's buffer.
//
// Invariants:
//   I1  consume_state::in_flight == messages fetched and not yet released (unpushed ones
//       in `list` included) <= buffer, so the server holds at most `buffer` messages for
//       this consumer as acknowledgement-pending.
//   I2  an entry of conn_core::pending holds one reference on its inflight record (if
//       any) and one count in its publish_state::pending, released together (complete).
//   I3  a message is acknowledged only after every reference on its record is released.
//
// Lock order: conn_core::mu, then the client's own locks; publish_state::mu is a leaf.
// Nothing is locked across a park.
#include "rill/nats.hpp"

#include <nats/nats.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "rill/io.hpp"
#include "rill/time.hpp"

namespace rill::nats {
namespace detail {
namespace {

using clock = std::chrono::steady_clock;

// last_error(): the client's message for the failure just seen on this thread, without
// the "(file.c:123): " the client puts in front.
std::string last_error(natsStatus s) {
  natsStatus ls = NATS_OK;
  const char* t = nats_GetLastError(&ls);
  if (!t || !*t) return natsStatus_GetText(s);
  std::string m = t;
  if (m.size() > 1 && m[0] == '(') {
    if (auto close = m.find("): "); close != std::string::npos) m.erase(0, close + 3);
  }
  return m;
}

// outcome: a client call's status, JetStream code and message, read on the calling thread.
struct outcome {
  natsStatus s = NATS_OK;
  jsErrCode js = static_cast<jsErrCode>(0);
  std::string text;
  bool ok() const { return s == NATS_OK; }
};

// call() runs f(&js_code) -> natsStatus on the blocking-call pool (parks the fiber).
template <class F>
outcome call(F f) {
  return rill::blocking([&] {
    outcome o;
    o.s = f(&o.js);
    if (o.s != NATS_OK) o.text = last_error(o.s);
    return o;
  });
}

[[noreturn]] void throw_error(const std::string& what, const outcome& o) {
  std::string m = what + ": " + o.text;
  if (o.js) m += " (JetStream error " + std::to_string(static_cast<int>(o.js)) + ")";
  throw error(m, static_cast<int>(o.s), static_cast<int>(o.js));
}

// doorbell: wakes a fiber (or a thread) waiting for state that another thread changes.
class doorbell {
 public:
  doorbell() : fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd_ < 0) throw std::system_error(errno, std::system_category(), "rill::nats: eventfd");
  }
  doorbell(const doorbell&) = delete;
  doorbell& operator=(const doorbell&) = delete;
  ~doorbell() { ::close(fd_); }

  // ring(): after changing the state a waiter may wait for.
  void ring() noexcept {
    if (waiting_.load(std::memory_order_seq_cst) == 0) return;
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t r = ::write(fd_, &one, sizeof one);
  }
  // wait_until() parks until pred() holds, or `deadline` passes (returns pred()).
  template <class Pred>
  bool wait_until(Pred pred, clock::time_point deadline = clock::time_point::max()) {
    while (!pred()) {
      if (clock::now() >= deadline) return false;
      waiting_.fetch_add(1, std::memory_order_seq_cst);
      if (pred()) {
        waiting_.fetch_sub(1, std::memory_order_seq_cst);
        return true;
      }
      // A bounded wait: a ring lost to a (theoretical) reordering costs 100 ms, not a hang.
      rill::wait_readable(fd_, std::min(deadline, clock::now() + std::chrono::milliseconds(100)));
      std::uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(fd_, &v, sizeof v);
      waiting_.fetch_sub(1, std::memory_order_seq_cst);
    }
    return true;
  }

 private:
  int fd_;
  std::atomic<int> waiting_{0};
};

}  // namespace

struct pending_pub;

// conn_core: one connection, its JetStream context and its publishes in flight.
struct conn_core {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  std::chrono::milliseconds timeout{2000};
  std::mutex mu;
  std::unordered_map<natsMsg*, pending_pub>* pending = nullptr;  // guarded by mu

  // Publishes to send again, by when (the resender thread sends them: not the
  // acknowledgement handler, which must not re-enter the client, nor a fiber, which may be
  // parked elsewhere). A leaf lock.
  std::mutex retry_mu;
  std::condition_variable retry_cv;
  std::multimap<clock::time_point, natsMsg*> retries;  // guarded by retry_mu
  bool closing = false;                                // guarded by retry_mu
  std::thread resender;                                // started by the first retry

  // Messages done with, destroyed in bursts (bury): the client hands each destroyed message
  // to its collector thread and wakes that thread whenever it sleeps, a futex call per
  // message when they come one at a time, as acknowledgements do; a burst wakes it once.
  // A leaf lock.
  static constexpr std::size_t burst = 64;
  std::mutex grave_mu;
  std::array<natsMsg*, burst> graves{};  // guarded by grave_mu
  std::size_t buried = 0;                // guarded by grave_mu

  void retry(natsMsg* m, clock::time_point when);
  void resend_loop();
  void bury(natsMsg* m) noexcept;
  void bury_all() noexcept;  // destroys what bury() holds
  ~conn_core();              // frees `pending` (also when the connection's constructor throws)
};

struct publish_state {
  conn_core* conn;
  std::string subject;
  publish_options opt;
  const void* run;
  std::atomic<std::int64_t> pending{0};  // publishes awaiting their acknowledgement
  doorbell bell;
  std::mutex mu;
  std::string error_text;  // guarded by mu: the first failure
  int error_status = 0;    // guarded by mu
  int error_js = 0;        // guarded by mu
  std::atomic<bool> failed{false};
  bool looked_up = false;                 // the publishing fiber only
  std::shared_ptr<consume_state> source;  // the publishing fiber only: the run's consume()

  void fail(std::string text, int status, int js) {
    std::lock_guard lk(mu);
    if (!failed.load()) {
      error_text = std::move(text);
      error_status = status;
      error_js = js;
      failed.store(true);
    }
  }
  void throw_if_failed() {
    if (!failed.load()) return;
    std::lock_guard lk(mu);
    throw error(error_text, error_status, error_js);
  }
};

struct consume_state {
  conn_core* conn;
  consume_options opt;
  std::string subject;
  const void* run;
  natsSubscription* sub = nullptr;
  std::atomic<std::int64_t> in_flight{0};  // keeps I1
  doorbell bell;
  // The consuming fiber only:
  natsMsgList list{nullptr, 0};
  int pos = 0;
  inflight* current = nullptr;
  void* current_fiber = nullptr;
  clock::time_point last_message = clock::now();
};

// inflight: a consumed message, until every holder let go (I3).
struct inflight {
  natsMsg* msg;
  std::shared_ptr<consume_state> cs;
  std::string id;  // "<stream>:<sequence>": the prefix of its outputs' message ids
  std::atomic<int> refs{1};
  std::atomic<bool> failed{false};
  unsigned outputs = 0;  // the consuming fiber only
};

struct pending_pub {
  std::shared_ptr<publish_state> pub;
  inflight* rec;
  clock::time_point first_try;
  int attempts = 0;
};

namespace {

// release() drops one holder of r; the last one settles the message (keeps I1, I3).
void release(inflight* r, bool ok) noexcept {
  if (!ok) r->failed.store(true);
  if (r->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  // A lost acknowledgement (the connection down) means a redelivery, which the message id
  // of the outputs makes harmless: the status is not checked.
  if (r->failed.load()) {
    natsMsg_Nak(r->msg, nullptr);
  } else {
    natsMsg_Ack(r->msg, nullptr);
  }
  r->cs->conn->bury(r->msg);
  std::shared_ptr<consume_state> cs = std::move(r->cs);
  delete r;
  cs->in_flight.fetch_sub(1, std::memory_order_seq_cst);
  cs->bell.ring();
}

// complete(): a publish is settled (keeps I2).
void complete(pending_pub& p, natsMsg* msg, bool ok, std::string text, int status, int js) {
  if (!ok) p.pub->fail(std::move(text), status, js);
  if (p.rec) release(p.rec, ok);
  p.pub->conn->bury(msg);
  p.pub->pending.fetch_sub(1, std::memory_order_seq_cst);
  p.pub->bell.ring();
}

// retryable(): a publish that may succeed if sent again. Not NATS_NO_RESPONDERS: no stream
// holds the subject (a configuration error, which resending would only hide; a server that
// restarts has JetStream up before it takes clients back).
bool retryable(natsStatus s) { return s == NATS_TIMEOUT || s == NATS_CONNECTION_DISCONNECTED; }

// A publish that no stream answered (NATS_NO_RESPONDERS) is tried again for this long:
// a server that has just restarted takes clients back a moment before its streams answer.
// Past it, no stream holds the subject (a configuration error, which resending would only
// hide).
constexpr auto no_stream_grace = std::chrono::seconds(5);

// retry_at(): when to send a publish again, or nullopt to give up.
std::optional<clock::time_point> retry_at(pending_pub& p, natsStatus s) {
  const auto now = clock::now();
  if (retryable(s) && now < p.first_try + p.pub->opt.retry_for) return now;
  if (s == NATS_NO_RESPONDERS &&
      now < p.first_try + std::min<clock::duration>(no_stream_grace, p.pub->opt.retry_for)) {
    // Backing off: 10 ms, 20 ms, ... 320 ms.
    return now + std::chrono::milliseconds(10 << std::min(p.attempts++, 5));
  }
  return std::nullopt;
}

// on_pub_ack: the client's thread, for every publish acknowledgement or failure.
void on_pub_ack(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* c = static_cast<conn_core*>(closure);
  std::unique_lock lk(c->mu);
  auto it = c->pending->find(msg);
  if (it == c->pending->end()) {  // not ours (the connection is closing)
    lk.unlock();
    natsMsg_Destroy(msg);
    return;
  }
  if (!pa && pae) {
    if (auto when = retry_at(it->second, pae->Err)) {
      // The same natsMsg (and its Nats-Msg-Id header): the entry stays, under the same key.
      lk.unlock();
      c->retry(msg, *when);
      return;
    }
  }
  pending_pub p = std::move(it->second);
  c->pending->erase(it);
  lk.unlock();
  if (pa) {
    complete(p, msg, true, {}, 0, 0);
    return;
  }
  std::string text = "rill::nats::publish to '" + p.pub->subject + "': ";
  int status = 0, code = 0;
  if (pae) {
    if (pae->Err == NATS_NO_RESPONDERS) {
      text += "no stream holds this subject (no responders)";
    } else {
      text += pae->ErrText && *pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err);
    }
    status = static_cast<int>(pae->Err);
    code = static_cast<int>(pae->ErrCode);
    if (code) text += " (JetStream error " + std::to_string(code) + ")";
    if (retryable(pae->Err)) text += " (gave up after retrying for retry_for)";
  } else {
    text += "no acknowledgement";
  }
  complete(p, msg, false, std::move(text), status, code);
}

// The runs that have a consume(): publish() in the same run finds it here.
std::mutex registry_mu;
std::vector<std::pair<const void*, std::shared_ptr<consume_state>>> registry;  // by registry_mu

std::shared_ptr<consume_state> find_run(const void* run) {
  std::lock_guard lk(registry_mu);
  for (auto& [r, s] : registry) {
    if (r == run) return s;
  }
  return nullptr;
}

}  // namespace

conn_core::~conn_core() {
  bury_all();
  delete pending;
}

void conn_core::bury(natsMsg* m) noexcept {
  std::array<natsMsg*, burst> full;
  {
    std::lock_guard lk(grave_mu);
    graves[buried++] = m;
    if (buried < burst) return;
    full = graves;
    buried = 0;
  }
  for (natsMsg* x : full) natsMsg_Destroy(x);
}

void conn_core::bury_all() noexcept {
  std::array<natsMsg*, burst> rest;
  std::size_t n;
  {
    std::lock_guard lk(grave_mu);
    rest = graves;
    n = std::exchange(buried, 0);
  }
  for (std::size_t i = 0; i < n; ++i) natsMsg_Destroy(rest[i]);
}

void conn_core::retry(natsMsg* m, clock::time_point when) {
  std::lock_guard lk(retry_mu);
  retries.emplace(when, m);
  if (!resender.joinable()) resender = std::thread([this] { resend_loop(); });
  retry_cv.notify_one();
}

void conn_core::resend_loop() {
  std::unique_lock lk(retry_mu);
  while (!closing) {
    if (retries.empty()) {
      retry_cv.wait(lk);
      continue;
    }
    const auto when = retries.begin()->first;
    if (clock::now() < when) {
      retry_cv.wait_until(lk, when);
      continue;
    }
    natsMsg* m = retries.begin()->second;
    retries.erase(retries.begin());
    lk.unlock();
    std::int64_t wait_ms = 0;
    {
      std::lock_guard plk(mu);
      if (auto it = pending->find(m); it != pending->end()) {
        wait_ms = it->second.pub->opt.ack_timeout.count();
      }
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = wait_ms;
    natsMsg* sent = m;
    const natsStatus st = js_PublishMsgAsync(js, &sent, &po);
    if (st != NATS_OK) {
      const std::string why = last_error(st);
      std::unique_lock plk(mu);
      if (auto it = pending->find(m); it != pending->end()) {
        pending_pub p = std::move(it->second);
        pending->erase(it);
        plk.unlock();
        complete(p, m, false, "rill::nats::publish to '" + p.pub->subject + "': " + why,
                 static_cast<int>(st), 0);
      }
    }
    lk.lock();
  }
}

}  // namespace detail

// ---- connection ---------------------------------------------------------------------------

connection::connection(const std::string& url) : connection(connect_options{.url = url}) {}

connection::connection(const connect_options& o) : core_(std::make_unique<detail::conn_core>()) {
  using namespace detail;
  core_->pending = new std::unordered_map<natsMsg*, pending_pub>();
  core_->timeout = o.timeout;
  natsOptions* opts = nullptr;
  if (natsOptions_Create(&opts) != NATS_OK) throw error("rill::nats: out of memory", 0, 0);
  natsOptions_SetURL(opts, o.url.c_str());
  natsOptions_SetName(opts, o.name.c_str());
  natsOptions_SetTimeout(opts, o.timeout.count());
  natsOptions_SetMaxReconnect(opts, o.max_reconnect < 0 ? INT_MAX : o.max_reconnect);
  natsOptions_SetReconnectWait(opts, o.reconnect_wait.count());
  // Room for what is published while reconnecting (max_pending bounds it in practice).
  natsOptions_SetReconnectBufSize(opts, 64 * 1024 * 1024);
  if (!o.user.empty()) natsOptions_SetUserInfo(opts, o.user.c_str(), o.password.c_str());
  if (!o.token.empty()) natsOptions_SetToken(opts, o.token.c_str());
  natsConnection* nc = nullptr;
  outcome r = call([&](jsErrCode*) { return natsConnection_Connect(&nc, opts); });
  natsOptions_Destroy(opts);
  if (!r.ok()) throw_error("rill::nats: cannot connect to " + o.url, r);
  core_->nc = nc;
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = o.timeout.count();
  // The publishers bound what is in flight themselves (publish_options::max_pending): the
  // client's own bound would block the caller (or the acknowledgement thread) instead.
  jo.PublishAsync.MaxPending = 1 << 30;
  jo.PublishAsync.AckHandler = on_pub_ack;
  jo.PublishAsync.AckHandlerClosure = core_.get();
  if (natsStatus s = natsConnection_JetStream(&core_->js, nc, &jo); s != NATS_OK) {
    const std::string text = last_error(s);
    rill::blocking([&] { natsConnection_Destroy(nc); });
    throw error("rill::nats: JetStream context: " + text, static_cast<int>(s), 0);
  }
}

connection::connection(connection&&) noexcept = default;
connection& connection::operator=(connection&&) noexcept = default;

connection::~connection() {
  if (!core_) return;
  detail::conn_core* c = core_.get();
  {
    std::lock_guard lk(c->retry_mu);
    c->closing = true;
  }
  c->retry_cv.notify_one();
  rill::blocking([c] {
    if (c->resender.joinable()) c->resender.join();
    natsConnection_FlushTimeout(c->nc, 2000);
    natsConnection_Close(c->nc);  // no callback runs after this
    jsCtx_Destroy(c->js);
    natsConnection_Destroy(c->nc);
  });
  for (auto& [m, p] : *c->pending) natsMsg_Destroy(m);
}

void connection::add_stream(const stream_options& o) {
  using namespace detail;
  std::vector<const char*> subjects;
  for (const auto& s : o.subjects) subjects.push_back(s.c_str());
  if (subjects.empty()) subjects.push_back(o.name.c_str());
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = o.name.c_str();
  cfg.Subjects = subjects.data();
  cfg.SubjectsLen = static_cast<int>(subjects.size());
  cfg.Storage = o.file_storage ? js_FileStorage : js_MemoryStorage;
  cfg.Retention = o.work_queue ? js_WorkQueuePolicy : js_LimitsPolicy;
  cfg.MaxMsgSize = o.max_msg_size;
  cfg.Duplicates = std::chrono::duration_cast<std::chrono::nanoseconds>(o.duplicate_window).count();
  jsCtx* js = core_->js;
  outcome r = call([&](jsErrCode* e) { return js_AddStream(nullptr, js, &cfg, nullptr, e); });
  if (!r.ok() && r.js == JSStreamNameExistErr) {
    r = call([&](jsErrCode* e) { return js_UpdateStream(nullptr, js, &cfg, nullptr, e); });
  }
  if (!r.ok()) throw_error("rill::nats: add_stream '" + o.name + "'", r);
}

void connection::delete_stream(const std::string& name) {
  using namespace detail;
  jsCtx* js = core_->js;
  outcome r = call([&](jsErrCode* e) { return js_DeleteStream(js, name.c_str(), nullptr, e); });
  if (!r.ok()) throw_error("rill::nats: delete_stream '" + name + "'", r);
}

std::uint64_t connection::stream_messages(const std::string& name) {
  using namespace detail;
  jsCtx* js = core_->js;
  std::uint64_t n = 0;
  outcome r = call([&](jsErrCode* e) {
    jsStreamInfo* si = nullptr;
    natsStatus s = js_GetStreamInfo(&si, js, name.c_str(), nullptr, e);
    if (s == NATS_OK) {
      n = si->State.Msgs;
      jsStreamInfo_Destroy(si);
    }
    return s;
  });
  if (!r.ok()) throw_error("rill::nats: stream '" + name + "'", r);
  return n;
}

consumer_state connection::consumer(const std::string& stream, const std::string& durable) {
  using namespace detail;
  jsCtx* js = core_->js;
  consumer_state st;
  outcome r = call([&](jsErrCode* e) {
    jsConsumerInfo* ci = nullptr;
    natsStatus s = js_GetConsumerInfo(&ci, js, stream.c_str(), durable.c_str(), nullptr, e);
    if (s == NATS_OK) {
      st.pending = ci->NumPending;
      st.ack_pending = static_cast<std::uint64_t>(ci->NumAckPending);
      st.redelivered = static_cast<std::uint64_t>(ci->NumRedelivered);
      jsConsumerInfo_Destroy(ci);
    }
    return s;
  });
  if (!r.ok()) throw_error("rill::nats: consumer '" + durable + "' of '" + stream + "'", r);
  return st;
}

void connection::flush() {
  using namespace detail;
  natsConnection* nc = core_->nc;
  const auto t = core_->timeout.count();
  outcome r = call([&](jsErrCode*) { return natsConnection_FlushTimeout(nc, t); });
  if (!r.ok()) throw_error("rill::nats: flush", r);
}

// ---- consumer -----------------------------------------------------------------------------

namespace detail {

consumer::consumer(connection& c, const consume_options& o, const void* run)
    : s_(std::make_shared<consume_state>()) {
  auto& s = *s_;
  s.conn = c.core();
  s.opt = o;
  s.run = run;
  if (o.stream.empty()) throw std::invalid_argument("rill::nats::consume: .stream is required");
  if (o.buffer == 0) throw std::invalid_argument("rill::nats::consume: .buffer must be > 0");
  if (o.durable.find('.') != std::string::npos) {
    throw std::invalid_argument("rill::nats::consume: a durable name has no '.': " + o.durable);
  }
  jsCtx* js = s.conn->js;
  s.subject = o.subject;
  if (s.subject.empty()) {  // the stream's only subject
    outcome r = call([&](jsErrCode* e) {
      jsStreamInfo* si = nullptr;
      natsStatus st = js_GetStreamInfo(&si, js, o.stream.c_str(), nullptr, e);
      if (st == NATS_OK) {
        if (si->Config->SubjectsLen == 1) s.subject = si->Config->Subjects[0];
        jsStreamInfo_Destroy(si);
      }
      return st;
    });
    if (!r.ok()) throw_error("rill::nats::consume: stream '" + o.stream + "'", r);
    if (s.subject.empty()) {
      throw std::invalid_argument("rill::nats::consume: stream '" + o.stream +
                                  "' has several subjects: set .subject");
    }
  }
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = o.durable.empty() ? nullptr : o.durable.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(o.ack_wait).count();
  cc.MaxDeliver = o.max_deliver;
  cc.FilterSubject = o.subject.empty() ? nullptr : o.subject.c_str();
  // Each process bounds its own messages in flight (buffer); the consumer's bound would
  // cap the sum over every process sharing it.
  cc.MaxAckPending = 1 << 20;
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Stream = o.stream.c_str();
  if (!o.durable.empty()) {
    // A durable is created here and then bound, so that no process deletes it when it
    // unsubscribes while others share it. Creating one that exists with the same settings
    // is a no-op; with other settings the server says so, and binding goes on.
    outcome r = call([&](jsErrCode* e) {
      return js_AddConsumer(nullptr, js, o.stream.c_str(), &cc, nullptr, e);
    });
    if (!r.ok() && (r.js == JSStreamNotFoundErr || r.s == NATS_NO_RESPONDERS ||
                    r.s == NATS_TIMEOUT || r.s == NATS_CONNECTION_CLOSED)) {
      throw_error("rill::nats::consume: stream '" + o.stream + "'", r);
    }
    so.Consumer = o.durable.c_str();
  } else {
    so.Config = cc;
  }
  outcome r = call([&](jsErrCode* e) {
    return js_PullSubscribe(&s.sub, js, s.subject.c_str(),
                            o.durable.empty() ? nullptr : o.durable.c_str(), nullptr, &so, e);
  });
  if (!r.ok()) throw_error("rill::nats::consume: stream '" + o.stream + "'", r);
  std::lock_guard lk(registry_mu);
  registry.emplace_back(run, s_);
}

consumer::~consumer() {
  auto& s = *s_;
  {
    std::lock_guard lk(registry_mu);
    std::erase_if(registry, [&](auto& e) { return e.second == s_; });
  }
  if (s.current) {  // its push threw
    inflight* r = s.current;
    s.current = nullptr;
    release(r, false);
  }
  std::int64_t unpushed = 0;
  for (int i = s.pos; i < s.list.Count; ++i) {
    if (natsMsg* m = s.list.Msgs[i]) {
      natsMsg_Nak(m, nullptr);
      natsMsg_Destroy(m);
      s.list.Msgs[i] = nullptr;
      ++unpushed;
    }
  }
  natsMsgList_Destroy(&s.list);
  s.in_flight.fetch_sub(unpushed);
  // Publishes tied to messages in flight settle them from the client's thread: wait (a
  // bounded time) so that none outlives the subscription.
  const auto wait = s.opt.ack_wait + std::chrono::seconds(5);
  try {
    s.bell.wait_until([&] { return s.in_flight.load() <= 0; }, clock::now() + wait);
  } catch (...) {
  }
  natsSubscription* sub = s.sub;
  natsConnection* nc = s.conn->nc;
  try {
    rill::blocking([&] {
      natsConnection_FlushTimeout(nc, 1000);  // the acknowledgements reach the server
      natsSubscription_Destroy(sub);
    });
  } catch (...) {
  }
}

bool consumer::next(message& m, const std::atomic<bool>& stop) {
  auto& s = *s_;
  for (;;) {
    if (s.pos < s.list.Count) {
      natsMsg* x = s.list.Msgs[s.pos];
      s.list.Msgs[s.pos++] = nullptr;
      m.handle = x;
      m.data =
          std::string_view(natsMsg_GetData(x), static_cast<std::size_t>(natsMsg_GetDataLength(x)));
      return true;
    }
    natsMsgList_Destroy(&s.list);
    s.list = {nullptr, 0};
    s.pos = 0;
    auto idle_left = [&] {
      return std::chrono::duration_cast<std::chrono::milliseconds>(s.last_message + s.opt.idle -
                                                                   clock::now());
    };
    const auto buffer = static_cast<std::int64_t>(s.opt.buffer);
    // Fetch once at least half the buffer is free: a fetch per acknowledgement would cost
    // a round trip (and a hand-off to the blocking pool) per item.
    const std::int64_t fetch_below = buffer - std::max<std::int64_t>(1, buffer / 2) + 1;
    for (;;) {
      if (stop.load(std::memory_order_relaxed)) return false;
      if (s.opt.idle.count() > 0 && idle_left().count() <= 0) return false;
      if (s.bell.wait_until([&] { return s.in_flight.load() < fetch_below; },
                            clock::now() + std::chrono::milliseconds(100))) {
        break;
      }
    }
    const int room = static_cast<int>(buffer - s.in_flight.load());
    // Short fetches so that a stopped run or an idle stream is noticed soon.
    std::int64_t wait_ms = 250;
    if (s.opt.idle.count() > 0) wait_ms = std::clamp<std::int64_t>(idle_left().count(), 1, 250);
    natsSubscription* sub = s.sub;
    natsMsgList list{nullptr, 0};
    outcome r =
        call([&](jsErrCode* e) { return natsSubscription_Fetch(&list, sub, room, wait_ms, e); });
    if (r.ok()) {
      s.list = list;
      s.in_flight.fetch_add(list.Count);
      if (list.Count > 0) s.last_message = clock::now();
      continue;
    }
    natsMsgList_Destroy(&list);
    if (r.s == NATS_TIMEOUT) continue;
    if (r.s == NATS_CONNECTION_DISCONNECTED || r.s == NATS_NO_RESPONDERS) {
      // The client is reconnecting: try again soon.
      this_fiber::sleep_for(std::chrono::milliseconds(50));
      continue;
    }
    throw_error("rill::nats::consume: fetch from stream '" + s.opt.stream + "'", r);
  }
}

void consumer::reject(message& m, const std::exception& why) {
  auto& s = *s_;
  auto* x = static_cast<natsMsg*>(m.handle);
  jsMsgMetaData* meta = nullptr;
  std::uint64_t seq = 0, delivered = 0;
  if (natsMsg_GetMetaData(&meta, x) == NATS_OK) {
    seq = meta->Sequence.Stream;
    delivered = meta->NumDelivered;
    jsMsgMetaData_Destroy(meta);
  }
  const std::string subject = natsMsg_GetSubject(x);
  std::string text = "rill::nats::consume: cannot decode the message on subject '" + subject +
                     "' (stream '" + s.opt.stream + "', sequence " + std::to_string(seq) +
                     ", delivery " + std::to_string(delivered) + "): " + why.what();
  const bool last =
      s.opt.max_deliver > 0 && delivered >= static_cast<std::uint64_t>(s.opt.max_deliver);
  if (last) {
    if (!s.opt.dead_letter.empty()) {
      natsMsg* copy = nullptr;
      natsMsg_Create(&copy, s.opt.dead_letter.c_str(), nullptr, natsMsg_GetData(x),
                     natsMsg_GetDataLength(x));
      natsMsgHeader_Set(copy, "Rill-Error", why.what());
      natsMsgHeader_Set(copy, "Rill-Subject", subject.c_str());
      natsMsgHeader_Set(copy, "Rill-Sequence", std::to_string(seq).c_str());
      const std::string id = s.opt.stream + ":" + std::to_string(seq) + ":dead";
      natsMsgHeader_Set(copy, "Nats-Msg-Id", id.c_str());
      jsCtx* js = s.conn->js;
      outcome r = call([&](jsErrCode* e) { return js_PublishMsg(nullptr, js, copy, nullptr, e); });
      natsMsg_Destroy(copy);
      if (!r.ok())
        text += "; copying it to '" + s.opt.dead_letter + "' failed: " + r.text;
      else
        text += "; copied to '" + s.opt.dead_letter + "'";
    }
    natsMsg_Term(x, nullptr);
    text += "; last delivery: terminated";
  } else {
    natsMsg_Nak(x, nullptr);
  }
  natsMsg_Destroy(x);
  m.handle = nullptr;
  s.in_flight.fetch_sub(1);
  throw decode_error(text, subject, seq);
}

void consumer::begin(message& m) {
  auto& s = *s_;
  auto* x = static_cast<natsMsg*>(m.handle);
  auto* r = new inflight{x, s_, {}};
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, x) == NATS_OK) {
    r->id = std::string(meta->Stream) + ":" + std::to_string(meta->Sequence.Stream);
    jsMsgMetaData_Destroy(meta);
  }
  m.handle = nullptr;
  s.current = r;
  s.current_fiber = rill::detail::current_fiber();
}

void consumer::end() noexcept {
  auto& s = *s_;
  inflight* r = s.current;
  s.current = nullptr;
  s.current_fiber = nullptr;
  if (r) release(r, true);
}

void consumer::finish() {
  auto& s = *s_;
  // Unpushed messages (the chain stopped early) go back at once; ~consumer does that.
  s.bell.wait_until([&] {
    std::int64_t unpushed = 0;
    for (int i = s.pos; i < s.list.Count; ++i) unpushed += s.list.Msgs[i] != nullptr;
    return s.in_flight.load() <= unpushed;
  });
  natsConnection* nc = s.conn->nc;
  call([&](jsErrCode*) { return natsConnection_FlushTimeout(nc, 2000); });
}

inflight* consumer::current() const noexcept { return s_->current; }

// ---- publisher ----------------------------------------------------------------------------

publisher::publisher(connection& c, std::string subject, const publish_options& o, const void* run)
    : s_(std::make_shared<publish_state>()) {
  s_->conn = c.core();
  s_->subject = std::move(subject);
  s_->opt = o;
  s_->run = run;
  if (s_->opt.max_pending == 0) s_->opt.max_pending = 1;
}

publisher::publisher(publisher&&) noexcept = default;
publisher::~publisher() = default;

void publisher::publish(std::string_view bytes) {
  auto& s = *s_;
  if (!s.looked_up) {
    s.source = find_run(s.run);
    s.looked_up = true;
  }
  inflight* rec = nullptr;
  if (s.source) {
    rec = s.source->current;
    if (!rec || s.source->current_fiber != rill::detail::current_fiber()) {
      throw std::logic_error(
          "rill::nats::publish: the item does not come from the push of a consume() in this "
          "fiber (its stages were moved to another fiber)");
    }
  }
  s.throw_if_failed();
  const auto max = static_cast<std::int64_t>(s.opt.max_pending);
  s.bell.wait_until([&] { return s.pending.load() < max || s.failed.load(); });
  s.throw_if_failed();

  natsMsg* m = nullptr;
  natsStatus st =
      natsMsg_Create(&m, s.subject.c_str(), nullptr, bytes.data(), static_cast<int>(bytes.size()));
  if (st != NATS_OK) throw error("rill::nats::publish: " + last_error(st), static_cast<int>(st), 0);
  if (rec) {
    const std::string id = rec->id + ":" + std::to_string(rec->outputs++);
    natsMsgHeader_Set(m, "Nats-Msg-Id", id.c_str());
    rec->refs.fetch_add(1, std::memory_order_relaxed);
  }
  s.pending.fetch_add(1, std::memory_order_seq_cst);
  conn_core* c = s.conn;
  {
    std::lock_guard lk(c->mu);
    c->pending->emplace(m, pending_pub{s_, rec, clock::now()});
  }
  jsPubOptions po;
  jsPubOptions_Init(&po);
  po.MaxWait = s.opt.ack_timeout.count();
  natsMsg* mm = m;
  st = js_PublishMsgAsync(c->js, &mm, &po);
  if (st != NATS_OK) {
    const std::string text = last_error(st);
    bool mine;
    {
      std::lock_guard lk(c->mu);
      mine = c->pending->erase(m) > 0;
    }
    if (mine) {
      if (rec) release(rec, false);
      if (mm) natsMsg_Destroy(mm);
      s.pending.fetch_sub(1);
    }
    throw error("rill::nats::publish to '" + s.subject + "' (" + std::to_string(bytes.size()) +
                    " bytes): " + text,
                static_cast<int>(st), 0);
  }
}

void publisher::finish() {
  auto& s = *s_;
  s.bell.wait_until([&] { return s.pending.load() == 0; });
  s.throw_if_failed();
}

}  // namespace detail
}  // namespace rill::nats
