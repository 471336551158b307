// The channel core (Go's hchan): a ring buffer of `cap_` slots, a queue of parked
// receivers and one of parked senders, under one spinlock.
//
// Invariants, under mu_:
//   I1  recvq_ and sendq_ are never both non-empty (of unclaimed waiters).
//   I2  count_ > 0 implies recvq_ holds no unclaimed waiter.
//   I3  closed_ goes false -> true once; no waiter is queued on a closed channel, but while
//       the close wakes them a chunk at a time (draining_, close_chunked()).
//   I4  sendq_ non-empty implies count_ == cap_, except while short_: a refill of the
//       buffer from a parked sender threw (see recv), and senders have waited ever since.
//   I5  a waiter on a queue belongs to a parked fiber or blocked thread; whoever takes it
//       off (and, for a select waiter, wins its claim) completes its operation, sets
//       `success`, and wakes it after releasing mu_; if the value's move throws, it puts
//       the waiter back instead (put_back(): a select is woken to run again).
//
// Select waiters: one select parks a waiter on the queue of each of its channels, all
// pointing at one select_state. Whoever takes such a waiter must first claim the select
// (CAS done: 0 -> case index + 1); a waiter whose select was already claimed is dropped.
//
// Debug builds check I1-I4 (check_invariants) where a locked operation ends: before it
// releases mu_ or parks. A select whose cases send and receive on one unbuffered channel
// has a waiter on both queues: I1 holds across different selects and plain waiters.
//
// Memory model (Go's): the send's write of the value happens before the receive that takes
// it completes (both sides go through mu_); close() happens before a receive that returns
// because the channel is closed.
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <new>

#include "rill/fiber.hpp"
#include "sched/futex.hpp"
#include "sched/runtime.hpp"
#include "sync/chan_internal.hpp"
#include "sync/wait.hpp"

namespace rill::detail {

namespace {

std::atomic<std::uint64_t> g_chan_ids{1};

[[noreturn]] void throw_closed_send() {
  throw closed_channel("rill::chan: send on a closed channel");
}

}  // namespace

std::atomic<std::int64_t> g_live_channels{0};

#ifdef NDEBUG
#define RILL_CHECK_CHAN(c) ((void)0)
#else
#define RILL_CHECK_CHAN(c) (c).check_invariants()
#endif

namespace {

// unclaimed(): w still stands for a pending operation (a plain waiter, or a select's that no
// case has won yet).
bool unclaimed(const waiter* w) noexcept {
  return !w->select ||
         static_cast<const select_state*>(w->select)->done.load(std::memory_order_relaxed) == 0;
}

const waiter* first_unclaimed(const wait_list& q) noexcept {
  for (const waiter* w = q.head.load(std::memory_order_relaxed); w; w = w->next) {
    if (unclaimed(w)) return w;
  }
  return nullptr;
}

[[noreturn]] void invariant_broken(const chan_core& c, const char* which) noexcept {
  std::fprintf(stderr, "rill: channel %llu: invariant %s broken (src/sync/chan.cpp)\n",
               static_cast<unsigned long long>(c.id_), which);
  std::abort();
}

}  // namespace

void chan_core::check_invariants() noexcept {
  const waiter* r = first_unclaimed(recvq_);
  const waiter* s = first_unclaimed(sendq_);
  if (r && s) {  // I1, but for one select on both queues
    for (const waiter* a = r; a; a = a->next) {
      if (!unclaimed(a)) continue;
      for (const waiter* b = s; b; b = b->next) {
        if (unclaimed(b) && (!a->select || a->select != b->select)) invariant_broken(*this, "I1");
      }
    }
  }
  if (count() > 0 && r) invariant_broken(*this, "I2");
  if (is_closed() && (r || s) && !draining_) {
    invariant_broken(*this, "I3 (a waiter on a closed channel)");
  }
  if (!s) short_ = false;  // no sender waits: I4's exception is over
  if (s && count() != cap_ && !short_) invariant_broken(*this, "I4");
  if (count() > cap_) invariant_broken(*this, "count_ <= cap_");
}

namespace {

// put_back() ends a handover that failed (the value's move threw) on waiter w, dequeued
// from q of channel c, and releases c.mu_. A plain waiter goes back to the front of q, still
// parked. A select's waiter does not: while its select was claimed, a waker on another of
// its channels may have dropped the waiter there as lost, so the select is marked `retry`
// and woken (it takes its other waiters off and runs again).
void put_back(chan_core& c, wait_list& q, waiter* w) noexcept RILL_RELEASE(c.mu_) {
  if (!w->select) {
    if (&q == &c.sendq_ && c.count() != c.cap_) c.short_ = true;  // I4's exception
    q.push_front(w);
    c.mu_.unlock();
    return;
  }
  auto* st = static_cast<select_state*>(w->select);
  st->done.store(select_state::retry, std::memory_order_release);  // we hold its claim
  c.mu_.unlock();
  st->wake();
}

}  // namespace

void select_state::wake() noexcept { wake_party(who, futex); }

chan_core* chan_core::create(std::size_t capacity, const chan_ops* ops) {
  const std::size_t align = ops->align > alignof(chan_core) ? ops->align : alignof(chan_core);
  const std::size_t header = (sizeof(chan_core) + align - 1) / align * align;
  if (ops->size != 0 &&
      capacity > (std::numeric_limits<std::size_t>::max() / 2 - header) / ops->size) {
    throw std::length_error("rill::chan: capacity too large");
  }
  const std::size_t bytes = header + capacity * ops->size;
  void* mem = ::operator new(bytes, std::align_val_t(align));
  auto* c = ::new (mem) chan_core();
  c->cap_ = capacity;
  c->ops_ = ops;
  c->elem_size_ = ops->size;
  c->buf_ = static_cast<char*>(mem) + header;
  c->id_ = g_chan_ids.fetch_add(1, std::memory_order_relaxed);
  g_live_channels.fetch_add(1, std::memory_order_relaxed);
  return c;
}

// (Not analysed: the last reference reads the buffer without the lock; nobody else can.)
void chan_core::release() noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  for (std::size_t i = 0; i < count(); ++i) ops_->destroy(slot(i));
  const std::size_t align = ops_->align > alignof(chan_core) ? ops_->align : alignof(chan_core);
  this->~chan_core();
  ::operator delete(static_cast<void*>(this), std::align_val_t(align));
  g_live_channels.fetch_sub(1, std::memory_order_relaxed);
}

