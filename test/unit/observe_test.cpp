// Tests of what a pipeline shows of itself: per-stage stats (items, busy time, the
// bottleneck), live stats from another thread, the Graphviz graph, the fiber dump and the
// trace.
#include <fcntl.h>
#include <poll.h>
#include <pty.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <map>
#include <regex>
#include <rill/rill.hpp>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "support/pipeline_support.hpp"
#include "support/run_with.hpp"

using test::iota_vec;

namespace {

// spin_for(): burns CPU for about `d` (a CPU-bound stage; no sleep, no park).
void spin_for(std::chrono::nanoseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < end) {
  }
}

const rill::stage_stats& stage(const rill::pipeline_stats& s, const std::string& name) {
  for (const auto& st : s.stages) {
    if (st.name == name) return st;
  }
  FAIL("no stage " << name);
  return s.stages.front();
}

}  // namespace

TEST_CASE("observe: each stage's items in and out add up, fused or not", "[observe]") {
  const auto workers = GENERATE(1u, 2u);
  const bool fusion = GENERATE(true, false);
  test::run_with(workers, [fusion] {
    auto p = rill::from(iota_vec(1000)) | rill::filter([](int v) { return v % 2 == 0; }) |
             rill::map([](int v) { return v * 3; }) | rill::flat_map([](int v) {
               return std::vector<int>{v, v};
             }) |
             rill::take(700) | rill::collect();
    const auto out = p.run(rill::run_options{.fusion = fusion});
    CHECK(out.size() == 700);
    const rill::pipeline_stats s = p.stats();
    REQUIRE(s.stages.size() == 6);
    CHECK(s.finished);
    CHECK(s.elapsed.count() > 0);
    const auto& src = s.stages[0];
    const auto& filter = stage(s, "filter#1");
    const auto& map = stage(s, "map#2");
    const auto& fm = stage(s, "flat_map#3");
    const auto& take = stage(s, "take#4");
    const auto& collect = stage(s, "collect");
    // take stops the source early: the items it gave, less any left in a link when the run
    // stopped, reached the filter.
    CHECK(filter.items_in <= src.items_out);
    CHECK(filter.items_in >= 700 / 2 * 2 / 2);
    // (A fused chain may split mid-run: then a link lies between two stages, and what it
    // held when take stopped the run never reached the next stage.)
    CHECK(map.items_in <= filter.items_out);
    CHECK(map.items_in == map.items_out);
    CHECK(fm.items_in <= map.items_out);  // (less what a link held when take stopped)
    CHECK(fm.items_out >= 700);
    CHECK(take.items_out == 700);
    CHECK(collect.items_in == 700);
    CHECK(collect.items_out == 700);
    CHECK(filter.items_out * 2 >= 700);
    for (const auto& st : s.stages) {
      if (!fusion && &st != &s.stages.back()) CHECK(st.capacity == rill::default_buffer);
    }
  });
}

TEST_CASE("observe: a stream that runs to its end leaves no item queued", "[observe]") {
  const bool fusion = GENERATE(true, false);
  test::run_with(2, [fusion] {
    auto p = rill::from(iota_vec(3000)) | rill::filter([](int v) { return v % 3 == 0; }) |
             rill::batch(7) | rill::unbatch() | rill::collect();
    CHECK(p.run(rill::run_options{.fusion = fusion}).size() == 1000);
    const rill::pipeline_stats s = p.stats();
    REQUIRE(s.stages.size() == 5);
    CHECK(s.stages[0].items_in == 3000);
    CHECK(s.stages[1].items_in == 3000);
    CHECK(s.stages[1].items_out == 1000);
    CHECK(s.stages[2].items_out == 143);  // batches of 7
    CHECK(s.stages[3].items_in == 143);
    CHECK(s.stages[3].items_out == 1000);
    CHECK(s.stages[4].items_in == 1000);
    for (const auto& st : s.stages) CHECK(st.queued == 0);
  });
}

