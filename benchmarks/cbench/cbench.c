/*
 * cbench: a small, independent MQTT 3.1.1 load generator in C (see README.md).
 *
 * One publisher connection and --subscribers N subscriber connections (default 1) on one
 * unique topic. The publisher sends PUBLISHes as fast as the broker takes them (or at --rate),
 * each payload starting with its send time (CLOCK_MONOTONIC ns, host byte order: both ends are
 * this process); one subscriber thread reads every subscriber connection (with N > 1 through
 * epoll) and records the end-to-end latency of each delivery. After --warmup seconds it counts
 * for --duration seconds, stops publishing, waits up to DRAIN_NS for the rest and prints one
 * line of JSON.
 *
 * Why it exists: for a 1 -> 1 flow the Python `culex bench` spends more CPU per message than
 * a fast broker does routing it, so it measured itself. This program does per message a
 * memcpy of the stamp on one side and a histogram increment on the other.
 *
 * Build: gcc -O2 -Wall -Wextra -Werror -pthread -o cbench cbench.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define NS 1000000000LL
#define DRAIN_NS (2 * NS)        /* after the window: wait this long for what is in flight */
#define SETUP_TIMEOUT_S 5        /* connect, CONNACK and SUBACK each */
#define KEEPALIVE_S 60
#define PING_NS (30 * NS)        /* a connection idle this long sends PINGREQ (half keep-alive) */
#define POLL_NS (100 * 1000000LL) /* blocking calls wake this often to look at the stop flag */
#define STAMP_BYTES 8
#define MAX_PAYLOAD (64 * 1024 * 1024)
/* QoS 0 writes this many bytes per send(): enough to amortise the syscall, small enough that
 * the stamp (taken once per batch) is close to when the bytes leave. */
#define QOS0_BATCH_BYTES (32 * 1024)
#define QOS1_BATCH_BYTES (1024 * 1024)
#define READ_BUFFER (256 * 1024)
/* With N > 1 subscriber connections each reads into this much: fan-out reads are small, and
 * 10,000 connections at READ_BUFFER would be 2.5 GB. */
#define FANOUT_READ_BUFFER (64 * 1024)
#define MAX_SUBSCRIBERS 10000
/* Unsent bytes the publisher's kernel socket may hold (TCP_NOTSENT_LOWAT). Left alone the send
 * buffer autotunes to megabytes and a publisher faster than the broker measures its own queue;
 * the same bound as culex bench (culex/bench/clients.py, NOT_SENT_LOW_WATER). */
#define NOT_SENT_LOW_WATER (64 * 1024)

/* Latency histogram (ns), log-linear like culex/bench/histogram.py: values below 256 exact,
 * above it each power of two split in 128 buckets, so a bucket is at most 0.78 % wide. */
#define SUB_BITS 7
#define LINEAR_LIMIT (2 << SUB_BITS)
#define MAX_VALUE ((1LL << 42) - 1) /* ~73 minutes */
#define BUCKETS ((((42 - 1) - SUB_BITS) << SUB_BITS) + LINEAR_LIMIT)

struct options {
    const char *host;
    const char *port;
    int qos;
    long payload;
    double duration;
    double warmup;
    long window;
    double rate; /* messages per second; 0 = as fast as the broker takes them */
    long subscribers;
};

/* One TCP connection and its receive buffer: bytes [0, len) are read and not yet parsed. */
struct conn {
    int fd;
    const char *name;
    unsigned char *buf;
    size_t len;
    size_t cap;
    int64_t last_send;
};

/* The PUBLISH frame the publisher repeats, and where to patch each copy. */
struct frame {
    size_t size;
    size_t stamp_at;
    size_t id_at; /* packet id offset; QoS 1 only */
};

static struct options opt = {"127.0.0.1", "1883", 0, 100, 5.0, 1.0, 100, 0.0, 1};
static char topic[64];
static struct frame frame;
static struct conn *subs; /* opt.subscribers of them, read by the subscriber thread */
static struct conn pub = {-1, "publisher", NULL, 0, 0, 0};
static int64_t t0, window_start, window_end;

static atomic_int stop_flag;          /* main -> threads: give up now */
static atomic_int publishing_done;    /* publisher -> main: `sent` is final */
static atomic_llong sent;             /* stamped inside the window */
static atomic_llong delivered;        /* deliveries received and stamped inside the window */
static long long window_received;     /* deliveries received during the window (subscriber) */
static uint64_t histogram[BUCKETS];   /* subscriber only until joined */
static int64_t latency_max;
static int64_t publisher_cpu_end;     /* written before publishing_done is set */

