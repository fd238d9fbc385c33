/*
 * relaycast.loadgen._receiver: the load generator's receive path in C.
 *
 * One Receiver holds the sockets of many lightweight WHEP viewers (slots) in an epoll set of
 * its own; the worker's asyncio loop watches that one descriptor. Receiver.drain() then, with
 * the GIL released: asks epoll which sockets are readable, reads each with recvmmsg(2) (up to
 * BATCH datagrams per call, the kernel's SO_TIMESTAMPNS receive time per datagram),
 * authenticates and decrypts every SRTP packet in place with libsrtp's srtp_unprotect (the
 * address and the srtp_t contexts come from pylibsrtp, passed in as integers, as _fanout.c does
 * for srtp_protect: this module links neither libsrtp nor OpenSSL), and appends to the slot's
 * logs: crc32 of the payload, its length, the arrival time, (arrival, RTP timestamp) of every
 * video packet with the marker bit, plus per-SSRC extended sequence numbers (RFC 3550 A.1),
 * the first packet and the first complete keyframe.
 *
 * Everything that is not SRTP (STUN, DTLS) and SRTCP is handed back to Python as bytes, with
 * the NACKs the sequence bookkeeping asks for (gaps of 2..64 on a video SSRC, RFC 4585 §6.2.1).
 *
 * The semantics are those of the pure-Python reference, relaycast/loadgen/receive_log.py
 * (ReceiveLog), packet for packet; tests/unit/test_loadgen_receiver.py checks both give the same
 * logs from the same datagrams. Every read of a packet and every write into a log is
 * bounds-checked; the logs grow with PyMem_RawRealloc (no GIL needed).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <stdint.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define HAVE_CLMUL_CODE 1
#else
#define HAVE_CLMUL_CODE 0
#endif
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define BUF_SIZE 2048        /* client_transport.py: recvmsg(2048) */
#define BATCH 64             /* datagrams per recvmmsg */
#define MAX_EVENTS 256       /* sockets per epoll_wait */
#define MAX_STREAMS 8        /* SSRCs tracked per viewer (receive_log.MAX_STREAMS) */
#define NACK_MAX_GAP 64      /* receive_log.NACK_MAX_GAP */
#define MAX_SLOTS (1 << 20)
#define CONTROL_SIZE 64      /* >= CMSG_SPACE(sizeof(struct timespec)) */

#define SRTP_REPLAY_FAIL 9   /* srtp_err_status_replay_fail */
#define SRTP_REPLAY_OLD 10   /* srtp_err_status_replay_old */

enum { KIND_OTHER = 0, KIND_VIDEO = 1, KIND_AUDIO = 2 };
enum { CODEC_NONE = 0, CODEC_VP8 = 1, CODEC_H264 = 2 };

/* libsrtp 2: srtp_err_status_t srtp_unprotect(srtp_t ctx, void *srtp_hdr, int *len_ptr) */
typedef int (*unprotect_fn)(void *ctx, void *srtp, int *len);
/* zlib: uLong crc32(uLong crc, const Bytef *buf, uInt len) */
typedef unsigned long (*crc32_fn)(unsigned long crc, const unsigned char *buf, unsigned int len);

/* A growable array of fixed-size items, raw allocator (usable without the GIL). */
typedef struct {
    unsigned char *data;
    size_t count;
    size_t capacity;
} vec_t;

static int
vec_reserve(vec_t *v, size_t item, size_t extra)
{
    size_t need, capacity;
    unsigned char *grown;
    if (extra > SIZE_MAX / item - v->count)
        return -1;
    need = v->count + extra;
    if (need <= v->capacity)
        return 0;
    capacity = v->capacity ? v->capacity : 256;
    while (capacity < need) {
        if (capacity > SIZE_MAX / 2 / item)
            return -1;
        capacity *= 2;
    }
    grown = PyMem_RawRealloc(v->data, capacity * item);
    if (grown == NULL)
        return -1;
    v->data = grown;
    v->capacity = capacity;
    return 0;
}

static int
vec_push(vec_t *v, size_t item, const void *value)
{
    if (vec_reserve(v, item, 1) < 0)
        return -1;
    memcpy(v->data + v->count * item, value, item);
    v->count++;
    return 0;
}

static void
vec_free(vec_t *v)
{
    PyMem_RawFree(v->data);
    v->data = NULL;
    v->count = v->capacity = 0;
}

typedef struct {
    uint32_t ssrc;
    uint8_t kind;
    int64_t base;
    int64_t max_ext;
    uint64_t received;
} stream_t;

typedef struct {
    int fd;     /* -1: removed */
    void *ctx;  /* the inbound srtp_t */
    uint8_t codec;
    uint8_t kinds[128];
    int nstreams;
    stream_t streams[MAX_STREAMS];
    int64_t first_packet_ns;
    int64_t first_key_start_ns;
    int64_t first_key_ns;
    uint32_t first_key_ts;
    int have_key_ts;
    /* counters */
    uint64_t datagrams;
    uint64_t bytes_in;
    uint64_t auth_failures;
    uint64_t replays;
    uint64_t malformed;
    uint64_t untracked;
    uint64_t log_failures;
    /* logs */
    vec_t crc;      /* uint32 */
    vec_t length;   /* uint16 */
    vec_t t_ns;     /* int64 */
    vec_t frame_t;  /* int64 */
    vec_t frame_ts; /* uint32 */
} slot_t;

