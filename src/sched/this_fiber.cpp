// include/rill/fiber.hpp's this_fiber::yield and sleep, and the chaos point's yield: the
// scheduling points a fiber asks for itself.
#include <chrono>
#include <thread>

#include "rill/fiber.hpp"
#include "sched/runtime.hpp"
#include "sync/wait.hpp"

namespace rill::detail {

namespace {
constexpr std::uint64_t chaos_yield_odds = 64;  // RILL_SCHED_SEED: yield at 1 in 64 chaos points
}  // namespace

void chaos_yield() noexcept {
  worker* w = current_worker();
  if (!w || !w->running() || !w->rt->chaos()) return;
  if (next_random(w->rng) % chaos_yield_odds == 0) this_fiber::yield();
}

}  // namespace rill::detail

namespace rill::this_fiber {

namespace {

// A yielding fiber queues behind the one it hands its worker to, which may never park (a
// busy loop): an idle worker must be told, or the yielder waits for that loop to end. Go's
// Gosched() calls wakep() for the same reason. It is queued as yielded: it waits for no
// partner, so a thief may take it at once (see scheduler.cpp, "Keeping communicating fibers
// together"), and a watching worker is kicked to look.
void after_push_local(detail::machine_context* left, void* arg) noexcept {
  auto* f = static_cast<detail::fiber*>(left);
  auto* w = static_cast<detail::worker*>(arg);  // the landing side runs on the same thread
  detail::runtime* rt = f->rt;                  // once pushed, f may be stolen, run and freed
  if (rt->push_local(*w, f, true) && !w->alone()) rt->wake_idle(true);
}

void after_push_global(detail::machine_context* left, void*) noexcept {
  auto* f = static_cast<detail::fiber*>(left);
  f->rt->push_global(f);
}

struct sleeper : detail::timer {
  detail::fiber* f = nullptr;
};

void after_arm(detail::machine_context* left, void* arg) noexcept {
  static_cast<detail::fiber*>(left)->rt->arm(*static_cast<sleeper*>(arg));
}

}  // namespace

void yield() {
  detail::worker* w = detail::current_worker();
  detail::fiber* self = w ? w->running() : nullptr;
  if (!self) {
    std::this_thread::yield();
    return;
  }
  detail::check_stack(self);  // a yield is a switch out: check the stack like switch_out()
  detail::probe_switch_stack();
  RILL_ASSERT_FIBER_STATE(self, running);
  self->state.store(detail::fiber_state::runnable, std::memory_order_relaxed);
  detail::fiber* const next = self->rt->next_local(*w);
  if (!next && self->rt->nothing_queued()) {
    // Nothing runnable on this worker, in the global queue, or due from timers or I/O:
    // there is nobody to yield to, so the caller goes on (as sched_yield with an idle CPU).
    // Still a scheduling point: the watchdog does not report a fiber that yields.
    self->state.store(detail::fiber_state::running, std::memory_order_relaxed);
    w->scheduling_point();
    return;
  }
  detail::switch_to_next(*w, next, [&](detail::machine_context& to) {
    if (!next) {
      // Nothing local: let the scheduler look at the global queue, the timers and the I/O;
      // this fiber queues behind what it finds.
      detail::switch_to(*self, to, w->eh, after_push_global, nullptr);
    } else if (w->solo) {
      // One worker: nobody else can take self from the queue before this thread has left
      // it (the next fiber's landing saves self's context first), so self queues now and
      // the switch needs no after-switch action.
      self->rt->push_local(*w, self);
      detail::switch_to(*self, to, w->eh);
    } else {
      detail::switch_to(*self, to, w->eh, after_push_local, w);
    }
  });
}

void sleep_until_ns(std::int64_t deadline) {
  detail::fiber* self = detail::current_fiber();
  if (!self) {
    std::int64_t left = deadline - detail::now_ns();
    if (left > 0) std::this_thread::sleep_for(std::chrono::nanoseconds(left));
    return;
  }
  if (deadline <= detail::now_ns()) {
    yield();
    return;
  }
  detail::flush_before_park();
  sleeper s;
  s.when = deadline;
  s.f = self;
  s.fire = [](detail::timer* t) noexcept {
    detail::fiber* f = static_cast<sleeper*>(t)->f;
    t->fired();
    f->rt->ready(f, detail::ready_slot::queue);
  };
  self->reason.store(wait_reason::sleep, std::memory_order_relaxed);
  self->wait_object.store(nullptr, std::memory_order_relaxed);
  RILL_ASSERT_FIBER_STATE(self, running);
  detail::set_parked(self);
  detail::switch_out(self, after_arm, &s);
}

}  // namespace rill::this_fiber
