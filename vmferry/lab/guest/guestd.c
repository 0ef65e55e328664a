/*
 * guestd: the workload of vmferry's lab guest (runs as PID 1 after /init execs it).
 *
 * Build: gcc -static -O2 -pthread -Wall -Wextra -o guestd guestd.c
 * Usage: guestd <ws_mb> <rate_mb_s> [verify_mb_s] [corrupt_page] [cpu_share]
 *
 * Console protocol (one line each, stdout = /dev/ttyS0; parsed by vmferry/lab/console.py):
 *   GUESTD start ws_mb=<W> rate_mb_s=<R> verify_mb_s=<V>
 *   HB <seq>                          every 50 ms, seq = 1, 2, 3, ...
 *   MEM ready pages=<n> init_ms=<ms>  once the working set is mapped and filled
 *   CALIB rate_mb_s=<R> cpu_share=<S> fill_ns=<n> step_ps=<n> extra_steps=<n> page_ns=<n>
 *         took_us=<n> clock=<tsc|monotonic> timer_res_us=<n>   (one line) after each
 *                                     calibration of the cost model
 *   WORK cpu-limited rate_mb_s=<R> max_mb_s=<M> cpu_share=<S>   once per calibration, if even
 *                                     bare page fills cannot reach R within S% of the vCPU
 *   WORK rate_mb_s=<R> dirtied_kib=<n> lost_ticks=<n> busy_pct=<n>   once a second
 *   MEMCHECK ok pass=<n> pages=<n>    after each clean verification pass
 *   MEMCHECK fail page=<i> word=<j> expected=<hex> found=<hex>   (at most once a second)
 *   MEMCHECK fail pass=<n> pages=<n> bad_pages=<k>   end of a pass that found mismatches
 *   MEMCHECK ok full=<id> pages=<n>   end of a requested full pass (``verify <id>``), clean
 *   MEMCHECK fail full=<id> pages=<n> bad_pages=<k>   the same pass, with mismatches
 *   RATE <n>                          the rate was changed over the control port
 *
 * Network: TCP echo on port 7; bounded transfers for rate checks on TCP 9 (sink: reads until
 * the peer's FIN, then replies "ok <bytes>" and closes) and TCP 19 (source: on "<bytes>\n"
 * sends that many bytes, at most 1 GiB, then closes); control on TCP port 7001
 * (newline-terminated commands):
 *   rate <MiB/s>   -> "ok rate <n>"
 *   status         -> "rate=<n> ws_mb=<n> pass=<n> fails=<n> hb=<seq>"
 *   corrupt <page> -> "ok corrupt <page>" (flips one word without updating the page's
 *                     generation, to prove that the verifier catches it)
 *   verify <id>    -> "ok verify <id>" (id 1..2^63: a whole verification pass begins at the
 *                     memory thread's next tick, at full speed rather than verify_mb_s, and
 *                     ends with a "MEMCHECK ... full=<id>" line: a witness learns in well
 *                     under a second what the rolling passes tell only seconds later)
 *
 * CPU model: the memory workload is CPU-bound, like a write-heavy database, so that it dirties
 * less when it gets less CPU (a vCPU quota, or QEMU's auto-converge throttle, which stops the
 * vCPU for a share of each time slice). Every dirtied page costs its fill (the pattern the
 * verifier checks) plus a checksum of the page of E steps (a serial multiply-xorshift chain
 * over its words, stored where the compiler cannot drop it): real work, not a sleep or a spin
 * on the clock. At start and whenever the rate changes, a calibration of a few ms measures
 * what a page fill and a checksum step cost (short timed samples; those stretched by a
 * throttled or preempted vCPU are dropped, so it also works while throttled) and picks E so
 * that dirtying R MiB/s takes cpu_share % of one vCPU (default 80, vmferry.cpu_share= on the
 * kernel command line, 10..95). The rest is left for the heartbeat (real-time priority), the
 * verifier and the network. If bare fills cannot reach R within that share, E = 0 and a
 * "WORK cpu-limited" line says so. busy_pct on the WORK line is the share of the last report
 * interval that the memory thread spent working (dirtying, checksums, verification) rather
 * than sleeping until its next tick: about cpu_share plus the verifier's few % when it gets
 * all the CPU it needs, close to 100 when it gets less.
 *
 * Time: the memory workload keeps its time (ticks, calibration, busy_pct, the WORK interval)
 * with the TSC (x86; frequency from /proc/cpuinfo, else measured), because the lab guest may
 * run on the kernel's 4 ms jiffies clocksource, which also falls behind while the vCPU is
 * throttled. With such coarse timers a wait shorter than half a timer tick is skipped: that
 * tick starts a little early (with no more than its own budget). The heartbeat keeps the
 * kernel's clock.
 *
 * Pacing: ticks of 5 ms. Each tick may dirty at most rate * tick bytes, and the tick's fills
 * and checksums are done in that tick, between its wake-up and the next sleep.
 * Ticks that come late (the previous ones took longer than planned because the vCPU got less
 * CPU, or the vCPU was stalled) are lost, never caught up: with a fraction f of the CPU the
 * ticks need, the dirty rate falls to about f * R. The verifier keeps its own budget
 * (verify_mb_s) per executed tick, so under throttling it slows down in proportion too but
 * still completes its passes.
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
#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

#define PAGE_SIZE_B 4096u
#define WORDS_PER_PAGE (PAGE_SIZE_B / sizeof(uint64_t))
#define HB_PERIOD_NS 50000000LL
#define TICK_NS 5000000LL
#define NS_PER_S 1000000000LL
#define MIB 1048576.0
#define MAX_RATE_MB_S 100000u
#define ECHO_PORT 7
#define CONTROL_PORT 7001
#define SINK_PORT 9
#define SOURCE_PORT 19
#define SOURCE_MAX_BYTES (1ULL << 30)
#define MAX_CONNS 256
#define CONN_BUF 16384
#define LINE_MAX_B 256
#define CORRUPT_WORD 100u

static unsigned ws_mb;
static unsigned verify_mb_s = 32;
static unsigned cpu_share = 80; /* % of one vCPU that dirtying at the set rate should take */
static _Atomic unsigned rate_mb_s;
static _Atomic unsigned long long hb_seq;
static _Atomic unsigned long long pass_count;
static _Atomic unsigned long long fail_count;
/* page index + 1 of a requested corruption, 0 = none; consumed by the memory thread. */
static _Atomic unsigned long long corrupt_request;
/* id of a requested full verification pass, 0 = none; consumed by the memory thread. */
static _Atomic unsigned long long verify_request;
/* pages of a requested full pass checked per tick: 16 MiB, so the CPU sets its pace while
 * the writes and the WORK lines keep their ticks. */