/* a datagram handed back to Python: bytes [offset, offset + length) of Receiver.back_data */
typedef struct {
    int32_t slot;
    uint32_t length;
    size_t offset;
} back_t;

typedef struct {
    int32_t slot;
    uint32_t ssrc;
    int64_t first;
    int32_t count;
} nack_t;

typedef struct {
    PyObject_HEAD
    unprotect_fn unprotect;
    crc32_fn crc32;
    int epfd;
    int busy;
    slot_t **slots;
    Py_ssize_t count;
    Py_ssize_t capacity;
    int alloc_failed; /* of the current call */
    vec_t back;       /* back_t */
    vec_t back_data;  /* bytes */
    vec_t nacks;      /* nack_t */
    unsigned char *buffers; /* BATCH * BUF_SIZE */
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    union {
        struct cmsghdr align;
        unsigned char bytes[CONTROL_SIZE];
    } control[BATCH];
    struct epoll_event events[MAX_EVENTS];
} Receiver;

/* -- crc32 (zlib's polynomial), slicing-by-8, for when zlib's own is not passed in ---------- */

static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320U ^ (c >> 1) : c >> 1;
        crc_table[0][n] = c;
    }
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = crc_table[0][n];
        for (int k = 1; k < 8; k++) {
            c = crc_table[0][c & 0xFF] ^ (c >> 8);
            crc_table[k][n] = c;
        }
    }
}

static uint32_t
crc32_builtin(const unsigned char *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFU;
    while (n >= 8) {
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                           (uint32_t)p[3] << 24);
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        c = crc_table[7][lo & 0xFF] ^ crc_table[6][(lo >> 8) & 0xFF] ^
            crc_table[5][(lo >> 16) & 0xFF] ^ crc_table[4][lo >> 24] ^
            crc_table[3][hi & 0xFF] ^ crc_table[2][(hi >> 8) & 0xFF] ^
            crc_table[1][(hi >> 16) & 0xFF] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFU;
}

