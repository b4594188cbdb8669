/*
 * kiln-agent: PID 1 of a Kiln task container. It runs commands for the provider and
 * carries their output, input, exit status and kills over one channel: its own stdin
 * (frames from the provider) and stdout (frames to the provider), the container's attach
 * stream without a TTY. Its own diagnostics go to stderr, which is not part of the channel.
 *
 * Why C with musl: a static binary of a few dozen KiB that runs in any image, even one
 * holding a single program and no libc; direct access to prctl(PR_SET_CHILD_SUBREAPER),
 * setsid, kill, waitpid and /proc with no runtime in between (no GC pauses as PID 1, no
 * threads); and Zig's `cc` (the ziglang package on PyPI) cross-compiles it for x86_64 and
 * aarch64 with musl and no third-party code. Rust's musl target and Go's toolchain are not
 * available here, and neither would be smaller.
 *
 * Build: `make agent` (agent/compile.py: zig cc -static -Os -s) -> agent/build/kiln-agent;
 * `make dist` puts one per architecture into the platform wheels (hatch_build.py).
 *
 * The channel: frames from the provider on stdin, frames to it on stdout, both framed as
 * agent/PROTOCOL.md specifies (kinds, fields, limits, order, refusals, the end of the channel,
 * KILN_AGENT_DEBUG). That document is the reference; provider_runtime/kiln_provider/
 * agent_protocol.py implements the provider's side of it, and the tests of test_agent_pipes.py
 * drive this binary through pipes against it. A change to the wire changes the document first.
 *
 * Processes: each command has a keeper, a child of the agent and a child subreaper, whose
 * child runs the command in a session of its own. Orphans of the command land on the
 * keeper, so KILL finds the whole tree through /proc/<pid>/task/<tid>/children: the
 * keeper stops everything it finds, repeats until nothing new appears, then SIGKILLs it,
 * and repeats until it has no child. The keeper leaves once its last child is reaped.
 * The agent, PID 1, reaps whatever else ends up on it.
 *
 * End: when its stdin reaches EOF or fails, or stdout fails (the provider is gone), or on
 * SIGTERM (docker stop), the agent SIGKILLs every process (kill(-1) as PID 1) and exits,
 * so the container stops. Not PID 1 (a test runs it as a plain child), it cannot kill(-1):
 * it has every keeper kill its tree and waits for them, so nothing outlives it there either.
 *
 * Diagnostics: one line per write(2) on stderr, never when stderr is the channel itself (the
 * same file as stdin or stdout: a byte there would corrupt the framing). KILN_AGENT_DEBUG=1
 * adds a line per frame read and sent (kind, id, length, a short escaped prefix).
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define VERSION 1
#define MAX_FRAME (1u << 20) /* the largest length field accepted from the provider */
#define CHUNK 32768          /* the largest STDOUT/STDERR payload sent */
#define STDIN_WINDOW (256u * 1024)
#define MAX_CMDS 1024
#define MAX_STRS 65536 /* argc and envc each */
#define HEADER 9
#define DEBUG_PREFIX 16 /* payload bytes a debug line shows */

enum { T_SPAWN = 0x01, T_STDIN, T_KILL, T_CREDIT };
enum { T_HELLO = 0x81, T_STARTED, T_STDOUT, T_STDERR, T_EXIT, T_ERROR, T_STDIN_ACK, T_REFUSED };
enum {
    R_BAD_TYPE = 1, R_BAD_PAYLOAD, R_UNKNOWN_ID, R_ID_IN_USE, R_TOO_LONG, R_TOO_MANY,
    R_STDIN_OVERRUN, R_STDIN_CLOSED
};
/* Keeper -> agent records on the per-command control pipe: three i32, native order. */
enum { K_STARTED = 1, K_FAILED, K_EXIT };

extern char **environ;

