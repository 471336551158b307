// word_count: the ten most frequent words of a text, as a pipeline.
//
//   word_count [--progress] [--stats] [--dot] [--trace=out.json] [--repeat=N] [file]
//
//   file          the text (default: the Gettysburg Address)
//   --progress    a progress bar on stderr while it runs
//   --stats       the per-stage table after the run (items, busy time, waits, bottleneck)
//   --dot         the pipeline as Graphviz DOT after the run (`| dot -Tsvg > wc.svg`)
//   --trace=path  a Chrome trace of the run (open it in ui.perfetto.dev)
//   --repeat=N    read the text N times (a longer run to watch)
//
// The lines are read lazily, split into lowercase words (flat_map), short words are dropped
// (filter), and the words are counted into a map (reduce). tokenize() and count() are plain
// functions: they know nothing of fibers or channels.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <range/v3/view/getlines.hpp>
#include <rill/rill.hpp>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

namespace {

const char* const gettysburg = R"(Four score and seven years ago our fathers brought forth on this
continent, a new nation, conceived in Liberty, and dedicated to the proposition that all men
are created equal.
Now we are engaged in a great civil war, testing whether that nation, or any nation so
conceived and so dedicated, can long endure. We are met on a great battle-field of that war.
We have come to dedicate a portion of that field, as a final resting place for those who here
gave their lives that that nation might live. It is altogether fitting and proper that we
should do this.
But, in a larger sense, we can not dedicate -- we can not consecrate -- we can not hallow --
this ground. The brave men, living and dead, who struggled here, have consecrated it, far
above our poor power to add or detract. The world will little note, nor long remember what we
say here, but it can never forget what they did here. It is for us the living, rather, to be
dedicated here to the unfinished work which they who fought here have thus far so nobly
advanced. It is rather for us to be here dedicated to the great task remaining before us --
that from these honored dead we take increased devotion to that cause for which they gave the
last full measure of devotion -- that we here highly resolve that these dead shall not have
died in vain -- that this nation, under God, shall have a new birth of freedom -- and that
government of the people, by the people, for the people, shall not perish from the earth.)";

using counts = std::unordered_map<std::string, long>;

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

// count(): one more occurrence of w.
counts count(counts c, const std::string& w) {
  ++c[w];
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  bool progress = false, stats = false, dot = false;
  const char* trace = nullptr;
  const char* path = nullptr;
  long repeat = 1;
  for (int i = 1; i < argc; ++i) {
    const char* a = argv[i];
    if (std::strcmp(a, "--progress") == 0) {
      progress = true;
    } else if (std::strcmp(a, "--stats") == 0) {
      stats = true;
    } else if (std::strcmp(a, "--dot") == 0) {
      dot = true;
    } else if (std::strncmp(a, "--trace=", 8) == 0) {
      trace = a + 8;
    } else if (std::strncmp(a, "--repeat=", 9) == 0) {
      repeat = std::max(1L, std::strtol(a + 9, nullptr, 10));
    } else if (a[0] == '-' && a[1] == '-') {
      std::fprintf(stderr, "word_count: unknown option %s\n", a);
      return 2;
    } else {
      path = a;
    }
  }
  // The text, `repeat` times over (one string: the lines are then read lazily from it).
  std::string text = gettysburg;
  if (path) {
    std::ifstream file(path);
    if (!file) {
      std::fprintf(stderr, "word_count: cannot open %s\n", path);
      return 2;
    }
    std::ostringstream all;
    all << file.rdbuf();
    text = all.str();
  }
  std::string whole;
  whole.reserve(text.size() * static_cast<std::size_t>(repeat) + static_cast<std::size_t>(repeat));
  for (long r = 0; r < repeat; ++r) (whole += text) += '\n';
  std::istringstream in(whole);

  auto word_counts =
      rill::from(ranges::getlines(in))                  // one item per line, read lazily
      | rill::flat_map(tokenize, {.name = "tokenize"})  // a line -> its words
      | rill::filter([](const std::string& w) { return w.size() > 3; }, {.name = "long_words"}) |
      rill::reduce(counts{}, count);  // run() returns the counts
  std::optional<rill::trace_session> tracing;
  if (trace) tracing.emplace(trace);
  const counts c = word_counts.run(rill::run_options{.progress = progress});
  if (tracing && !tracing->stop()) std::fprintf(stderr, "word_count: cannot write %s\n", trace);

  std::vector<std::pair<std::string, long>> top(c.begin(), c.end());
  const auto ten = top.begin() + static_cast<long>(std::min<std::size_t>(10, top.size()));
  std::partial_sort(top.begin(), ten, top.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::printf("%zu distinct words longer than 3 letters; the most frequent:\n", c.size());
  for (auto it = top.begin(); it != ten; ++it)
    std::printf("%7ld  %s\n", it->second, it->first.c_str());
  std::fflush(stdout);
  if (stats) std::cout << "\n" << word_counts.stats();
  if (dot) std::cout << word_counts.to_dot();
  return c.empty() ? 1 : 0;
}
