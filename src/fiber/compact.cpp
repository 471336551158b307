// Compaction of long-parked fibers' stacks: the protocol.
//
// What it is for. A program that holds a fiber per connection parks most of them most of the
// time, each holding the pages its stack has touched (at least its top page: record,
// closure, the frames down to the park), while the bytes in use are a fraction of that. The
// service keeps those bytes and gives the pages back; a fiber's addresses never change, so
// every pointer into its stack (a waiter on a channel's list, a variable another fiber was
// handed by reference) stays valid, and any access to it, by any thread, user or kernel
// mode, brings the pages back first.
//
// The mechanism is the kernel's userfaultfd, in the mode that resolves kernel-mode faults too
// (an unprivileged process needs vm.unprivileged_userfaultfd = 1; otherwise compaction stays
// off). A slab of stacks is registered for missing-page faults once every stack of it has
// been carved (so a spawn never writes a registered page that was never touched); from then
// on, a missing page of that slab is not filled by the kernel but reported to the service
// thread, and the access waits until the thread fills it.
//
// A pass (every `after`, while a pool asks for compaction) walks the carved stacks of each
// registered pool. A fiber seen parked is marked (the scheduler's age function turns
// `parked` into `parked_long`; every wake stores another state); one still marked at the
// next pass has been parked at least `after`, and is compacted:
//   1. its pages, from the one that holds its saved stack pointer to the stack's top, are
//      moved out of the stack into the service's holding area with UFFDIO_MOVE. The move is atomic
//      per page: an access either happens before it (and its effect moves with the page) or faults
//      after it and waits for step 4. Nothing has to stop the fiber or its wakers: if the fiber was
//      woken meanwhile, its next access just brings the pages back.
//   2. the bytes in use, from the saved stack pointer to the registry slot, are copied from the
//      holding area into an image. The canary zone is written anew on the way back: a stack
//      whose zone is not intact (the one above overflowed into it) is not compacted, and
//      while one is, the stack above skips its overflow check of it (stack_slot::below_held)
//      rather than bring it back at every switch;
//   3. the holding area's pages are released (MADV_DONTNEED, once for many stacks).
//   4. a fault on the stack later (the waker reading its waiter, the fiber's own resume, a
//      dump) makes the service copy the image back into fresh pages (UFFDIO_COPY), which
//      wakes the access. A missing page with no image (a page below the one restored, or a
//      page of a registered slab never touched) is filled with zeros.
// The service thread never touches a compacted stack itself: it looks for an image before it
// reads a stack's slot, and it holds no lock that a faulting thread may hold.
//
// Cost (benchmarks/README.md has the figures). A pass reads one line per carved stack; a
// compaction is a system call and a copy, plus a release of the holding area per slab; a
// restore is a system call or two and a copy, plus the wake of the service thread and of the
// faulting thread when the access came first. That is why only fibers parked for a while are
// compacted, and why a restore brings back, ahead of the waker, the neighbours that wait on
// the same object (restore_ahead()).
//
// Rejected: copying the bytes out and back with the fiber's wakers told to restore first
// (any other access, through a pointer another fiber holds, would read zeros); write-protect,
// copy, then MADV_DONTNEED (three system calls with a TLB shootdown each, and write faults to
// serve while the copy runs); PROT_NONE with a SIGSEGV handler (a VMA per compacted stack:
// vm.max_map_count caps that far below the fiber counts this is for).
#include "fiber/compact.hpp"

#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <malloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "fiber/sanitizers.hpp"
#include "fiber/stack.hpp"

// UFFDIO_MOVE (Linux 6.8); Debian 12's headers predate it.
#ifndef UFFDIO_MOVE
struct uffdio_move {
  __u64 dst;
  __u64 src;
  __u64 len;
#define UFFDIO_MOVE_MODE_DONTWAKE ((__u64)1 << 0)
#define UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES ((__u64)1 << 1)
  __u64 mode;
  __s64 move;
};
#define UFFDIO_MOVE _IOWR(UFFDIO, 0x05, struct uffdio_move)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1 << 16)
#endif

