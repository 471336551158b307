#include <rill/rill.hpp>

#include <cstdio>
#include <ranges>

int main() {
  auto p = rill::from(std::views::iota(1, 101)) | rill::map([](int v) { return v * v; }) |
           rill::reduce(0L, std::plus<>{});
  const long sum = p.run();
  const long expected = 100L * 101 * 201 / 6;
  std::printf("consumer: sum of squares 1..100 = %ld\n", sum);
  return sum == expected ? 0 : 1;
}
