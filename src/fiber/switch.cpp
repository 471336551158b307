#include "fiber/switch.hpp"

#include <pthread.h>

#include <cstdlib>

namespace __cxxabiv1 {
struct __cxa_eh_globals;
extern "C" __cxa_eh_globals* __cxa_get_globals() noexcept;
}  // namespace __cxxabiv1

// The switch itself. Boost.Context's jump_fcontext also saves and restores MXCSR and the
// x87 control word; stmxcsr/ldmxcsr/fnstcw/fldcw cost more than the rest of the switch
// (benchmarks/README.md, "Figures behind design choices"). rill_jump_fcontext keeps Boost's frame
// layout and skips those two words: the floating-point control state belongs to the worker thread,
// not to the fiber, as in Go (see include/rill/fiber.hpp). Frame, from the saved stack pointer up:
// 0x00 MXCSR/x87 (unused here), 0x08 r12, 0x10 r13, 0x18 r14, 0x20 r15, 0x28 rbx, 0x30 rbp, 0x38
// return address.
//
// How the jump leaves matters as much as what it saves. The call into the jump pushed a
// return-stack-buffer entry. Boost pops the return address and leaves with an indirect
// jmp, which never pops that entry: the resumed fiber's next return then mispredicts. So
// a suspended context is resumed with ret, which halved the cost of a yield between two
// fibers.
//
// A fiber that has not started has no frame (make_context() in switch.hpp): its context
// is the address of one word, just below its stack top, that holds its entry function,
// tagged with bit 0. The jump sees the tag, moves the stack pointer there, clears the word
// (the entry's return address: there is none) and enters the entry with an indirect jmp
// (a ret would always mispredict; the entry never returns past it). A spawn then writes
// no register frame, one cache line fewer, and the first switch reads none: for a fiber
// stolen by another worker, a line that no longer crosses between the cores twice.
#if defined(__x86_64__) && defined(__ELF__)
asm(R"(
  .pushsection .text
  .globl rill_jump_fcontext
  .hidden rill_jump_fcontext
  .type rill_jump_fcontext,@function
  .p2align 4
rill_jump_fcontext:
  leaq -0x38(%rsp), %rsp
  movq %r12, 0x08(%rsp)
  movq %r13, 0x10(%rsp)
  movq %r14, 0x18(%rsp)
  movq %r15, 0x20(%rsp)
  movq %rbx, 0x28(%rsp)
  movq %rbp, 0x30(%rsp)
  movq %rsp, %rax
  testq $1, %rdi
  jnz 1f
  movq %rdi, %rsp
  movq 0x08(%rsp), %r12
  movq 0x10(%rsp), %r13
  movq 0x18(%rsp), %r14
  movq 0x20(%rsp), %r15
  movq 0x28(%rsp), %rbx
  movq 0x30(%rsp), %rbp
  movq %rsi, %rdx
  movq %rax, %rdi
  leaq 0x38(%rsp), %rsp
  ret
1:
  leaq -1(%rdi), %rsp
  movq %rax, %rdi
  movq (%rsp), %r8
  movq $0, (%rsp)
  xorl %ebp, %ebp
  jmp *%r8
  .size rill_jump_fcontext, .-rill_jump_fcontext
  .popsection
)");
#endif

namespace rill::detail {

namespace {
// __cxa_get_globals() is declared `const`, so a compiler may keep its result across a
// switch: thread_eh() is opaque and launders the pointer. The address is cached per thread
// (libstdc++ reaches it through __tls_get_addr, ~30 instructions, twice per round trip of a
// channel ping-pong): it is asked only by exit_to(), before it switches, and once per worker
// thread when the worker starts (worker::eh, which every switch_to() of that worker uses):
// the thread asked is always the thread that runs.
[[gnu::tls_model("initial-exec")]] thread_local eh_state* tls_eh = nullptr;
}  // namespace

eh_state* thread_eh() noexcept {
  eh_state* p = tls_eh;
  if (!p) [[unlikely]] {
    p = reinterpret_cast<eh_state*>(__cxxabiv1::__cxa_get_globals());
    tls_eh = p;
  }
  asm volatile("" : "+r"(p)::"memory");
  return p;
}

// Not ASan-instrumented: with detect_stack_use_after_return, `msg` would live in this
// fiber's fake stack, which san_before_switch(..., true) frees before the landing side reads
// the message (clang 14: a SEGV in land()). On the real stack it stays valid until the
// landing side has run (the stack is recycled by the after-switch action, after the read).
[[gnu::no_sanitize_address]] void exit_to(machine_context& from, machine_context& to,
                                          after_switch_fn after, void* arg) noexcept {
  eh_state* g = thread_eh();
  *g = to.eh;
  switch_msg msg{&from, &to, after, arg, true};
  bctx::fcontext_t target = to.fctx;
  san_before_switch(from.san, to.san, true);
#if RILL_ASAN_WEAK
  if (asan_linked()) [[unlikely]]
    asan_start_switch(nullptr, to);
#endif
  jump(target, &msg);
  std::abort();  // unreachable: a finished context is never resumed
}

void on_landing(bctx::transfer_t t) noexcept { land(t); }

// A thread asks the system once: on the main thread pthread_getattr_np reads
// /proc/self/maps, an fd and a file read each time the thread enters a run. Called on the
// thread's own stack, never from a fiber, so the thread_local is the thread's.
void thread_stack(const void** bottom, std::size_t* size) noexcept {
  struct bounds {
    bool known = false;
    void* addr = nullptr;
    std::size_t n = 0;
  };
  thread_local bounds b;
  if (!b.known) {
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
      pthread_attr_getstack(&attr, &b.addr, &b.n);
      pthread_attr_destroy(&attr);
      b.known = true;
    }
  }
  *bottom = b.addr;
  *size = b.n;
}

void san_thread_context(san_ctx& c) noexcept {
#if RILL_ASAN
  // Only ASan needs the bounds; pthread_getattr_np reads /proc/self/maps on the main thread.
  thread_stack(&c.stack_bottom, &c.stack_size);
#endif
#if RILL_TSAN
  c.tsan = __tsan_get_current_fiber();
#endif
}

}  // namespace rill::detail