#define FULL_PASS_PAGES_PER_TICK 4096u

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

/* ---------------------------------------------------------------- the workload's clock */

/* The memory workload keeps its time with the TSC where it can. The lab guest may run on the
 * kernel's jiffies clocksource (no ACPI, so no HPET or PM timer, and the TSC marked unstable
 * by the clocksource watchdog under TCG): 4 ms steps, and slower than real time while the
 * vCPU is throttled (timer ticks are lost), which would hide the throttling. The TSC keeps
 * counting the host's time (and stops with the VM, like the guest's clock). */
static double tsc_per_ns;      /* 0: no usable TSC, use CLOCK_MONOTONIC */
static uint64_t tsc_origin;
static _Atomic int64_t sleep_floor_ns; /* waits shorter than this are skipped (coarse timers) */

#if defined(__x86_64__) || defined(__i386__)
static void work_clock_init(void)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    double mhz = 0;
    while (f != NULL && fgets(line, sizeof line, f) != NULL) {
        if (strncmp(line, "cpu MHz", 7) == 0 && strchr(line, ':') != NULL) {
            mhz = strtod(strchr(line, ':') + 1, NULL);
            break;
        }
    }
    if (f != NULL)
        fclose(f);
    if (mhz < 100 || mhz > 100000) {
        /* Not known to the kernel (its calibration failed): measure it, 200 ms. */
        int64_t t0 = now_ns();
        uint64_t c0 = __rdtsc();
        sleep_until_ns(t0 + NS_PER_S / 5);
        int64_t t1 = now_ns();
        uint64_t c1 = __rdtsc();
        mhz = t1 > t0 ? (double)(c1 - c0) * 1000.0 / (double)(t1 - t0) : 0;
    }
    if (mhz >= 100 && mhz <= 100000) {
        tsc_origin = __rdtsc();
        tsc_per_ns = mhz / 1000.0;
    }
}

