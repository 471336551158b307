// rill::nats and rill::codec. Each test that needs a server starts its own nats-server
// (test/nats/nats_server.hpp: a free port, a temporary store, killed at the end).
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <rill/nats.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "nats_server.hpp"

using namespace std::chrono_literals;

namespace {

struct point {
  std::int32_t x;
  double y;
  bool operator==(const point&) const = default;
};

template <class T>
T round_trip(const T& v) {
  std::string bytes;
  rill::codec<T>::encode(v, bytes);
  return rill::codec<T>::decode(bytes);
}

std::vector<std::int64_t> iota(std::int64_t n) {
  std::vector<std::int64_t> v;
  for (std::int64_t i = 0; i < n; ++i) v.push_back(i);
  return v;
}

void put(rill::nats::connection& conn, const std::string& subject, std::int64_t n) {
  (rill::from(iota(n)) | rill::nats::publish<std::int64_t>(conn, subject)).run();
}

// wait_for(): polls `pred` (the state of another process) until it holds or `limit` passes.
template <class P>
bool wait_for(P pred, std::chrono::seconds limit = 60s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(20ms);
  }
  return true;
}

// exited(): the child ended (reaped); its status in *st.
bool exited(pid_t& pid, int* st) {
  if (pid <= 0) return true;
  if (::waitpid(pid, st, WNOHANG) != pid) return false;
  pid = -1;
  return true;
}

// check_doubled(): the stream holds exactly 2*i for i in [0, n), each once.
void check_doubled(rill::nats::connection& conn, const std::string& stream, std::int64_t n) {
  CHECK(conn.stream_messages(stream) == static_cast<std::uint64_t>(n));
  auto got =
      (rill::nats::consume<std::int64_t>(conn, {.stream = stream, .durable = "check", .idle = 1s}) |
       rill::take(static_cast<std::size_t>(n)) | rill::collect())
          .run();
  REQUIRE(got.size() == static_cast<std::size_t>(n));
  std::set<std::int64_t> seen(got.begin(), got.end());
  CHECK(seen.size() == got.size());
  for (std::int64_t i = 0; i < n; ++i) {
    if (!seen.count(2 * i)) FAIL("missing " << 2 * i);
  }
}

}  // namespace

TEST_CASE("codec: each provided codec round-trips", "[codec]") {
  CHECK(round_trip(std::int64_t{-42}) == -42);
  CHECK(round_trip(3.5) == 3.5);
  CHECK(round_trip(point{7, 2.25}) == point{7, 2.25});
  CHECK(round_trip(std::string("hello, wire")) == "hello, wire");
  CHECK(round_trip(std::string()).empty());
  CHECK(round_trip(std::vector<int>{1, 2, 3}) == std::vector<int>{1, 2, 3});
  CHECK(round_trip(std::vector<point>{{1, 1.0}, {2, 2.0}}) ==
        std::vector<point>{{1, 1.0}, {2, 2.0}});
  CHECK(round_trip(std::vector<std::string>{"a", "", "ccc"}) ==
        std::vector<std::string>{"a", "", "ccc"});
  CHECK(round_trip(std::vector<std::vector<int>>{{1}, {}, {2, 3}}) ==
        std::vector<std::vector<int>>{{1}, {}, {2, 3}});
  CHECK(round_trip(std::vector<std::string>{}).empty());
}

TEST_CASE("codec: bytes that cannot be the type throw codec_error", "[codec]") {
  CHECK_THROWS_AS(rill::codec<std::int64_t>::decode("abc"), rill::codec_error);
  CHECK_THROWS_AS(rill::codec<std::vector<std::int32_t>>::decode("abcde"), rill::codec_error);
  std::string cut;
  rill::codec<std::vector<std::string>>::encode({"hello"}, cut);
  cut.pop_back();
  CHECK_THROWS_AS(rill::codec<std::vector<std::string>>::decode(cut), rill::codec_error);
  CHECK_THROWS_AS(rill::codec<std::vector<std::string>>::decode("ab"), rill::codec_error);
}

TEST_CASE("nats: connecting where no server listens throws rill::nats::error", "[nats]") {
  const int port = test::free_port();
  try {
    rill::nats::connection conn("nats://127.0.0.1:" + std::to_string(port));
    FAIL("no error");
  } catch (const rill::nats::error& e) {
    UNSCOPED_INFO(e.what());
    CHECK_THAT(e.what(),
               Catch::Contains("cannot connect to nats://127.0.0.1:" + std::to_string(port)));
  }
}

