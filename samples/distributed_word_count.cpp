// distributed_word_count: word_count spread over processes (and hosts) through NATS
// JetStream. scripts/run_distributed starts a server and every role, and checks the result.
//
//   distributed_word_count producer  <url> <file>      lines -> stream WC_LINES; prints the count
//   distributed_word_count worker    <url> [idle_ms]   WC_LINES -> words -> WC_WORDS (run N)
//   distributed_word_count collector <url> <lines>     WC_WORDS -> counts; prints them
//   distributed_word_count local     <file>            the same counts in one process
//
// Workers share the durable consumer "split": each line goes to one of them, and a line
// whose worker dies before acknowledging it goes to another after ack_wait. The worker's
// output carries a message id derived from the line's sequence, so a line done twice is
// stored once. tokenize() and add() are the same plain functions in every role.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <rill/nats.hpp>
#include <rill/pipeline/io.hpp>
#include <string>
#include <vector>

namespace {

using counts = std::map<std::string, long>;

// tokenize(): the lowercase words of a line.
std::vector<std::string> tokenize(const std::string& line) {
  std::vector<std::string> words(1);
  for (unsigned char c : line) {
    if (std::isalpha(c)) {
      words.back() += static_cast<char>(std::tolower(c));
    } else if (!words.back().empty()) {
      words.emplace_back();
    }
  }
  if (words.back().empty()) words.pop_back();
  return words;
}

// add(): the words of one line, counted.
counts add(counts c, const std::vector<std::string>& words) {
  for (const auto& w : words) ++c[w];
  return c;
}

void print(const counts& c) {
  for (const auto& [w, n] : c) std::printf("%s %ld\n", w.c_str(), n);
}

void streams(rill::nats::connection& conn) {
  conn.add_stream({.name = "WC_LINES", .subjects = {"wc.lines"}});
  conn.add_stream({.name = "WC_WORDS", .subjects = {"wc.words"}});
}

int open_file(const char* path) {
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    std::perror(path);
    std::exit(2);
  }
  return fd;
}

int usage() {
  std::fprintf(stderr,
               "usage: distributed_word_count producer <url> <file>\n"
               "       distributed_word_count worker <url> [idle_ms]\n"
               "       distributed_word_count collector <url> <lines>\n"
               "       distributed_word_count local <file>\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return usage();
  const std::string role = argv[1];
  try {
    if (role == "local") {
      const int fd = open_file(argv[2]);
      print((rill::read_lines(fd) | rill::map(tokenize) | rill::reduce(counts{}, add)).run());
      return 0;
    }
    rill::nats::connection conn(argv[2]);
    if (role == "producer" && argc == 4) {
      streams(conn);
      const int fd = open_file(argv[3]);
      std::size_t lines = 0;
      (rill::read_lines(fd) | rill::tap([&](const std::string&) { ++lines; }) |
       rill::nats::publish<std::string>(conn, "wc.lines"))
          .run();
      std::printf("%zu\n", lines);
    } else if (role == "worker") {
      streams(conn);
      const auto idle = std::chrono::milliseconds(argc > 3 ? std::atol(argv[3]) : 0);
      (rill::nats::consume<std::string>(conn, {.stream = "WC_LINES",
                                               .durable = "split",
                                               .buffer = 64,
                                               .ack_wait = std::chrono::seconds(2),
                                               .idle = idle}) |
       rill::tap([first = true](const std::string&) mutable {
         if (first) std::fprintf(stderr, "worker: first line\n");  // run_distributed waits for it
         first = false;
       }) |
       rill::map(tokenize) | rill::nats::publish<std::vector<std::string>>(conn, "wc.words"))
          .run();
    } else if (role == "collector" && argc == 4) {
      streams(conn);
      const auto lines = static_cast<std::size_t>(std::atoll(argv[3]));
      print((rill::nats::consume<std::vector<std::string>>(
                 conn, {.stream = "WC_WORDS", .durable = "collect"}) |
             rill::take(lines) | rill::reduce(counts{}, add))
                .run());
    } else {
      return usage();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "distributed_word_count %s: %s\n", role.c_str(), e.what());
    return 1;
  }
  return 0;
}