struct cmd {
    uint32_t id;
    pid_t keeper;       /* 0 once reaped */
    int ctl, in, out, err; /* our ends; -1 when closed */
    uint64_t credit;
    char *inbuf;        /* queued stdin, at most STDIN_WINDOW bytes */
    size_t inoff, inlen;
    int in_eof;         /* the provider sent EOF: close `in` once the queue is written */
    int started;        /* STARTED sent: output is read only after it, so that it comes first */
    int exited;         /* the keeper reported the main process's end */
    int how, code;
    int killed;         /* KILL came: what its pipes still hold is dropped, EXIT comes at once */
    int done;           /* EXIT or ERROR sent */
};

static struct cmd *cmds[MAX_CMDS];
static int ncmds;
static uint8_t *rbuf; /* frames from the provider */
static size_t rlen;
static uint8_t obuf[CHUNK];
static int diagnostics = 1; /* 0 when stderr is the channel itself: nothing may be written there */
static int debug;           /* KILN_AGENT_DEBUG=1: a line on stderr per frame read and sent */

static void put32(uint8_t *p, uint32_t v) {
    p[0] = v >> 24; p[1] = v >> 16; p[2] = v >> 8; p[3] = v;
}
static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void shutdown_all(int status) __attribute__((noreturn));

/* One diagnostic line on stderr, in one write so that lines never interleave. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...) {
    if (!diagnostics) return;
    char line[512] = "kiln-agent: ";
    size_t n = strlen(line);
    va_list ap;
    va_start(ap, fmt);
    int r = vsnprintf(line + n, sizeof line - n - 1, fmt, ap);
    va_end(ap);
    if (r < 0) return;
    n += (size_t)r < sizeof line - n - 1 ? (size_t)r : sizeof line - n - 2;
    line[n++] = '\n';
    for (size_t at = 0; at < n;) {
        ssize_t w = write(2, line + at, n - at);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* nobody reads our diagnostics: not a reason to stop */
        at += w;
    }
}

static const char *kind_name(uint8_t type) {
    static const char *to[] = {"SPAWN", "STDIN", "KILL", "CREDIT"};
    static const char *from[] = {"HELLO", "STARTED", "STDOUT", "STDERR", "EXIT", "ERROR", "STDIN_ACK", "REFUSED"};
    if (type >= T_SPAWN && type <= T_CREDIT) return to[type - T_SPAWN];
    if (type >= T_HELLO && type <= T_REFUSED) return from[type - T_HELLO];
    return NULL;
}

/* The integer fields a payload starts with, shown as numbers in a debug line: 4 is a u32, 1 a u8. */
static const char *leading_fields(uint8_t type) {
    switch (type) {
    case T_SPAWN: return "444";  /* uid, gid, credit */
    case T_CREDIT: return "4";   /* bytes */
    case T_HELLO: return "444";  /* version, max frame length, stdin window */
    case T_STARTED: return "4";  /* pid */
    case T_EXIT: return "14";    /* how, code or signal */
    case T_ERROR: return "4";    /* errno */
    case T_STDIN_ACK: return "4"; /* bytes */
    case T_REFUSED: return "1";  /* reason */
    default: return "";
    }
}

/* The debug line of one frame, whose payload is `a` then `b`: its leading integer fields as
 * numbers, then at most DEBUG_PREFIX bytes of the rest quoted, printable ASCII as it is and
 * any other byte (and " and \) as \xHH, with "..." when more follow. */
static void log_frame(const char *dir, uint8_t type, uint32_t id, uint32_t length, const uint8_t *a, size_t na,
                      const uint8_t *b, size_t nb) {
    char text[256], kind[8];
    const char *name = kind_name(type);
    if (!name) {
        snprintf(kind, sizeof kind, "0x%02x", type);
        name = kind;
    }
    size_t k = (size_t)snprintf(text, sizeof text, "%s %s id=%u length=%u", dir, name, id, length), i = 0;
    for (const char *f = leading_fields(type); *f && na + nb - i >= (size_t)(*f - '0'); f++) {
        uint32_t v = 0;
        for (int j = 0; j < *f - '0'; j++, i++) v = v << 8 | (i < na ? a[i] : b[i - na]);
        k += (size_t)snprintf(text + k, sizeof text - k, " %u", v);
    }
    if (i < na + nb) {
        text[k++] = ' ';
        text[k++] = '"';
        for (size_t end = i + DEBUG_PREFIX; i < na + nb && i < end; i++) {
            uint8_t ch = i < na ? a[i] : b[i - na];
            if (ch >= 0x20 && ch < 0x7f && ch != '"' && ch != '\\') text[k++] = (char)ch;
            else k += (size_t)snprintf(text + k, 5, "\\x%02x", ch);
        }
        text[k++] = '"';
        text[k] = 0;
        if (i < na + nb) snprintf(text + k, sizeof text - k, "...");
    }
    say("%s", text);
}

