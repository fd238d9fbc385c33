/*
 * relaycast.native._fanout: the per-viewer part of Forwarder.forward in C.
 *
 * One Group holds the LIVE viewers (slots) of one Forwarder. Group.forward() takes one source
 * packet and, with the GIL released, for every slot: rewrites the RTP header (SSRC, payload
 * type, sequence number + offset, timestamp + offset, marker; the extension block of the
 * slot's layout, built once per layout per packet by Python), SRTP-protects it with libsrtp's
 * srtp_protect (the address and the srtp_t contexts come from pylibsrtp, passed in as
 * integers: this module links neither libsrtp nor OpenSSL) and sends the datagrams with
 * sendmmsg(2), up to BATCH per call.
 *
 * Group.replay() and Group.resend() send a *list* of cached packets to *one* slot in one call,
 * the GIL released the same way: the fast-start replay of the GOP (a slot added paused, which
 * forward() skips until the viewer has caught up) and the answers to one NACK (RFC 4585
 * §6.2.1), as RFC 4588 RTX when asked (RTX payload type and SSRC, the RTX stream's own
 * sequence numbers, the original sequence number prepended to the payload, §4). Their counts
 * are returned per call, not kept in the slot (a retransmission is no "packet sent" of the
 * DownTrack).
 *
 * Semantics match the Python path (DownTrack.send / DownTrack.on_nack -> MediaSink.send_rtp)
 * packet for packet: a live or replayed packet before the slot's starting point is skipped;
 * one too long to protect, one libsrtp refuses or one the socket refuses is an error of that
 * slot; forward()'s counters are per slot and are taken (read and reset) by the Python
 * wrapper, relaycast/native/__init__.py.
 *
 * Transport-wide congestion control (draft-holmer-rmcat-transport-wide-cc-extensions-01): a
 * slot may hold a Sequencer, one per viewer transport, shared by that viewer's audio and video
 * slots (in two Groups). When the slot's extension block starts with the transport-wide
 * sequence number element (Python puts it first: relaycast/media/downtrack.py ExtLayout), every
 * packet to the slot takes the Sequencer's next number, patched into the copied block, and the
 * packet's send time (CLOCK_MONOTONIC, us) and wire size go into the Sequencer's ring, which
 * Sequencer.lookup() reads in bulk for the viewer's feedback.
 *
 * Every write into a buffer is bounds-checked; arguments that cannot be valid raise
 * ValueError before anything is sent.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define RTP_HEADER 12
#define BUF_SIZE 2048  /* net/srtp.py _BUFFER_SIZE */
#define MAX_TRAILER 144  /* net/srtp.py _MAX_TRAILER (libsrtp SRTP_MAX_TRAILER_LEN) */
#define PROTECT_LIMIT (BUF_SIZE - MAX_TRAILER)
#define BATCH 64
#define MAX_SLOTS (1 << 20)
#define MAX_LAYOUTS (1 << 20)
/* an RFC 8285 block: 4-byte header + at most 0xFFFF words */
#define MAX_EXT (4 + 4 * 0xFFFF)
/* packets in one replay()/resend() call (a GOP is at most 1500, a NACK answer 128) */
#define MAX_LIST (1 << 16)
#define RTX_OSN 2 /* RFC 4588 §4: the original sequence number leads the RTX payload */

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) */
typedef int (*protect_fn)(void *ctx, void *rtp, int *len);

typedef struct {
    uint64_t packets;
    uint64_t wire_bytes;
    uint64_t payload_bytes;
    uint64_t keyframes;
    uint64_t errors;
} tally_t;

typedef struct {
    void *ctx;
    int fd;
    socklen_t addrlen;
    struct sockaddr_storage addr;
    uint32_t ssrc;
    uint32_t ts_offset;
    uint32_t layout;
    uint16_t seq_offset;
    uint16_t start_seq;
    uint8_t payload_type;
    uint8_t paused; /* catching up (fast start): forward() skips it */
    tally_t tally;  /* forward()'s, taken by Group.take() */
    PyObject *sequencer; /* a Sequencer (owned reference) or NULL */
    uint8_t twcc_id;     /* the viewer's extension id of the transport-wide sequence number */
} slot_t;

/* -- Sequencer: transport-wide sequence numbers of one viewer transport ---------------------- */

#define SEQ_MAX_CAPACITY 65536

typedef struct {
    PyObject_HEAD
    uint64_t first;   /* the first number (16-bit) as an extended number */
    uint64_t stamped; /* numbers taken so far; the next is first + stamped */
    Py_ssize_t capacity;
    int64_t *ext;     /* per ring entry: the extended number it holds, -1: none */
    int64_t *time_us;
    uint32_t *size;
} Sequencer;

static PyTypeObject SequencerType;

static int64_t
monotonic_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* take the next number: its extended value */
static uint64_t
seq_take(Sequencer *seq)
{
    return seq->first + seq->stamped++;
}

static void
seq_record(Sequencer *seq, uint64_t ext, uint32_t size, int64_t time_us)
{
    Py_ssize_t index = (Py_ssize_t)(ext % (uint64_t)seq->capacity);
    seq->ext[index] = (int64_t)ext;
    seq->time_us[index] = time_us;
    seq->size[index] = size;
}

/* the extended number of a 16-bit one, nearest to the last taken */
static int64_t
seq_extend(const Sequencer *seq, unsigned int seq16)
{
    int64_t last = (int64_t)(seq->first + seq->stamped) - 1;
    int diff = (int)((((unsigned int)last - seq16 + 0x8000u) & 0xFFFFu)) - 0x8000;
    return last - diff;
}

/* one source packet to send; ext is set for replay()/resend() (forward(): the slot's layout) */
typedef struct {
    const unsigned char *payload;
    size_t payload_len;
    const unsigned char *ext;
    size_t ext_len;
    uint16_t seq;
    uint32_t ts;
    int marker;
    int keyframe;
} packet_t;

