/* netsim-cni-plugin: the compiled fast path of netsim's CNI plugins.
 *
 * A runtime execs a plugin once per pod and waits for it.  Python needs ~8 ms just to start,
 * so this launcher (built by `netsim cni install`, or `make install` into cni_plugins/bin)
 * does only what must happen in the exec'd process: it hands the call -- the plugin type
 * (this file's name), the environment and stdin -- to the node agent's plugin server on
 * $NETSIM_CNI_SOCKET and relays the answer, as Calico's and Cilium's CNI binaries do.  The
 * server runs the Python plugin in this process's network namespace.
 *
 * With no server it runs the plugin in the Python it was built for (PYTHON, with netsim from
 * NETSIM_ROOT), feeding it the stdin already read through a pipe.  The wire format is netsim/cni/shim.py's encode_request.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#if !defined(PYTHON) || !defined(NETSIM_ROOT) || !defined(STANDALONE_SOCKET)
#error "build with -DPYTHON=... -DNETSIM_ROOT=... -DSTANDALONE_SOCKET=... (netsim cni install does)"
#endif

#define REPLY_TIMEOUT_S 120

extern char **environ;
static const char marker[] __attribute__((used)) = "netsim-cni-plugin";

struct buf { char *data; size_t len, cap; };

static void put(struct buf *b, const void *p, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) { perror("netsim cni shim: realloc"); exit(1); }
        b->data = d; b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
}

static void put_u32(struct buf *b, uint32_t v) {
    unsigned char le[4] = {v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (v >> 24) & 0xff};
    put(b, le, 4);
}

static int write_all(int fd, const char *p, size_t n) {
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0) { if (errno == EINTR) continue; return -1; }
        p += w; n -= (size_t)w;
    }
    return 0;
}

static int via_server(const char *path, const char *type, const struct buf *in) {
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof addr.sun_path) return -1;
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) { close(fd); return -1; }
    /* A server that accepted the call but never answers must not hang the runtime: after
     * REPLY_TIMEOUT_S say "try again later" (the call may still be running there, so doing
     * the work here as well could double it). */
    struct timeval tv = {.tv_sec = REPLY_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);

    struct buf req = {0}, env = {0};
    for (char **e = environ; *e; e++) {
        if (env.len) put(&env, "", 1);
        put(&env, *e, strlen(*e));
    }
    put_u32(&req, (uint32_t)strlen(type));
    put(&req, type, strlen(type));
    put_u32(&req, (uint32_t)env.len);
    if (env.len) put(&req, env.data, env.len);
    if (in->len) put(&req, in->data, in->len);
    if (write_all(fd, req.data, req.len) < 0) { close(fd); return -1; }
    shutdown(fd, SHUT_WR);

    struct buf reply = {0};
    char chunk[65536];
    for (;;) {
        ssize_t r = read(fd, chunk, sizeof chunk);
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            printf("{\"cniVersion\":\"1.1.0\",\"code\":11,\"msg\":\"the netsim plugin server did not answer "
                   "within %d s\",\"details\":\"socket %s\"}\n", REPLY_TIMEOUT_S, path);
            exit(1);
        }
        if (r < 0) { if (errno == EINTR) continue; close(fd); return -1; }
        if (r == 0) break;
        put(&reply, chunk, (size_t)r);
    }
    close(fd);
    if (reply.len < 4) return -1;  /* the server gave no answer: run the plugin here */
    const unsigned char *c = (const unsigned char *)reply.data;
    int32_t code = (int32_t)((uint32_t)c[0] | (uint32_t)c[1] << 8 | (uint32_t)c[2] << 16 | (uint32_t)c[3] << 24);
    write_all(1, reply.data + 4, reply.len - 4);
    exit(code);
}

/* Start the standalone server (netsim/cni/standalone.py) detached from the runtime: a
 * double fork and setsid, stdio on /dev/null so the runtime's pipes see EOF.  Waits until it
 * listens, or says it will not (another server holds the lock; the pipe closes). */
static void start_standalone(void) {
    int ready[2];
    if (pipe(ready) < 0) return;
    pid_t child = fork();
    if (child < 0) { close(ready[0]); close(ready[1]); return; }
    if (child == 0) {
        close(ready[0]);
        setsid();
        if (fork() != 0) _exit(0);
        int null = open("/dev/null", O_RDWR);
        if (null >= 0) { dup2(null, 0); dup2(null, 1); dup2(null, 2); if (null > 2) close(null); }
        char fd[16];
        snprintf(fd, sizeof fd, "%d", ready[1]);
        char path[4096];
        snprintf(path, sizeof path, "PYTHONPATH=%s", NETSIM_ROOT);
        char *env[] = {path, "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL};
        char *args[] = {PYTHON, "-m", "netsim.cni.standalone", STANDALONE_SOCKET, "--ready-fd", fd, NULL};
        execve(PYTHON, args, env);
        _exit(127);
    }
    close(ready[1]);
    waitpid(child, NULL, 0);
    struct pollfd p = {.fd = ready[0], .events = POLLIN};
    char byte;
    if (poll(&p, 1, 30000) > 0) (void)!read(ready[0], &byte, 1);
    close(ready[0]);
}

int main(int argc, char **argv) {
    (void)argc;
    const char *type = strrchr(argv[0], '/');
    type = type ? type + 1 : argv[0];

    struct buf in = {0};
    char chunk[65536];
    for (;;) {
        ssize_t r = read(0, chunk, sizeof chunk);
        if (r < 0) { if (errno == EINTR) continue; break; }
        if (r == 0) break;
        put(&in, chunk, (size_t)r);
    }

    const char *sock = getenv("NETSIM_CNI_SOCKET");
    if (sock && *sock) via_server(sock, type, &in);
    /* No agent's server: the standalone one, started on first use (each try returns only
     * when the call did not run there). */
    if (getenv("NETSIM_CNI_NO_STANDALONE") == NULL) {
        via_server(STANDALONE_SOCKET, type, &in);
        start_standalone();
        via_server(STANDALONE_SOCKET, type, &in);
    }

    /* No server: exec the Python plugin, its stdin a pipe holding what we read. */
    int p[2];
    if (pipe(p) < 0) { perror("netsim cni shim: pipe"); return 1; }
    pid_t writer = 0;
    if (in.len <= 65536) {
        write_all(p[1], in.data, in.len);
    } else if ((writer = fork()) == 0) {
        close(p[0]);
        _exit(write_all(p[1], in.data, in.len) ? 1 : 0);
    }
    close(p[1]);
    dup2(p[0], 0);
    close(p[0]);
    /* The interpreter and checkout this launcher was built for (netsim cni install). */
    char code[4096];
    snprintf(code, sizeof code, "import sys; sys.path.insert(0, '%s'); from netsim.cni.shim import run_here; "
             "run_here('%s', b'')", NETSIM_ROOT, type);
    unsetenv("NETSIM_CNI_SOCKET");
    setenv("NETSIM_CNI_STDIN_FD", "0", 1);
    char *args[] = {PYTHON, "-c", code, NULL};
    execv(PYTHON, args);
    fprintf(stdout, "{\"cniVersion\":\"1.1.0\",\"code\":5,\"msg\":\"cannot run %s: %s\"}\n", PYTHON, strerror(errno));
    return 1;
}
