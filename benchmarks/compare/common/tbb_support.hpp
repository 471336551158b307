// tbb_support.hpp: gives oneTBB exactly `workers` threads (the calling thread included).
#pragma once

#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_pipeline.h>
#include <oneapi/tbb/task_arena.h>

#include <cstddef>
#include <cstdint>

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

// pipeline3<Msg>(tokens, map_mode, sink_mode, source, map, fold): a serial in-order source
// -> map -> sink parallel_pipeline over messages of type Msg (an item or a block), the map
// and the sink in the given modes; returns the sink's fold from 0.
template <class Msg, class Source, class Map, class Fold>
std::uint64_t pipeline3(std::size_t tokens, tbb::filter_mode map_mode, tbb::filter_mode sink_mode,
                        Source source, Map map, Fold fold) {
  std::uint64_t acc = 0;
  tbb::parallel_pipeline(
      tokens,
      tbb::make_filter<void, Msg>(tbb::filter_mode::serial_in_order, source) &
          tbb::make_filter<Msg, Msg>(map_mode, map) &
          tbb::make_filter<Msg, void>(sink_mode, [&](const Msg& m) { acc = fold(acc, m); }));
  return acc;
}

}  // namespace bench
