// The only place that knows about sanitizers (research/reliability.md section 3).
#pragma once

#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#define RILL_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RILL_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__)
#define RILL_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RILL_TSAN 1
#endif
#endif

#if RILL_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if RILL_TSAN
#include <sanitizer/tsan_interface.h>
#endif

namespace rill::detail {

// san_ctx: what the sanitizers need to know about one execution context (a fiber, or a
// worker thread's own stack).
// Empty without a sanitizer, so that a fiber's record takes one cache line less.
struct san_ctx {
#if RILL_ASAN
  const void* stack_bottom = nullptr;  // lowest address of this context's stack
  std::size_t stack_size = 0;
  void* asan_fake = nullptr;  // ASan fake stack saved when this context switched away
#endif
#if RILL_TSAN
  void* tsan = nullptr;  // TSan fiber handle (the thread's own for worker contexts)
#endif
};

inline void san_unpoison(void* p, std::size_t n) noexcept {
#if RILL_ASAN
  __asan_unpoison_memory_region(p, n);
#endif
  (void)p;
  (void)n;
}

// san_before_switch runs on the old stack immediately before the jump. `finishing`: the
// current context has ended and will never be resumed.
inline void san_before_switch(san_ctx& from, const san_ctx& to, bool finishing) noexcept {
#if RILL_ASAN
  __sanitizer_start_switch_fiber(finishing ? nullptr : &from.asan_fake, to.stack_bottom,
                                 to.stack_size);
#endif
#if RILL_TSAN
  __tsan_switch_to_fiber(to.tsan, 0);
#endif
  (void)from;
  (void)to;
  (void)finishing;
}

// san_after_switch runs on the new stack, first thing after the jump lands.
inline void san_after_switch(san_ctx& self) noexcept {
#if RILL_ASAN
  __sanitizer_finish_switch_fiber(self.asan_fake, nullptr, nullptr);
#endif
  (void)self;
}

inline void san_fiber_created([[maybe_unused]] san_ctx& c, [[maybe_unused]] void* bottom,
                              [[maybe_unused]] std::size_t size) noexcept {
#if RILL_ASAN
  c.stack_bottom = bottom;
  c.stack_size = size;
  c.asan_fake = nullptr;
#endif
#if RILL_TSAN
  c.tsan = __tsan_create_fiber(0);
#endif
}

inline void san_fiber_destroyed(san_ctx& c) noexcept {
#if RILL_TSAN
  if (c.tsan) __tsan_destroy_fiber(c.tsan);
  c.tsan = nullptr;
#endif
  (void)c;
}

// san_thread_context fills c for the calling thread's own stack.
void san_thread_context(san_ctx& c) noexcept;

}  // namespace rill::detail