static void die(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static void usage_error(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cbench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\nusage: cbench --host H --port P --qos 0|1 --payload BYTES --duration SECONDS"
          " [--warmup S] [--window N] [--rate MSGS_PER_S] [--subscribers N]\n", stderr);
    va_end(ap);
    exit(2);
}

static int64_t clock_ns(clockid_t clock)
{
    struct timespec ts;
    if (clock_gettime(clock, &ts) < 0)
        return 0;
    return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static int64_t now_ns(void)
{
    return clock_ns(CLOCK_MONOTONIC);
}

static void sleep_until(int64_t when)
{
    struct timespec ts = {(time_t)(when / NS), (long)(when % NS)};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

/* ---- histogram ---- */

static int bucket_index(int64_t value)
{
    if (value < LINEAR_LIMIT)
        return value < 0 ? 0 : (int)value;
    if (value > MAX_VALUE)
        value = MAX_VALUE;
    int shift = 63 - __builtin_clzll((unsigned long long)value) - SUB_BITS;
    return (shift << SUB_BITS) + (int)(value >> shift);
}

static void bucket_bounds(int index, int64_t *low, int64_t *high)
{
    if (index < LINEAR_LIMIT) {
        *low = *high = index;
        return;
    }
    int shift = (index >> SUB_BITS) - 1;
    int64_t quotient = index - (shift << SUB_BITS);
    *low = quotient << shift;
    *high = ((quotient + 1) << shift) - 1;
}

/* Value at `percent`: the middle of its bucket, clamped to the exact maximum so that
 * p50 <= p99 <= max holds even when the top samples share a bucket. */
static int64_t percentile(double percent, uint64_t total)
{
    if (total == 0)
        return 0;
    double exact = percent * (double)total / 100.0;
    uint64_t rank = (uint64_t)exact;
    if ((double)rank < exact)
        rank++;
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (int i = 0; i < BUCKETS; i++) {
        seen += histogram[i];
        if (histogram[i] && seen >= rank) {
            int64_t low, high;
            bucket_bounds(i, &low, &high);
            int64_t middle = low + (high - low) / 2;
            return middle < latency_max ? middle : latency_max;
        }
    }
    return latency_max;
}

/* ---- sockets ---- */

static void set_timeout(int fd, int option, int64_t ns)
{
    struct timeval tv = {(time_t)(ns / NS), (suseconds_t)(ns % NS / 1000)};
    if (setsockopt(fd, SOL_SOCKET, option, &tv, sizeof tv) < 0)
        die("setsockopt: %s", strerror(errno));
}

static int connect_to(const char *host, const char *port)
{
    struct addrinfo hints = {0}, *found;
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    int rc = getaddrinfo(host, port, &hints, &found);
    if (rc != 0)
        die("cannot resolve %s:%s: %s", host, port, gai_strerror(rc));
    int fd = -1, error = 0;
    for (struct addrinfo *ai = found; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
        if (fd < 0) {
            error = errno;
            continue;
        }
        /* Non-blocking connect so that an address that drops SYNs fails in SETUP_TIMEOUT_S. */
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) < 0 && errno != EINPROGRESS) {
            error = errno;
        } else {
            struct pollfd p = {fd, POLLOUT, 0};
            int ready = poll(&p, 1, SETUP_TIMEOUT_S * 1000);
            socklen_t len = sizeof error;
            if (ready == 0)
                error = ETIMEDOUT;
            else if (ready < 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) < 0)
                error = errno;
        }
        if (error) {
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(found);
    if (fd < 0)
        die("cannot connect to %s:%s: %s", host, port, strerror(error));
    return fd;
}

/* Blocking from here on: every wait has a timeout (SO_RCVTIMEO / SO_SNDTIMEO) instead. */
static void set_blocking(int fd)
{
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) < 0)
        die("fcntl: %s", strerror(errno));
}

/* Whole buffer out through a blocking socket whose SO_SNDTIMEO is POLL_NS, so a broker that
 * stops reading cannot hold us past the stop flag. False if stopped before it all went. */
