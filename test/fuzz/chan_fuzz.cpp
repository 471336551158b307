// libFuzzer target (research/reliability.md section 7, T31b): random programs of channel
// operations -- send, recv, try_send, try_recv, close, select with random cases and an
// optional default, yield -- run by several fibers over 1-4 channels of capacity 0-4, and
// checked against what Go allows.
//
// Oracles:
//   1. Conservation (every run): each value is unique (sender, sequence number). A value is
//      received at most once, only if its send succeeded, and every successful send is
//      received or still buffered at the end; a send that failed (closed channel, full
//      try_send, select case not chosen) is never received. Per channel and sender, values
//      leave in the order they were sent (FIFO): a receiver never sees a sender's values out
//      of order, and what is left in a channel is newer than anything received from it.
//   2. Reference model (one worker): the run is sequential, so each operation either
//      completes at once or parks, and the harness sees which (the next event is another
//      fiber's). A model of each channel (buffer, closed flag, queues of parked senders and
//      receivers, select waiters on several queues) predicts the result of every operation
//      that completes at once, and of every parked one that another completes (a hand-off,
//      a close); it checks that an operation parks only when the model says it cannot
//      proceed, that select picks only a ready case and takes `default` only when none is,
//      and, at the end, that each channel's buffer holds exactly what the model's holds.
//   3. No crash, hang, deadlock report or leak (ASan+UBSan in the fuzz build; live values
//      and runtime counts are checked after every run).
// Termination: after a number of yields taken from the input, the main fiber closes every
// channel, which releases every parked operation; so a run always ends.
//
// Input layout (bytes; a short input reads as zeros):
//   [flags: bit0 two workers] [nchans-1 (%4)] [cap per channel (%5)]...
//   [nfibers-1 (%5)] [main yields] then, per fiber: [nops (%24)] ops...
//   op: [kind (%7)] then kind-specific bytes (channel %nchans, case count, default flag).
#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <map>
#include <optional>
#include <rill/rill.hpp>
#include <string>
#include <vector>

#include "rill/detail/chan_core.hpp"

namespace {

// ---- values ------------------------------------------------------------------------------

std::atomic<long> g_live_items{0};

// item: a value that counts its live objects (leak and double-destroy check).
struct item {
  std::uint64_t v = 0;
  explicit item(std::uint64_t x) : v(x) { g_live_items.fetch_add(1, std::memory_order_relaxed); }
  item(const item& o) : v(o.v) { g_live_items.fetch_add(1, std::memory_order_relaxed); }
  item(item&& o) noexcept : v(o.v) { g_live_items.fetch_add(1, std::memory_order_relaxed); }
  item& operator=(const item&) = default;
  ~item() { g_live_items.fetch_sub(1, std::memory_order_relaxed); }
};

std::uint64_t make_value(int fiber, std::uint32_t seq) {
  return (std::uint64_t(fiber + 1) << 32) | seq;
}
int sender_of(std::uint64_t v) { return int(v >> 32) - 1; }
std::uint32_t seq_of(std::uint64_t v) { return std::uint32_t(v); }

// ---- the scenario, decoded from the input --------------------------------------------------

constexpr int max_chans = 4, max_fibers = 5, max_ops = 24, max_cases = 4;

enum class op_kind : std::uint8_t { send, recv, try_send, try_recv, close, select, yield };
const char* kind_name[] = {"send", "recv", "try_send", "try_recv", "close", "select", "yield"};

struct case_desc {
  bool send = false;
  int ch = 0;
};

struct op_desc {
  op_kind kind = op_kind::yield;
  int ch = 0;
  int ncases = 0;
  std::array<case_desc, max_cases> cases{};
  bool has_default = false;
};

struct scenario {
  unsigned workers = 1;
  int nchans = 1;
  std::array<int, max_chans> caps{};
  int nfibers = 1;
  int main_yields = 0;
  std::vector<std::vector<op_desc>> programs;
};

class reader {
 public:
  reader(const std::uint8_t* p, std::size_t n) : p_(p), n_(n) {}
  int byte() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  int below(int k) { return byte() % k; }

