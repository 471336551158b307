// Stack-overflow reporting. A guarded stack's overflow faults on its guard page: the SIGSEGV
// handler (on the worker's alternate signal stack, since the fiber's own is spent) names the
// fiber and aborts. A stack without a guard page is checked at each switch and at the
// fiber's exit (its canary zone).
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "sched/runtime.hpp"
#include "sched/runtime_parts.hpp"

namespace rill::detail {

namespace {

// The report is assembled here and written with one write(2), so that another thread's output
// (a sanitizer's report on memory the overflow corrupted, say) cannot split it. Static, not on
// a stack: the reporting stack may be the one that overflowed. Only the first reporter writes
// it (g_reporting_overflow).
struct report_buffer {
  char text[1024];
  std::size_t used = 0;

  void add(const char* s) noexcept {
    for (; *s && used < sizeof text; ++s) text[used++] = *s;
  }
  void add(std::uint64_t v) noexcept {
    char digits[24];
    int i = 0;
    do {
      digits[i++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v);
    while (i > 0 && used < sizeof text) text[used++] = digits[--i];
  }
  void write() const noexcept {
    ssize_t r = ::write(2, text, used);
    (void)r;
  }
};
report_buffer g_report;

// Set by the first overflow report. An overflow of a checked stack may have corrupted a
// neighbouring stack before it was caught; another worker running that neighbour can crash
// while the report is being written. Its SIGSEGV handler then waits for the report's abort
// instead of killing the process with half a message.
std::atomic<bool> g_reporting_overflow{false};

}  // namespace

void report_overflow(const fiber* f) noexcept {
  if (g_reporting_overflow.exchange(true)) {
    for (;;) ::pause();  // another thread reports (and aborts)
  }
  report_buffer& out = g_report;
  out.add("rill: fiber ");
  out.add(f->id);
  if (f->name[0]) {
    out.add(" (");
    out.add(f->name);
    out.add(")");
  }
  out.add(" overflowed its ");
  out.add(std::uint64_t{f->stk.size});
  out.add("-byte stack");
  out.add(f->stk.guarded ? " (hit the guard page)" : " (canary destroyed)");
  out.add(
      "; a bigger stack: rill::options::stack_size, or for a pipeline "
      "run_options::stack_size or the stage's stage_options::stack_size\n");
  out.write();
  std::abort();
}

void check_stack_slow(fiber* self) noexcept {
  char* sp = static_cast<char*>(__builtin_frame_address(0));
  if (sp < self->stk.limit() || !self->stk.below_intact(false)) report_overflow(self);
}

namespace {

struct sigaction g_prev_segv;

void on_segv(int sig, siginfo_t* si, void* uc) {
  worker* w = current_worker();
  if (w && w->running()) {
    const fiber* f = w->running();
    auto* a = static_cast<char*>(si->si_addr);
    if (a >= f->stk.base - 65536 && a < f->stk.limit()) report_overflow(f);
  }
  if (g_reporting_overflow.load()) {
    for (;;) ::pause();  // see g_reporting_overflow
  }
  if (g_prev_segv.sa_flags & SA_SIGINFO) {
    g_prev_segv.sa_sigaction(sig, si, uc);
  } else if (g_prev_segv.sa_handler != SIG_DFL && g_prev_segv.sa_handler != SIG_IGN) {
    g_prev_segv.sa_handler(sig);
  } else {
    ::signal(SIGSEGV, SIG_DFL);  // returning re-executes the fault and the default kills
  }
}

}  // namespace

void install_segv_handler() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction sa;
    std::memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGSEGV, &sa, &g_prev_segv);
  });
}

namespace {

constexpr std::size_t altstack_size = 64 * 1024;

// A thread maps its alternate signal stack once and keeps it until it exits: a worker
// thread is lent to one run after another (entry.cpp), and the thread that calls rill::run
// may call it again, so mapping and unmapping it for each run (an munmap is a TLB shootdown)
// was a good part of a short run's cost. It is installed only while the thread is a worker.
struct altstack_mapping {
  void* p = nullptr;
  ~altstack_mapping() {
    if (p) ::munmap(p, altstack_size);
  }
};
thread_local altstack_mapping t_altstack;
// The thread's own alternate signal stack, if it had one, put back when it stops being a
// worker (the thread that calls rill::run is the user's). Valid while worker::altstack is set.
thread_local stack_t t_prev_altstack{};

}  // namespace

void install_altstack(worker& w) noexcept {
  if (!t_altstack.p) {
    void* p =
        ::mmap(nullptr, altstack_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) return;
    t_altstack.p = p;
  }
  stack_t ss{};
  ss.ss_sp = t_altstack.p;
  ss.ss_size = altstack_size;
  if (::sigaltstack(&ss, &t_prev_altstack) != 0) return;
  w.altstack = t_altstack.p;
}

void remove_altstack(worker& w) noexcept {
  if (w.altstack) {
    stack_t ss{};
    ss.ss_flags = SS_DISABLE;
    if (!(t_prev_altstack.ss_flags & SS_DISABLE)) {
      ss = t_prev_altstack;
      ss.ss_flags = 0;
    }
    ::sigaltstack(&ss, nullptr);
    w.altstack = nullptr;
  }
}

}  // namespace rill::detail