static int send_all(struct conn *c, const unsigned char *data, size_t size)
{
    while (size) {
        ssize_t n = send(c->fd, data, size, MSG_NOSIGNAL);
        if (n > 0) {
            data += n;
            size -= (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (atomic_load_explicit(&stop_flag, memory_order_relaxed))
                return 0;
            continue;
        }
        die("%s: send: %s", c->name, n < 0 ? strerror(errno) : "no progress");
    }
    c->last_send = now_ns();
    return 1;
}

/* ---- MQTT 3.1.1 framing ---- */

static const unsigned char PINGREQ[2] = {0xC0, 0x00};
static const unsigned char DISCONNECT[2] = {0xE0, 0x00};

static size_t put_remaining_length(unsigned char *out, size_t value)
{
    size_t n = 0;
    do {
        unsigned char byte = value & 0x7F;
        value >>= 7;
        out[n++] = byte | (value ? 0x80 : 0);
    } while (value);
    return n;
}

static size_t put_string(unsigned char *out, const char *text)
{
    size_t len = strlen(text);
    out[0] = (unsigned char)(len >> 8);
    out[1] = (unsigned char)len;
    memcpy(out + 2, text, len);
    return 2 + len;
}

/* Size of the complete frame at buf[pos], with *body and *length set; 0 if more bytes are
 * needed. A frame that could never fit the buffer is fatal rather than a silent stall. */
static size_t frame_at(const struct conn *c, size_t pos, size_t *body, size_t *length)
{
    size_t have = c->len - pos, value = 0;
    for (size_t i = 1;; i++) {
        if (i >= have)
            return 0;
        unsigned char byte = c->buf[pos + i];
        value |= (size_t)(byte & 0x7F) << (7 * (i - 1));
        if (!(byte & 0x80)) {
            *body = pos + i + 1;
            break;
        }
        if (i == 4)
            die("%s: malformed Remaining Length from the broker", c->name);
    }
    *length = value;
    size_t total = *body - pos + value;
    if (total > c->cap)
        die("%s: a %zu-byte packet from the broker does not fit the %zu-byte buffer", c->name,
            total, c->cap);
    return total <= have ? total : 0;
}

/* Setup only: block (SO_RCVTIMEO = SETUP_TIMEOUT_S) until a whole frame is at buf[0]. */
static size_t read_frame(struct conn *c, const char *what, size_t *body, size_t *length)
{
    for (;;) {
        size_t total = frame_at(c, 0, body, length);
        if (total)
            return total;
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        if (n > 0) {
            c->len += (size_t)n;
        } else if (n == 0) {
            die("%s: broker %s:%s closed the connection before %s", c->name, opt.host,
                opt.port, what);
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            die("%s: no %s from %s:%s within %d s", c->name, what, opt.host, opt.port,
                SETUP_TIMEOUT_S);
        } else if (errno != EINTR) {
            die("%s: waiting for %s: %s", c->name, what, strerror(errno));
        }
    }
}

static void consume(struct conn *c, size_t total)
{
    memmove(c->buf, c->buf + total, c->len - total);
    c->len -= total;
}

static void open_connection(struct conn *c, size_t buffer_size, int nodelay_only)
{
    c->cap = buffer_size;
    c->buf = malloc(c->cap);
    if (!c->buf)
        die("out of memory (%zu-byte buffer)", c->cap);
    c->fd = connect_to(opt.host, opt.port);
    set_blocking(c->fd);
    int one = 1;
    /* Each send is already a whole batch; Nagle would only add latency to measure. */
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!nodelay_only) {
        int lowat = NOT_SENT_LOW_WATER;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NOTSENT_LOWAT, &lowat, sizeof lowat);
    }
    set_timeout(c->fd, SO_RCVTIMEO, SETUP_TIMEOUT_S * NS);
    set_timeout(c->fd, SO_SNDTIMEO, SETUP_TIMEOUT_S * NS);

    static long opened; /* in the client id: N subscribers in one process need N ids */
    char client_id[48];
    snprintf(client_id, sizeof client_id, "cbench-%c%ld-%d-%04x", c->name[0], opened++,
             (int)getpid(), (unsigned)(now_ns() & 0xFFFF));
    unsigned char packet[128], *p = packet + 2;
    p += put_string(p, "MQTT");
    *p++ = 4;    /* protocol level: 3.1.1 */
    *p++ = 0x02; /* clean session */
    *p++ = KEEPALIVE_S >> 8;
    *p++ = KEEPALIVE_S & 0xFF;
    p += put_string(p, client_id);
    packet[0] = 0x10;
    packet[1] = (unsigned char)(p - packet - 2);
    if (!send_all(c, packet, (size_t)(p - packet)))
        die("%s: cannot send CONNECT", c->name);

    size_t body, length, total = read_frame(c, "CONNACK", &body, &length);
    if (c->buf[0] != 0x20 || length != 2)
        die("%s: expected CONNACK from %s:%s, got packet type %d", c->name, opt.host, opt.port,
            c->buf[0] >> 4);
    int code = c->buf[body + 1];
    static const char *const reasons[] = {"accepted", "unacceptable protocol version",
                                          "identifier rejected", "server unavailable",
                                          "bad user name or password", "not authorized"};
    if (code != 0)
        die("%s: broker %s:%s refused the connection: CONNACK return code %d (%s)", c->name,
            opt.host, opt.port, code, code < 6 ? reasons[code] : "unknown");
    consume(c, total);
}