 private:
  const std::uint8_t* p_;
  std::size_t n_;
};

scenario decode(const std::uint8_t* data, std::size_t size) {
  reader r(data, size);
  scenario s;
  s.workers = (r.byte() & 1) ? 2 : 1;
  s.nchans = 1 + r.below(max_chans);
  for (int i = 0; i < s.nchans; ++i) s.caps[i] = r.below(5);
  s.nfibers = 1 + r.below(max_fibers);
  s.main_yields = r.byte();
  s.programs.resize(s.nfibers);
  for (auto& prog : s.programs) {
    const int nops = r.below(max_ops);
    for (int k = 0; k < nops; ++k) {
      op_desc op;
      op.kind = static_cast<op_kind>(r.below(7));
      op.ch = r.below(s.nchans);
      if (op.kind == op_kind::select) {
        const int b = r.byte();
        op.ncases = 1 + b % max_cases;
        op.has_default = (b / max_cases) % 2;
        for (int c = 0; c < op.ncases; ++c) {
          const int cb = r.byte();
          op.cases[c].send = cb & 1;
          op.cases[c].ch = (cb >> 1) % s.nchans;
        }
      }
      prog.push_back(op);
    }
  }
  return s;
}

std::string describe(const scenario& s) {
  std::string out = "workers=" + std::to_string(s.workers) + " caps=[";
  for (int i = 0; i < s.nchans; ++i) {
    if (i) out += ',';
    out += std::to_string(s.caps[i]);
  }
  out += "] main_yields=" + std::to_string(s.main_yields) + "\n";
  for (int f = 0; f < s.nfibers; ++f) {
    out += "  fiber " + std::to_string(f) + ":";
    for (const op_desc& op : s.programs[f]) {
      out += std::string(" ") + kind_name[int(op.kind)];
      if (op.kind == op_kind::select) {
        out += "{";
        for (int c = 0; c < op.ncases; ++c) {
          if (c) out += ',';
          out += op.cases[c].send ? "send" : "recv";
          out += std::to_string(op.cases[c].ch);
        }
        out += op.has_default ? ",default}" : "}";
      } else if (op.kind != op_kind::yield) {
        out += std::to_string(op.ch);
      }
    }
    out += "\n";
  }
  return out;
}

const scenario* g_scenario = nullptr;
const bool g_trace = std::getenv("RILL_FUZZ_TRACE") != nullptr;  // print every model event

[[noreturn]] void fail(const std::string& why) {
  std::fprintf(stderr, "chan_fuzz: ORACLE VIOLATION: %s\nscenario: %s", why.c_str(),
               g_scenario ? describe(*g_scenario).c_str() : "?\n");
  std::abort();
}

// ---- results -----------------------------------------------------------------------------

// result: what an operation did. `index` is the select case that ran (ncases: default).
struct result {
  enum kind_t : std::uint8_t { ok, value, none, full, closed } kind = ok;
  std::uint64_t v = 0;
  int index = -1;
  friend bool operator==(const result& a, const result& b) {
    return a.kind == b.kind && a.index == b.index && (a.kind != value || a.v == b.v);
  }
};

std::string str(const result& r) {
  static const char* names[] = {"ok", "value", "none", "full", "closed"};
  std::string s = names[r.kind];
  if (r.kind == result::value) {
    s += ' ';
    s += std::to_string(sender_of(r.v));
    s += ':';
    s += std::to_string(seq_of(r.v));
  }
  if (r.index >= 0) s += " case " + std::to_string(r.index);
  return s;
}

// ---- the reference model (one worker) --------------------------------------------------------

class model {
 public:
  explicit model(const scenario& s) : chans_(s.nchans), fibers_(s.nfibers + 1) {
    for (int i = 0; i < s.nchans; ++i) chans_[i].cap = s.caps[i];
  }

  // begin(): fiber f starts op (with the value it would send, for sends).
  void begin(int f, const op_desc& op, std::uint64_t send_value) {
    settle(f);
    if (g_trace) std::fprintf(stderr, "  fiber %d begins %s\n", f, kind_name[int(op.kind)]);
    fiber_state& fs = fibers_[f];
    fs = fiber_state{};
    fs.op = op;
    fs.send_value = send_value;
    pending_ = f;
  }

