// Death tests for stack overflow detection (research/reliability.md T20).
//
//   rill_death_tests child <frame-bytes> <depth|inf>
//       runs a fiber that recurses with frames of <frame-bytes>, touching every byte of each
//       frame and yielding every few levels, to <depth> levels or for ever. An overflow
//       must end the process with "rill: fiber N ... overflowed its N-byte stack".
//   rill_death_tests expect <guarded|canary> <frame-bytes>
//       runs the child (canary: with RILL_GUARD_BUDGET=0, so no stack has a guard page),
//       and prints "detected: <the runtime's message>" if it died of a signal after
//       reporting the overflow, else "NOT detected: ..." with what happened. Exit 0 iff
//       detected.
//   rill_death_tests expect-again <guarded|canary> <frame-bytes>
//       the same, in a child that first runs a short run whose stacks the next runtime takes
//       over (child-again).
//   rill_death_tests expect-ok <guarded|canary> <frame-bytes>
//       the child recurses through about a third of its stack (at least one frame) and must
//       exit normally, silently.
//   rill_death_tests stage-child <caller|plain>
//       runs a pipeline whose map stage, named "deep", recurses for ever: inside rill::run,
//       fused into the fiber that called run() (caller), or from a plain thread (plain).
//   rill_death_tests expect-stage <caller|plain>
//       runs that child; "detected: ..." if it died of a signal with an overflow report that
//       names the stage, else "NOT detected: ...".
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <regex>
#include <rill/pipeline.hpp>
#include <rill/rill.hpp>
#include <string>
#include <vector>

#include "fiber/compact.hpp"

