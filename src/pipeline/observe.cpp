// src/pipeline/observe.cpp: what a pipeline run shows of itself: its stages' live counters
// turned into pipeline_stats, the bottleneck and the table operator<< prints, and the
// progress bar (run_options::progress, RILL_PROGRESS=1).
//
// Counting costs nothing per item where it can: a stage fiber adds to its stage's counters
// once per chunk or batch (the source after each chunk, a link reader per batch, a link
// writer per batch sent, a segment at the end of each measuring window), and only the
// stages that change the number of items (filter, flat_map, take, batch, unbatch) count as
// they pass one on. The other counts are derived here, on read:
//   in[0]  = out[0]                                 (a source counts what it gives)
//   in[k]  = out[k-1] - sent[k-1] + recvd[k]        (fused: sent = recvd = 0; a link
//                                                    between them: what the reader took)
//   out[k] = counted out[k] if the stage counts, else in[k]
// so a split in the middle of a run (a fused boundary becoming a link) keeps the counts.
#include "sched/observe.hpp"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <iomanip>
#include <mutex>
#include <ostream>
#include <sstream>
#include <string>
#include <thread>

#include "rill/pipeline/pipeline.hpp"

namespace rill {
namespace detail {

void fill_live(pipeline_stats& s, const stage_counters* c, int n) {
  const std::size_t m = std::min(s.stages.size(), static_cast<std::size_t>(n));
  auto load = [](const auto& a) { return a.load(std::memory_order_relaxed); };
  std::uint64_t prev_out = 0, prev_sent = 0;
  using start = stage_counters::start;
  for (std::size_t k = 0; k < m; ++k) {
    stage_stats& st = s.stages[k];
    const stage_counters& x = c[k];
    // The link's reader is read before its writer's count, so that an item counted as
    // received is counted as sent too (queued never goes below 0 by a race).
    const std::uint64_t recvd = load(x.recvd);
    // A stage takes its items from the stage before it, unless it starts a chain: a
    // source counts its own (a merge, what it took from its sources); a broadcast
    // branch's first stage, what it took from the branch's link.
    const start from = k == 0 ? start::source : load(x.starts);
    if (from != start::none) prev_out = prev_sent = 0;
    const std::uint64_t in = from == start::source   ? load(x.out) + recvd
                             : prev_out >= prev_sent ? prev_out - prev_sent + recvd
                                                     : recvd;
    const std::uint64_t out = load(x.counts_out) ? load(x.out) : in;
    st.items_in = in;
    st.items_out = from == start::source ? in : out;
    st.busy = std::chrono::nanoseconds(std::max<std::int64_t>(0, load(x.busy)));
    st.waiting_input = std::chrono::nanoseconds(std::max<std::int64_t>(0, load(x.wait_in)));
    st.waiting_output = std::chrono::nanoseconds(std::max<std::int64_t>(0, load(x.wait_out)));
    st.capacity = load(x.capacity);
    prev_out = st.items_out;
    prev_sent = load(x.sent);
    if (k > 0 && from == start::none) {
      const std::uint64_t sent_before = load(c[k - 1].sent);
      s.stages[k - 1].queued = sent_before > recvd ? sent_before - recvd : 0;
    }
  }
}

bool pipe_ctx::progress_from_env() noexcept {
  static const bool on = [] {
    const char* e = std::getenv("RILL_PROGRESS");
    return e && *e && std::string(e) != "0";
  }();
  return on;
}

namespace {

// scaled(): v in the first unit whose threshold it reaches (the last unit's is 0): the
// value divided by the unit's size, with its precision and suffix.
struct unit {
  double from;  // v >= from
  double size;
  int decimals;
  const char* suffix;
};
std::string scaled(double v, std::initializer_list<unit> units) {
  const unit* u = units.begin();
  while (v < u->from && u + 1 != units.end()) ++u;
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f%s", u->decimals, v / u->size, u->suffix);
  return buf;
}

std::string human_count(double v) {
  return scaled(v, {{1e9, 1e9, 2, "G"}, {1e6, 1e6, 2, "M"}, {1e4, 1e3, 1, "k"}, {0, 1, 0, ""}});
}

std::string human_time(std::chrono::nanoseconds d) {
  const double ns = static_cast<double>(d.count());
  if (ns >= 60e9) {
    char buf[32];
    const auto s = static_cast<long>(ns / 1e9);
    std::snprintf(buf, sizeof buf, "%ldm%02lds", s / 60, s % 60);
    return buf;
  }
  return scaled(ns,
                {{1e9, 1e9, 2, "s"}, {1e6, 1e6, 1, "ms"}, {1e3, 1e3, 1, "us"}, {0, 1, 0, "ns"}});
}

// share(): the part of its fibers' time that a stage was busy.
double share(const stage_stats& s, std::chrono::nanoseconds elapsed) {
  if (elapsed.count() <= 0) return 0;
  return static_cast<double>(s.busy.count()) /
         (static_cast<double>(elapsed.count()) * std::max(1u, s.fibers));
}

double per_fiber(const stage_stats& s) {
  return static_cast<double>(s.busy.count()) / std::max(1u, s.fibers);
}

// progress_bar: the thread that draws a run's progress line until the run ends.
struct progress_bar {
  pipe_ctx* ctx;
  bool tty;
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;  // guarded by mu
  std::size_t drawn = 0;
  std::thread thread;

