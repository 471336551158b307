// process_wide<T>(): the process's one T, for a pool of threads.
#pragma once

#include <pthread.h>

#include <atomic>

namespace rill::detail {

// A T made on first use and never destroyed (its threads may outlive main). A child process
// after fork() has none of its parent's threads, though the parent's T counts them: it gets
// a T of its own (the old one is left as it was, its lock perhaps held by a thread that is
// not there).
template <class T>
T& process_wide() {
  static std::atomic<T*> instance{nullptr};
  static std::atomic<T*> left{nullptr};  // the parent's, still reachable for leak checkers
  static const bool made = [] {
    instance.store(new T, std::memory_order_release);
    ::pthread_atfork(nullptr, nullptr, [] {
      left.store(instance.load(std::memory_order_relaxed), std::memory_order_relaxed);
      instance.store(new T, std::memory_order_release);
    });
    return true;
  }();
  (void)made;
  return *instance.load(std::memory_order_acquire);
}

}  // namespace rill::detail
