// rill/pipeline/options.hpp: what a user sets and reads of a run: the options of a stage,
// of par_map and of a run, and the stats a run reports. Part of rill/pipeline.hpp.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace rill {

// The default channel capacity after a stage, in items. Small, so a fast source never runs
// far ahead of a slow sink.
inline constexpr std::size_t default_buffer = 256;

// stage_options: per-stage settings, e.g. `rill::map(f, {.buffer = 16})`. Every field
// overrides what the pipeline would decide from what it measures (see "How a pipeline
// runs" in rill/pipeline/pipeline.hpp).
struct stage_options {
  // Capacity (items) of the link after this stage, when the next stage runs in another
  // fiber: the bound on the items between the two.
  std::size_t buffer = default_buffer;
  // Unset: the pipeline decides (stages start fused with their neighbours, and a stage
  // whose measured cost gains from a fiber of its own gets one). false: this stage always
  // runs in a fiber of its own; true: it always runs in the fiber of the stage before it.
  std::optional<bool> fuse{};
  // Name in error reports and stats (default: the stage kind and its position).
  const char* name = nullptr;
  // Items per hand-off on the link after this stage. 0: adaptive (one item at a time while
  // items are slow or scarce, more while they stream; never longer than a small bound of
  // the writer's running time). n: always batches of up to n, and of half of `buffer` at
  // most, which bounds the link (still sent when the fiber waits, so no item waits for a
  // batch to fill while its fiber sleeps).
  std::size_t batch_size = 0;
  // Bytes of stack, at least, for the fiber that runs this stage (0: the run's, see
  // run_options::stack_size). Stages fused into one fiber get the largest of theirs, and a
  // fiber that a running chain splits off keeps its chain's; the fiber that called run()
  // runs the last stages itself only if its stack is that large (else they get a fiber).
  std::size_t stack_size = 0;
};

// par_options: settings of par_map, e.g. `{.workers = 4, .ordered = true}`.
struct par_options {
  unsigned workers = 0;  // 0: the runtime's worker count
  bool ordered = true;   // keep input order (bounded reorder window) or emit as finished
  std::size_t buffer = default_buffer;
  const char* name = nullptr;
  // Items handed to a worker at a time. 0: adaptive, from the measured work per item (one
  // at a time when items are slow, so few slow items spread over every worker; up to half
  // of `buffer`, at most 64, when they are cheap). n: up to n (and to half of `buffer`).
  std::size_t batch_size = 0;
  std::size_t stack_size = 0;  // of each worker's fiber: as stage_options::stack_size
};

// run_options: how one run executes.
struct run_options {
  // false: every stage in a fiber of its own (results are identical either way).
  bool fusion = true;
  // true: a private runtime with one worker, so the schedule (and the output order of an
  // unordered par_map) is the same on every run. For tests of the wiring.
  bool inline_mode = false;
  // Bytes of stack, at least, for every fiber of the run (0: the runtime's:
  // rill::options::stack_size, or the default on the runtime of plain-thread runs; README.md
  // says what fits). A stage may ask for more (stage_options::stack_size).
  std::size_t stack_size = 0;
  // The watchdog's threshold for the run's fibers (see rill::options::watchdog); 0: none
  // of them is reported; unset: the runtime's. Effective only on a runtime with a watchdog.
  std::optional<std::chrono::milliseconds> watchdog{};
  // From a plain thread (or with inline_run): run() throws deadlock_error, naming each
  // stage and what it waits on, when every fiber of the run is asleep with nothing able to
  // wake it, as rill::run does (rill::options::detect_deadlock; the same grace period). A
  // plain thread outside rill is not seen: a run fed by one that may pause (a thread that
  // reads a file and sends its lines on the source channel) needs false. On the default
  // runtime, detection waits while a run with false, or a pipeline started with start()
  // from a plain thread, is in flight (its thread may feed it); a plain-thread
  // run(stop_token) whose token can be stopped does not watch (the stop may come later).
  bool detect_deadlock = true;
  // A live one-line progress bar on stderr while the run goes (a plain line every few
  // seconds when stderr is not a terminal): items through the sink, rate, elapsed time, ETA
  // when the source's size is known, the busiest stage. RILL_PROGRESS=1 turns it on for
  // every run.
  bool progress = false;
  // Per-stage counters and times (pipeline_stats::stages). On by default; false only to
  // measure what they cost.
  bool metrics = true;
};
// run(rill::inline_run): the deterministic one-worker mode.
inline constexpr run_options inline_run{true, true};

// pipeline_cancelled: run()/wait() of a pipeline stopped by cancel() or its stop_token.
class pipeline_cancelled : public std::runtime_error {
 public:
  pipeline_cancelled() : std::runtime_error("rill: pipeline cancelled") {}
};

// stage_stats: one stage of a run, as the pipeline laid it out and as far as it has got
// (items and times are read live from the stage fibers' counters: during a run they are a
// consistent-enough snapshot, after it exact for items).
struct stage_stats {
  std::string name;
  std::uint64_t items_in = 0;   // items that entered it (a source: = items_out)
  std::uint64_t items_out = 0;  // items it passed on (a terminal: = items_in)
  // Time in the stage's own work (its user function, for a fused stage its measured share
  // of its fiber's work), and its fibers' time waiting for an item and waiting for room
  // downstream (held back by the next stage). Summed over its fibers.
  std::chrono::nanoseconds busy{0}, waiting_input{0}, waiting_output{0};
  unsigned fibers = 1;  // fibers that run it (par_map: its workers)
  // The link after it (0, 0 when the next stage runs in the same fiber): items in it now,
  // and its bound (the stage's buffer).
  std::size_t queued = 0, capacity = 0;
  bool fused = false;  // runs in the fiber of the stage before it (no link between them)
  // Measured work per item (0: not measured; the pipeline measures a stage only when the
  // fiber that runs it is slow enough for a split to matter).
  std::chrono::nanoseconds cost_per_item{0};
  std::size_t batch_size = 0;  // items per hand-off on the link after it, last seen (0: no link)
  std::string decision;        // why it is laid out so (fused, split, pinned by an option)
};

// pipeline_stats: how a run was laid out and how far it has got. Printed with
// operator<< as an aligned table, one line per stage, and a line naming the bottleneck
// and what would help.
struct pipeline_stats {
  std::vector<std::string> fibers;  // one entry per stage fiber: its stages, '|'-separated
  // One per stage in pipeline order, source and terminal too; then the stages of a
  // broadcast's branches and of a merge's sources, each chain in order, named under their
  // place ("broadcast[1]/collect", "merge[0]/map#1").
  std::vector<stage_stats> stages;
  std::chrono::nanoseconds elapsed{0};  // of the run, so far
  bool finished = false;                // the run has ended

  // bottleneck(): the stage that limits throughput: the highest busy time per fiber
  // (nullptr when nothing was measured).
  const stage_stats* bottleneck() const noexcept;
};
std::ostream& operator<<(std::ostream& os, const pipeline_stats& s);

}  // namespace rill