namespace rill::detail {
namespace {

constexpr std::size_t page = stack_page_size;

// The service's own reads and writes of a stack's slot, hidden from TSan as the kernel's page
// moves are: they race with nothing but an overflow trampling the stack below (which the
// overflow check then reports), and TSan would abort on that race before the check runs.
// A volatile access is one plain load or store on x86, as the atomic's relaxed (and acquire)
// forms are; what follows it is an opaque call, so nothing is read before it.
static_assert(sizeof(std::atomic<void*>) == sizeof(void*) && sizeof(std::atomic<bool>) == 1);
__attribute__((no_sanitize("thread"))) void* peek_owner(stack_slot* s) noexcept {
  void* owner = *reinterpret_cast<void* const volatile*>(&s->owner);
  san_acquire(&s->owner);  // the spawn's release of the record, which is read next
  return owner;
}
__attribute__((no_sanitize("thread"))) void poke_below_held(stack_slot* s, bool held) noexcept {
  *reinterpret_cast<volatile bool*>(&s->below_held) = held;
}

// image: the bytes of one compacted stack, from its saved stack pointer up.
struct image {
  const void* key;      // what the fiber waits on (a channel, a wait group): restored together
  std::uint32_t depth;  // top() - saved stack pointer
  std::uint32_t used;   // bytes kept, up to the registry slot's end (the canary zone, intact
                        // when it was compacted, is written anew)
  // then `used` bytes
  char* data() noexcept { return reinterpret_cast<char*>(this + 1); }
};

struct slab_rec {
  stack_pool* pool;
  std::size_t bytes;
  std::size_t stack_size;
  std::vector<image*> images;  // one per stack
};

struct pool_rec {
  stack_pool* pool;
  std::chrono::nanoseconds after;
};

struct release_rec {
  stack_pool* pool;
  char* slab;
  std::size_t bytes;
};

class service {
 public:
  // get(): the service, started on first use; nullptr where it cannot run. started(): the
  // service if get() has started it, without starting it.
  static service* get() {
    static service* s = [] {
      auto* p = new service;  // never destroyed: its thread runs for the process
      if (!p->open()) return static_cast<service*>(nullptr);  // leaks what open() made: once
      g_started.store(p, std::memory_order_release);
      return p;
    }();
    return s;
  }
  static service* started() noexcept { return g_started.load(std::memory_order_acquire); }

  bool add(stack_pool* pool, std::chrono::nanoseconds after) {
    {
      std::lock_guard lk(mu_);
      pools_.push_back({pool, after});
    }
    poke();
    return true;
  }

  // slab_full(): a slab of pool's has had its every stack carved: its stacks may be
  // compacted from the next pass on. Called under the pool's lock: takes only pending_mu_,
  // which no thread holds while it may touch a stack.
  void slab_full(stack_pool* pool, char* slab) {
    std::lock_guard lk(pending_mu_);
    pending_.push_back({pool, slab});
  }

  // slab_release(): pool has forgotten a slab of free stacks; unmapped by the service (a pass
  // may be reading its slots). Called under the pool's lock. False if it cannot be queued.
  bool slab_release(stack_pool* pool, char* slab, std::size_t bytes) noexcept {
    try {
      std::lock_guard lk(pending_mu_);
      releases_.push_back({pool, slab, bytes});
      pending_.erase(std::remove(pending_.begin(), pending_.end(), std::pair{pool, slab}),
                     pending_.end());
    } catch (...) {
      return false;
    }
    poke();
    return true;
  }

  void remove(stack_pool* pool) noexcept {
    std::vector<release_rec> mine;
    {
      std::lock_guard lk(pending_mu_);
      pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                    [&](const auto& p) { return p.first == pool; }),
                     pending_.end());
      // This pool's slabs given back and not yet unmapped: unmapped below, once no pass
      // can read them. Out of memory, they stay queued for the service's next turn.
      const auto ours = std::partition(releases_.begin(), releases_.end(),
                                       [&](const release_rec& r) { return r.pool != pool; });
      try {
        mine.assign(ours, releases_.end());
        releases_.erase(ours, releases_.end());
      } catch (...) {
      }
    }
    std::lock_guard lk(mu_);
    pools_.erase(std::remove_if(pools_.begin(), pools_.end(),
                                [&](const pool_rec& r) { return r.pool == pool; }),
                 pools_.end());
    for (auto it = slabs_.begin(); it != slabs_.end();) {
      if (it->second.pool != pool) {
        ++it;
        continue;
      }
      for (image*& im : it->second.images) drop(im);
      it = slabs_.erase(it);
    }
    std::lock_guard readers(slab_unmap_lock());
    for (const release_rec& r : mine) ::munmap(r.slab, r.bytes);  // no pass reads them now
  }

