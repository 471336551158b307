// Floors: what the bare mechanisms under a channel and a switch cost on this machine, with
// none of rill in them. They say how far a target can be reached at all; rill's own figures
// (chan_bench.cpp, runtime_bench.cpp) are read against them.
//
//   floor/switch_one_place    ns per switch between two contexts that both switch from the
//                             same loop (every return is predicted)
//   floor/switch_two_places   the same, the two switching through one function called from
//                             two different loops: the return stack buffer holds the calls
//                             of the context that left, so each return into the loop
//                             mispredicts, once per switch (two fibers that yield, or wait on
//                             a channel, from different places are this case)
//   floor/lock_pairs          ns per item for two lock/unlock pairs of a spinlock (one for a
//                             send, one for a receive), and nothing else
//   floor/mpmc_ring           ns per item through a bounded lock-free MPMC ring (one CAS per
//                             push and per pop; one thread, the ring half full, as a
//                             producer and a consumer on one worker): no waiting, no close,
//                             no handles
//   floor/mpmc_ring_batch     the same ring filled with 1024 items, then drained (the order
//                             a producer and a consumer on one worker run in)
//   floor/ping_pong           ns per round trip of an unbuffered ping-pong with none of a
//                             channel's work: each side takes the lock of the channel it
//                             sends on and of the one it receives from (four lock/unlock
//                             pairs a round trip), then switches to the other from its own
//                             loop (two switches from two places)
//   floor/locked_ring_batch   ns per item through a ring under rill's spinlock, filled with
//                             1024 items, then drained: a buffered channel's fast path with
//                             no handle, no closed flag and no wait queues to check
//
// The switch and the lock are rill's own (src/fiber/switch.cpp, rill/detail/core.hpp);
// the switch floors need rill as a static library (its jump is a hidden symbol).
#include <benchmark/benchmark.h>

#include <atomic>
#include <boost/context/detail/fcontext.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <rill/detail/core.hpp>
#include <vector>

namespace {

namespace bctx = boost::context::detail;

#if defined(__x86_64__) && defined(__ELF__) && RILL_STATIC_LIBRARY
#define RILL_FLOOR_SWITCH 1
// rill's own switch (src/fiber/switch.cpp), a hidden symbol of the static library: the
// floor is the switch every park and yield makes, with nothing of the scheduler around it.
extern "C" bctx::transfer_t rill_jump_fcontext(bctx::fcontext_t to, void* data);

// One switch out and back in. Both sides switch through this one function, so the return
// into it is always predicted; what differs is the loop it returns to.
[[gnu::noipa]] bctx::fcontext_t step(bctx::fcontext_t to) {
  return rill_jump_fcontext(to, nullptr).fctx;
}

// n switches out and back in. Two identical loops: the timed side runs `loop`; the partner
// runs `loop` too (one place: every return is predicted) or `loop_other` (two places: each
// return from step() lands in the other loop than the one the return stack buffer holds).
[[gnu::noipa]] bctx::fcontext_t loop(bctx::fcontext_t other, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) other = step(other);
  return other;
}
[[gnu::noipa]] bctx::fcontext_t loop_other(bctx::fcontext_t other, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) other = step(other);
  static volatile int finished = 0;  // keeps the two loops distinct functions
  finished = finished + 1;
  return other;
}

// The partner switches back each time it is resumed. When the benchmark ends it is left
// suspended and its stack is freed without unwinding: it holds nothing.
void partner_one_place(bctx::transfer_t t) { loop(t.fctx, INT64_MAX); }
void partner_two_places(bctx::transfer_t t) { loop_other(t.fctx, INT64_MAX); }