static void write_all(int fd, struct iovec *iov, int n) {
    while (n > 0) {
        ssize_t w = writev(fd, iov, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            say("channel write failed: %s", strerror(errno));
            shutdown_all(1);
        }
        while (n > 0 && (size_t)w >= iov->iov_len) { w -= iov->iov_len; iov++; n--; }
        if (n > 0) { iov->iov_base = (char *)iov->iov_base + w; iov->iov_len -= w; }
    }
}

static void send_frame(uint8_t type, uint32_t id, const void *a, size_t na, const void *b, size_t nb) {
    uint8_t h[HEADER];
    put32(h, (uint32_t)(5 + na + nb));
    h[4] = type;
    put32(h + 5, id);
    struct iovec iov[3] = {{h, HEADER}, {(void *)a, na}, {(void *)b, nb}};
    write_all(1, iov, 3);
    if (debug) log_frame("sent", type, id, (uint32_t)(5 + na + nb), a, na, b, nb);
}

static void send_u32(uint8_t type, uint32_t id, uint32_t v) {
    uint8_t p[4];
    put32(p, v);
    send_frame(type, id, p, 4, NULL, 0);
}

static void refuse(uint32_t id, uint8_t reason, const char *text) {
    send_frame(T_REFUSED, id, &reason, 1, text, strlen(text));
}

static void send_error(struct cmd *c, int err, const char *text) {
    uint8_t p[4];
    put32(p, (uint32_t)err);
    send_frame(T_ERROR, c->id, p, 4, text, strlen(text));
    c->done = 1;
}

/* ---- the keeper: one per command, a child subreaper ---------------------------------- */

static void keeper_say(int kind, int a, int b) {
    int rec[3] = {kind, a, b};
    ssize_t w;
    do w = write(3, rec, sizeof rec); while (w < 0 && errno == EINTR);
}

/* Every descendant of `root`, through /proc/<pid>/task/<tid>/children. */
static size_t descendants(pid_t root, pid_t *out, size_t cap) {
    size_t n = 0, next = 0;
    pid_t pid = root;
    for (;;) {
        char path[64];
        snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
        DIR *d = opendir(path);
        if (d) {
            struct dirent *e;
            while ((e = readdir(d)) && n < cap) {
                if (e->d_name[0] == '.') continue;
                char file[320], text[4096];
                snprintf(file, sizeof file, "/proc/%d/task/%s/children", (int)pid, e->d_name);
                int fd = open(file, O_RDONLY | O_CLOEXEC);
                if (fd < 0) continue;
                ssize_t r = read(fd, text, sizeof text - 1);
                close(fd);
                if (r <= 0) continue;
                text[r] = 0;
                for (char *s = text; *s && n < cap;) {
                    char *end;
                    long child = strtol(s, &end, 10);
                    if (end == s) break;
                    out[n++] = (pid_t)child;
                    s = end;
                }
            }
            closedir(d);
        }
        if (next >= n) return n;
        pid = out[next++];
    }
}

static pid_t main_pid;
static int main_reaped;

static void keeper_reap(void) {
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        if (p == main_pid && !main_reaped) {
            main_reaped = 1;
            if (WIFSIGNALED(st)) keeper_say(K_EXIT, 1, WTERMSIG(st));
            else keeper_say(K_EXIT, 0, WEXITSTATUS(st));
        }
    }
}

/* Whether we still have a child, reaped or not (without reaping it: its status may be needed). */
static int has_children(void) {
    siginfo_t si;
    return !(waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD);
}