/* Continue a crc (pre- and post-inverted like zlib's) over p[0..n) with the table. */
static uint32_t
crc32_table_update(uint32_t crc, const unsigned char *p, size_t n)
{
    uint32_t c = crc ^ 0xFFFFFFFFU;
    while (n--)
        c = crc_table[0][(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFU;
}

static int use_clmul = 0;

#if HAVE_CLMUL_CODE
/*
 * CRC-32 (reflected, zlib's polynomial) by carry-less multiplication: fold 64 bytes at a time,
 * then to 128 and 64 bits, then a Barrett reduction (Gopal et al., "Fast CRC Computation for
 * Generic Polynomials Using PCLMULQDQ Instruction", Intel 2009; the constants are those of
 * Linux's crc32-pclmul and Chromium's zlib). ``len`` >= 64 and a multiple of 16; ``crc`` is
 * the internal (inverted) state, as is the result.
 */
__attribute__((target("pclmul,sse4.1"))) static uint32_t
crc32_clmul_blocks(const unsigned char *buf, size_t len, uint32_t crc)
{
    static const uint64_t k1k2[2] __attribute__((aligned(16))) = {0x0154442bd4ULL,
                                                                   0x01c6e41596ULL};
    static const uint64_t k3k4[2] __attribute__((aligned(16))) = {0x01751997d0ULL,
                                                                   0x00ccaa009eULL};
    static const uint64_t k5k0[2] __attribute__((aligned(16))) = {0x0163cd6124ULL, 0};
    static const uint64_t poly[2] __attribute__((aligned(16))) = {0x01db710641ULL,
                                                                   0x01f7011641ULL};
    __m128i x0, x1, x2, x3, x4, x5, x6, x7, x8;

    x1 = _mm_loadu_si128((const __m128i *)(buf + 0x00));
    x2 = _mm_loadu_si128((const __m128i *)(buf + 0x10));
    x3 = _mm_loadu_si128((const __m128i *)(buf + 0x20));
    x4 = _mm_loadu_si128((const __m128i *)(buf + 0x30));
    x1 = _mm_xor_si128(x1, _mm_cvtsi32_si128((int)crc));
    x0 = _mm_load_si128((const __m128i *)k1k2);
    buf += 64;
    len -= 64;
    while (len >= 64) {
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x6 = _mm_clmulepi64_si128(x2, x0, 0x00);
        x7 = _mm_clmulepi64_si128(x3, x0, 0x00);
        x8 = _mm_clmulepi64_si128(x4, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x2 = _mm_clmulepi64_si128(x2, x0, 0x11);
        x3 = _mm_clmulepi64_si128(x3, x0, 0x11);
        x4 = _mm_clmulepi64_si128(x4, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x5), _mm_loadu_si128((const __m128i *)(buf + 0x00)));
        x2 = _mm_xor_si128(_mm_xor_si128(x2, x6), _mm_loadu_si128((const __m128i *)(buf + 0x10)));
        x3 = _mm_xor_si128(_mm_xor_si128(x3, x7), _mm_loadu_si128((const __m128i *)(buf + 0x20)));
        x4 = _mm_xor_si128(_mm_xor_si128(x4, x8), _mm_loadu_si128((const __m128i *)(buf + 0x30)));
        buf += 64;
        len -= 64;
    }
    /* fold 4 x 128 bits into 128 */
    x0 = _mm_load_si128((const __m128i *)k3k4);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x3), x5);
    x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
    x1 = _mm_xor_si128(_mm_xor_si128(x1, x4), x5);
    /* whole 16-byte blocks left */
    while (len >= 16) {
        x2 = _mm_loadu_si128((const __m128i *)buf);
        x5 = _mm_clmulepi64_si128(x1, x0, 0x00);
        x1 = _mm_clmulepi64_si128(x1, x0, 0x11);
        x1 = _mm_xor_si128(_mm_xor_si128(x1, x2), x5);
        buf += 16;
        len -= 16;
    }
    /* 128 -> 64 bits */
    x2 = _mm_clmulepi64_si128(x1, x0, 0x10);
    x3 = _mm_setr_epi32(~0, 0, ~0, 0);
    x1 = _mm_srli_si128(x1, 8);
    x1 = _mm_xor_si128(x1, x2);
    x0 = _mm_loadl_epi64((const __m128i *)k5k0);
    x2 = _mm_srli_si128(x1, 4);
    x1 = _mm_and_si128(x1, x3);
    x1 = _mm_clmulepi64_si128(x1, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    /* Barrett reduction to 32 bits */
    x0 = _mm_load_si128((const __m128i *)poly);
    x2 = _mm_and_si128(x1, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x10);
    x2 = _mm_and_si128(x2, x3);
    x2 = _mm_clmulepi64_si128(x2, x0, 0x00);
    x1 = _mm_xor_si128(x1, x2);
    return (uint32_t)_mm_extract_epi32(x1, 1);
}
#endif

/* The built-in crc32: carry-less multiplication for the bulk when the CPU has it. */
static uint32_t
crc32_fast(const unsigned char *p, size_t n, int clmul)
{
#if HAVE_CLMUL_CODE
    if (clmul && n >= 64) {
        size_t bulk = n & ~(size_t)15;
        uint32_t crc = ~crc32_clmul_blocks(p, bulk, 0xFFFFFFFFU);
        return crc32_table_update(crc, p + bulk, n - bulk);
    }
#endif
    if (clmul)
        return crc32_table_update(0, p, n);
    return crc32_builtin(p, n);
}

static uint32_t
payload_crc(Receiver *self, const unsigned char *p, size_t n)
{
    if (self->crc32 != NULL)
        return (uint32_t)self->crc32(0, p, (unsigned int)n); /* n < BUF_SIZE */
    return crc32_fast(p, n, use_clmul);
}

/* -- keyframe starts, as relaycast/rtp/codecs.py is_keyframe_start ------------------------- */

static int
vp8_keyframe_start(const unsigned char *p, size_t n)
{
    size_t pos = 1;
    unsigned char b0;
    if (n < 1)
        return 0;
    b0 = p[0];
    if (!(b0 & 0x10) || (b0 & 0x07))
        return 0;
    if (b0 & 0x80) {
        unsigned char x;
        if (n < 2)
            return 0;
        x = p[1];
        pos = 2;
        if (x & 0x80) {
            if (pos >= n)
                return 0;
            pos += (p[pos] & 0x80) ? 2 : 1;
        }
        if (x & 0x40)
            pos += 1;
        if (x & 0x30)
            pos += 1;
    }
    if (pos >= n)
        return 0;
    return !(p[pos] & 0x01);
}

static int
h264_unit_starts(const unsigned char *p, int nal, size_t pos, size_t end)
{
    if (nal == 7)
        return 1;
    return nal == 5 && pos + 1 < end && (p[pos + 1] & 0x80);
}

static int
h264_keyframe_start(const unsigned char *p, size_t n)
{
    int nal;
    if (n == 0)
        return 0;
    nal = p[0] & 0x1F;
    if (nal >= 1 && nal <= 23)
        return h264_unit_starts(p, nal, 0, n);
    if (nal == 24) { /* STAP-A */
        size_t pos = 1;
        while (pos + 2 < n) {
            size_t size = ((size_t)p[pos] << 8) | p[pos + 1];
            pos += 2;
            if (size == 0 || pos + size > n)
                break;
            if (h264_unit_starts(p, p[pos] & 0x1F, pos, n))
                return 1;
            pos += size;
        }
        return 0;
    }
    if (nal == 28) { /* FU-A */
        unsigned char fu;
        if (n < 2)
            return 0;
        fu = p[1];
        if (!(fu & 0x80))
            return 0;
        if ((fu & 0x1F) == 7)
            return 1;
        return (fu & 0x1F) == 5 && n > 2 && (p[2] & 0x80);
    }
    return 0;
}

static int
keyframe_start(int codec, const unsigned char *p, size_t n)
{
    if (codec == CODEC_VP8)
        return vp8_keyframe_start(p, n);
    if (codec == CODEC_H264)
        return h264_keyframe_start(p, n);
    return 0;
}

/* -- per packet (no GIL) ------------------------------------------------------------------- */

static void
log_push(Receiver *self, slot_t *slot, vec_t *v, size_t item, const void *value)
{
    if (vec_push(v, item, value) < 0) {
        slot->log_failures++;
        self->alloc_failed = 1;
    }
}

/* An authenticated RTP packet, ``plain[0..len)``: receive_log.ReceiveLog.on_rtp. */
static void
bookkeep(Receiver *self, Py_ssize_t index, slot_t *slot, const unsigned char *plain, size_t len,
         int64_t t)
{
    size_t offset, end;
    const unsigned char *payload;
    size_t payload_len;
    uint32_t crc, ts, ssrc;
    uint16_t seq, length16;
    int marker, pt;
    stream_t *state = NULL;

    if (len < 12) {
        slot->malformed++;
        return;
    }
    offset = 12 + 4 * (size_t)(plain[0] & 0x0F);
    if (plain[0] & 0x10) {
        if (offset + 4 > len) {
            slot->malformed++;
            return;
        }
        offset += 4 + 4 * (((size_t)plain[offset + 2] << 8) | plain[offset + 3]);
    }
    end = len;
    if (plain[0] & 0x20) {
        size_t pad = plain[len - 1];
        if (pad > len) {
            slot->malformed++;
            return;
        }
        end = len - pad;
    }
    if (offset > end) {
        slot->malformed++;
        return;
    }
    payload = plain + offset;
    payload_len = end - offset;
    marker = plain[1] & 0x80;
    pt = plain[1] & 0x7F;
    seq = (uint16_t)((plain[2] << 8) | plain[3]);
    ts = (uint32_t)plain[4] << 24 | (uint32_t)plain[5] << 16 | (uint32_t)plain[6] << 8 | plain[7];
    ssrc = (uint32_t)plain[8] << 24 | (uint32_t)plain[9] << 16 | (uint32_t)plain[10] << 8 |
           plain[11];

    crc = payload_crc(self, payload, payload_len);
    length16 = (uint16_t)payload_len; /* payload_len < BUF_SIZE */
    if (vec_reserve(&slot->crc, 4, 1) < 0 || vec_reserve(&slot->length, 2, 1) < 0 ||
        vec_reserve(&slot->t_ns, 8, 1) < 0) {
        slot->log_failures++;
        self->alloc_failed = 1;
        return;
    }
    vec_push(&slot->crc, 4, &crc);
    vec_push(&slot->length, 2, &length16);
    vec_push(&slot->t_ns, 8, &t);

    for (int i = 0; i < slot->nstreams; i++) {
        if (slot->streams[i].ssrc == ssrc) {
            state = &slot->streams[i];
            break;
        }
    }
    if (state == NULL) {
        if (slot->nstreams >= MAX_STREAMS) {
            slot->untracked++;
            return;
        }
        state = &slot->streams[slot->nstreams++];
        state->ssrc = ssrc;
        state->kind = slot->kinds[pt];
        state->base = state->max_ext = seq;
        state->received = 0;
        if (!slot->first_packet_ns)
            slot->first_packet_ns = t;
    } else {
        int64_t prev = state->max_ext;
        int64_t ext = prev + (int64_t)(((int64_t)seq - prev + 0x8000) & 0xFFFF) - 0x8000;
        if (ext > prev) {
            int64_t gap = ext - prev;
            if (gap > 1 && state->kind == KIND_VIDEO && gap <= NACK_MAX_GAP) {
                nack_t nack = {(int32_t)index, ssrc, prev + 1, (int32_t)(gap - 1)};
                if (vec_push(&self->nacks, sizeof(nack_t), &nack) < 0)
                    self->alloc_failed = 1;
            }
            state->max_ext = ext;
        }
    }
    state->received++;
    if (state->kind == KIND_VIDEO) {
        if (marker) {
            log_push(self, slot, &slot->frame_t, 8, &t);
            log_push(self, slot, &slot->frame_ts, 4, &ts);
        }
        if (!slot->first_key_ns) {
            if (!slot->have_key_ts) {
                if (keyframe_start(slot->codec, payload, payload_len)) {
                    slot->have_key_ts = 1;
                    slot->first_key_ts = ts;
                    slot->first_key_start_ns = t;
                }
            } else if (ts == slot->first_key_ts && marker) {
                slot->first_key_ns = t;
            }
        }
    }
}

static void
hand_back(Receiver *self, Py_ssize_t index, const unsigned char *data, size_t len)
{
    back_t back = {(int32_t)index, (uint32_t)len, self->back_data.count};
    if (vec_reserve(&self->back_data, 1, len) < 0 || vec_reserve(&self->back, sizeof(back_t), 1) < 0) {
        self->alloc_failed = 1;
        return;
    }
    if (len)
        memcpy(self->back_data.data + self->back_data.count, data, len);
    self->back_data.count += len;
    vec_push(&self->back, sizeof(back_t), &back);
}

/* One datagram of slot ``index``; ``buf`` is writable (decrypted in place). ``truncated``: it
 * was longer than BUF_SIZE (cannot authenticate). client_transport.ClientTransport._readable. */
static void
process(Receiver *self, Py_ssize_t index, unsigned char *buf, size_t len, int truncated,
        int64_t t)
{
    slot_t *slot = self->slots[index];
    unsigned char first = len ? buf[0] : 0;
    slot->datagrams++;
    slot->bytes_in += len;
    if (first > 127 && first < 192) {
        int plain_len, status;
        if (len >= 2 && buf[1] > 191 && buf[1] < 224) { /* SRTCP (RFC 5761 §4) */
            hand_back(self, index, buf, len);
            return;
        }
        if (len < 12 || truncated || slot->ctx == NULL) {
            slot->auth_failures++;
            return;
        }
        plain_len = (int)len;
        status = self->unprotect(slot->ctx, buf, &plain_len);
        if (status == SRTP_REPLAY_FAIL || status == SRTP_REPLAY_OLD) {
            slot->replays++;
            return;
        }
        if (status != 0 || plain_len < 0 || (size_t)plain_len > len) {
            slot->auth_failures++;
            return;
        }
        bookkeep(self, index, slot, buf, (size_t)plain_len, t);
    } else if (first < 4 || (first > 19 && first < 64)) { /* STUN, DTLS (RFC 7983) */
        hand_back(self, index, buf, len);
    }
}

static int64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t
arrival(struct msghdr *hdr)
{
    for (struct cmsghdr *c = CMSG_FIRSTHDR(hdr); c != NULL; c = CMSG_NXTHDR(hdr, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct timespec))) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        }
    }
    return now_ns();
}

