// linear_heavy, tbb_pipeline: serial_in_order source -> parallel map -> sink, the sink
// serial_in_order (ordered) or serial_out_of_order (unordered).  peritem_: one item per token.
// tokensT: at most T items in flight.  workersW: tbb_workers(W).
#include <oneapi/tbb/parallel_pipeline.h>

#include "reorder.hpp"
#include "tbb_support.hpp"
#include "work.hpp"

namespace {

std::uint64_t run(std::uint64_t n, std::size_t tokens, bool is_ordered) {
  std::uint64_t next = 0;
  std::uint64_t acc = is_ordered ? bench::kOrderedInit : 0;
  tbb::parallel_pipeline(
      tokens,
      tbb::make_filter<void, std::uint64_t>(tbb::filter_mode::serial_in_order,
                                            [&](tbb::flow_control& fc) -> std::uint64_t {
                                              if (next >= n) {
                                                fc.stop();
                                                return 0;
                                              }
                                              return next++;
                                            }) &
          tbb::make_filter<std::uint64_t, std::uint64_t>(
              tbb::filter_mode::parallel, [](std::uint64_t v) { return bench::heavy_map(v); }) &
          tbb::make_filter<std::uint64_t, void>(is_ordered ? tbb::filter_mode::serial_in_order
                                                           : tbb::filter_mode::serial_out_of_order,
                                                [&](std::uint64_t v) {
                                                  acc = is_ordered ? bench::ordered(acc, v)
                                                                   : bench::sum(acc, v);
                                                }));
  return acc;
}

const bool registered = [] {
  for (unsigned workers : bench::worker_counts()) {
    for (std::size_t tokens : {16, 256}) {
      for (bool is_ordered : {true, false}) {
        bench::add("linear_heavy/tbb_pipeline/peritem_tokens" + std::to_string(tokens) + "_" +
                       bench::workers_name(workers) + (is_ordered ? "_ordered" : "_unordered"),
                   [=](benchmark::State& s) {
                     bench::tbb_workers tbb(workers);
                     const std::uint64_t n = bench::items_heavy();
                     bench::measure(s, n, bench::expected_heavy(n, is_ordered), [&] {
                       return tbb.arena.execute([&] { return run(n, tokens, is_ordered); });
                     });
                   });
      }
    }
  }
  return true;
}();

}  // namespace
