// Clang's thread-safety annotations (-Wthread-safety): which lock guards which field, which
// functions need a lock held, take it or release it. The clang builds check them (the
// library is compiled with -Wthread-safety -Werror=thread-safety there); elsewhere they
// expand to nothing. Not API.
//
// Where the analysis cannot follow (a lock released by the after-switch action of a context
// switch, a select's dynamic set of channel locks, a lock-free read through a sequence
// lock), the function says so with RILL_NO_THREAD_SAFETY_ANALYSIS and a comment that gives
// the contract in words.
#pragma once

#if defined(__clang__)
#define RILL_TSA(x) __attribute__((x))
#else
#define RILL_TSA(x)
#endif

#define RILL_CAPABILITY(name) RILL_TSA(capability(name))
#define RILL_SCOPED_CAPABILITY RILL_TSA(scoped_lockable)
#define RILL_GUARDED_BY(x) RILL_TSA(guarded_by(x))
#define RILL_PT_GUARDED_BY(x) RILL_TSA(pt_guarded_by(x))
#define RILL_REQUIRES(...) RILL_TSA(requires_capability(__VA_ARGS__))
#define RILL_ACQUIRE(...) RILL_TSA(acquire_capability(__VA_ARGS__))
#define RILL_RELEASE(...) RILL_TSA(release_capability(__VA_ARGS__))
#define RILL_TRY_ACQUIRE(...) RILL_TSA(try_acquire_capability(__VA_ARGS__))
#define RILL_EXCLUDES(...) RILL_TSA(locks_excluded(__VA_ARGS__))
#define RILL_RETURN_CAPABILITY(x) RILL_TSA(lock_returned(x))
#define RILL_NO_THREAD_SAFETY_ANALYSIS RILL_TSA(no_thread_safety_analysis)

#include <mutex>

namespace rill::detail {

// mutex: std::mutex as a capability the analysis knows (libstdc++'s is not annotated).
class RILL_CAPABILITY("mutex") mutex {
 public:
  void lock() RILL_ACQUIRE() { m_.lock(); }
  bool try_lock() RILL_TRY_ACQUIRE(true) { return m_.try_lock(); }
  void unlock() RILL_RELEASE() { m_.unlock(); }
  // native(): for a std::condition_variable's wait, which releases and retakes the lock
  // inside (the caller holds it before and after, as the analysis assumes).
  std::mutex& native() noexcept { return m_; }

 private:
  std::mutex m_;
};

// lock_guard: std::lock_guard for an annotated lock (mutex, spinlock).
template <class M>
class RILL_SCOPED_CAPABILITY lock_guard {
 public:
  explicit lock_guard(M& m) RILL_ACQUIRE(m) : m_(m) { m_.lock(); }
  ~lock_guard() RILL_RELEASE() { m_.unlock(); }
  lock_guard(const lock_guard&) = delete;
  lock_guard& operator=(const lock_guard&) = delete;

 private:
  M& m_;
};

}  // namespace rill::detail