TEST_CASE("nats: items cross from one pipeline to another, decoded", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "WORDS", .subjects = {"words"}});
  conn.add_stream({.name = "POINTS", .subjects = {"points"}});
  const std::vector<std::vector<std::string>> lines{{"a", "b"}, {}, {"c"}};
  (rill::from(lines) | rill::nats::publish<std::vector<std::string>>(conn, "words")).run();
  (rill::from(std::vector<point>{{1, 0.5}, {2, 1.5}}) | rill::nats::publish<point>(conn, "points"))
      .run();
  auto got =
      (rill::nats::consume<std::vector<std::string>>(conn, {.stream = "WORDS", .durable = "w"}) |
       rill::take(3) | rill::collect())
          .run();
  CHECK(got == lines);
  auto pts =
      (rill::nats::consume<point>(conn, {.stream = "POINTS", .idle = 500ms}) | rill::collect())
          .run();
  CHECK(pts == std::vector<point>{{1, 0.5}, {2, 1.5}});
  // Acknowledged: a work queue keeps nothing once every message is acknowledged.
  CHECK(conn.stream_messages("WORDS") == 0);
  CHECK(conn.stream_messages("POINTS") == 0);
}

TEST_CASE("nats: consume, map and publish in one process: each input's output once", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "IN", .subjects = {"in"}});
  conn.add_stream({.name = "OUT", .subjects = {"out"}});
  put(conn, "in", 1000);
  (rill::nats::consume<std::int64_t>(conn, {.stream = "IN", .durable = "w", .idle = 500ms}) |
   rill::filter([](std::int64_t x) { return x >= 0; }) |
   rill::map([](std::int64_t x) { return x * 2; }) | rill::nats::publish<std::int64_t>(conn, "out"))
      .run();
  CHECK(conn.stream_messages("IN") == 0);
  check_doubled(conn, "OUT", 1000);
}

TEST_CASE("nats: consuming a stream that does not exist names it", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  auto p = rill::nats::consume<std::int64_t>(
               conn, {.stream = "NOPE", .subject = "nope", .durable = "d"}) |
           rill::count();
  try {
    p.run();
    FAIL("no error");
  } catch (const rill::nats::error& e) {
    UNSCOPED_INFO(e.what());
    CHECK_THAT(e.what(), Catch::Contains("NOPE") && Catch::Contains("stream not found"));
  }
}

TEST_CASE("nats: publishing to a subject that no stream holds fails the run", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  auto p = rill::from(iota(3)) | rill::nats::publish<std::int64_t>(conn, "nowhere");
  try {
    p.run();
    FAIL("no error");
  } catch (const rill::nats::error& e) {
    UNSCOPED_INFO(e.what());
    CHECK_THAT(e.what(), Catch::Contains("'nowhere'") && Catch::Contains("no stream"));
  }
}

TEST_CASE("nats: an item over the stream's message size limit fails the run", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "SMALL", .subjects = {"small"}, .max_msg_size = 100});
  auto p = rill::from(std::vector<std::string>{"short", std::string(1000, 'x')}) |
           rill::nats::publish<std::string>(conn, "small");
  try {
    p.run();
    FAIL("no error");
  } catch (const rill::nats::error& e) {
    UNSCOPED_INFO(e.what());
    CHECK_THAT(e.what(), Catch::Contains("small") && Catch::Contains("size"));
    CHECK(e.js_code() != 0);
  }
  CHECK(conn.stream_messages("SMALL") == 1);
}

TEST_CASE("nats: an item over the server's payload limit fails the run", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "BIG", .subjects = {"big"}});
  auto p = rill::from(std::vector<std::string>{std::string(2 << 20, 'x')}) |
           rill::nats::publish<std::string>(conn, "big");
  try {
    p.run();
    FAIL("no error");
  } catch (const rill::nats::error& e) {
    UNSCOPED_INFO(e.what());
    CHECK_THAT(e.what(),
               Catch::Contains("'big'") && Catch::Contains("Payload 2097152 greater than maximum"));
  }
}