// run_pair() times `timed`, 1000 steps per call, against `partner` started on a stack of
// its own; each step is `items_per_step` items (in the report's `ns_per_item` counter).
using loop_fn = bctx::fcontext_t (*)(bctx::fcontext_t other, std::int64_t n);
void run_pair(benchmark::State& state, void (*partner)(bctx::transfer_t), loop_fn timed,
              std::int64_t items_per_step) {
  constexpr std::size_t stack_bytes = 64 * 1024;
  constexpr std::int64_t per_iteration = 1000;
  std::unique_ptr<char[]> stack(new char[stack_bytes]);
  bctx::fcontext_t other = bctx::make_fcontext(stack.get() + stack_bytes, stack_bytes, partner);
  other = step(other);  // start it: it switches straight back
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : state) other = timed(other, per_iteration);
  const auto t1 = std::chrono::steady_clock::now();
  const std::int64_t items = state.iterations() * per_iteration * items_per_step;
  state.SetItemsProcessed(items);
  state.counters["ns_per_item"] =
      std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(items);
}

// A step of `loop` is two switches: out and back in.
void floor_switch_one_place(benchmark::State& state) {
  run_pair(state, partner_one_place, loop, 2);
}
void floor_switch_two_places(benchmark::State& state) {
  run_pair(state, partner_two_places, loop, 2);
}

// Ping-pong: the timed side sends on `ping` and receives from `pong`; the partner receives
// from `ping` and sends on `pong`. A channel operation here is its lock pair alone.
rill::detail::spinlock ping_lock, pong_lock;
std::int64_t ping_x = 0, pong_x = 0;

inline void lock_pair(rill::detail::spinlock& l, std::int64_t& x, std::int64_t d) {
  l.lock();
  x += d;
  l.unlock();
}
[[gnu::noipa]] bctx::fcontext_t ping_loop(bctx::fcontext_t other, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    lock_pair(ping_lock, ping_x, 1);  // send
    lock_pair(pong_lock, pong_x, 1);  // receive: nothing there yet, so park
    other = step(other);
  }
  return other;
}
[[gnu::noipa]] bctx::fcontext_t pong_loop(bctx::fcontext_t other, std::int64_t n) {
  for (std::int64_t i = 0; i < n; ++i) {
    lock_pair(pong_lock, pong_x, -1);  // send the reply
    lock_pair(ping_lock, ping_x, -1);  // receive the next: park
    other = step(other);
  }
  return other;
}
void partner_pong(bctx::transfer_t t) { pong_loop(t.fctx, INT64_MAX); }

// A step of `ping_loop` is one round trip.
void floor_ping_pong(benchmark::State& state) { run_pair(state, partner_pong, ping_loop, 1); }
#endif

void floor_lock_pairs(benchmark::State& state) {
  rill::detail::spinlock a, b;  // the channels' lock
  std::int64_t x = 0;
  for (auto _ : state) {
    a.lock();
    ++x;
    a.unlock();
    b.lock();
    --x;
    b.unlock();
  }
  benchmark::DoNotOptimize(x);
  state.SetItemsProcessed(state.iterations());
}