namespace {

// hand_over() completes the operation of waiter w, just dequeued from q of channel c: moves
// *src into the std::optional at opt (a receiver's slot, or the receiving caller's), then
// releases c.mu_ and wakes w. If the move throws, w goes back (put_back) and the exception
// propagates.
[[gnu::always_inline]] inline void hand_over(chan_core& c, wait_list& q, waiter* w, void* opt,
                                             void* src) RILL_RELEASE(c.mu_) {
  try {
    c.ops_->emplace(opt, src);
  } catch (...) {
    put_back(c, q, w);
    throw;
  }
  w->success = true;
  RILL_CHECK_CHAN(c);
  c.mu_.unlock();
  wake(w);
}

// send_locked_inline() and recv_locked_inline() release c.mu_ on some paths only, which the
// analysis cannot express: they, and the functions that call them, say their contract in
// words and are not analysed.
[[gnu::always_inline]] inline bool send_locked_inline(chan_core& c,
                                                      void* src) RILL_NO_THREAD_SAFETY_ANALYSIS {
  // Requires c.mu_ and !c.closed_. True if done; false if the caller must park. Releases
  // c.mu_ when it returns true or throws.
  if (waiter* w = dequeue(c.recvq_)) {
    hand_over(c, c.recvq_, w, w->slot, src);
    return true;
  }
  if (c.count() < c.cap_) {
    try {
      c.ops_->construct(c.slot(c.count()), src);
    } catch (...) {
      c.mu_.unlock();
      throw;
    }
    c.set_count(c.count() + 1);
    RILL_CHECK_CHAN(c);
    c.mu_.unlock();
    return true;
  }
  return false;
}

[[gnu::always_inline]] inline recv_result recv_locked_inline(chan_core& c, void* opt)
    RILL_NO_THREAD_SAFETY_ANALYSIS {
  // Requires c.mu_. Releases c.mu_ unless it returns would_park (the caller parks).
  if (c.count() > 0) {
    char* s = c.slot(0);
    try {
      c.ops_->emplace(opt, s);
    } catch (...) {
      c.mu_.unlock();
      throw;
    }
    c.ops_->destroy(s);
    c.advance_head();
    c.set_count(c.count() - 1);
    // A sender waits for room (keeps I4): its value goes to the tail, keeping FIFO order.
    if (waiter* w = dequeue(c.sendq_)) {
      try {
        c.ops_->construct(c.slot(c.count()), w->slot);
      } catch (...) {
        // Its move threw: it keeps its value, parked, to be handed over directly by a
        // later receive (this is the one way I4 can break), or, a select, runs again.
        put_back(c, c.sendq_, w);
        return recv_result::received;
      }
      c.set_count(c.count() + 1);
      w->success = true;
      RILL_CHECK_CHAN(c);
      c.mu_.unlock();
      wake(w);
      return recv_result::received;
    }
    RILL_CHECK_CHAN(c);
    c.mu_.unlock();
    return recv_result::received;
  }
  if (waiter* w = dequeue(c.sendq_)) {
    hand_over(c, c.sendq_, w, opt, w->slot);
    return recv_result::received;
  }
  if (c.is_closed()) {
    RILL_CHECK_CHAN(c);
    c.mu_.unlock();
    return recv_result::closed;
  }
  return recv_result::would_park;
}

// park_on() parks the caller on q (c's sendq_ or recvq_), its value at `slot`, until a peer
// completes its operation (true) or close() wakes it (false). Requires c.mu_ and releases
// it; throws fiber_aborted after a deadlock (see park()).
[[gnu::always_inline]] inline bool park_on(chan_core& c, wait_list& q, void* slot, wait_reason why)
    RILL_RELEASE(c.mu_) {
  waiter w;
  w.slot = slot;
  q.push_back(&w);
  RILL_CHECK_CHAN(c);
  park(w, c.mu_, q, why, &c);
  return w.success;
}

}  // namespace

