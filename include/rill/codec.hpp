// rill/codec.hpp: how an item becomes bytes and back, for stages that leave the process
// (rill/nats.hpp). Header-only; needs no library.
//
//   std::string bytes;
//   rill::codec<std::vector<int>>::encode({1, 2, 3}, bytes);         // appends
//   std::vector<int> v = rill::codec<std::vector<int>>::decode(bytes);
//
// Provided: every trivially copyable type (its object representation: both ends must share
// the architecture and the type's layout), std::string (its bytes), and std::vector<E> for
// any E that has a codec (trivially copyable E: the elements' bytes; other E: each element
// as a 4-byte little-endian length and its encoding). Other types: specialise
// rill::codec<T> with the same two static functions. A type without one is a compile error
// that names it, at the stage that needs it.
//
// decode() throws rill::codec_error when the bytes cannot be a T (a wrong size, a length
// that runs past the end); it never reads outside `bytes`.
#pragma once

#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace rill {

// codec_error: bytes that do not decode as the type asked for.
class codec_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
template <class T>
inline constexpr bool codec_missing = false;
}  // namespace detail

// codec<T>: encode(const T&, std::string& out) appends T's bytes to out; decode(bytes)
// returns the T they encode or throws codec_error. The primary template is the "no codec"
// case; the static_assert names T in the compiler's "required from" note.
template <class T, class Enable = void>
struct codec {
  static_assert(
      detail::codec_missing<T>,
      "rill::codec<T>: no codec for this item type (specialise rill::codec<T> with "
      "static void encode(const T&, std::string&) and static T decode(std::string_view))");
  static void encode(const T&, std::string&) {}
  static T decode(std::string_view);
};

template <class T>
struct codec<T, std::enable_if_t<std::is_trivially_copyable_v<T> && !std::is_pointer_v<T>>> {
  static void encode(const T& v, std::string& out) {
    out.append(reinterpret_cast<const char*>(&v), sizeof(T));
  }
  static T decode(std::string_view in) {
    if (in.size() != sizeof(T)) {
      throw codec_error("rill::codec: " + std::to_string(in.size()) + " bytes for an item of " +
                        std::to_string(sizeof(T)));
    }
    T v;
    std::memcpy(&v, in.data(), sizeof(T));
    return v;
  }
};

template <>
struct codec<std::string> {
  static void encode(const std::string& v, std::string& out) { out.append(v); }
  static std::string decode(std::string_view in) { return std::string(in); }
};

template <class E, class A>
struct codec<std::vector<E, A>> {
  static void encode(const std::vector<E, A>& v, std::string& out) {
    if constexpr (std::is_trivially_copyable_v<E>) {
      out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(E));
    } else {
      for (const E& e : v) {
        const std::size_t at = out.size();
        out.append(4, '\0');
        codec<E>::encode(e, out);
        const std::uint64_t n = out.size() - at - 4;
        if (n > UINT32_MAX) throw codec_error("rill::codec: a vector element over 4 GiB");
        for (int b = 0; b < 4; ++b) out[at + b] = static_cast<char>((n >> (8 * b)) & 0xff);
      }
    }
  }
  static std::vector<E, A> decode(std::string_view in) {
    std::vector<E, A> v;
    if constexpr (std::is_trivially_copyable_v<E>) {
      if (in.size() % sizeof(E) != 0) {
        throw codec_error("rill::codec: " + std::to_string(in.size()) +
                          " bytes are not a whole number of " + std::to_string(sizeof(E)) +
                          "-byte elements");
      }
      v.resize(in.size() / sizeof(E));
      if (!in.empty()) std::memcpy(v.data(), in.data(), in.size());
    } else {
      while (!in.empty()) {
        if (in.size() < 4) throw codec_error("rill::codec: a vector element's length is cut off");
        std::uint64_t n = 0;
        for (int b = 0; b < 4; ++b)
          n |= std::uint64_t(static_cast<unsigned char>(in[b])) << (8 * b);
        in.remove_prefix(4);
        if (n > in.size()) {
          throw codec_error("rill::codec: a vector element of " + std::to_string(n) +
                            " bytes runs past the end (" + std::to_string(in.size()) + " left)");
        }
        v.push_back(codec<E>::decode(in.substr(0, n)));
        in.remove_prefix(n);
      }
    }
    return v;
  }
};

}  // namespace rill
