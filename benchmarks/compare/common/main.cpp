// main() of rill_compare: Google Benchmark's main, plus the work calibration in the context.
#include <benchmark/benchmark.h>

#include <string>
#include <thread>

#include "work.hpp"

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("work_iters_per_item", std::to_string(bench::calibrated_iters()));
  benchmark::AddCustomContext("quick", bench::quick() ? "1" : "0");
  benchmark::AddCustomContext("hardware_concurrency", std::to_string(bench::hardware_threads()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