  // sink_entry(): the pipeline's terminal: its own chain's last entry (the chains inside
  // a merge or a broadcast follow it, each starting at a marked entry).
  std::size_t sink_entry(const pipeline_stats& s) const {
    for (std::size_t k = 1; k < s.stages.size(); ++k) {
      const stage_counters* c = ctx->counter(static_cast<int>(k));
      if (c && c->starts.load(std::memory_order_relaxed) != stage_counters::start::none)
        return k - 1;
    }
    return s.stages.size() - 1;
  }

  std::string line() {
    const pipeline_stats s = ctx->stats();
    if (s.stages.empty()) return "rill: starting";
    const double done = static_cast<double>(s.stages[sink_entry(s)].items_in);
    const double secs = static_cast<double>(s.elapsed.count()) / 1e9;
    const double rate = secs > 0 ? done / secs : 0;
    std::ostringstream os;
    os << "rill: " << human_count(done);
    const std::int64_t total = ctx->source_size.load(std::memory_order_relaxed);
    if (total >= 0) {
      const double frac = total > 0 ? std::min(1.0, done / static_cast<double>(total)) : 1.0;
      if (tty) {
        constexpr int width = 20;
        const int fill = static_cast<int>(frac * width);
        os << " [" << std::string(static_cast<std::size_t>(fill), '#')
           << std::string(static_cast<std::size_t>(width - fill), '.') << "]";
      }
      os << "/" << human_count(static_cast<double>(total)) << " items " << std::fixed
         << std::setprecision(0) << frac * 100 << "%";
    } else {
      os << " items";
    }
    os << ", " << human_count(rate) << "/s, " << human_time(s.elapsed);
    if (total >= 0 && rate > 0 && done < static_cast<double>(total)) {
      os << ", ETA "
         << human_time(std::chrono::nanoseconds(
                static_cast<std::int64_t>((static_cast<double>(total) - done) / rate * 1e9)));
    }
    if (const stage_stats* b = s.bottleneck()) {
      os << ", busiest: " << b->name << " " << std::fixed << std::setprecision(0)
         << share(*b, s.elapsed) * 100 << "%";
    }
    return os.str();
  }

  void draw() {
    const std::string l = line();
    if (tty) {
      std::fprintf(stderr, "\r%s\x1b[K", l.c_str());
    } else {
      std::fprintf(stderr, "%s\n", l.c_str());
    }
    std::fflush(stderr);
    ++drawn;
  }

  void loop() {
    // A terminal gets a redraw ten times a second; a log, a line every few seconds.
    const auto period = tty ? std::chrono::milliseconds(100) : std::chrono::milliseconds(2000);
    std::unique_lock lk(mu);
    while (!cv.wait_for(lk, period, [&] { return stop; })) {
      lk.unlock();
      draw();
      lk.lock();
    }
  }

