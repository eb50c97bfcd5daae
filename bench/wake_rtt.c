// What a wake-up across CPUs costs on this machine, with no proxy at all:
// a loopback TCP ping-pong at a fixed rate (one byte every GAP us), the
// echo process pinned to ECHO_CPU and the sender to SEND_CPU; prints the
// round trip's p50, p99 and p99.9 in us. Same CPU: the two processes hand
// the CPU to each other. Different CPUs: each message wakes a CPU that went
// idle in the gap (on a VM, a halted vCPU the host has to schedule again).
// A proxy between a client and a server that share a CPU adds such wake-ups
// (bench/grpc_p99.py, bench/README.md "gRPC unary latency").
//
//   cc -O2 -o /tmp/wake_rtt bench/wake_rtt.c
//   /tmp/wake_rtt ECHO_CPU SEND_CPU [COUNT=3000] [GAP_US=1000]
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec*1e6+t.tv_nsec/1e3;}
static void pin(int c){cpu_set_t s;CPU_ZERO(&s);CPU_SET(c,&s);sched_setaffinity(0,sizeof s,&s);}
static int cmp(const void*a,const void*b){double x=*(double*)a,y=*(double*)b;return x<y?-1:x>y;}
int main(int argc,char**argv){
  int ecpu=atoi(argv[1]), scpu=atoi(argv[2]), n=argc>3?atoi(argv[3]):3000, gap=argc>4?atoi(argv[4]):1000;
  int l=socket(AF_INET,SOCK_STREAM,0); struct sockaddr_in a={0}; a.sin_family=AF_INET; a.sin_addr.s_addr=htonl(0x7f000001);
  int one=1; setsockopt(l,SOL_SOCKET,SO_REUSEADDR,&one,4); bind(l,(void*)&a,sizeof a); listen(l,1);
  socklen_t al=sizeof a; getsockname(l,(void*)&a,&al);
  if(fork()==0){pin(ecpu); int c=accept(l,0,0); setsockopt(c,IPPROTO_TCP,TCP_NODELAY,&one,4); char b[64]; int r; while((r=read(c,b,64))>0) write(c,b,r); _exit(0);}
  pin(scpu); int s=socket(AF_INET,SOCK_STREAM,0); connect(s,(void*)&a,sizeof a); setsockopt(s,IPPROTO_TCP,TCP_NODELAY,&one,4);
  double *rt=malloc(n*sizeof(double)); char b[64]="x";
  for(int i=0;i<n;i++){ usleep(gap); double t=now(); write(s,b,1); read(s,b,64); rt[i]=now()-t; }
  close(s); wait(0); qsort(rt,n,sizeof(double),cmp);
  printf("echo cpu %d sender cpu %d gap %d us: p50 %.1f p99 %.1f p99.9 %.1f us\n",ecpu,scpu,gap,rt[n/2],rt[n*99/100],rt[n*999/1000]);
}