/* Read one batch from slot ``index``; returns the datagrams read (0: none or an error). */
static int
read_batch(Receiver *self, Py_ssize_t index)
{
    slot_t *slot = self->slots[index];
    int got;
    for (int i = 0; i < BATCH; i++) {
        struct msghdr *hdr = &self->msgs[i].msg_hdr;
        self->iov[i].iov_base = self->buffers + (size_t)i * BUF_SIZE;
        self->iov[i].iov_len = BUF_SIZE;
        memset(hdr, 0, sizeof(*hdr));
        hdr->msg_iov = &self->iov[i];
        hdr->msg_iovlen = 1;
        hdr->msg_control = self->control[i].bytes;
        hdr->msg_controllen = CONTROL_SIZE;
        self->msgs[i].msg_len = 0;
    }
    do {
        got = recvmmsg(slot->fd, self->msgs, BATCH, MSG_DONTWAIT, NULL);
    } while (got < 0 && errno == EINTR);
    if (got <= 0)
        return 0; /* EAGAIN, or an ICMP error on the connected socket: as Python, stop */
    for (int i = 0; i < got; i++) {
        struct msghdr *hdr = &self->msgs[i].msg_hdr;
        size_t len = self->msgs[i].msg_len;
        int truncated = (hdr->msg_flags & MSG_TRUNC) != 0;
        if (len > BUF_SIZE) {
            len = BUF_SIZE;
            truncated = 1;
        }
        process(self, index, self->buffers + (size_t)i * BUF_SIZE, len, truncated,
                arrival(hdr));
    }
    return got;
}