static void subscribe(struct conn *c)
{
    unsigned char packet[128], *p = packet + 2;
    *p++ = 0;
    *p++ = 1; /* packet id */
    p += put_string(p, topic);
    *p++ = (unsigned char)opt.qos;
    packet[0] = 0x82;
    packet[1] = (unsigned char)(p - packet - 2);
    if (!send_all(c, packet, (size_t)(p - packet)))
        die("%s: cannot send SUBSCRIBE", c->name);
    size_t body, length, total = read_frame(c, "SUBACK", &body, &length);
    if (c->buf[0] != 0x90 || length != 3)
        die("%s: expected SUBACK, got packet type %d", c->name, c->buf[0] >> 4);
    int granted = c->buf[body + 2];
    if (granted == 0x80)
        die("%s: broker refused the subscription to %s (SUBACK 0x80)", c->name, topic);
    if (granted != opt.qos)
        die("%s: broker granted QoS %d for %s, not the QoS %d asked for", c->name, granted,
            topic, opt.qos);
    consume(c, total);
}

/* ---- the subscriber ---- */

/* What the subscriber thread has seen so far, over all its connections. */
struct tally {
    long long counted;            /* deliveries stamped inside the window */
    long long received_in_window; /* deliveries received during the window */
    int64_t top;                  /* largest latency of those counted */
};

/* The whole frames in c->buf, read at `now`: each PUBLISH is counted and timed, QoS 1 ones
 * answered with one send of all their PUBACKs on c; an incomplete frame stays for the next
 * read. `acks` holds c->cap bytes: each PUBLISH is longer than its 4-byte PUBACK. */
static void take_deliveries(struct conn *c, int64_t now, unsigned char *acks, struct tally *t)
{
    size_t pos = 0, body, length, total, acked = 0;
    long long received = 0, counted = t->counted; /* in registers, not behind t */
    int64_t top = t->top;
    while ((total = frame_at(c, pos, &body, &length)) != 0) {
        const unsigned char *b = c->buf;
        int type = b[pos] >> 4, qos = (b[pos] >> 1) & 3;
        if (type == 3 && qos < 2 && length >= 2) {
            size_t at = body + 2 + ((size_t)b[body] << 8 | b[body + 1]);
            if (at + (qos ? 2 : 0) + STAMP_BYTES > body + length)
                die("subscriber: a PUBLISH without a stamp: not cbench's own");
            if (qos == 1) {
                acks[acked] = 0x40;
                acks[acked + 1] = 0x02;
                acks[acked + 2] = b[at];
                acks[acked + 3] = b[at + 1];
                acked += 4;
                at += 2;
            }
            int64_t stamp;
            memcpy(&stamp, b + at, sizeof stamp);
            received++;
            if (stamp >= window_start && stamp < window_end) {
                int64_t latency = now - stamp;
                histogram[bucket_index(latency)]++;
                if (latency > top)
                    top = latency;
                counted++;
            }
        } else if (type != 13) { /* PINGRESP aside, only PUBLISH QoS 0/1 is expected */
            die("subscriber: unexpected packet 0x%02x from the broker", b[pos]);
        }
        pos += total;
    }
    t->counted = counted;
    t->top = top;
    consume(c, pos);
    if (acked)
        send_all(c, acks, acked);
    else if (now - c->last_send >= PING_NS)
        send_all(c, PINGREQ, sizeof PINGREQ);
    if (now >= window_start && now < window_end)
        t->received_in_window += received;
}

/* For main: `delivered` now, the rest once the thread is joined. */
static void publish_tally(const struct tally *t)
{
    latency_max = t->top;
    window_received = t->received_in_window;
    atomic_store_explicit(&delivered, t->counted, memory_order_relaxed);
}

/* A failed or empty read: false if it is only a timeout or an interruption (go on); fatal if
 * the connection broke before the stop flag. */
static int read_failed(ssize_t n)
{
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (atomic_load(&stop_flag))
        return 1;
    die("subscriber: %s", n ? strerror(errno) : "broker closed the connection");
}