/* RFC 4588 retransmission stream of a resend() call */
typedef struct {
    int on;
    uint8_t payload_type;
    uint32_t ssrc;
    uint16_t first_seq;
} rtx_t;

typedef struct {
    PyObject_HEAD
    protect_fn protect;
    slot_t *slots;
    Py_ssize_t count;
    Py_ssize_t capacity;
    int busy;
    int dry_run; /* benchmarks: everything but the sendmmsg (datagrams count as sent) */
    uint64_t call_errors; /* errors of the current forward() call */
    tally_t *list_tally; /* replay()/resend(): where this call counts (NULL: per slot) */
    unsigned char *buffers; /* BATCH * BUF_SIZE */
    const unsigned char **ext_data; /* per forward call, one per layout */
    Py_ssize_t *ext_len;
    Py_ssize_t ext_capacity;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    Py_ssize_t owner[BATCH];
    size_t msg_payload[BATCH];
    unsigned char msg_keyframe[BATCH];
} Group;

/* -- helpers ------------------------------------------------------------------------------- */

static int
parse_addr(int family, const char *host, int port, struct sockaddr_storage *out, socklen_t *len)
{
    memset(out, 0, sizeof(*out));
    if (port < 0 || port > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return -1;
    }
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            PyErr_SetString(PyExc_ValueError, "not an IPv4 address literal");
            return -1;
        }
        *len = sizeof(*sin);
        return 0;
    }
    if (family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        struct in_addr v4;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            if (inet_pton(AF_INET, host, &v4) != 1) {
                PyErr_SetString(PyExc_ValueError, "not an IP address literal");
                return -1;
            }
            /* IPv4 through a dual-stack socket: ::ffff:a.b.c.d */
            sin6->sin6_addr.s6_addr[10] = 0xFF;
            sin6->sin6_addr.s6_addr[11] = 0xFF;
            memcpy(&sin6->sin6_addr.s6_addr[12], &v4, 4);
        }
        *len = sizeof(*sin6);
        return 0;
    }
    PyErr_SetString(PyExc_ValueError, "address family must be AF_INET or AF_INET6");
    return -1;
}

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
check_busy(Group *self)
{
    if (self->busy) {
        PyErr_SetString(PyExc_RuntimeError, "fan-out group is forwarding in another thread");
        return -1;
    }
    return 0;
}

static int
check_index(Group *self, Py_ssize_t index)
{
    if (index < 0 || index >= self->count) {
        PyErr_SetString(PyExc_IndexError, "slot index out of range");
        return -1;
    }
    return 0;
}

/* Fill a slot's header fields from Python ints, range-checked. */
static int
set_fields(slot_t *slot, unsigned long long ssrc, int payload_type, int seq_offset,
           unsigned long long ts_offset, int start_seq, Py_ssize_t layout)
{
    if (ssrc > 0xFFFFFFFFULL || ts_offset > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "ssrc and timestamp offset are 32-bit");
        return -1;
    }
    if (payload_type < 0 || payload_type > 127) {
        PyErr_SetString(PyExc_ValueError, "payload type must be 0..127");
        return -1;
    }
    if (seq_offset < 0 || seq_offset > 0xFFFF || start_seq < 0 || start_seq > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "sequence numbers are 16-bit");
        return -1;
    }
    if (layout < 0 || layout >= MAX_LAYOUTS) {
        PyErr_SetString(PyExc_ValueError, "layout index out of range");
        return -1;
    }
    slot->ssrc = (uint32_t)ssrc;
    slot->payload_type = (uint8_t)payload_type;
    slot->seq_offset = (uint16_t)seq_offset;
    slot->ts_offset = (uint32_t)ts_offset;
    slot->start_seq = (uint16_t)start_seq;
    slot->layout = (uint32_t)layout;
    return 0;
}

/* -- type ---------------------------------------------------------------------------------- */

