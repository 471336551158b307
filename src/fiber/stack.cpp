#include "fiber/stack.hpp"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <system_error>

#include "fiber/compact.hpp"
#include "fiber/sanitizers.hpp"

namespace rill::detail {
namespace {

constexpr std::size_t page_size = stack_page_size;
constexpr std::uint64_t canary_word = 0xfaceb00cdeadbeefULL;

std::atomic<std::size_t> g_guarded{0};
std::atomic<std::uint64_t> g_fail_at{0};

std::size_t read_guard_budget() {
  if (const char* s = std::getenv("RILL_GUARD_BUDGET")) return std::strtoull(s, nullptr, 10);
  return 16000;  // 32,000 VMAs: half of the default vm.max_map_count
}

bool take_guard() noexcept {
  static const std::size_t budget = read_guard_budget();
  std::size_t n = g_guarded.load(std::memory_order_relaxed);
  while (n < budget) {
    if (g_guarded.compare_exchange_weak(n, n + 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

bool injected_failure() noexcept {
  std::uint64_t n = g_fail_at.load(std::memory_order_relaxed);
  while (n != 0) {
    if (g_fail_at.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) return n == 1;
  }
  return false;
}

}  // namespace

namespace {
void fill_canary(char* zone) noexcept {
  auto* w = reinterpret_cast<std::uint64_t*>(zone);
  for (std::size_t i = 0; i < canary_bytes / sizeof(std::uint64_t); ++i) w[i] = canary_word;
}
}  // namespace

void stack::write_canary() noexcept { fill_canary(usable_top()); }

void fill_canary_zone(char* zone) noexcept { fill_canary(zone); }

bool canary_zone_intact(const char* zone) noexcept {
  auto* w = reinterpret_cast<const std::uint64_t*>(zone);
  for (std::size_t i = 0; i < canary_bytes / sizeof(std::uint64_t); ++i) {
    if (w[i] != canary_word) return false;
  }
  return true;
}

bool stack::below_intact(bool full) const noexcept {
  if (slot()->below_held.load(std::memory_order_relaxed)) [[unlikely]]
    return true;
  auto* w = reinterpret_cast<const std::uint64_t*>(base - canary_bytes);
  const std::size_t n = canary_bytes / sizeof(std::uint64_t);
  // The zone is another fiber's, cold: its lines are asked for all at once rather than
  // found missing one after the other as the loop reaches them.
  for (std::size_t i = 0; i < n; i += 64 / sizeof(std::uint64_t)) __builtin_prefetch(w + i);
  const std::size_t stride = full ? 1 : 8;  // a sample: one word per 64 bytes
  for (std::size_t i = 0; i < n; i += stride) {
    if (w[i] != canary_word) return false;
  }
  return full || w[n - 1] == canary_word;
}

std::size_t stack_pool::rounded_size(std::size_t size) noexcept {
  std::size_t n = (size + page_size - 1) / page_size * page_size;
  if (n < 4 * page_size) n = 4 * page_size;
  // An odd number of pages: stacks a power of two apart would put every fiber's hot top
  // lines in the same cache sets.
  if ((n / page_size) % 2 == 0) n += page_size;
  return n;
}

// The stash: the slab of a small pool whose runtime has ended, kept for the next pool of
// the same stack size. A program that calls rill::run (or a test that runs many small
// pipelines) would otherwise map a fresh slab each time, take a page fault on each stack it
// touches and unmap it all again, the larger part of a short run's cost on a virtual machine
// (oneTBB and Boost.Fiber keep their threads and stacks between runs too). Only a pool that
// carved few stacks is kept, so what stays mapped and resident between runs is bounded by
// stash_max_carved stacks; a bigger one is unmapped as before. One slab at a time.
namespace {

constexpr std::size_t stash_max_carved = 64;

// Its stacks are held in place, not in a vector: what the process keeps on the heap does
// not depend on whether the stash is full (the fault tests count heap blocks across runs).
struct stash {
  std::mutex mu;
  std::size_t stack_size = 0;  // 0: empty
  std::pair<char*, std::size_t> slab;
  std::size_t carved = 0;
  stack free[stash_max_carved];
};

// Constant-initialized and trivially destructible: usable from the first run to the last,
// static destruction included, and nothing to allocate (a destructor must not throw).
constinit stash g_stash;

}  // namespace

stack_pool::stack_pool(std::size_t stack_size)
    : stack_size_(rounded_size(stack_size)),
      per_slab_(stack_size_ >= (1u << 20) ? 4 : (32u << 20) / stack_size_) {
  // A test that makes the n-th mapping fail (inject_stack_failure_at) wants the mappings.
  if (g_fail_at.load(std::memory_order_relaxed) != 0) return;
  stash& st = g_stash;
  std::lock_guard lk(st.mu);
  if (st.stack_size != stack_size_) return;
  lock_guard plk(mu_);
  // As add_slab(): free_ can hold every stack of the slab (release() must not allocate).
  slabs_.reserve(1);
  free_.reserve(per_slab_);  // these two may throw: the stash keeps its slab
  slabs_.push_back(st.slab);
  free_.assign(st.free, st.free + st.carved);
  carved_ = carved_total_ = st.carved;
  st.stack_size = 0;
}

stack_pool::~stack_pool() {
  if (compacting_) compaction_remove(this);
  // live_ == 0: every stack carved is in free_.
  if (!compacting_ && live_ == 0 && slabs_.size() == 1 && carved_total_ <= stash_max_carved) {
    stash& st = g_stash;
    std::lock_guard lk(st.mu);
    if (st.stack_size == 0) {
      st.slab = slabs_.front();
      std::copy(free_.begin(), free_.end(), st.free);
      st.carved = carved_total_;
      st.stack_size = stack_size_;
      return;
    }
  }
  for (const stack& s : free_) {
    if (s.guarded) g_guarded.fetch_sub(1, std::memory_order_relaxed);
  }
  for (auto& [p, n] : slabs_) {
    // Fiber frames that never returned (a finished fiber leaves through exit_to) leave ASan
    // poison in the slab's shadow; unmapped with it, a later mapping at the same address
    // (a thread's stack and TLS) would inherit it and report false stack-buffer errors.
    san_unpoison(p, n);
    ::munmap(p, n);
  }
}

stack stack_pool::nth(std::size_t slab, std::size_t k) const noexcept {
  return stack{slabs_[slab].first + page_size + k * stack_size_, stack_size_, false};
}

void stack_pool::add_slab() {
  // [one page whose top is a canary zone][stack 0][stack 1]...: the lowest stack of a slab
  // has a canary below it too.
  const std::size_t bytes = page_size + per_slab_ * stack_size_;
  // Grow the lists before mapping, so that a failure cannot leak the mapping, and so that
  // free_ can hold every stack of every slab: release() is noexcept and must not allocate.
  slabs_.reserve(slabs_.size() + 1);
  free_.reserve((slabs_.size() + 1) * per_slab_);
  void* p = injected_failure() ? MAP_FAILED
                               : ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE,
                                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  if (compacting_) {
    try {
      slab_free_.emplace(static_cast<char*>(p), 0);
    } catch (...) {
      ::munmap(p, bytes);
      throw;
    }
  }
  slabs_.emplace_back(static_cast<char*>(p), bytes);
  carved_ = 0;
  fill_canary(static_cast<char*>(p) + page_size - canary_bytes);
}

// carve() hands out the newest slab's stacks in address order, the first time each is used,
// so that a runtime that runs a few fibers touches a few pages, not a page per stack of a
// 32 MiB slab. Each stack's canary is written before the stack above it is carved: a stack
// in use always has an intact zone below it to check.
std::size_t stack_pool::carve(stack* out, std::size_t n) {
  if (slabs_.empty() || carved_ == per_slab_) add_slab();  // may throw: nothing taken yet
  std::size_t got = 0;
  for (; got < n && carved_ < per_slab_; ++got, ++carved_) {
    stack s = nth(slabs_.size() - 1, carved_);
    s.write_canary();
    ::new (s.slot()) stack_slot;
    out[got] = s;
  }
  carved_total_ += got;
  if (compacting_ && carved_ == per_slab_) compaction_slab_full(this, slabs_.back().first);
  return got;
}

namespace {

void prepare(stack& s) noexcept {
  if (!s.guarded && take_guard()) {
    if (::mprotect(s.base, page_size, PROT_NONE) == 0) {
      s.guarded = true;
    } else {
      g_guarded.fetch_sub(1, std::memory_order_relaxed);  // out of VMAs: fall back to the canary
    }
  }
  san_unpoison(s.limit(), static_cast<std::size_t>(s.usable_top() - s.limit()));
}

}  // namespace

stack stack_pool::allocate() {
  stack s;
  allocate_many(&s, 1);
  return s;
}

std::size_t stack_pool::allocate_many(stack* out, std::size_t n) {
  std::size_t got = 0;
  {
    lock_guard lk(mu_);
    while (got < n && !free_.empty()) {
      out[got++] = free_.back();
      free_.pop_back();
      if (compacting_) count_free(out[got - 1], false);
    }
    // Fresh stacks cost a page fault and a guard each, whatever the batch: a pool carves 4
    // at first (a short run() uses a few stacks), then as many as it has carved so far,
    // up to n (a worker's cache then fills in its usual batches: handing a spawn burst
    // its stacks 4 at a time made waking 100k parked fibers 50% slower, for want of the
    // usual order of stacks in the caches).
    if (got == 0) got = carve(out, std::min(n, std::max<std::size_t>(4, carved_total_)));
    live_ += got;
  }
  for (std::size_t i = 0; i < got; ++i) prepare(out[i]);
  return got;
}

void stack_pool::release(stack s) noexcept { release_many(&s, 1); }

void stack_pool::release_many(const stack* s, std::size_t n) noexcept {
  lock_guard lk(mu_);
  for (std::size_t i = 0; i < n; ++i) {
    free_.push_back(s[i]);  // reserved: cannot throw
    if (compacting_) count_free(s[i], true);
  }
  live_ -= n;
}

void stack_pool::count_free(const stack& s, bool in) {
  auto it = slab_free_.upper_bound(s.base);
  if (it == slab_free_.begin()) return;  // cannot happen: every slab has its count
  --it;
  if (!in) {
    --it->second;
    return;
  }
  // A slab of free stacks is released only while the pool keeps two more slabs' worth
  // without it: a program that ends and starts fibers in waves reuses them instead of
  // mapping, touching and registering a slab per wave.
  if (++it->second == per_slab_ && free_.size() >= 3 * per_slab_) release_slab(it->first);
}

void stack_pool::release_slab(char* slab) {
  const std::size_t bytes = page_size + per_slab_ * stack_size_;
  san_unpoison(slab, bytes);  // as in ~stack_pool
  // The service unmaps it: it may be reading the slab's slots in a pass.
  if (!compaction_slab_release(this, slab, bytes)) return;
  char* end = slab + bytes;
  free_.erase(std::remove_if(free_.begin(), free_.end(),
                             [&](const stack& s) {
                               if (s.base < slab || s.base >= end) return false;
                               if (s.guarded) g_guarded.fetch_sub(1, std::memory_order_relaxed);
                               return true;
                             }),
              free_.end());
  slab_free_.erase(slab);
  const auto it =
      std::find_if(slabs_.begin(), slabs_.end(), [&](const auto& sl) { return sl.first == slab; });
  if (it + 1 == slabs_.end()) carved_ = per_slab_;  // the next carve maps a new slab
  slabs_.erase(it);
}

bool stack_pool::compact_parked(std::chrono::nanoseconds after, compaction_age_fn age) {
  const bool on = compaction_add(this, after, age);
  lock_guard lk(mu_);
  compacting_ = on;
  slab_free_.clear();
  if (on) {
    for (const auto& sl : slabs_) slab_free_.emplace(sl.first, 0);
    for (const stack& s : free_) ++std::prev(slab_free_.upper_bound(s.base))->second;
  }
  for (std::size_t i = 0; on && i < slabs_.size(); ++i) {
    if (i + 1 < slabs_.size() || carved_ == per_slab_) compaction_slab_full(this, slabs_[i].first);
  }
  return on;
}

std::size_t stack_pool::live() const noexcept {
  lock_guard lk(mu_);
  return live_;
}

std::size_t guarded_stacks() noexcept { return g_guarded.load(std::memory_order_relaxed); }
std::size_t guard_budget() noexcept { return read_guard_budget(); }

void inject_stack_failure_at(std::uint64_t n) noexcept {
  g_fail_at.store(n, std::memory_order_relaxed);
}

}  // namespace rill::detail
