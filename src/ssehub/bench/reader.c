/*
 * ssehub bench: the subscribers' side of the load, in C (built and driven by native.py).
 *
 *   reader HOST PORT COUNT HTTP STREAMS CPU
 *
 * COUNT subscribers on one epoll loop. HTTP is 1.0 or 1.1 (one connection each) or 2 (h2c with
 * prior knowledge, STREAMS subscribers per connection); CPU is the core to pin to, or -1.
 * The request head comes first on stdin: the HTTP/1.x GET the Python reader sends, ending with
 * an empty line (HTTP/2 turns it into a header block). Then commands, one a line, each answered
 * with one line on stdout, like the Python subscriber processes' pipe:
 *
 *   (unasked, once every subscriber has its response head)  connected SECONDS  |  error REASON
 *   start   reset the counters and count from now (no answer)
 *   count   EVENTS
 *   stop    EVENTS CPU_SECONDS, then one line of latency samples in ms; then it exits
 *
 * and it exits when stdin closes. Events are counted as the Python reader counts them:
 * occurrences of "\n\n" in what is read (across reads of one stream, through the last byte),
 * whatever the framing (chunked, close-delimited, or HTTP/2 DATA payloads). One latency sample
 * per read (per DATA frame over HTTP/2): the first "data: " followed by 20 digits, the
 * publisher's CLOCK_MONOTONIC in ns, subtracted from now. After a wakeup that read something
 * it naps NAP_US before polling again (why: at its definition).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE (256 * 1024)
#define MAX_SAMPLES 200000
#define MAX_HEAD 16384          /* a response head split over reads is gathered up to this */
#define MAX_REQUEST 8192
#define MAX_PENDING 1024        /* requests not answered yet: stays under the hub's backlog */
#ifndef STREAM_WINDOW /* HTTP/2 windows, wide open: the load measures the hub, not our reading */
#define STREAM_WINDOW (1u << 24)
#endif
#ifndef CONN_WINDOW
#define CONN_WINDOW (1u << 30) /* added to the connection's initial 65,535 */
#endif
#define CONN_WINDOW_TOTAL (65535u + CONN_WINDOW)
#define CTL_MAX 16384           /* a non-DATA frame's payload, kept whole (default frame size) */
#define STDIN_ID UINT32_MAX
#ifndef NAP_US
/* After a wakeup that read something, sleep this long before polling again. On loopback the
 * hub's write() runs our receive path, and wakes us if we wait in epoll_wait: a reader that
 * keeps up sleeps after every socket, and the hub pays a cross-CPU wakeup per write (in a VM
 * an IPI, a VM exit). Measured, 10,000 subscribers at 100/s: p99 395 ms when sleeping at once,
 * 177 ms with this nap (193 ms spinning instead, at twice the CPU). Samples may carry up to
 * this much of our own delay. */
#define NAP_US 100
#endif
#ifndef READS
#define READS 1 /* per readable socket: 0 one read, 1 until a short read, 2 until EAGAIN */
#endif

enum { HEAD, BODY };
enum { F_DATA, F_HEADERS, F_PRIORITY, F_RST_STREAM, F_SETTINGS, F_PUSH, F_PING, F_GOAWAY,
       F_WINDOW_UPDATE };
#define FL_END_STREAM 0x1
#define FL_ACK 0x1
#define FL_END_HEADERS 0x4
#define FL_PADDED 0x8
#define FL_PRIORITY 0x20

struct stream {
    uint32_t consumed; /* bytes since the last WINDOW_UPDATE */
    unsigned char answered, ended;
    char tail;
};

struct h2 {
    unsigned char hdr[9];
    unsigned hdr_have;
    uint32_t len, off, id; /* the current frame: payload length, bytes of it seen, stream */
    uint8_t type, flags;
    uint32_t pad;          /* DATA: padding bytes ending the payload */
    int sampled;           /* DATA: this frame gave its latency sample */
    unsigned char *ctl;    /* a non-DATA payload, gathered */
    uint32_t consumed;     /* connection bytes since the last WINDOW_UPDATE */
    unsigned nstreams;
    struct stream *streams;
};

struct conn {
    int fd;
    unsigned char phase;
    char tail;
    unsigned head_len;
    char *head; /* a response head split over reads */
    struct h2 *h2;
};

