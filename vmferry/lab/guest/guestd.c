/*
 * guestd: the workload of vmferry's lab guest (runs as PID 1 after /init execs it).
 *
 * Build: gcc -static -O2 -pthread -Wall -Wextra -o guestd guestd.c
 * Usage: guestd <ws_mb> <rate_mb_s> [verify_mb_s] [corrupt_page]
 *
 * Console protocol (one line each, stdout = /dev/ttyS0; parsed by vmferry/lab/console.py):
 *   GUESTD start ws_mb=<W> rate_mb_s=<R> verify_mb_s=<V>
 *   HB <seq>                          every 50 ms, seq = 1, 2, 3, ...
 *   MEM ready pages=<n> init_ms=<ms>  once the working set is mapped and filled
 *   WORK rate_mb_s=<R> dirtied_kib=<n> lost_ticks=<n>   once a second
 *   MEMCHECK ok pass=<n> pages=<n>    after each clean verification pass
 *   MEMCHECK fail page=<i> word=<j> expected=<hex> found=<hex>   (at most once a second)
 *   MEMCHECK fail pass=<n> pages=<n> bad_pages=<k>   end of a pass that found mismatches
 *   RATE <n>                          the rate was changed over the control port
 *
 * Network: TCP echo on port 7; control on TCP port 7001 (newline-terminated commands):
 *   rate <MiB/s>   -> "ok rate <n>"
 *   status         -> "rate=<n> ws_mb=<n> pass=<n> fails=<n> hb=<seq>"
 *   corrupt <page> -> "ok corrupt <page>" (flips one word without updating the page's
 *                     generation, to prove that the verifier catches it)
 *
 * The memory workload is paced by ticks of 5 ms of guest time. Each tick may dirty at most
 * rate * tick bytes; ticks that come late (the vCPU was stalled or throttled) are lost, never
 * caught up, so the dirty rate falls when the hypervisor throttles the vCPU, like a real
 * workload's would.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PAGE_SIZE_B 4096u
#define WORDS_PER_PAGE (PAGE_SIZE_B / sizeof(uint64_t))
#define HB_PERIOD_NS 50000000LL
#define TICK_NS 5000000LL
#define NS_PER_S 1000000000LL
#define MIB 1048576.0
#define MAX_RATE_MB_S 100000u
#define ECHO_PORT 7
#define CONTROL_PORT 7001
#define MAX_CONNS 256
#define CONN_BUF 16384
#define LINE_MAX_B 256
#define CORRUPT_WORD 100u

static unsigned ws_mb;
static unsigned verify_mb_s = 32;
static _Atomic unsigned rate_mb_s;
static _Atomic unsigned long long hb_seq;
static _Atomic unsigned long long pass_count;
static _Atomic unsigned long long fail_count;
/* page index + 1 of a requested corruption, 0 = none; consumed by the memory thread. */
static _Atomic unsigned long long corrupt_request;

static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

static void write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        buf += n;
        len -= (size_t)n;
    }
}

/* Print one line atomically (one write(2) per line, lines of different threads never mix). */
__attribute__((format(printf, 1, 2))) static void say(const char *fmt, ...)
{
    char buf[320];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n > sizeof buf - 2)
        n = (int)(sizeof buf - 2);
    buf[n++] = '\n';
    pthread_mutex_lock(&out_lock);
    write_all(STDOUT_FILENO, buf, (size_t)n);
    pthread_mutex_unlock(&out_lock);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void sleep_until_ns(int64_t deadline)
{
    struct timespec ts = {.tv_sec = deadline / NS_PER_S, .tv_nsec = deadline % NS_PER_S};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ---------------------------------------------------------------- heartbeat */

static void *heartbeat_main(void *arg)
{
    (void)arg;
    /* Best effort: a real-time priority keeps the heartbeat on time next to the workload. */
    struct sched_param sp = {.sched_priority = 10};
    pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp);

    int64_t next = now_ns();
    unsigned long long seq = 0;
    for (;;) {
        next += HB_PERIOD_NS;
        sleep_until_ns(next);
        seq++;
        atomic_store(&hb_seq, seq);
        say("HB %llu", seq);
        int64_t now = now_ns();
        if (now - next >= HB_PERIOD_NS)
            next = now; /* fell behind (stall): skip ahead, never burst */
    }
    return NULL;
}

