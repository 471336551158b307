// fan_out_fan_in and heavy_tail, tbb_pipeline: serial_in_order source -> parallel map ->
// serial_out_of_order sink.  tokensT: at most T items in flight.  workersW: tbb_workers(W).
#include <oneapi/tbb/parallel_pipeline.h>

#include "tbb_support.hpp"
#include "work.hpp"

namespace {

template <class Fan>
std::uint64_t run(std::uint64_t n, std::size_t tokens) {
  std::uint64_t next = 0;
  std::uint64_t acc = 0;
  tbb::parallel_pipeline(
      tokens, tbb::make_filter<void, std::uint64_t>(tbb::filter_mode::serial_in_order,
                                                    [&](tbb::flow_control& fc) -> std::uint64_t {
                                                      if (next >= n) {
                                                        fc.stop();
                                                        return 0;
                                                      }
                                                      return next++;
                                                    }) &
                  tbb::make_filter<std::uint64_t, std::uint64_t>(
                      tbb::filter_mode::parallel, [](std::uint64_t v) { return Fan::map(v); }) &
                  tbb::make_filter<std::uint64_t, void>(
                      tbb::filter_mode::serial_out_of_order,
                      [&](std::uint64_t v) { acc = bench::sum(acc, v); }));
  return acc;
}

const bool registered = [] {
  bench::for_each_fan([](auto fan) {
    using Fan = decltype(fan);
    for (unsigned workers : bench::worker_counts()) {
      for (std::size_t tokens : {16, 256}) {
        bench::add(std::string(Fan::name) + "/tbb_pipeline/tokens" + std::to_string(tokens) + "_" +
                       bench::workers_name(workers),
                   [=](benchmark::State& s) {
                     bench::tbb_workers tbb(workers);
                     const std::uint64_t n = Fan::items();
                     bench::measure(s, n, Fan::expected(n), [&] {
                       return tbb.arena.execute([&] { return run<Fan>(n, tokens); });
                     });
                   });
      }
    }
  });
  return true;
}();

}  // namespace