static char buf[BUF_SIZE];
static struct conn *conns;
static unsigned nconns, opened;
static unsigned long count, streams_per_conn, answered, pending;
static int http2, said_connected, epfd;
static const char *host, *port;
static struct addrinfo *addr;
static char request[MAX_REQUEST];
static size_t request_len;
static unsigned char block[MAX_REQUEST]; /* HTTP/2: the request as an HPACK header block */
static size_t block_len;
static char commands[MAX_REQUEST + 1]; /* the request head, then command lines */
static size_t commands_len;

static int counting;
static unsigned long long events;
static double *samples;
static unsigned nsamples;

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fail(const char *fmt, ...)
{
    va_list ap;
    fputs("error ", stdout);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fputc('\n', stdout);
    fflush(stdout);
    exit(1);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Up to max bytes of text on one line: whitespace runs become one space (as Python's
 * " ".join(s.split())), control characters '?'. */
static const char *one_line(const char *p, size_t n, size_t max)
{
    static char out[512];
    size_t o = 0;
    int space = 0;
    if (n > max)
        n = max;
    if (n > sizeof out - 1)
        n = sizeof out - 1;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (ch == ' ' || (ch >= '\t' && ch <= '\r')) {
            space = o > 0;
            continue;
        }
        if (space)
            out[o++] = ' ';
        space = 0;
        out[o++] = ch < 0x20 || ch == 0x7f ? '?' : (char)ch;
    }
    out[o] = 0;
    return out;
}

/* Count "\n\n" in tail + p[0:n] without overlaps (bytes.count), and maybe take a sample. */
static int count_piece(const char *p, size_t n, char tail, int sample)
{
    const char *end = p + n, *q = p;
    unsigned long long k = 0;
    if (tail == '\n' && n && p[0] == '\n') {
        k = 1;
        q = p + 1;
    }
    while (q < end && (q = memchr(q, '\n', (size_t)(end - q))) != NULL) {
        if (q + 1 < end && q[1] == '\n') {
            k++;
            q += 2;
        } else {
            q++;
        }
    }
    events += k;
    if (!sample || nsamples >= MAX_SAMPLES)
        return 0;
    const char *at = memmem(p, n, "data: ", 6);
    if (!at || (size_t)(end - at) < 26)
        return 0;
    uint64_t sent = 0;
    for (int i = 6; i < 26; i++) {
        if (at[i] < '0' || at[i] > '9')
            return 0;
        sent = sent * 10 + (uint64_t)(at[i] - '0');
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    samples[nsamples++] = ((double)now - (double)sent) / 1e6;
    return 1;
}

static void send_all(int fd, const void *data, size_t n)
{
    const char *p = data;
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w > 0) {
            p += w;
            n -= (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            struct pollfd pfd = {.fd = fd, .events = POLLOUT};
            if (poll(&pfd, 1, 5000) == 0)
                fail("the target took nothing from a subscriber connection for 5 s");
        } else {
            return; /* the connection is gone: its read says so */
        }
    }
}

/* -- HTTP/1.x --------------------------------------------------------------------------------- */

static void refuse(const char *what, size_t n, const char *body, size_t body_len)
{
    char status[256];
    snprintf(status, sizeof status, "%s", one_line(what, n, 200));
    fail("the target refused a subscriber: %s: %s", status, one_line(body, body_len, 200));
}

static void h1_head(const char *head, size_t len, const char *body, size_t body_len)
{
    answered++;
    pending--;
    if (len > 9 && head[9] == '2')
        return;
    const char *eol = memmem(head, len, "\r\n", 2);
    refuse(head, (size_t)(eol - head), body, body_len);
}