  // finish(): the run has ended. A terminal's bar line is erased (the terminal is left as
  // it was found); a log gets a last line if it had any.
  void finish() {
    {
      std::lock_guard lk(mu);
      stop = true;
    }
    cv.notify_all();
    thread.join();
    if (tty) {
      if (drawn) std::fprintf(stderr, "\r\x1b[K");
    } else if (drawn) {
      std::fprintf(stderr, "%s (ended)\n", line().c_str());
    }
    std::fflush(stderr);
  }
};

}  // namespace

void pipe_ctx::begin_run(int stages) {
  std::unique_ptr<stage_counters[]> c;
  if (metrics && stages > 0)
    c = std::make_unique<stage_counters[]>(static_cast<std::size_t>(stages));
  mu_.lock();
  counters_ = std::move(c);
  ncounters_ = stages;
  mu_.unlock();
  start_ns_.store(now_ns(), std::memory_order_release);
  if (progress) {
    auto* p = new progress_bar{};
    p->ctx = this;
    p->tty = ::isatty(STDERR_FILENO) == 1;
    try {
      p->thread = std::thread([p] { p->loop(); });
    } catch (...) {
      delete p;  // no thread: no progress line, the run goes on
      return;
    }
    progress_ = p;
  }
}

void pipe_ctx::end_run() noexcept {
  std::int64_t zero = 0;
  const bool first = end_ns_.compare_exchange_strong(zero, now_ns(), std::memory_order_acq_rel);
  if (auto* p = static_cast<progress_bar*>(progress_)) {
    progress_ = nullptr;
    p->finish();
    delete p;
  }
  if (first && (g_observe.load(std::memory_order_relaxed) & observe_trace)) trace_spans();
}

// trace_spans(): the stages' spans, into the trace being recorded.
void pipe_ctx::trace_spans() noexcept {
  try {
    const pipeline_stats s = stats();
    std::vector<stage_span> spans;
    mu_.lock();
    for (std::size_t k = 0; counters_ && k < s.stages.size() && k < std::size_t(ncounters_); ++k) {
      const stage_counters& c = counters_[k];
      const std::int64_t t0 = c.first_ns.load(std::memory_order_relaxed);
      if (t0 == 0) continue;  // never ran (or metrics off)
      const stage_stats& st = s.stages[k];
      spans.push_back({st.name, t0, c.last_ns.load(std::memory_order_relaxed), st.items_in,
                       st.items_out, static_cast<std::int64_t>(st.busy.count())});
    }
    mu_.unlock();
    trace_stages(std::move(spans));
  } catch (...) {
    // out of memory: this run's stages are not in the trace
  }
}

namespace {

std::string dot_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

// slots_of(): the stats entries of a chain and of the branches inside it (the order the
// run numbers them in: the chain's own stages, then each broadcast's branches in turn).
std::size_t slots_of(const std::vector<dot_stage>& chain) {
  std::size_t n = chain.size();
  for (const dot_stage& d : chain) {
    for (const std::vector<dot_stage>& b : d.branches) n += slots_of(b);
  }
  return n;
}

// dot_chain: writes one chain (the pipeline, or a broadcast branch) of stages as nodes
// grouped into one cluster per fiber, and the edges between them.
struct dot_chain {
  std::ostringstream& os;
  const pipeline_stats* run;  // what a run measured, if any
  std::string prefix;         // node ids: prefix + stage number
  int clusters = 0;
  std::size_t offset = 0;  // the stats entry of the chain's first stage

  // nodes(): the node ids of stage k (a par_map: one per worker shown).
  std::vector<std::string> nodes(const std::vector<dot_stage>& chain, std::size_t k) {
    const dot_stage& d = chain[k];
    const std::string id = prefix + std::to_string(k);
    if (!d.parallel) return {id};
    std::vector<std::string> ids;
    const unsigned n = workers(d, k);
    const unsigned shown = n == 0 ? 2 : std::min(n, 4u);
    for (unsigned w = 0; w < shown; ++w) ids.push_back(id + "w" + std::to_string(w));
    return ids;
  }
  unsigned workers(const dot_stage& d, std::size_t k) const {
    if (const stage_stats* m = measured(k)) return m->fibers;
    return d.workers;
  }
  const stage_stats* measured(std::size_t k) const {
    return run && offset + k < run->stages.size() ? &run->stages[offset + k] : nullptr;
  }
  // starts_fiber(): stage k runs in another fiber than stage k-1.
  bool starts_fiber(const std::vector<dot_stage>& chain, std::size_t k) const {
    if (k == 0) return true;
    if (const stage_stats* m = measured(k)) return !m->fused;
    return chain[k].parallel || chain[k - 1].parallel || chain[k].own_fiber;
  }