/* One connection: blocking recv (SO_RCVTIMEO = POLL_NS), no poll call in between. */
static void *subscriber_one(void *unused)
{
    (void)unused;
    struct conn *c = &subs[0];
    unsigned char *acks = malloc(c->cap);
    if (!acks)
        die("out of memory");
    struct tally t = {0, 0, 0};
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
        int64_t now = now_ns();
        if (n <= 0) {
            if (read_failed(n))
                break;
            if (now - c->last_send >= PING_NS)
                send_all(c, PINGREQ, sizeof PINGREQ);
            continue;
        }
        c->len += (size_t)n;
        take_deliveries(c, now, acks, &t);
        publish_tally(&t);
    }
    free(acks);
    return NULL;
}

/* N connections: epoll (level-triggered), then one non-blocking recv per ready connection. */
static void *subscriber_many(void *unused)
{
    (void)unused;
    int count = (int)opt.subscribers;
    unsigned char *acks = malloc(subs[0].cap);
    struct epoll_event *events = calloc((size_t)count, sizeof *events);
    if (!acks || !events)
        die("out of memory");
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        die("epoll_create1: %s", strerror(errno));
    for (int i = 0; i < count; i++) {
        struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, subs[i].fd, &ev) < 0)
            die("epoll_ctl: %s", strerror(errno));
    }
    struct tally t = {0, 0, 0};
    int64_t next_ping_check = 0;
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        int ready = epoll_wait(ep, events, count, (int)(POLL_NS / 1000000));
        if (ready < 0 && errno != EINTR)
            die("subscriber: epoll_wait: %s", strerror(errno));
        int stopped = 0;
        for (int k = 0; k < ready && !stopped; k++) {
            struct conn *c = &subs[events[k].data.u32];
            ssize_t n = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
            int64_t now = now_ns();
            if (n <= 0) {
                stopped = read_failed(n);
                continue;
            }
            c->len += (size_t)n;
            take_deliveries(c, now, acks, &t);
        }
        if (stopped)
            break;
        /* Connections with nothing to read: a PINGREQ when idle for PING_NS. */
        int64_t now = now_ns();
        if (now >= next_ping_check) {
            for (int i = 0; i < count; i++)
                if (now - subs[i].last_send >= PING_NS)
                    send_all(&subs[i], PINGREQ, sizeof PINGREQ);
            next_ping_check = now + POLL_NS;
        }
        publish_tally(&t);
    }
    close(ep);
    free(events);
    free(acks);
    return NULL;
}

/* ---- the publisher ---- */

static unsigned char *batch;
static long batch_frames;

/* Messages due at `now` under --rate (<= 0: none yet, then *next is when the next one is). */
static long long rate_due(int64_t now, long long issued, int64_t *next)
{
    long long due = (long long)((double)(now - t0) * opt.rate / NS) + 1 - issued;
    if (due <= 0)
        *next = t0 + (int64_t)((double)issued * NS / opt.rate);
    return due;
}

static void stamp_batch(long count, int64_t now)
{
    for (long k = 0; k < count; k++)
        memcpy(batch + (size_t)k * frame.size + frame.stamp_at, &now, sizeof now);
}

/* Called once, at the end of the window: the thread's own CPU clock, since the thread may be
 * gone (and its clock with it) by the time main looks. */
static void finish_publishing(long long counted)
{
    publisher_cpu_end = clock_ns(CLOCK_THREAD_CPUTIME_ID);
    atomic_store(&sent, counted);
    atomic_store(&publishing_done, 1);
}

/* QoS 0: blocking sends of whole batches; TCP back-pressure (the broker reading) sets the
 * pace, and TCP_NOTSENT_LOWAT keeps the bytes queued ahead of a stamp bounded. */
static void *publisher_qos0(void *unused)
{
    (void)unused;
    long long issued = 0, counted = 0;
    set_timeout(pub.fd, SO_SNDTIMEO, POLL_NS);
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        int64_t now = now_ns();
        if (now >= window_end)
            break;
        long count = batch_frames;
        if (opt.rate > 0) {
            int64_t next = 0;
            long long due = rate_due(now, issued, &next);
            if (due <= 0) {
                if (now - pub.last_send >= PING_NS)
                    send_all(&pub, PINGREQ, sizeof PINGREQ);
                if (next > pub.last_send + PING_NS)
                    next = pub.last_send + PING_NS;
                sleep_until(next < window_end ? next : window_end);
                continue;
            }
            if (due < count)
                count = (long)due;
        }
        stamp_batch(count, now);
        if (!send_all(&pub, batch, (size_t)count * frame.size))
            break;
        issued += count;
        if (now >= window_start)
            atomic_store_explicit(&sent, counted += count, memory_order_relaxed);
    }
    finish_publishing(counted);
    send_all(&pub, DISCONNECT, sizeof DISCONNECT);
    return NULL;
}

