// The floor of a broadcast on this machine, with no proxy at all: one
// process sends a 102-byte message (a WebSocket text frame of 100 bytes)
// to each of N loopback TCP connections, one send(2) each from SENDERS
// threads, and a second process reads them in one epoll loop, as
// bench/wsload's raw clients do. Prints the time from the first send to the
// last receipt (p50, p99 over ROUNDS rounds, 200 ms apart) and each side's
// CPU per round. No framing, no queue, no task: what any broadcaster pays
// the kernel for N small TCP sends on loopback (issue 11's bar, see
// bench/README.md "Broadcast floor").
//
//   cc -O2 -pthread -o /tmp/fanout_floor bench/fanout_floor.c
//   /tmp/fanout_floor [N=9900] [ROUNDS=20] [SENDERS=1]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MSG 102

struct shared {
  _Atomic long bytes;     // received so far, all rounds
  _Atomic double last;    // time of the receipt that completed a round
  _Atomic int round_done; // rounds completed by the receiver
  _Atomic int go;         // round the senders should run (1-based)
  _Atomic int sent;       // sender threads done with the current round
  _Atomic long tx_ns;     // senders' CPU inside their send loops
  double rx_cpu;          // receiver CPU over the rounds, s
};

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}
static double cpu_self(void) {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return u.ru_utime.tv_sec + u.ru_utime.tv_usec / 1e6 + u.ru_stime.tv_sec + u.ru_stime.tv_usec / 1e6;
}
static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static struct shared *sh;
static int n, rounds, senders, *fds;

static void *send_loop(void *arg) {
  long k = (long)arg;
  char msg[MSG];
  memset(msg, 'x', MSG);
  for (int r = 1; r <= rounds; r++) {
    while (atomic_load(&sh->go) < r) usleep(50);
    struct timespec c0, c1;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c0);
    for (int i = k; i < n; i += senders) {
      ssize_t w = send(fds[i], msg, MSG, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w != MSG) { perror("send"); exit(1); }
    }
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &c1);
    atomic_fetch_add(&sh->tx_ns, (c1.tv_sec - c0.tv_sec) * 1000000000L + c1.tv_nsec - c0.tv_nsec);
    atomic_fetch_add(&sh->sent, 1);
  }
  return 0;
}

static void receive(int *cfd) {
  int ep = epoll_create1(0);
  for (int i = 0; i < n; i++) {
    struct epoll_event e = {.events = EPOLLIN, .data.fd = cfd[i]};
    epoll_ctl(ep, EPOLL_CTL_ADD, cfd[i], &e);
  }
  struct epoll_event ev[256];
  char buf[4096];
  long total = (long)n * MSG * rounds;
  double c0 = -1;
  while (atomic_load(&sh->bytes) < total) {
    int k = epoll_wait(ep, ev, 256, 1000);
    for (int j = 0; j < k; j++) {
      for (;;) {
        ssize_t m = read(ev[j].data.fd, buf, sizeof buf);
        if (m <= 0) break;
        if (c0 < 0) c0 = cpu_self();
        long b = atomic_fetch_add(&sh->bytes, m) + m;
        if (b % ((long)n * MSG) == 0) {
          atomic_store(&sh->last, now());
          atomic_fetch_add(&sh->round_done, 1);
        }
        if (m < (ssize_t)sizeof buf) break;
      }
    }
  }
  sh->rx_cpu = cpu_self() - c0;
}

int main(int argc, char **argv) {
  n = argc > 1 ? atoi(argv[1]) : 9900;
  rounds = argc > 2 ? atoi(argv[2]) : 20;
  senders = argc > 3 ? atoi(argv[3]) : 1;
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  rl.rlim_cur = rl.rlim_max;
  setrlimit(RLIMIT_NOFILE, &rl);
  sh = mmap(0, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

  int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
  setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, 4);
  bind(l, (void *)&a, sizeof a);
  listen(l, 4096);
  socklen_t al = sizeof a;
  getsockname(l, (void *)&a, &al);

  int ready[2];
  if (pipe(ready)) return 1;
  pid_t rx = fork();
  if (rx == 0) {
    // The clients: n connections, then one epoll loop.
    int *cfd = malloc(n * sizeof(int));
    for (int i = 0; i < n; i++) {
      cfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
      setsockopt(cfd[i], IPPROTO_TCP, TCP_NODELAY, &one, 4);
      while (connect(cfd[i], (void *)&a, sizeof a) && errno != EINPROGRESS) usleep(100);
    }
    if (write(ready[1], "r", 1) != 1) _exit(1);
    receive(cfd);
    _exit(0);
  }
  fds = malloc(n * sizeof(int));
  for (int i = 0; i < n; i++) {
    fds[i] = accept(l, 0, 0);
    if (fds[i] < 0) { perror("accept"); return 1; }
    setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, 4);
  }
  char c;
  if (read(ready[0], &c, 1) != 1) return 1;
  usleep(500000);

  pthread_t *t = malloc(senders * sizeof(pthread_t));
  for (long k = 0; k < senders; k++) pthread_create(&t[k], 0, send_loop, (void *)k);
  double *lat = malloc(rounds * sizeof(double));
  for (int r = 1; r <= rounds; r++) {
    double t0 = now();
    atomic_store(&sh->go, r);
    double limit = t0 + 10;
    while (atomic_load(&sh->round_done) < r || atomic_load(&sh->sent) < r * senders) {
      if (now() > limit) { fprintf(stderr, "round %d timed out\n", r); return 1; }
      usleep(50);
    }
    lat[r - 1] = (atomic_load(&sh->last) - t0) * 1e3;
    usleep(200000);
  }
  double tx_cpu = atomic_load(&sh->tx_ns) / 1e9;
  for (long k = 0; k < senders; k++) pthread_join(t[k], 0);
  waitpid(rx, 0, 0);
  qsort(lat, rounds, sizeof(double), cmp);
  printf("fanout %d x %d B, %d sender thread(s), %d rounds: first send -> last receipt p50 %.1f ms, p99 %.1f ms;"
         " CPU per round: senders' send loops %.1f ms, receiver %.1f ms\n",
         n, MSG, senders, rounds, lat[rounds / 2], lat[rounds * 99 / 100], tx_cpu / rounds * 1e3,
         sh->rx_cpu / rounds * 1e3);
  return 0;
}