  // end(): fiber f's op returned r.
  void end(int f, const result& r) {
    fiber_state& fs = fibers_[f];
    if (g_trace) {
      std::fprintf(stderr, "  fiber %d ends %s: %s%s\n", f, kind_name[int(fs.op.kind)],
                   str(r).c_str(), pending_ == f ? " (at once)" : "");
    }
    if (pending_ == f) {
      pending_ = -1;
      immediate(f, r);
      return;
    }
    settle(f);
    if (!fs.parked) fail("fiber " + std::to_string(f) + " ended an op it never began");
    if (!fs.completed) {
      fail("fiber " + std::to_string(f) + " woke up from " + kind_name[int(fs.op.kind)] +
           " that nothing completed (got " + str(r) + ")");
    }
    const result& want = fs.expected;
    bool same = want.kind == r.kind && (want.kind != result::value || want.v == r.v);
    if (fs.cases != 0) {
      // A select completed through one of several of its waiters on one channel (they are
      // queued in a random order): any of those cases, consistent with what its partner saw.
      same = same && r.index >= 0 && narrow(fs.cons, r.index);
    } else {
      same = same && r.index == want.index;
    }
    if (!same) {
      fail("fiber " + std::to_string(f) + " " + kind_name[int(fs.op.kind)] + " returned " + str(r) +
           ", the model says " + str(want) +
           (fs.cases ? " (one of the cases " + mask_str(fs.cases) + ")" : std::string()));
    }
    fs.parked = false;
  }

  // touch(): fiber f did something the model does not track (it yielded, or it ended).
  void touch(int f) { settle(f); }

  // check_left(): at the end, channel c held `left` (in order).
  void check_left(int c, const std::vector<std::uint64_t>& left) {
    std::deque<mval>& buf = chans_[c].buf;
    if (buf.size() != left.size()) {
      fail("channel " + std::to_string(c) + " holds " + std::to_string(left.size()) +
           " values at the end, the model " + std::to_string(buf.size()));
    }
    for (std::size_t i = 0; i < left.size(); ++i) {
      observe(buf[i], left[i], "left in channel " + std::to_string(c));
    }
  }

 private:
  // mval: a value in the model. A select's send waiter offers base + c for each of its
  // cases c in `cases` (it has several on one channel): which one went is learnt when the
  // value is seen, and must agree with the case the select reports (constraint `cons`).
  struct mval {
    std::uint64_t base = 0;
    unsigned cases = 1;  // bit c: base + c is possible (plain values: bit 0)
    int cons = -1;       // index in constraints_, or -1
  };
  struct waiter {
    int fiber;
    unsigned cases;  // select: its cases waiting on this queue; 0: a plain send/recv
    mval value;      // senders
  };
  struct chan_state {
    int cap = 0;
    bool closed = false;
    std::deque<mval> buf;
    std::deque<waiter> recvq, sendq;
  };
  struct fiber_state {
    op_desc op;
    std::uint64_t send_value = 0;
    bool parked = false;     // parked (possibly already completed by another fiber)
    bool completed = false;  // completed by another fiber; `expected` is its result
    result expected;
    unsigned cases = 0;  // select completed through one of these cases (constraint cons)
    int cons = -1;
  };

  static std::string mask_str(unsigned m) {
    std::string s;
    for (int c = 0; c < max_cases; ++c) {
      if (!(m & (1u << c))) continue;
      if (!s.empty()) s += ',';
      s += std::to_string(c);
    }
    return "{" + s + "}";
  }

  int new_constraint(unsigned cases) {
    constraints_.push_back(cases);
    return static_cast<int>(constraints_.size()) - 1;
  }
  // narrow(): case c happened; false if the constraint rules it out.
  bool narrow(int cons, int c) {
    if (cons < 0) return c == 0;
    if (c >= max_cases || !(constraints_[cons] & (1u << c))) return false;
    constraints_[cons] = 1u << c;
    return true;
  }
  // observe(): a receiver got v where the model has m.
  void observe(const mval& m, std::uint64_t v, const std::string& where) {
    const std::uint64_t c = v - m.base;
    if (v < m.base || c >= max_cases || !(m.cases & (1u << c)) || !narrow(m.cons, int(c))) {
      fail(where + ": got value " + std::to_string(sender_of(v)) + ":" + std::to_string(seq_of(v)) +
           ", the model has " + std::to_string(sender_of(m.base)) + ":" +
           std::to_string(seq_of(m.base)) + " + one of " + mask_str(m.cases));
    }
  }

  // settle(): an event of fiber `who`; the pending op of another fiber has parked.
  void settle(int who) {
    if (pending_ < 0 || pending_ == who) return;
    const int f = pending_;
    pending_ = -1;
    park(f);
  }

