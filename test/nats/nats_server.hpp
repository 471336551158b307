// Test support: a nats-server of the test's own (JetStream on, a free loopback port, a
// temporary store), killed when the object goes, and with the test process (SIGKILL on
// the parent's death), whatever way the test ends.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test {

// free_port(): a loopback port nobody listens on now.
inline int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) throw std::runtime_error("bind");
  socklen_t n = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &n);
  ::close(fd);
  return ntohs(a.sin_port);
}

// can_connect(): something accepts connections on 127.0.0.1:port.
inline bool can_connect(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// spawn(): starts argv as a child that dies with this process.
inline pid_t spawn(const std::vector<std::string>& argv, const char* output = nullptr) {
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    if (output) {
      const int fd = ::open(output, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) {
        ::dup2(fd, 1);
        ::dup2(fd, 2);
      }
    }
    std::vector<char*> a;
    for (const auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    ::execvp(a[0], a.data());
    ::_exit(127);
  }
  return pid;
}

// kill_and_wait(): SIGKILL (or `sig`) and reap.
inline void kill_and_wait(pid_t& pid, int sig = SIGKILL) {
  if (pid <= 0) return;
  ::kill(pid, sig);
  int st;
  ::waitpid(pid, &st, 0);
  pid = -1;
}

class nats_server {
 public:
  nats_server() : port_(free_port()) {
    char tmpl[] = "/tmp/rill-nats-test-XXXXXX";
    if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
    dir_ = tmpl;
    start();
  }
  nats_server(const nats_server&) = delete;
  nats_server& operator=(const nats_server&) = delete;
  ~nats_server() {
    kill_and_wait(pid_);
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  int port() const { return port_; }

  // start(): runs the server on the same port and store; returns once it accepts clients.
  void start() {
    pid_ =
        spawn({"nats-server", "-js", "-a", "127.0.0.1", "-p", std::to_string(port_), "-sd", dir_},
              (dir_ + "/server.log").c_str());
    // Polling with a deadline: the server is another process, with nothing to wait on.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (!can_connect(port_)) {
      int st;
      if (::waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("nats-server exited at start (is it installed? scripts/setup)");
      }
      if (std::chrono::steady_clock::now() > deadline)
        throw std::runtime_error("nats-server start");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  // stop(): a clean shutdown (SIGTERM: the file store is synced), as for a restart.
  void stop() { kill_and_wait(pid_, SIGTERM); }

 private:
  int port_;
  std::string dir_;
  pid_t pid_ = -1;
};

}  // namespace test
