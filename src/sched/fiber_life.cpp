// Fiber lifecycle: a fiber's stack and record (create_fiber), the live-fiber count and the
// workers' credit (count_spawn), the registry (a stack slot's owner), the fiber entry and
// exit (fiber_main), and the landing side of a finished fiber (reap).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "sched/runtime.hpp"
#include "sched/runtime_parts.hpp"

namespace rill::detail {

namespace {

constexpr std::int64_t fiber_credit_batch = 64;  // see count_spawn
constexpr std::uint64_t id_block = 64;           // fiber ids a worker takes at a time

// count_move: while it lives, worker w moves a count from one total snapshot() reads to
// another (a stack from a fiber to the cache, credit back to live_fibers_, ...). Each total
// is written in an order that can only make a snapshot taken in the middle count too few,
// and snapshot() takes its values again when a move overlapped them, so that a runtime at
// rest (a run just returned, its workers putting away what they hold) reads exactly.
// Only w's own thread writes w->moves (as its credit), so a load and a store do: no
// read-modify-write.
class count_move {
 public:
  explicit count_move(worker* w) noexcept : w_(w) {
    if (!w_) return;
    w_->moves.store(w_->moves.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);  // odd: before the writes
  }
  ~count_move() {
    if (!w_) return;
    w_->moves.store(w_->moves.load(std::memory_order_relaxed) + 1,
                    std::memory_order_release);  // even: after them
  }
  count_move(const count_move&) = delete;
  count_move& operator=(const count_move&) = delete;

