// src/sched/observe.cpp: the trace (RILL_TRACE=path, rill::trace_to) and the fiber dump
// (rill::dump, RILL_DUMP_ON=SIGQUIT; its per-fiber line is also the deadlock report's).
//
// The problem: see what every worker ran and why each fiber stopped, at no cost when nobody
// looks. Every switch goes through worker::set_current(); there, one relaxed load of
// g_observe decides whether anything is recorded (off: a predictable branch, nothing else).
// On, observe_switch() runs on the switching worker's thread, before `current` changes:
//   - park times (observe_park_times): the fiber leaving, if it parked, gets the time in
//     fiber::parked_at, which a dump shows as "for 1.2s";
//   - trace (observe_trace): an `end` event for the fiber leaving (with its state and wait
//     reason) and a `begin` event for the one arriving (with its name), into the ring of
//     the worker's thread.
// Rejected: a per-fiber event log (memory grows with the fibers, and a fiber moves between
// threads, so its log would need a lock shared by workers); timestamps in park() (a clock
// read on every park, on or off).
//
// Rings: one per thread that switched while tracing, made on its first event, kept in a
// global list (never freed: their number is bounded by the threads alive at once, since
// a thread that ends hands its ring to the next one that needs one). A ring holds the
// latest ring_events events; older ones are overwritten, so memory stays bounded however
// long the trace. Its owner thread appends under the ring's own spinlock, which the writer
// of the file takes too (never contended otherwise).
//
// The file: Chrome's trace-event JSON. Process 1 ("workers") has a track per ring with a
// complete ("X") event per slice in which a fiber ran, named "<fiber name> #<id>". Process
// 2 ("fibers") has a track per fiber: a span from its first to its last slice (named after
// the stages it ran), and inside it a "parked: <reason>" slice for each park, from the
// switch that parked it to the one that resumed it. Process 3 ("pipeline stages") has a
// track per stage of each pipeline run that ended while tracing (trace_stages(), with
// metrics on): the stage's span, from the first to the last moment a fiber ran it, with
// its items and busy time.
#include "sched/observe.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "sched/runtime.hpp"

namespace rill::detail {

std::atomic<unsigned> g_observe{0};

namespace {

constexpr std::size_t ring_events = 1 << 15;

struct trace_event {
  std::int64_t ts;
  std::uint64_t fiber;
  const void* rt;      // fiber ids are per runtime
  bool begin;          // true: the fiber starts running; false: it stops
  fiber_state state;   // end: what it stopped as (parked, runnable: yielded, done)
  wait_reason reason;  // end, parked: on what
  char name[40];       // the fiber's name then (a stage fiber names itself once it runs)
};

struct ring {
  int id = 0;
  ranked_spinlock lk{lock_rank::trace_ring};
  std::vector<trace_event> events;  // guarded by lk: a circular buffer of ring_events
  std::size_t next = 0;             // guarded by lk: total appended
  bool taken = true;                // guarded by g_rings_mu: a live thread owns it

