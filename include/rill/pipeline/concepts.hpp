// rill/pipeline/concepts.hpp: the three roles a piece of a pipeline plays, as C++20
// concepts: a source (with the stages after it so far), a stage, a terminal. operator|
// (pipeline.hpp) is constrained by them. Part of rill/pipeline.hpp.
//
// A role is told by what the type has, not by a base class: a stage or terminal written
// outside rill (rill::nats's publish) needs only the members below and the protocol of
// its kind (stages.hpp, sinks.hpp).
#pragma once

#include <concepts>
#include <type_traits>

namespace rill::detail {

// The item type a concept asks a terminal about: any type will do, since a terminal's
// result type is named for every item type (it may be bad_item's, for one it cannot take).
struct probe_item {};

// Stages composed before a source exists (`a | b`, `a | sink`): fragment and
// sink_fragment (pipeline.hpp) say so here.
template <class T>
inline constexpr bool is_fragment_v = false;
template <class T>
inline constexpr bool is_sink_fragment_v = false;
// A composition that failed its static_assert (pipeline.hpp's poisoned): accepted wherever
// a role is asked for, so that the first error stays the only one.
template <class T>
inline constexpr bool is_poisoned_v = false;

// pipeline_source<T>: a source and the stages after it so far (a flow, as rill::from(r),
// generate, merge... return): its items are value_type.
template <class T>
concept pipeline_source = requires(T& f) {
  typename T::value_type;
  f.src;
  f.stages;
};

// one_stage<T>: a step between a source and a terminal (map, filter, par_map...): its
// kind names it, `parallel` says whether it fans out over fibers, `opt` holds its options.
template <class T>
concept one_stage = requires(T& s) {
  { T::kind } -> std::convertible_to<const char*>;
  { T::parallel } -> std::convertible_to<bool>;
  s.opt;
};

// pipeline_stage<T>: a stage, or stages composed before a source.
template <class T>
concept pipeline_stage = one_stage<std::remove_cvref_t<T>> || is_fragment_v<std::remove_cvref_t<T>>;

// one_terminal<T>: what ends a chain (collect, reduce, sink, broadcast...): its kind names
// it and result_t<In> is what run() returns for items of type In.
template <class T>
concept one_terminal = requires {
  { T::kind } -> std::convertible_to<const char*>;
  typename T::template result_t<probe_item>;
}
&&!one_stage<T>;

// pipeline_terminal<T>: a terminal, with stages in front of it or not.
template <class T>
concept pipeline_terminal =
    one_terminal<std::remove_cvref_t<T>> || is_sink_fragment_v<std::remove_cvref_t<T>>;

}  // namespace rill::detail
