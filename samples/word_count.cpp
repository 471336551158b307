// word_count: the ten most frequent words of a text, as a pipeline.
//
//   word_count [file]        without a file: the Gettysburg Address
//
// The lines are read lazily, split into lowercase words (flat_map), short words are dropped
// (filter), and the words are counted into a map (reduce). tokenize() and count() are plain
// functions: they know nothing of fibers or channels.
#include <rill/rill.hpp>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <range/v3/view/getlines.hpp>

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
  std::ifstream file;
  std::istringstream builtin(gettysburg);
  if (argc > 1) {
    file.open(argv[1]);
    if (!file) {
      std::fprintf(stderr, "word_count: cannot open %s\n", argv[1]);
      return 2;
    }
  }
  std::istream& in = argc > 1 ? static_cast<std::istream&>(file) : builtin;

  auto word_counts = rill::from(ranges::getlines(in))  // one item per line, read lazily
                   | rill::flat_map(tokenize)          // a line -> its words
                   | rill::filter([](const std::string& w) { return w.size() > 3; })
                   | rill::reduce(counts{}, count);    // run() returns the counts
  const counts c = word_counts.run();

  std::vector<std::pair<std::string, long>> top(c.begin(), c.end());
  const auto ten = top.begin() + static_cast<long>(std::min<std::size_t>(10, top.size()));
  std::partial_sort(top.begin(), ten, top.end(), [](const auto& a, const auto& b) {
    return a.second != b.second ? a.second > b.second : a.first < b.first;
  });
  std::printf("%zu distinct words longer than 3 letters; the most frequent:\n", c.size());
  for (auto it = top.begin(); it != ten; ++it) std::printf("%7ld  %s\n", it->second, it->first.c_str());
  return c.empty() ? 1 : 0;
}