  bool pass_now() {
    std::unique_lock lk(mu_);
    const std::uint64_t want = ++forced_asked_;
    poke();
    done_cv_.wait(lk, [&] { return forced_done_ >= want; });
    return true;
  }

  bool holds(const void* p) {
    std::lock_guard lk(mu_);
    char* a = static_cast<char*>(const_cast<void*>(p));
    auto it = slabs_.upper_bound(a);
    if (it == slabs_.begin()) return false;
    --it;
    char* first = it->first + page;
    if (a < first || a >= it->first + it->second.bytes) return false;
    return it->second.images[static_cast<std::size_t>(a - first) / it->second.stack_size];
  }

  compaction_stats counts() const noexcept {
    compaction_stats s;
    s.held = held_.load(std::memory_order_relaxed);
    s.held_bytes = held_bytes_.load(std::memory_order_relaxed);
    s.compacted = compacted_.load(std::memory_order_relaxed);
    s.restored = restored_.load(std::memory_order_relaxed);
    s.passes = passes_.load(std::memory_order_relaxed);
    s.faults = faults_.load(std::memory_order_relaxed);
    s.slabs_released = slabs_released_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  bool open() {
    uffd_ = static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK));
    if (uffd_ < 0) return false;
    uffdio_api api{};
    api.api = UFFD_API;
    api.features = UFFD_FEATURE_MOVE;
    if (::ioctl(uffd_, UFFDIO_API, &api) != 0 || (api.features & UFFD_FEATURE_MOVE) == 0) {
      ::close(uffd_);
      return false;
    }
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    hold_size_ = 64u << 20;
    hold_ = static_cast<char*>(::mmap(nullptr, hold_size_, PROT_READ | PROT_WRITE,
                                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    scratch_ = static_cast<char*>(::mmap(nullptr, hold_size_, PROT_READ | PROT_WRITE,
                                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    zeros_ = static_cast<char*>(
        ::mmap(nullptr, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    if (wake_fd_ < 0 || hold_ == MAP_FAILED || scratch_ == MAP_FAILED || zeros_ == MAP_FAILED ||
        !register_range(hold_, hold_size_)) {
      return false;
    }
    std::thread([this] { run(); }).detach();
    return true;
  }

  bool register_range(char* p, std::size_t n) {
    uffdio_register r{};
    r.range.start = reinterpret_cast<std::uintptr_t>(p);
    r.range.len = n;
    r.mode = UFFDIO_REGISTER_MODE_MISSING;
    return ::ioctl(uffd_, UFFDIO_REGISTER, &r) == 0;
  }

  void poke() noexcept {
    const std::uint64_t one = 1;
    [[maybe_unused]] auto n = ::write(wake_fd_, &one, sizeof one);
  }

  void run() {
    auto next_pass = std::chrono::steady_clock::now();
    for (;;) {
      std::chrono::nanoseconds period{0};
      bool forced = false;
      {
        std::lock_guard lk(mu_);
        for (const pool_rec& r : pools_) {
          if (period.count() == 0 || r.after < period) period = r.after;
        }
        forced = forced_asked_ > forced_started_;
      }
      const auto now = std::chrono::steady_clock::now();
      int timeout = -1;
      if (forced) {
        timeout = 0;
      } else if (period.count() > 0) {
        if (next_pass < now) next_pass = now;
        timeout =
            static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(next_pass - now).count());
      }
      pollfd fds[2] = {{uffd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
      ::poll(fds, 2, timeout);
      if (fds[1].revents & POLLIN) {
        std::uint64_t v;
        [[maybe_unused]] auto n = ::read(wake_fd_, &v, sizeof v);
      }
      std::unique_lock lk(mu_);
      serve_faults();
      unmap_released();
      forced = forced_asked_ > forced_started_;
      if (forced || (period.count() > 0 && std::chrono::steady_clock::now() >= next_pass)) {
        const std::uint64_t started = forced_asked_;
        forced_started_ = started;
        pass(forced);
        next_pass = std::chrono::steady_clock::now() + period;
        if (forced) {
          forced_done_ = started;
          done_cv_.notify_all();
        }
      }
    }
  }

  // unmap_released(): unmaps the slabs the pools have given back. Under mu_, between passes.
  void unmap_released() {
    std::vector<release_rec> mine;
    {
      std::lock_guard lk(pending_mu_);
      mine.swap(releases_);
    }
    if (mine.empty()) return;
    std::lock_guard readers(slab_unmap_lock());
    for (const release_rec& r : mine) {
      if (auto it = slabs_.find(r.slab); it != slabs_.end()) {
        for (image*& im : it->second.images) drop(im);  // none: its stacks are free
        slabs_.erase(it);
      }
      ::munmap(r.slab, r.bytes);
      slabs_released_.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // serve_faults(): resolves every fault reported so far. Under mu_.
  void serve_faults() {
    uffd_msg msgs[64];
    for (;;) {
      const ssize_t n = ::read(uffd_, msgs, sizeof msgs);
      if (n <= 0) return;
      for (ssize_t i = 0; i < n / static_cast<ssize_t>(sizeof(uffd_msg)); ++i) {
        if (msgs[i].event == UFFD_EVENT_PAGEFAULT) {
          faults_.fetch_add(1, std::memory_order_relaxed);
          fault(msgs[i].arg.pagefault.address);
        }
      }
    }
  }

  void fault(std::uint64_t address) {
    char* a = reinterpret_cast<char*>(address & ~std::uint64_t{page - 1});
    auto it = slabs_.upper_bound(a);
    if (it != slabs_.begin()) {
      --it;
      slab_rec& r = it->second;
      char* first = it->first + page;
      if (a >= first && a < it->first + r.bytes) {
        const std::size_t k = static_cast<std::size_t>(a - first) / r.stack_size;
        if (image*& im = r.images[k]) {
          const void* key = im->key;
          const char* lo = first + (k + 1) * r.stack_size - im->depth;  // its stack pointer
          restore(r, it->first, k);
          restore_ahead(it, k, key);
          // The restore's copy woke every access to the pages it filled.
          if (a >= reinterpret_cast<const char*>(reinterpret_cast<std::uintptr_t>(lo) &
                                                 ~std::uintptr_t{page - 1})) {
            return;
          }
        }
      }
    }
    fill_zeros(a);  // a page below the restored ones, or never touched; or already back
  }

  // restore_ahead(): after a fault on stack k of slab `it`, whose fiber waits on `key`, puts
  // back the neighbouring stacks of fibers compacted waiting on the same key: a close or a
  // broadcast wakes them one after the other, in the order they parked, which is mostly
  // the order of their stacks (descending within a worker's cache of stacks, ascending from
  // one cache refill to the next). The service restores them while the waker works through
  // the ones already back, instead of a fault (two thread wakes) per fiber: first the
  // stacks within a cache's reach of k, then the next ones, a run that doubles while faults
  // keep coming on one key, and starts again small on another.
  void restore_ahead(std::map<char*, slab_rec>::iterator it, std::size_t k, const void* key) {
    if (!key) return;
    ahead_ = key == last_key_ ? std::min<std::size_t>(ahead_ * 2, 4096) : 8;
    last_key_ = key;
    auto restore_if = [&](slab_rec& r, char* slab, std::size_t j) {
      image*& im = r.images[j];
      if (!im || im->key != key) return false;
      restore(r, slab, j);
      return true;
    };
    constexpr std::size_t reach = 64;  // a worker's stack cache, twice
    slab_rec& here = it->second;
    const std::size_t lo = k > reach ? k - reach : 0;
    const std::size_t hi = std::min(here.images.size(), k + reach + 1);
    for (std::size_t j = lo; j < hi; ++j) restore_if(here, it->first, j);
    std::size_t left = ahead_;
    for (k = hi; left > 0 && it != slabs_.end(); ++it, k = 0) {
      for (; left > 0 && k < it->second.images.size(); ++k) {
        if (restore_if(it->second, it->first, k)) --left;
      }
    }
  }

  void fill_zeros(char* a) {
    uffdio_copy c{};
    c.dst = reinterpret_cast<std::uintptr_t>(a);
    c.src = reinterpret_cast<std::uintptr_t>(zeros_);
    c.len = page;
    if (::ioctl(uffd_, UFFDIO_COPY, &c) != 0 && errno == EEXIST) {
      uffdio_range w{reinterpret_cast<std::uintptr_t>(a), page};
      ::ioctl(uffd_, UFFDIO_WAKE, &w);
    }
  }

  // set_below_held(): tells stack k of slab r, if there is one, whether the stack below it is
  // held compacted (stack_slot::below_held). In its image if it is held too.
  void set_below_held(slab_rec& r, char* slab, std::size_t k, bool held) {
    if (k >= r.images.size()) return;
    const stack above{slab + page + k * r.stack_size, r.stack_size, false};
    char* at = reinterpret_cast<char*>(&above.slot()->below_held);
    if (image* im = r.images[k]) {
      char* sp = above.top() - im->depth;
      if (at >= sp && at < sp + im->used) im->data()[at - sp] = held;
      return;
    }
    poke_below_held(above.slot(), held);
  }

  // restore(): puts stack k of slab r back from its image, and frees the image.
  void restore(slab_rec& r, char* slab, std::size_t k) {
    image*& im = r.images[k];
    const std::size_t size = r.stack_size;
    char* base = slab + page + k * size;
    // Before the copy that wakes the access: an overflow check of the stack above reads
    // this one's canary zone from now on.
    set_below_held(r, slab, k + 1, false);
    char* top = base + size;
    char* sp = top - im->depth;
    char* lo = reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(sp) & ~(page - 1));
    const std::size_t len = static_cast<std::size_t>(top - lo);
    std::memset(scratch_, 0, len - canary_bytes);
    std::memcpy(scratch_ + (sp - lo), im->data(), im->used);
    fill_canary_zone(scratch_ + (len - canary_bytes));
    // The page below gets the shared zero page if it was never touched: a woken fiber often
    // calls a little deeper than where it parked, and a missing page of a registered slab
    // would fault into this thread (two thread wakes). Before the copy, which wakes.
    if (lo - page >= base + page) {
      uffdio_zeropage z{};
      z.range.start = reinterpret_cast<std::uintptr_t>(lo - page);
      z.range.len = page;
      z.mode = UFFDIO_ZEROPAGE_MODE_DONTWAKE;
      ::ioctl(uffd_, UFFDIO_ZEROPAGE, &z);  // EEXIST: it is there
    }
    // Counted before the copy wakes the access, which may read the count.
    restored_.fetch_add(1, std::memory_order_relaxed);
    uffdio_copy c{};
    c.dst = reinterpret_cast<std::uintptr_t>(lo);
    c.src = reinterpret_cast<std::uintptr_t>(scratch_);
    c.len = len;
    ::ioctl(uffd_, UFFDIO_COPY, &c);  // every page of [lo, top) was moved out: all missing
    drop(im);
  }

  void drop(image*& im) noexcept {
    if (!im) return;
    held_.fetch_sub(1, std::memory_order_relaxed);
    held_bytes_.fetch_sub(sizeof(image) + im->used, std::memory_order_relaxed);
    freed_since_trim_ += sizeof(image) + im->used;
    std::free(im);
    im = nullptr;
    // The images are small blocks of malloc's heap, which keeps what is freed: once none is
    // held after many were, the heap's free pages go back to the system.
    if (held_.load(std::memory_order_relaxed) == 0 && freed_since_trim_ >= (64u << 20)) {
      freed_since_trim_ = 0;
      ::malloc_trim(0);
    }
  }

  // pass(): one look at every stack of every full slab. Under mu_. It takes no pool's lock:
  // a thread may hold one while it touches a compacted stack (dump() walks the registry
  // under it), and waits for this thread to serve its fault.
  void pass(bool forced) {
    passes_.fetch_add(1, std::memory_order_relaxed);
    std::vector<std::pair<stack_pool*, char*>> fresh;
    {
      std::lock_guard lk(pending_mu_);
      fresh.swap(pending_);
    }
    for (auto [pool, slab] : fresh) {
      const std::size_t size = pool->stack_size();
      const std::size_t bytes = page + pool->per_slab() * size;
      if (!register_range(slab, bytes)) continue;
      slab_rec& r = slabs_.emplace(slab, slab_rec{pool, bytes, size, {}}).first->second;
      r.images.assign(pool->per_slab(), nullptr);
    }
    for (auto& [slab, r] : slabs_) {
      const std::size_t size = r.stack_size;
      for (std::size_t k = 0; k < r.images.size(); ++k) {
        if (r.images[k]) continue;
        const stack s{slab + page + k * size, size, false};
        void* owner = peek_owner(s.slot());
        char* sp = nullptr;
        const void* key = nullptr;
        if (owner && g_age(owner, !forced, &sp, &key) && compact(s, r.images[k], owner, sp)) {
          set_below_held(r, slab, k + 1, true);
        }
        if ((k & 31) == 31) serve_faults();
      }
      release_held();
      serve_faults();
    }
  }

  // compact(): moves stack s's pages from the one that holds its stack pointer `sp` (as
  // read before the move: checked against the moved record) to its top, and keeps its
  // image (true), or puts them back. Only those pages: moving a whole stack, holes and all,
  // cost several times as much in the kernel's walk of its page table. Pages the fiber
  // touched below them, in deeper calls before this park, stay.
  bool compact(const stack& s, image*& out, void* owner, char* sp) {
    char* lo = reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(sp) & ~(page - 1));
    if (lo < s.base + page || sp >= s.top()) return false;
    const std::size_t len = static_cast<std::size_t>(s.top() - lo);
    if (held_used_ + len > hold_size_) release_held();
    if (len > hold_size_) return false;
    char* held = hold_ + held_used_;
    uffdio_move m{};
    m.dst = reinterpret_cast<std::uintptr_t>(held);
    m.src = reinterpret_cast<std::uintptr_t>(lo);
    m.len = len;
    m.mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;
    if (::ioctl(uffd_, UFFDIO_MOVE, &m) != 0) {
      // EBUSY (a page shared with a forked child), EAGAIN: whatever moved goes back.
      if (m.move > 0) put_back(lo, held, static_cast<std::size_t>(m.move));
      return false;
    }
    held_used_ += len;
    if (compact_one(s, out, owner, lo, held)) return true;
    put_back(lo, held, len);
    return false;
  }

  // release_held(): gives the pages moved into the holding area back to the system, at
  // once for many stacks.
  void release_held() {
    if (held_used_ == 0) return;
    ::madvise(hold_, held_used_, MADV_DONTNEED);
    held_used_ = 0;
  }

  // put_back(): len bytes of the holding area at `held` go back to `to`, as they were: moved
  // back, holes and all (a copy would read the holes, which would wait for this thread).
  // If the range cannot go back as one, it goes back page by page.
  void put_back(char* to, char* held, std::size_t len) {
    uffdio_move m{};
    m.dst = reinterpret_cast<std::uintptr_t>(to);
    m.src = reinterpret_cast<std::uintptr_t>(held);
    m.len = len;
    m.mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;
    if (::ioctl(uffd_, UFFDIO_MOVE, &m) == 0) return;
    for (std::size_t off = m.move > 0 ? static_cast<std::size_t>(m.move) : 0; off < len;
         off += page) {
      uffdio_move one{};
      one.dst = reinterpret_cast<std::uintptr_t>(to + off);
      one.src = reinterpret_cast<std::uintptr_t>(held + off);
      one.len = page;
      one.mode = UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES;
      ::ioctl(uffd_, UFFDIO_MOVE, &one);
    }
  }

  // compact_one(): keeps the image of stack s, whose pages from `lo` up are at `held_lo` in
  // the holding area; false if its fiber is not to be compacted after all.
  bool compact_one(const stack& s, image*& out, void* owner, char* lo, char* held_lo) {
    char* top = s.top();
    // Kept: from the stack pointer to the end of the registry slot. Between the slot and
    // the canary zone lies its colour gap (stack::slot()), never written.
    char* end = reinterpret_cast<char*>(s.slot() + 1);
    // What the fiber was when its pages moved, read from them: nothing can change them now
    // (any access waits for this thread). It may have been woken, or have parked elsewhere,
    // since the look that chose it: only a fiber parked at the move, with its stack pointer
    // of that park, is compacted; any other gets its pages back as they were.
    auto* rec = static_cast<char*>(owner);
    if (rec < lo || rec >= end) return false;
    char* sp = nullptr;
    const void* key = nullptr;
    if (!g_age(held_lo + (rec - lo), false, &sp, &key) || sp < lo || sp >= end) {
      return false;
    }
    // A canary zone that is not intact: the stack above overflowed into this one, and its
    // next check must see it here.
    if (!canary_zone_intact(held_lo + (s.usable_top() - lo))) return false;
    const std::uint32_t used = static_cast<std::uint32_t>(end - sp);
    const std::size_t bytes = sizeof(image) + used;
    auto* im = static_cast<image*>(std::malloc(bytes));
    if (!im) return false;  // keep the stack as it was
    im->key = key;
    im->depth = static_cast<std::uint32_t>(top - sp);
    im->used = used;
    std::memcpy(im->data(), held_lo + (sp - lo), used);
    out = im;
    held_.fetch_add(1, std::memory_order_relaxed);
    held_bytes_.fetch_add(bytes, std::memory_order_relaxed);
    compacted_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

 public:
  static inline compaction_age_fn g_age = nullptr;
  static inline std::atomic<service*> g_started{nullptr};

 private:
  int uffd_ = -1;
  int wake_fd_ = -1;
  char* hold_ = nullptr;     // where a stack's pages are moved to be read
  char* scratch_ = nullptr;  // where an image is laid out to be copied back
  char* zeros_ = nullptr;
  std::size_t hold_size_ = 0;
  std::size_t held_used_ = 0;         // bytes of the holding area moved into since release_held()
  std::size_t freed_since_trim_ = 0;  // bytes of images freed since drop() last trimmed
  std::mutex mu_;
  std::condition_variable done_cv_;
  std::vector<pool_rec> pools_;
  std::map<char*, slab_rec> slabs_;  // registered slabs, by base
  std::mutex pending_mu_;
  std::vector<std::pair<stack_pool*, char*>> pending_;  // full slabs not yet registered
  std::vector<release_rec> releases_;  // slabs of free stacks to unmap; by pending_mu_
  std::uint64_t forced_asked_ = 0, forced_started_ = 0, forced_done_ = 0;
  const void* last_key_ = nullptr;  // restore_ahead()'s last key, and its run
  std::size_t ahead_ = 0;
  std::atomic<std::uint64_t> held_{0}, held_bytes_{0}, compacted_{0}, restored_{0}, passes_{0},
      faults_{0}, slabs_released_{0};
};

}  // namespace

bool compaction_add(stack_pool* pool, std::chrono::nanoseconds after, compaction_age_fn age) {
  service* s = service::get();
  if (!s || after.count() <= 0) return false;
  service::g_age = age;
  return s->add(pool, after);
}

void compaction_slab_full(stack_pool* pool, char* slab) {
  if (service* s = service::started()) s->slab_full(pool, slab);
}

std::mutex& slab_unmap_lock() noexcept {
  static std::mutex* m = new std::mutex;
  return *m;
}

bool compaction_slab_release(stack_pool* pool, char* slab, std::size_t bytes) noexcept {
  service* s = service::started();
  return s && s->slab_release(pool, slab, bytes);
}

void compaction_remove(stack_pool* pool) noexcept {
  if (service* s = service::started()) s->remove(pool);
}

compaction_stats compaction_counts() noexcept {
  service* s = service::started();
  return s ? s->counts() : compaction_stats{};
}

bool compaction_holds(const void* p) {
  service* s = service::started();
  return s && s->holds(p);
}

bool compact_parked_now() {
  service* s = service::started();
  return s && s->pass_now();
}

}  // namespace rill::detail