static int
Group_init(Group *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"protect", NULL};
    unsigned long long address;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&", kwlist, u64_arg, &address))
        return -1;
    if (address == 0) {
        PyErr_SetString(PyExc_ValueError, "srtp_protect address is NULL");
        return -1;
    }
    if (self->buffers != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Group already initialised");
        return -1;
    }
    self->protect = (protect_fn)(uintptr_t)address;
    self->buffers = PyMem_Calloc(BATCH, BUF_SIZE);
    if (self->buffers == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
Group_dealloc(Group *self)
{
    for (Py_ssize_t i = 0; i < self->count; i++)
        Py_CLEAR(self->slots[i].sequencer);
    PyMem_Free(self->slots);
    PyMem_Free(self->buffers);
    PyMem_Free(self->ext_data);
    PyMem_Free(self->ext_len);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
Group_len(Group *self)
{
    return self->count;
}

static PyObject *
Group_add(Group *self, PyObject *args)
{
    unsigned long long ctx, ssrc, ts_offset;
    int fd, family, port, payload_type, seq_offset, start_seq;
    const char *host;
    Py_ssize_t layout;
    slot_t slot;
    if (!PyArg_ParseTuple(args, "O&iisiO&iiO&in", u64_arg, &ctx, &fd, &family, &host, &port,
                          u64_arg, &ssrc, &payload_type, &seq_offset, u64_arg, &ts_offset,
                          &start_seq, &layout))
        return NULL;
    if (check_busy(self) < 0)
        return NULL;
    if (ctx == 0 || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "NULL srtp context or negative file descriptor");
        return NULL;
    }
    memset(&slot, 0, sizeof(slot));
    slot.ctx = (void *)(uintptr_t)ctx;
    slot.fd = fd;
    if (parse_addr(family, host, port, &slot.addr, &slot.addrlen) < 0)
        return NULL;
    if (set_fields(&slot, ssrc, payload_type, seq_offset, ts_offset, start_seq, layout) < 0)
        return NULL;
    if (self->count >= MAX_SLOTS) {
        PyErr_SetString(PyExc_ValueError, "too many slots in one group");
        return NULL;
    }
    if (self->count == self->capacity) {
        Py_ssize_t capacity = self->capacity ? self->capacity * 2 : 16;
        slot_t *grown;
        if (capacity > MAX_SLOTS)
            capacity = MAX_SLOTS;
        grown = PyMem_Realloc(self->slots, (size_t)capacity * sizeof(slot_t));
        if (grown == NULL)
            return PyErr_NoMemory();
        self->slots = grown;
        self->capacity = capacity;
    }
    self->slots[self->count] = slot;
    return PyLong_FromSsize_t(self->count++);
}

static PyObject *
Group_update(Group *self, PyObject *args)
{
    Py_ssize_t index, layout;
    unsigned long long ssrc, ts_offset;
    int payload_type, seq_offset, start_seq;
    slot_t copy;
    if (!PyArg_ParseTuple(args, "nO&iiO&in", &index, u64_arg, &ssrc, &payload_type, &seq_offset,
                          u64_arg, &ts_offset, &start_seq, &layout))
        return NULL;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    copy = self->slots[index];
    if (set_fields(&copy, ssrc, payload_type, seq_offset, ts_offset, start_seq, layout) < 0)
        return NULL;
    self->slots[index] = copy;
    Py_RETURN_NONE;
}

static PyObject *
Group_set_addr(Group *self, PyObject *args)
{
    Py_ssize_t index;
    int family, port;
    const char *host;
    struct sockaddr_storage addr;
    socklen_t addrlen = 0;
    if (!PyArg_ParseTuple(args, "nisi", &index, &family, &host, &port))
        return NULL;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    if (parse_addr(family, host, port, &addr, &addrlen) < 0)
        return NULL;
    self->slots[index].addr = addr;
    self->slots[index].addrlen = addrlen;
    Py_RETURN_NONE;
}

/* Remove a slot; the last one moves into its place. Returns the index that moved (-1: none). */
static PyObject *
Group_remove(Group *self, PyObject *args)
{
    Py_ssize_t index, last;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    Py_CLEAR(self->slots[index].sequencer);
    last = --self->count;
    if (index == last)
        return PyLong_FromLong(-1);
    self->slots[index] = self->slots[last];
    self->slots[last].sequencer = NULL;
    return PyLong_FromSsize_t(last);
}

static PyObject *
tally_tuple(const tally_t *tally)
{
    return Py_BuildValue("(KKKKK)", (unsigned long long)tally->packets,
                         (unsigned long long)tally->wire_bytes,
                         (unsigned long long)tally->payload_bytes,
                         (unsigned long long)tally->keyframes, (unsigned long long)tally->errors);
}

/* (packets, wire bytes, payload bytes, keyframes, errors) since the last take; resets them. */
static PyObject *
Group_take(Group *self, PyObject *args)
{
    Py_ssize_t index;
    slot_t *slot;
    PyObject *result;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    slot = &self->slots[index];
    result = tally_tuple(&slot->tally);
    if (result != NULL)
        memset(&slot->tally, 0, sizeof(slot->tally));
    return result;
}

/* A slot catching up (fast start) is skipped by forward() until it is set live again. */
static PyObject *
Group_set_paused(Group *self, PyObject *args)
{
    Py_ssize_t index;
    int paused;
    if (!PyArg_ParseTuple(args, "np", &index, &paused))
        return NULL;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    self->slots[index].paused = (uint8_t)paused;
    Py_RETURN_NONE;
}

/* set_sequencer(index, sequencer or None, extension id): the slot's transport-wide numbers */
static PyObject *
Group_set_sequencer(Group *self, PyObject *args)
{
    Py_ssize_t index;
    PyObject *sequencer;
    int ext_id;
    slot_t *slot;
    if (!PyArg_ParseTuple(args, "nOi", &index, &sequencer, &ext_id))
        return NULL;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    if (sequencer != Py_None && !PyObject_TypeCheck(sequencer, &SequencerType)) {
        PyErr_SetString(PyExc_TypeError, "sequencer must be a Sequencer or None");
        return NULL;
    }
    if (ext_id < 1 || ext_id > 255) {
        PyErr_SetString(PyExc_ValueError, "extension id must be 1..255");
        return NULL;
    }
    slot = &self->slots[index];
    Py_CLEAR(slot->sequencer);
    if (sequencer != Py_None) {
        Py_INCREF(sequencer);
        slot->sequencer = sequencer;
    }
    slot->twcc_id = (uint8_t)ext_id;
    Py_RETURN_NONE;
}

/* set_layout(index, layout): the slot uses another layout's extension block from now on */
static PyObject *
Group_set_layout(Group *self, PyObject *args)
{
    Py_ssize_t index, layout;
    if (!PyArg_ParseTuple(args, "nn", &index, &layout))
        return NULL;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    if (layout < 0 || layout >= MAX_LAYOUTS) {
        PyErr_SetString(PyExc_ValueError, "layout index out of range");
        return NULL;
    }
    self->slots[index].layout = (uint32_t)layout;
    Py_RETURN_NONE;
}

static PyObject *
Group_paused(Group *self, PyObject *args)
{
    Py_ssize_t index;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if (check_index(self, index) < 0)
        return NULL;
    return PyBool_FromLong(self->slots[index].paused);
}

static PyObject *
Group_start_seq(Group *self, PyObject *args)
{
    Py_ssize_t index;
    if (!PyArg_ParseTuple(args, "n", &index))
        return NULL;
    if (check_index(self, index) < 0)
        return NULL;
    return PyLong_FromLong(self->slots[index].start_seq);
}

/* Indices of the slots with errors not yet taken. */
static PyObject *
Group_error_slots(Group *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *list = PyList_New(0);
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        if (self->slots[i].tally.errors) {
            PyObject *value = PyLong_FromSsize_t(i);
            if (value == NULL || PyList_Append(list, value) < 0) {
                Py_XDECREF(value);
                Py_DECREF(list);
                return NULL;
            }
            Py_DECREF(value);
        }
    }
    return list;
}