 private:
  worker* w_;
};

void after_reap(machine_context* left, void*) noexcept {
  auto* f = static_cast<fiber*>(left);
  f->rt->reap(f);
}

}  // namespace

#if RILL_ASAN_WEAK
void asan_start_switch(void** fake, const machine_context& to) noexcept {
  if (fake) *fake = nullptr;           // left so if ASan does not know this thread
  const worker* w = current_worker();  // the thread that switches: `to` may be its g0
  if (&to == &w->g0) {
    __sanitizer_start_switch_fiber(fake, w->g0_bottom, w->g0_size);
  } else {
    const stack& s = static_cast<const fiber&>(to).stk;  // every other context is a fiber's
    __sanitizer_start_switch_fiber(fake, s.limit(),
                                   static_cast<std::size_t>(s.usable_top() - s.limit()));
  }
}
#endif

void fiber_main(bctx::transfer_t t) noexcept {
  on_landing(t);
  fiber* self = current_fiber();
  try {
    self->entry(self->closure);
  } catch (const fiber_aborted&) {
    // the runtime aborted this fiber after a deadlock; run() reports it
  } catch (...) {
    if (self->is_main) {
      self->rt->main_exception_ = std::current_exception();
    } else {
      std::string what = "unknown exception";
      try {
        throw;
      } catch (const std::exception& e) {
        what = e.what();
      } catch (...) {
      }
      std::fprintf(stderr, "rill: exception escaped fiber %llu%s%s%s: %s\n",
                   static_cast<unsigned long long>(self->id), self->name[0] ? " (" : "", self->name,
                   self->name[0] ? ")" : "", what.c_str());
      std::terminate();
    }
  }
  if (self->closure_on_heap) ::operator delete(self->closure);
  if (!self->stk.guarded && !self->stk.below_intact(true)) report_overflow(self);
  runtime* rt = self->rt;
  worker* w = current_worker();
  RILL_ASSERT_FIBER_STATE(self, running);
  self->state.store(fiber_state::done, std::memory_order_relaxed);
  rt->remove_from_registry(self);
  probe_switch_stack();
  switch_to_next(*w, rt->next_local(*w),
                 [&](machine_context& to) { exit_to(*self, to, after_reap, nullptr); });
}

stack_pool& runtime::pool_for(std::size_t size) {
  const std::size_t rounded = stack_pool::rounded_size(size);
  if (size <= stacks_.stack_size() || rounded == stacks_.stack_size()) return stacks_;
  lock_guard lk(pools_mu_);
  for (auto& p : more_stacks_) {
    if (p->stack_size() == rounded) return *p;
  }
  more_stacks_.reserve(more_stacks_.size() + 1);  // push_back cannot throw after make_unique
  more_stacks_.push_back(std::make_unique<stack_pool>(size));
  if (cfg_.compact_parked_ms > 0) {
    more_stacks_.back()->compact_parked(std::chrono::milliseconds(cfg_.compact_parked_ms),
                                        fiber_parked_long);
  }
  return *more_stacks_.back();
}

// The stack compaction's look at a stack's owner, from its service thread (fiber/compact.cpp):
// the record may be a finished fiber's or a newer one's on the same stack, whatever it reads
// is safe (a stack's memory outlives its pool's users) and a wrong guess costs only a restore.
// Not instrumented for TSan: it reads the saved context of a fiber that may be resuming (the
// pages then move under it atomically, and come back at its first access: a restore's cost).
__attribute__((no_sanitize("thread"))) bool fiber_parked_long(void* owner, bool age, char** sp,
                                                              const void** key) noexcept {
  auto* f = static_cast<fiber*>(owner);
  fiber_state st = f->state.load(std::memory_order_relaxed);
  if (st == fiber_state::parked && age) {
    f->state.compare_exchange_strong(st, fiber_state::parked_long, std::memory_order_relaxed);
    return false;
  }
  if (!is_parked(st)) return false;
  // Null until the switch that parked it has landed (set_parked(), switch.hpp: land()).
  *sp = static_cast<char*>(f->fctx);
  if (!*sp) return false;
  *key = f->wait_object.load(std::memory_order_relaxed);
  return true;
}

stack_pool& runtime::pool_of(const stack& s) noexcept {
  if (s.size == stacks_.stack_size()) return stacks_;
  lock_guard lk(pools_mu_);
  for (auto& p : more_stacks_) {
    if (p->stack_size() == s.size) return *p;
  }
  std::abort();  // a stack of no pool of this runtime: corruption
}

void runtime::release_stack(const stack& s) noexcept { pool_of(s).release(s); }

fiber* runtime::create_fiber(worker* w, std::size_t size, std::size_t align, void (*entry)(void*),
                             std::size_t stack_size) {
  stack s;
  stack_pool& pool = stack_size == 0 ? stacks_ : pool_for(stack_size);
  if (&pool != &stacks_) {
    s = pool.allocate();  // no cache: such fibers are few (a pipeline's stages)
  } else if (w) {
    // Refill half the cache under one pool lock (a spawn burst would otherwise take the
    // pool's mutex once per fiber): stacks move from a pool to the cache (count_move).
    const bool refill = w->stack_cache.empty();
    const count_move move(refill ? w : nullptr);
    if (refill) {
      stack batch[stack_cache_max / 2];
      const std::size_t n = stacks_.allocate_many(batch, stack_cache_max / 2);
      for (std::size_t i = 0; i < n; ++i) w->stack_cache.push_back(batch[i]);  // reserved
    }
    s = w->stack_cache.back();
    w->stack_cache.pop_back();
    w->cached.store(w->stack_cache.size(), std::memory_order_release);
    san_unpoison(s.limit(), static_cast<std::size_t>(s.usable_top() - s.limit()));
  } else {
    s = stacks_.allocate();
  }
  auto align_down = [](char* p, std::size_t a) {
    return reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(p) & ~(a - 1));
  };
  // The record ends where the stack's registry slot begins (a coloured place: see
  // stack::slot()).
  char* rec = align_down(s.record_top() - sizeof(fiber), alignof(fiber));
  auto* f = ::new (rec) fiber;  // default-init: only the members with initializers
  f->name[0] = 0;
  f->rt = this;
  f->stk = s;
  f->entry = entry;
  if (w) {  // ids in blocks per worker: no shared counter per spawn
    if (w->id_next == w->id_end) {
      w->id_next = next_id_.fetch_add(id_block, std::memory_order_relaxed);
      w->id_end = w->id_next + id_block;
    }
    f->id = w->id_next++;
  } else {
    f->id = next_id_.fetch_add(1, std::memory_order_relaxed);
  }
  const std::size_t a = std::max<std::size_t>(align, 16);
  char* sp;
  if (size > s.size / 4 || a > 4096) {
    try {
      f->closure = ::operator new(size, std::align_val_t(a));
    } catch (...) {
      f->~fiber();
      pool.release(s);
      throw;
    }
    f->closure_on_heap = true;
    sp = align_down(rec, 16);
  } else {
    char* cl = align_down(rec - size, a);
    f->closure = cl;
    sp = align_down(cl, 16);  // the first frame shares the closure's line
  }
  const std::size_t usable = static_cast<std::size_t>(sp - s.limit());
  f->fctx = make_context(sp, usable, &fiber_main);
  san_fiber_created(f->san, s.limit(), static_cast<std::size_t>(s.usable_top() - s.limit()));
  add_to_registry(f);
  count_spawn(w);
  return f;
}

