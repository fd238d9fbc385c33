/*
 * relaycast/loadgen/limit_probe.c: the raw floor under relaycast's fan-out, per packet per viewer.
 *
 * For each source packet and each of N viewers it does only what any fan-out has to do, with
 * no bookkeeping (no counters, no slot checks, no starting points, no extension blocks):
 *
 *   - write a 12-byte RTP header for the viewer (its SSRC, sequence number + offset,
 *     timestamp + offset) and copy the payload (~1,150 bytes) behind it, into the buffer that
 *     viewer's datagram occupies in the current sendmmsg batch;
 *   - encrypt the payload in place with AES-128-GCM through OpenSSL's EVP API, the RTP header
 *     as additional authenticated data, and append the 16-byte tag (the shape of SRTP
 *     AEAD_AES_128_GCM, RFC 7714: IV = salt XOR (0 | SSRC | ROC | SEQ)); one EVP context per
 *     viewer, keyed once at set-up, only the IV changes per packet;
 *   - send the datagrams with sendmmsg(2), up to 64 per call, from one non-blocking socket to
 *     receiving sockets bound on 127.0.0.1 (viewer i -> receiver i % K, K <= 64). The
 *     receivers are never read: once their buffers are full the kernel drops, as in
 *     bench/fanout.py without --drain.
 *
 * bench/fanout.py (--modes ...,probe) and `relaycast bench --ramp` (on the server's core, after
 * the ramp) compile and run it through relaycast/loadgen/probe.py.
 *
 * One warm-up run, then REPEATS timed runs of PACKETS packets; each run's wall time divided by
 * PACKETS x N. Prints the runs, the median CPU time and, last,
 * probe_us_per_packet_per_viewer=<median µs>.
 *
 *     gcc -O2 -Wall -o limit_probe src/relaycast/loadgen/limit_probe.c -lcrypto
 *     ./limit_probe -n 200 -p 750 -r 5 -k 64 -s 1150
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define RTP_HEADER 12
#define TAG 16
#define KEY_LEN 16
#define SALT_LEN 12
#define BUF_SIZE 2048
#define BATCH 64
#define MAX_RECEIVERS 64
#define MAX_RUNS 101

typedef struct {
    EVP_CIPHER_CTX *ctx;
    unsigned char salt[SALT_LEN];
    uint32_t ssrc;
    uint32_t ts_offset;
    uint32_t index_offset; /* added to the source's packet index (ROC << 16 | SEQ) */
    struct sockaddr_in *addr;
} viewer_t;

static unsigned char buffers[BATCH][BUF_SIZE];
static struct mmsghdr msgs[BATCH];
static struct iovec iov[BATCH];
static unsigned long long send_errors;

static void
die(const char *what)
{
    fprintf(stderr, "limit_probe: %s\n", what);
    exit(1);
}