static void h1_data(struct conn *c, char *p, size_t n)
{
    if (c->phase == HEAD) {
        size_t used;
        if (!c->head) {
            char *end = memmem(p, n, "\r\n\r\n", 4);
            if (!end) {
                if (n > MAX_HEAD)
                    fail("a response head over %d bytes", MAX_HEAD);
                c->head = malloc(MAX_HEAD);
                if (!c->head)
                    fail("out of memory");
                memcpy(c->head, p, n);
                c->head_len = (unsigned)n;
                return;
            }
            used = (size_t)(end + 4 - p);
            h1_head(p, used, p + used, n - used);
        } else {
            size_t old = c->head_len, take = n < MAX_HEAD - old ? n : MAX_HEAD - old;
            memcpy(c->head + old, p, take);
            size_t from = old >= 3 ? old - 3 : 0;
            char *end = memmem(c->head + from, old + take - from, "\r\n\r\n", 4);
            if (!end) {
                if (old + take == MAX_HEAD)
                    fail("a response head over %d bytes", MAX_HEAD);
                c->head_len = (unsigned)(old + take);
                return;
            }
            size_t head_len = (size_t)(end + 4 - c->head);
            used = head_len - old;
            h1_head(c->head, head_len, p + used, n - used);
            free(c->head);
            c->head = NULL;
        }
        c->phase = BODY;
        p += used;
        n -= used;
    }
    if (counting)
        count_piece(p, n, c->tail, 1);
    c->tail = n ? p[n - 1] : 0;
}

/* -- HTTP/2 ----------------------------------------------------------------------------------- */

static size_t frame_head(unsigned char *out, uint32_t len, uint8_t type, uint8_t flags, uint32_t id)
{
    out[0] = (unsigned char)(len >> 16);
    out[1] = (unsigned char)(len >> 8);
    out[2] = (unsigned char)len;
    out[3] = type;
    out[4] = flags;
    out[5] = (unsigned char)(id >> 24 & 0x7f);
    out[6] = (unsigned char)(id >> 16);
    out[7] = (unsigned char)(id >> 8);
    out[8] = (unsigned char)id;
    return 9;
}

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void window_update(int fd, uint32_t id, uint32_t increment)
{
    unsigned char f[13];
    frame_head(f, 4, F_WINDOW_UPDATE, 0, id);
    put32(f + 9, increment);
    send_all(fd, f, sizeof f);
}

