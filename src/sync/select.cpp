// select over channel cases (Go's selectgo).
//
// 1. Lock every distinct channel of the select in address order (no lock-order deadlock
//    between two selects).
// 2. Visit the cases in a random order (Go's pollorder: fairness among ready cases) and run
//    the first ready one. Else run the default case if there is one; else run an expired
//    timeout.
// 3. Otherwise park: put one waiter per channel case on that channel's queue (in the random
//    poll order, so that cases sharing a channel are equally likely to be taken), all pointing
//    at one select_state; the channel locks are released only once the fiber is parked
//    (after-switch action), and the timeout's timer is armed then too. Whoever wins the
//    claim on select_state::done completes that case and wakes us.
// 4. Woken: lock the channels again and take our remaining waiters off their queues. If the
//    case that won could not be completed (its value's move threw), run again from 1.
#include <algorithm>
#include <memory>
#include <new>
#include <vector>

#include "sched/futex.hpp"
#include "sync/chan_internal.hpp"
#include "sync/wait.hpp"

namespace rill::detail {
namespace {

[[gnu::noinline]] std::uint64_t select_random() noexcept {
  static thread_local std::uint64_t s = 0;
  std::uint64_t* p = &s;
  asm volatile("" : "+r"(p)::"memory");
  if (*p == 0) *p = static_cast<std::uint64_t>(now_ns()) | 1;
  return next_random(*p);
}

// select_timer: a parked select's timeout. On the heap, with two owners: the select, and
// the after-park action that arms it once the channels are unlocked (by then the select may
// have been woken and have returned). The last owner to let go frees it.
struct select_timer : timer {
  select_state* st = nullptr;
  std::uint32_t index = 0;
  std::atomic<int> owners{2};
  void let_go() noexcept {
    if (owners.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }
};

struct parked_select {
  chan_core** locks;
  std::size_t nlocks;
  select_timer* tm;
  runtime* rt;
  select_case* cases;
  waiter* ws;
  std::size_t n;
};

// A select locks a set of channels known only at run time, in address order; the analysis
// cannot name such a set, so the functions that lock it are not analysed.
void lock_all(chan_core** locks, std::size_t n) noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
  for (std::size_t i = 0; i < n; ++i) locks[i]->mu_.lock();
}
void unlock_all(chan_core** locks, std::size_t n) noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
  for (std::size_t i = n; i-- > 0;) locks[i]->mu_.unlock();
}

void unlink_waiters(const parked_select& p) noexcept {
  lock_all(p.locks, p.nlocks);
  for (std::size_t i = 0; i < p.n; ++i) {
    waiter& w = p.ws[i];
    if (!w.linked) continue;
    chan_core* c = p.cases[i].ch;
    (p.cases[i].kind == case_kind::recv ? c->recvq_ : c->sendq_).remove(&w);
  }
  unlock_all(p.locks, p.nlocks);
}

void after_park(machine_context*, void* arg) noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
  // Read *p before unlocking: once the channels are unlocked the select may be woken and
  // return, ending *p. Arm only after unlocking: arm() may wake a worker (a syscall), and
  // the woken thread may preempt this one while it still holds the channel spinlocks; the
  // select, readied by its timer, then spun on them for the rest of a time slice (a
  // microsecond timeout took a whole time slice on a loaded machine). A select woken before the arm
  // has cancelled the timer, and arm() then leaves it alone.
  auto* p = static_cast<parked_select*>(arg);
  select_timer* tm = p->tm;
  runtime* rt = p->rt;
  unlock_all(p->locks, p->nlocks);
  if (tm) {
    rt->arm(*tm);
    tm->let_go();
  }
}

// run_locked() runs channel case sc holding its channel's lock and no other: true when it
// ran (the lock released), false when it could not after all (only lost select waiters were
// queued, dropped now; the lock still held). A send on a closed channel releases the lock
// and throws.
bool run_locked(select_case& sc) RILL_NO_THREAD_SAFETY_ANALYSIS {
  chan_core& c = *sc.ch;
  if (sc.kind == case_kind::recv) return recv_locked(c, sc.slot) != recv_result::would_park;
  if (c.is_closed()) {
    c.mu_.unlock();
    throw closed_channel("rill::select: send on a closed channel");
  }
  return send_locked(c, sc.slot);
}

// select_once() is one pass of select_core(); `again` when a handover to the parked select
// failed and it must run again.
constexpr std::size_t again = static_cast<std::size_t>(-1);
std::size_t select_once(select_case* cases, std::size_t n);

}  // namespace

std::size_t select_core(select_case* cases, std::size_t n) {
  for (;;) {
    const std::size_t won = select_once(cases, n);
    if (won != again) return won;
  }
}