TEST_CASE("observe: the whole stream is counted at every stage", "[observe]") {
  const bool fusion = GENERATE(true, false);
  test::run_with(2, [fusion] {
    auto p = rill::from(iota_vec(5000)) | rill::map([](int v) { return v + 1; }) |
             rill::par_map([](int v) { return v * 2; }, {.workers = 3}) |
             rill::filter([](int v) { return v % 4 == 0; }) | rill::count();
    CHECK(p.run(rill::run_options{.fusion = fusion}) == 2500);
    const rill::pipeline_stats s = p.stats();
    REQUIRE(s.stages.size() == 5);
    CHECK(s.stages[0].items_out == 5000);
    CHECK(s.stages[1].items_in == 5000);
    CHECK(s.stages[2].items_in == 5000);
    CHECK(s.stages[2].items_out == 5000);
    CHECK(s.stages[2].fibers == 3);
    CHECK(s.stages[3].items_in == 5000);
    CHECK(s.stages[3].items_out == 2500);
    CHECK(s.stages[4].items_in == 2500);
  });
}

TEST_CASE("observe: a merge's sources and a broadcast's branches have entries of their own",
          "[observe]") {
  const auto workers = GENERATE(1u, 2u);
  const bool fusion = GENERATE(true, false);
  test::run_with(workers, [fusion] {
    const auto opts = rill::run_options{.fusion = fusion};
    // A merge of two sources (with stages of their own) into a pipeline of its own.
    auto m =
        rill::merge(rill::from(iota_vec(600)) | rill::map([](int v) { return v + 1; }),
                    rill::from(iota_vec(400)) | rill::filter([](int v) { return v % 4 == 0; })) |
        rill::map([](int v) { return v * 2; }) | rill::count();
    CHECK(m.run(opts) == 700);
    rill::pipeline_stats s = m.stats();
    std::vector<std::string> names;
    for (const auto& st : s.stages) names.push_back(st.name);
    // The pipeline's own stages first, in order, then each inner source's.
    CHECK(names == std::vector<std::string>{"merge", "map#1", "count", "merge[0]/from",
                                            "merge[0]/map#1", "merge[0]/to merge", "merge[1]/from",
                                            "merge[1]/filter#1", "merge[1]/to merge"});
    CHECK(stage(s, "merge").items_out == 700);
    CHECK(stage(s, "map#1").items_in == 700);
    CHECK(stage(s, "count").items_in == 700);
    CHECK(stage(s, "merge[0]/from").items_out == 600);
    CHECK(stage(s, "merge[0]/map#1").items_out == 600);
    CHECK(stage(s, "merge[0]/to merge").items_in == 600);
    CHECK(stage(s, "merge[1]/filter#1").items_in == 400);
    CHECK(stage(s, "merge[1]/filter#1").items_out == 100);
    CHECK(stage(s, "merge[1]/to merge").items_in == 100);

    // A broadcast whose second branch has a par_map first and a broadcast of its own.
    auto b =
        rill::from(iota_vec(500)) | rill::map([](int v) { return v + 1; }) |
        rill::broadcast(rill::count(),
                        rill::par_map([](int v) { return v * 3; }, {.workers = 2}) |
                            rill::filter([](int v) { return v % 2 == 0; }) |
                            rill::broadcast(rill::count(), rill::map([](int v) { return v / 3; }) |
                                                               rill::reduce(0L, std::plus<>{})));
    const auto [all, inner] = b.run(opts);
    CHECK(all == 500);
    CHECK(std::get<0>(inner) == 250);
    s = b.stats();
    names.clear();
    for (const auto& st : s.stages) names.push_back(st.name);
    CHECK(names == std::vector<std::string>{
                       "from", "map#1", "broadcast", "broadcast[0]/count", "broadcast[1]/par_map#1",
                       "broadcast[1]/filter#2", "broadcast[1]/broadcast",
                       "broadcast[1]/broadcast[0]/count", "broadcast[1]/broadcast[1]/map#1",
                       "broadcast[1]/broadcast[1]/reduce"});
    CHECK(s.stages[2].items_in == 500);
    CHECK(s.stages[3].items_in == 500);  // every branch sees every item
    CHECK(s.stages[4].items_in == 500);
    CHECK(s.stages[4].items_out == 500);
    CHECK(s.stages[4].fibers == 2);
    CHECK(s.stages[5].items_out == 250);
    CHECK(s.stages[6].items_in == 250);
    CHECK(s.stages[7].items_in == 250);
    CHECK(s.stages[8].items_in == 250);
    CHECK(s.stages[9].items_in == 250);
    // The graph after the run carries the branches' counts too.
    const std::string dot = b.to_dot();
    CHECK(dot.find("branch 1\\n500 items") != std::string::npos);
    CHECK(dot.find("branch 1\\n250 items") != std::string::npos);
  });
}