/* ---------------------------------------------------------------- memory workload */

static uint64_t *mem;
static uint32_t *gens; /* expected generation of each page (catches stale pages too) */
static size_t npages;

static inline uint64_t page_seed(uint64_t idx, uint64_t gen)
{
    uint64_t x = idx * 0x9E3779B97F4A7C15ULL ^ (gen + 0x632BE59BD9B4E019ULL) * 0xD1B54A32D192ED03ULL;
    x ^= x >> 31;
    x *= 0xBF58476D1CE4E5B9ULL;
    x ^= x >> 29;
    return x;
}

/* Word j (>= 2) of page (idx, gen): a cheap running mix seeded by (idx, gen). */
#define NEXT_WORD(x, w)                  \
    do {                                 \
        (x) += 0x9E3779B97F4A7C15ULL;    \
        (w) = (x) ^ ((x) >> 31);         \
    } while (0)

static void fill_page(size_t idx, uint64_t gen)
{
    uint64_t *p = mem + idx * WORDS_PER_PAGE;
    uint64_t x = page_seed(idx, gen), w;
    p[0] = idx;
    p[1] = gen;
    for (size_t j = 2; j < WORDS_PER_PAGE; j++) {
        NEXT_WORD(x, w);
        p[j] = w;
    }
}

/* Returns -1 if the page is intact, else the first bad word (and sets expected, found). */
static long check_page(size_t idx, uint64_t *expected, uint64_t *found)
{
    const uint64_t *p = mem + idx * WORDS_PER_PAGE;
    uint64_t gen = gens[idx];
    if (p[0] != idx) {
        *expected = idx;
        *found = p[0];
        return 0;
    }
    if (p[1] != gen) {
        *expected = gen;
        *found = p[1];
        return 1;
    }
    uint64_t x = page_seed(idx, gen), w;
    for (size_t j = 2; j < WORDS_PER_PAGE; j++) {
        NEXT_WORD(x, w);
        if (p[j] != w) {
            *expected = w;
            *found = p[j];
            return (long)j;
        }
    }
    return -1;
}