static int64_t work_now_ns(void)
{
    if (tsc_per_ns > 0)
        return (int64_t)((double)(__rdtsc() - tsc_origin) / tsc_per_ns);
    return now_ns();
}
#else
static void work_clock_init(void) {}
static int64_t work_now_ns(void) { return now_ns(); }
#endif

/* With low-resolution timers (a jiffies clocksource) a sleep ends on the next timer tick, up
 * to 4 ms late: a wait shorter than half that is skipped and the tick starts a little early
 * instead (it still gets only its own budget), so that coarse timers alone lose no ticks. */
static void update_sleep_floor(void)
{
    struct timespec res;
    int64_t floor = 0;
    if (clock_getres(CLOCK_MONOTONIC, &res) == 0 && res.tv_sec == 0 && res.tv_nsec > 100000)
        floor = res.tv_nsec / 2;
    atomic_store(&sleep_floor_ns, floor);
}

/* Sleep until the workload's clock reaches `deadline` (relative sleeps of the kernel's clock,
 * rechecked on the workload's own). */
static void work_sleep_until(int64_t deadline)
{
    int64_t floor = atomic_load(&sleep_floor_ns);
    for (;;) {
        int64_t rem = deadline - work_now_ns();
        if (rem <= floor || rem <= 0)
            return;
        struct timespec ts = {.tv_sec = rem / NS_PER_S, .tv_nsec = rem % NS_PER_S};
        clock_nanosleep(CLOCK_MONOTONIC, 0, &ts, NULL);
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
    size_t wpos, stride, vpos, cpos;
    double wcredit, vcredit;
    unsigned long long pass_bad;
    unsigned long long full_id, full_bad; /* a requested full pass: its id (0: none) */
    size_t full_pos;
    int64_t last_fail_print;
    int fail_printed;
};

/* The next slice of a requested full pass (see "verify <id>"), then its MEMCHECK line. */
static void verify_full_slice(struct memstate *st)
{
    unsigned long long req = atomic_exchange(&verify_request, 0);
    if (req != 0) { /* a new request restarts the pass: it must begin after the request */
        st->full_id = req;
        st->full_pos = 0;
        st->full_bad = 0;
    }
    if (st->full_id == 0)
        return;
    size_t end = st->full_pos + FULL_PASS_PAGES_PER_TICK;
    if (end > npages)
        end = npages;
    for (size_t i = st->full_pos; i < end; i++) {
        uint64_t expected = 0, found = 0;
        long word = check_page(i, &expected, &found);
        if (word >= 0) {
            atomic_fetch_add(&fail_count, 1);
            if (st->full_bad++ == 0)
                say("MEMCHECK fail page=%zu word=%ld expected=%016llx found=%016llx", i, word,
                    (unsigned long long)expected, (unsigned long long)found);
        }
    }
    st->full_pos = end;
    if (end == npages) {
        if (st->full_bad == 0)
            say("MEMCHECK ok full=%llu pages=%zu", st->full_id, npages);
        else
            say("MEMCHECK fail full=%llu pages=%zu bad_pages=%llu", st->full_id, npages,
                st->full_bad);
        st->full_id = 0;
    }
}

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

/* ---------------------------------------------------------------- cost model */

#define CAL_SAMPLES 16          /* samples of each kind */
#define CAL_FILL_PAGES 4        /* pages per fill sample */
#define CAL_PROBE_STEPS 2048    /* checksum steps of a first, rough probe */
#define CAL_SAMPLE_NS 250000.0  /* the length of a checksum sample */
#define CAL_ROUNDS 3            /* rounds of checksum samples; the fastest counts */
#define CAL_ROUND_GAP_NS 20000000L /* 20 ms between rounds */
#define MAX_EXTRA_STEPS 100000000UL

/* The checksums go here, so that the compiler must compute them. */
static volatile uint64_t work_sink;

/* The extra work per dirtied page: `steps` steps of a multiply-xorshift chain over the page's
 * words. Each step needs the previous one, so it can be neither vectorised nor skipped. */
static uint64_t page_checksum(const uint64_t *p, uint64_t h, unsigned long steps)
{
    for (unsigned long u = 0; u < steps; u++) {
        h ^= p[u & (WORDS_PER_PAGE - 1)];
        h *= 0xBF58476D1CE4E5B9ULL;
        h ^= h >> 29;
    }
    return h;
}

/* Dirty page i: a new generation of its pattern, then its checksum (the CPU cost). */
static void dirty_page(size_t i, unsigned long extra_steps)
{
    gens[i]++;
    fill_page(i, gens[i]);
    if (extra_steps > 0)
        work_sink ^= page_checksum(mem + i * WORDS_PER_PAGE, gens[i], extra_steps);
}

struct costmodel {
    unsigned rate;             /* the rate it was calibrated for (0: none yet) */
    unsigned long extra_steps; /* checksum steps per dirtied page */
};

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The typical length of n timed samples: the mean of those no longer than 1.5 x their median.
 * A sample that a throttled vCPU (paused for milliseconds) or a preemption stretched is
 * dropped; the small interrupts that any stretch of work meets are kept, they are part of
 * the cost. */
static double typical_ns(int64_t *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_i64);
    int64_t limit = v[n / 2] + v[n / 2] / 2;
    double sum = 0;
    size_t kept = 0;
    for (size_t k = 0; k < n && v[k] <= limit; k++, kept++)
        sum += (double)v[k];
    return sum / (double)kept;
}