  void park(int f) {
    fiber_state& fs = fibers_[f];
    if (g_trace) std::fprintf(stderr, "  fiber %d parked\n", f);
    fs.parked = true;
    const op_desc& op = fs.op;
    switch (op.kind) {
      case op_kind::send:
        if (chans_[op.ch].closed || can_send(op.ch)) fail_park(f, "a send that could proceed");
        chans_[op.ch].sendq.push_back({f, 0, mval{fs.send_value}});
        break;
      case op_kind::recv:
        if (can_recv(op.ch)) fail_park(f, "a recv that could proceed");
        chans_[op.ch].recvq.push_back({f, 0, {}});
        break;
      case op_kind::select: {
        if (op.has_default) fail_park(f, "a select with a default case");
        for (int c = 0; c < op.ncases; ++c) {
          if (case_ready(op.cases[c])) fail_park(f, "a select with a ready case");
        }
        // One waiter per (channel, direction), standing for all the cases there.
        unsigned done = 0;
        for (int c = 0; c < op.ncases; ++c) {
          if (done & (1u << c)) continue;
          unsigned same = 0;
          for (int d = c; d < op.ncases; ++d) {
            if (op.cases[d].ch == op.cases[c].ch && op.cases[d].send == op.cases[c].send) {
              same |= 1u << d;
            }
          }
          done |= same;
          chan_state& ch = chans_[op.cases[c].ch];
          (op.cases[c].send ? ch.sendq : ch.recvq).push_back({f, same, mval{fs.send_value, same}});
        }
        break;
      }
      default:
        fail_park(f, std::string("a ") + kind_name[int(op.kind)]);
    }
  }
  [[noreturn]] void fail_park(int f, const std::string& what) {
    fail("fiber " + std::to_string(f) + " parked in " + what);
  }

  bool can_send(int c) const {
    const chan_state& ch = chans_[c];
    return !ch.recvq.empty() || int(ch.buf.size()) < ch.cap;
  }
  bool can_recv(int c) const {
    const chan_state& ch = chans_[c];
    return !ch.buf.empty() || !ch.sendq.empty() || ch.closed;
  }
  bool case_ready(const case_desc& cd) const {
    return cd.send ? (chans_[cd.ch].closed || can_send(cd.ch)) : can_recv(cd.ch);
  }

  // complete(): a parked waiter's op is done with r; a select's other waiters leave. For a
  // select, returns the constraint on which of w.cases it reports.
  int complete(const waiter& w, result r) {
    fiber_state& fs = fibers_[w.fiber];
    if (!fs.parked || fs.completed) fail("the model completed a waiter twice");
    fs.completed = true;
    fs.expected = r;
    fs.expected.index = -1;
    if (w.cases == 0) return -1;
    // A select whose send case meets a closed channel throws: no case index comes back.
    if (r.kind != result::closed) {
      fs.cases = w.cases;
      fs.cons = new_constraint(w.cases);
    }
    for (chan_state& ch : chans_) {
      auto gone = [&](const waiter& x) { return x.fiber == w.fiber; };
      ch.recvq.erase(std::remove_if(ch.recvq.begin(), ch.recvq.end(), gone), ch.recvq.end());
      ch.sendq.erase(std::remove_if(ch.sendq.begin(), ch.sendq.end(), gone), ch.sendq.end());
    }
    return fs.cons;
  }
  static waiter pop(std::deque<waiter>& q) {
    waiter w = q.front();
    q.pop_front();
    return w;
  }

  // The effect of a send of v on c that proceeds (c open, can_send).
  void do_send(int c, std::uint64_t v) {
    chan_state& ch = chans_[c];
    if (!ch.recvq.empty()) {
      complete(pop(ch.recvq), {result::value, v});
    } else {
      ch.buf.push_back(mval{v});
    }
  }
  // A sender's value leaves its waiter: for a select, which case sent is known later.
  mval take_from(const waiter& w) {
    mval m = w.value;
    m.cons = complete(w, {result::ok});
    return m;
  }
  // The effect of a recv on c that proceeds (can_recv), given what it actually got.
  result do_recv(int c, const result& got, const char* who) {
    chan_state& ch = chans_[c];
    const std::string where = std::string(who) + " from channel " + std::to_string(c);
    if (!ch.buf.empty()) {
      const mval m = ch.buf.front();
      ch.buf.pop_front();
      if (got.kind != result::value) return {result::value, m.base};  // mismatch reported
      observe(m, got.v, where);
      if (!ch.sendq.empty()) ch.buf.push_back(take_from(pop(ch.sendq)));
      return {result::value, got.v};
    }
    if (!ch.sendq.empty()) {
      const mval m = take_from(pop(ch.sendq));
      if (got.kind != result::value) return {result::value, m.base};
      observe(m, got.v, where);
      return {result::value, got.v};
    }
    return {result::none};  // closed and drained
  }
  void do_close(int c) {
    chan_state& ch = chans_[c];
    ch.closed = true;
    while (!ch.recvq.empty()) complete(pop(ch.recvq), {result::none});
    while (!ch.sendq.empty()) complete(pop(ch.sendq), {result::closed});
  }

