// The least a user-space TCP relay can do: one thread, level-triggered
// epoll, accept4, a non-blocking connect to the backend, then read(2) into
// one stack buffer and write(2) to the peer, with nothing parsed, logged,
// timed or pooled. Bytes the peer did not take wait in a per-connection
// buffer (and reading that side stops) until EPOLLOUT. A bench candidate
// ("floor-tcp", bench/configs.py): beside nginx's stream and HAProxy's tcp
// mode it shows how much of an L4 proxy's CPU per message is the kernel's,
// which no proxy can cut (bench/README.md "The L4 floor").
//
//   cc -O2 -o relay_floor bench/relay_floor.c
//   relay_floor LISTEN_HOST LISTEN_PORT BACKEND_HOST BACKEND_PORT
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAXFD 65536
#define BUF 16384

struct end {
  int peer;   // the other socket of the pair, -1 when unused
  char *pend; // bytes read for this socket that it has not taken yet
  int plen, poff;
  int eof;    // the peer closed: close the pair once pend drains
};

static struct end e[MAXFD];
static int ep;

static void watch(int fd, unsigned ev, int op) {
  struct epoll_event x = {.events = ev, .data.fd = fd};
  epoll_ctl(ep, op, fd, &x);
}

static void close_pair(int fd) {
  int p = e[fd].peer;
  int fds[2] = {fd, p};
  for (int i = 0; i < 2; i++) {
    int f = fds[i];
    if (f < 0) continue;
    free(e[f].pend);
    e[f] = (struct end){.peer = -1};
    close(f);
  }
}

// Writes buf to `to`; what it does not take waits in e[to].pend, and
// `from` stops being read until it drains. Returns -1 if the pair closed.
static int relay(int from, int to, const char *buf, int n) {
  int w = 0;
  while (w < n) {
    ssize_t k = send(to, buf + w, n - w, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k > 0) { w += k; continue; }
    if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOTCONN)) break;
    if (k < 0 && errno == EINTR) continue;
    close_pair(from);
    return -1;
  }
  if (w < n) {
    e[to].pend = malloc(n - w);
    memcpy(e[to].pend, buf + w, n - w);
    e[to].plen = n - w;
    e[to].poff = 0;
    watch(to, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
    watch(from, 0, EPOLL_CTL_MOD);
  }
  return 0;
}

static void readable(int fd) {
  static char buf[BUF];
  int p = e[fd].peer;
  if (e[p].plen > 0) return; // paused (a hang-up is reported even then)
  ssize_t n = read(fd, buf, sizeof buf);
  if (n > 0) {
    relay(fd, p, buf, n);
    return;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
  // EOF or error: whatever the peer still owes is flushed first.
  if (e[p].plen > 0) {
    e[p].eof = 1;
    watch(fd, 0, EPOLL_CTL_MOD);
  } else {
    close_pair(fd);
  }
}

static void writable(int fd) {
  struct end *x = &e[fd];
  while (x->poff < x->plen) {
    ssize_t k = send(fd, x->pend + x->poff, x->plen - x->poff, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (k > 0) { x->poff += k; continue; }
    if (k < 0 && (errno == EAGAIN || errno == ENOTCONN)) return;
    close_pair(fd);
    return;
  }
  free(x->pend);
  x->pend = 0;
  x->plen = x->poff = 0;
  if (x->eof) { close_pair(fd); return; }
  watch(fd, EPOLLIN, EPOLL_CTL_MOD);
  watch(x->peer, EPOLLIN, EPOLL_CTL_MOD);
}

int main(int argc, char **argv) {
  if (argc != 5) { fprintf(stderr, "usage: relay_floor LISTEN_HOST LISTEN_PORT BACKEND_HOST BACKEND_PORT\n"); return 2; }
  signal(SIGPIPE, SIG_IGN);
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max < MAXFD ? rl.rlim_max : MAXFD;
  setrlimit(RLIMIT_NOFILE, &rl);
  for (int i = 0; i < MAXFD; i++) e[i].peer = -1;
  struct sockaddr_in la = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[2]))};
  struct sockaddr_in ba = {.sin_family = AF_INET, .sin_port = htons(atoi(argv[4]))};
  inet_pton(AF_INET, argv[1], &la.sin_addr);
  inet_pton(AF_INET, argv[3], &ba.sin_addr);
  int l = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4);
  if (bind(l, (void *)&la, sizeof la) || listen(l, 4096)) { perror("listen"); return 1; }
  ep = epoll_create1(0);
  watch(l, EPOLLIN, EPOLL_CTL_ADD);
  struct epoll_event ev[256];
  for (;;) {
    int k = epoll_wait(ep, ev, 256, -1);
    for (int j = 0; j < k; j++) {
      int fd = ev[j].data.fd;
      if (fd == l) {
        for (;;) {
          int c = accept4(l, 0, 0, SOCK_NONBLOCK);
          if (c < 0) break;
          int b = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
          if (c >= MAXFD || b < 0 || b >= MAXFD) { close(c); if (b >= 0) close(b); continue; }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, 4);
          setsockopt(b, IPPROTO_TCP, TCP_NODELAY, &one, 4);
          if (connect(b, (void *)&ba, sizeof ba) && errno != EINPROGRESS) { close(c); close(b); continue; }
          e[c].peer = b;
          e[b].peer = c;
          watch(c, EPOLLIN, EPOLL_CTL_ADD);
          watch(b, EPOLLIN, EPOLL_CTL_ADD);
        }
        continue;
      }
      if (e[fd].peer < 0) continue; // closed earlier in this batch
      if (ev[j].events & EPOLLOUT) writable(fd);
      if (e[fd].peer >= 0 && (ev[j].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) readable(fd);
    }
  }
}