/* Measure what a page fill and a checksum step cost (a few ms in all), and pick the checksum
 * steps per page for `rate` (> 0). Fill samples rewrite pages of the working set with their
 * current pattern (the verifier sees no change), spread out like the real writes so that
 * their cache and TLB misses count. Returns how many pages it rewrote (they are dirty for the
 * hypervisor). */
static unsigned long calibrate(struct memstate *st, unsigned rate, struct costmodel *cm)
{
    int64_t t0 = work_now_ns();
    int64_t s[CAL_SAMPLES];
    unsigned long rewritten = 0;

    for (int k = 0; k < CAL_SAMPLES; k++) { /* the clock reads themselves */
        int64_t a = work_now_ns();
        s[k] = work_now_ns() - a;
    }
    double clock_ns = typical_ns(s, CAL_SAMPLES);

    for (int k = -1; k < CAL_SAMPLES; k++) { /* k = -1: warm-up, not kept */
        int64_t a = work_now_ns();
        for (int b = 0; b < CAL_FILL_PAGES; b++) {
            size_t i = st->cpos;
            st->cpos = (st->cpos + st->stride) % npages;
            fill_page(i, gens[i]);
        }
        int64_t d = work_now_ns() - a;
        rewritten += CAL_FILL_PAGES;
        if (k >= 0)
            s[k] = d;
    }
    double fill_ns = (typical_ns(s, CAL_SAMPLES) - clock_ns) / CAL_FILL_PAGES;
    if (fill_ns < 1)
        fill_ns = 1;

    /* Checksum steps: a rough probe sizes the samples to about CAL_SAMPLE_NS each. */
    const uint64_t *page = mem + st->cpos * WORDS_PER_PAGE;
    int64_t probe = INT64_MAX;
    for (int k = 0; k < 4; k++) {
        int64_t a = work_now_ns();
        work_sink ^= page_checksum(page, (uint64_t)k, CAL_PROBE_STEPS);
        int64_t d = work_now_ns() - a;
        if (d < probe)
            probe = d;
    }
    double per = CAL_SAMPLE_NS / ((double)(probe > 0 ? probe : 1) / CAL_PROBE_STEPS);
    unsigned long sample_steps = per < CAL_PROBE_STEPS ? CAL_PROBE_STEPS
                                 : per > 1e8        ? 100000000UL
                                                    : (unsigned long)per;
    /* Rounds some ms apart, the fastest kept: work on a busy host (two cores shared with
     * QEMU's and the host's threads) is only ever slower than the step's own cost, and a
     * round that met a busy stretch for its whole length (a few ms) was seen at 1.9x. */
    double step_ns = 0;
    for (int round = 0; round < CAL_ROUNDS; round++) {
        if (round > 0) {
            struct timespec pause = {0, CAL_ROUND_GAP_NS};
            nanosleep(&pause, NULL);
        }
        for (int k = 0; k < CAL_SAMPLES; k++) {
            int64_t a = work_now_ns();
            work_sink ^= page_checksum(page, (uint64_t)k, sample_steps);
            s[k] = work_now_ns() - a;
        }
        double ns = (typical_ns(s, CAL_SAMPLES) - clock_ns) / (double)sample_steps;
        if (round == 0 || ns < step_ns)
            step_ns = ns;
    }
    if (step_ns < 0.01)
        step_ns = 0.01;

    /* Dirtying rate MiB/s, pps pages a second, may take cpu_share % of each second. */
    double pps = (double)rate * MIB / PAGE_SIZE_B;
    double budget_ns = (double)cpu_share / 100.0 * (double)NS_PER_S / pps;
    unsigned long steps = 0;
    if (budget_ns <= fill_ns) {
        say("WORK cpu-limited rate_mb_s=%u max_mb_s=%.0f cpu_share=%u", rate,
            (double)cpu_share / 100.0 * (double)NS_PER_S / fill_ns * PAGE_SIZE_B / MIB,
            cpu_share);
    } else {
        double e = (budget_ns - fill_ns) / step_ns;
        steps = e > (double)MAX_EXTRA_STEPS ? MAX_EXTRA_STEPS : (unsigned long)e;
    }
    cm->rate = rate;
    cm->extra_steps = steps;
    say("CALIB rate_mb_s=%u cpu_share=%u fill_ns=%.0f step_ps=%.0f extra_steps=%lu page_ns=%.0f "
        "took_us=%lld clock=%s timer_res_us=%lld",
        rate, cpu_share, fill_ns, step_ns * 1000.0, steps, fill_ns + (double)steps * step_ns,
        (long long)((work_now_ns() - t0) / 1000), tsc_per_ns > 0 ? "tsc" : "monotonic",
        (long long)(atomic_load(&sleep_floor_ns) * 2 / 1000));
    return rewritten;
}