/* An HPACK string literal, never Huffman-coded (RFC 7541 5.1, 5.2); lowered if asked. */
static void hpack_string(const char *s, size_t n, int lower)
{
    if (block_len + n + 6 > sizeof block)
        fail("the request head is too large for one HEADERS frame");
    size_t v = n;
    if (v < 127) {
        block[block_len++] = (unsigned char)v;
    } else {
        block[block_len++] = 127;
        for (v -= 127; v >= 128; v >>= 7)
            block[block_len++] = (unsigned char)(v % 128 + 128);
        block[block_len++] = (unsigned char)v;
    }
    for (size_t i = 0; i < n; i++)
        block[block_len++] = (unsigned char)(lower && s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
}

static void hpack_field(const char *name, size_t name_len, const char *value, size_t value_len)
{
    if (block_len == sizeof block)
        fail("the request head is too large for one HEADERS frame");
    block[block_len++] = 0; /* literal header field without indexing, new name */
    hpack_string(name, name_len, 1);
    hpack_string(value, value_len, 0);
}

/* The HTTP/1.x request head as an HTTP/2 header block: Host becomes :authority. */
static void h2_block(void)
{
    char *line = request, *end = request + request_len;
    char *eol = memmem(line, (size_t)(end - line), "\r\n", 2);
    char *sp1 = memchr(line, ' ', (size_t)(eol - line));
    char *sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (!sp2)
        fail("bad request line");
    hpack_field(":method", 7, line, (size_t)(sp1 - line));
    hpack_field(":path", 5, sp1 + 1, (size_t)(sp2 - sp1 - 1));
    hpack_field(":scheme", 7, "http", 4);
    for (line = eol + 2; (eol = memmem(line, (size_t)(end - line), "\r\n", 2)) && eol > line;
         line = eol + 2) {
        char *colon = memchr(line, ':', (size_t)(eol - line));
        if (!colon)
            fail("bad request header line");
        char *value = colon + 1;
        while (value < eol && *value == ' ')
            value++;
        size_t name_len = (size_t)(colon - line);
        if (name_len == 4 && strncasecmp(line, "host", 4) == 0)
            hpack_field(":authority", 10, value, (size_t)(eol - value));
        else
            hpack_field(line, name_len, value, (size_t)(eol - value));
    }
}

static int hpack_int(const unsigned char **p, const unsigned char *end, int bits, uint32_t *out)
{
    uint32_t max = (1u << bits) - 1, v = **p & max;
    (*p)++;
    if (v == max) {
        for (int shift = 0;; shift += 7) {
            if (*p >= end || shift > 21)
                return -1;
            unsigned char b = *(*p)++;
            v += (uint32_t)(b & 127) << shift;
            if (!(b & 128))
                break;
        }
    }
    *out = v;
    return 0;
}

/* The :status of a response header block into out ("?" when it cannot be read). We keep no
 * HPACK table of our own: a 200 is always the static index 8, another status a literal the
 * first time (later maybe an index into the table we do not keep: "?", still not a 200). A
 * Huffman-coded status holds digits only: '0'-'2' are 5-bit codes 0-2, '3'-'9' 6-bit 25-31. */
static void h2_status(const unsigned char *p, const unsigned char *end, char out[4])
{
    static const char *indexed[] = {"200", "204", "206", "304", "400", "404", "500"};
    uint32_t index, len;
    strcpy(out, "?");
    while (p < end && (*p & 0xe0) == 0x20) /* dynamic table size updates */
        if (hpack_int(&p, end, 5, &index) < 0)
            return;
    if (p >= end)
        return;
    if (*p & 0x80) {
        if (hpack_int(&p, end, 7, &index) == 0 && index >= 8 && index <= 14)
            strcpy(out, indexed[index - 8]);
        return;
    }
    if (hpack_int(&p, end, (*p & 0x40) ? 6 : 4, &index) < 0 || index < 8 || index > 14 || p >= end)
        return;
    int huffman = *p & 0x80;
    if (hpack_int(&p, end, 7, &len) < 0 || len > (uint32_t)(end - p))
        return;
    size_t o = 0;
    if (!huffman) {
        for (; o < 3 && o < len; o++)
            out[o] = (char)p[o];
    } else {
        uint32_t bits = 0, have = 0;
        for (uint32_t i = 0; o < 3; ) {
            while (have < 6 && i < len) {
                bits = bits << 8 | p[i++];
                have += 8;
            }
            if (have >= 5 && (bits >> (have - 5) & 31) <= 2) {
                out[o++] = (char)('0' + (bits >> (have - 5) & 31));
                have -= 5;
            } else if (have >= 6 && (bits >> (have - 6) & 63) >= 25) {
                out[o++] = (char)('3' + (bits >> (have - 6) & 63) - 25);
                have -= 6;
            } else {
                break;
            }
            bits &= (1u << have) - 1;
        }
    }
    out[o] = 0;
}

static const char *h2_error(uint32_t code)
{
    static const char *names[] = {
        "NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT",
        "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM", "CANCEL", "COMPRESSION_ERROR",
        "CONNECT_ERROR", "ENHANCE_YOUR_CALM", "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"};
    return code < sizeof names / sizeof *names ? names[code] : "unknown error";
}

static struct stream *h2_stream(struct h2 *h, uint32_t id)
{
    return id % 2 && (id - 1) / 2 < h->nstreams ? &h->streams[(id - 1) / 2] : NULL;
}

static void h2_data(struct h2 *h, const unsigned char *p, size_t n)
{
    uint32_t lo = 0, hi = h->len;
    size_t off = h->off;
    if (h->flags & FL_PADDED) {
        if (off == 0 && n) {
            h->pad = p[0];
            if (h->pad >= h->len)
                h->pad = h->len - 1;
        }
        lo = 1;
        hi = h->len - h->pad;
    }
    size_t a = off > lo ? off : lo, b = off + n < hi ? off + n : hi;
    struct stream *s = h2_stream(h, h->id);
    if (a >= b || !s)
        return;
    const char *piece = (const char *)p + (a - off);
    if (counting && count_piece(piece, b - a, s->tail, !h->sampled))
        h->sampled = 1;
    s->tail = piece[b - a - 1];
}

/* A whole frame has been read (DATA payloads were counted as they came). */
static void h2_frame(struct conn *c, struct h2 *h)
{
    unsigned char out[17];
    const unsigned char *p = h->ctl;
    struct stream *s = h2_stream(h, h->id);
    int whole = h->type == F_DATA || h->len <= CTL_MAX;
    switch (h->type) {
    case F_DATA:
        if (s && (h->flags & FL_END_STREAM))
            s->ended = 1;
        if (s && !s->ended && s->consumed >= STREAM_WINDOW / 2) {
            window_update(c->fd, h->id, s->consumed);
            s->consumed = 0;
        }
        if (h->consumed >= CONN_WINDOW_TOTAL / 2) {
            window_update(c->fd, 0, h->consumed);
            h->consumed = 0;
        }
        break;
    case F_HEADERS:
        if (!s || s->answered)
            break; /* trailers, or not ours */
        if (!whole)
            fail("a response HEADERS frame over %d bytes", CTL_MAX);
        s->answered = 1;
        answered++;
        pending--;
        {
            uint32_t len = h->len, pad = 0;
            char status[4] = "?";
            if (h->flags & FL_PADDED && len) {
                pad = *p++;
                len--;
            }
            if (h->flags & FL_PRIORITY && len >= 5) {
                p += 5;
                len -= 5;
            }
            if (pad <= len)
                h2_status(p, p + len - pad, status);
            if (status[0] != '2')
                fail("the target refused a subscriber: HTTP/2 %s", status);
        }
        break;
    case F_RST_STREAM:
        if (!said_connected)
            fail("the target refused a subscriber: the hub reset an HTTP/2 stream (%s)",
                 h->len >= 4 && whole ? h2_error(get32(p)) : "?");
        if (s)
            s->ended = 1;
        break;
    case F_SETTINGS:
        if (!(h->flags & FL_ACK))
            send_all(c->fd, out, frame_head(out, 0, F_SETTINGS, FL_ACK, 0));
        break;
    case F_PING:
        if (!(h->flags & FL_ACK) && h->len == 8) {
            frame_head(out, 8, F_PING, FL_ACK, 0);
            memcpy(out + 9, p, 8);
            send_all(c->fd, out, 17);
        }
        break;
    case F_GOAWAY:
        if (!said_connected)
            fail("the target closed an HTTP/2 connection before answering (GOAWAY %s)",
                 h->len >= 8 && whole ? h2_error(get32(p + 4)) : "?");
        break;
    }
}

static void h2_read(struct conn *c, const unsigned char *p, size_t n)
{
    struct h2 *h = c->h2;
    while (n) {
        if (h->hdr_have < 9) {
            size_t take = 9 - h->hdr_have < n ? 9 - h->hdr_have : n;
            memcpy(h->hdr + h->hdr_have, p, take);
            h->hdr_have += (unsigned)take;
            p += take;
            n -= take;
            if (h->hdr_have < 9)
                return;
            h->len = (uint32_t)h->hdr[0] << 16 | (uint32_t)h->hdr[1] << 8 | h->hdr[2];
            h->type = h->hdr[3];
            h->flags = h->hdr[4];
            h->id = get32(h->hdr + 5) & 0x7fffffff;
            h->off = h->pad = 0;
            h->sampled = 0;
            if (h->type == F_DATA) {
                struct stream *s = h2_stream(h, h->id);
                h->consumed += h->len;
                if (s)
                    s->consumed += h->len;
            } else if (!h->ctl && !(h->ctl = malloc(CTL_MAX))) {
                fail("out of memory");
            }
        }
        size_t take = h->len - h->off < n ? h->len - h->off : n;
        if (h->type == F_DATA)
            h2_data(h, p, take);
        else if (h->len <= CTL_MAX)
            memcpy(h->ctl + h->off, p, take);
        h->off += (uint32_t)take;
        p += take;
        n -= take;
        if (h->off == h->len) {
            h2_frame(c, h);
            h->hdr_have = 0;
        }
    }
}

/* -- connections ------------------------------------------------------------------------------ */

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

/* Past about half of ip_local_port_range (14,000 of Linux's default 28,232 ports), each connect()
 * from one source address to one address:port searches longer for a free port: 1.8 ms each at
 * 16,000, so 19,500 subscribers took 9 s to connect whatever the hub. Loopback is a whole /8:
 * every 8,192 connections of a process get their own source address (127.P.P.n, P from the pid
 * so processes differ), a fresh space of ports for the kernel to pick from at connect(). */
static void spread_source(int fd, unsigned i)
{
    const struct sockaddr_in *to = (const struct sockaddr_in *)(void *)addr->ai_addr;
    if (addr->ai_family != AF_INET || ntohl(to->sin_addr.s_addr) >> 24 != 127)
        return;
    int on = 1;
    uint32_t pid = (uint32_t)getpid() & 0xffffu;
    struct sockaddr_in from = {.sin_family = AF_INET};
    from.sin_addr.s_addr = htonl(0x7f000001u + (pid << 8) + i / 8192u);
    /* if either fails, connect() picks the source as it would have */
    if (setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &on, sizeof on) == 0)
        (void)bind(fd, (const struct sockaddr *)&from, sizeof from);
}

