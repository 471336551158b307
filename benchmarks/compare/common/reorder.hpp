// reorder.hpp: what a hand-written ordered fan-out needs at its sink (std::thread, Boost.Fiber
// and Go peers; TBB and rill order items themselves).
#pragma once

#include <cstdint>
#include <unordered_map>

namespace bench {

// seq_item is a mapped value with the sequence number of the source item it came from.
struct seq_item {
  std::uint64_t seq = 0;
  std::uint64_t value = 0;
};

// reorderer folds values into an accumulator in sequence order 0, 1, 2, ..., holding the
// ones that arrive early.  It holds at most as many values as there are items in flight.
template <class Combine>
class reorderer {
 public:
  reorderer(std::uint64_t init, Combine combine) : acc_(init), combine_(combine) {}

  void push(const seq_item& item) {
    if (item.seq != next_) {
      early_.emplace(item.seq, item.value);
      return;
    }
    acc_ = combine_(acc_, item.value);
    ++next_;
    for (auto it = early_.find(next_); it != early_.end(); it = early_.find(next_)) {
      acc_ = combine_(acc_, it->second);
      early_.erase(it);
      ++next_;
    }
  }

  // result() is the accumulator; all items must have been pushed.
  [[nodiscard]] std::uint64_t result() const { return acc_; }

 private:
  std::uint64_t acc_;
  Combine combine_;
  std::uint64_t next_ = 0;
  std::unordered_map<std::uint64_t, std::uint64_t> early_;
};

}  // namespace bench