static double
now_ns(clockid_t clock)
{
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double
median(double *values, int n)
{
    qsort(values, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2;
}

/* Header + payload into buf, payload encrypted in place, tag appended; returns the length. */
static size_t
protect(viewer_t *v, unsigned char *buf, const unsigned char *payload, size_t payload_len,
        uint32_t src_index, uint32_t src_ts, int marker)
{
    uint32_t index = src_index + v->index_offset;
    uint16_t seq = (uint16_t)index;
    uint32_t roc = index >> 16;
    uint32_t ts = src_ts + v->ts_offset;
    unsigned char iv[SALT_LEN];
    int len;

    buf[0] = 0x80;
    buf[1] = (unsigned char)((marker ? 0x80 : 0) | 96);
    buf[2] = (unsigned char)(seq >> 8);
    buf[3] = (unsigned char)seq;
    buf[4] = (unsigned char)(ts >> 24);
    buf[5] = (unsigned char)(ts >> 16);
    buf[6] = (unsigned char)(ts >> 8);
    buf[7] = (unsigned char)ts;
    buf[8] = (unsigned char)(v->ssrc >> 24);
    buf[9] = (unsigned char)(v->ssrc >> 16);
    buf[10] = (unsigned char)(v->ssrc >> 8);
    buf[11] = (unsigned char)v->ssrc;
    memcpy(buf + RTP_HEADER, payload, payload_len);

    /* RFC 7714 §8.1: 2 zero bytes, SSRC, ROC, SEQ, XOR the 12-byte salt */
    iv[0] = v->salt[0];
    iv[1] = v->salt[1];
    memcpy(iv + 2, buf + 8, 4);
    iv[6] = (unsigned char)(roc >> 24);
    iv[7] = (unsigned char)(roc >> 16);
    iv[8] = (unsigned char)(roc >> 8);
    iv[9] = (unsigned char)roc;
    iv[10] = buf[2];
    iv[11] = buf[3];
    for (int i = 2; i < SALT_LEN; i++)
        iv[i] ^= v->salt[i];

    if (EVP_EncryptInit_ex(v->ctx, NULL, NULL, NULL, iv) != 1 ||
        EVP_EncryptUpdate(v->ctx, NULL, &len, buf, RTP_HEADER) != 1 ||
        EVP_EncryptUpdate(v->ctx, buf + RTP_HEADER, &len, buf + RTP_HEADER, (int)payload_len) != 1 ||
        EVP_EncryptFinal_ex(v->ctx, buf + RTP_HEADER + len, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(v->ctx, EVP_CTRL_GCM_GET_TAG, TAG, buf + RTP_HEADER + payload_len) != 1)
        die("AES-GCM encryption failed");
    return RTP_HEADER + payload_len + TAG;
}

static void
flush(int fd, int n)
{
    int start = 0;
    while (start < n) {
        int sent = sendmmsg(fd, &msgs[start], (unsigned int)(n - start), 0);
        if (sent < 0 && errno == EINTR)
            continue;
        if (sent <= 0) { /* the first datagram failed: drop it, carry on */
            send_errors++;
            start++;
            continue;
        }
        start += sent;
    }
}

/* One source packet to every viewer. */
static void
fan_out(viewer_t *viewers, int count, int fd, const unsigned char *payload, size_t payload_len,
        uint32_t src_index, uint32_t src_ts, int marker)
{
    int pending = 0;
    for (int i = 0; i < count; i++) {
        viewer_t *v = &viewers[i];
        iov[pending].iov_len =
            protect(v, buffers[pending], payload, payload_len, src_index, src_ts, marker);
        msgs[pending].msg_hdr.msg_name = v->addr;
        pending++;
        if (pending == BATCH) {
            flush(fd, pending);
            pending = 0;
        }
    }
    if (pending)
        flush(fd, pending);
}

/* Decrypt one protected packet with a fresh context: the probe encrypts what it claims to. */
static void
self_check(viewer_t *v, const unsigned char *key, const unsigned char *payload, size_t len)
{
    unsigned char buf[BUF_SIZE], plain[BUF_SIZE], iv[SALT_LEN] = {0};
    size_t total = protect(v, buf, payload, len, 0x12345, 90000, 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int out, ok;
    uint16_t seq = (uint16_t)(0x12345 + v->index_offset);
    uint32_t roc = (0x12345 + v->index_offset) >> 16;

    memcpy(iv + 2, buf + 8, 4);
    iv[6] = (unsigned char)(roc >> 24);
    iv[7] = (unsigned char)(roc >> 16);
    iv[8] = (unsigned char)(roc >> 8);
    iv[9] = (unsigned char)roc;
    iv[10] = (unsigned char)(seq >> 8);
    iv[11] = (unsigned char)seq;
    for (int i = 0; i < SALT_LEN; i++)
        iv[i] ^= v->salt[i];
    ok = ctx != NULL && total == RTP_HEADER + len + TAG &&
         EVP_DecryptInit_ex(ctx, EVP_aes_128_gcm(), NULL, key, iv) == 1 &&
         EVP_DecryptUpdate(ctx, NULL, &out, buf, RTP_HEADER) == 1 &&
         EVP_DecryptUpdate(ctx, plain, &out, buf + RTP_HEADER, (int)len) == 1 &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, TAG, buf + RTP_HEADER + len) == 1 &&
         EVP_DecryptFinal_ex(ctx, plain + out, &out) == 1 && memcmp(plain, payload, len) == 0;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        die("self-check failed: a protected packet does not decrypt to its payload");
}

static long
arg_long(const char *text, long lo, long hi, const char *name)
{
    char *end;
    long value = strtol(text, &end, 10);
    if (*text == '\0' || *end != '\0' || value < lo || value > hi) {
        fprintf(stderr, "limit_probe: %s must be %ld..%ld, got %s\n", name, lo, hi, text);
        exit(2);
    }
    return value;
}

int
main(int argc, char **argv)
{
    int count = 200, packets = 750, repeats = 5, receivers = 64, payload_len = 1150, opt;
    unsigned char payload[BUF_SIZE];
    struct sockaddr_in addrs[MAX_RECEIVERS];
    int rx[MAX_RECEIVERS];
    double runs[MAX_RUNS], cpu_runs[MAX_RUNS];
    viewer_t *viewers;
    int fd, sndbuf = 8 * 1024 * 1024;
    uint32_t src_index = 1, src_ts = 0;

    while ((opt = getopt(argc, argv, "n:p:r:k:s:")) != -1) {
        switch (opt) {
        case 'n': count = (int)arg_long(optarg, 1, 1000000, "-n viewers"); break;
        case 'p': packets = (int)arg_long(optarg, 1, 100000000, "-p packets per run"); break;
        case 'r': repeats = (int)arg_long(optarg, 1, MAX_RUNS, "-r repeats"); break;
        case 'k': receivers = (int)arg_long(optarg, 1, MAX_RECEIVERS, "-k receivers"); break;
        case 's':
            payload_len = (int)arg_long(optarg, 1, BUF_SIZE - RTP_HEADER - TAG, "-s payload");
            break;
        default:
            fprintf(stderr, "usage: %s [-n viewers] [-p packets] [-r repeats] "
                            "[-k receivers] [-s payload bytes]\n", argv[0]);
            return 2;
        }
    }
    if (receivers > count)
        receivers = count;

    for (int i = 0; i < receivers; i++) {
        socklen_t len = sizeof(addrs[i]);
        rx[i] = socket(AF_INET, SOCK_DGRAM, 0);
        memset(&addrs[i], 0, sizeof(addrs[i]));
        addrs[i].sin_family = AF_INET;
        addrs[i].sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (rx[i] < 0 || bind(rx[i], (struct sockaddr *)&addrs[i], sizeof(addrs[i])) < 0 ||
            getsockname(rx[i], (struct sockaddr *)&addrs[i], &len) < 0)
            die("cannot bind a receiving socket on 127.0.0.1");
    }
    fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0)
        die("cannot open the sending socket");
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)); /* capped, not fatal */
    if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) < 0)
        die("cannot make the sending socket non-blocking");

    viewers = calloc((size_t)count, sizeof(viewer_t));
    if (viewers == NULL)
        die("out of memory");
    if (RAND_bytes(payload, payload_len) != 1)
        die("RAND_bytes failed");
    for (int i = 0; i < count; i++) {
        unsigned char key[KEY_LEN], word[12];
        viewer_t *v = &viewers[i];
        if (RAND_bytes(key, KEY_LEN) != 1 || RAND_bytes(v->salt, SALT_LEN) != 1 ||
            RAND_bytes(word, sizeof(word)) != 1)
            die("RAND_bytes failed");
        v->ssrc = ((uint32_t)word[0] << 24 | (uint32_t)word[1] << 16 | (uint32_t)word[2] << 8 |
                   word[3]) | 1;
        v->ts_offset = (uint32_t)word[4] << 24 | (uint32_t)word[5] << 16 |
                       (uint32_t)word[6] << 8 | word[7];
        v->index_offset = (uint32_t)word[8] << 8 | word[9]; /* a random first sequence number */
        v->addr = &addrs[i % receivers];
        v->ctx = EVP_CIPHER_CTX_new();
        if (v->ctx == NULL ||
            EVP_EncryptInit_ex(v->ctx, EVP_aes_128_gcm(), NULL, NULL, NULL) != 1 ||
            EVP_CIPHER_CTX_ctrl(v->ctx, EVP_CTRL_GCM_SET_IVLEN, SALT_LEN, NULL) != 1 ||
            EVP_EncryptInit_ex(v->ctx, NULL, NULL, key, NULL) != 1)
            die("cannot set up an AES-128-GCM context");
        if (i == 0)
            self_check(v, key, payload, (size_t)payload_len);
    }
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = buffers[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }

    for (int run = -1; run < repeats; run++) { /* run -1: warm-up */
        int n = run < 0 ? (packets < 200 ? packets : 200) : packets;
        double cpu = now_ns(CLOCK_THREAD_CPUTIME_ID), start = now_ns(CLOCK_MONOTONIC);
        for (int p = 0; p < n; p++, src_index++) {
            if (p % 9 == 0) /* ~9 packets of 1,150 B per 2.5 Mbps / 30 fps frame */
                src_ts += 3000;
            fan_out(viewers, count, fd, payload, (size_t)payload_len, src_index, src_ts,
                    p % 9 == 8);
        }
        if (run >= 0) {
            runs[run] = (now_ns(CLOCK_MONOTONIC) - start) / 1e3 / ((double)n * count);
            cpu_runs[run] = (now_ns(CLOCK_THREAD_CPUTIME_ID) - cpu) / 1e3 / ((double)n * count);
        }
    }

    printf("viewers=%d packets=%d payload=%d receivers=%d send_errors=%llu\n", count, packets,
           payload_len, receivers, send_errors);
    printf("runs_us_per_packet_per_viewer=");
    for (int i = 0; i < repeats; i++)
        printf("%s%.4f", i ? "," : "", runs[i]);
    printf("\ncpu_us_per_packet_per_viewer=%.4f\n", median(cpu_runs, repeats));
    printf("probe_us_per_packet_per_viewer=%.4f\n", median(runs, repeats));

    for (int i = 0; i < count; i++)
        EVP_CIPHER_CTX_free(viewers[i].ctx);
    free(viewers);
    for (int i = 0; i < receivers; i++)
        close(rx[i]);
    close(fd);
    return 0;
}