static void open_conn(unsigned i)
{
    struct conn *c = &conns[i];
    int fd = -1;
    for (int attempt = 0;; attempt++) {
        fd = socket(addr->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            fail("cannot open a socket: %s", strerror(errno));
        spread_source(fd, i);
        if (connect(fd, addr->ai_addr, addr->ai_addrlen) == 0)
            break;
        int err = errno;
        close(fd);
        /* a listen backlog overflowing, or a hub not quite up */
        if ((err == ECONNREFUSED || err == EAGAIN || err == EINTR || err == ETIMEDOUT) &&
            attempt < 5) {
            usleep(20000u << attempt);
            continue;
        }
        fail("cannot connect to %s:%s: %s", host, port, strerror(err));
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Our exit resets the connections instead of leaving 19,500 ports in TIME_WAIT for a
     * minute, where the next run's connects would have to search past them. */
    struct linger reset = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    c->fd = fd;
    if (!http2) {
        send_all(fd, request, request_len);
        pending++;
    } else {
        unsigned long left = count - (unsigned long)i * streams_per_conn;
        unsigned nstreams = (unsigned)(left < streams_per_conn ? left : streams_per_conn);
        struct h2 *h = c->h2 = calloc(1, sizeof *h);
        struct stream *streams = calloc(nstreams, sizeof *streams);
        unsigned char *out = malloc(24 + 9 + 18 + 13 + nstreams * (9 + block_len)), *o = out;
        if (!h || !streams || !out)
            fail("out of memory");
        h->nstreams = nstreams;
        h->streams = streams;
        memcpy(o, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 24);
        o += 24;
        o += frame_head(o, 18, F_SETTINGS, 0, 0);
        static const uint32_t settings[3][2] = {
            {1, 4096},          /* HEADER_TABLE_SIZE: the default, a table as browsers keep */
            {2, 0},             /* ENABLE_PUSH 0 */
            {4, STREAM_WINDOW}, /* INITIAL_WINDOW_SIZE */
        };
        for (int k = 0; k < 3; k++) {
            o[0] = 0;
            o[1] = (unsigned char)settings[k][0];
            put32(o + 2, settings[k][1]);
            o += 6;
        }
        o += frame_head(o, 4, F_WINDOW_UPDATE, 0, 0);
        put32(o, CONN_WINDOW);
        o += 4;
        for (unsigned s = 0; s < h->nstreams; s++) {
            o += frame_head(o, (uint32_t)block_len, F_HEADERS, FL_END_STREAM | FL_END_HEADERS,
                            2 * s + 1);
            memcpy(o, block, block_len);
            o += block_len;
        }
        send_all(fd, out, (size_t)(o - out));
        free(out);
        pending += h->nstreams;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = i};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
        fail("epoll_ctl: %s", strerror(errno));
}

static void close_conn(struct conn *c)
{
    if (!said_connected)
        fail("the target closed a subscriber connection before answering it");
    close(c->fd);
    c->fd = -1;
}

static void readable(struct conn *c)
{
    for (;;) {
        ssize_t n = read(c->fd, buf, sizeof buf);
        if (n > 0) {
            if (c->h2)
                h2_read(c, (const unsigned char *)buf, (size_t)n);
            else
                h1_data(c, buf, (size_t)n);
            if (READS == 0 || (READS == 1 && (size_t)n < sizeof buf))
                return;
        } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
            close_conn(c);
            return;
        } else if (errno == EAGAIN) {
            return;
        }
    }
}

/* -- commands --------------------------------------------------------------------------------- */

static void command(const char *line)
{
    if (strcmp(line, "start") == 0) {
        counting = 1;
        events = 0;
        nsamples = 0;
    } else if (strcmp(line, "count") == 0) {
        printf("%llu\n", events);
        fflush(stdout);
    } else if (strcmp(line, "stop") == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                     (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
        printf("%llu %.6f\n", events, cpu);
        for (unsigned i = 0; i < nsamples; i++)
            printf(i ? " %.4f" : "%.4f", samples[i]);
        printf("\n");
        fflush(stdout);
        exit(0);
    } else {
        fail("unknown command %s", one_line(line, strlen(line), 100));
    }
}

static void run_commands(void)
{
    char *line = commands, *nl;
    while ((nl = memchr(line, '\n', commands_len - (size_t)(line - commands)))) {
        *nl = 0;
        command(line);
        line = nl + 1;
    }
    commands_len -= (size_t)(line - commands);
    memmove(commands, line, commands_len);
    if (commands_len == sizeof commands - 1)
        fail("a command line too long");
}

static void read_commands(void)
{
    ssize_t n = read(0, commands + commands_len, sizeof commands - commands_len - 1);
    if (n == 0)
        exit(0); /* whoever drove us is gone */
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
            return;
        exit(1);
    }
    commands_len += (size_t)n;
    run_commands();
}

static void read_request(void)
{
    char *end;
    while (!(end = memmem(commands, commands_len, "\r\n\r\n", 4))) {
        if (commands_len == sizeof commands - 1)
            fail("a request head over %d bytes", MAX_REQUEST);
        ssize_t n = read(0, commands + commands_len, sizeof commands - 1 - commands_len);
        if (n <= 0)
            exit(n == 0 ? 0 : 1);
        commands_len += (size_t)n;
    }
    request_len = (size_t)(end + 4 - commands);
    memcpy(request, commands, request_len);
    commands_len -= request_len;
    memmove(commands, commands + request_len, commands_len);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: %s HOST PORT COUNT HTTP STREAMS CPU < request head, commands\n",
                argv[0]);
        return 2;
    }
    host = argv[1];
    port = argv[2];
    count = strtoul(argv[3], NULL, 10);
    http2 = strcmp(argv[4], "2") == 0;
    streams_per_conn = strtoul(argv[5], NULL, 10);
    int cpu = atoi(argv[6]);
    if (count == 0 || streams_per_conn == 0)
        fail("COUNT and STREAMS must be positive");
    signal(SIGPIPE, SIG_IGN);
    if (cpu >= 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET((unsigned)cpu, &set);
        if (sched_setaffinity(0, sizeof set, &set) < 0)
            fail("cannot pin to CPU %d: %s", cpu, strerror(errno));
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    read_request();
    if (http2)
        h2_block();
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    int gai = getaddrinfo(host, port, &hints, &addr);
    if (gai != 0)
        fail("cannot connect to %s:%s: %s", host, port, gai_strerror(gai));
    nconns = http2 ? (unsigned)((count + streams_per_conn - 1) / streams_per_conn)
                   : (unsigned)count;
    conns = calloc(nconns, sizeof *conns);
    samples = malloc(MAX_SAMPLES * sizeof *samples);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!conns || !samples || epfd < 0)
        fail("cannot set up: %s", strerror(errno));
    fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
    struct epoll_event ev = {.events = EPOLLIN, .data.u32 = STDIN_ID};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, 0, &ev) < 0)
        fail("epoll_ctl on stdin: %s", strerror(errno));
    run_commands(); /* any that came with the request head */
    double started = now_s();
    static struct epoll_event ready[1024];
    int napped = 0;
    for (;;) {
        /* Connect while few requests wait for their answer, so the hub's backlog never
         * overflows (a dropped SYN costs a 1 s retransmission). */
        while (opened < nconns && pending < MAX_PENDING)
            open_conn(opened++);
        if (!said_connected && answered == count) {
            said_connected = 1;
            printf("connected %.6f\n", now_s() - started);
            fflush(stdout);
        }
        int n = epoll_wait(epfd, ready, 1024, napped ? 0 : -1);
        if (n < 0 && errno != EINTR)
            fail("epoll_wait: %s", strerror(errno));
        for (int i = 0; i < n; i++) {
            if (ready[i].data.u32 == STDIN_ID)
                read_commands();
            else if (conns[ready[i].data.u32].fd >= 0)
                readable(&conns[ready[i].data.u32]);
        }
        napped = n > 0 && NAP_US > 0;
        if (napped) {
            struct timespec nap = {0, NAP_US * 1000L};
            nanosleep(&nap, NULL);
        }
    }
}

