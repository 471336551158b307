// What the scheduler shows of itself beyond its counters: the trace (RILL_TRACE,
// rill::trace_to) and the fiber dump (rill::dump, RILL_DUMP_ON, the deadlock report).
// observe.cpp has the protocol.
#pragma once

#include <atomic>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace rill::detail {

struct worker;
struct fiber;

// g_observe: what the switch hook records (0: nothing; the hook is then one relaxed load
// and a predictable branch per switch).
inline constexpr unsigned observe_trace = 1;       // trace events into the worker's ring
inline constexpr unsigned observe_park_times = 2;  // when each fiber parked (dumps say how long)
extern std::atomic<unsigned> g_observe;

// observe_switch(): worker w is about to run `next` (nullptr: its scheduler loop) in place of
// the fiber it runs now. Called on w's thread, with g_observe set, by worker::set_current.
void observe_switch(worker* w, fiber* next) noexcept;

// stage_span: one pipeline stage in a trace: from the first to the last moment a fiber
// ran it, with what it did meanwhile.
struct stage_span {
  std::string name;
  std::int64_t t0 = 0, t1 = 0;
  std::uint64_t items_in = 0, items_out = 0;
  std::int64_t busy_ns = 0;
};
// trace_stages(): a pipeline run has ended; while a trace is recorded, its stages' spans
// go into it (process "pipeline stages", a track per stage of each run).
void trace_stages(std::vector<stage_span> spans) noexcept;

// format_fiber(): one fiber's line of a dump or a deadlock report (id, name: its stages for
// a pipeline's fiber, state, what it waits on and, when known, for how long). The caller
// holds the fiber's registry slot's lock.
void format_fiber(std::ostream& os, fiber* f, std::int64_t now);

}  // namespace rill::detail
