// The netpoller: fibers that wait for I/O park, and epoll makes them runnable again.
//
// The problem. A fiber that reads a socket with no data must not hold its worker thread:
// it parks, the worker runs other fibers, and something must notice when the socket
// becomes readable and make the fiber runnable. That something must not cost a thread
// per socket, must not spin, and must not lose a readiness edge or deliver one to the
// wrong fd when fd numbers are reused.
//
// The design (Go's netpoll, on epoll):
//   - One epoll set plus one eventfd (for wake-ups) per runtime, created on first use.
//     Every fd is registered once, edge-triggered, for EPOLLIN | EPOLLOUT | EPOLLRDHUP.
//     Edge-triggered means one event per change: nothing is re-reported, so no worker
//     spins on an fd that stays readable while its fiber is busy, and the callers' rule is
//     "retry the syscall until EAGAIN, only then wait".
//   - A poll_desc per registration holds, per direction, a `ready` flag and the parked
//     waiter (poller.hpp, invariants D1-D4). An event arriving while nobody waits sets
//     `ready`; the next wait consumes it and returns at once, so an edge that arrives
//     between the EAGAIN and the park is not lost. An event arriving while a fiber waits
//     is handed to that fiber directly (D1).
//   - Who polls (sched/scheduler.cpp): a worker looking for work calls poll(0) when fibers wait on
//     I/O and no worker is blocked in epoll; one idle worker, the one holding the timer
//     sleeper role, blocks in epoll_wait with the nearest timer as its timeout instead of
//     sleeping on its futex, so timers and I/O share one wait. Waking that worker writes
//     the eventfd.
//   - Stale events. epoll_wait may return an event for a registration that another fiber
//     closes before the event is dispatched, and the descriptor may already be reused for
//     a new fd (often with the same fd number). Every event carries (index, seq) in its
//     user data; descriptors are never freed while the poller lives (so an index is always
//     valid memory), and seq changes when a registration ends (D3), so a stale event is
//     recognised under the descriptor's lock and dropped (Go's pollDesc fdseq).
//   - Closing while others use the fd. close(2) on an fd that another fiber is about to
//     read would let that read hit whatever file reuses the number. So close() only marks
//     the registration closing and wakes its waiters; the fd is closed by whoever drops
//     the last reference (D4), as Go's fdMutex does.
//   - Deadlines are timers (sched/timers.cpp) armed only while a fiber is parked, on its
//     stack. A deadline change wakes the waiter, which re-reads its deadline.
//   - Deadlock detection: a fiber parked here counts in runtime::io_waiters; the runtime
//     never calls a deadlock while it is non-zero (Go does the same with netpoll waiters).
//
// Rejected: level-triggered registration (an fd readable while its fiber is busy would be
// reported on every poll: spinning); EPOLLONESHOT re-arming (an epoll_ctl per wait);
// registering per wait (two epoll_ctl per wait; used only for the raw wait_readable on
// fds that rill does not own); a dedicated poller thread (an extra hand-off and wake per
// event; the idle worker does that job for free).
//
// Locks: a poll_desc's mu is a leaf (fibers are readied, timers armed and workers woken
// only after it is released: a wake-up is a syscall whose thread may preempt the holder);
// so is the poller's mu_. errno is copied right after each syscall: a fiber may resume on
// another thread, and errno lives in thread-local storage.
#include "io/poller.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <system_error>

#include "rill/io.hpp"
#include "sched/runtime.hpp"
#include "sync/wait.hpp"

