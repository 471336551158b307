// Fiber stacks: reserved virtual memory committed lazily by the kernel, carved from slabs,
// pooled and reused, with overflow detection.
//
// Overflow detection is tiered (research/reliability.md section 6):
//   guarded  the lowest page of the stack is PROT_NONE. A fault there is caught by the
//            runtime's SIGSEGV handler (on an alternate signal stack), which names the fiber
//            and aborts. Each guard splits a VMA, so guards are rationed: at most
//            `guard_budget` stacks of the process are guarded at once (the default
//            vm.max_map_count of 65530 allows ~32k).
//   checked  past the budget, a stack gets a canary zone at its low end instead; the
//            runtime checks it at every switch out of the fiber and at fiber exit, and
//            aborts with a message naming the fiber when it is damaged. Never a silently
//            unguarded stack.
#pragma once

#include <cstddef>
#include <cstdint>
#include <mutex>
#include <vector>

namespace rill::detail {

struct stack {
  char* base = nullptr;   // lowest address of the mapping (the guard page, when guarded)
  std::size_t size = 0;   // whole mapping, guard included
  bool guarded = false;

  char* limit() const noexcept;        // lowest usable byte
  char* top() const noexcept { return base + size; }
  void write_canary() noexcept;
  bool canary_intact() const noexcept;
};

inline constexpr std::size_t canary_bytes = 64;

// stack_pool hands out stacks of one size. Thread safety: allocate/release may be called
// from any thread (a mutex guards the free list and the slab list).
class stack_pool {
 public:
  explicit stack_pool(std::size_t stack_size);
  ~stack_pool();  // unmaps every slab; stacks still in use must not be touched afterwards
  stack_pool(const stack_pool&) = delete;
  stack_pool& operator=(const stack_pool&) = delete;

  // allocate() returns a stack, reusing a pooled one when it can. Throws std::bad_alloc
  // (or std::system_error) when the address space cannot be reserved.
  stack allocate();
  // release() returns s to the pool.
  void release(stack s) noexcept;

  std::size_t stack_size() const noexcept { return stack_size_; }
  std::size_t live() const noexcept;  // stacks handed out and not yet released

 private:
  void add_slab();  // requires mu_

  std::size_t stack_size_;
  std::size_t per_slab_;
  mutable std::mutex mu_;
  std::vector<stack> free_;                        // guarded by mu_
  std::vector<std::pair<char*, std::size_t>> slabs_;  // guarded by mu_
  std::size_t live_ = 0;                           // guarded by mu_
};

// Process-wide count of guarded stacks, and the cap (RILL_GUARD_BUDGET overrides it).
std::size_t guarded_stacks() noexcept;
std::size_t guard_budget() noexcept;

// Test hook: the n-th stack mapping attempt from now fails as if mmap had (0: never).
void inject_stack_failure_at(std::uint64_t n) noexcept;

}  // namespace rill::detail