bool send_locked(chan_core& c, void* src) RILL_NO_THREAD_SAFETY_ANALYSIS {
  return send_locked_inline(c, src);
}
recv_result recv_locked(chan_core& c, void* opt) RILL_NO_THREAD_SAFETY_ANALYSIS {
  return recv_locked_inline(c, opt);
}

void chan_core::send(void* src) {
  chaos_point();
  mu_.lock();
  send_with_lock(src);
}

void chan_core::send_with_lock(void* src) RILL_NO_THREAD_SAFETY_ANALYSIS {
  for (;;) {
    if (is_closed()) {
      mu_.unlock();
      throw_closed_send();
    }
    if (send_locked_inline(*this, src)) return;
    // About to park: the fiber's park hooks go first, with no lock held.
    if (!flush_before_park(mu_)) break;
  }
  if (!park_on(*this, sendq_, src, wait_reason::chan_send)) throw_closed_send();
}

bool chan_core::try_send(void* src) RILL_NO_THREAD_SAFETY_ANALYSIS {
  chaos_point();
  if (probe_send() == 0) return false;  // full (or unbuffered) with no receiver, and open
  mu_.lock();
  if (is_closed()) {
    mu_.unlock();
    throw_closed_send();
  }
  if (send_locked_inline(*this, src)) return true;
  RILL_CHECK_CHAN(*this);
  mu_.unlock();
  return false;
}

bool chan_core::recv(void* opt) {
  chaos_point();
  mu_.lock();
  return recv_with_lock(opt);
}

bool chan_core::recv_with_lock(void* opt) RILL_NO_THREAD_SAFETY_ANALYSIS {
  for (;;) {
    const recv_result r = recv_locked_inline(*this, opt);
    if (r != recv_result::would_park) return r == recv_result::received;
    if (!flush_before_park(mu_)) break;
  }
  return park_on(*this, recvq_, opt, wait_reason::chan_recv);
}

recv_result chan_core::try_recv(void* opt) RILL_NO_THREAD_SAFETY_ANALYSIS {
  chaos_point();
  if (probe_recv() == 0) return recv_result::would_park;  // empty with no sender, and open
  mu_.lock();
  const recv_result r = recv_locked_inline(*this, opt);
  if (r == recv_result::would_park) {
    RILL_CHECK_CHAN(*this);
    mu_.unlock();
  }
  return r;
}

void chan_core::close() {
  chaos_point();
  if (!close_chunked(true)) throw closed_channel("rill::chan: close of a closed channel");
}

bool chan_core::try_close() noexcept { return close_chunked(false); }

// close_chunked(): closes the channel and wakes its waiters, close_chunk of them per turn of
// its lock: the ones a turn dequeues are woken while their lines are still in cache (a close
// that dequeued all its waiters first went through each of them twice, a cache miss each
// time when there are many). With `may_yield`, a fiber that closes in a compacting runtime
// lets the woken run between turns: the pages of compacted stacks (fiber/compact.cpp) come
// back as their waiters are dequeued, and would all be back at once before the first woken
// fiber ran and ended. Between turns the channel is closed with waiters left (I3's
// exception: draining_); whatever comes meanwhile sees it closed, as it would after the
// close.
bool chan_core::close_chunked(bool may_yield) noexcept {
  constexpr std::size_t close_chunk = 1024;
  mu_.lock();
  if (is_closed()) {
    mu_.unlock();
    return false;
  }
  closed_.store(true, std::memory_order_relaxed);
  for (;;) {
    wait_list woken;
    std::size_t n = 0;
    for (; n < close_chunk; ++n) {
      waiter* w = dequeue(recvq_);
      if (!w) w = dequeue(sendq_);
      if (!w) break;
      w->success = false;
      woken.push_back(w);
    }
    draining_ = n == close_chunk;
    RILL_CHECK_CHAN(*this);
    const bool more = draining_;
    mu_.unlock();
    while (waiter* w = woken.pop_front()) wake(w);
    if (!more) return true;
    // Only where compaction is on (options::compact_parked says so): elsewhere close() is
    // no scheduling point, and a caller may hold a lock of another library across it.
    if (worker* wk = current_worker();
        may_yield && wk && wk->running() && wk->rt->config().compact_parked_ms > 0) {
      this_fiber::yield();
    }
    mu_.lock();
  }
}

std::size_t chan_core::size() noexcept {
  mu_.lock();
  std::size_t n = count();
  mu_.unlock();
  return n;
}

bool chan_core::closed() noexcept {
  mu_.lock();
  bool c = is_closed();
  mu_.unlock();
  return c;
}

}  // namespace rill::detail