TEST_CASE("observe: a stage that throws inside a branch is named as in its chain", "[observe]") {
  test::run_with(2, [] {
    auto p =
        rill::from(iota_vec(100)) |
        rill::broadcast(rill::count(), rill::map([](int v) { return v; }) | rill::map([](int v) {
                                         if (v == 50) throw std::runtime_error("boom");
                                         return v;
                                       }) | rill::collect());
    auto h = p.start();
    CHECK_THROWS_WITH(h.wait(), "boom");
    CHECK(h.failed_stage() == "map#2");
  });
}

TEST_CASE("observe: a slow stage's busy time dominates and bottleneck() names it", "[observe]") {
  const auto workers = GENERATE(1u, 2u);
  const bool fusion = GENERATE(true, false);
  test::run_with(workers, [fusion] {
    auto p = rill::from(iota_vec(200)) | rill::map([](int v) { return v + 1; }) |
             rill::map(
                 [](int v) {
                   spin_for(std::chrono::microseconds(300));
                   return v;
                 },
                 {.name = "slow"}) |
             rill::map([](int v) { return v * 2; }) | rill::reduce(0L, std::plus<>{});
    CHECK(p.run(rill::run_options{.fusion = fusion}) == 2L * (200 * 201 / 2));
    const rill::pipeline_stats s = p.stats();
    const rill::stage_stats* b = s.bottleneck();
    REQUIRE(b != nullptr);
    CHECK(b->name == "slow");
    const auto& slow = stage(s, "slow");
    CHECK(slow.busy >= std::chrono::milliseconds(200 * 300 / 1000 / 2));
    for (const auto& st : s.stages) {
      if (&st != &slow) CHECK(st.busy < slow.busy);
    }
    std::ostringstream os;
    os << s;
    INFO(os.str());
    CHECK(os.str().find("bottleneck: slow") != std::string::npos);
    CHECK(os.str().find("par_map it with") != std::string::npos);
  });
}

TEST_CASE("observe: stats() of a running pipeline, from another thread", "[observe]") {
  test::leak_gate gate;  // runs on the default runtime
  rill::chan<int> in(16);
  auto p = rill::from(in) | rill::map([](int v) { return v * 2; }) |
           rill::filter([](int v) { return v % 4 == 0; }) | rill::count();
  auto h = p.start();
  std::atomic<bool> reading{true};
  std::atomic<std::uint64_t> reads{0};
  std::atomic<bool> shrank{false}, overflowed{false};
  // A second thread reads the stats all along (TSan checks the counters' reads). Catch2's
  // assertions are not thread-safe: it records what it saw, the test thread checks.
  std::thread reader([&] {
    std::uint64_t last = 0;
    while (reading.load()) {
      const rill::pipeline_stats s = h.stats();
      if (!s.stages.empty()) {
        const std::uint64_t n = s.stages.front().items_out;
        if (n < last) shrank.store(true);  // counts only grow
        last = n;
        for (const auto& st : s.stages) {
          if (st.items_out > 1000) overflowed.store(true);
        }
      }
      reads.fetch_add(1);
      std::this_thread::yield();
    }
  });
  // At least one read while the run goes: a loaded machine may not start the reader before
  // the items are through (its count is the condition, no sleep).
  while (reads.load() == 0) std::this_thread::yield();
  for (int i = 0; i < 1000; ++i) in.send(i);
  // Every item sent has reached the sink once the sink's count says so: poll until then
  // (no sleep: the count is the condition).
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  for (;;) {
    const rill::pipeline_stats s = h.stats();
    REQUIRE(s.stages.size() == 4);
    CHECK_FALSE(s.finished);
    if (s.stages[2].items_in == 1000) break;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    std::this_thread::yield();
  }
  in.close();
  CHECK(h.wait() == 500);
  const rill::pipeline_stats s = h.stats();
  CHECK(s.finished);
  CHECK(s.stages[0].items_out == 1000);
  CHECK(s.stages[2].items_out == 500);
  CHECK(s.stages[3].items_in == 500);
  reading.store(false);
  reader.join();
  CHECK(reads.load() > 0);
  CHECK_FALSE(shrank.load());
  CHECK_FALSE(overflowed.load());
}

