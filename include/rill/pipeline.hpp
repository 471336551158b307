// rill/pipeline.hpp: the pipeline DSL.
//
//   int process(int v);                                  // pure: knows no concurrency
//   auto p = rill::from(std::views::iota(0, 1'000'000))  // a range, a chan, generate(f)
//          | rill::map(process)
//          | rill::filter(is_even)
//          | rill::par_map(expensive, {.workers = 4, .ordered = true})
//          | rill::collect();                            // -> std::vector
//   std::vector<int> out = p.run();
//
// Each stage runs as a fiber ("goroutine") that ranges over its input channel, calls the
// user's function, and sends the result on; the library writes that loop, the user's
// function never sees a channel. Adjacent cheap stages share one fiber (fusion) and links
// move items in batches, decided from measured cost while the pipeline runs: a slow stage
// gets a fiber of its own, slow or scarce items travel one at a time, and no item waits in
// a batch while its fiber parks. `{.fuse}`, `{.batch_size}`, stage_boundary and
// run_options::fusion pin the layout; results are identical either way. p.stats() says how
// the last run was laid out and why.
//
// Guarantees: no item is lost or duplicated; memory in flight is bounded by the sum of the
// stages' `buffer`s (a slow sink makes the source wait); the first exception from any user
// function cancels every stage and run() rethrows it once every stage fiber has ended
// (pipeline_handle::failed_stage() names the stage); take(n) and cancel() stop upstream
// stages promptly; no fiber, stack or channel outlives run().
#pragma once

#include "rill/pipeline/broadcast.hpp"
#include "rill/pipeline/concepts.hpp"
#include "rill/pipeline/links.hpp"
#include "rill/pipeline/merge.hpp"
#include "rill/pipeline/options.hpp"
#include "rill/pipeline/pipeline.hpp"
#include "rill/pipeline/run_context.hpp"
#include "rill/pipeline/sinks.hpp"
#include "rill/pipeline/sources.hpp"
#include "rill/pipeline/stages.hpp"