namespace {

constexpr std::size_t stack_size = 128 * 1024;

volatile int g_sink;

template <std::size_t Frame>
[[gnu::noinline]] int recurse(long depth, long max_depth, int yield_every) {
  char frame[Frame];
  std::memset(frame, static_cast<int>(depth & 0x7f), Frame);  // every byte of the frame
  asm volatile("" : : "r"(frame) : "memory");
  if (depth % yield_every == 0) rill::this_fiber::yield();  // a switch out: checked there
  if (depth >= max_depth) return frame[Frame / 2];
  return recurse<Frame>(depth + 1, max_depth, yield_every) + frame[depth % Frame];
}

int run_child(std::size_t frame, long max_depth) {
  // Yield often enough that a canary-checked stack is caught within about 64 KiB past its
  // end (well inside the neighbouring stack).
  const int yield_every = frame >= 65536 ? 1 : static_cast<int>(65536 / frame / 4);
  rill::options o;
  o.workers = 2;
  o.stack_size = stack_size;
  rill::run(
      [&] {
        rill::wait_group wg;
        wg.add(1);
        rill::go([&] {
          rill::this_fiber::name("recursion");
          switch (frame) {
            case 256:
              g_sink = recurse<256>(1, max_depth, yield_every);
              break;
            case 4096:
              g_sink = recurse<4096>(1, max_depth, yield_every);
              break;
            case 65536:
              g_sink = recurse<65536>(1, max_depth, yield_every);
              break;
            default:
              std::abort();
          }
          wg.done();
        });
        wg.wait();
      },
      o);
  return 0;
}

// run_child_again(): run_child after a short run of the same options, whose pool of stacks
// the second runtime takes over (a run that carved few stacks leaves them for the next):
// the overflow must be caught on a stack that served another runtime first.
int run_child_again(std::size_t frame, long max_depth) {
  rill::options o;
  o.workers = 2;
  o.stack_size = stack_size;
  rill::run(
      [] {
        rill::wait_group wg;
        for (int i = 0; i < 8; ++i) {
          wg.add(1);
          rill::go([&wg] {
            const int r = recurse<256>(1, 16, 4);  // not g_sink: these fibers run at once
            asm volatile("" : : "r"(r));
            wg.done();
          });
        }
        wg.wait();
      },
      o);
  return run_child(frame, max_depth);
}

// The recursing fiber first parks while its stack is compacted (options::compact_parked),
// then recurses for ever: the overflow must still be caught. Exits 77 (skipped) where the
// process cannot compact.
int run_compacted_child(std::size_t frame) {
  rill::options o;
  o.workers = 2;
  o.stack_size = stack_size;
  o.compact_parked = std::chrono::hours(1);  // passes only when asked
  int code = 0;
  rill::run(
      [&] {
        rill::chan<int> start, others;
        rill::wait_group wg;
        wg.add(1);
        rill::go([&] {
          rill::this_fiber::name("recursion");
          (void)start.recv();
          const int every = frame >= 65536 ? 1 : static_cast<int>(65536 / frame / 4);
          g_sink =
              frame == 256 ? recurse<256>(1, 1L << 40, every) : recurse<4096>(1, 1L << 40, every);
          wg.done();
        });
        // Enough parked fibers after it to fill its slab: only full slabs are compacted.
        rill::wait_group parked;
        parked.add(600);
        for (int i = 0; i < 600; ++i) {
          rill::go([&] {
            parked.done();
            (void)others.recv();
          });
        }
        parked.wait();
        if (!rill::blocking([] { return rill::detail::compact_parked_now(); }) ||
            rill::runtime_stats().compacted_fibers == 0) {
          code = 77;
          others.close();
          start.close();
          return;
        }
        start.send(1);
        wg.wait();
      },
      o);
  return code;
}

int run_stage_child(bool from_plain_thread) {
  auto p = rill::from(std::vector<int>{0, 1, 2, 3}) |
           rill::map([](int v) { return v + recurse<512>(1, 1L << 40, 64); }, {.name = "deep"}) |
           rill::collect();
  if (from_plain_thread) return static_cast<int>(p.run().size());
  rill::options o;
  o.workers = 2;
  return static_cast<int>(rill::run([&] { return p.run().size(); }, o));
}

struct outcome {
  int status = 0;
  std::string err;
};

outcome spawn_child(const char* self, bool canary, const char* frame, const char* depth,
                    const char* mode = "child") {
  int fds[2];
  if (::pipe(fds) != 0) std::abort();
  const pid_t pid = ::fork();
  if (pid < 0) std::abort();
  if (pid == 0) {
    ::dup2(fds[1], 2);
    ::close(fds[0]);
    ::close(fds[1]);
    if (canary) ::setenv("RILL_GUARD_BUDGET", "0", 1);
    if (canary && depth && std::strcmp(depth, "inf") == 0) {
      // Without a guard page the overflow writes into the neighbouring stack, which a fiber
      // on another thread may have used (a reused stack's neighbour can be the main
      // fiber's): ThreadSanitizer reports that deliberate write as a race, and
      // UndefinedBehaviorSanitizer reports the other fiber's load of a value it corrupted
      // (a bool of 129). Halting on error, either ends the child before rill's check at the
      // next yield. The child is run for rill's report.
      const char* t = std::getenv("TSAN_OPTIONS");
      ::setenv("TSAN_OPTIONS", (std::string(t ? t : "") + ":report_bugs=0").c_str(), 1);
      const char* u = std::getenv("UBSAN_OPTIONS");
      ::setenv("UBSAN_OPTIONS", (std::string(u ? u : "") + ":halt_on_error=0").c_str(), 1);
    }
    if (depth) {
      ::execl(self, self, mode, frame, depth, static_cast<char*>(nullptr));
    } else {
      ::execl(self, self, mode, frame, static_cast<char*>(nullptr));
    }
    ::_exit(127);
  }
  ::close(fds[1]);
  outcome r;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) != 0;) {
    if (n > 0) r.err.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  ::waitpid(pid, &r.status, 0);
  return r;
}