/* Drain readable sockets until epoll has nothing or ``budget`` datagrams were read. */
static uint64_t
run_drain(Receiver *self, uint64_t budget)
{
    uint64_t total = 0;
    while (total < budget) {
        int n;
        do {
            n = epoll_wait(self->epfd, self->events, MAX_EVENTS, 0);
        } while (n < 0 && errno == EINTR);
        if (n <= 0)
            break;
        for (int i = 0; i < n; i++) {
            uint32_t index = self->events[i].data.u32;
            if ((Py_ssize_t)index >= self->count || self->slots[index]->fd < 0)
                continue;
            total += (uint64_t)read_batch(self, (Py_ssize_t)index);
        }
    }
    return total;
}

/* -- Python face --------------------------------------------------------------------------- */

/* "O&" converter: a Python int in 0..2**64-1, else ValueError (never a silent wrap-around). */
static int
u64_arg(PyObject *obj, void *out)
{
    unsigned long long value;
    if (!PyLong_Check(obj)) {
        PyErr_SetString(PyExc_TypeError, "an int is required");
        return 0;
    }
    value = PyLong_AsUnsignedLongLong(obj);
    if (value == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "integer out of range");
        return 0;
    }
    *(unsigned long long *)out = value;
    return 1;
}

static int
check_busy(Receiver *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "receiver is draining in another thread");
        return -1;
    }
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "receiver is closed");
        return -1;
    }
    return 0;
}

static slot_t *
get_slot(Receiver *self, Py_ssize_t index)
{
    if (index < 0 || index >= self->count) {
        PyErr_SetString(PyExc_IndexError, "slot index out of range");
        return NULL;
    }
    return self->slots[index];
}