/* -- the kernel (runs without the GIL) ----------------------------------------------------- */

static void
fail_slot(Group *self, slot_t *slot)
{
    if (self->list_tally != NULL) {
        self->list_tally->errors++;
        return;
    }
    slot->tally.errors++;
    self->call_errors++;
}

/* Send msgs[0..n) on fd; account every datagram like one sendto() would. */
static void
flush(Group *self, int fd, int n)
{
    int start = 0;
    while (start < n) {
        int sent = self->dry_run ? n - start
                                 : sendmmsg(fd, &self->msgs[start], (unsigned int)(n - start), 0);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            /* the first datagram failed: an error of its slot, then carry on */
            fail_slot(self, &self->slots[self->owner[start]]);
            start++;
            continue;
        }
        if (sent == 0) { /* should not happen; do not spin */
            fail_slot(self, &self->slots[self->owner[start]]);
            start++;
            continue;
        }
        for (int i = start; i < start + sent; i++) {
            tally_t *tally =
                self->list_tally != NULL ? self->list_tally : &self->slots[self->owner[i]].tally;
            tally->packets++;
            tally->wire_bytes += self->iov[i].iov_len;
            tally->payload_bytes += self->msg_payload[i];
            tally->keyframes += self->msg_keyframe[i];
        }
        start += sent;
    }
}

/* The floor of a live or replayed packet (DownTrack.send): 0 when it is older than the slot's
 * starting point; the floor follows the stream across wrap-arounds. */
static int
above_floor(slot_t *slot, uint16_t seq)
{
    uint16_t delta = (uint16_t)(seq - slot->start_seq);
    if (delta > 0x8000)
        return 0;
    if (delta > 0x4000)
        slot->start_seq = (uint16_t)(seq - 0x2000);
    return 1;
}

/* Rewrite ``pkt`` for slot ``index`` into buffer ``pending``, protect it and queue it. With
 * ``rtx`` it goes out as RFC 4588 RTX packet number ``rtx_seq``. 0: queued; -1: an error of
 * the slot (too long to protect, or refused by libsrtp), nothing queued. */
static int
emit(Group *self, int pending, Py_ssize_t index, const packet_t *pkt, const unsigned char *ext,
     size_t ext_len, const rtx_t *rtx, uint16_t rtx_seq)
{
    slot_t *slot = &self->slots[index];
    const size_t osn = rtx != NULL ? RTX_OSN : 0;
    unsigned char *buf;
    unsigned char *body;
    size_t total;
    uint16_t seq, out_seq;
    uint32_t ts, ssrc;
    uint8_t payload_type;
    int length, status;
    Sequencer *seqr = NULL;
    size_t twcc_at = 0;
    uint64_t twcc_ext = 0;

    /* transport-wide sequence number: taken first, so that a packet that fails below has
     * used its number as on the Python path (DownTrack.send stamps, then the sink fails) */
    if (slot->sequencer != NULL && ext != NULL && ext_len >= 8) {
        unsigned int profile = ((unsigned int)ext[0] << 8) | ext[1];
        if (profile == 0xBEDE) {
            if ((ext[4] >> 4) == slot->twcc_id && (ext[4] & 0x0F) == 1)
                twcc_at = 5;
        } else if ((profile & 0xFFF0) == 0x1000) {
            if (ext[4] == slot->twcc_id && ext[5] == 2)
                twcc_at = 6;
        }
        if (twcc_at != 0 && twcc_at + 2 <= ext_len) {
            seqr = (Sequencer *)slot->sequencer;
            twcc_ext = seq_take(seqr);
        } else {
            twcc_at = 0;
        }
    }

    /* checked without overflow: each term is bounded before it is subtracted */
    if (ext_len > PROTECT_LIMIT || pkt->payload_len > PROTECT_LIMIT - ext_len ||
        RTP_HEADER + osn > PROTECT_LIMIT - ext_len - pkt->payload_len)
        return -1; /* MediaSink: "too long to protect" */
    total = RTP_HEADER + ext_len + osn + pkt->payload_len;

    out_seq = (uint16_t)(pkt->seq + slot->seq_offset);
    ts = pkt->ts + slot->ts_offset;
    if (rtx != NULL) {
        seq = rtx_seq;
        ssrc = rtx->ssrc;
        payload_type = rtx->payload_type;
    } else {
        seq = out_seq;
        ssrc = slot->ssrc;
        payload_type = slot->payload_type;
    }
    buf = self->buffers + (size_t)pending * BUF_SIZE;
    buf[0] = ext_len ? 0x90 : 0x80;
    buf[1] = (unsigned char)((pkt->marker ? 0x80 : 0) | payload_type);
    buf[2] = (unsigned char)(seq >> 8);
    buf[3] = (unsigned char)seq;
    buf[4] = (unsigned char)(ts >> 24);
    buf[5] = (unsigned char)(ts >> 16);
    buf[6] = (unsigned char)(ts >> 8);
    buf[7] = (unsigned char)ts;
    buf[8] = (unsigned char)(ssrc >> 24);
    buf[9] = (unsigned char)(ssrc >> 16);
    buf[10] = (unsigned char)(ssrc >> 8);
    buf[11] = (unsigned char)ssrc;
    body = buf + RTP_HEADER;
    if (ext_len) {
        memcpy(body, ext, ext_len);
        if (seqr != NULL) { /* twcc_at + 2 <= ext_len: checked above */
            body[twcc_at] = (unsigned char)(twcc_ext >> 8);
            body[twcc_at + 1] = (unsigned char)twcc_ext;
        }
        body += ext_len;
    }
    if (osn) {
        body[0] = (unsigned char)(out_seq >> 8);
        body[1] = (unsigned char)out_seq;
        body += osn;
    }
    if (pkt->payload_len)
        memcpy(body, pkt->payload, pkt->payload_len);

    length = (int)total;
    status = self->protect(slot->ctx, buf, &length);
    if (status != 0 || length < (int)total || length > BUF_SIZE)
        return -1;
    if (seqr != NULL)
        seq_record(seqr, twcc_ext, (uint32_t)length, monotonic_us());
    self->iov[pending].iov_base = buf;
    self->iov[pending].iov_len = (size_t)length;
    memset(&self->msgs[pending], 0, sizeof(struct mmsghdr));
    self->msgs[pending].msg_hdr.msg_name = &slot->addr;
    self->msgs[pending].msg_hdr.msg_namelen = slot->addrlen;
    self->msgs[pending].msg_hdr.msg_iov = &self->iov[pending];
    self->msgs[pending].msg_hdr.msg_iovlen = 1;
    self->owner[pending] = index;
    self->msg_payload[pending] = pkt->payload_len;
    self->msg_keyframe[pending] = pkt->keyframe ? 1 : 0;
    return 0;
}