/* PUBACKs (and PINGRESPs) in pub.buf: free their packet ids. */
static long take_acks(unsigned char *in_use)
{
    size_t pos = 0, body, length, total;
    long acked = 0;
    while ((total = frame_at(&pub, pos, &body, &length)) != 0) {
        const unsigned char *b = pub.buf;
        if (b[pos] == 0x40 && length == 2) {
            unsigned id = (unsigned)b[body] << 8 | b[body + 1];
            if (!in_use[id])
                die("publisher: PUBACK for packet id %u, which is not in flight", id);
            in_use[id] = 0;
            acked++;
        } else if (b[pos] != 0xD0) {
            die("publisher: unexpected packet 0x%02x from the broker", b[pos]);
        }
        pos += total;
    }
    consume(&pub, pos);
    return acked;
}

/* QoS 1: at most --window unacknowledged PUBLISHes, one thread, blocking calls. With the
 * window full it sleeps in recv until PUBACKs come, then sends as many new PUBLISHes in one
 * send. Why not a poll loop: against a broker that acks one message at a time every wake-up
 * is a few syscalls, and a ppoll before each recv made cbench use 90% of its core against
 * Mosquitto at 35k msgs/s. A blocking send cannot deadlock against the broker's PUBACKs:
 * they are 4 bytes per message in flight, 256 KB at most, which our receive buffer holds. */
static void *publisher_qos1(void *unused)
{
    (void)unused;
    unsigned char *in_use = calloc(65536, 1);
    if (!in_use)
        die("out of memory");
    unsigned next_id = 1;
    long inflight = 0;
    long long issued = 0, counted = 0;
    int sending = 1;
    set_timeout(pub.fd, SO_RCVTIMEO, POLL_NS);
    set_timeout(pub.fd, SO_SNDTIMEO, POLL_NS);
    while (!atomic_load_explicit(&stop_flag, memory_order_relaxed)) {
        int64_t now = now_ns(), wait = 0; /* wait > 0: nothing due under --rate for so long */
        if (sending && now >= window_end) {
            sending = 0;
            finish_publishing(counted);
        }
        if (!sending && inflight == 0)
            break;
        long count = sending ? opt.window - inflight : 0;
        if (count > batch_frames)
            count = batch_frames;
        if (count > 0 && opt.rate > 0) {
            int64_t next = 0;
            long long due = rate_due(now, issued, &next);
            if (due <= 0) {
                count = 0;
                wait = next > now ? next - now : 1;
            } else if (due < count) {
                count = (long)due;
            }
        }
        if (count > 0) {
            for (long k = 0; k < count; k++) {
                while (in_use[next_id])
                    next_id = next_id % 65535 + 1;
                in_use[next_id] = 1;
                unsigned char *id = batch + (size_t)k * frame.size + frame.id_at;
                id[0] = (unsigned char)(next_id >> 8);
                id[1] = (unsigned char)next_id;
                next_id = next_id % 65535 + 1;
            }
            stamp_batch(count, now);
            if (!send_all(&pub, batch, (size_t)count * frame.size))
                break;
            inflight += count;
            issued += count;
            if (now >= window_start)
                atomic_store_explicit(&sent, counted += count, memory_order_relaxed);
        } else if (now - pub.last_send >= PING_NS) {
            send_all(&pub, PINGREQ, sizeof PINGREQ);
        }
        /* Block for PUBACKs only when nothing else can be sent; otherwise take what is there. */
        int flags = MSG_DONTWAIT;
        if (!sending || inflight >= opt.window) {
            flags = 0;
        } else if (wait > 0) {
            struct pollfd p = {pub.fd, POLLIN, 0};
            struct timespec ts = {0, (long)(wait < POLL_NS ? wait : POLL_NS)};
            if (ppoll(&p, 1, &ts, NULL) < 0 && errno != EINTR)
                die("publisher: poll: %s", strerror(errno));
        }
        ssize_t n = recv(pub.fd, pub.buf + pub.len, pub.cap - pub.len, flags);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            continue;
        if (n <= 0)
            die("publisher: %s", n ? strerror(errno) : "broker closed the connection");
        pub.len += (size_t)n;
        inflight -= take_acks(in_use);
    }
    if (sending)
        finish_publishing(counted);
    if (!atomic_load(&stop_flag))
        send_all(&pub, DISCONNECT, sizeof DISCONNECT);
    free(in_use);
    return NULL;
}

