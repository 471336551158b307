// Nested runs (issue 17, item 2): rill::run, pipeline::run(), run(inline_run) and
// start().wait(), called from a fiber or from a stage of a pipeline, on an outer runtime of
// 1, 2 or 4 workers. Each nested run waits on a fiber of the outer runtime (a feeder on an
// unbuffered channel): a nested runtime that held the caller's worker would leave that
// fiber no thread with one worker, and hang. Every cell completes with the fed values.
#include <catch2/catch.hpp>
#include <rill/rill.hpp>
#include <string>
#include <vector>

#include "support/run_with.hpp"

namespace {

enum class nesting { rill_run, pipeline_run, inline_run, start_wait };

const char* name_of(nesting k) {
  switch (k) {
    case nesting::rill_run:
      return "rill::run";
    case nesting::pipeline_run:
      return "pipeline.run()";
    case nesting::inline_run:
      return "run(inline_run)";
    case nesting::start_wait:
      return "start().wait()";
  }
  return "?";
}

// nested(): the sum of the three values the outer feeder sends on `ch`, read by a nested run.
long nested(nesting k, rill::chan<int>& ch) {
  auto p = rill::from(ch) | rill::reduce(0L, [](long a, int b) { return a + b; });
  switch (k) {
    case nesting::rill_run: {
      rill::options o;
      o.workers = 1;
      return rill::run(
          [&] {
            long s = 0;
            for (int i = 0; i < 3; ++i) s += *ch.recv();
            return s;
          },
          o);
    }
    case nesting::pipeline_run:
      return p.run();
    case nesting::inline_run:
      return p.run(rill::inline_run);
    case nesting::start_wait:
      return p.start().wait();
  }
  return -1;
}

// feed() starts the outer fiber that the nested run waits on.
void feed(rill::chan<int>& ch, nesting k) {
  rill::go([&ch, k] {
    for (int i = 1; i <= 3; ++i) ch.send(i);
    if (k != nesting::rill_run) ch.close();  // the pipelines read to the end
  });
}

}  // namespace

TEST_CASE("nested runs: every nesting completes from a fiber and from a stage, on 1, 2, 4 workers",
          "[runtime][nested]") {
  const unsigned workers = GENERATE(1u, 2u, 4u);
  const nesting k =
      GENERATE(nesting::rill_run, nesting::pipeline_run, nesting::inline_run, nesting::start_wait);
  const bool from_stage = GENERATE(false, true);
  INFO(name_of(k) << " from a " << (from_stage ? "stage" : "fiber") << ", outer workers "
                  << workers);
  long got = 0;
  test::run_with(workers, [&] {
    rill::chan<int> ch(0);
    feed(ch, k);
    if (from_stage) {
      auto outer = rill::from(std::vector<int>{0}) | rill::map([&](int) { return nested(k, ch); }) |
                   rill::collect();
      got = outer.run().at(0);
    } else {
      rill::chan<long> result(1);
      rill::go([&] { result.send(nested(k, ch)); });
      got = *result.recv();
    }
  });
  CHECK(got == 6);
}

TEST_CASE("nested runs: a nested rill::run that deadlocks throws deadlock_error at its call",
          "[runtime][nested][deadlock]") {
  // The nested runtime waits on a channel nobody sends on; the outer fiber that called it
  // gets the error and the outer run goes on.
  const unsigned workers = GENERATE(1u, 2u);
  std::string what;
  test::run_with(workers, [&] {
    rill::chan<int> never(0);
    rill::options o;
    o.workers = 1;
    try {
      rill::run([&] { (void)never.recv(); }, o);
    } catch (const rill::deadlock_error& e) {
      what = e.what();
    }
  });
  CHECK(what.find("chan recv") != std::string::npos);
}