  void write(const std::vector<dot_stage>& chain) {
    const double elapsed = run ? static_cast<double>(run->elapsed.count()) : 0;
    std::size_t k = 0;
    std::vector<std::vector<std::string>> ids(chain.size());
    for (std::size_t i = 0; i < chain.size(); ++i) ids[i] = nodes(chain, i);
    while (k < chain.size()) {
      // One cluster per fiber: stage k and the stages fused after it.
      std::size_t end = k + 1;
      while (end < chain.size() && !starts_fiber(chain, end)) ++end;
      const bool par = chain[k].parallel;
      os << "  subgraph cluster_" << prefix << clusters++
         << " {\n    style=\"rounded,dashed\"; color=gray50; label=\""
         << (par           ? "par_map workers"
             : end - k > 1 ? "one fiber (fused)"
                           : "fiber")
         << "\";\n";
      for (std::size_t i = k; i < end; ++i) {
        const dot_stage& d = chain[i];
        std::string label = dot_escape(d.name);
        if (d.parallel) {
          const unsigned n = workers(d, i);
          label += n ? " (" + std::to_string(n) + " workers)" : " (a worker per thread)";
        }
        if (const stage_stats* m = measured(i); m && elapsed > 0) {
          char buf[64];
          std::snprintf(
              buf, sizeof buf, "\\nbusy %.0f%%",
              100.0 * static_cast<double>(m->busy.count()) / (elapsed * std::max(1u, m->fibers)));
          label += buf;
        }
        const bool bottleneck = run && run->bottleneck() == measured(i);
        for (std::size_t w = 0; w < ids[i].size(); ++w) {
          std::string l = label;
          if (d.parallel) {
            const unsigned n = workers(d, i);
            l = dot_escape(d.name) + "\\nworker " +
                (n > ids[i].size() && w + 1 == ids[i].size()
                     ? std::string(n ? std::to_string(n) : "N")
                     : std::to_string(w + 1));
            if (w == 0) l = label + "\\nworker 1";
          }
          os << "    " << ids[i][w] << " [label=\"" << l << "\"";
          if (bottleneck) os << ", color=red, penwidth=2";
          if (i == 0 && prefix == "s") os << ", shape=cds";
          os << "];\n";
        }
        if (!d.branches.empty())
          os << "    " << ids[i][0] << " [shape=trapezium, orientation=270];\n";
      }
      os << "  }\n";
      k = end;
    }
    // Edges: within a fiber a thin arrow (a nested call); between fibers a link (bold,
    // with its buffer). After a run, each carries the items that went along it.
    for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
      const bool link = starts_fiber(chain, i + 1);
      std::string label;
      if (const stage_stats* m = measured(i)) label = std::to_string(m->items_out) + " items";
      if (link) {
        const std::size_t cap = measured(i) && measured(i)->capacity ? measured(i)->capacity
                                : chain[i + 1].parallel              ? chain[i + 1].buffer
                                                                     : chain[i].buffer;
        label += (label.empty() ? "" : "\\n") + std::string("buffer ") + std::to_string(cap);
      }
      for (const std::string& from : ids[i]) {
        for (const std::string& to : ids[i + 1]) {
          os << "  " << from << " -> " << to << " [";
          if (link) {
            os << "style=bold";
          } else {
            os << "arrowsize=0.6";
          }
          if (!label.empty()) os << ", label=\"" << label << "\"";
          os << "];\n";
        }
      }
    }
    // Broadcast: each branch is a chain of its own, fed by a link from the terminal; its
    // entries follow the chain's own (and the branches before it).
    std::size_t next = offset + chain.size();
    for (std::size_t i = 0; i < chain.size(); ++i) {
      for (std::size_t b = 0; b < chain[i].branches.size(); ++b) {
        const std::vector<dot_stage>& branch = chain[i].branches[b];
        dot_chain sub{os, run, prefix + std::to_string(i) + "b" + std::to_string(b) + "s", 0, next};
        sub.write(branch);
        std::string label = "branch " + std::to_string(b);
        if (const stage_stats* m = sub.measured(0))
          label += "\\n" + std::to_string(m->items_in) + " items";
        label += "\\nbuffer " + std::to_string(default_buffer);
        for (const std::string& to : sub.nodes(branch, 0)) {
          os << "  " << ids[i][0] << " -> " << to << " [style=bold, label=\"" << label << "\"];\n";
        }
        next += slots_of(branch);
      }
    }
  }
};

}  // namespace

std::string format_dot(const std::vector<dot_stage>& chain, const pipeline_stats* run) {
  std::ostringstream os;
  os << "digraph rill {\n  rankdir=LR;\n  node [shape=box, style=rounded, "
        "fontname=\"Helvetica\"];\n"
        "  edge [fontname=\"Helvetica\", fontsize=10];\n";
  dot_chain main{os, run, "s", 0};
  main.write(chain);
  if (run) {
    if (const stage_stats* b = run->bottleneck()) {
      os << "  label=\"bottleneck: " << dot_escape(b->name) << "\"; labelloc=b;\n";
    }
  }
  os << "}\n";
  return os.str();
}

}  // namespace detail