/* ---- main ---- */

static double number_arg(const char *name, const char *text, double low, double high)
{
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !(value >= low && value <= high))
        usage_error("--%s must be a number from %g to %g, not '%s'", name, low, high, text);
    return value;
}

static long integer_arg(const char *name, const char *text, long low, long high)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end || value < low || value > high)
        usage_error("--%s must be a whole number from %ld to %ld, not '%s'", name, low, high,
                    text);
    return value;
}

static void parse_args(int argc, char **argv)
{
    static const struct option longs[] = {
        {"host", required_argument, NULL, 'h'},     {"port", required_argument, NULL, 'p'},
        {"qos", required_argument, NULL, 'q'},      {"payload", required_argument, NULL, 's'},
        {"duration", required_argument, NULL, 'd'}, {"warmup", required_argument, NULL, 'w'},
        {"window", required_argument, NULL, 'n'},   {"rate", required_argument, NULL, 'r'},
        {"subscribers", required_argument, NULL, 'm'},
        {"help", no_argument, NULL, '?'},           {NULL, 0, NULL, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'h': opt.host = optarg; break;
        case 'p': integer_arg("port", optarg, 1, 65535); opt.port = optarg; break;
        case 'q': opt.qos = (int)integer_arg("qos", optarg, 0, 1); break;
        case 's': opt.payload = integer_arg("payload", optarg, STAMP_BYTES, MAX_PAYLOAD); break;
        case 'd': opt.duration = number_arg("duration", optarg, 0.001, 86400); break;
        case 'w': opt.warmup = number_arg("warmup", optarg, 0, 86400); break;
        case 'n': opt.window = integer_arg("window", optarg, 1, 65535); break;
        case 'r': opt.rate = number_arg("rate", optarg, 0, 1e9); break;
        case 'm':
            opt.subscribers = integer_arg("subscribers", optarg, 1, MAX_SUBSCRIBERS);
            break;
        default: usage_error("bad arguments");
        }
    }
    if (optind < argc)
        usage_error("unexpected argument '%s'", argv[optind]);
}

/* One PUBLISH frame (3.1.1: header, topic, packet id at QoS 1, payload), copied batch_frames
 * times; the publisher patches only the stamp (and packet id) of each copy. */
static void build_batch(void)
{
    size_t remaining = 2 + strlen(topic) + (opt.qos ? 2 : 0) + (size_t)opt.payload;
    unsigned char head[5 + 2 + sizeof topic + 2], *p = head;
    *p++ = (unsigned char)(0x30 | opt.qos << 1);
    p += put_remaining_length(p, remaining);
    p += put_string(p, topic);
    frame.id_at = (size_t)(p - head);
    if (opt.qos)
        p += 2;
    frame.stamp_at = (size_t)(p - head);
    frame.size = frame.stamp_at + (size_t)opt.payload;

    size_t budget = opt.qos ? QOS1_BATCH_BYTES : QOS0_BATCH_BYTES;
    batch_frames = (long)(budget / frame.size);
    if (batch_frames < 1)
        batch_frames = 1;
    if (opt.qos && batch_frames > opt.window)
        batch_frames = opt.window;
    batch = malloc((size_t)batch_frames * frame.size);
    if (!batch)
        die("out of memory (batch of %ld %zu-byte frames)", batch_frames, frame.size);
    for (long k = 0; k < batch_frames; k++) {
        unsigned char *f = batch + (size_t)k * frame.size;
        memcpy(f, head, frame.stamp_at);
        memset(f + frame.stamp_at, 'x', (size_t)opt.payload);
    }
}

struct cpu_sample {
    int64_t process, publisher, subscriber;
};

static void sample_cpu(struct cpu_sample *s, clockid_t pub_clock, clockid_t sub_clock)
{
    s->process = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    s->publisher = clock_ns(pub_clock); /* at the end: replaced by publisher_cpu_end */
    s->subscriber = clock_ns(sub_clock);
}

