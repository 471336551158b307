// rill/ranges.hpp: range-v3 interop that the other headers leave out, so that a program
// using std containers and std::views does not parse range-v3.
//
//   #include <rill/ranges.hpp>
//   rill::recv_chan<int> r = c;
//   auto v = r | ranges::views::transform(f) | ranges::to<std::vector>();
//
// With it, chan<T> and recv_chan<T> are range-v3 views (ranges::view_), as they are std
// views (std::ranges::view) without it. What needs no header of its own: from(range),
// flat_map and unbatch take range-v3 ranges as they take std ranges (include the range-v3
// views you use, e.g. <range/v3/view/iota.hpp>). rill/rill.hpp includes this header.
#pragma once

#include <range/v3/range/concepts.hpp>

#include "rill/chan.hpp"

namespace ranges::ext {

template <class T>
struct enable_view<rill::chan<T>> : std::true_type {};
template <class T>
struct enable_view<rill::recv_chan<T>> : std::true_type {};

}  // namespace ranges::ext