/* forward(): one packet to every slot that is not paused. */
static uint64_t
run(Group *self, const packet_t *pkt)
{
    int pending = 0, pending_fd = -1;
    const Py_ssize_t count = self->count;
    self->call_errors = 0;
    self->list_tally = NULL;

    for (Py_ssize_t i = 0; i < count; i++) {
        slot_t *slot = &self->slots[i];
        if (slot->paused || !above_floor(slot, pkt->seq))
            continue;
        if (pending && (slot->fd != pending_fd || pending == BATCH)) {
            flush(self, pending_fd, pending);
            pending = 0;
        }
        if (emit(self, pending, i, pkt, self->ext_data[slot->layout],
                 (size_t)self->ext_len[slot->layout], NULL, 0) < 0) {
            fail_slot(self, slot);
            continue;
        }
        pending_fd = slot->fd;
        pending++;
    }
    if (pending)
        flush(self, pending_fd, pending);
    return self->call_errors;
}

/* replay()/resend(): ``n`` packets to slot ``index``, counted in ``tally``. ``floor``: the
 * live rule for packets before the slot's starting point (replay); ``rtx``: RTX packets with
 * sequence numbers first_seq, first_seq + 1, ... one per packet (resend). */
static void
run_list(Group *self, Py_ssize_t index, const packet_t *pkts, Py_ssize_t n, int floor,
         const rtx_t *rtx, tally_t *tally)
{
    slot_t *slot = &self->slots[index];
    int pending = 0;
    self->list_tally = tally;
    for (Py_ssize_t i = 0; i < n; i++) {
        const packet_t *pkt = &pkts[i];
        if (floor && !above_floor(slot, pkt->seq))
            continue;
        if (pending == BATCH) {
            flush(self, slot->fd, pending);
            pending = 0;
        }
        if (emit(self, pending, index, pkt, pkt->ext, pkt->ext_len, rtx,
                 rtx != NULL ? (uint16_t)(rtx->first_seq + (uint16_t)i) : 0) < 0) {
            fail_slot(self, slot);
            continue;
        }
        pending++;
    }
    if (pending)
        flush(self, slot->fd, pending);
    self->list_tally = NULL;
}

/* forward(payload, seq, timestamp, marker, keyframe, exts) -> errors of this call */
static PyObject *
Group_forward(Group *self, PyObject *args)
{
    Py_buffer payload;
    unsigned long long seq, ts;
    int marker, keyframe;
    PyObject *exts;
    Py_ssize_t layouts;
    packet_t pkt;
    uint64_t errors;

    if (!PyArg_ParseTuple(args, "y*O&O&ppO!", &payload, u64_arg, &seq, u64_arg, &ts, &marker,
                          &keyframe, &PyTuple_Type, &exts))
        return NULL;
    if (check_busy(self) < 0)
        goto fail;
    if (seq > 0xFFFF || ts > 0xFFFFFFFFULL) {
        PyErr_SetString(PyExc_ValueError, "sequence number is 16-bit, timestamp 32-bit");
        goto fail;
    }
    layouts = PyTuple_GET_SIZE(exts);
    if (layouts > MAX_LAYOUTS) {
        PyErr_SetString(PyExc_ValueError, "too many layouts");
        goto fail;
    }
    if (layouts > self->ext_capacity) {
        const unsigned char **data = PyMem_Realloc(self->ext_data, (size_t)layouts * sizeof(*data));
        Py_ssize_t *lengths;
        if (data == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        self->ext_data = data;
        lengths = PyMem_Realloc(self->ext_len, (size_t)layouts * sizeof(*lengths));
        if (lengths == NULL) {
            PyErr_NoMemory();
            goto fail;
        }
        self->ext_len = lengths;
        self->ext_capacity = layouts;
    }
    for (Py_ssize_t i = 0; i < layouts; i++) {
        PyObject *ext = PyTuple_GET_ITEM(exts, i);
        Py_ssize_t len;
        if (!PyBytes_CheckExact(ext)) {
            PyErr_SetString(PyExc_TypeError, "extension blocks must be bytes");
            goto fail;
        }
        len = PyBytes_GET_SIZE(ext);
        if (len % 4 != 0 || len > MAX_EXT) {
            PyErr_SetString(PyExc_ValueError,
                            "an extension block is empty or a 4-byte header + whole words");
            goto fail;
        }
        self->ext_data[i] = (const unsigned char *)PyBytes_AS_STRING(ext);
        self->ext_len[i] = len;
    }
    for (Py_ssize_t i = 0; i < self->count; i++) {
        if ((Py_ssize_t)self->slots[i].layout >= layouts) {
            PyErr_SetString(PyExc_ValueError, "a slot's layout has no extension block");
            goto fail;
        }
    }
    if (self->count == 0) {
        PyBuffer_Release(&payload);
        return PyLong_FromLong(0);
    }
    pkt.payload = payload.buf;
    pkt.payload_len = (size_t)payload.len;
    pkt.ext = NULL;
    pkt.ext_len = 0;
    pkt.seq = (uint16_t)seq;
    pkt.ts = (uint32_t)ts;
    pkt.marker = marker;
    pkt.keyframe = keyframe;

    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    errors = run(self, &pkt);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyBuffer_Release(&payload);
    return PyLong_FromUnsignedLongLong(errors);

fail:
    PyBuffer_Release(&payload);
    return NULL;
}

/* An int in 0..limit from a Python int (no __index__ calls: no Python code runs here). */
static int
bounded(PyObject *obj, unsigned long long limit, unsigned long long *out, const char *what)
{
    unsigned long long value;
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int", what);
        return -1;
    }
    value = PyLong_AsUnsignedLongLong(obj);
    if ((value == (unsigned long long)-1 && PyErr_Occurred()) || value > limit) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s out of range", what);
        return -1;
    }
    *out = value;
    return 0;
}

