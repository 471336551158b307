// rill/chan.hpp: channels with Go's semantics.
//
//   rill::chan<int> c;       // unbuffered: a send completes when a receiver takes the value
//   rill::chan<int> b(64);   // buffered FIFO of 64
//   c.send(1);               // parks until delivered; throws closed_channel once closed
//   std::optional<int> v = c.recv();   // nullopt once closed and drained
//   for (int v : c) ...      // until closed and drained
//
// Handles: chan<T> is a cheap handle with shared ownership; copies refer to the same
// channel. send_chan<T> / recv_chan<T> are direction-restricted handles (Go's chan<- T and
// <-chan T) that a chan<T> converts to. A handle that refers to no channel (moved-from, or
// made from nullptr: Go's nil channel) throws nil_channel on use, except in select, where
// such a case is never ready (Go's idiom for disabling a case).
//
// Thread safety: every operation may be called concurrently from fibers of any runtime and
// from plain threads. A fiber parks; a plain thread blocks.
//
// Memory ordering (Go's memory model): a send happens before the receive that takes its
// value completes; for an unbuffered channel, a receive happens before the matching send
// completes; the k-th receive of a channel of capacity C happens before the (k+C)-th send
// completes; close() happens before a receive that returns because the channel is closed.
//
// Ranges: chan<T> and recv_chan<T> model std::ranges::input_range (and view) over the
// values received, so std views apply: `c | std::views::transform(f)`; with
// <rill/ranges.hpp>, they are range-v3 views too. Each increment receives one value:
// nothing is read ahead, so a `break` leaves the rest in the channel.
#pragma once

#include <cstddef>
#include <iterator>
#include <memory>
#include <new>
#include <optional>
#include <ranges>
#include <type_traits>
#include <utility>

#include "rill/detail/chan_core.hpp"

namespace rill {

template <class T>
class chan;
template <class T>
class send_chan;
template <class T>
class recv_chan;

namespace detail {

template <class T>
inline constexpr chan_ops ops_for{
    [](void* raw, void* src) { ::new (raw) T(std::move(*static_cast<T*>(src))); },
    [](void* opt, void* src) {
      static_cast<std::optional<T>*>(opt)->emplace(std::move(*static_cast<T*>(src)));
    },
    [](void* p) noexcept { static_cast<T*>(p)->~T(); },
    sizeof(T),
    alignof(T),
};

// chan_handle: the shared-ownership pointer to a channel core.
class chan_handle {
 public:
  chan_handle() noexcept = default;
  explicit chan_handle(chan_core* c) noexcept : core_(c) {}
  chan_handle(const chan_handle& o) noexcept : core_(o.core_) {
    if (core_) core_->retain();
  }
  chan_handle(chan_handle&& o) noexcept : core_(std::exchange(o.core_, nullptr)) {}
  chan_handle& operator=(chan_handle o) noexcept {
    std::swap(core_, o.core_);
    return *this;
  }
  ~chan_handle() {
    if (core_) core_->release();
  }
  chan_core* get() const noexcept { return core_; }
  chan_core& core() const {
    if (!core_) throw nil_channel("rill::chan: operation on a nil channel handle");
    return *core_;
  }
  friend bool operator==(const chan_handle& a, const chan_handle& b) noexcept {
    return a.core_ == b.core_;
  }

 private:
  chan_core* core_ = nullptr;
};

// Values of these types are copied by the inline buffered fast path (chan_core.hpp).
template <class T>
inline constexpr bool buffered_fast_path = std::is_trivially_copyable_v<T> && sizeof(T) <= 64;

// The receiving operations, shared by chan<T> and recv_chan<T>.
template <class T, class Self>
class recv_ops {
 public:
  // recv() parks until a value arrives or the channel is closed and drained; it returns
  // std::nullopt only in the latter case. From a plain thread it blocks the thread.
  [[nodiscard]] std::optional<T> recv() {
    std::optional<T> v;
    if constexpr (buffered_fast_path<T>) {
      self().h_.core().recv_buffered(&v);
    } else {
      self().h_.core().recv(&v);
    }
    return v;
  }
  // try_recv() never parks: a value if one is ready, else std::nullopt (also when closed
  // and drained; use closed() to tell the two apart).
  [[nodiscard]] std::optional<T> try_recv() {
    std::optional<T> v;
    self().h_.core().try_recv(&v);
    return v;
  }

  // iterator: an input iterator; copies share one cursor (range-v3 wants copyable
  // iterators, and a move-only T cannot be copied), allocated once per begin().
  class iterator {
    struct cursor {
      chan_core* c;
      std::optional<T> v;
    };

   public:
    using value_type = T;
    using difference_type = std::ptrdiff_t;
    using reference = T&;
    using iterator_concept = std::input_iterator_tag;
    using iterator_category = std::input_iterator_tag;

    iterator() = default;
    explicit iterator(chan_core* c) : cur_(std::make_shared<cursor>(cursor{c, std::nullopt})) {
      ++*this;
    }