static void keeper_kill_tree(void) {
    enum { CAP = 8192 };
    static pid_t found[CAP], stopped[CAP];
    for (int round = 0; round < 5000; round++) {
        keeper_reap();
        /* Freeze: stop what we find until a pass finds nothing new, so nothing forks past us. */
        size_t nstopped = 0;
        for (int pass = 0; pass < 100; pass++) {
            size_t n = descendants(getpid(), found, CAP), fresh = 0;
            for (size_t i = 0; i < n; i++) {
                size_t j = 0;
                while (j < nstopped && stopped[j] != found[i]) j++;
                if (j < nstopped) continue;
                kill(found[i], SIGSTOP);
                if (nstopped < CAP) stopped[nstopped++] = found[i];
                fresh++;
            }
            if (!fresh) break;
        }
        if (!nstopped && !has_children()) return;
        for (size_t i = 0; i < nstopped; i++) kill(stopped[i], SIGKILL);
        usleep(1000);
    }
}

struct spawn {
    uint32_t uid, gid, credit;
    char *workdir;
    char **argv, **envp;
};

static void exec_command(const struct spawn *s, int status_fd) __attribute__((noreturn));
static void exec_command(const struct spawn *s, int status_fd) {
    int stage = 0;
    sigset_t all;
    sigfillset(&all);
    for (int sig = 1; sig < 65; sig++) signal(sig, SIG_DFL);
    sigprocmask(SIG_UNBLOCK, &all, NULL);
    setsid();
    if (s->workdir[0] && chdir(s->workdir) < 0) { stage = 1; goto fail; }
    if (setgroups(1, (const gid_t *)&s->gid) < 0 && !(errno == EPERM && getgid() == s->gid)) { stage = 2; goto fail; }
    if (setgid(s->gid) < 0) { stage = 2; goto fail; }
    if (setuid(s->uid) < 0) { stage = 3; goto fail; }
    {
        /* Keep no capability, whatever the container was given for the agent's own use. */
        struct { uint32_t version; int pid; } head = {0x20080522, 0};
        struct { uint32_t effective, permitted, inheritable; } data[2] = {{0, 0, 0}, {0, 0, 0}};
        syscall(SYS_capset, &head, data);
        prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
        /* Nor gain one at exec: uid 0 gets its bounding set back at execve unless no_new_privs
         * holds it to what it had. Task containers have it (no-new-privileges); set here, it
         * holds wherever the agent runs, as outside a container in the tests. */
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    }
    environ = s->envp;
    execvp(s->argv[0], s->argv);
    stage = 4;
fail:;
    int rec[2] = {stage, errno};
    ssize_t w = write(status_fd, rec, sizeof rec);
    (void)w;
    _exit(127);
}

static void close_from(int low) {
    if (syscall(436 /* close_range */, low, ~0u, 0) == 0) return;
    for (int fd = low; fd < 4096; fd++) close(fd);
}

static void keeper(const struct spawn *s, int in_r, int out_w, int err_w, int ctl_w) __attribute__((noreturn));
static void keeper(const struct spawn *s, int in_r, int out_w, int err_w, int ctl_w) {
    int fds[4] = {in_r, out_w, err_w, ctl_w};
    for (int i = 0; i < 4; i++) fds[i] = fcntl(fds[i], F_DUPFD_CLOEXEC, 16);
    for (int i = 0; i < 4; i++) dup2(fds[i], i); /* the command's 0, 1, 2; our control pipe on 3 */
    fcntl(3, F_SETFD, FD_CLOEXEC);
    close_from(4); /* the channel, the signalfd and every other command's pipes */
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_DUMPABLE, 0); /* a command of the same uid cannot ptrace us */
    sigset_t wanted;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGCHLD);
    sigaddset(&wanted, SIGTERM); /* the agent's KILL */
    sigprocmask(SIG_BLOCK, &wanted, NULL);
    int status[2];
    if (pipe2(status, O_CLOEXEC) < 0) { keeper_say(K_FAILED, 0, errno); _exit(1); }
    main_pid = fork();
    if (main_pid < 0) { keeper_say(K_FAILED, 0, errno); _exit(1); }
    if (main_pid == 0) exec_command(s, status[1]);
    close(status[1]);
    close(0); close(1); close(2); /* only the command holds its pipes: EOF means its tree closed them */
    int rec[2];
    ssize_t r;
    do r = read(status[0], rec, sizeof rec); while (r < 0 && errno == EINTR);
    if (r == sizeof rec) keeper_say(K_FAILED, rec[0], rec[1]);
    else keeper_say(K_STARTED, main_pid, 0);
    for (;;) {
        siginfo_t info;
        if (sigwaitinfo(&wanted, &info) < 0) continue;
        if (info.si_signo == SIGTERM) keeper_kill_tree();
        keeper_reap();
        if (main_reaped && !has_children()) _exit(0);
    }
}

