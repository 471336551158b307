// Replays fuzz inputs through the same LLVMFuzzerTestOneInput, without libFuzzer: every
// build (gcc or clang, any sanitizer) runs the committed corpus as a plain test.
//   rill_fuzz_replay <file or directory>...
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "support/run_with.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

int main(int argc, char** argv) {
  std::vector<std::filesystem::path> files;
  for (int i = 1; i < argc; ++i) {
    const std::filesystem::path p(argv[i]);
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p)) {
        if (e.is_regular_file()) files.push_back(e.path());
      }
    } else {
      files.push_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes{std::istreambuf_iterator<char>(in), {}};
    // A hang prints the fibers and the input, and fails (instead of the ctest timeout).
    const std::string what = "fuzz input " + f.string();
    test::watchdog dog(std::chrono::seconds(60), what.c_str());
    LLVMFuzzerTestOneInput(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("FIGURE fuzz.corpus_replayed=%zu failures=0\n", files.size());
  return files.empty() ? 1 : 0;
}