  void expect(int f, const result& got, const result& want) {
    if (!(got == want)) {
      fail("fiber " + std::to_string(f) + " " + kind_name[int(fibers_[f].op.kind)] + " returned " +
           str(got) + " at once, the model says " + str(want));
    }
  }

  // immediate(): fiber f's op completed without parking, with r.
  void immediate(int f, const result& r) {
    const fiber_state& fs = fibers_[f];
    const op_desc& op = fs.op;
    const chan_state& ch = chans_[op.ch];
    const std::string who = "fiber " + std::to_string(f);
    switch (op.kind) {
      case op_kind::send:
        if (ch.closed) return expect(f, r, {result::closed});
        if (!can_send(op.ch)) fail(who + " sent at once on a full channel");
        expect(f, r, {result::ok});
        do_send(op.ch, fs.send_value);
        return;
      case op_kind::try_send:
        if (ch.closed) return expect(f, r, {result::closed});
        if (!can_send(op.ch)) return expect(f, r, {result::full});
        expect(f, r, {result::ok});
        do_send(op.ch, fs.send_value);
        return;
      case op_kind::recv:
        if (!can_recv(op.ch)) fail(who + " received at once from an empty channel");
        expect(f, r, do_recv(op.ch, r, who.c_str()));
        return;
      case op_kind::try_recv:
        if (!can_recv(op.ch)) return expect(f, r, {result::none});
        expect(f, r, do_recv(op.ch, r, who.c_str()));
        return;
      case op_kind::close:
        if (ch.closed) return expect(f, r, {result::closed});
        expect(f, r, {result::ok});
        do_close(op.ch);
        return;
      case op_kind::select: {
        bool any_ready = false;
        bool closed_send = false;
        for (int c = 0; c < op.ncases; ++c) {
          any_ready |= case_ready(op.cases[c]);
          closed_send |= op.cases[c].send && chans_[op.cases[c].ch].closed;
        }
        if (r.kind == result::closed && r.index < 0) {
          if (!closed_send)
            fail("select threw closed_channel with no send case on a closed channel");
          return;
        }
        if (r.index == op.ncases) {
          if (!op.has_default) fail("select ran a default case it does not have");
          if (any_ready) fail("select took default while a case was ready");
          return;
        }
        if (r.index < 0 || r.index >= op.ncases) fail("select returned a bad index");
        const case_desc& cd = op.cases[r.index];
        if (!case_ready(cd)) fail("select ran case " + std::to_string(r.index) + ", not ready");
        if (cd.send) {
          if (chans_[cd.ch].closed) fail("select sent on a closed channel without throwing");
          expect(f, r, {result::ok, 0, r.index});
          do_send(cd.ch, fs.send_value + r.index);
        } else {
          result want = do_recv(cd.ch, r, who.c_str());
          want.index = r.index;
          expect(f, r, want);
        }
        return;
      }
      case op_kind::yield:
        return;
    }
  }