/* items[start:end], each (payload: bytes, seq, timestamp, marker: bool, keyframe: bool,
 * ext: bytes), into a new array (*out, PyMem_Free it). Returns a new reference to what keeps
 * the bytes alive while the GIL is released (a private slice), NULL with an exception set. */
static PyObject *
parse_items(PyObject *items, Py_ssize_t start, Py_ssize_t end, packet_t **out)
{
    Py_ssize_t size, n;
    PyObject *keep;
    packet_t *pkts;
    int is_list = PyList_CheckExact(items);
    *out = NULL;
    if (!is_list && !PyTuple_CheckExact(items)) {
        PyErr_SetString(PyExc_TypeError, "packets must be a list or a tuple");
        return NULL;
    }
    size = is_list ? PyList_GET_SIZE(items) : PyTuple_GET_SIZE(items);
    if (start < 0 || end < start || end > size) {
        PyErr_SetString(PyExc_IndexError, "packet range out of range");
        return NULL;
    }
    n = end - start;
    if (n > MAX_LIST) {
        PyErr_SetString(PyExc_ValueError, "too many packets for one call");
        return NULL;
    }
    keep = is_list ? PyList_GetSlice(items, start, end) : PyTuple_GetSlice(items, start, end);
    if (keep == NULL)
        return NULL;
    pkts = PyMem_Calloc((size_t)(n ? n : 1), sizeof(packet_t));
    if (pkts == NULL) {
        Py_DECREF(keep);
        return PyErr_NoMemory();
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = is_list ? PyList_GET_ITEM(keep, i) : PyTuple_GET_ITEM(keep, i);
        PyObject *payload, *ext, *marker, *keyframe;
        unsigned long long seq, ts;
        Py_ssize_t ext_len;
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 6) {
            PyErr_SetString(PyExc_TypeError,
                            "a packet is (payload, seq, timestamp, marker, keyframe, ext)");
            goto fail;
        }
        payload = PyTuple_GET_ITEM(item, 0);
        marker = PyTuple_GET_ITEM(item, 3);
        keyframe = PyTuple_GET_ITEM(item, 4);
        ext = PyTuple_GET_ITEM(item, 5);
        if (!PyBytes_CheckExact(payload) || !PyBytes_CheckExact(ext)) {
            PyErr_SetString(PyExc_TypeError, "payload and extension block must be bytes");
            goto fail;
        }
        if (!PyBool_Check(marker) || !PyBool_Check(keyframe)) {
            PyErr_SetString(PyExc_TypeError, "marker and keyframe must be bool");
            goto fail;
        }
        if (bounded(PyTuple_GET_ITEM(item, 1), 0xFFFF, &seq, "sequence number") < 0 ||
            bounded(PyTuple_GET_ITEM(item, 2), 0xFFFFFFFFULL, &ts, "timestamp") < 0)
            goto fail;
        ext_len = PyBytes_GET_SIZE(ext);
        if (ext_len % 4 != 0 || ext_len > MAX_EXT) {
            PyErr_SetString(PyExc_ValueError,
                            "an extension block is empty or a 4-byte header + whole words");
            goto fail;
        }
        pkts[i].payload = (const unsigned char *)PyBytes_AS_STRING(payload);
        pkts[i].payload_len = (size_t)PyBytes_GET_SIZE(payload);
        pkts[i].ext = (const unsigned char *)PyBytes_AS_STRING(ext);
        pkts[i].ext_len = (size_t)ext_len;
        pkts[i].seq = (uint16_t)seq;
        pkts[i].ts = (uint32_t)ts;
        pkts[i].marker = marker == Py_True;
        pkts[i].keyframe = keyframe == Py_True;
    }
    *out = pkts;
    return keep;

fail:
    PyMem_Free(pkts);
    Py_DECREF(keep);
    return NULL;
}

static PyObject *
send_list(Group *self, Py_ssize_t index, PyObject *items, Py_ssize_t start, Py_ssize_t end,
          int floor, const rtx_t *rtx)
{
    packet_t *pkts;
    PyObject *keep;
    tally_t tally;
    if (check_busy(self) < 0 || check_index(self, index) < 0)
        return NULL;
    keep = parse_items(items, start, end, &pkts);
    if (keep == NULL)
        return NULL;
    memset(&tally, 0, sizeof(tally));
    self->busy = 1;
    Py_BEGIN_ALLOW_THREADS
    run_list(self, index, pkts, end - start, floor, rtx, &tally);
    Py_END_ALLOW_THREADS
    self->busy = 0;
    PyMem_Free(pkts);
    Py_DECREF(keep);
    return tally_tuple(&tally);
}

/* replay(index, packets, start, end) -> (packets, wire bytes, payload bytes, keyframes,
 * errors) of this call: packets[start:end] to one slot as DownTrack.send(replay=True) would. */
static PyObject *
Group_replay(Group *self, PyObject *args)
{
    Py_ssize_t index, start, end;
    PyObject *items;
    if (!PyArg_ParseTuple(args, "nOnn", &index, &items, &start, &end))
        return NULL;
    return send_list(self, index, items, start, end, 1, NULL);
}