    T& operator*() const { return *cur_->v; }
    T* operator->() const { return &*cur_->v; }
    iterator& operator++() {
      cur_->v.reset();
      if constexpr (buffered_fast_path<T>) {
        cur_->c->recv_buffered(&cur_->v);
      } else {
        cur_->c->recv(&cur_->v);
      }
      return *this;
    }
    void operator++(int) { ++*this; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) noexcept {
      return !it.cur_ || !it.cur_->v.has_value();
    }

   private:
    std::shared_ptr<cursor> cur_;
  };

  // begin() receives the first value (parks); end() is reached when the channel is closed
  // and drained.
  iterator begin() { return iterator(&self().h_.core()); }
  std::default_sentinel_t end() const noexcept { return {}; }

 private:
  Self& self() { return static_cast<Self&>(*this); }
};

// The sending operations, shared by chan<T> and send_chan<T>.
template <class T, class Self>
class send_ops {
 public:
  // send() parks until v is delivered to a receiver or buffered. Throws closed_channel if
  // the channel is closed, or closes while the sender waits (v is then not consumed).
  void send(T v) {
    if constexpr (buffered_fast_path<T>) {
      self().h_.core().send_buffered(&v);
    } else {
      self().h_.core().send(&v);
    }
  }
  // try_send() never parks: true if v was delivered or buffered; false, leaving v
  // untouched, if it would have to wait. Throws closed_channel on a closed channel.
  [[nodiscard]] bool try_send(T& v) { return self().h_.core().try_send(&v); }
  [[nodiscard]] bool try_send(T&& v) { return self().h_.core().try_send(&v); }
  // close() closes the channel: blocked receivers drain what is buffered and then get
  // nullopt; blocked senders throw closed_channel. A second close throws closed_channel.
  void close() { self().h_.core().close(); }

 private:
  Self& self() { return static_cast<Self&>(*this); }
};

// handle_ops: what every channel handle (chan, send_chan, recv_chan) answers about its
// channel. Self holds the chan_handle h_.
template <class Self>
class handle_ops {
 public:
  std::size_t size() const { return self().h_.core().size(); }
  std::size_t capacity() const { return self().h_.core().capacity(); }
  explicit operator bool() const noexcept { return self().h_.get() != nullptr; }
  chan_core* core() const noexcept { return self().h_.get(); }

 private:
  const Self& self() const noexcept { return static_cast<const Self&>(*this); }
};

}  // namespace detail

// chan<T>: a channel of T (move-constructible; no default constructor needed).
template <class T>
class chan : public detail::recv_ops<T, chan<T>>,
             public detail::send_ops<T, chan<T>>,
             public detail::handle_ops<chan<T>>,
             public std::ranges::view_base {
  static_assert(std::is_move_constructible_v<T>, "rill::chan<T>: T must be move-constructible");
  static_assert(!std::is_reference_v<T>, "rill::chan<T>: T must not be a reference");

 public:
  using value_type = T;

  // chan() makes an unbuffered channel; chan(n) a buffered one of capacity n.
  chan() : chan(std::size_t{0}) {}
  explicit chan(std::size_t capacity)
      : h_(detail::chan_core::create(capacity, &detail::ops_for<T>)) {}
  // chan(nullptr): a nil handle (Go's nil channel). A template so that `chan<int> c(0)`
  // (the literal 0 is also a null pointer constant) means capacity 0, not ambiguity.
  template <class N>
  requires std::is_null_pointer_v<N> chan(N)
  noexcept {}

  bool closed() const { return h_.core().closed(); }
  friend bool operator==(const chan& a, const chan& b) noexcept { return a.h_ == b.h_; }

 private:
  friend class detail::recv_ops<T, chan<T>>;
  friend class detail::send_ops<T, chan<T>>;
  friend class detail::handle_ops<chan<T>>;
  friend class send_chan<T>;
  friend class recv_chan<T>;
  detail::chan_handle h_;
};

// send_chan<T>: may only send and close (Go's chan<- T).
template <class T>
class send_chan : public detail::send_ops<T, send_chan<T>>,
                  public detail::handle_ops<send_chan<T>> {
 public:
  using value_type = T;
  send_chan() noexcept = default;  // a nil handle
  send_chan(const chan<T>& c) noexcept : h_(c.h_) {}

 private:
  friend class detail::send_ops<T, send_chan<T>>;
  friend class detail::handle_ops<send_chan<T>>;
  detail::chan_handle h_;
};

// recv_chan<T>: may only receive (Go's <-chan T).
template <class T>
class recv_chan : public detail::recv_ops<T, recv_chan<T>>,
                  public detail::handle_ops<recv_chan<T>>,
                  public std::ranges::view_base {
 public:
  using value_type = T;
  recv_chan() noexcept = default;  // a nil handle
  recv_chan(const chan<T>& c) noexcept : h_(c.h_) {}
  bool closed() const { return h_.core().closed(); }

 private:
  friend class detail::recv_ops<T, recv_chan<T>>;
  friend class detail::handle_ops<recv_chan<T>>;
  detail::chan_handle h_;
};

}  // namespace rill