const stage_stats* pipeline_stats::bottleneck() const noexcept {
  const stage_stats* best = nullptr;
  for (const stage_stats& s : stages) {
    if (s.busy.count() > 0 && (!best || detail::per_fiber(s) > detail::per_fiber(*best))) best = &s;
  }
  return best;
}

std::ostream& operator<<(std::ostream& os, const pipeline_stats& s) {
  using detail::human_count;
  using detail::human_time;
  std::size_t w = 5;
  for (const stage_stats& st : s.stages) w = std::max(w, st.name.size());
  const auto flags = os.flags();
  os << std::left << std::setw(static_cast<int>(w)) << "stage" << std::right << std::setw(7)
     << "fibers" << std::setw(10) << "in" << std::setw(10) << "out" << std::setw(10) << "busy"
     << std::setw(6) << "busy%" << std::setw(10) << "wait in" << std::setw(10) << "wait out"
     << std::setw(12) << "queue"
     << "\n";
  for (const stage_stats& st : s.stages) {
    std::ostringstream q;
    if (st.capacity) q << st.queued << "/" << st.capacity;
    char pct[16];
    std::snprintf(pct, sizeof pct, "%.0f%%", detail::share(st, s.elapsed) * 100);
    os << std::left << std::setw(static_cast<int>(w)) << st.name << std::right << std::setw(7)
       << st.fibers << std::setw(10) << human_count(static_cast<double>(st.items_in))
       << std::setw(10) << human_count(static_cast<double>(st.items_out)) << std::setw(10)
       << human_time(st.busy) << std::setw(6) << pct << std::setw(10)
       << human_time(st.waiting_input) << std::setw(10) << human_time(st.waiting_output)
       << std::setw(12) << q.str() << "\n";
  }
  os << (s.finished ? "elapsed " : "running for ") << human_time(s.elapsed) << "\n";
  const stage_stats* b = s.bottleneck();
  if (!b) {
    os << "bottleneck: none measured\n";
    os.flags(flags);
    return os;
  }
  const double sh = detail::share(*b, s.elapsed);
  // The next busiest stage bounds what more fibers for the bottleneck can gain.
  double second = 0;
  for (const stage_stats& st : s.stages) {
    if (&st != b) second = std::max(second, detail::per_fiber(st));
  }
  os << "bottleneck: " << b->name << ", busy " << std::fixed << std::setprecision(0) << sh * 100
     << "% of " << (b->fibers > 1 ? "its fibers' time" : "the run");
  if (sh < 0.5) {
    os << "; no stage is busy most of the time: the stages wait (on the source, a channel, I/O "
          "or a timer)\n";
  } else {
    // Enough fibers to bring it down to the next busiest stage, but no more than the cores.
    const double ratio = second > 0 ? detail::per_fiber(*b) / second : 8;
    const double cores = std::max(2u, std::thread::hardware_concurrency());
    const unsigned want =
        static_cast<unsigned>(std::clamp(static_cast<double>(b->fibers) * std::ceil(ratio),
                                         static_cast<double>(b->fibers) + 1, cores));
    if (b == &s.stages.front()) {
      os << "; the source sets the pace: make it cheaper, or move work out of it\n";
    } else if (b->fibers > 1) {
      if (want > b->fibers) {
        os << "; give it more workers (par_map {.workers = " << want << "})\n";
      } else {
        os << "; its workers use every core: make its function cheaper\n";
      }
    } else {
      os << "; par_map it with " << want << " workers (its items must be independent)\n";
    }
  }
  os.flags(flags);
  return os;
}

}  // namespace rill