/* ---- the agent ----------------------------------------------------------------------- */

static void shutdown_all(int status) {
    if (getpid() == 1) {
        kill(-1, SIGKILL); /* everything but us; the kernel would do it when we exit anyway */
    } else {
        /* Each keeper kills its command's whole tree, then leaves. Were we to exit first, its
         * PR_SET_PDEATHSIG would kill it before it did, and the tree would outlive us. */
        for (int i = 0; i < ncmds; i++) if (cmds[i]->keeper) kill(cmds[i]->keeper, SIGTERM);
        for (int i = 0; i < ncmds; i++) {
            while (cmds[i]->keeper && waitpid(cmds[i]->keeper, NULL, 0) < 0 && errno == EINTR) {}
        }
    }
    _exit(status);
}

static struct cmd *find(uint32_t id) {
    for (int i = 0; i < ncmds; i++) if (cmds[i]->id == id) return cmds[i];
    return NULL;
}

static void close_fd(int *fd) {
    if (*fd >= 0) { close(*fd); *fd = -1; }
}

struct cursor { const uint8_t *p, *end; };

static int take32(struct cursor *c, uint32_t *v) {
    if (c->end - c->p < 4) return -1;
    *v = get32(c->p);
    c->p += 4;
    return 0;
}

static char *take_str(struct cursor *c) {
    uint32_t n;
    if (take32(c, &n) < 0 || (uint32_t)(c->end - c->p) < n || memchr(c->p, 0, n)) return NULL;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, c->p, n);
    s[n] = 0;
    c->p += n;
    return s;
}

static char **take_strs(struct cursor *c, int at_least_one) {
    uint32_t n;
    if (take32(c, &n) < 0 || n > MAX_STRS || (at_least_one && n == 0)) return NULL;
    if (n * 4 > (uint32_t)(c->end - c->p)) return NULL; /* each str takes at least 4 bytes */
    char **v = calloc(n + 1, sizeof *v);
    if (!v) return NULL;
    for (uint32_t i = 0; i < n; i++) {
        if (!(v[i] = take_str(c))) {
            for (uint32_t j = 0; j < i; j++) free(v[j]);
            free(v);
            return NULL;
        }
    }
    return v;
}

static void free_strs(char **v) {
    if (!v) return;
    for (char **s = v; *s; s++) free(*s);
    free(v);
}