static size_t gcd_size(size_t a, size_t b)
{
    while (b != 0) {
        size_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

/* A stride coprime with n near n * 0.618: visits every page once per cycle, spread out. */
static size_t pick_stride(size_t n)
{
    if (n <= 2)
        return 1;
    size_t s = (size_t)((double)n * 0.6180339887) | 1u;
    while (gcd_size(s, n) != 1)
        s += 2;
    return s % n == 0 ? 1 : s;
}

struct memstate {
    size_t wpos, stride, vpos;
    double wcredit, vcredit;
    unsigned long long pass_bad;
    int64_t last_fail_print;
    int fail_printed;
};

static void verify_pages(struct memstate *st, size_t n, int64_t now)
{
    for (size_t k = 0; k < n; k++) {
        size_t i = st->vpos;
        uint64_t expected = 0, found = 0;
        long word = check_page(i, &expected, &found);
        if (word >= 0) {
            st->pass_bad++;
            atomic_fetch_add(&fail_count, 1);
            if (!st->fail_printed || now - st->last_fail_print >= NS_PER_S) {
                say("MEMCHECK fail page=%zu word=%ld expected=%016llx found=%016llx", i, word,
                    (unsigned long long)expected, (unsigned long long)found);
                st->fail_printed = 1;
                st->last_fail_print = now;
            }
        }
        st->vpos++;
        if (st->vpos == npages) {
            unsigned long long pass = atomic_fetch_add(&pass_count, 1) + 1;
            if (st->pass_bad == 0)
                say("MEMCHECK ok pass=%llu pages=%zu", pass, npages);
            else
                say("MEMCHECK fail pass=%llu pages=%zu bad_pages=%llu", pass, npages,
                    st->pass_bad);
            st->pass_bad = 0;
            st->vpos = 0;
        }
    }
}

static void *memory_main(void *arg)
{
    long long corrupt_at_start = *(long long *)arg;
    int64_t t0 = now_ns();
    npages = (size_t)ws_mb * (1048576u / PAGE_SIZE_B);
    if (npages == 0) {
        say("MEM ready pages=0 init_ms=0");
    } else {
        size_t bytes = npages * PAGE_SIZE_B;
        void *m = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        gens = calloc(npages, sizeof *gens);
        if (m == MAP_FAILED || gens == NULL) {
            say("GUESTD error cannot map ws_mb=%u: %s", ws_mb, strerror(errno));
            npages = 0;
        } else {
            mem = m;
            for (size_t i = 0; i < npages; i++) {
                gens[i] = 1;
                fill_page(i, 1);
            }
            say("MEM ready pages=%zu init_ms=%lld", npages, (long long)((now_ns() - t0) / 1000000));
        }
    }

    struct memstate st = {0};
    st.stride = pick_stride(npages);
    unsigned long long dirtied_pages = 0, lost_ticks = 0;
    int64_t deadline = now_ns();
    int64_t report_at = deadline + NS_PER_S;
    int corrupt_pending = corrupt_at_start >= 0;

    for (;;) {
        deadline += TICK_NS;
        sleep_until_ns(deadline);
        int64_t now = now_ns();
        int64_t late = now - deadline;
        if (late >= TICK_NS) {
            /* Missed ticks: their work is lost, not caught up. */
            int64_t missed = late / TICK_NS;
            lost_ticks += (unsigned long long)missed;
            deadline += missed * TICK_NS;
        }
        unsigned rate = atomic_load(&rate_mb_s);

        if (npages > 0) {
            unsigned long long req = atomic_exchange(&corrupt_request, 0);
            if (corrupt_pending && atomic_load(&pass_count) >= 1) {
                req = (unsigned long long)corrupt_at_start + 1;
                corrupt_pending = 0;
            }
            if (req != 0 && req - 1 < npages) {
                mem[(req - 1) * WORDS_PER_PAGE + CORRUPT_WORD] ^= 1;
                say("CORRUPT page=%llu word=%u", req - 1, CORRUPT_WORD);
            }

            /* Writes: at most one tick's budget (plus the sub-page remainder). */
            if (rate == 0) {
                st.wcredit = 0;
            } else {
                st.wcredit += (double)rate * MIB * (double)TICK_NS / (double)NS_PER_S;
                size_t n = (size_t)(st.wcredit / PAGE_SIZE_B);
                st.wcredit -= (double)n * PAGE_SIZE_B;
                for (size_t k = 0; k < n; k++) {
                    size_t i = st.wpos;
                    st.wpos = (st.wpos + st.stride) % npages;
                    gens[i]++;
                    fill_page(i, gens[i]);
                }
                dirtied_pages += n;
            }

            /* Verification of the next slice, in this thread: no race with the writes. */
            if (verify_mb_s > 0) {
                st.vcredit += (double)verify_mb_s * MIB * (double)TICK_NS / (double)NS_PER_S;
                size_t n = (size_t)(st.vcredit / PAGE_SIZE_B);
                st.vcredit -= (double)n * PAGE_SIZE_B;
                verify_pages(&st, n, now);
            }
        }

        if (now >= report_at) {
            say("WORK rate_mb_s=%u dirtied_kib=%llu lost_ticks=%llu", rate,
                dirtied_pages * (PAGE_SIZE_B / 1024u), lost_ticks);
            dirtied_pages = 0;
            lost_ticks = 0;
            report_at += NS_PER_S;
            if (report_at <= now)
                report_at = now + NS_PER_S;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- network */

enum conn_kind { LISTEN_ECHO, LISTEN_CONTROL, CONN_ECHO, CONN_CONTROL };

struct conn {
    enum conn_kind kind;
    char out[CONN_BUF]; /* pending output */
    size_t out_off, out_len;
    char line[LINE_MAX_B]; /* control: partial command line */
    size_t line_len;
};

static struct pollfd pfds[MAX_CONNS];
static struct conn *conns[MAX_CONNS];
static int nconns;

static int listen_on(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 64) < 0) {
        say("GUESTD error listen port=%d: %s", port, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void add_conn(int fd, enum conn_kind kind)
{
    if (nconns >= MAX_CONNS) {
        close(fd);
        return;
    }
    struct conn *c = calloc(1, sizeof *c);
    if (c == NULL) {
        close(fd);
        return;
    }
    c->kind = kind;
    pfds[nconns].fd = fd;
    pfds[nconns].events = POLLIN;
    pfds[nconns].revents = 0;
    conns[nconns] = c;
    nconns++;
}

static void drop_conn(int k)
{
    close(pfds[k].fd);
    free(conns[k]);
    nconns--;
    pfds[k] = pfds[nconns];
    conns[k] = conns[nconns];
}

static void queue_out(struct conn *c, const char *s, size_t len)
{
    if (c->out_off > 0 && c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    if (len > CONN_BUF - c->out_len)
        len = CONN_BUF - c->out_len; /* cannot happen with the read limits below */
    memcpy(c->out + c->out_len, s, len);
    c->out_len += len;
}

static void control_command(struct conn *c, char *cmd)
{
    char reply[LINE_MAX_B + 64];
    size_t len = strlen(cmd);
    while (len > 0 && (cmd[len - 1] == '\r' || cmd[len - 1] == ' '))
        cmd[--len] = '\0';
    char *end = NULL;
    if (strncmp(cmd, "rate ", 5) == 0) {
        errno = 0;
        unsigned long v = strtoul(cmd + 5, &end, 10);
        if (errno != 0 || end == cmd + 5 || *end != '\0' || v > MAX_RATE_MB_S) {
            snprintf(reply, sizeof reply, "err bad rate (0..%u MiB/s)\n", MAX_RATE_MB_S);
        } else {
            atomic_store(&rate_mb_s, (unsigned)v);
            say("RATE %lu", v);
            snprintf(reply, sizeof reply, "ok rate %lu\n", v);
        }
    } else if (strcmp(cmd, "status") == 0) {
        snprintf(reply, sizeof reply, "rate=%u ws_mb=%u pass=%llu fails=%llu hb=%llu\n",
                 atomic_load(&rate_mb_s), ws_mb, atomic_load(&pass_count),
                 atomic_load(&fail_count), atomic_load(&hb_seq));
    } else if (strncmp(cmd, "corrupt ", 8) == 0) {
        errno = 0;
        unsigned long long v = strtoull(cmd + 8, &end, 10);
        if (errno != 0 || end == cmd + 8 || *end != '\0' || v >= npages) {
            snprintf(reply, sizeof reply, "err bad page (0..%zu)\n", npages ? npages - 1 : 0);
        } else {
            atomic_store(&corrupt_request, v + 1);
            snprintf(reply, sizeof reply, "ok corrupt %llu\n", v);
        }
    } else {
        snprintf(reply, sizeof reply, "err unknown command (rate <n>, status, corrupt <page>)\n");
    }
    queue_out(c, reply, strlen(reply));
}

static void control_input(struct conn *c, const char *data, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (data[i] == '\n') {
            c->line[c->line_len] = '\0';
            control_command(c, c->line);
            c->line_len = 0;
        } else if (c->line_len < LINE_MAX_B - 1) {
            c->line[c->line_len++] = data[i];
        } else {
            c->line_len = 0;
            queue_out(c, "err line too long\n", 18);
        }
    }
}

/* Returns 0 to keep the connection, -1 to drop it. */
static int conn_flush(int k)
{
    struct conn *c = conns[k];
    while (c->out_off < c->out_len) {
        ssize_t n = send(pfds[k].fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            return -1;
        }
        c->out_off += (size_t)n;
    }
    if (c->out_off == c->out_len)
        c->out_off = c->out_len = 0;
    /* Back-pressure: read more only once everything queued has been sent. */
    pfds[k].events = c->out_len > 0 ? POLLOUT : POLLIN;
    return 0;
}

static void *network_main(void *arg)
{
    (void)arg;
    int efd = listen_on(ECHO_PORT);
    int cfd = listen_on(CONTROL_PORT);
    if (efd >= 0)
        add_conn(efd, LISTEN_ECHO);
    if (cfd >= 0)
        add_conn(cfd, LISTEN_CONTROL);
    if (nconns == 0)
        return NULL;
    static char buf[CONN_BUF];
    for (;;) {
        int r = poll(pfds, (nfds_t)nconns, -1);
        if (r < 0) {
            if (errno != EINTR)
                sleep(1);
            continue;
        }
        for (int k = nconns - 1; k >= 0; k--) {
            short re = pfds[k].revents;
            if (re == 0)
                continue;
            pfds[k].revents = 0;
            struct conn *c = conns[k];
            if (c->kind == LISTEN_ECHO || c->kind == LISTEN_CONTROL) {
                for (;;) {
                    int fd = accept4(pfds[k].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    add_conn(fd, c->kind == LISTEN_ECHO ? CONN_ECHO : CONN_CONTROL);
                }
                continue;
            }
            if (re & POLLOUT) {
                if (conn_flush(k) < 0)
                    drop_conn(k);
                continue;
            }
            if (re & (POLLIN | POLLHUP | POLLERR)) {
                size_t want = c->kind == CONN_ECHO ? sizeof buf : 128;
                ssize_t n = recv(pfds[k].fd, buf, want, 0);
                if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                    drop_conn(k);
                    continue;
                }
                if (n < 0)
                    continue;
                if (c->kind == CONN_ECHO)
                    queue_out(c, buf, (size_t)n);
                else
                    control_input(c, buf, (size_t)n);
                if (conn_flush(k) < 0)
                    drop_conn(k);
            }
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- main */

static long parse_arg(const char *s, const char *what, long lo, long hi, long dflt)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0' || v < lo || v > hi) {
        say("GUESTD error bad %s '%s', using %ld", what, s, dflt);
        return dflt;
    }
    return v;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    ws_mb = argc > 1 ? (unsigned)parse_arg(argv[1], "ws_mb", 0, 1 << 20, 64) : 64;
    unsigned rate = argc > 2 ? (unsigned)parse_arg(argv[2], "rate_mb_s", 0, MAX_RATE_MB_S, 0) : 0;
    verify_mb_s = argc > 3 ? (unsigned)parse_arg(argv[3], "verify_mb_s", 0, 100000, 32) : 32;
    static long long corrupt_page = -1;
    if (argc > 4)
        corrupt_page = parse_arg(argv[4], "corrupt_page", -1, 1L << 40, -1);
    atomic_store(&rate_mb_s, rate);
    say("GUESTD start ws_mb=%u rate_mb_s=%u verify_mb_s=%u", ws_mb, rate, verify_mb_s);

    pthread_t hb, memt, net;
    if (pthread_create(&hb, NULL, heartbeat_main, NULL) != 0)
        say("GUESTD error cannot start heartbeat thread");
    if (pthread_create(&net, NULL, network_main, NULL) != 0)
        say("GUESTD error cannot start network thread");
    if (pthread_create(&memt, NULL, memory_main, &corrupt_page) != 0)
        say("GUESTD error cannot start memory thread");
    /* PID 1 must never exit (the kernel would panic). */
    for (;;)
        pause();
    return 0;
}
