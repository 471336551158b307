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

// A library built without sanitizers (the installed release build) may still run in a
// program built with -fsanitize=address. That ASan must hear of every switch too: a throw
// calls __asan_handle_no_return, which unpoisons the stack from the stack pointer up to the
// top of the stack ASan believes it runs on; told nothing, it takes the thread's own stack
// for a fiber's, ignores a range that large ("ASan is ignoring requested
// __asan_handle_no_return"), and the redzones of the unwound frames stay poisoned: false
// stack-buffer-overflow reports follow on that stack. So the library refers weakly to
// ASan's interface: the addresses are null unless the program links ASan, and each
// annotation costs the release build one well-predicted branch on such an address. ASan
// only: TSan would also need a handle per fiber (a larger fiber record), and a TSan program
// would see none of the synchronization inside an uninstrumented library anyway.
#if !RILL_ASAN && !RILL_TSAN && defined(__ELF__)
#define RILL_ASAN_WEAK 1
extern "C" {
[[gnu::weak]] void __sanitizer_start_switch_fiber(void** fake_stack_save, const void* bottom,
                                                  std::size_t size);
[[gnu::weak]] void __sanitizer_finish_switch_fiber(void* fake_stack_save, const void** bottom_old,
                                                   std::size_t* size_old);
[[gnu::weak]] void __asan_unpoison_memory_region(void const volatile* addr, std::size_t size);
}
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

#if RILL_ASAN_WEAK
// asan_linked(): the program links ASan (which defines both switch functions).
inline bool asan_linked() noexcept { return __sanitizer_start_switch_fiber != nullptr; }
#endif

// san_acquire(addr): for TSan, the caller acquires what was released at addr (an atomic
// store-release there), as if it had loaded it with acquire: for a load TSan does not see.
inline void san_acquire([[maybe_unused]] void* addr) noexcept {
#if RILL_TSAN
  __tsan_acquire(addr);
#endif
}

inline void san_unpoison(void* p, std::size_t n) noexcept {
#if RILL_ASAN
  __asan_unpoison_memory_region(p, n);
#elif RILL_ASAN_WEAK
  if (__asan_unpoison_memory_region != nullptr) [[unlikely]]
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

// thread_stack() gives the lowest address and the size of the calling thread's own stack
// (nullptr and 0 when the system does not say).
void thread_stack(const void** bottom, std::size_t* size) noexcept;

#if RILL_ASAN_WEAK
struct machine_context;
// asan_start_switch() tells the program's ASan, if asan_linked(), that the calling thread
// leaves its context for `to`, which is this worker's g0 or a fiber (sched/fiber_life.cpp,
// which knows them, says where their stacks are). `fake` receives the fake stack of the
// context left (nullptr: it has ended; ASan frees its fake stack). The landing side calls
// asan_finish_switch() with what its own departure saved (nullptr: a new fiber).
[[gnu::cold]] void asan_start_switch(void** fake, const machine_context& to) noexcept;
inline void asan_finish_switch(void* const* fake) noexcept {
  if (asan_linked()) [[unlikely]]
    __sanitizer_finish_switch_fiber(fake ? *fake : nullptr, nullptr, nullptr);
}
#endif

}  // namespace rill::detail
