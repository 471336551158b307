// Stack compaction of parked fibers (options::compact_parked; src/fiber/compact.cpp).
#include "fiber/compact.hpp"

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <rill/rill.hpp>
#include <string>
#include <thread>
#include <vector>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define RILL_TEST_SANITIZED 1
#endif
#endif

namespace {

// Only slabs whose every stack has been carved are compacted: a slab holds a few hundred
// stacks of the default size, so each test parks more fibers than that.
constexpr int parkers = 1200;

rill::options compacting() {
  rill::options o;
  o.workers = 2;
  // Passes only when a test asks (compact_parked_now), never on their own during a test.
  o.compact_parked = std::chrono::hours(1);
  return o;
}

bool compact_now() {
  return rill::blocking([] { return rill::detail::compact_parked_now(); });
}

// A value that depends on every element, in order.
std::uint64_t mix(const volatile std::uint64_t* v, int n) {
  std::uint64_t h = 1469598103934665603ULL;
  for (int i = 0; i < n; ++i) h = (h ^ v[i]) * 1099511628211ULL;
  return h;
}

}  // namespace

TEST_CASE(
    "compaction: parked fibers wake with their stack contents intact, and their pages "
    "went back while parked",
    "[compact]") {
  std::atomic<int> intact{0}, woken{0};
  bool available = true;
  rill::detail::compaction_stats during{};
  rill::stats seen{};
  rill::run(
      [&] {
        rill::wait_group parked, done;
        rill::chan<int> start;
        parked.add(parkers);
        done.add(parkers);
        for (int i = 0; i < parkers; ++i) {
          rill::go([&, i] {
            volatile std::uint64_t locals[24];
            for (int k = 0; k < 24; ++k) locals[k] = static_cast<std::uint64_t>(i) * 7919 + k;
            const std::uint64_t before = mix(locals, 24);
            parked.done();
            (void)start.recv();
            woken.fetch_add(1);
            if (mix(locals, 24) == before) intact.fetch_add(1);
            done.done();
          });
        }
        parked.wait();
        // The last fibers may still be between parked.done() and recv(): the pass compacts
        // the ones parked, whichever they are.
        available = compact_now();
        during = rill::detail::compaction_counts();
        seen = rill::runtime_stats();
        start.close();
        done.wait();
      },
      compacting());
  if (!available) {
    WARN("userfaultfd is not available to this process: compaction not tested");
    return;
  }
  CHECK(woken.load() == parkers);
  CHECK(intact.load() == parkers);
  // Every full slab's parked fibers (all but the newest slab's few hundred).
  CHECK(during.held >= parkers / 2);
  CHECK(seen.compacted_fibers == during.held);
  // What a compacted fiber keeps: its record and frames, well under a page (sanitized
  // builds have larger frames).
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__) || defined(RILL_TEST_SANITIZED)
  CHECK(during.held_bytes / during.held < 4096);
#else
  CHECK(during.held_bytes / during.held < 2048);
#endif
  const auto after = rill::detail::compaction_counts();
  CHECK(after.held == 0);  // each was put back when it was woken
  CHECK(after.restored >= during.compacted);
}

TEST_CASE("compaction: another fiber writes through a pointer into a compacted stack",
          "[compact]") {
  bool available = true;
  std::uint64_t restored_by_write = 0;
  long seen = 0;
  bool held_before = false, held_after = true;
  rill::run(
      [&] {
        rill::chan<long*> where;
        rill::chan<int> go_on, others;
        rill::wait_group written, all;
        written.add(1);
        all.add(1 + parkers);
        // The owner of the variable: parked in written.wait() while its stack is compacted.
        rill::go([&] {
          // On this fiber's stack itself (a plain local may live in ASan's fake stack, on
          // the heap, where detect_stack_use_after_return is on).
          auto* x = static_cast<long*>(__builtin_alloca(sizeof(long)));
          *x = 1;
          where.send(x);
          written.wait();
          seen = *x;
          all.done();
        });
        long* p = *where.recv();
        for (int i = 0; i < parkers; ++i) {
          rill::go([&] {
            (void)others.recv();
            all.done();
          });
        }
        rill::go([&] {
          (void)go_on.recv();
          const std::uint64_t before = rill::detail::compaction_counts().restored;
          *p = 42;  // into the compacted stack: the write waits until it is back
          restored_by_write = rill::detail::compaction_counts().restored - before;
          written.done();
        });
        // The owner may still be on its way from send() to wait() (on another worker, a
        // busy machine): a pass compacts only fibers parked at the time, so pass again
        // until the owner's was one of them.
        available = compact_now();
        for (int pass = 0; available && pass < 1000 && !rill::detail::compaction_holds(p); ++pass) {
          available = compact_now();
        }
        held_before = rill::detail::compaction_holds(p);
        go_on.close();
        others.close();
        all.wait();
        held_after = rill::detail::compaction_holds(p);
      },
      compacting());
  if (!available) {
    WARN("userfaultfd is not available to this process: compaction not tested");
    return;
  }
  CHECK(held_before);             // the owner's stack was compacted...
  CHECK(seen == 42);              // ...the write reached it...
  CHECK(restored_by_write >= 1);  // ...by bringing it back
  CHECK_FALSE(held_after);
}

