// epoll_echo_server: the echo benchmark's floor. A plain C event loop, no runtime: N
// threads, each with its own epoll set (level-triggered); thread 0 also accepts and deals
// the connections out round-robin. Nothing is queued or scheduled in user space, so what
// the client measures against it is the kernel's and the client's share of a round trip.
//
//   epoll_echo_server PORT [THREADS]    (PORT 0: any free port; THREADS default 2)
//
// It prints "epoll_echo_server: listening on 127.0.0.1:PORT" once it accepts connections,
// like samples/echo_server, and serves until killed. scripts/bench_echo runs it beside
// rill's and Go's servers.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum { max_threads = 64, max_events = 64 };

static int listener = -1;
static int nthreads = 2;
static int epfds[max_threads];
static unsigned next_thread = 0;  // thread 0 only

static void die(const char* what) {
  perror(what);
  exit(1);
}

// write_all: the reply is small; if the peer's window is full, wait for it (stalling the
// thread's other connections: an echo client reads its replies, so it does not happen in
// the benchmark).
static int write_all(int fd, const char* p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w > 0) {
      p += w;
      n -= (size_t)w;
    } else if (w < 0 && errno == EAGAIN) {
      struct pollfd pf = {.fd = fd, .events = POLLOUT};
      poll(&pf, 1, -1);
    } else if (!(w < 0 && errno == EINTR)) {
      return -1;
    }
  }
  return 0;
}

static void accept_all(void) {
  for (;;) {
    int c = accept4(listener, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) {
      // EAGAIN: drained. Out of fds (EMFILE/ENFILE), the level-triggered listener would be
      // reported again at once: back off a little (scripts/bench_echo raises the limit).
      if (errno == EMFILE || errno == ENFILE) usleep(1000);
      return;
    }
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct epoll_event ev = {.events = EPOLLIN, .data.fd = c};
    if (epoll_ctl(epfds[next_thread++ % (unsigned)nthreads], EPOLL_CTL_ADD, c, &ev) != 0) close(c);
  }
}

static void* loop(void* arg) {
  const int ep = epfds[(intptr_t)arg];
  struct epoll_event evs[max_events];
  char buf[4096];
  for (;;) {
    int n = epoll_wait(ep, evs, max_events, -1);
    for (int i = 0; i < n; ++i) {
      int fd = evs[i].data.fd;
      if (fd == listener) {
        accept_all();
        continue;
      }
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        if (write_all(fd, buf, (size_t)r) == 0) continue;
      } else if (r < 0 && (errno == EAGAIN || errno == EINTR)) {
        continue;
      }
      close(fd);  // end of stream or error (close also leaves the epoll set)
    }
  }
  return NULL;
}

int main(int argc, char** argv) {
  int port = argc > 1 ? atoi(argv[1]) : 0;
  if (argc > 2) nthreads = atoi(argv[2]);
  if (nthreads < 1 || nthreads > max_threads) {
    fprintf(stderr, "epoll_echo_server: THREADS must be 1..%d\n", max_threads);
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);  // a peer that resets: write() fails with EPIPE, as in rill and Go
  listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listener < 0) die("socket");
  int one = 1;
  setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(listener, (struct sockaddr*)&a, sizeof a) != 0) die("bind");
  if (listen(listener, 4096) != 0) die("listen");
  socklen_t len = sizeof a;
  getsockname(listener, (struct sockaddr*)&a, &len);
  for (int i = 0; i < nthreads; ++i) {
    epfds[i] = epoll_create1(EPOLL_CLOEXEC);
    if (epfds[i] < 0) die("epoll_create1");
  }
  struct epoll_event ev = {.events = EPOLLIN, .data.fd = listener};
  if (epoll_ctl(epfds[0], EPOLL_CTL_ADD, listener, &ev) != 0) die("epoll_ctl");
  printf("epoll_echo_server: listening on 127.0.0.1:%d\n", ntohs(a.sin_port));
  fflush(stdout);
  for (int i = 1; i < nthreads; ++i) {
    pthread_t t;
    if (pthread_create(&t, NULL, loop, (void*)(intptr_t)i) != 0) die("pthread_create");
  }
  loop((void*)(intptr_t)0);
  return 0;
}