static int
Receiver_init(Receiver *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"unprotect", "crc32", NULL};
    unsigned long long unprotect, crc = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&|O&", kwlist, u64_arg, &unprotect, u64_arg,
                                     &crc))
        return -1;
    if (unprotect == 0) {
        PyErr_SetString(PyExc_ValueError, "srtp_unprotect address is NULL");
        return -1;
    }
    if (self->buffers != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Receiver already initialised");
        return -1;
    }
    self->unprotect = (unprotect_fn)(uintptr_t)unprotect;
    self->crc32 = crc ? (crc32_fn)(uintptr_t)crc : NULL;
    self->buffers = PyMem_Calloc(BATCH, BUF_SIZE);
    if (self->buffers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    self->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (self->epfd < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static PyObject *
Receiver_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Receiver *self = (Receiver *)PyType_GenericNew(type, args, kwds);
    if (self != NULL)
        self->epfd = -1;
    return (PyObject *)self;
}

static void
free_slot(slot_t *slot)
{
    vec_free(&slot->crc);
    vec_free(&slot->length);
    vec_free(&slot->t_ns);
    vec_free(&slot->frame_t);
    vec_free(&slot->frame_ts);
    PyMem_RawFree(slot);
}

static void
Receiver_dealloc(Receiver *self)
{
    if (self->epfd >= 0)
        close(self->epfd);
    for (Py_ssize_t i = 0; i < self->count; i++)
        free_slot(self->slots[i]);
    PyMem_Free(self->slots);
    PyMem_Free(self->buffers);
    vec_free(&self->back);
    vec_free(&self->back_data);
    vec_free(&self->nacks);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Receiver_len(Receiver *self)
{
    return self->count;
}

/* add(fd, ctx, codec, kinds) -> slot index; fd -1: not watched (feed() only) */
static PyObject *
Receiver_add(Receiver *self, PyObject *args)
{
    int fd, codec;
    unsigned long long ctx;
    Py_buffer kinds;
    slot_t *slot;
    if (!PyArg_ParseTuple(args, "iO&iy*", &fd, u64_arg, &ctx, &codec, &kinds))
        return NULL;
    if (check_busy(self) < 0)
        goto fail;
    if (ctx == 0) {
        PyErr_SetString(PyExc_ValueError, "NULL srtp context");
        goto fail;
    }
    if (codec < CODEC_NONE || codec > CODEC_H264) {
        PyErr_SetString(PyExc_ValueError, "codec must be 0 (none), 1 (VP8) or 2 (H.264)");
        goto fail;
    }
    if (kinds.len != 128) {
        PyErr_SetString(PyExc_ValueError, "kinds must be 128 bytes, one per payload type");
        goto fail;
    }
    if (self->count >= MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many slots in one receiver");
        goto fail;
    }
    if (self->count == self->capacity) {
        Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 64;
        slot_t **grown = PyMem_Realloc(self->slots, (size_t)capacity * sizeof(slot_t *));
        if (grown == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        self->slots = grown;
        self->capacity = capacity;
    }
    slot = PyMem_RawCalloc(1, sizeof(slot_t));
    if (slot == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    slot->fd = fd;
    slot->ctx = (void *)(uintptr_t)ctx;
    slot->codec = (uint8_t)codec;
    for (int i = 0; i < 128; i++) {
        unsigned char k = ((const unsigned char *)kinds.buf)[i];
        slot->kinds[i] = k <= KIND_AUDIO ? k : KIND_OTHER;
    }
    if (fd >= 0) {
        struct epoll_event ev;
        memset(&ev, 0, sizeof(ev));
        ev.events = EPOLLIN;
        ev.data.u32 = (uint32_t)self->count;
        if (epoll_ctl(self->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            PyMem_RawFree(slot);
            goto fail;
        }
    }
    PyBuffer_Release(&kinds);
    self->slots[self->count] = slot;
    return PyLong_FromSsize_t(self->count++);

fail:
    PyBuffer_Release(&kinds);
    return NULL;
}

/* remove(index): stop watching the socket and forget the srtp_t; the logs stay. */
static PyObject *
Receiver_remove(Receiver *self, PyObject *args)
{
    Py_ssize_t index;
    slot_t *slot;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "receiver is draining in another thread");
        return NULL;
    }
    if ((slot = get_slot(self, index)) == NULL)
        return NULL;
    if (slot->fd >= 0 && self->epfd >= 0)
        epoll_ctl(self->epfd, EPOLL_CTL_DEL, slot->fd, NULL); /* fails if already closed */
    slot->fd = -1;
    slot->ctx = NULL;
    Py_RETURN_NONE;
}

/* Build (handed back datagrams, nacks, datagrams read) and clear the queues. */
static PyObject *
results(Receiver *self, uint64_t datagrams)
{
    PyObject *back = NULL, *nacks = NULL, *result;
    const back_t *b = (const back_t *)self->back.data;
    const nack_t *k = (const nack_t *)self->nacks.data;
    int failed = self->alloc_failed;
    self->alloc_failed = 0;
    back = PyList_New((Py_ssize_t)self->back.count);
    nacks = PyList_New((Py_ssize_t)self->nacks.count);
    if (back == NULL || nacks == NULL)
        goto fail;
    for (size_t i = 0; i < self->back.count; i++) {
        /* y# with NULL gives None (an empty datagram before any other): b"" */
        const char *data =
            self->back_data.data ? (const char *)self->back_data.data + b[i].offset : "";
        PyObject *item = Py_BuildValue("(iy#)", (int)b[i].slot, data, (Py_ssize_t)b[i].length);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(back, (Py_ssize_t)i, item);
    }
    for (size_t i = 0; i < self->nacks.count; i++) {
        PyObject *item = Py_BuildValue("(iILi)", (int)k[i].slot, (unsigned int)k[i].ssrc,
                                       (long long)k[i].first, (int)k[i].count);
        if (item == NULL)
            goto fail;
        PyList_SET_ITEM(nacks, (Py_ssize_t)i, item);
    }
    self->back.count = self->back_data.count = self->nacks.count = 0;
    if (failed) {
        Py_DECREF(back);
        Py_DECREF(nacks);
        return PyErr_NoMemory();
    }
    result = Py_BuildValue("(NNK)", back, nacks, (unsigned long long)datagrams);
    return result;

fail:
    self->back.count = self->back_data.count = self->nacks.count = 0;
    Py_XDECREF(back);
    Py_XDECREF(nacks);
    return NULL;
}

/* drain(budget=65536) -> ([(slot, datagram)], [(slot, ssrc, first_ext, count)], datagrams) */
static PyObject *
Receiver_drain(Receiver *self, PyObject *args)
{
    unsigned long long budget = 65536;
    uint64_t total;
    if (!PyArg_ParseTuple(args, "|O&", u64_arg, &budget))
        return NULL;
    if (check_busy(self) < 0)
        return NULL;
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    total = run_drain(self, budget);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    return results(self, total);
}

/* feed(slot, datagram, arrival_ns): process one datagram as if read from the slot's socket. */
static PyObject *
Receiver_feed(Receiver *self, PyObject *args)
{
    Py_ssize_t index;
    Py_buffer data;
    long long t;
    size_t len;
    int truncated;
    if (!PyArg_ParseTuple(args, "ny*L", &index, &data, &t))
        return NULL;
    if (check_busy(self) < 0 || get_slot(self, index) == NULL) {
        PyBuffer_Release(&data);
        return NULL;
    }
    len = (size_t)data.len;
    truncated = len > BUF_SIZE;
    if (truncated)
        len = BUF_SIZE;
    memcpy(self->buffers, data.buf, len);
    PyBuffer_Release(&data);
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    process(self, index, self->buffers, len, truncated, (int64_t)t);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    return results(self, 1);
}

/* counts(slot) -> (datagrams, bytes_in, packets, auth_failures, replays, malformed, untracked,
 * log_failures) */
static PyObject *
Receiver_counts(Receiver *self, PyObject *args)
{
    Py_ssize_t index;
    slot_t *s;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if ((s = get_slot(self, index)) == NULL)
        return NULL;
    return Py_BuildValue("(KKKKKKKK)", (unsigned long long)s->datagrams,
                         (unsigned long long)s->bytes_in, (unsigned long long)s->t_ns.count,
                         (unsigned long long)s->auth_failures, (unsigned long long)s->replays,
                         (unsigned long long)s->malformed, (unsigned long long)s->untracked,
                         (unsigned long long)s->log_failures);
}

/* firsts(slot) -> (first_packet_ns, first_key_start_ns, first_key_ns) */
static PyObject *
Receiver_firsts(Receiver *self, PyObject *args)
{
    Py_ssize_t index;
    slot_t *s;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if ((s = get_slot(self, index)) == NULL)
        return NULL;
    return Py_BuildValue("(LLL)", (long long)s->first_packet_ns, (long long)s->first_key_start_ns,
                         (long long)s->first_key_ns);
}

/* streams(slot) -> [(ssrc, kind, base, max_ext, received)] in order of first arrival */
static PyObject *
Receiver_streams(Receiver *self, PyObject *args)
{
    Py_ssize_t index;
    slot_t *s;
    PyObject *list;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "receiver is draining in another thread");
        return NULL;
    }
    if ((s = get_slot(self, index)) == NULL)
        return NULL;
    list = PyList_New(s->nstreams);
    if (list == NULL)
        return NULL;
    for (int i = 0; i < s->nstreams; i++) {
        const stream_t *st = &s->streams[i];
        PyObject *item = Py_BuildValue("(IiLLK)", (unsigned int)st->ssrc, (int)st->kind,
                                       (long long)st->base, (long long)st->max_ext,
                                       (unsigned long long)st->received);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* logs(slot) -> (crc, length, t_ns, frame_t, frame_ts) as bytes in native byte order
 * (uint32, uint16, int64, int64, uint32 items) */
static PyObject *
Receiver_logs(Receiver *self, PyObject *args)
{
    Py_ssize_t index;
    slot_t *s;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "receiver is draining in another thread");
        return NULL;
    }
    if ((s = get_slot(self, index)) == NULL)
        return NULL;
    /* y# with NULL gives None: an empty log is b"" */
#define LOG_BYTES(v, item) (v.data ? (const char *)v.data : ""), (Py_ssize_t)(v.count * item)
    return Py_BuildValue("(y#y#y#y#y#)", LOG_BYTES(s->crc, 4), LOG_BYTES(s->length, 2),
                         LOG_BYTES(s->t_ns, 8), LOG_BYTES(s->frame_t, 8),
                         LOG_BYTES(s->frame_ts, 4));
#undef LOG_BYTES
}

static PyObject *
Receiver_fileno(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    if (self->epfd < 0) {
        PyErr_SetString(PyExc_ValueError, "receiver is closed");
        return NULL;
    }
    return PyLong_FromLong(self->epfd);
}

static PyObject *
Receiver_close(Receiver *self, PyObject *Py_UNUSED(ignored))
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "receiver is draining in another thread");
        return NULL;
    }
    if (self->epfd >= 0) {
        close(self->epfd);
        self->epfd = -1;
    }
    for (Py_ssize_t i = 0; i < self->count; i++) {
        self->slots[i]->fd = -1;
        self->slots[i]->ctx = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
mod_keyframe_start(PyObject *module, PyObject *args)
{
    int codec;
    Py_buffer data;
    int result;
    if (!PyArg_ParseTuple(args, "iy*", &codec, &data))
        return NULL;
    result = keyframe_start(codec, data.buf, (size_t)data.len);
    PyBuffer_Release(&data);
    return PyBool_FromLong(result);
}

static PyObject *
mod_crc32(PyObject *module, PyObject *args)
{
    Py_buffer data;
    uint32_t crc;
    int table = 0;
    if (!PyArg_ParseTuple(args, "y*|p", &data, &table))
        return NULL;
    crc = crc32_fast(data.buf, (size_t)data.len, table ? 0 : use_clmul);
    PyBuffer_Release(&data);
    return PyLong_FromUnsignedLong(crc);
}

static PyMethodDef Receiver_methods[] = {
    {"add", (PyCFunction)Receiver_add, METH_VARARGS,
     "add(fd, ctx, codec, kinds) -> slot index (fd -1: not watched, feed() only)"},
    {"remove", (PyCFunction)Receiver_remove, METH_VARARGS,
     "remove(index): stop watching its socket and forget its srtp_t; its logs stay"},
    {"drain", (PyCFunction)Receiver_drain, METH_VARARGS,
     "drain(budget=65536) -> ([(slot, datagram)], [(slot, ssrc, first_ext, count)], read)"},
    {"feed", (PyCFunction)Receiver_feed, METH_VARARGS,
     "feed(slot, datagram, arrival_ns) -> as drain(), for one datagram"},
    {"counts", (PyCFunction)Receiver_counts, METH_VARARGS,
     "counts(slot) -> (datagrams, bytes_in, packets, auth_failures, replays, malformed, "
     "untracked, log_failures)"},
    {"firsts", (PyCFunction)Receiver_firsts, METH_VARARGS,
     "firsts(slot) -> (first_packet_ns, first_key_start_ns, first_key_ns)"},
    {"streams", (PyCFunction)Receiver_streams, METH_VARARGS,
     "streams(slot) -> [(ssrc, kind, base, max_ext, received)]"},
    {"logs", (PyCFunction)Receiver_logs, METH_VARARGS,
     "logs(slot) -> (crc u32, length u16, t_ns i64, frame_t i64, frame_ts u32) as bytes"},
    {"fileno", (PyCFunction)Receiver_fileno, METH_NOARGS, "the epoll descriptor to watch"},
    {"close", (PyCFunction)Receiver_close, METH_NOARGS, "close the epoll descriptor"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Receiver_as_sequence = {
    .sq_length = (lenfunc)Receiver_len,
};

static PyTypeObject ReceiverType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "relaycast.loadgen._receiver.Receiver",
    .tp_basicsize = sizeof(Receiver),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The sockets of many load-generator viewers, drained by one call.",
    .tp_new = Receiver_new,
    .tp_init = (initproc)Receiver_init,
    .tp_dealloc = (destructor)Receiver_dealloc,
    .tp_methods = Receiver_methods,
    .tp_as_sequence = &Receiver_as_sequence,
};

static PyMethodDef module_methods[] = {
    {"keyframe_start", mod_keyframe_start, METH_VARARGS,
     "keyframe_start(codec, payload) -> bool (codec 1 VP8, 2 H.264), for tests"},
    {"crc32", mod_crc32, METH_VARARGS,
     "crc32(data, table=False) -> int: the built-in crc32 (carry-less multiplication when the "
     "CPU has it, else or with table=True slicing-by-8), for tests"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef receiver_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "relaycast.loadgen._receiver",
    .m_doc = "Native receive path of the load generator: recvmmsg + libsrtp unprotect + logs.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__receiver(void)
{
    PyObject *module;
    crc_init();
#if HAVE_CLMUL_CODE
    __builtin_cpu_init();
    use_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#endif
    if (PyType_Ready(&ReceiverType) < 0)
        return NULL;
    module = PyModule_Create(&receiver_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&ReceiverType);
    if (PyModule_AddObject(module, "Receiver", (PyObject *)&ReceiverType) < 0) {
        Py_DECREF(&ReceiverType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(module, "BUFFER_SIZE", BUF_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_STREAMS", MAX_STREAMS) < 0 ||
        PyModule_AddIntConstant(module, "NACK_MAX_GAP", NACK_MAX_GAP) < 0 ||
        PyModule_AddIntConstant(module, "KIND_VIDEO", KIND_VIDEO) < 0 ||
        PyModule_AddIntConstant(module, "KIND_AUDIO", KIND_AUDIO) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_VP8", CODEC_VP8) < 0 ||
        PyModule_AddIntConstant(module, "CODEC_H264", CODEC_H264) < 0 ||
        PyModule_AddIntConstant(module, "HAVE_CLMUL", use_clmul) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