TEST_CASE("compaction: passes that race with fibers waking and parking lose nothing",
          "[compact][stress]") {
  constexpr int pairs = 300;
  constexpr int rounds = 200;
  std::atomic<long> wrong{0};
  std::atomic<bool> stop{false};
  std::atomic<int> passes{0};
  bool available = true;
  rill::run(
      [&] {
        rill::wait_group done;
        done.add(2 * pairs);
        std::vector<rill::chan<std::uint64_t>> ping(pairs), pong(pairs);
        for (int i = 0; i < pairs; ++i) {
          rill::go([&, i] {
            volatile std::uint64_t mine[8];
            for (int k = 0; k < 8; ++k) mine[k] = static_cast<std::uint64_t>(i) + k;
            const std::uint64_t sum = mix(mine, 8);
            for (std::uint64_t r = 0; r < rounds; ++r) {
              ping[i].send(r);
              if (pong[i].recv() != r + 1 || mix(mine, 8) != sum) wrong.fetch_add(1);
            }
            done.done();
          });
          rill::go([&, i] {
            for (int r = 0; r < rounds; ++r) {
              const std::uint64_t v = ping[i].recv().value_or(~0ULL);
              pong[i].send(v + 1);
            }
            done.done();
          });
        }
        // Passes back to back from a plain thread while the pairs run.
        std::thread passer([&] {
          while (!stop.load()) {
            if (!rill::detail::compact_parked_now()) {
              available = false;
              return;
            }
            passes.fetch_add(1);
          }
        });
        rill::blocking([&] {
          while (available && passes.load() < 3) std::this_thread::yield();
        });
        done.wait();
        stop = true;
        rill::blocking([&] { passer.join(); });
      },
      compacting());
  if (!available) {
    WARN("userfaultfd is not available to this process: compaction not tested");
    return;
  }
  CHECK(wrong.load() == 0);
  CHECK(passes.load() >= 3);
}

TEST_CASE("compaction: a dump reads compacted fibers while passes run", "[compact]") {
  bool available = true;
  std::string dump;
  std::size_t held = 0;
  rill::run(
      [&] {
        rill::wait_group parked, done;
        rill::chan<int> start;
        parked.add(parkers);
        done.add(parkers);
        for (int i = 0; i < parkers; ++i) {
          rill::go([&] {
            parked.done();
            (void)start.recv();
            done.done();
          });
        }
        parked.wait();
        available = compact_now();
        held = rill::detail::compaction_counts().held;
        // The dump reads every fiber's record (each compacted one comes back first) while
        // passes compact them again; the registry's lock is held meanwhile, which the
        // service must not need.
        std::thread passer([] {
          for (int i = 0; i < 5; ++i) rill::detail::compact_parked_now();
        });
        dump = rill::blocking([] { return rill::dump_fibers(); });
        rill::blocking([&] { passer.join(); });
        start.close();
        done.wait();
      },
      compacting());
  if (!available) {
    WARN("userfaultfd is not available to this process: compaction not tested");
    return;
  }
  CHECK(held >= parkers / 2);
  std::size_t listed = 0;
  for (std::size_t at = dump.find("parked on"); at != std::string::npos;
       at = dump.find("parked on", at + 1)) {
    ++listed;
  }
  CHECK(listed >= parkers);  // every parker, and the main fiber in blocking()
}

TEST_CASE(
    "compaction: the slabs of ended fibers' stacks go back to the system, and fibers "
    "spawned after them park, compact and wake intact",
    "[compact]") {
  // Waves of fibers: each wave parks (and is compacted), then wakes and ends. A compacting
  // pool gives the slabs of a wave's stacks back, keeping a few slabs' worth for the next.
  constexpr int wave = 4 * parkers;
  bool available = true;
  std::uint64_t released_first = 0, released_second = 0;
  std::uint64_t held_second = 0;
  int intact = 0;
  rill::run(
      [&] {
        auto one_wave = [&](std::uint64_t* held) {
          rill::wait_group parked, done;
          rill::chan<int> start;
          std::atomic<int> ok{0};
          parked.add(wave);
          done.add(wave);
          for (int i = 0; i < wave; ++i) {
            rill::go([&, i] {
              volatile std::uint64_t locals[8];
              for (int k = 0; k < 8; ++k) locals[k] = static_cast<std::uint64_t>(i) * 31 + k;
              const std::uint64_t before = mix(locals, 8);
              parked.done();
              (void)start.recv();
              if (mix(locals, 8) == before) ok.fetch_add(1);
              done.done();
            });
          }
          parked.wait();
          available = available && compact_now();
          if (held) *held = rill::detail::compaction_counts().held;
          start.close();
          done.wait();
          return ok.load();
        };
        const std::uint64_t r0 = rill::detail::compaction_counts().slabs_released;
        one_wave(nullptr);
        // A forced pass runs after the service has unmapped what was given back before it.
        available = available && compact_now();
        released_first = rill::detail::compaction_counts().slabs_released - r0;
        intact = one_wave(&held_second);
        available = available && compact_now();
        released_second = rill::detail::compaction_counts().slabs_released - r0 - released_first;
      },
      compacting());
  if (!available) {
    WARN("userfaultfd is not available to this process: compaction not tested");
    return;
  }
  // 4,800 stacks are over a dozen slabs; the pool keeps about three of them, the workers'
  // caches a few dozen stacks.
  CHECK(released_first >= 4);
  CHECK(released_second >= 4);
  // The second wave ran on stacks of new slabs, some at the addresses of released ones.
  CHECK(held_second >= static_cast<std::uint64_t>(wave / 2));
  CHECK(intact == wave);
}