namespace {

std::size_t select_once(select_case* cases, std::size_t n) RILL_NO_THREAD_SAFETY_ANALYSIS {
  chaos_point();
  std::size_t dflt = n, tmo = n;  // the default, and the earliest timeout
  auto note_special = [&](std::size_t i) {
    if (cases[i].kind == case_kind::otherwise) {
      dflt = i;
    } else if (cases[i].kind == case_kind::timeout) {
      if (tmo == n || cases[i].deadline < cases[tmo].deadline) tmo = i;
    }
  };

  // Fast paths: lock-free probes of every channel case (Go takes such a path for a single
  // case with a default only).
  //   - Some cases look ready: pick one of them uniformly (what the first ready case of a
  //     random poll order would be) and run it under its own channel's lock alone.
  //   - None looks ready and there is a default: run the default without taking any lock,
  //     provided every channel was unchanged from before its probe to after the last probe
  //     (a double collect through the channels' sequence locks), so that at that instant no
  //     case was ready.
  //   - Otherwise, or if the chosen case was not ready after all (a lost select waiter), the
  //     full path below decides under every lock.
  if (n <= 16) {
    std::uint32_t seq[16];
    std::uint32_t ready[16];
    std::uint32_t nready = 0;
    for (std::size_t i = 0; i < n; ++i) {
      const select_case& sc = cases[i];
      if (sc.kind != case_kind::recv && sc.kind != case_kind::send) {
        note_special(i);
      } else if (sc.ch) {
        seq[i] = sc.ch->mu_.read_begin();
        const bool r = sc.kind == case_kind::recv ? sc.ch->recv_ready() : sc.ch->send_ready();
        if (r) ready[nready++] = static_cast<std::uint32_t>(i);
      }
    }
    if (nready == 0 && dflt != n) {
      bool unchanged = true;
      for (std::size_t i = 0; i < n && unchanged; ++i) {
        const select_case& sc = cases[i];
        if (sc.ch && (sc.kind == case_kind::recv || sc.kind == case_kind::send)) {
          unchanged = sc.ch->mu_.read_valid(seq[i]);
        }
      }
      if (unchanged) return dflt;
    } else if (nready > 0) {
      const std::uint32_t i =
          nready == 1 ? ready[0]
                      : ready[((select_random() & 0xffffffffu) * std::uint64_t{nready}) >> 32];
      chan_core& c = *cases[i].ch;
      c.mu_.lock();
      if (run_locked(cases[i])) return i;
      c.mu_.unlock();
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) note_special(i);
  }

  // Nothing was ready: the select may park. The fiber's park hooks run first, with no
  // lock held (what they flush may make a case ready: the full path below looks again).
  if (dflt == n) flush_before_park();

  // Random poll order (Fisher-Yates; each draw takes 32 random bits, scaled to [0, i] by a
  // multiply and shift rather than a division).
  std::uint32_t order_buf[16];
  std::unique_ptr<std::uint32_t[]> order_heap;
  std::uint32_t* order = order_buf;
  if (n > 16) {
    order_heap.reset(new std::uint32_t[n]);
    order = order_heap.get();
  }
  order[0] = 0;
  std::uint64_t bits = 0;
  for (std::uint32_t i = 1; i < n; ++i) {
    if ((i & 1) == 1) bits = select_random();
    const std::uint32_t j =
        static_cast<std::uint32_t>(((bits & 0xffffffffu) * (std::uint64_t{i} + 1)) >> 32);
    bits >>= 32;
    order[i] = order[j];
    order[j] = i;
  }

  // Distinct channels, in lock order (no lock-order deadlock between two selects).
  chan_core* lock_buf[16];
  std::unique_ptr<chan_core*[]> lock_heap;
  chan_core** locks = lock_buf;
  if (n > 16) {
    lock_heap.reset(new chan_core*[n]);
    locks = lock_heap.get();
  }
  std::size_t nlocks = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if (cases[i].ch && (cases[i].kind == case_kind::recv || cases[i].kind == case_kind::send)) {
      locks[nlocks++] = cases[i].ch;
    }
  }
  std::sort(locks, locks + nlocks);
  nlocks = static_cast<std::size_t>(std::unique(locks, locks + nlocks) - locks);

  // More than 8 cases: the waiters of a parking select go on the heap, allocated before any
  // channel is locked (a failed allocation must not leave a channel locked).
  std::unique_ptr<waiter[]> ws_heap;
  if (n > 8) ws_heap.reset(new waiter[n]);

