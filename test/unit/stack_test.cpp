// Tests of fiber stack sizes: rill::options::stack_size, a pipeline's
// run_options::stack_size and stage_options::stack_size (which fiber gets how much), and
// that a recursion deeper than the default stack fits in the stack asked for. Overflow
// detection itself is in test/death.
#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <rill/pipeline.hpp>
#include <rill/rill.hpp>
#include <vector>

#include "support/pipeline_support.hpp"
#include "support/run_with.hpp"

namespace {

namespace rd = rill::detail;

constexpr std::size_t kib = 1024;

// deep(): recurses through about `bytes` of stack (1 KiB frames, every byte touched).
[[gnu::noinline]] int deep(std::size_t bytes) {
  char frame[1024];
  std::memset(frame, static_cast<int>(bytes & 0x7f), sizeof frame);
  asm volatile("" : : "r"(frame) : "memory");
  if (bytes <= sizeof frame) return frame[7];
  return deep(bytes - sizeof frame) + frame[bytes % sizeof frame];
}

// smallest: the smallest stack seen by the calls of a stage.
struct smallest {
  std::atomic<std::size_t> v{~std::size_t{0}};
  void see() {
    const std::size_t s = rd::current_stack_size();
    std::size_t cur = v.load();
    while (s < cur && !v.compare_exchange_weak(cur, s)) {
    }
  }
  std::size_t get() const { return v.load(); }
};

}  // namespace

TEST_CASE("stack: options::stack_size sizes a runtime's fibers", "[stack]") {
  rill::options o;
  o.workers = 2;
  o.stack_size = 1024 * kib;
  rill::run(
      [] {
        CHECK(rd::current_stack_size() >= 1024 * kib);
        CHECK(deep(600 * kib) >= 0);  // far past the default stack
      },
      o);
  test::check_no_leaks();
}

TEST_CASE("stack: run_options::stack_size sizes every fiber of a plain-thread run",
          "[stack][pipeline]") {
  const bool fusion = GENERATE(true, false);
  smallest a, b;
  rill::run_options o;
  o.fusion = fusion;
  o.stack_size = 1024 * kib;
  auto p = rill::from(test::iota_vec(8)) | rill::map([&](int v) {
             a.see();
             return v + (a.get() >= 1024 * kib ? deep(600 * kib) * 0 : 0);
           }) |
           rill::filter([&](int) {
             b.see();
             return true;
           }) |
           rill::collect();
  CHECK(p.run(o).size() == 8);
  CHECK(a.get() >= 1024 * kib);
  CHECK(b.get() >= 1024 * kib);
}

TEST_CASE("stack: a stage's stack_size is for the fiber that runs it", "[stack][pipeline]") {
  test::run_with(2, [] {
    // map#1 asks for 512 KiB; map#2 is pinned to a fiber of its own, fused with the terminal
    // in the caller's fiber, which keeps the runtime's stack.
    smallest a, b;
    auto p = rill::from(test::iota_vec(8)) |
             rill::map(
                 [&](int v) {
                   a.see();
                   return v;
                 },
                 {.stack_size = 512 * kib}) |
             rill::map(
                 [&](int v) {
                   b.see();
                   return v;
                 },
                 {.fuse = false}) |
             rill::collect();
    CHECK(p.run().size() == 8);
    CHECK(a.get() >= 512 * kib);
    CHECK(b.get() < 512 * kib);
  });
}

TEST_CASE("stack: stages fused into one fiber get the largest stack any of them asks for",
          "[stack][pipeline]") {
  test::run_with(2, [] {
    // All of it would run in the caller's fiber, whose stack is too small for map#2: the
    // fused chain gets a fiber of its own, with map#2's stack.
    smallest a, b;
    auto p = rill::from(test::iota_vec(8)) | rill::map([&](int v) {
               a.see();
               return v;
             }) |
             rill::map(
                 [&](int v) {
                   b.see();
                   return v + (b.get() >= 768 * kib ? deep(500 * kib) * 0 : 0);
                 },
                 {.fuse = true, .stack_size = 768 * kib}) |
             rill::collect();
    CHECK(p.run().size() == 8);
    CHECK(a.get() >= 768 * kib);
    CHECK(b.get() >= 768 * kib);
  });
}

TEST_CASE("stack: par_map's workers take par_options::stack_size", "[stack][pipeline]") {
  test::run_with(2, [] {
    smallest a;
    auto p = rill::from(test::iota_vec(16)) |
             rill::par_map(
                 [&](int v) {
                   a.see();
                   return v;
                 },
                 {.workers = 2, .stack_size = 640 * kib}) |
             rill::collect();
    CHECK(p.run().size() == 16);
    CHECK(a.get() >= 640 * kib);
  });
}