static void spawn(uint32_t id, const uint8_t *p, size_t n) {
    struct cursor c = {p, p + n};
    struct spawn s = {0};
    if (id == 0) { refuse(id, R_BAD_PAYLOAD, "SPAWN: id 0 is reserved"); return; }
    if (find(id)) { refuse(id, R_ID_IN_USE, "SPAWN: id in use"); return; }
    if (ncmds >= MAX_CMDS) { refuse(id, R_TOO_MANY, "SPAWN: too many commands"); return; }
    if (take32(&c, &s.uid) < 0 || take32(&c, &s.gid) < 0 || take32(&c, &s.credit) < 0 ||
        !(s.workdir = take_str(&c)) || !(s.argv = take_strs(&c, 1)) || !(s.envp = take_strs(&c, 0)) ||
        c.p != c.end) {
        refuse(id, R_BAD_PAYLOAD, "SPAWN: bad payload");
        goto out;
    }
    struct cmd *cmd = calloc(1, sizeof *cmd);
    int in[2] = {-1, -1}, o[2] = {-1, -1}, e[2] = {-1, -1}, k[2] = {-1, -1};
    if (!cmd || pipe2(in, O_CLOEXEC) < 0 || pipe2(o, O_CLOEXEC) < 0 || pipe2(e, O_CLOEXEC) < 0 ||
        pipe2(k, O_CLOEXEC) < 0) {
        int err = errno;
        int all[8] = {in[0], in[1], o[0], o[1], e[0], e[1], k[0], k[1]};
        for (int i = 0; i < 8; i++) if (all[i] >= 0) close(all[i]);
        struct cmd tmp = {.id = id};
        send_error(&tmp, err, "cannot create the command's pipes");
        free(cmd);
        goto out;
    }
    pid_t pid = fork();
    if (pid == 0) keeper(&s, in[0], o[1], e[1], k[1]);
    close(in[0]); close(o[1]); close(e[1]); close(k[1]);
    *cmd = (struct cmd){.id = id, .keeper = pid, .ctl = k[0], .in = in[1], .out = o[0], .err = e[0],
                        .credit = s.credit};
    cmds[ncmds++] = cmd;
    if (pid < 0) {
        int err = errno;
        cmd->keeper = 0;
        close_fd(&cmd->ctl); close_fd(&cmd->in); close_fd(&cmd->out); close_fd(&cmd->err);
        send_error(cmd, err, "cannot fork the command's keeper");
        goto out;
    }
    fcntl(cmd->in, F_SETFL, O_NONBLOCK);
    fcntl(cmd->out, F_SETFL, O_NONBLOCK);
    fcntl(cmd->err, F_SETFL, O_NONBLOCK);
out:
    free(s.workdir);
    free_strs(s.argv);
    free_strs(s.envp);
}

static void ack_stdin(struct cmd *c, size_t n) {
    if (n && !c->done) send_u32(T_STDIN_ACK, c->id, (uint32_t)n);
}

/* Write queued stdin as far as the pipe takes it. */
static void flush_stdin(struct cmd *c) {
    while (c->in >= 0 && c->inoff < c->inlen) {
        ssize_t w = write(c->in, c->inbuf + c->inoff, c->inlen - c->inoff);
        if (w < 0 && errno == EINTR) continue;
        if (w < 0 && errno == EAGAIN) return;
        if (w < 0) { /* EPIPE: the command closed its stdin; what it did not take is dropped */
            ack_stdin(c, c->inlen - c->inoff);
            c->inoff = c->inlen;
            close_fd(&c->in);
            break;
        }
        c->inoff += w;
        ack_stdin(c, w);
    }
    if (c->inoff == c->inlen) {
        c->inoff = c->inlen = 0;
        if (c->in_eof) close_fd(&c->in);
    }
}

static void feed_stdin(struct cmd *c, const uint8_t *p, size_t n) {
    if (c->in_eof) { refuse(c->id, R_STDIN_CLOSED, "STDIN after EOF"); return; }
    if (n == 0) { c->in_eof = 1; flush_stdin(c); return; }
    if (c->in < 0 || c->done) { ack_stdin(c, n); return; } /* nobody reads it any more */
    if (c->inlen - c->inoff + n > STDIN_WINDOW) { refuse(c->id, R_STDIN_OVERRUN, "STDIN beyond the window"); return; }
    if (!c->inbuf && !(c->inbuf = malloc(STDIN_WINDOW))) { refuse(c->id, R_STDIN_OVERRUN, "no memory"); return; }
    if (c->inlen + n > STDIN_WINDOW) {
        memmove(c->inbuf, c->inbuf + c->inoff, c->inlen - c->inoff);
        c->inlen -= c->inoff;
        c->inoff = 0;
    }
    memcpy(c->inbuf + c->inlen, p, n);
    c->inlen += n;
    flush_stdin(c);
}

static void handle_frame(uint8_t type, uint32_t id, const uint8_t *p, size_t n) {
    if (type == T_SPAWN) { spawn(id, p, n); return; }
    if (type != T_STDIN && type != T_KILL && type != T_CREDIT) { refuse(id, R_BAD_TYPE, "unknown frame type"); return; }
    struct cmd *c = find(id);
    if (!c) { refuse(id, R_UNKNOWN_ID, "no such command"); return; }
    if (type == T_STDIN) { feed_stdin(c, p, n); return; }
    if (type == T_KILL) {
        if (n) { refuse(id, R_BAD_PAYLOAD, "KILL takes no payload"); return; }
        if (c->keeper) kill(c->keeper, SIGTERM);
        c->killed = 1;
        return;
    }
    if (n != 4) { refuse(id, R_BAD_PAYLOAD, "CREDIT takes a u32"); return; }
    c->credit += get32(p);
}