  void push(const trace_event& e) noexcept {
    lk.lock();
    if (events.size() < ring_events) {
      events.push_back(e);  // reserved: never allocates
    } else {
      events[next % ring_events] = e;
    }
    ++next;
    lk.unlock();
  }
};

ranked<std::mutex> g_rings_mu{lock_rank::trace_rings};
std::vector<std::unique_ptr<ring>> g_rings;  // guarded by g_rings_mu
std::int64_t g_trace_start = 0;              // guarded by g_rings_mu (the session's)
bool g_session = false;                      // guarded by g_rings_mu
// The pipeline runs that ended during the session, their stages' spans: at most
// max_traced_runs (the rest are counted, so that a trace of a program that runs pipelines
// without end stays bounded, like the rings).
constexpr std::size_t max_traced_runs = 1024;
std::vector<std::vector<stage_span>> g_stage_runs;  // guarded by g_rings_mu
std::size_t g_runs_dropped = 0;                     // guarded by g_rings_mu

// The calling thread's ring, handed back when the thread ends.
struct ring_owner {
  ring* r = nullptr;
  ~ring_owner() {
    if (r) {
      std::lock_guard lk(g_rings_mu);
      r->taken = false;
    }
  }
};
thread_local ring_owner t_ring;

ring* my_ring() noexcept {
  if (t_ring.r) return t_ring.r;
  try {
    std::lock_guard lk(g_rings_mu);
    for (auto& r : g_rings) {
      if (!r->taken) {
        r->taken = true;
        t_ring.r = r.get();
        return t_ring.r;
      }
    }
    auto r = std::make_unique<ring>();
    r->id = static_cast<int>(g_rings.size()) + 1;
    r->events.reserve(ring_events);
    t_ring.r = r.get();
    g_rings.push_back(std::move(r));
  } catch (...) {
    return nullptr;  // out of memory: this thread's events are lost
  }
  return t_ring.r;
}

void copy_name(char (&out)[40], fiber* f) noexcept {
  std::lock_guard lk(f->stk.slot()->lk);  // fiber_set_name writes it under this lock
  std::memcpy(out, f->name, sizeof out);
  out[sizeof out - 1] = 0;
}

std::string json_escape(const char* s) {
  std::string out;
  for (; *s; ++s) {
    const unsigned char c = static_cast<unsigned char>(*s);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

const char* ended_as(const trace_event& e) {
  switch (e.state) {
    case fiber_state::parked:
      return "parked";
    case fiber_state::runnable:
      return "yielded";
    case fiber_state::done:
      return "finished";
    default:
      return "switched out";
  }
}

// write_trace(): the JSON of every ring's events, relative to `start`.
bool write_trace(const std::string& path, std::int64_t start,
                 const std::vector<std::vector<stage_span>>& runs, std::size_t dropped) {
  struct slice {
    std::int64_t t0, t1;
    std::uint64_t fiber;
    std::string name;
    const trace_event* end;  // nullptr: still running when the trace ended
  };
  std::vector<std::vector<trace_event>> copies;
  std::vector<int> ids;
  {
    std::lock_guard lk(g_rings_mu);
    for (auto& r : g_rings) {
      r->lk.lock();
      std::vector<trace_event> ev;
      const std::size_t n = std::min(r->next, ring_events);
      ev.reserve(n);
      // Oldest first.
      const std::size_t from = r->next > ring_events ? r->next % ring_events : 0;
      for (std::size_t k = 0; k < n; ++k) ev.push_back(r->events[(from + k) % ring_events]);
      r->lk.unlock();
      copies.push_back(std::move(ev));
      ids.push_back(r->id);
    }
  }
  std::ofstream out(path);
  if (!out) return false;
  auto us = [&](std::int64_t t) { return static_cast<double>(t - start) / 1000.0; };
  out.setf(std::ios::fixed);
  out.precision(3);
  out << "{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n";
  out << R"({"name":"process_name","ph":"M","pid":1,"args":{"name":"workers"}})";
  out << ",\n"
      << R"({"name":"process_name","ph":"M","pid":2,"args":{"name":"fibers"}})";
  // A fiber's track: its runtime and id (ids are per runtime), numbered in order of appearance.
  std::map<std::pair<const void*, std::uint64_t>, std::vector<slice>> by_fiber;
  for (std::size_t k = 0; k < copies.size(); ++k) {
    out << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":1,\"tid\":" << ids[k]
        << ",\"args\":{\"name\":\"worker thread " << ids[k] << "\"}}";
    // Pair each begin with the end that follows it on this thread.
    const trace_event* open = nullptr;
    for (const trace_event& e : copies[k]) {
      if (e.begin) {
        open = &e;
        continue;
      }
      if (!open || open->fiber != e.fiber || open->rt != e.rt)
        continue;  // begin fell out of the ring
      const char* fname = e.name[0] ? e.name : "fiber";
      by_fiber[{e.rt, e.fiber}].push_back({open->ts, e.ts, e.fiber, fname, &e});
      out << ",\n{\"name\":\"" << json_escape(fname) << " #" << e.fiber
          << "\",\"cat\":\"run\",\"ph\":\"X\",\"pid\":1,\"tid\":" << ids[k]
          << ",\"ts\":" << us(open->ts) << ",\"dur\":" << us(e.ts) - us(open->ts)
          << ",\"args\":{\"fiber\":" << e.fiber << ",\"then\":\"" << ended_as(e);
      if (e.state == fiber_state::parked) out << " on " << to_string(e.reason);
      out << "\"}}";
      open = nullptr;
    }
  }
  // Per fiber: its span, and its parks inside it.
  std::uint64_t tid = 0;
  for (auto& [key, slices] : by_fiber) {
    const std::uint64_t id = ++tid;
    std::sort(slices.begin(), slices.end(),
              [](const slice& a, const slice& b) { return a.t0 < b.t0; });
    // Named after every name the fiber had, in order (the fiber that calls run() takes the
    // names of the stages it runs meanwhile).
    std::string name;
    const std::string* last = nullptr;
    for (const slice& sl : slices) {
      if (!last || *last != sl.name) name += (last ? " / " : "") + sl.name;
      last = &sl.name;
    }
    out << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":2,\"tid\":" << id
        << ",\"args\":{\"name\":\"fiber " << key.second << " " << json_escape(name.c_str())
        << "\"}}";
    out << ",\n{\"name\":\"" << json_escape(name.c_str())
        << "\",\"cat\":\"stage\",\"ph\":\"X\",\"pid\":2,\"tid\":" << id
        << ",\"ts\":" << us(slices.front().t0)
        << ",\"dur\":" << us(slices.back().t1) - us(slices.front().t0)
        << ",\"args\":{\"fiber\":" << key.second << ",\"slices\":" << slices.size() << "}}";
    for (std::size_t k = 0; k + 1 < slices.size(); ++k) {
      const trace_event* e = slices[k].end;
      if (e->state != fiber_state::parked) continue;
      out << ",\n{\"name\":\"parked: " << to_string(e->reason)
          << "\",\"cat\":\"park\",\"ph\":\"X\",\"pid\":2,\"tid\":" << id
          << ",\"ts\":" << us(slices[k].t1)
          << ",\"dur\":" << us(slices[k + 1].t0) - us(slices[k].t1) << "}";
    }
  }
  // Per pipeline run: a track per stage, its span named after it.
  if (!runs.empty() || dropped != 0) {
    out << ",\n"
        << R"({"name":"process_name","ph":"M","pid":3,"args":{"name":"pipeline stages"}})";
  }
  std::uint64_t stage_tid = 0;
  for (std::size_t r = 0; r < runs.size(); ++r) {
    for (const stage_span& sp : runs[r]) {
      const std::uint64_t id = ++stage_tid;
      const std::string name = json_escape(sp.name.c_str());
      out << ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":3,\"tid\":" << id
          << ",\"args\":{\"name\":\"run " << r + 1 << ": " << name << "\"}}";
      out << ",\n{\"name\":\"" << name
          << "\",\"cat\":\"pipeline\",\"ph\":\"X\",\"pid\":3,\"tid\":" << id
          << ",\"ts\":" << us(sp.t0) << ",\"dur\":" << us(sp.t1) - us(sp.t0)
          << ",\"args\":{\"run\":" << r + 1 << ",\"items_in\":" << sp.items_in
          << ",\"items_out\":" << sp.items_out
          << ",\"busy_us\":" << static_cast<double>(sp.busy_ns) / 1000.0 << "}}";
    }
  }
  if (dropped != 0) {
    out << ",\n{\"name\":\"runs not traced: " << dropped
        << "\",\"ph\":\"i\",\"s\":\"g\",\"pid\":3,\"tid\":0,\"ts\":0}";
  }
  out << "\n]}\n";
  out.flush();
  return static_cast<bool>(out);
}

bool begin_session() {
  std::lock_guard lk(g_rings_mu);
  if (g_session) return false;
  g_session = true;
  g_stage_runs.clear();
  g_runs_dropped = 0;
  for (auto& r : g_rings) {
    r->lk.lock();
    r->events.clear();
    r->next = 0;
    r->lk.unlock();
  }
  g_trace_start = now_ns();
  g_observe.fetch_or(observe_trace | observe_park_times);
  return true;
}

bool end_session(const std::string& path) noexcept {
  std::int64_t start;
  std::vector<std::vector<stage_span>> runs;
  std::size_t dropped;
  {
    std::lock_guard lk(g_rings_mu);
    if (!g_session) return false;
    g_session = false;
    start = g_trace_start;
    runs.swap(g_stage_runs);
    dropped = g_runs_dropped;
  }
  g_observe.fetch_and(~observe_trace);
  try {
    return write_trace(path, start, runs, dropped);
  } catch (...) {
    return false;
  }
}

}  // namespace

void trace_stages(std::vector<stage_span> spans) noexcept {
  std::lock_guard lk(g_rings_mu);
  if (!g_session) return;
  if (g_stage_runs.size() >= max_traced_runs) {
    ++g_runs_dropped;
    return;
  }
  try {
    g_stage_runs.push_back(std::move(spans));
  } catch (...) {
    ++g_runs_dropped;  // out of memory: counted, not traced
  }
}

namespace {

// ---- RILL_TRACE and RILL_DUMP_ON, read when the library is loaded -----------------------------

std::string g_env_trace;  // RILL_TRACE's path, written at exit

void write_env_trace() {
  if (!end_session(g_env_trace)) {
    std::fprintf(stderr, "rill: RILL_TRACE: could not write %s\n", g_env_trace.c_str());
  }
}

int g_dump_pipe[2] = {-1, -1};

void on_dump_signal(int) {
  const int saved = errno;
  const char c = 'd';
  [[maybe_unused]] const ssize_t n = ::write(g_dump_pipe[1], &c, 1);  // async-signal-safe
  errno = saved;
}

// The dump thread: the signal handler only writes a byte; this thread formats the dump
// (which allocates and locks: nothing a signal handler may do) and writes it to stderr.
void dump_thread() {
  for (;;) {
    char c;
    const ssize_t n = ::read(g_dump_pipe[0], &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    std::ostringstream os;
    rill::dump(os);
    const std::string s = os.str();
    std::fwrite(s.data(), 1, s.size(), stderr);
    std::fflush(stderr);
  }
}

void install_dump_signal(const char* spec) {
  std::string s = spec;
  if (s.rfind("SIG", 0) == 0) s = s.substr(3);
  int sig = 0;
  if (s == "QUIT") sig = SIGQUIT;
  if (s == "USR1") sig = SIGUSR1;
  if (s == "USR2") sig = SIGUSR2;
  if (sig == 0) {
    std::fprintf(stderr, "rill: RILL_DUMP_ON=%s: not one of SIGQUIT, SIGUSR1, SIGUSR2\n", spec);
    return;
  }
  if (::pipe2(g_dump_pipe, O_CLOEXEC) != 0) return;
  try {
    std::thread(dump_thread).detach();
  } catch (...) {
    return;
  }
  struct sigaction sa {};
  sa.sa_handler = on_dump_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(sig, &sa, nullptr);
  g_observe.fetch_or(observe_park_times);
}

const bool g_env_read = [] {
  if (const char* spec = std::getenv("RILL_DUMP_ON"); spec && *spec) install_dump_signal(spec);
  if (const char* path = std::getenv("RILL_TRACE"); path && *path) {
    g_env_trace = path;
    if (begin_session()) std::atexit(write_env_trace);
  }
  return true;
}();

}  // namespace

void observe_switch(worker* w, fiber* next) noexcept {
  const unsigned what = g_observe.load(std::memory_order_relaxed);
  const std::int64_t now = now_ns();
  fiber* prev = w->current.load(std::memory_order_relaxed);
  if (prev && is_parked(prev->state.load(std::memory_order_relaxed))) {
    prev->parked_at.store(now, std::memory_order_relaxed);
  }
  if (!(what & observe_trace)) return;
  ring* r = my_ring();
  if (!r) return;
  if (prev) {
    trace_event e{now,
                  prev->id,
                  prev->rt,
                  false,
                  is_parked(prev->state.load(std::memory_order_relaxed))
                      ? fiber_state::parked
                      : prev->state.load(std::memory_order_relaxed),
                  prev->reason.load(std::memory_order_relaxed),
                  {}};
    copy_name(e.name, prev);
    r->push(e);
  }
  if (next) {
    trace_event e{now, next->id, next->rt, true, fiber_state::running, wait_reason::none, {}};
    copy_name(e.name, next);
    r->push(e);
  }
}

void format_fiber(std::ostream& os, fiber* f, std::int64_t now) {
  os << "  fiber " << f->id;
  if (f->name[0]) os << " (" << f->name << ")";
  switch (f->state.load(std::memory_order_relaxed)) {
    case fiber_state::parked:
    case fiber_state::parked_long: {
      os << ": parked on " << to_string(f->reason.load(std::memory_order_relaxed));
      if (const void* o = f->wait_object.load(std::memory_order_relaxed)) os << " " << o;
      const std::int64_t at = f->parked_at.load(std::memory_order_relaxed);
      // (`now` was read when the dump began: a fiber that parked since shows 0.)
      if ((g_observe.load(std::memory_order_relaxed) & observe_park_times) && at != 0) {
        char buf[32];
        const double s = static_cast<double>(std::max<std::int64_t>(0, now - at)) / 1e9;
        if (s >= 1) {
          std::snprintf(buf, sizeof buf, " for %.1fs", s);
        } else {
          std::snprintf(buf, sizeof buf, " for %.1fms", s * 1e3);
        }
        os << buf;
      }
      break;
    }
    case fiber_state::runnable:
      os << ": runnable";
      break;
    case fiber_state::running:
      os << ": running";
      break;
    default:
      os << ": starting";
      break;
  }
  os << "\n";
}

}  // namespace rill::detail

namespace rill {

void dump(std::ostream& os) {
  const std::string fibers = dump_fibers();
  const auto n = std::count(fibers.begin(), fibers.end(), '\n');
  os << "rill: " << n << (n == 1 ? " fiber" : " fibers") << "\n" << fibers;
}

trace_session::trace_session(std::string path) : path_(std::move(path)) {
  if (!detail::begin_session()) {
    throw std::logic_error(
        "rill::trace_to: a trace is already being recorded (RILL_TRACE or another trace_to)");
  }
  on_ = true;
}

bool trace_session::stop() noexcept {
  if (!on_) return false;
  on_ = false;
  return detail::end_session(path_);
}

}  // namespace rill