// A bounded MPMC ring (Vyukov's design): a sequence number per cell, one CAS on the tail per
// push and one on the head per pop.
class mpmc_ring {
 public:
  explicit mpmc_ring(std::size_t capacity) : mask_(capacity - 1), cells_(capacity) {
    for (std::size_t i = 0; i < capacity; ++i) cells_[i].seq.store(i, std::memory_order_relaxed);
  }
  bool push(std::int64_t v) noexcept {
    std::size_t pos = tail_.load(std::memory_order_relaxed);
    for (;;) {
      cell& c = cells_[pos & mask_];
      const std::size_t seq = c.seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::intptr_t>(seq) - static_cast<std::intptr_t>(pos);
      if (diff == 0) {
        if (tail_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          c.value = v;
          c.seq.store(pos + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // full
      } else {
        pos = tail_.load(std::memory_order_relaxed);
      }
    }
  }
  bool pop(std::int64_t& v) noexcept {
    std::size_t pos = head_.load(std::memory_order_relaxed);
    for (;;) {
      cell& c = cells_[pos & mask_];
      const std::size_t seq = c.seq.load(std::memory_order_acquire);
      const auto diff = static_cast<std::intptr_t>(seq) - static_cast<std::intptr_t>(pos + 1);
      if (diff == 0) {
        if (head_.compare_exchange_weak(pos, pos + 1, std::memory_order_relaxed)) {
          v = c.value;
          c.seq.store(pos + mask_ + 1, std::memory_order_release);
          return true;
        }
      } else if (diff < 0) {
        return false;  // empty
      } else {
        pos = head_.load(std::memory_order_relaxed);
      }
    }
  }

 private:
  struct cell {
    std::atomic<std::size_t> seq{0};
    std::int64_t value = 0;
  };
  std::size_t mask_;
  std::vector<cell> cells_;
  alignas(64) std::atomic<std::size_t> tail_{0};
  alignas(64) std::atomic<std::size_t> head_{0};
};

void floor_mpmc_ring(benchmark::State& state) {
  // The ring holds 512 items throughout: each iteration pushes one at the tail and pops
  // one at the head, so a time per iteration is a time per item.
  constexpr std::int64_t capacity = 1024;
  mpmc_ring ring(capacity);
  for (std::int64_t i = 0; i < capacity / 2; ++i) ring.push(i);
  std::int64_t sum = 0;
  std::int64_t v = 0;
  std::int64_t next = capacity / 2;
  for (auto _ : state) {
    ring.push(next++);
    ring.pop(v);
    sum += v;
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}

// The same in the pattern of a buffered channel with one producer and one consumer on one
// worker: 1024 pushes (the producer runs until the channel is full), then 1024 pops. Two
// pushes or two pops per iteration, so a time per iteration is again a time per item.
template <class Ring>
void run_ring_batch(benchmark::State& state) {
  constexpr std::int64_t capacity = 1024;
  Ring ring(capacity);
  std::int64_t sum = 0;
  std::int64_t v = 0;
  std::int64_t next = 0;
  std::int64_t held = 0;
  bool filling = true;
  for (auto _ : state) {
    if (filling) {
      ring.push(next++);
      ring.push(next++);
      held += 2;
      filling = held < capacity;
    } else {
      ring.pop(v);
      sum += v;
      ring.pop(v);
      sum += v;
      held -= 2;
      filling = held == 0;
    }
  }
  benchmark::DoNotOptimize(sum);
  state.SetItemsProcessed(state.iterations());
}

void floor_mpmc_ring_batch(benchmark::State& state) { run_ring_batch<mpmc_ring>(state); }

// A ring of ints under one spinlock, as a buffered channel keeps its buffer.
class locked_ring {
 public:
  explicit locked_ring(std::size_t capacity) : mask_(capacity - 1), buf_(capacity) {}
  bool push(std::int64_t v) noexcept {
    lock_.lock();
    const bool ok = count_ <= mask_;
    if (ok) {
      buf_[(head_ + count_) & mask_] = v;
      ++count_;
    }
    lock_.unlock();
    return ok;
  }
  bool pop(std::int64_t& v) noexcept {
    lock_.lock();
    const bool ok = count_ != 0;
    if (ok) {
      v = buf_[head_];
      head_ = (head_ + 1) & mask_;
      --count_;
    }
    lock_.unlock();
    return ok;
  }

 private:
  rill::detail::spinlock lock_;
  std::size_t head_ = 0;
  std::size_t count_ = 0;
  std::size_t mask_;
  std::vector<std::int64_t> buf_;
};

void floor_locked_ring_batch(benchmark::State& state) { run_ring_batch<locked_ring>(state); }

}  // namespace

#if RILL_FLOOR_SWITCH
BENCHMARK(floor_switch_one_place)->Name("floor/switch_one_place");
BENCHMARK(floor_switch_two_places)->Name("floor/switch_two_places");
BENCHMARK(floor_ping_pong)->Name("floor/ping_pong");
#endif
BENCHMARK(floor_lock_pairs)->Name("floor/lock_pairs");
BENCHMARK(floor_mpmc_ring)->Name("floor/mpmc_ring");
BENCHMARK(floor_mpmc_ring_batch)->Name("floor/mpmc_ring_batch");
BENCHMARK(floor_locked_ring_batch)->Name("floor/locked_ring_batch");
