// Parking and waking, the out-of-line halves of sync/wait.hpp: a plain thread's park and
// wake, and a park that the deadlock handler aborts.
#include "sync/wait.hpp"

#include <exception>

#include "sched/futex.hpp"
#include "sched/runtime.hpp"

namespace rill::detail {

void park_thread(waiter& w, spinlock& lk) {
  external_wait counted;
  lk.unlock();
  while (w.futex.load(std::memory_order_acquire) == 0) futex_wait(w.futex, 0);
}

// Not analysed: it releases lk only on the path that throws.
void throw_unless_unwinding(waiter& w, spinlock& lk,
                            wait_list& list) RILL_NO_THREAD_SAFETY_ANALYSIS {
  // lk is held: w was put on `list` under it, so no waker can have taken w yet.
  if (std::uncaught_exceptions() == 0) {
    list.remove(&w);
    lk.unlock();
    throw fiber_aborted{};
  }
  // Already unwinding (a destructor that waits): the caller parks for real. A wake
  // completes the wait as usual; if nothing can wake it, the next deadlock check abandons
  // the fiber.
}

void park_fiber_aborted(fiber* self) {
  self->abort_wake = false;
  if (std::uncaught_exceptions() == 0) throw fiber_aborted{};
  // Aborted while unwinding: it cannot throw, and returning would report a wait that
  // never ended (a wait_group::wait() in a destructor would return while the fibers it
  // waits for still run, and they would outlive the frames they use). Park for good: the
  // runtime abandons the fiber at its next deadlock check.
  set_parked(self);
  switch_out(self, nullptr, nullptr);
}

void wake_thread(std::atomic<std::uint32_t>& word) noexcept {
  word.store(1, std::memory_order_release);
  futex_wake(word);
}

}  // namespace rill::detail