/* resend(index, packets, rtx) -> the counts of this call: NACK answers to one slot, as they
 * were (rtx None) or as RTX, rtx = (payload type, ssrc, sequence number of the first). */
static PyObject *
Group_resend(Group *self, PyObject *args)
{
    Py_ssize_t index, size;
    PyObject *items, *rtx_arg;
    rtx_t rtx;
    if (!PyArg_ParseTuple(args, "nOO", &index, &items, &rtx_arg))
        return NULL;
    memset(&rtx, 0, sizeof(rtx));
    if (rtx_arg != Py_None) {
        unsigned long long pt, ssrc, seq;
        if (!PyTuple_CheckExact(rtx_arg) || PyTuple_GET_SIZE(rtx_arg) != 3) {
            PyErr_SetString(PyExc_TypeError, "rtx is None or (payload type, ssrc, first seq)");
            return NULL;
        }
        if (bounded(PyTuple_GET_ITEM(rtx_arg, 0), 127, &pt, "rtx payload type") < 0 ||
            bounded(PyTuple_GET_ITEM(rtx_arg, 1), 0xFFFFFFFFULL, &ssrc, "rtx ssrc") < 0 ||
            bounded(PyTuple_GET_ITEM(rtx_arg, 2), 0xFFFF, &seq, "rtx sequence number") < 0)
            return NULL;
        rtx.on = 1;
        rtx.payload_type = (uint8_t)pt;
        rtx.ssrc = (uint32_t)ssrc;
        rtx.first_seq = (uint16_t)seq;
    }
    if (PyList_CheckExact(items))
        size = PyList_GET_SIZE(items);
    else if (PyTuple_CheckExact(items))
        size = PyTuple_GET_SIZE(items);
    else {
        PyErr_SetString(PyExc_TypeError, "packets must be a list or a tuple");
        return NULL;
    }
    return send_list(self, index, items, 0, size, 0, rtx.on ? &rtx : NULL);
}

static PyObject *
Group_set_dry_run(Group *self, PyObject *args)
{
    int dry_run;
    if (!PyArg_ParseTuple(args, "p", &dry_run))
        return NULL;
    if (check_busy(self) < 0)
        return NULL;
    self->dry_run = dry_run;
    Py_RETURN_NONE;
}

static PyMethodDef Group_methods[] = {
    {"set_dry_run", (PyCFunction)Group_set_dry_run, METH_VARARGS,
     "set_dry_run(flag): benchmarks only, skip sendmmsg and count the datagrams as sent"},
    {"add", (PyCFunction)Group_add, METH_VARARGS,
     "add(ctx, fd, family, host, port, ssrc, payload_type, seq_offset, ts_offset, start_seq, "
     "layout) -> index"},
    {"update", (PyCFunction)Group_update, METH_VARARGS,
     "update(index, ssrc, payload_type, seq_offset, ts_offset, start_seq, layout)"},
    {"set_addr", (PyCFunction)Group_set_addr, METH_VARARGS, "set_addr(index, family, host, port)"},
    {"remove", (PyCFunction)Group_remove, METH_VARARGS,
     "remove(index) -> the index of the slot that moved into its place, or -1"},
    {"take", (PyCFunction)Group_take, METH_VARARGS,
     "take(index) -> (packets, wire_bytes, payload_bytes, keyframes, errors); resets them"},
    {"start_seq", (PyCFunction)Group_start_seq, METH_VARARGS, "start_seq(index) -> int"},
    {"error_slots", (PyCFunction)Group_error_slots, METH_NOARGS,
     "error_slots() -> indices of slots with errors not yet taken"},
    {"forward", (PyCFunction)Group_forward, METH_VARARGS,
     "forward(payload, seq, timestamp, marker, keyframe, exts) -> errors"},
    {"replay", (PyCFunction)Group_replay, METH_VARARGS,
     "replay(index, packets, start, end) -> (packets, wire_bytes, payload_bytes, keyframes, "
     "errors) of this call; packets[i] = (payload, seq, ts, marker, keyframe, ext)"},
    {"resend", (PyCFunction)Group_resend, METH_VARARGS,
     "resend(index, packets, rtx) -> the counts of this call; rtx None or (pt, ssrc, seq)"},
    {"set_paused", (PyCFunction)Group_set_paused, METH_VARARGS,
     "set_paused(index, flag): a paused slot is skipped by forward() (fast start)"},
    {"paused", (PyCFunction)Group_paused, METH_VARARGS, "paused(index) -> bool"},
    {"set_sequencer", (PyCFunction)Group_set_sequencer, METH_VARARGS,
     "set_sequencer(index, sequencer or None, ext_id): transport-wide numbers for the slot"},
    {"set_layout", (PyCFunction)Group_set_layout, METH_VARARGS,
     "set_layout(index, layout): the slot's extension layout index"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods Group_as_sequence = {
    .sq_length = (lenfunc)Group_len,
};

static PyTypeObject GroupType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "relaycast.native._fanout.Group",
    .tp_basicsize = sizeof(Group),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The LIVE viewers of one Forwarder, served by one call per source packet.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Group_init,
    .tp_dealloc = (destructor)Group_dealloc,
    .tp_methods = Group_methods,
    .tp_as_sequence = &Group_as_sequence,
};

/* -- Sequencer (Python face) --------------------------------------------------------------- */

static int
Sequencer_init(Sequencer *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"capacity", "first", NULL};
    Py_ssize_t capacity = 1024;
    int first = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|ni", kwlist, &capacity, &first))
        return -1;
    if (capacity < 1 || capacity > SEQ_MAX_CAPACITY) {
        PyErr_SetString(PyExc_ValueError, "capacity must be 1..65536");
        return -1;
    }
    if (first < 0 || first > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "first must be 0..65535");
        return -1;
    }
    if (self->ext != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sequencer already initialised");
        return -1;
    }
    self->ext = PyMem_Malloc((size_t)capacity * sizeof(int64_t));
    self->time_us = PyMem_Calloc((size_t)capacity, sizeof(int64_t));
    self->size = PyMem_Calloc((size_t)capacity, sizeof(uint32_t));
    if (self->ext == NULL || self->time_us == NULL || self->size == NULL) {
        PyErr_NoMemory();
        return -1; /* dealloc frees what was allocated */
    }
    for (Py_ssize_t i = 0; i < capacity; i++)
        self->ext[i] = -1;
    self->capacity = capacity;
    self->first = (uint64_t)first;
    self->stamped = 0;
    return 0;
}

