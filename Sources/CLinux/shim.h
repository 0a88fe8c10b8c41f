#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>

/* accept4 is declared only under _GNU_SOURCE, which the Glibc module is built without. */
extern int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags);