static void *memory_main(void *arg)
{
    long long corrupt_at_start = *(long long *)arg;
    work_clock_init();
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
    st.cpos = npages / 2;
    struct costmodel cm = {0};
    if (npages > 0 && atomic_load(&rate_mb_s) > 0)
        calibrate(&st, atomic_load(&rate_mb_s), &cm);

    unsigned long long dirtied_pages = 0, lost_ticks = 0;
    int64_t deadline = work_now_ns();
    int64_t report_at = deadline + NS_PER_S;
    int64_t last_report = deadline, busy_ns = 0;
    int corrupt_pending = corrupt_at_start >= 0;

    for (;;) {
        deadline += TICK_NS;
        work_sleep_until(deadline);
        int64_t now = work_now_ns();
        int64_t late = now - deadline;
        if (late >= TICK_NS) {
            /* Missed ticks (the last ones overran, or the vCPU was stalled or throttled):
             * their work is lost, not caught up. */
            int64_t missed = late / TICK_NS;
            lost_ticks += (unsigned long long)missed;
            deadline += missed * TICK_NS;
        }
        unsigned rate = atomic_load(&rate_mb_s);

        if (npages > 0) {
            if (rate != cm.rate) { /* a new rate: calibrate again (the host may differ too) */
                if (rate != 0)
                    dirtied_pages += calibrate(&st, rate, &cm);
                else
                    cm.rate = 0;
            }

            unsigned long long req = atomic_exchange(&corrupt_request, 0);
            if (corrupt_pending && atomic_load(&pass_count) >= 1) {
                req = (unsigned long long)corrupt_at_start + 1;
                corrupt_pending = 0;
            }
            if (req != 0 && req - 1 < npages) {
                mem[(req - 1) * WORDS_PER_PAGE + CORRUPT_WORD] ^= 1;
                say("CORRUPT page=%llu word=%u", req - 1, CORRUPT_WORD);
            }

            /* Writes: at most one tick's budget (plus the sub-page remainder), fills and
             * checksums done here and now, so that with less CPU this takes longer. */
            if (rate == 0) {
                st.wcredit = 0;
            } else {
                st.wcredit += (double)rate * MIB * (double)TICK_NS / (double)NS_PER_S;
                size_t n = (size_t)(st.wcredit / PAGE_SIZE_B);
                st.wcredit -= (double)n * PAGE_SIZE_B;
                for (size_t k = 0; k < n; k++) {
                    size_t i = st.wpos;
                    st.wpos = (st.wpos + st.stride) % npages;
                    dirty_page(i, cm.extra_steps);
                }
                dirtied_pages += n;
            }

            /* Verification of the next slice, in this thread: no race with the writes. Its
             * budget comes with each executed tick, so throttling slows it but never stops it. */
            if (verify_mb_s > 0) {
                st.vcredit += (double)verify_mb_s * MIB * (double)TICK_NS / (double)NS_PER_S;
                size_t n = (size_t)(st.vcredit / PAGE_SIZE_B);
                st.vcredit -= (double)n * PAGE_SIZE_B;
                verify_pages(&st, n, now);
            }
            verify_full_slice(&st);
        }

        int64_t done = work_now_ns();
        busy_ns += done - now;
        if (now >= report_at) {
            /* busy: the share of the interval spent working rather than sleeping. */
            int64_t span = done - last_report;
            long long busy = span > 0 ? (busy_ns * 100 + span / 2) / span : 0;
            if (busy > 100)
                busy = 100;
            say("WORK rate_mb_s=%u dirtied_kib=%llu lost_ticks=%llu busy_pct=%lld", rate,
                dirtied_pages * (PAGE_SIZE_B / 1024u), lost_ticks, busy);
            dirtied_pages = 0;
            lost_ticks = 0;
            last_report = done;
            busy_ns = 0;
            update_sleep_floor(); /* the kernel may have switched clocksources */
            report_at += NS_PER_S;
            if (report_at <= now)
                report_at = now + NS_PER_S;
        }
    }
    return NULL;
}

