// Cases for the clang thread-safety analysis of rill's locks (see CMakeLists.txt): case 0
// compiles; each other case has one locking error the analysis must report.
#include <rill/detail/core.hpp>
#include <rill/detail/thread_safety.hpp>

namespace {

struct counter {
  rill::detail::spinlock mu;
  int n RILL_GUARDED_BY(mu) = 0;

  void add() {
    rill::detail::lock_guard lk(mu);
    ++n;
  }
  void add_locked() RILL_REQUIRES(mu) { ++n; }
};

[[maybe_unused]] void use(counter& c, rill::detail::mutex& m) {
  c.add();
  c.mu.lock();
  c.add_locked();
  c.mu.unlock();
  rill::detail::lock_guard lk(m);
#if CASE == 1
  ++c.n;  // a guarded field without its lock
#elif CASE == 2
  c.mu.unlock();  // a lock released that is not held
#elif CASE == 3
  c.add_locked();  // a function that requires the lock, called without it
#endif
}

}  // namespace