TEST_CASE("observe: stats() from a fiber while the run goes", "[observe]") {
  test::run_with(2, [] {
    rill::chan<int> in(4);
    auto p = rill::from(in) | rill::map([](int v) { return v + 1; }) | rill::count();
    auto h = p.start();
    for (int i = 0; i < 100; ++i) in.send(i);
    while (h.stats().stages.back().items_in < 100) rill::this_fiber::yield();
    in.close();
    CHECK(h.wait() == 100);
    CHECK(h.stats().stages[1].items_in == 100);
  });
}

TEST_CASE("observe: metrics off leaves the counts at 0", "[observe]") {
  test::run_with(1, [] {
    auto p = rill::from(iota_vec(100)) | rill::map([](int v) { return v; }) | rill::count();
    CHECK(p.run(rill::run_options{.metrics = false}) == 100);
    const auto s = p.stats();
    REQUIRE(s.stages.size() == 3);
    for (const auto& st : s.stages) CHECK(st.items_in == 0);
    CHECK(s.bottleneck() == nullptr);
  });
}

// ---- the graph ------------------------------------------------------------------------------

namespace {

// dot_structure(): checks what a DOT text must be to parse (a digraph, balanced braces and
// quotes, every edge between declared nodes) and returns its node ids and edges.
struct dot_graph {
  std::set<std::string> nodes;
  std::vector<std::pair<std::string, std::string>> edges;
  std::map<std::string, std::string> labels;
  int clusters = 0;
};
dot_graph parse_dot(const std::string& dot) {
  dot_graph g;
  REQUIRE(dot.rfind("digraph rill {", 0) == 0);
  int depth = 0;
  bool quoted = false;
  for (std::size_t i = 0; i < dot.size(); ++i) {
    const char c = dot[i];
    if (c == '\\') {
      ++i;
      continue;
    }
    if (c == '"') quoted = !quoted;
    if (quoted) continue;
    if (c == '{') ++depth;
    if (c == '}') --depth;
    REQUIRE(depth >= 0);
  }
  CHECK_FALSE(quoted);
  CHECK(depth == 0);
  std::istringstream in(dot);
  std::string line;
  const std::regex node(R"(^\s*(\w+) \[label="((?:[^"\\]|\\.)*)\".*\];$)");
  const std::regex edge(R"(^\s*(\w+) -> (\w+)( \[.*\])?;$)");
  std::smatch m;
  while (std::getline(in, line)) {
    if (line.find("subgraph cluster_") != std::string::npos) ++g.clusters;
    if (std::regex_match(line, m, edge)) {
      g.edges.emplace_back(m[1], m[2]);
    } else if (std::regex_match(line, m, node)) {
      g.nodes.insert(m[1]);
      g.labels[m[1]] = m[2];
    }
  }
  for (const auto& [a, b] : g.edges) {
    CHECK(g.nodes.count(a) == 1);
    CHECK(g.nodes.count(b) == 1);
  }
  return g;
}

}  // namespace

TEST_CASE("observe: to_dot() before a run: stages, fibers, workers, branches", "[observe]") {
  auto p = rill::from(iota_vec(100)) |
           rill::map([](int v) { return v; }, {.buffer = 64, .name = "parse"}) |
           rill::filter([](int v) { return v > 3; }, {.fuse = false}) |
           rill::par_map([](int v) { return v; }, {.workers = 3}) |
           rill::broadcast(rill::count(), rill::map([](int v) { return v; }) | rill::collect());
  const dot_graph g = parse_dot(p.to_dot());
  // from, parse, filter, 3 workers, broadcast, and in the branches count, map, collect.
  CHECK(g.nodes.size() == 10);
  CHECK(g.labels.at("s1") == "parse");
  CHECK(g.nodes.count("s3w2") == 1);
  // from|parse fused; filter alone; par_map's workers; broadcast; and a fiber per branch.
  CHECK(g.clusters == 6);
  const std::string dot = p.to_dot();
  CHECK(dot.find("buffer 64") != std::string::npos);
  CHECK(dot.find("branch 1") != std::string::npos);
}

TEST_CASE("observe: to_dot() after a run carries items and busy shares", "[observe]") {
  test::run_with(2, [] {
    auto p = rill::from(iota_vec(300)) | rill::map([](int v) { return v * 2; }) |
             rill::filter([](int v) { return v % 3 == 0; }, {.fuse = false}) | rill::count();
    CHECK(p.run() == 100);
    const std::string dot = p.to_dot();
    const dot_graph g = parse_dot(dot);
    CHECK(g.nodes.size() == 4);
    CHECK(dot.find("300 items") != std::string::npos);
    CHECK(dot.find("100 items") != std::string::npos);
    CHECK(dot.find("busy ") != std::string::npos);
  });
}

TEST_CASE("observe: the DOT text renders with Graphviz, where it is installed", "[observe]") {
  if (std::system("command -v dot >/dev/null 2>&1") != 0) return;
  auto p = rill::from(iota_vec(10)) | rill::par_map([](int v) { return v; }, {.workers = 2}) |
           rill::broadcast(rill::count(), rill::collect());
  const std::string path = "observe_test_graph.dot";
  std::ofstream(path) << p.to_dot();
  CHECK(std::system(("dot -Tsvg " + path + " -o /dev/null").c_str()) == 0);
  std::remove(path.c_str());
}

// ---- the fiber dump -------------------------------------------------------------------------

namespace {

std::string dump_text() {
  std::ostringstream os;
  rill::dump(os);
  return os.str();
}

}  // namespace

TEST_CASE("observe: dump() lists a parked fiber and the channel it waits on", "[observe]") {
  test::run_with(2, [] {
    rill::chan<int> c;
    rill::go([c]() mutable {
      rill::this_fiber::name("waiter");
      (void)c.recv();
    });
    // The dump is the condition: wait (yielding) until it shows the fiber parked.
    std::string d;
    for (;;) {
      d = dump_text();
      if (d.find("(waiter): parked on chan recv") != std::string::npos) break;
      rill::this_fiber::yield();
    }
    CHECK(d.rfind("rill: ", 0) == 0);
    CHECK(d.find("(main): running") != std::string::npos);
    c.send(1);
  });
}

TEST_CASE("observe: dump() names a pipeline's stage fibers, and how long they waited",
          "[observe]") {
  test::leak_gate gate;                                           // runs on the default runtime
  auto tracing = rill::trace_to("observe_test_dump_trace.json");  // keeps park times
  rill::chan<int> in;
  auto p = rill::from(in) | rill::map([](int v) { return v; }, {.fuse = false}) | rill::count();
  auto h = p.start();
  std::string d;
  for (;;) {
    d = dump_text();
    if (d.find("(map#1|count): parked on chan recv") != std::string::npos &&
        d.find("(from_chan): parked on select") != std::string::npos) {
      break;
    }
    std::this_thread::yield();
  }
  INFO(d);
  CHECK(d.find(" for ") != std::string::npos);  // e.g. "parked on chan recv 0x... for 1.2ms"
  in.close();
  CHECK(h.wait() == 0);
  CHECK(tracing.stop());
  std::remove("observe_test_dump_trace.json");
}

// ---- the trace ------------------------------------------------------------------------------

namespace {

// The trace's checks, in Python (its json module is the parser the issue asks for).
const char* const check_trace_py = R"PY(
import json, sys
from collections import defaultdict
d = json.load(open(sys.argv[1]))
ev = d["traceEvents"]
runs = [e for e in ev if e.get("cat") == "run"]
stages = [e for e in ev if e.get("cat") == "stage"]
parks = [e for e in ev if e.get("cat") == "park"]
assert runs and stages and parks, (len(runs), len(stages), len(parks))
for e in runs + stages + parks:
    assert e["ph"] == "X" and e["dur"] >= 0 and e["ts"] >= 0, e
# Names: the pipeline's fibers are named after their stages.
names = set(e["name"] for e in stages)
assert any("slow" in n for n in names), names
assert any("from" in n for n in names), names
assert any(r["args"]["then"].startswith("parked on chan") for r in runs)
# A worker runs one fiber at a time: its slices do not overlap.
by_tid = defaultdict(list)
for r in runs:
    by_tid[r["tid"]].append(r)
for tid, rs in by_tid.items():
    rs.sort(key=lambda r: r["ts"])
    for a, b in zip(rs, rs[1:]):
        assert a["ts"] + a["dur"] <= b["ts"] + 0.002, (a, b)
# Nesting: each fiber's parks lie inside its stage span, on its track.
span = {s["tid"]: s for s in stages}
for p in parks:
    s = span[p["tid"]]
    assert s["ts"] - 0.002 <= p["ts"] and p["ts"] + p["dur"] <= s["ts"] + s["dur"] + 0.002, (s, p)
    assert p["name"].startswith("parked: "), p
# Per pipeline stage: a span on a track of its own (process 3), with its items.
pstages = [e for e in ev if e.get("cat") == "pipeline"]
assert sorted(e["name"] for e in pstages) == ["count", "from", "map#2", "slow"], pstages
for e in pstages:
    assert e["pid"] == 3 and e["ph"] == "X" and e["dur"] >= 0, e
    assert e["args"]["run"] == 1 and e["args"]["items_in"] == 50, e
slow = [e for e in pstages if e["name"] == "slow"][0]
# 50 items of at least 100 us of work each, in the stage's own fiber.
assert slow["args"]["busy_us"] >= 5000 and slow["dur"] >= slow["args"]["busy_us"] - 1, slow
print("trace ok:", len(runs), "slices,", len(stages), "fibers,", len(parks), "parks,",
      len(pstages), "pipeline stages")
)PY";

}  // namespace

namespace {

// on_terminal(f): runs f with stderr on a pseudo-terminal (raw: no translation), and
// returns what was written to it.
template <class F>
std::string on_terminal(F f) {
  int master = -1, slave = -1;
  REQUIRE(::openpty(&master, &slave, nullptr, nullptr, nullptr) == 0);
  termios raw{};
  REQUIRE(::tcgetattr(slave, &raw) == 0);
  ::cfmakeraw(&raw);
  REQUIRE(::tcsetattr(slave, TCSANOW, &raw) == 0);
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(slave, STDERR_FILENO);
  std::string out;
  // Drain the terminal while f runs: a full one would block the progress line's writer.
  std::atomic<bool> done{false};
  std::thread reader([&] {
    char buf[4096];
    for (;;) {
      pollfd pf{master, POLLIN, 0};
      if (::poll(&pf, 1, 10) > 0) {
        const ssize_t n = ::read(master, buf, sizeof buf);
        if (n > 0) {
          out.append(buf, static_cast<std::size_t>(n));
          continue;
        }
      }
      if (done.load()) break;
    }
  });
  // However f ends: stderr back, the reader drained and joined, the terminal closed.
  struct restore {
    int saved, slave, master;
    std::atomic<bool>& done;
    std::thread& reader;
    ~restore() {
      std::fflush(stderr);
      ::dup2(saved, STDERR_FILENO);
      ::close(saved);
      ::close(slave);
      done = true;
      reader.join();
      ::close(master);
    }
  };
  {
    restore r{saved, slave, master, done, reader};
    f();
  }
  return out;
}

// A pipeline that runs for at least `ms` milliseconds of CPU work (long enough for several
// redraws of a terminal's progress line), calling at(k) before item k.
template <class At>
auto slow_pipeline(int items, int ms, At at) {
  return rill::from(iota_vec(items)) |
         rill::map(
             [at, per = std::chrono::milliseconds(ms) / items](int v) {
               at(v);
               spin_for(per);
               return v;
             },
             {.name = "work"}) |
         rill::count();
}

}  // namespace

TEST_CASE("observe: the progress line on a terminal: redrawn, then erased however the run ends",
          "[observe]") {
  const std::string how =
      GENERATE(std::string("ends"), std::string("throws"), std::string("is cancelled"));
  std::string out;
  test::run_with(2, [&] {
    out = on_terminal([&] {
      std::stop_source stop;
      auto p = slow_pipeline(300, 600, [&](int v) {
        if (v == 280 && how == "throws") throw std::runtime_error("stage failed");
        if (v == 280 && how == "is cancelled") stop.request_stop();
      });
      // The watchdog off: on a machine loaded enough to starve the run for its threshold,
      // its report (a line of its own on the same stderr) is not what this test looks at.
      const rill::run_options o{.watchdog = std::chrono::milliseconds(0), .progress = true};
      if (how == "ends") {
        CHECK(p.run(o) == 300);
      } else if (how == "throws") {
        CHECK_THROWS_WITH(p.run(o), "stage failed");
      } else {
        CHECK_THROWS_AS(p.run(stop.get_token(), o), rill::pipeline_cancelled);
      }
    });
  });
  INFO("terminal output: " << out);
  // Redrawn in place (a carriage return before each draw), with the count, the bar (the
  // source's size is known) and the busiest stage...
  CHECK(std::count(out.begin(), out.end(), '\r') >= 2);
  CHECK(out.find("rill: ") != std::string::npos);
  CHECK(out.find("/300") != std::string::npos);
  CHECK(out.find("work") != std::string::npos);
  // ...and erased at the end, leaving the terminal as it was: no newline.
  const std::string erase = "\r\x1b[K";
  REQUIRE(out.size() >= erase.size());
  CHECK(out.substr(out.size() - erase.size()) == erase);
  CHECK(out.find('\n') == std::string::npos);
}

TEST_CASE("observe: trace_to() writes a Chrome trace that parses and nests", "[observe]") {
  const std::string path = "observe_test_trace.json";
  {
    auto tracing = rill::trace_to(path);
    CHECK_THROWS_AS(rill::trace_to("second.json"), std::logic_error);
    // `slow` gets a fiber of its own, named after it for its whole life. (The last stages run
    // in the fiber that called run(), renamed meanwhile; a slice takes the name its fiber had
    // when it ended, so a tail that never parked showed as "main".)
    test::run_with(2, [] {
      auto p = rill::from(iota_vec(50)) |
               rill::map(
                   [](int v) {
                     spin_for(std::chrono::microseconds(100));
                     return v;
                   },
                   {.fuse = false, .name = "slow"}) |
               rill::map([](int v) { return v; }, {.fuse = false}) | rill::count();
      CHECK(p.run() == 50);
    });
  }  // written here
  const std::string script = "observe_test_check_trace.py";
  std::ofstream(script) << check_trace_py;
  CHECK(std::system(("python3 " + script + " " + path).c_str()) == 0);
  std::remove(script.c_str());
  std::remove(path.c_str());
}
