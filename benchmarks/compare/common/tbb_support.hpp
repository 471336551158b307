// tbb_support.hpp: gives oneTBB exactly `workers` threads (the calling thread included).
#pragma once

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/task_arena.h>

#include <cstddef>

namespace bench {

// tbb_workers limits oneTBB to `workers` threads for its lifetime: a global_control caps the
// worker pool, and arena (workers slots, one of them for the calling thread) is where the
// benchmark runs its graph or pipeline, via arena.execute(...).  Construct it outside the
// timed region.
struct tbb_workers {
  explicit tbb_workers(unsigned workers)
      : control(tbb::global_control::max_allowed_parallelism, workers),
        arena(static_cast<int>(workers)) {
    arena.initialize();
  }
  tbb::global_control control;
  tbb::task_arena arena;
};

}  // namespace bench