/* N subscriber connections need N descriptors: raise the soft limit as far as it goes. */
static void allow_descriptors(long needed)
{
    struct rlimit limit;
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < (rlim_t)needed) {
        limit.rlim_cur = limit.rlim_max < (rlim_t)needed ? limit.rlim_max : (rlim_t)needed;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    snprintf(topic, sizeof topic, "cbench/%d/%llx", (int)getpid(),
             (unsigned long long)clock_ns(CLOCK_REALTIME));
    build_batch();

    long count = opt.subscribers;
    allow_descriptors(count + 16);
    subs = calloc((size_t)count, sizeof *subs);
    if (!subs)
        die("out of memory");
    size_t read_buffer = (count > 1 ? FANOUT_READ_BUFFER : READ_BUFFER) + frame.size;
    for (long i = 0; i < count; i++) {
        subs[i] = (struct conn){-1, "subscriber", NULL, 0, 0, 0};
        open_connection(&subs[i], read_buffer, 1);
        subscribe(&subs[i]);
    }
    open_connection(&pub, 64 * 1024, 0);
    for (long i = 0; i < count; i++) {
        set_timeout(subs[i].fd, SO_RCVTIMEO, POLL_NS);
        set_timeout(subs[i].fd, SO_SNDTIMEO, POLL_NS);
    }

    t0 = now_ns();
    window_start = t0 + (int64_t)(opt.warmup * NS);
    window_end = window_start + (int64_t)(opt.duration * NS);
    pthread_t sub_thread, pub_thread;
    if (pthread_create(&sub_thread, NULL, count > 1 ? subscriber_many : subscriber_one, NULL) ||
        pthread_create(&pub_thread, NULL, opt.qos ? publisher_qos1 : publisher_qos0, NULL))
        die("cannot start threads");
    clockid_t pub_clock, sub_clock;
    if (pthread_getcpuclockid(pub_thread, &pub_clock) ||
        pthread_getcpuclockid(sub_thread, &sub_clock))
        die("cannot read thread CPU clocks");

    /* CPU over the measured window: 100 % of one core means this tool may be the limit. */
    struct cpu_sample before, after;
    sleep_until(window_start);
    sample_cpu(&before, pub_clock, sub_clock);
    sleep_until(window_end);
    sample_cpu(&after, pub_clock, sub_clock);

    /* The publisher stops at the end of the window unless a send is stuck behind a broker
     * that no longer reads: then the drain time is all it gets, and `sent` is what went. */
    int64_t deadline = window_end + DRAIN_NS;
    while (!atomic_load(&publishing_done) && now_ns() < deadline)
        sleep_until(now_ns() + 1000000);
    if (atomic_load(&publishing_done)) {
        after.publisher = publisher_cpu_end;
        deadline = now_ns() + DRAIN_NS;
    }
    while (atomic_load(&delivered) < atomic_load(&sent) * count && now_ns() < deadline)
        sleep_until(now_ns() + 1000000);
    atomic_store(&stop_flag, 1);
    pthread_join(pub_thread, NULL);
    pthread_join(sub_thread, NULL);
    for (long i = 0; i < count; i++) {
        send(subs[i].fd, DISCONNECT, sizeof DISCONNECT, MSG_NOSIGNAL);
        close(subs[i].fd);
    }
    close(pub.fd);

    long long n_sent = atomic_load(&sent), n_delivered = atomic_load(&delivered);
    long long expected = n_sent * count;
    uint64_t total = 0;
    for (int i = 0; i < BUCKETS; i++)
        total += histogram[i];
    double window_ns = (double)(window_end - window_start);
    double cpu_ns = window_ns / 100.0;
    printf("{\"sent\": %lld, \"subscribers\": %ld, \"deliveries_expected\": %lld, "
           "\"delivered\": %lld, \"lost\": %lld, \"delivery_rate\": %.1f, "
           "\"publish_rate\": %.1f, \"latency_us\": {\"p50\": %.1f, \"p95\": %.1f, "
           "\"p99\": %.1f, \"p999\": %.1f, \"max\": %.1f}, \"qos\": %d, \"payload\": %ld, "
           "\"cpu_percent\": {\"process\": %.1f, \"publisher\": %.1f, \"subscriber\": %.1f}}\n",
           n_sent, count, expected, n_delivered, expected - n_delivered,
           (double)window_received * NS / window_ns,
           (double)n_sent * NS / window_ns, (double)percentile(50, total) / 1e3,
           (double)percentile(95, total) / 1e3, (double)percentile(99, total) / 1e3,
           (double)percentile(99.9, total) / 1e3, (double)latency_max / 1e3, opt.qos,
           opt.payload, (double)(after.process - before.process) / cpu_ns,
           (double)(after.publisher - before.publisher) / cpu_ns,
           (double)(after.subscriber - before.subscriber) / cpu_ns);
    return 0;
}
