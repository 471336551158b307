// A consumer built with -fsanitize=address against the release (uninstrumented) library:
// exceptions that unwind inside fibers must leave ASan's picture of the stack clean. A throw
// calls __asan_handle_no_return, which unpoisons the current stack from the stack pointer
// up to the stack's top. Not told of the switch to a fiber's stack, ASan takes the thread's
// top, ignores a range that large (a warning), and the redzones of the unwound frames stay
// poisoned: a frame that sets no shadow of its own there (the library's, libc's) then gets
// a false stack-buffer-overflow report. check.cmake fails on any word from ASan.
#include <cstdio>
#include <cstring>
#include <ranges>
#include <rill/rill.hpp>
#include <stdexcept>

namespace {

// deep_throw() throws from `depth` frames down, each with a buffer that ASan guards with
// redzones.
[[gnu::noinline]] int deep_throw(int depth) {
  volatile char buf[256];
  buf[0] = static_cast<char>(depth);
  if (depth == 0) throw std::runtime_error("stage failed");
  return deep_throw(depth - 1) + buf[0];
}

volatile std::size_t buffer_size = 4096;

// uninstrumented_frame() stands for the frames of the library, libc or libstdc++, which set
// no shadow for their locals: the intercepted memset checks the buffer against whatever
// earlier frames left in the shadow of this part of the stack.
[[gnu::no_sanitize_address, gnu::noinline]] void uninstrumented_frame() {
  char buf[4096];
  std::memset(buf, 0, buffer_size);
  asm volatile("" : : "r"(buf) : "memory");
}

// A stage exception reaches pipeline run(), deep and then shallow throws on the same stacks.
bool stage_exceptions() {
  int caught = 0;
  for (int round = 0; round < 8; ++round) {
    const int depth = round % 2 == 0 ? 24 : 1;
    auto p = rill::from(std::views::iota(0, 1000)) | rill::map([depth](int v) {
               if (v == 0) uninstrumented_frame();
               if (v == 500) deep_throw(depth);
               return v;
             }) |
             rill::reduce(0L, std::plus<>{});
    try {
      (void)p.run();
    } catch (const std::runtime_error&) {
      ++caught;
    }
  }
  return caught == 8;
}

// deep_recv() parks `depth` frames down, each with a guarded buffer, on a channel nobody
// sends on: the deadlock unwinds every such fiber from there.
[[gnu::noinline]] int deep_recv(rill::chan<int>& c, int depth) {
  volatile char buf[256];
  buf[0] = static_cast<char>(depth);
  if (depth == 0) return c.recv().value_or(0);
  return deep_recv(c, depth - 1) + buf[0];
}

// A deadlock_error from rill::run: every fiber, main included, is unwound from its park.
// Then an exception thrown and caught inside a fiber, with such a frame below it after.
bool deadlock_then_throw() {
  int caught = 0;
  for (int round = 0; round < 2; ++round) {
    rill::options o;
    o.workers = 1;
    rill::chan<int> c;  // outlives every fiber that waits on it
    try {
      rill::run(
          [&c] {
            for (int i = 0; i < 4; ++i) rill::go([&c] { (void)deep_recv(c, 24); });
            (void)deep_recv(c, 24);
          },
          o);
    } catch (const rill::deadlock_error&) {
      ++caught;
    }
    rill::run(
        [&caught] {
          uninstrumented_frame();
          try {
            deep_throw(24);
          } catch (const std::runtime_error&) {
            ++caught;
          }
          uninstrumented_frame();
        },
        o);
  }
  return caught == 4;
}

}  // namespace

int main() {
  const bool stages = stage_exceptions();
  const bool deadlocks = deadlock_then_throw();
  std::printf("consumer (asan): stage exceptions %s, deadlocks %s\n", stages ? "ok" : "FAILED",
              deadlocks ? "ok" : "FAILED");
  return stages && deadlocks ? 0 : 1;
}