/* ---------------------------------------------------------------- network */

enum conn_kind {
    LISTEN_ECHO, LISTEN_CONTROL, LISTEN_SINK, LISTEN_SOURCE,
    CONN_ECHO, CONN_CONTROL, CONN_SINK, CONN_SOURCE
};

struct conn {
    enum conn_kind kind;
    char out[CONN_BUF]; /* pending output */
    size_t out_off, out_len;
    char line[LINE_MAX_B]; /* control: partial command line */
    size_t line_len;
    unsigned long long count; /* sink: bytes read; source: bytes still to send */
    int closing;              /* drop once the output is flushed */
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
    } else if (strncmp(cmd, "verify ", 7) == 0) {
        errno = 0;
        unsigned long long v = strtoull(cmd + 7, &end, 10);
        if (errno != 0 || end == cmd + 7 || *end != '\0' || v == 0 || v > (1ULL << 63)) {
            snprintf(reply, sizeof reply, "err bad id (1..2^63)\n");
        } else if (npages == 0) {
            snprintf(reply, sizeof reply, "err no working set\n");
        } else {
            atomic_store(&verify_request, v);
            snprintf(reply, sizeof reply, "ok verify %llu\n", v);
        }
    } else {
        snprintf(reply, sizeof reply,
                 "err unknown command (rate <n>, status, corrupt <page>, verify <id>)\n");
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
refill:
    if (c->kind == CONN_SOURCE && c->out_len == 0 && c->count > 0) {
        size_t n = c->count < CONN_BUF ? (size_t)c->count : CONN_BUF;
        memset(c->out, 'x', n);
        c->out_off = 0;
        c->out_len = n;
        c->count -= n;
    }
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
    if (c->out_off == c->out_len) {
        c->out_off = c->out_len = 0;
        if (c->kind == CONN_SOURCE && c->count > 0)
            goto refill;
        if (c->closing)
            return -1; /* everything sent: close */
    }
    /* Back-pressure: read more only once everything queued has been sent. */
    pfds[k].events = c->out_len > 0 ? POLLOUT : POLLIN;
    return 0;
}