/* Parse every complete frame in rbuf. */
static void handle_input(void) {
    size_t at = 0;
    while (rlen - at >= 4) {
        uint32_t len = get32(rbuf + at);
        if (len > MAX_FRAME) {
            if (debug) say("read a frame of length %u: too long", len);
            refuse(0, R_TOO_LONG, "frame too long: the channel cannot be resynchronised");
            say("frame of %u bytes refused; stopping", len);
            shutdown_all(3);
        }
        if (len < 5) { /* still a length: skip what it covers */
            if (rlen - at < 4 + len) break;
            if (debug) say("read a frame of length %u: shorter than its header", len);
            refuse(0, R_BAD_PAYLOAD, "frame shorter than its header");
            at += 4 + len;
            continue;
        }
        if (rlen - at < 4 + len) break;
        if (debug) log_frame("read", rbuf[at + 4], get32(rbuf + at + 5), len, rbuf + at + HEADER, len - 5, NULL, 0);
        handle_frame(rbuf[at + 4], get32(rbuf + at + 5), rbuf + at + HEADER, len - 5);
        at += 4 + len;
    }
    memmove(rbuf, rbuf + at, rlen - at);
    rlen -= at;
}

/* Read one chunk of output under the command's credit; 0 on EOF, -1 if nothing there now. */
static int pump(struct cmd *c, int *fd, uint8_t type) {
    if (*fd < 0) return 0;
    size_t want = c->credit < CHUNK ? (size_t)c->credit : CHUNK;
    if (!want) {
        int avail = 0;
        return ioctl(*fd, FIONREAD, &avail) == 0 && avail == 0 ? 1 : -1;
    }
    ssize_t r = read(*fd, obuf, want);
    if (r < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
    if (r <= 0) { close_fd(fd); return 0; }
    c->credit -= r;
    send_frame(type, c->id, obuf, r, NULL, 0);
    return 2;
}

/* After the main process ended: send what its pipes hold now, then EXIT. */
static void try_finish(struct cmd *c) {
    if (!c->exited || c->done) return;
    while (!c->killed) {
        int a = pump(c, &c->out, T_STDOUT), b = pump(c, &c->err, T_STDERR);
        if (a < 0 || b < 0) return; /* output waits for credit */
        if (a != 2 && b != 2) break; /* both empty (or closed) */
    }
    uint8_t p[5] = {(uint8_t)c->how};
    put32(p + 1, (uint32_t)c->code);
    send_frame(T_EXIT, c->id, p, 5, NULL, 0);
    c->done = 1;
    close_fd(&c->out); close_fd(&c->err); close_fd(&c->in);
}

static void read_control(struct cmd *c) {
    int rec[3];
    ssize_t r = read(c->ctl, rec, sizeof rec);
    if (r < 0 && errno == EINTR) return;
    if (r != sizeof rec) { /* EOF: the keeper is gone */
        close_fd(&c->ctl);
        if (!c->done && !c->exited) {
            close_fd(&c->out); close_fd(&c->err); close_fd(&c->in);
            send_error(c, 0, "the command's keeper died");
        }
        return;
    }
    if (c->done) return;
    if (rec[0] == K_STARTED) {
        send_u32(T_STARTED, c->id, (uint32_t)rec[1]);
        c->started = 1;
    } else if (rec[0] == K_FAILED) {
        static const char *what[] = {"fork", "chdir", "setgid", "setuid", "exec"};
        char text[256];
        snprintf(text, sizeof text, "%s failed: %s", what[rec[1] >= 0 && rec[1] <= 4 ? rec[1] : 0],
                 strerror(rec[2]));
        close_fd(&c->out); close_fd(&c->err); close_fd(&c->in);
        send_error(c, rec[2], text);
    } else if (rec[0] == K_EXIT) {
        c->exited = 1;
        c->how = rec[1];
        c->code = rec[2];
        try_finish(c);
    }
}

static void reap(void) {
    int st;
    pid_t p;
    while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
        for (int i = 0; i < ncmds; i++) if (cmds[i]->keeper == p) cmds[i]->keeper = 0;
    }
}

