// The one context switch. Every switch goes through switch_to(), which
//   - saves/restores the per-thread C++ exception state (__cxa_eh_globals), so `throw;`
//     in a catch block that spans a suspension rethrows the right exception;
//   - annotates ASan and TSan (in a release build, the ASan of a sanitized program that
//     links it: sanitizers.hpp);
//   - hands the landing side a message: the context that was left (whose fcontext must be
//     saved before anybody may resume it) and an action to run once it is saved (e.g.
//     "unlock the channel that now lists this fiber as a waiter").
#pragma once

#include <boost/context/detail/fcontext.hpp>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "fiber/sanitizers.hpp"

namespace rill::detail {

namespace bctx = boost::context::detail;

struct eh_state {  // layout of libstdc++'s __cxa_eh_globals on x86-64
  void* caught = nullptr;
  unsigned int uncaught = 0;
};

struct machine_context;
using after_switch_fn = void (*)(machine_context* left, void* arg) noexcept;

// machine_context: what a suspended fiber or scheduler loop needs to resume: its saved stack
// pointer (the registers are on its stack) and exception state. Not rill::context (Go's
// cancellation context, include/rill/context.hpp): this one is the machine's.
struct machine_context {
  bctx::fcontext_t fctx = nullptr;  // valid only while this context is suspended
  eh_state eh;
  [[no_unique_address]] san_ctx san;
};

struct switch_msg {
  machine_context* from;
  machine_context* to;
  after_switch_fn after;
  void* arg;
  bool finishing;
};

// The raw jump (switch.cpp): Boost.Context's frame layout, without the floating-point
// control words (see there). Always inline: a real call frame around the jump would be
// entered on one fiber and left on another, and TSan (which instruments function entry and
// exit, and has already been told about the switch) would crash on it.
#if defined(__x86_64__) && defined(__ELF__)
// Declared as Boost declares jump_fcontext, without noexcept: declared noexcept, clang 14's
// TSan build crashed in __tsan_func_entry after a few dozen fiber exits (its instrumentation
// differs for calls that cannot throw; the cause was not pinned down).
extern "C" bctx::transfer_t rill_jump_fcontext(bctx::fcontext_t to, void* data);
[[gnu::always_inline]] inline bctx::transfer_t jump(bctx::fcontext_t to, void* data) noexcept {
  return rill_jump_fcontext(to, data);
}
#else
[[gnu::always_inline]] inline bctx::transfer_t jump(bctx::fcontext_t to, void* data) noexcept {
  return bctx::jump_fcontext(to, data);
}
#endif

// make_context() makes the context of a fiber that has not started: switched to, it runs
// entry(transfer) on the stack below `sp` (16-byte aligned; `size` bytes usable below it).
// On x86-64 ELF it writes one word, the entry, just below sp, and returns that word's
// address tagged with bit 0 (the jump in switch.cpp starts such a context without a
// register frame); elsewhere it is Boost's make_fcontext.
inline bctx::fcontext_t make_context(char* sp, std::size_t size,
                                     void (*entry)(bctx::transfer_t)) noexcept {
#if defined(__x86_64__) && defined(__ELF__)
  (void)size;
  char* word = sp - sizeof entry;
  std::memcpy(word, &entry, sizeof entry);
  return reinterpret_cast<bctx::fcontext_t>(reinterpret_cast<std::uintptr_t>(word) | 1);
#else
  return bctx::make_fcontext(sp, size, entry);
#endif
}

// thread_eh(): the calling thread's C++ exception state (switch.cpp). Out of line, like
// current_worker() (see sched/runtime.hpp), so it is recomputed after every switch.
[[gnu::noinline]] eh_state* thread_eh() noexcept;

// land() runs first on the landing side of every switch. `asan_fake`: where the landing
// context's departure saved its fake stack (asan_start_switch; nullptr: a new fiber).
inline void land(bctx::transfer_t t, [[maybe_unused]] void* const* asan_fake = nullptr) noexcept {
  auto* m = static_cast<switch_msg*>(t.data);
  machine_context* from = m->from;
  after_switch_fn after = m->after;
  void* arg = m->arg;
  san_after_switch(m->to->san);
#if RILL_ASAN_WEAK
  asan_finish_switch(asan_fake);
#endif
  from->fctx = t.fctx;
  if (after) after(from, arg);
}

// switch_to() suspends `from` and resumes `to` on the calling thread. `after(from, arg)`
// runs on the landing side once from's context is saved. Returns when `from` is resumed
// (possibly on another thread). Inline: it is on the path of every park and yield.
// `g` is the calling thread's exception state (thread_eh(), or a copy the caller keeps per
// thread: a worker's `eh`).
inline void switch_to(machine_context& from, machine_context& to, eh_state* g,
                      after_switch_fn after = nullptr, void* arg = nullptr) noexcept {
  // The thread's state is written only when it differs (outside a catch block both are
  // empty): every store still in flight delays the next locked instruction (a channel's
  // lock), which waits for the store buffer to drain. (Testing `from` too before writing
  // it made a yield slower.)
  const eh_state cur = *g;
  from.eh = cur;
  if (to.eh.caught != cur.caught || to.eh.uncaught != cur.uncaught) [[unlikely]]
    *g = to.eh;
  switch_msg msg{&from, &to, after, arg, false};
  bctx::fcontext_t target = to.fctx;
  san_before_switch(from.san, to.san, false);
#if RILL_ASAN_WEAK
  // Written and read only when the program links ASan: no store on the release path.
  void* fake;
  if (asan_linked()) [[unlikely]]
    asan_start_switch(&fake, to);
  land(jump(target, &msg), &fake);
#else
  land(jump(target, &msg));
#endif
}

// exit_to() leaves `from` for good (a finished fiber); never returns.
[[noreturn]] void exit_to(machine_context& from, machine_context& to, after_switch_fn after,
                          void* arg) noexcept;

// on_landing() must be the first call of a new fiber's entry function.
void on_landing(bctx::transfer_t t) noexcept;

}  // namespace rill::detail
