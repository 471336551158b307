// A stage whose item type has no rill::codec: one error, the codec's static_assert (the
// compiler's "required from" notes name the type, `rill::codec<{anonymous}::no_codec>`).
#include <map>
#include <rill/nats.hpp>
#include <string>

namespace {
struct no_codec {
  std::map<int, std::string> m;
};
}  // namespace

int main() {
  rill::nats::connection* conn = nullptr;
#if CASE == 1
  auto p = rill::from(std::vector<no_codec>{}) | rill::nats::publish<no_codec>(*conn, "s");
  p.run();
#endif
}