  std::vector<chan_state> chans_;
  std::vector<fiber_state> fibers_;
  std::vector<unsigned> constraints_;
  int pending_ = -1;
};

// ---- running a scenario ------------------------------------------------------------------------

using chan_t = rill::chan<item>;

struct observation {
  int receiver;
  int ch;
  std::uint64_t v;
};

struct run_state {
  const scenario& s;
  std::vector<chan_t> chans;
  model* m = nullptr;  // one worker only
  // per fiber, written by that fiber only:
  std::vector<std::vector<std::uint64_t>> sent_ok;  // values whose send succeeded
  std::vector<std::vector<observation>> received;   // values received, in order
};

// run_op(): runs one op of fiber f and reports it to the model.
void run_op(run_state& rs, int f, const op_desc& op, std::uint32_t& seq) {
  if (op.kind == op_kind::yield) {
    rill::this_fiber::yield();
    if (rs.m) rs.m->touch(f);
    return;
  }
  // Select send cases get values send_value + case index: reserve max_cases numbers.
  const std::uint64_t v = make_value(f, seq);
  seq += op.kind == op_kind::select ? max_cases : 1;
  if (rs.m) rs.m->begin(f, op, v);
  result r;
  chan_t& ch = rs.chans[op.ch];
  try {
    switch (op.kind) {
      case op_kind::send:
        ch.send(item(v));
        r = {result::ok};
        break;
      case op_kind::try_send: {
        item it(v);
        r = {ch.try_send(it) ? result::ok : result::full};
        if (r.kind == result::full && it.v != v) fail("a failed try_send consumed its value");
        break;
      }
      case op_kind::recv:
      case op_kind::try_recv: {
        std::optional<item> got = op.kind == op_kind::recv ? ch.recv() : ch.try_recv();
        if (got) {
          r = {result::value, got->v};
        } else {
          r = {result::none};
        }
        break;
      }
      case op_kind::close:
        ch.close();
        r = {result::ok};
        break;
      case op_kind::select: {
        // The core's select on descriptors: case count and kinds are decided at run time.
        rill::detail::select_case cases[max_cases + 1];
        std::optional<item> slots[max_cases];
        std::optional<item> outs[max_cases];
        for (int c = 0; c < op.ncases; ++c) {
          cases[c].ch = rs.chans[op.cases[c].ch].core();
          if (op.cases[c].send) {
            cases[c].kind = rill::detail::case_kind::send;
            outs[c].emplace(v + c);
            cases[c].slot = &*outs[c];
          } else {
            cases[c].kind = rill::detail::case_kind::recv;
            cases[c].slot = &slots[c];
          }
        }
        int n = op.ncases;
        if (op.has_default) cases[n++].kind = rill::detail::case_kind::otherwise;
        const int won = static_cast<int>(rill::detail::select_core(cases, n));
        r.index = won;
        if (won == op.ncases) {
          r.kind = result::ok;  // default
        } else if (op.cases[won].send) {
          r.kind = result::ok;
        } else if (slots[won]) {
          r.kind = result::value;
          r.v = slots[won]->v;
        } else {
          r.kind = result::none;
        }
        for (int c = 0; c < op.ncases; ++c) {
          if (c != won && slots[c]) fail("select filled the slot of a case that did not run");
        }
        break;
      }
      case op_kind::yield:
        break;
    }
  } catch (const rill::closed_channel&) {
    r = {result::closed};
  }
  if (rs.m) rs.m->end(f, r);
  // Conservation bookkeeping.
  if (r.kind == result::ok) {
    if (op.kind == op_kind::send || op.kind == op_kind::try_send) rs.sent_ok[f].push_back(v);
    if (op.kind == op_kind::select && r.index < op.ncases && op.cases[r.index].send) {
      rs.sent_ok[f].push_back(v + r.index);
    }
  }
  if (r.kind == result::value) {
    const int c = op.kind == op_kind::select ? op.cases[r.index].ch : op.ch;
    rs.received[f].push_back({f, c, r.v});
  }
}

void check_conservation(run_state& rs, const std::vector<std::vector<std::uint64_t>>& left) {
  const scenario& s = rs.s;
  std::map<std::uint64_t, int> sent;  // value -> 0 unseen, 1 seen
  for (const auto& v : rs.sent_ok) {
    for (std::uint64_t x : v) sent[x] = 0;
  }
  auto take = [&](std::uint64_t x, const char* where) {
    auto it = sent.find(x);
    if (it == sent.end()) {
      fail(std::string("value ") + std::to_string(sender_of(x)) + ":" + std::to_string(seq_of(x)) +
           " " + where + " was never sent successfully");
    }
    if (it->second++) {
      fail(std::string("value ") + std::to_string(sender_of(x)) + ":" + std::to_string(seq_of(x)) +
           " delivered twice (" + where + ")");
    }
  };
  // FIFO per (channel, sender): per receiver, increasing; left-over values newer than any
  // received one, and in order.
  std::map<std::pair<int, int>, std::uint32_t> newest_received;  // (ch, sender) -> seq
  for (int f = 0; f <= s.nfibers; ++f) {
    std::map<std::pair<int, int>, std::uint32_t> last;
    for (const observation& o : rs.received[f]) {
      take(o.v, "received");
      const auto key = std::make_pair(o.ch, sender_of(o.v));
      auto it = last.find(key);
      if (it != last.end() && it->second >= seq_of(o.v)) {
        fail("fiber " + std::to_string(f) + " received sender " + std::to_string(sender_of(o.v)) +
             "'s values out of order on channel " + std::to_string(o.ch));
      }
      last[key] = seq_of(o.v);
      auto& nr = newest_received[key];
      nr = std::max(nr, seq_of(o.v) + 1);
    }
  }
  for (int c = 0; c < s.nchans; ++c) {
    std::map<int, std::uint32_t> last;
    for (std::uint64_t x : left[c]) {
      take(x, "left in a channel");
      const int snd = sender_of(x);
      auto nr = newest_received.find({c, snd});
      if (nr != newest_received.end() && seq_of(x) < nr->second) {
        fail("channel " + std::to_string(c) + " kept an older value of sender " +
             std::to_string(snd) + " than one it delivered");
      }
      auto it = last.find(snd);
      if (it != last.end() && it->second >= seq_of(x)) {
        fail("channel " + std::to_string(c) + " holds sender " + std::to_string(snd) +
             "'s values out of order");
      }
      last[snd] = seq_of(x);
    }
  }
  for (const auto& [x, seen] : sent) {
    if (!seen) {
      fail("value " + std::to_string(sender_of(x)) + ":" + std::to_string(seq_of(x)) +
           " was sent successfully but lost");
    }
  }
}

void run_scenario(const scenario& s) {
  g_scenario = &s;
  const long items_before = g_live_items.load();
  rill::options o;
  o.workers = s.workers;
  o.detect_deadlock = true;  // the main fiber closes every channel: a deadlock is a bug
  try {
    rill::run(
        [&s] {
          run_state rs{s, {}, nullptr, {}, {}};
          std::optional<model> m;
          if (s.workers == 1) {
            m.emplace(s);
            rs.m = &*m;
          }
          for (int i = 0; i < s.nchans; ++i) rs.chans.emplace_back(std::size_t(s.caps[i]));
          rs.sent_ok.resize(s.nfibers + 1);
          rs.received.resize(s.nfibers + 1);
          const int main_id = s.nfibers;
          rill::wait_group wg;
          for (int f = 0; f < s.nfibers; ++f) {
            wg.add(1);
            rill::go([&rs, &wg, f] {
              std::uint32_t seq = 0;
              for (const op_desc& op : rs.s.programs[f]) run_op(rs, f, op, seq);
              if (rs.m) rs.m->touch(f);
              wg.done();
            });
          }
          for (int y = 0; y < s.main_yields % 64; ++y) {
            rill::this_fiber::yield();
            if (rs.m) rs.m->touch(main_id);
          }
          // Release every parked operation: close what is still open.
          std::uint32_t seq = 0;
          for (int c = 0; c < s.nchans; ++c) {
            op_desc close_op;
            close_op.kind = op_kind::close;
            close_op.ch = c;
            run_op(rs, main_id, close_op, seq);
          }
          wg.wait();
          if (rs.m) rs.m->touch(main_id);
          // Drain what is left (the channels are closed: try_recv never parks).
          std::vector<std::vector<std::uint64_t>> left(s.nchans);
          for (int c = 0; c < s.nchans; ++c) {
            while (std::optional<item> v = rs.chans[c].try_recv()) left[c].push_back(v->v);
            if (rs.m) rs.m->check_left(c, left[c]);
          }
          check_conservation(rs, left);
        },
        o);
  } catch (const std::exception& e) {
    fail(std::string("run() threw: ") + e.what());
  }
  const rill::stats st = rill::global_stats();
  if (st.live_fibers || st.live_stacks || st.pending_timers)
    fail("the run leaked fibers, stacks or timers");
  if (g_live_items.load() != items_before) fail("values leaked or destroyed twice");
  g_scenario = nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool once = [] {
    // Schedule perturbation would make an op yield at its entry; the model needs to see
    // each op run to completion or park. Interleavings come from the input instead.
    ::unsetenv("RILL_SCHED_SEED");
    return true;
  }();
  (void)once;
  run_scenario(decode(data, size));
  return 0;
}
