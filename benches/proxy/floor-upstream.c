// The cheapest upstream there can be, for benches/proxy/upstream-floor.sh: one thread, epoll,
// keep-alive HTTP/1.1, one read and one write per request, answering every request with the
// same fixed JSON prediction as benches/proxy/upstream.conf.in (and {"status":"ok"} on
// GET /health). No HTTP beyond finding the head's end and Content-Length: it is a measuring
// stick for what the kernel's socket work costs per request, not a server to use.
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#define BUF 65536
#define MAXC 65536
struct conn { int fd; size_t len; char buf[BUF]; };
static struct conn *conns[MAXC];
static const char RESP[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 35\r\n\r\n{\"prediction\":1,\"probability\":0.93}";
static const char HEALTH[] = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 15\r\n\r\n{\"status\":\"ok\"}";
static char out[BUF*2];
static void drop(int ep, int fd) { epoll_ctl(ep, EPOLL_CTL_DEL, fd, NULL); close(fd); free(conns[fd]); conns[fd] = NULL; }
int main(int argc, char **argv) {
  int port = argc > 1 ? atoi(argv[1]) : 28080;
  int ls = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(ls, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(port) };
  inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
  if (bind(ls, (void *)&a, sizeof a) || listen(ls, 4096)) { perror("bind/listen"); return 1; }
  int ep = epoll_create1(0);
  struct epoll_event ev = { .events = EPOLLIN, .data.fd = ls }, evs[512];
  epoll_ctl(ep, EPOLL_CTL_ADD, ls, &ev);
  for (;;) {
    int n = epoll_wait(ep, evs, 512, -1);
    for (int i = 0; i < n; i++) {
      int fd = evs[i].data.fd;
      if (fd == ls) {
        int c;
        while ((c = accept4(ls, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          if (c >= MAXC) { close(c); continue; }
          setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conns[c] = calloc(1, sizeof(struct conn)); conns[c]->fd = c;
          struct epoll_event ce = { .events = EPOLLIN | EPOLLET, .data.fd = c };
          epoll_ctl(ep, EPOLL_CTL_ADD, c, &ce);
        }
        continue;
      }
      struct conn *k = conns[fd];
      if (!k) continue;
      int dead = 0;
      for (;;) {
        ssize_t r = read(fd, k->buf + k->len, BUF - k->len);
        if (r > 0) { k->len += r; if ((size_t)r < BUF - k->len + r) break; continue; }
        if (r == 0) { dead = 1; break; }
        if (errno == EAGAIN) break;
        dead = 1; break;
      }
      if (dead) { drop(ep, fd); continue; }
      size_t o = 0;
      for (;;) {
        char *end = memmem(k->buf, k->len, "\r\n\r\n", 4);
        if (!end) { if (k->len == BUF) dead = 1; break; }
        size_t head = end + 4 - k->buf, body = 0;
        char *cl = memmem(k->buf, head, "ontent-Length:", 14);
        if (!cl) cl = memmem(k->buf, head, "ontent-length:", 14);
        if (cl) body = strtoul(cl + 14, NULL, 10);
        if (head + body > k->len) { if (head + body > BUF) dead = 1; break; }
        int health = k->len > 11 && !memcmp(k->buf, "GET /health", 11);
        const char *rsp = health ? HEALTH : RESP; size_t rl = health ? sizeof HEALTH - 1 : sizeof RESP - 1;
        memcpy(out + o, rsp, rl); o += rl;
        memmove(k->buf, k->buf + head + body, k->len - head - body); k->len -= head + body;
      }
      if (o && write(fd, out, o) != (ssize_t)o) dead = 1;
      if (dead) drop(ep, fd);
    }
  }
}
