#include "fiber/context.hpp"

#include <pthread.h>

#include <cstdlib>

namespace __cxxabiv1 {
struct __cxa_eh_globals;
extern "C" __cxa_eh_globals* __cxa_get_globals() noexcept;
}  // namespace __cxxabiv1

namespace rill::detail {

namespace {

// The calling thread's exception state. __cxa_get_globals() is declared `const`, so a
// compiler may keep its result across a switch; this accessor is opaque and launders the
// pointer. The address is cached per thread (libstdc++ reaches it through __tls_get_addr,
// ~30 instructions, twice per round trip of a channel ping-pong): only switch_to() and
// exit_to() call this, before they switch, so the thread asked is the thread that runs.
[[gnu::tls_model("initial-exec")]] thread_local eh_state* tls_eh = nullptr;

[[gnu::noinline]] eh_state* thread_eh() noexcept {
  eh_state* p = tls_eh;
  if (!p) [[unlikely]] {
    p = reinterpret_cast<eh_state*>(__cxxabiv1::__cxa_get_globals());
    tls_eh = p;
  }
  asm volatile("" : "+r"(p)::"memory");
  return p;
}

void land(bctx::transfer_t t) noexcept {
  auto* m = static_cast<switch_msg*>(t.data);
  context* from = m->from;
  after_switch_fn after = m->after;
  void* arg = m->arg;
  san_after_switch(m->to->san);
  from->fctx = t.fctx;
  if (after) after(from, arg);
}

}  // namespace

void switch_to(context& from, context& to, after_switch_fn after, void* arg) noexcept {
  eh_state* g = thread_eh();
  from.eh = *g;
  *g = to.eh;
  switch_msg msg{&from, &to, after, arg, false};
  bctx::fcontext_t target = to.fctx;
  san_before_switch(from.san, to.san, false);
  bctx::transfer_t t = bctx::jump_fcontext(target, &msg);
  land(t);
}

// Not ASan-instrumented: with detect_stack_use_after_return, `msg` would live in this
// fiber's fake stack, which san_before_switch(..., true) frees before the landing side reads
// the message (clang 14: a SEGV in land()). On the real stack it stays valid until the
// landing side has run (the stack is recycled by the after-switch action, after the read).
[[gnu::no_sanitize_address]] void exit_to(context& from, context& to, after_switch_fn after,
                                          void* arg) noexcept {
  eh_state* g = thread_eh();
  *g = to.eh;
  switch_msg msg{&from, &to, after, arg, true};
  bctx::fcontext_t target = to.fctx;
  san_before_switch(from.san, to.san, true);
  bctx::jump_fcontext(target, &msg);
  std::abort();  // unreachable: a finished context is never resumed
}

void on_landing(bctx::transfer_t t) noexcept { land(t); }

void san_thread_context(san_ctx& c) noexcept {
  pthread_attr_t attr;
  void* addr = nullptr;
  std::size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &addr, &size);
    pthread_attr_destroy(&attr);
  }
  c.stack_bottom = addr;
  c.stack_size = size;
#if RILL_TSAN
  c.tsan = __tsan_get_current_fiber();
#endif
}

}  // namespace rill::detail