// Fiber accounting. live_fibers_ counts the live fibers plus the credit the workers hold:
// a worker takes credit for fiber_credit_batch spawns at a time, and keeps what its
// finishing fibers give back (up to twice that), so spawning and finishing do not each
// write one counter shared by every worker (spawn+join with 2 workers spent a tenth of its
// time on that line). A worker gives all its credit back whenever it runs out of work
// (find_runnable), so the count falls to zero once every fiber has finished and every
// worker has looked for work since: run() ends then.
void runtime::count_spawn(worker* w) noexcept {
  if (!w || w->rt != this) {
    live_fibers_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const std::int64_t c = w->credit.load(std::memory_order_relaxed);
  if (c == 0) {
    // Credit first, then the count: snapshot() may under-count for a moment, never over.
    const count_move move(w);
    w->credit.store(fiber_credit_batch - 1, std::memory_order_release);
    live_fibers_.fetch_add(fiber_credit_batch, std::memory_order_relaxed);
    return;
  }
  w->credit.store(c - 1, std::memory_order_release);
}

void runtime::uncount(std::int64_t n) noexcept {
  if (live_fibers_.fetch_sub(n, std::memory_order_acq_rel) == n && !cfg_.persistent) {
    begin_shutdown();
  }
}

void runtime::count_exit() noexcept {
  worker* w = current_worker();
  if (!w || w->rt != this) {
    uncount(1);
    return;
  }
  std::int64_t c = w->credit.load(std::memory_order_relaxed) + 1;
  if (c > 2 * fiber_credit_batch) {
    const count_move move(w);
    live_fibers_.fetch_sub(fiber_credit_batch, std::memory_order_acq_rel);  // c stays > 0
    w->credit.store(c - fiber_credit_batch, std::memory_order_release);
    return;
  }
  w->credit.store(c, std::memory_order_release);
}

// retire(): f, running on a worker of this runtime, stops counting now: the waiter it is
// about to signal (run(), wait()) may read the stats as soon as it wakes. The count goes
// into the worker's credit, as at an exit, so live_fibers_ cannot reach zero (and shut a
// runtime down) before f has switched out: a worker gives its credit back only once it
// is out of work.
void runtime::retire(fiber& f) noexcept {
  if (f.retired) return;
  f.retired = true;
  retiring_stacks_.fetch_add(1, std::memory_order_release);
  count_exit();
}

// The count first, then the credit (see snapshot()).
void runtime::return_credit(worker& w) noexcept {
  const std::int64_t c = w.credit.load(std::memory_order_relaxed);
  if (c == 0) return;
  bool last = false;
  {
    const count_move move(&w);
    last = live_fibers_.fetch_sub(c, std::memory_order_acq_rel) == c;
    w.credit.store(0, std::memory_order_release);
  }
  if (last && !cfg_.persistent) begin_shutdown();
}

void runtime::discard_fiber(fiber* f) noexcept {
  remove_from_registry(f);
  stack s = f->stk;  // never started: never retired
  if (f->closure_on_heap) ::operator delete(f->closure);
  san_fiber_destroyed(f->san);
  f->~fiber();
  release_stack(s);
  count_exit();
}

void runtime::start_fiber(worker* w, fiber* f, bool spread) noexcept {
  RILL_ASSERT_FIBER_STATE(f, created);
  f->state.store(fiber_state::runnable, std::memory_order_relaxed);
  const bool inside = w && w->rt == this;
  if (inside) {
    w->spawned.store(w->spawned.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  if (inside && (!spread || w->solo)) {
    if (!push_local(*w, f) || w->alone()) return;  // see worker::solo
    wake_idle();
    return;
  }
  // From outside, or spread: whoever looks first takes it; a spinner or watcher is kicked.
  push_global(f);
  wake_idle(true);
}

void runtime::reap(fiber* f) noexcept {
  RILL_ASSERT_FIBER_STATE(f, done);
  stack s = f->stk;
  const bool retired = f->retired;
  san_fiber_destroyed(f->san);
  f->~fiber();
  worker* w = current_worker();
  const bool ours = w && w->rt == this;
  const bool cached = ours && s.size == stacks_.stack_size();
  const bool trim = cached && w->stack_cache.size() == stack_cache_max;
  {
    // A retired fiber's stack goes from retiring_stacks_ to a cache or a pool: a move
    // (count_move), as is giving half a cache back. An exit's stack leaves a live fiber.
    const count_move move(ours && (retired || trim) ? w : nullptr);
    if (!cached) {
      release_stack(s);
    } else {
      if (trim) {
        // Give half back under one pool lock (see create_fiber).
        const std::size_t keep = stack_cache_max / 2;
        stacks_.release_many(w->stack_cache.data() + keep, stack_cache_max - keep);
        w->stack_cache.resize(keep);
      }
      w->stack_cache.push_back(s);
      w->cached.store(w->stack_cache.size(), std::memory_order_release);
    }
    if (retired) retiring_stacks_.fetch_sub(1, std::memory_order_release);  // once put away
  }
  if (!retired) count_exit();
}

void runtime::add_to_registry(fiber* f) noexcept {
  // No lock: a reader that finds the owner sees its record whole (release/acquire), and an
  // exit, not a spawn, is what a reader must be kept from.
  f->stk.slot()->owner.store(f, std::memory_order_release);
}

void runtime::remove_from_registry(fiber* f) noexcept {
  stack_slot* s = f->stk.slot();
  std::lock_guard lk(s->lk);
  s->owner.store(nullptr, std::memory_order_relaxed);
}

void runtime::start_main(void (*main)(void*), void* arg) {
  worker& w0 = *workers_[0];
  struct ctx_t {
    void (*main)(void*);
    void* arg;
  };
  fiber* f = create_fiber(&w0, sizeof(ctx_t), alignof(ctx_t), [](void* p) {
    auto* c = static_cast<ctx_t*>(p);
    c->main(c->arg);
  });
  ::new (f->closure) ctx_t{main, arg};
  f->is_main = true;
  {
    std::lock_guard lk(f->stk.slot()->lk);  // f is registered: dump() may read its name already
    std::strncpy(f->name, "main", sizeof f->name - 1);
  }
  w0.spawned.store(1, std::memory_order_relaxed);
  RILL_ASSERT_FIBER_STATE(f, created);
  f->state.store(fiber_state::runnable, std::memory_order_relaxed);
  push_local(w0, f);
}

#ifndef NDEBUG
void fiber_state_violation(const fiber* f, fiber_state want, const char* file, int line) noexcept {
  static constexpr const char* names[] = {"created", "runnable", "running", "parked", "done"};
  const auto have = static_cast<unsigned>(f->state.load(std::memory_order_relaxed));
  std::fprintf(stderr, "rill: fiber %llu is %s, expected %s (%s:%d)\n",
               static_cast<unsigned long long>(f->id), have < 5 ? names[have] : "?",
               names[static_cast<unsigned>(want)], file, line);
  std::abort();
}
#endif

}  // namespace rill::detail