std::string describe(int status) {
  if (WIFSIGNALED(status)) return std::string("killed by ") + ::strsignal(WTERMSIG(status));
  if (WIFEXITED(status)) return "exited with " + std::to_string(WEXITSTATUS(status));
  return "?";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 &&
      (std::strcmp(argv[1], "child") == 0 || std::strcmp(argv[1], "child-again") == 0)) {
    const long depth = std::strcmp(argv[3], "inf") == 0 ? (1L << 40) : std::atol(argv[3]);
    const std::size_t frame = std::strtoul(argv[2], nullptr, 10);
    return std::strcmp(argv[1], "child") == 0 ? run_child(frame, depth)
                                              : run_child_again(frame, depth);
  }
  if (argc == 3 && std::strcmp(argv[1], "compacted-child") == 0) {
    return run_compacted_child(std::strtoul(argv[2], nullptr, 10));
  }
  if (argc == 4 && std::strcmp(argv[1], "expect-compacted") == 0) {
    const bool canary = std::strcmp(argv[2], "canary") == 0;
    const outcome r = spawn_child(argv[0], canary, argv[3], nullptr, "compacted-child");
    if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 77) {
      std::printf("skipped: this process cannot compact stacks (userfaultfd)\n");
      return 77;
    }
    static const std::regex message(
        R"(rill: fiber [0-9]+( \([^)]*\))? overflowed its [0-9]+-byte stack[^\n]*)");
    std::smatch m;
    const bool said = std::regex_search(r.err, m, message);
    const bool died = WIFSIGNALED(r.status);
    std::printf("%s: %s, a fiber compacted while parked, then %s-byte frames: %s; %s\n",
                said && died ? "detected" : "NOT detected", argv[2], argv[3],
                describe(r.status).c_str(),
                said ? m.str().c_str() : ("stderr: \"" + r.err + "\"").c_str());
    return said && died ? 0 : 1;
  }
  if (argc == 3 && std::strcmp(argv[1], "stage-child") == 0) {
    return run_stage_child(std::strcmp(argv[2], "plain") == 0);
  }
  if (argc == 3 && std::strcmp(argv[1], "expect-stage") == 0) {
    const outcome r = spawn_child(argv[0], false, argv[2], nullptr, "stage-child");
    static const std::regex message(
        R"(rill: fiber [0-9]+ \([^)]*deep[^)]*\) overflowed its [0-9]+-byte stack[^\n]*)");
    std::smatch m;
    const bool said = std::regex_search(r.err, m, message);
    const bool died = WIFSIGNALED(r.status);
    std::printf("%s: a stage %s: %s; %s\n", said && died ? "detected" : "NOT detected",
                std::strcmp(argv[2], "plain") == 0 ? "run from a plain thread"
                                                   : "fused into the caller's fiber",
                describe(r.status).c_str(),
                said ? m.str().c_str() : ("stderr: \"" + r.err + "\"").c_str());
    return said && died ? 0 : 1;
  }
  if (argc == 4 && (std::strcmp(argv[1], "expect") == 0 || std::strcmp(argv[1], "expect-ok") == 0 ||
                    std::strcmp(argv[1], "expect-again") == 0)) {
    const char* child = std::strcmp(argv[1], "expect-again") == 0 ? "child-again" : "child";
    const bool canary = std::strcmp(argv[2], "canary") == 0;
    const std::size_t frame = std::strtoul(argv[3], nullptr, 10);
    if (std::strcmp(argv[1], "expect-ok") == 0) {
      // About a third of the stack (at least one frame: half of it for 64 KiB frames): must
      // not be reported.
      const std::size_t levels = stack_size / 3 / (frame + 64);
      const std::string depth = std::to_string(levels > 0 ? levels : 1);
      const outcome r = spawn_child(argv[0], canary, argv[3], depth.c_str());
      const bool ok = WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0 && r.err.empty();
      std::printf("%s: %s, %s-byte frames to depth %s: %s; stderr: \"%s\"\n",
                  ok ? "no false positive" : "FALSE POSITIVE", argv[2], argv[3], depth.c_str(),
                  describe(r.status).c_str(), r.err.c_str());
      return ok ? 0 : 1;
    }
    const outcome r = spawn_child(argv[0], canary, argv[3], "inf", child);
    static const std::regex message(
        R"(rill: fiber [0-9]+( \([^)]*\))? overflowed its [0-9]+-byte stack[^\n]*)");
    std::smatch m;
    const bool said = std::regex_search(r.err, m, message);
    const bool died = WIFSIGNALED(r.status);
    std::printf("%s: %s, %zu-byte frames%s: %s; %s\n", said && died ? "detected" : "NOT detected",
                argv[2], frame, std::strcmp(child, "child") == 0 ? "" : ", stacks of a run before",
                describe(r.status).c_str(),
                said ? m.str().c_str() : ("stderr: \"" + r.err + "\"").c_str());
    return said && died ? 0 : 1;
  }
  std::fprintf(stderr,
               "usage: %s child <frame> <depth|inf> | expect[-ok] <guarded|canary> <frame>\n",
               argv[0]);
  return 2;
}