  // A case that looks ready may hold only lost select waiters (their selects were won
  // elsewhere). Trying it drops them, but with the other channels unlocked (send_locked and
  // recv_locked release only c.mu_ on success, so the others are released first); while
  // they were unlocked a partner may have parked on a case visited before. So after a
  // failed try the scan starts over under all the locks: each try drops at least one lost
  // waiter, so this ends. (Continuing the scan instead let a receiving select park beside
  // a parked sender on one channel: both waited for ever; Go's TestSelectStress under
  // RILL_SCHED_SEED=11 deadlocked about once in 100 runs.)
  lock_all(locks, nlocks);
  for (std::size_t k = 0; k < n;) {
    const std::uint32_t i = order[k++];
    select_case& sc = cases[i];
    if (!sc.ch) continue;
    chan_core& c = *sc.ch;
    if (!(sc.kind == case_kind::recv ? c.recv_ready() : c.send_ready())) continue;
    for (std::size_t l = 0; l < nlocks; ++l) {
      if (locks[l] != &c) locks[l]->mu_.unlock();
    }
    if (run_locked(sc)) return i;
    c.mu_.unlock();
    lock_all(locks, nlocks);
    k = 0;
  }
  if (dflt != n) {
    unlock_all(locks, nlocks);
    return dflt;
  }
  if (tmo != n && cases[tmo].deadline <= now_ns()) {
    unlock_all(locks, nlocks);
    return tmo;
  }
  if (nlocks == 0 && tmo == n) {
    unlock_all(locks, nlocks);
    // Go: a select with no cases (or only nil channels) blocks forever.
    throw std::logic_error("rill::select: no case can ever be ready (only nil channels)");
  }

  // Park.
  select_state st;
  fiber* self = current_fiber();
  st.who = self;
  select_timer* tm_owned = nullptr;  // a plain thread uses the futex deadline instead
  if (self && tmo != n) {
    tm_owned = new (std::nothrow) select_timer;
    if (!tm_owned) {
      unlock_all(locks, nlocks);
      throw std::bad_alloc();
    }
  }
  waiter ws_buf[8];
  waiter* ws = ws_heap ? ws_heap.get() : ws_buf;
  // Enqueue in the random poll order too: when several of our cases wait on one channel
  // (two send cases of one channel, say), the partner that comes takes the first waiter,
  // so index order would always pick the earlier case (Go's TestPseudoRandomSend).
  for (std::size_t k = 0; k < n; ++k) {
    const std::uint32_t i = order[k];
    select_case& sc = cases[i];
    if (!sc.ch || sc.kind == case_kind::timeout || sc.kind == case_kind::otherwise) continue;
    waiter& w = ws[i];
    w.select = &st;
    w.index = static_cast<int>(i);
    w.slot = sc.slot;
    w.who = self;
    (sc.kind == case_kind::recv ? sc.ch->recvq_ : sc.ch->sendq_).push_back(&w);
  }
  parked_select p{locks, nlocks, nullptr, nullptr, cases, ws, n};
  if (self && tmo != n) {
    p.tm = tm_owned;
    p.rt = self->rt;
    p.tm->st = &st;
    p.tm->index = static_cast<std::uint32_t>(tmo);
    p.tm->when = cases[tmo].deadline;
    p.tm->fire = [](timer* t) noexcept {
      auto* s = static_cast<select_timer*>(t);
      select_state* state = s->st;
      std::uint32_t open = 0;
      const bool won =
          state->done.compare_exchange_strong(open, s->index + 1, std::memory_order_acq_rel);
      s->fired();
      if (won) state->wake();
    };
  }

  if (self) {
    struct cancel_t {
      parked_select* p;
      static void run(void* a) { unlink_waiters(*static_cast<cancel_t*>(a)->p); }
    } cancel{&p};
    try {
      park_fiber(self, wait_reason::select, nullptr, after_park, &p, &cancel_t::run, &cancel);
    } catch (...) {
      if (p.tm) {
        self->rt->cancel(*p.tm);
        p.tm->let_go();
      }
      throw;
    }
    if (p.tm) {
      // Not won by the timer: cancel it (armed or not yet: see after_park).
      if (st.done.load(std::memory_order_acquire) != tmo + 1) {
        self->rt->cancel(*p.tm);
        // cancel() returns false on a timer whose fire() already ended, having read the
        // state relaxed under timer_mu_, which fire() does not hold. Read it again with
        // acquire, pairing with fired()'s release, so that the firing worker's last reads
        // of the timer happen before let_go() may free it (TSan saw this race).
        (void)p.tm->state.load(std::memory_order_acquire);
      }
      p.tm->let_go();
    }
  } else {
    // A plain thread: block on the futex, with the timeout as the futex deadline.
    external_wait counted;
    unlock_all(locks, nlocks);
    for (;;) {
      if (st.futex.load(std::memory_order_acquire) != 0) break;
      std::int64_t left = -1;
      if (tmo != n) {
        left = cases[tmo].deadline - now_ns();
        if (left <= 0) {
          std::uint32_t open = 0;
          if (st.done.compare_exchange_strong(open, static_cast<std::uint32_t>(tmo) + 1,
                                              std::memory_order_acq_rel)) {
            break;
          }
          left = -1;  // a channel won meanwhile: its waker is on the way
        }
      }
      futex_wait(st.futex, 0, left);
    }
  }
  const std::uint32_t done = st.done.load(std::memory_order_acquire);
  unlink_waiters(p);
  if (done == select_state::retry) return again;
  const std::size_t won = done - 1;
  if (won != tmo && cases[won].kind == case_kind::send && !ws[won].success) {
    throw closed_channel("rill::select: send on a closed channel");
  }
  return won;
}

}  // namespace
}  // namespace rill::detail