namespace rill::detail {

namespace {

std::atomic<std::int64_t> g_io_registrations{0};

constexpr std::uint32_t read_events = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI;
constexpr std::uint32_t write_events = EPOLLOUT | EPOLLHUP | EPOLLERR;

// RILL_CHECK_DESC(cond, pd, what): in debug builds, aborts with a report naming the
// descriptor unless cond holds (poller.hpp's invariants); nothing in release builds.
#ifdef NDEBUG
#define RILL_CHECK_DESC(cond, pd, what) ((void)0)
#else
#define RILL_CHECK_DESC(cond, pd, what) ((cond) ? (void)0 : desc_broken((pd), (what)))

[[noreturn, gnu::cold]] void desc_broken(const poll_desc& pd, const char* what) noexcept {
  std::fprintf(stderr, "rill: poll descriptor %u (fd %d): invariant %s (src/io/poller.hpp)\n",
               pd.index, pd.fd, what);
  std::abort();
}
#endif

// check_d1(): D1 in both directions of pd (under pd.mu; debug builds).
inline void check_d1([[maybe_unused]] const poll_desc& pd) noexcept {
  for ([[maybe_unused]] const auto& d : pd.dir) {
    RILL_CHECK_DESC(!(d.waiter && d.ready), pd, "D1: a waiter parked while an edge is ready");
  }
}

// handoff(): readiness for direction d of pd (under pd->mu): to the waiter if there is
// one (returned, to be readied by the caller), else kept in the ready flag (D1, D2).
fiber* handoff(poll_desc& pd, int d, io_waiter::result_t result) noexcept {
  poll_desc::direction& dir = pd.dir[d];
  io_waiter* w = dir.waiter;
  if (!w) {
    if (result == io_waiter::ready) dir.ready = true;
    check_d1(pd);
    return nullptr;
  }
  RILL_CHECK_DESC(w->f && w->result == io_waiter::pending, pd,
                  "D7: a linked waiter with no fiber, or already answered");
  dir.waiter = nullptr;
  w->result = result;
  check_d1(pd);
  return w->f;
}

void wake(fiber* f) noexcept {
  if (f) f->rt->ready(f, ready_slot::queue);
}

}  // namespace

// ---- poller ------------------------------------------------------------------------------

poller::poller(runtime* rt) : rt_(rt) {
  epfd_ = ::epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw_os_error(errno, "rill: epoll_create1");
  evfd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (evfd_ < 0) {
    const int err = errno;
    ::close(epfd_);
    throw_os_error(err, "rill: eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: reported until the blocked worker drains it
  ev.data.u64 = wake_token;
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, evfd_, &ev) != 0) {
    const int err = errno;
    ::close(evfd_);
    ::close(epfd_);
    throw_os_error(err, "rill: epoll_ctl(eventfd)");
  }
}

poller::~poller() {
  ::close(evfd_);
  ::close(epfd_);
  for (std::uint32_t i = 0; i < nchunks_; ++i) {
    poll_desc* chunk = chunks_[i].load(std::memory_order_relaxed);
    for (std::uint32_t k = 0; k < chunk_size; ++k) chunk[k].~poll_desc();
    ::operator delete(chunk, std::align_val_t(alignof(poll_desc)));
  }
}

void poller::release() noexcept {
  if (refs_.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
}

poll_desc* poller::allocate() {
  lock_guard lk(mu_);
  if (!free_) {
    if (nchunks_ == max_chunks) throw_os_error(EMFILE, "rill: too many registered fds");
    void* mem =
        ::operator new(sizeof(poll_desc) * chunk_size, std::align_val_t(alignof(poll_desc)));
    auto* chunk = static_cast<poll_desc*>(mem);
    for (std::uint32_t k = chunk_size; k-- > 0;) {
      poll_desc* pd = ::new (chunk + k) poll_desc();
      pd->index = nchunks_ * chunk_size + k;
      pd->owner = this;
      pd->next_free = free_;
      free_ = pd;
    }
    chunks_[nchunks_++].store(chunk, std::memory_order_release);
  }
  poll_desc* pd = free_;
  free_ = pd->next_free;
  pd->next_free = nullptr;
  return pd;
}

io_ref poller::open(int fd, bool owns_fd) {
  poll_desc* pd = allocate();
  struct stat st;
  const bool is_socket = ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
  std::uint32_t seq;
  pd->mu.lock();
  seq = poll_desc::seq_of(pd->state.load(std::memory_order_relaxed));
  RILL_CHECK_DESC(desc(pd->index) == pd && pd->owner == this, *pd,
                  "D6: the table does not name the descriptor at its index");
  RILL_CHECK_DESC((pd->state.load(std::memory_order_relaxed) & ~(~0ULL << 32)) == 0 &&
                      pd->fd == -1 && !pd->owns_fd,
                  *pd, "D5: a free descriptor holds a registration");
  for ([[maybe_unused]] const auto& d : pd->dir) {
    RILL_CHECK_DESC(!d.waiter && !d.ready, *pd, "D5: a free descriptor has a waiter or an edge");
  }
  pd->fd = fd;
  pd->owns_fd = owns_fd;
  pd->is_socket = is_socket;
  for (auto& d : pd->dir) {
    d.ready = false;
    d.waiter = nullptr;
    d.deadline.store(INT64_MAX, std::memory_order_relaxed);
  }
  pd->state.store((static_cast<std::uint64_t>(seq) << 32) | 1, std::memory_order_release);
  pd->mu.unlock();
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = (static_cast<std::uint64_t>(seq) << 32) | pd->index;
  retain();
  g_io_registrations.fetch_add(1, std::memory_order_relaxed);
  if (::epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
    const int err = errno;
    pd->owns_fd = false;  // the caller keeps its fd when registering fails
    pd->state.fetch_or(poll_desc::closing_bit, std::memory_order_acq_rel);
    pd->state.fetch_sub(1, std::memory_order_acq_rel);
    // Not in the epoll set: no EPOLL_CTL_DEL. With EEXIST the fd is there under another
    // registration (a rill socket's fd passed to wait_readable), which a DEL would remove.
    finish(pd, false);
    throw_os_error(err, "rill: epoll_ctl(EPOLL_CTL_ADD)");
  }
  return {pd, seq};
}

void poller::finish(poll_desc* pd, bool added) noexcept {
  RILL_CHECK_DESC(
      (pd->state.load(std::memory_order_acquire) & ~(~0ULL << 32)) == poll_desc::closing_bit, *pd,
      "D4: a registration ended with references left or not closing");
  // Deregister before closing: after close(2) the number may name another file at once.
  if (added) {
    epoll_event ev{};
    ::epoll_ctl(epfd_, EPOLL_CTL_DEL, pd->fd, &ev);
  }
  if (pd->owns_fd) ::close(pd->fd);
  pd->mu.lock();
  const std::uint32_t seq = poll_desc::seq_of(pd->state.load(std::memory_order_relaxed));
  pd->state.store(static_cast<std::uint64_t>(seq + 1) << 32, std::memory_order_release);  // D3
  pd->fd = -1;
  pd->owns_fd = false;
  for (auto& d : pd->dir) {
    d.ready = false;
    RILL_CHECK_DESC(!d.waiter, *pd, "D5: a registration ended with a waiter linked");
  }
  pd->mu.unlock();
  {
    lock_guard lk(mu_);
    pd->next_free = free_;
    free_ = pd;
  }
  g_io_registrations.fetch_sub(1, std::memory_order_relaxed);
  release();
}

int poller::poll(std::int64_t timeout_ns, fiber** out, bool* woken) noexcept {
  epoll_event evs[max_events];
  int n;
  if (timeout_ns == 0) {
    n = ::epoll_wait(epfd_, evs, max_events, 0);
  } else {
    timespec ts{};
    timespec* tp = nullptr;
    if (timeout_ns > 0) {
      ts.tv_sec = static_cast<time_t>(timeout_ns / 1'000'000'000);
      ts.tv_nsec = static_cast<long>(timeout_ns % 1'000'000'000);
      tp = &ts;
    }
    n = ::epoll_pwait2(epfd_, evs, max_events, tp, nullptr);
    if (n < 0 && errno == ENOSYS) {  // kernel < 5.11: millisecond timeouts, rounded up
      const std::int64_t ms = timeout_ns < 0 ? -1 : (timeout_ns + 999'999) / 1'000'000;
      n = ::epoll_wait(epfd_, evs, max_events,
                       static_cast<int>(std::min<std::int64_t>(ms, INT32_MAX)));
    }
  }
  if (n <= 0) return 0;  // EINTR: the caller loops
  int count = 0;
  for (int i = 0; i < n; ++i) {
    const std::uint64_t data = evs[i].data.u64;
    if (data == wake_token) {
      *woken = true;
      continue;
    }
    const auto index = static_cast<std::uint32_t>(data);
    const auto seq = static_cast<std::uint32_t>(data >> 32);
    poll_desc* pd = desc(index);
    const std::uint32_t e = evs[i].events;
    fiber* r = nullptr;
    fiber* w = nullptr;
    pd->mu.lock();
    if (poll_desc::seq_of(pd->state.load(std::memory_order_relaxed)) == seq) {  // D3: else stale
      if (e & read_events) r = handoff(*pd, io_read, io_waiter::ready);
      if (e & write_events) w = handoff(*pd, io_write, io_waiter::ready);
    }
    pd->mu.unlock();
    if (r) out[count++] = r;
    if (w) out[count++] = w;
  }
  return count;
}

void poller::wakeup() noexcept {
  const std::uint64_t one = 1;
  ssize_t r = ::write(evfd_, &one, sizeof one);
  (void)r;  // EAGAIN: the counter is already non-zero, which is all a wake-up needs
}

void poller::drain_wakeup() noexcept {
  std::uint64_t v;
  ssize_t r = ::read(evfd_, &v, sizeof v);
  (void)r;
}

// ---- waiting -------------------------------------------------------------------------------

namespace {

struct io_timer : timer {
  poll_desc* pd = nullptr;
  int dir = 0;
  io_waiter* me = nullptr;
};

struct io_park {
  ranked_spinlock* mu;
  runtime* rt;
};

// io_wait()'s after-switch action: releases the descriptor's lock (not analysed: the
// analysis cannot follow a lock through a context switch, nor therefore io_wait()).
void after_io_park(machine_context*, void* arg) noexcept RILL_NO_THREAD_SAFETY_ANALYSIS {
  auto* p = static_cast<io_park*>(arg);
  runtime* rt = p->rt;  // *p ends once the fiber can be woken
  p->mu->unlock();
  // With no lock held (a wake-up is a syscall, and its thread may preempt this one):
  // make sure some worker polls.
  rt->io_parking(*current_worker());
}

struct io_cancel {
  poll_desc* pd;
  int dir;
  io_waiter* me;
  static void run(void* a) {
    auto* c = static_cast<io_cancel*>(a);
    c->pd->mu.lock();
    if (c->pd->dir[c->dir].waiter == c->me) {
      RILL_CHECK_DESC(c->me->result == io_waiter::pending, *c->pd,
                      "D7: a cancelled waiter already answered");
      c->pd->dir[c->dir].waiter = nullptr;
    }
    c->pd->mu.unlock();
  }
};

bool seq_matches(const poll_desc& pd, std::uint32_t seq) noexcept {
  return poll_desc::seq_of(pd.state.load(std::memory_order_acquire)) == seq;
}

bool is_open(const poll_desc& pd, std::uint32_t seq) noexcept {
  const std::uint64_t s = pd.state.load(std::memory_order_acquire);
  return poll_desc::seq_of(s) == seq && !(s & poll_desc::closing_bit);
}

// wait_thread(): a plain thread waits in poll(2), in slices so that a close from elsewhere
// is noticed.
io_status wait_thread(poll_desc& pd, std::uint32_t seq, int dir) {
  constexpr std::int64_t slice_ns = 50'000'000;
  external_wait counted;  // a fiber it will wake is not deadlocked
  for (;;) {
    if (!is_open(pd, seq)) return io_status::closed;
    const std::int64_t deadline = pd.dir[dir].deadline.load(std::memory_order_acquire);
    std::int64_t left = slice_ns;
    if (deadline != INT64_MAX) {
      left = std::min(left, deadline - now_ns());
      if (left <= 0) return io_status::timeout;
    }
    pollfd p{pd.fd, static_cast<short>(dir == io_read ? POLLIN : POLLOUT), 0};
    const int r = ::poll(&p, 1, static_cast<int>((left + 999'999) / 1'000'000));
    if (r > 0) return io_status::ready;
  }
}

}  // namespace

io_status io_wait(io_ref ref, int dir) RILL_NO_THREAD_SAFETY_ANALYSIS {
  poll_desc& pd = *ref.pd;
  fiber* self = current_fiber();
  if (!self) return wait_thread(pd, ref.seq, dir);
  flush_before_park();
  runtime* rt = self->rt;
  if (pd.owner->rt() != rt) {
    throw std::logic_error("rill: an fd registered in one runtime waited on from another");
  }
  poll_desc::direction& d = pd.dir[dir];
  io_waiter me{self, io_waiter::pending};
  // The deadline's timer is armed with no lock held (arm() may wake a worker), before the
  // waiter is visible; a timer that fires while nobody waits does nothing, and the wait
  // then sees its deadline passed.
  io_timer tm;
  tm.pd = &pd;
  tm.dir = dir;
  tm.me = &me;
  tm.fire = [](timer* t) noexcept {
    auto* it = static_cast<io_timer*>(t);
    poll_desc& p = *it->pd;
    p.mu.lock();
    fiber* f = p.dir[it->dir].waiter == it->me ? handoff(p, it->dir, io_waiter::recheck) : nullptr;
    p.mu.unlock();
    t->fired();  // before waking: the timer lives on the woken fiber's stack
    wake(f);
  };
  bool armed = false;
  auto disarm = [&]() noexcept {
    if (armed) rt->cancel(tm);  // returns once a concurrent fire() is done with tm
    armed = false;
  };
  pd.mu.lock();
  for (;;) {
    if (!is_open(pd, ref.seq)) {
      pd.mu.unlock();
      disarm();
      return io_status::closed;
    }
    if (d.ready) {
      d.ready = false;
      pd.mu.unlock();
      disarm();
      return io_status::ready;
    }
    const std::int64_t deadline = d.deadline.load(std::memory_order_acquire);
    if (deadline != INT64_MAX && deadline <= now_ns()) {
      pd.mu.unlock();
      disarm();
      return io_status::timeout;
    }
    if (d.waiter) {
      pd.mu.unlock();
      disarm();
      throw std::logic_error(dir == io_read
                                 ? "rill: two fibers read (or accept on) one fd at the same time"
                                 : "rill: two fibers write one fd at the same time");
    }
    if (armed ? tm.when != deadline : deadline != INT64_MAX) {
      pd.mu.unlock();
      disarm();
      if (deadline != INT64_MAX) {
        tm.when = deadline;
        tm.state.store(timer_state::idle, std::memory_order_relaxed);
        rt->arm(tm);
        armed = true;
      }
      pd.mu.lock();
      continue;  // look again: the fd may be ready or closed by now
    }
    me.result = io_waiter::pending;
    d.waiter = &me;
    check_d1(pd);
    // Counted until this fiber runs again, not until it is readied: a fiber on its way
    // from the poller to a run queue must not look like a deadlock.
    rt->io_waiters.fetch_add(1, std::memory_order_seq_cst);
    io_park park{&pd.mu, rt};
    io_cancel cancel{&pd, dir, &me};
    try {
      park_fiber(self, dir == io_read ? wait_reason::io_read : wait_reason::io_write, &pd,
                 after_io_park, &park, &io_cancel::run, &cancel);
    } catch (...) {
      rt->io_waiters.fetch_sub(1, std::memory_order_seq_cst);
      disarm();
      throw;
    }
    rt->io_waiters.fetch_sub(1, std::memory_order_seq_cst);
    RILL_CHECK_DESC(me.result != io_waiter::pending, pd,
                    "D2: a parked fiber resumed with no answer (nobody unlinked its waiter)");
    switch (me.result) {
      case io_waiter::ready:
        disarm();
        return io_status::ready;
      case io_waiter::closed:
        disarm();
        return io_status::closed;
      default:
        break;  // a deadline passed or changed: look again
    }
    pd.mu.lock();
    RILL_CHECK_DESC(d.waiter != &me, pd, "D2: a woken fiber's waiter is still linked");
  }
}

io_ref io_open(int fd, bool owns_fd) {
  runtime* rt = current_runtime();
  if (!rt) rt = default_runtime();
  return rt->io_poller()->open(fd, owns_fd);
}

bool io_acquire(io_ref r) noexcept {
  if (!r.pd) return false;
  std::uint64_t s = r.pd->state.load(std::memory_order_relaxed);
  for (;;) {
    if (poll_desc::seq_of(s) != r.seq || (s & poll_desc::closing_bit)) return false;
    if (r.pd->state.compare_exchange_weak(s, s + 1, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
      return true;
    }
  }
}

void io_release(io_ref r) noexcept {
  const std::uint64_t s = r.pd->state.fetch_sub(1, std::memory_order_acq_rel) - 1;
  RILL_CHECK_DESC(((s + 1) & poll_desc::refs_mask) != 0, *r.pd,
                  "D4: a reference released that was not held");
  if ((s & ~(~0ULL << 32)) == poll_desc::closing_bit) r.pd->owner->finish(r.pd);  // D4
}

void io_close(io_ref r) noexcept {
  if (!r.pd) return;
  poll_desc& pd = *r.pd;
  std::uint64_t s = pd.state.load(std::memory_order_relaxed);
  for (;;) {
    if (poll_desc::seq_of(s) != r.seq || (s & poll_desc::closing_bit)) return;
    if (pd.state.compare_exchange_weak(s, s | poll_desc::closing_bit, std::memory_order_acq_rel,
                                       std::memory_order_relaxed)) {
      break;
    }
  }
  pd.mu.lock();
  fiber* a = handoff(pd, io_read, io_waiter::closed);
  fiber* b = handoff(pd, io_write, io_waiter::closed);
  pd.mu.unlock();
  wake(a);
  wake(b);
  io_release(r);  // the owner's reference
}

int io_fd(io_ref r) noexcept { return r.pd ? r.pd->fd : -1; }

void io_set_deadline(io_ref r, int dir, std::int64_t when_ns) noexcept {
  if (!r.pd) return;
  poll_desc& pd = *r.pd;
  pd.mu.lock();
  if (!seq_matches(pd, r.seq)) {
    pd.mu.unlock();
    return;
  }
  pd.dir[dir].deadline.store(when_ns, std::memory_order_release);
  fiber* f = handoff(pd, dir, io_waiter::recheck);
  pd.mu.unlock();
  wake(f);
}

void io_interrupt(io_ref r, int dir) noexcept {
  if (!r.pd) return;
  poll_desc& pd = *r.pd;
  pd.mu.lock();
  fiber* f = seq_matches(pd, r.seq) ? handoff(pd, dir, io_waiter::ready) : nullptr;
  pd.mu.unlock();
  wake(f);
}

long io_try_read(io_ref r, void* buf, std::size_t n, const char* what) {
  for (;;) {
    const ssize_t got = ::read(r.pd->fd, buf, n);
    if (got >= 0) return static_cast<long>(got);
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return -1;
    throw_os_error(err, what);
  }
}

long io_try_write(io_ref r, const void* buf, std::size_t n, const char* what) {
  for (;;) {
    const ssize_t put =
        r.pd->is_socket ? ::send(r.pd->fd, buf, n, MSG_NOSIGNAL) : ::write(r.pd->fd, buf, n);
    if (put >= 0) return static_cast<long>(put);
    const int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) return -1;
    throw_os_error(err, what);
  }
}

long io_read_some(io_ref r, void* buf, std::size_t n, const std::atomic<bool>* stop,
                  const char* what) {
  const int fd = r.pd->fd;
  for (;;) {
    const ssize_t got = ::read(fd, buf, n);
    if (got >= 0) return static_cast<long>(got);
    const int err = errno;  // copied before anything that may switch threads
    if (err == EINTR) continue;
    if (err != EAGAIN && err != EWOULDBLOCK) throw_os_error(err, what);
    if (stop && stop->load(std::memory_order_acquire)) return -1;
    const io_status s = io_wait(r, io_read);
    if (s != io_status::ready) throw_io_status(s, what);
  }
}

long io_write_some(io_ref r, const void* buf, std::size_t n, const std::atomic<bool>* stop,
                   const char* what) {
  const int fd = r.pd->fd;
  const bool sock = r.pd->is_socket;
  for (;;) {
    const ssize_t put = sock ? ::send(fd, buf, n, MSG_NOSIGNAL) : ::write(fd, buf, n);
    if (put >= 0) return static_cast<long>(put);
    const int err = errno;
    if (err == EINTR) continue;
    if (err != EAGAIN && err != EWOULDBLOCK) throw_os_error(err, what);
    if (stop && stop->load(std::memory_order_acquire)) return -1;
    const io_status s = io_wait(r, io_write);
    if (s != io_status::ready) throw_io_status(s, what);
  }
}

std::size_t io_live_registrations() noexcept {
  return static_cast<std::size_t>(g_io_registrations.load(std::memory_order_relaxed));
}

void throw_os_error(int err, const char* what) {
  throw std::system_error(err, std::system_category(), what);
}

void throw_io_status(io_status s, const char* what) {
  throw std::system_error(
      make_error_code(s == io_status::timeout ? io_errc::deadline_exceeded : io_errc::closed),
      what);
}

}  // namespace rill::detail

// ---- the public wait functions and error category ----------------------------------------

namespace rill {

namespace {

class io_category_impl final : public std::error_category {
 public:
  const char* name() const noexcept override { return "rill.io"; }
  std::string message(int c) const override {
    switch (static_cast<io_errc>(c)) {
      case io_errc::deadline_exceeded:
        return "i/o deadline exceeded";
      case io_errc::closed:
        return "use of a closed connection";
      case io_errc::unexpected_eof:
        return "unexpected end of stream";
    }
    return "unknown rill.io error";
  }
  bool equivalent(int c, const std::error_condition& cond) const noexcept override {
    switch (static_cast<io_errc>(c)) {
      case io_errc::deadline_exceeded:
        return cond == std::errc::timed_out;
      case io_errc::closed:
        return cond == std::errc::bad_file_descriptor;
      default:
        return default_error_condition(c) == cond;
    }
  }
};

// wait_raw(): a registration for one wait on an fd that rill does not own.
bool wait_raw(int fd, io_deadline deadline, int dir) {
  const std::int64_t when =
      deadline == no_deadline
          ? INT64_MAX
          : std::chrono::duration_cast<std::chrono::nanoseconds>(deadline.time_since_epoch())
                .count();
  if (!detail::current_fiber()) {
    detail::external_wait counted;  // a fiber it will wake is not deadlocked
    for (;;) {
      std::int64_t left_ms = -1;
      if (when != INT64_MAX) {
        const std::int64_t left = when - detail::now_ns();
        if (left <= 0)
          left_ms = 0;
        else
          left_ms = std::min<std::int64_t>((left + 999'999) / 1'000'000, INT32_MAX);
      }
      pollfd p{fd, static_cast<short>(dir == detail::io_read ? POLLIN : POLLOUT), 0};
      const int r = ::poll(&p, 1, static_cast<int>(left_ms));
      const int err = errno;
      if (r > 0) {
        if (p.revents & POLLNVAL) detail::throw_os_error(EBADF, "rill::wait_readable/writable");
        return true;
      }
      if (r == 0) return false;
      if (err != EINTR) detail::throw_os_error(err, "rill::wait_readable/writable: poll");
    }
  }
  int reg_fd = fd;
  detail::io_ref ref;
  try {
    ref = detail::io_open(reg_fd, false);
  } catch (const std::system_error& e) {
    if (e.code() == std::errc::operation_not_permitted) return true;  // a regular file
    if (e.code() != std::errc::file_exists) throw;
    // Already registered (a rill socket's fd): wait on a duplicate, which epoll tracks
    // separately but which has the same readiness.
    reg_fd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (reg_fd < 0) detail::throw_os_error(errno, "rill::wait_readable/writable: dup");
    try {
      ref = detail::io_open(reg_fd, true);
    } catch (...) {
      ::close(reg_fd);
      throw;
    }
  }
  detail::io_set_deadline(ref, dir, when);
  detail::io_status s;
  try {
    s = detail::io_wait(ref, dir);
  } catch (...) {
    detail::io_close(ref);
    throw;
  }
  detail::io_close(ref);
  return s == detail::io_status::ready;
}

}  // namespace

const std::error_category& io_category() noexcept {
  static const io_category_impl c;
  return c;
}

bool wait_readable(int fd, io_deadline deadline) { return wait_raw(fd, deadline, detail::io_read); }
bool wait_writable(int fd, io_deadline deadline) {
  return wait_raw(fd, deadline, detail::io_write);
}

}  // namespace rill