static void forget_finished(void) {
    for (int i = 0; i < ncmds;) {
        struct cmd *c = cmds[i];
        if (c->done && !c->keeper && c->ctl < 0) {
            close_fd(&c->in); close_fd(&c->out); close_fd(&c->err);
            free(c->inbuf);
            free(c);
            cmds[i] = cmds[--ncmds];
        } else {
            i++;
        }
    }
}

/* Whether descriptors `a` and `b` are open on the same file (the same pipe, socket or tty). */
static int same_file(int a, int b) {
    struct stat x, y;
    return fstat(a, &x) == 0 && fstat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

int main(void) {
    /* Before any descriptor is opened: a closed stderr would otherwise become one of ours. */
    if (fcntl(2, F_GETFD) < 0 || same_file(2, 1) || same_file(2, 0)) diagnostics = 0;
    const char *want_debug = getenv("KILN_AGENT_DEBUG");
    debug = diagnostics && want_debug && strcmp(want_debug, "1") == 0;
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_DUMPABLE, 0);
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    rbuf = malloc(4 + MAX_FRAME);
    if (sfd < 0 || !rbuf) { say("cannot start: %s", strerror(errno)); return 1; }
    if (debug) say("debug log on: pid %d, uid %d, gid %d", (int)getpid(), (int)getuid(), (int)getgid());
    uint8_t hello[12];
    put32(hello, VERSION);
    put32(hello + 4, MAX_FRAME);
    put32(hello + 8, STDIN_WINDOW);
    send_frame(T_HELLO, 0, hello, sizeof hello, NULL, 0);

    static struct pollfd pfd[2 + 4 * MAX_CMDS];
    static struct { struct cmd *c; int which; } owner[2 + 4 * MAX_CMDS];
    for (;;) {
        int n = 0;
        pfd[n++] = (struct pollfd){.fd = 0, .events = POLLIN};
        pfd[n++] = (struct pollfd){.fd = sfd, .events = POLLIN};
        for (int i = 0; i < ncmds; i++) {
            struct cmd *c = cmds[i];
            int reading = c->credit && c->started && !c->done;
            int fds[4] = {c->ctl, reading ? c->out : -1, reading ? c->err : -1,
                          c->inoff < c->inlen ? c->in : -1};
            for (int w = 0; w < 4; w++) {
                if (fds[w] < 0) continue;
                owner[n].c = c;
                owner[n].which = w;
                pfd[n++] = (struct pollfd){.fd = fds[w], .events = w == 3 ? POLLOUT : POLLIN};
            }
        }
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR) continue;
            say("poll: %s", strerror(errno));
            shutdown_all(1);
        }
        if (pfd[1].revents) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {
                if (si.ssi_signo != SIGCHLD) {
                    say("signal %u: stopping", si.ssi_signo);
                    shutdown_all(0);
                }
            }
            reap();
        }
        for (int i = 2; i < n; i++) {
            if (!pfd[i].revents) continue;
            struct cmd *c = owner[i].c;
            switch (owner[i].which) {
            case 0: if (c->ctl >= 0) read_control(c); break;
            case 1: if (!c->done) pump(c, &c->out, T_STDOUT); break;
            case 2: if (!c->done) pump(c, &c->err, T_STDERR); break;
            case 3: flush_stdin(c); break;
            }
        }
        if (pfd[0].revents) {
            ssize_t r = read(0, rbuf + rlen, 4 + MAX_FRAME - rlen);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                if (r < 0) say("channel read failed: %s", strerror(errno));
                shutdown_all(0); /* the provider is gone */
            }
            rlen += r;
            handle_input();
        }
        for (int i = 0; i < ncmds; i++) try_finish(cmds[i]);
        forget_finished();
    }
}
