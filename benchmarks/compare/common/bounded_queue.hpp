// bounded_queue.hpp: the naive baseline's channel, a mutex + condition-variable ring buffer
// (the thread-per-stage pipelines in */std_threads.cpp use it).
#pragma once

#include <algorithm>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace bench {

// bounded_queue<T> is a multi-producer multi-consumer FIFO of at most `capacity` items.
// Capacity 0 is a rendezvous, like an unbuffered Go channel: push() returns only once a
// consumer has taken the item.
//
// Invariants, under mu_:
//   I1  0 <= count_ <= ring_.size(), ring_.size() == max(capacity, 1).
//   I2  popped_ <= pushed_; pushed_ - popped_ == count_.
//   I3  closed_ goes false -> true once; no push() after close().
template <class T>
class bounded_queue {
 public:
  explicit bounded_queue(std::size_t capacity)
      : rendezvous_(capacity == 0), ring_(std::max<std::size_t>(capacity, 1)) {}

  // push() blocks the calling thread while the queue is full; with capacity 0 it also blocks
  // until a consumer has popped this item.  Precondition: close() has not been called.
  void push(T v) {
    std::unique_lock<std::mutex> lock(mu_);
    not_full_.wait(lock, [&] { return count_ < ring_.size(); });
    std::size_t tail = head_ + count_;
    if (tail >= ring_.size()) tail -= ring_.size();
    ring_[tail] = std::move(v);
    ++count_;
    const std::uint64_t ticket = ++pushed_;  // keeps I2
    not_empty_.notify_one();
    if (rendezvous_) taken_.wait(lock, [&] { return popped_ >= ticket; });
  }

  // pop() blocks the calling thread until an item is available or the queue is closed and
  // drained; it returns std::nullopt only in the latter case.
  std::optional<T> pop() {
    std::unique_lock<std::mutex> lock(mu_);
    not_empty_.wait(lock, [&] { return count_ > 0 || closed_; });
    if (count_ == 0) return std::nullopt;
    std::optional<T> v(std::move(ring_[head_]));
    if (++head_ == ring_.size()) head_ = 0;
    --count_;
    ++popped_;  // keeps I2
    not_full_.notify_one();
    if (rendezvous_) taken_.notify_all();
    return v;
  }

  // close() wakes every blocked consumer; they drain the queue, then get std::nullopt.
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;  // keeps I3
    not_empty_.notify_all();
  }

 private:
  const bool rendezvous_;
  std::mutex mu_;
  std::condition_variable not_empty_;  // count_ > 0 || closed_
  std::condition_variable not_full_;   // count_ < ring_.size()
  std::condition_variable taken_;      // popped_ advanced (rendezvous only)
  std::vector<T> ring_;                // guarded by mu_
  std::size_t head_ = 0;               // guarded by mu_
  std::size_t count_ = 0;              // guarded by mu_
  std::uint64_t pushed_ = 0;           // guarded by mu_
  std::uint64_t popped_ = 0;           // guarded by mu_
  bool closed_ = false;                // guarded by mu_
};

}  // namespace bench
