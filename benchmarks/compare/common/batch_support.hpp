// batch_support.hpp: what the hand-batched peers (the batch<B> layout: work.hpp's "Layouts")
// share: a block of items that travels as one message, the source's items cut into blocks,
// and the stage bodies over blocks.
//
//   bench::block                       up to B items: one channel, queue, edge or token message
//   bench::block_source(n, B)          0 .. n-1 in order, in blocks of B (the last shorter):
//                                      next() the next block, done() once all are out,
//                                      take(fc) next() or fc.stop() (a TBB source's body)
//   bench::item_source(n)              its per-item twin: take(fc) the next item or fc.stop()
//   bench::push_blocks(c, n, B)        a source: every block of 0 .. n-1 into c.push()
//   bench::map_block(b, map)           b with map applied to each item, in place
//   bench::sum_block(acc, b)           acc folded with bench::sum over b's items
//   bench::item_fold, block_fold, block_map<Map>{map}   the sink's fold and the map as
//                                      function objects, per item and per block
//   bench::limit_blocks(cap, B)        the blocks of B that a bound of cap items admits
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "work.hpp"

namespace bench {

// A block is a std::vector, as a user of any of these libraries batches by hand: the source
// allocates each block, the sink frees it.
using block = std::vector<std::uint64_t>;

class block_source {
 public:
  block_source(std::uint64_t n, std::size_t batch) : n_(n), batch_(batch) {}

  [[nodiscard]] bool done() const { return next_ >= n_; }

  // next() returns the next block; empty once done().
  block next() {
    const std::uint64_t end = std::min<std::uint64_t>(n_, next_ + batch_);
    block b;
    b.reserve(end - next_);
    for (; next_ < end; ++next_) b.push_back(next_);
    return b;
  }

  // take(fc): the body of a TBB source (input_node, a pipeline's first filter): the next
  // block, or fc.stop() once done().
  template <class FlowControl>
  block take(FlowControl& fc) {
    if (done()) {
      fc.stop();
      return {};
    }
    return next();
  }

 private:
  std::uint64_t n_;
  std::size_t batch_;
  std::uint64_t next_ = 0;
};

// item_source: the per-item twin of block_source for TBB sources, so that both layouts of a
// TBB peer are one graph or pipeline over their message type.
class item_source {
 public:
  explicit item_source(std::uint64_t n) : n_(n) {}

  template <class FlowControl>
  std::uint64_t take(FlowControl& fc) {
    if (next_ >= n_) {
      fc.stop();
      return 0;
    }
    return next_++;
  }

 private:
  std::uint64_t n_;
  std::uint64_t next_ = 0;
};

// push_blocks(c, n, batch): the source stage of a channel or queue c (push(block)).
template <class Channel>
void push_blocks(Channel& c, std::uint64_t n, std::size_t batch) {
  block_source blocks(n, batch);
  while (!blocks.done()) c.push(blocks.next());
}

template <class Map>
block map_block(block b, const Map& map) {
  for (std::uint64_t& v : b) v = map(v);
  return b;
}

inline std::uint64_t sum_block(std::uint64_t acc, const block& b) {
  for (std::uint64_t v : b) acc = sum(acc, v);
  return acc;
}

// Stage bodies as function objects, so that a stage written once for either layout (a
// template over the message type) calls them inline, where a function pointer may stay an
// indirect call per message.  Map is a function object too (a lambda).
struct item_fold {
  std::uint64_t operator()(std::uint64_t acc, std::uint64_t v) const { return sum(acc, v); }
};
struct block_fold {
  std::uint64_t operator()(std::uint64_t acc, const block& b) const { return sum_block(acc, b); }
};
template <class Map>
struct block_map {
  Map map;
  block operator()(block b) const { return map_block(std::move(b), map); }
};

// limit_blocks(cap, batch): a bound of cap items in flight (a limiter_node's threshold)
// counted in blocks of `batch`, so that a batched graph holds no more items than the
// per-item graph it is the twin of; at least one block.
inline std::size_t limit_blocks(std::size_t cap, std::size_t batch) {
  return std::max<std::size_t>(1, cap / batch);
}

}  // namespace bench