static void source_input(struct conn *c, const char *data, size_t n)
{
    for (size_t i = 0; i < n && !c->closing; i++) {
        if (data[i] == '\n') {
            c->line[c->line_len] = '\0';
            char *end = NULL;
            errno = 0;
            unsigned long long v = strtoull(c->line, &end, 10);
            if (errno != 0 || end == c->line || v > SOURCE_MAX_BYTES)
                v = 0;
            c->count = v;
            c->closing = 1;
        } else if (c->line_len < LINE_MAX_B - 1) {
            c->line[c->line_len++] = data[i];
        }
    }
}

static void *network_main(void *arg)
{
    (void)arg;
    int efd = listen_on(ECHO_PORT);
    int cfd = listen_on(CONTROL_PORT);
    int sink_fd = listen_on(SINK_PORT);
    int source_fd = listen_on(SOURCE_PORT);
    if (efd >= 0)
        add_conn(efd, LISTEN_ECHO);
    if (cfd >= 0)
        add_conn(cfd, LISTEN_CONTROL);
    if (sink_fd >= 0)
        add_conn(sink_fd, LISTEN_SINK);
    if (source_fd >= 0)
        add_conn(source_fd, LISTEN_SOURCE);
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
            if (c->kind <= LISTEN_SOURCE) {
                for (;;) {
                    int fd = accept4(pfds[k].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                    if (fd < 0)
                        break;
                    int one = 1;
                    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    add_conn(fd, (enum conn_kind)(c->kind + CONN_ECHO));
                }
                continue;
            }
            if (re & POLLOUT) {
                if (conn_flush(k) < 0)
                    drop_conn(k);
                continue;
            }
            if (re & (POLLIN | POLLHUP | POLLERR)) {
                size_t want = c->kind == CONN_ECHO || c->kind == CONN_SINK ? sizeof buf : 128;
                ssize_t n = recv(pfds[k].fd, buf, want, 0);
                if (n == 0 && c->kind == CONN_SINK && !c->closing) {
                    char reply[64];
                    int len = snprintf(reply, sizeof reply, "ok %llu\n", c->count);
                    queue_out(c, reply, (size_t)len);
                    c->closing = 1;
                    if (conn_flush(k) < 0)
                        drop_conn(k);
                    continue;
                }
                if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
                    drop_conn(k);
                    continue;
                }
                if (n < 0)
                    continue;
                if (c->kind == CONN_ECHO)
                    queue_out(c, buf, (size_t)n);
                else if (c->kind == CONN_SINK)
                    c->count += (unsigned long long)n;
                else if (c->kind == CONN_SOURCE)
                    source_input(c, buf, (size_t)n);
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
    cpu_share = argc > 5 ? (unsigned)parse_arg(argv[5], "cpu_share", 10, 95, 80) : 80;
    atomic_store(&rate_mb_s, rate);
    update_sleep_floor();
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