TEST_CASE(
    "nats: an undecodable message fails the run, stays unacknowledged, then goes to the dead "
    "letter",
    "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "BAD", .subjects = {"bad"}});
  conn.add_stream({.name = "DEAD", .subjects = {"dead"}});
  (rill::from(std::vector<std::string>{"abc"}) | rill::nats::publish<std::string>(conn, "bad"))
      .run();
  const rill::nats::consume_options opt{
      .stream = "BAD", .durable = "ints", .max_deliver = 2, .dead_letter = "dead"};
  for (int delivery = 1; delivery <= 2; ++delivery) {
    auto p = rill::nats::consume<std::int64_t>(conn, opt) | rill::count();
    try {
      p.run();
      FAIL("no error");
    } catch (const rill::nats::decode_error& e) {
      CHECK(e.subject() == "bad");
      CHECK(e.sequence() == 1);
      CHECK_THAT(e.what(), Catch::Contains("'bad'") && Catch::Contains("sequence 1") &&
                               Catch::Contains("delivery " + std::to_string(delivery)));
    }
    if (delivery == 1) {
      CHECK(conn.stream_messages("BAD") == 1);  // not acknowledged
      CHECK(conn.stream_messages("DEAD") == 0);
    }
  }
  CHECK(conn.stream_messages("DEAD") == 1);
  auto dead =
      (rill::nats::consume<std::string>(conn, {.stream = "DEAD", .idle = 300ms}) | rill::collect())
          .run();
  CHECK(dead == std::vector<std::string>{"abc"});
}

TEST_CASE("nats: a layout that takes stages out of consume's fiber is refused", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "L", .subjects = {"l"}});
  auto p1 = rill::nats::consume<std::int64_t>(conn, {.stream = "L"}) |
            rill::par_map([](std::int64_t x) { return x; }, {.workers = 2}) | rill::count();
  CHECK_THROWS_AS(p1.run(), std::logic_error);
  auto p2 = rill::nats::consume<std::int64_t>(conn, {.stream = "L"}) |
            rill::map([](std::int64_t x) { return x; }, {.fuse = false}) | rill::count();
  CHECK_THROWS_AS(p2.run(), std::logic_error);
}

TEST_CASE("nats: backpressure: a slow consumer holds at most `buffer` messages unacknowledged",
          "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "SLOW", .subjects = {"slow"}});
  put(conn, "slow", 300);
  std::uint64_t most = 0;
  std::size_t n = 0;
  (rill::nats::consume<std::int64_t>(conn, {.stream = "SLOW", .durable = "slow", .buffer = 8}) |
   rill::take(300) | rill::sink([&](std::int64_t) {
     rill::this_fiber::sleep_for(1ms);  // the slow stage
     if (n++ % 10 == 0) most = std::max(most, conn.consumer("SLOW", "slow").ack_pending);
   })).run();
  CHECK(n == 300);
  CHECK(most >= 1);
  CHECK(most <= 8);
  CHECK(conn.stream_messages("SLOW") == 0);
}

TEST_CASE("nats: a worker killed mid-run: every item's output exactly once", "[nats][process]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "KIN", .subjects = {"kin"}});
  conn.add_stream({.name = "KOUT", .subjects = {"kout"}});
  constexpr std::int64_t n = 3000;
  put(conn, "kin", n);
  auto start = [&] {
    return test::spawn(
        {RILL_NATS_TEST_WORKER, server.url(), "KIN", "kout", "workers", "1000", "4000", "300"});
  };
  pid_t a = start(), b = start();
  REQUIRE(wait_for([&] { return conn.stream_messages("KOUT") >= n / 10; }));
  test::kill_and_wait(a);  // SIGKILL: its unacknowledged messages go to b after ack_wait
  int st = 0;
  const bool done = wait_for([&] { return exited(b, &st); }, 120s);
  if (!done) test::kill_and_wait(b);
  REQUIRE(done);
  CHECK(WIFEXITED(st));
  CHECK(WEXITSTATUS(st) == 0);
  CHECK(conn.stream_messages("KIN") == 0);
  check_doubled(conn, "KOUT", n);
}

TEST_CASE("nats: the server restarted mid-run (file storage): no item lost", "[nats]") {
  test::nats_server server;
  rill::nats::connection conn(server.url());
  conn.add_stream({.name = "RIN", .subjects = {"rin"}});
  conn.add_stream({.name = "ROUT", .subjects = {"rout"}});
  constexpr std::int64_t n = 2000;
  put(conn, "rin", n);
  std::atomic<std::int64_t> seen{0};
  auto h =
      (rill::nats::consume<std::int64_t>(
           conn, {.stream = "RIN", .durable = "r", .buffer = 16, .ack_wait = 2s, .idle = 10s}) |
       rill::map([&](std::int64_t x) {
         rill::this_fiber::sleep_for(500us);  // slow enough to restart the server mid-run
         seen.fetch_add(1);
         return x * 2;
       }) |
       rill::nats::publish<std::int64_t>(conn, "rout"))
          .start();
  REQUIRE(wait_for([&] { return seen.load() >= n / 10; }));
  server.stop();
  server.start();
  h.wait();
  CHECK(conn.stream_messages("RIN") == 0);
  check_doubled(conn, "ROUT", n);
}