static void
Sequencer_dealloc(Sequencer *self)
{
    PyMem_Free(self->ext);
    PyMem_Free(self->time_us);
    PyMem_Free(self->size);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
check_ready(Sequencer *self)
{
    if (self->ext == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Sequencer not initialised");
        return -1;
    }
    return 0;
}

static PyObject *
Sequencer_stamp(Sequencer *self, PyObject *Py_UNUSED(ignored))
{
    if (check_ready(self) < 0)
        return NULL;
    return PyLong_FromUnsignedLong((unsigned long)(seq_take(self) & 0xFFFF));
}

/* sent(seq, size, at_us=-1): a packet sent under the 16-bit ``seq`` (one already taken) */
static PyObject *
Sequencer_sent(Sequencer *self, PyObject *args)
{
    int seq16;
    long long size, at_us = -1;
    int64_t ext;
    if (!PyArg_ParseTuple(args, "iL|L", &seq16, &size, &at_us))
        return NULL;
    if (check_ready(self) < 0)
        return NULL;
    if (seq16 < 0 || seq16 > 0xFFFF || size < 0 || size > 0xFFFFFFFFLL) {
        PyErr_SetString(PyExc_ValueError, "seq is 16-bit, size 32-bit");
        return NULL;
    }
    if (self->stamped == 0)
        Py_RETURN_NONE;
    ext = seq_extend(self, (unsigned int)seq16);
    if (ext < (int64_t)self->first || ext >= (int64_t)(self->first + self->stamped))
        Py_RETURN_NONE; /* never taken */
    seq_record(self, (uint64_t)ext, (uint32_t)size, at_us < 0 ? monotonic_us() : (int64_t)at_us);
    Py_RETURN_NONE;
}

/* lookup(base, count) -> (base_ext, [(send_us, size) or None, ...]) */
static PyObject *
Sequencer_lookup(Sequencer *self, PyObject *args)
{
    int base;
    Py_ssize_t count;
    int64_t base_ext;
    PyObject *list, *result;
    if (!PyArg_ParseTuple(args, "in", &base, &count))
        return NULL;
    if (check_ready(self) < 0)
        return NULL;
    if (base < 0 || base > 0xFFFF || count < 0 || count > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "base is 16-bit, count 0..65535");
        return NULL;
    }
    list = PyList_New(count);
    if (list == NULL)
        return NULL;
    base_ext = self->stamped ? seq_extend(self, (unsigned int)base) : 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item;
        int64_t ext = base_ext + i;
        Py_ssize_t index;
        if (self->stamped == 0 || ext < 0) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(list, i, Py_None);
            continue;
        }
        index = (Py_ssize_t)((uint64_t)ext % (uint64_t)self->capacity);
        if (self->ext[index] != ext) {
            Py_INCREF(Py_None);
            PyList_SET_ITEM(list, i, Py_None);
            continue;
        }
        item = Py_BuildValue("(LI)", (long long)self->time_us[index],
                             (unsigned int)self->size[index]);
        if (item == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    result = Py_BuildValue("(LN)", (long long)base_ext, list);
    return result;
}

static PyObject *
Sequencer_get_stamped(Sequencer *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong((unsigned long long)self->stamped);
}

static PyObject *
Sequencer_get_capacity(Sequencer *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->capacity);
}

static PyMethodDef Sequencer_methods[] = {
    {"stamp", (PyCFunction)Sequencer_stamp, METH_NOARGS, "stamp() -> the next 16-bit number"},
    {"sent", (PyCFunction)Sequencer_sent, METH_VARARGS,
     "sent(seq, size, at_us=-1): record a packet sent under seq (-1: now, CLOCK_MONOTONIC us)"},
    {"lookup", (PyCFunction)Sequencer_lookup, METH_VARARGS,
     "lookup(base, count) -> (base_ext, [(send_us, size) or None, ...])"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Sequencer_getset[] = {
    {"stamped", (getter)Sequencer_get_stamped, NULL, "numbers taken so far", NULL},
    {"capacity", (getter)Sequencer_get_capacity, NULL, "ring entries", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SequencerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "relaycast.native._fanout.Sequencer",
    .tp_basicsize = sizeof(Sequencer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Transport-wide sequence numbers of one viewer transport and their send history.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sequencer_init,
    .tp_dealloc = (destructor)Sequencer_dealloc,
    .tp_methods = Sequencer_methods,
    .tp_getset = Sequencer_getset,
};

static struct PyModuleDef fanout_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "relaycast.native._fanout",
    .m_doc = "Native fan-out kernel: RTP rewrite + libsrtp protect + sendmmsg per viewer group.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fanout(void)
{
    PyObject *module;
    if (PyType_Ready(&GroupType) < 0 || PyType_Ready(&SequencerType) < 0)
        return NULL;
    module = PyModule_Create(&fanout_module);
    if (module == NULL)
        return NULL;
    Py_INCREF(&GroupType);
    if (PyModule_AddObject(module, "Group", (PyObject *)&GroupType) < 0) {
        Py_DECREF(&GroupType);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&SequencerType);
    if (PyModule_AddObject(module, "Sequencer", (PyObject *)&SequencerType) < 0) {
        Py_DECREF(&SequencerType);
        Py_DECREF(module);
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(module, "BUFFER_SIZE", BUF_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TRAILER", MAX_TRAILER) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SLOTS", MAX_SLOTS) < 0 ||
        PyModule_AddIntConstant(module, "MAX_LIST", MAX_LIST) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
