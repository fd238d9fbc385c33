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
 * Semantics match the Python path (DownTrack.send -> MediaSink.send_rtp) packet for packet:
 * a packet before the slot's starting point is skipped; one too long to protect, one libsrtp
 * refuses or one the socket refuses is an error of that slot; counters are per slot and are
 * taken (read and reset) by the Python wrapper, relaycast/native/__init__.py.
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

#define RTP_HEADER 12
#define BUF_SIZE 2048  /* net/srtp.py _BUFFER_SIZE */
#define MAX_TRAILER 144  /* net/srtp.py _MAX_TRAILER (libsrtp SRTP_MAX_TRAILER_LEN) */
#define PROTECT_LIMIT (BUF_SIZE - MAX_TRAILER)
#define BATCH 64
#define MAX_SLOTS (1 << 20)
#define MAX_LAYOUTS (1 << 20)
/* an RFC 8285 block: 4-byte header + at most 0xFFFF words */
#define MAX_EXT (4 + 4 * 0xFFFF)

/* libsrtp 2: srtp_err_status_t srtp_protect(srtp_t ctx, void *rtp_hdr, int *len_ptr) */
typedef int (*protect_fn)(void *ctx, void *rtp, int *len);

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
    /* taken by Group.take(): */
    uint64_t packets;
    uint64_t wire_bytes;
    uint64_t payload_bytes;
    uint64_t keyframes;
    uint64_t errors;
} slot_t;

typedef struct {
    PyObject_HEAD
    protect_fn protect;
    slot_t *slots;
    Py_ssize_t count;
    Py_ssize_t capacity;
    int busy;
    int dry_run; /* benchmarks: everything but the sendmmsg (datagrams count as sent) */
    uint64_t call_errors; /* errors of the current forward() call */
    unsigned char *buffers; /* BATCH * BUF_SIZE */
    const unsigned char **ext_data; /* per forward call, one per layout */
    Py_ssize_t *ext_len;
    Py_ssize_t ext_capacity;
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    Py_ssize_t owner[BATCH];
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
    last = --self->count;
    if (index == last)
        return PyLong_FromLong(-1);
    self->slots[index] = self->slots[last];
    return PyLong_FromSsize_t(last);
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
    result = Py_BuildValue("(KKKKK)", (unsigned long long)slot->packets,
                           (unsigned long long)slot->wire_bytes,
                           (unsigned long long)slot->payload_bytes,
                           (unsigned long long)slot->keyframes, (unsigned long long)slot->errors);
    if (result != NULL)
        slot->packets = slot->wire_bytes = slot->payload_bytes = slot->keyframes =
            slot->errors = 0;
    return result;
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
        if (self->slots[i].errors) {
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

typedef struct {
    const unsigned char *payload;
    size_t payload_len;
    uint16_t seq;
    uint32_t ts;
    int marker;
    int keyframe;
} packet_t;

static void
fail_slot(Group *self, slot_t *slot)
{
    slot->errors++;
    self->call_errors++;
}

/* Send msgs[0..n) on fd; account every datagram like one sendto() would. */
static void
flush(Group *self, int fd, int n, const packet_t *pkt)
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
            slot_t *slot = &self->slots[self->owner[i]];
            slot->packets++;
            slot->wire_bytes += self->iov[i].iov_len;
            slot->payload_bytes += pkt->payload_len;
            slot->keyframes += pkt->keyframe ? 1 : 0;
        }
        start += sent;
    }
}

static uint64_t
run(Group *self, const packet_t *pkt)
{
    int pending = 0, pending_fd = -1;
    const Py_ssize_t count = self->count;
    self->call_errors = 0;

    for (Py_ssize_t i = 0; i < count; i++) {
        slot_t *slot = &self->slots[i];
        uint16_t delta = (uint16_t)(pkt->seq - slot->start_seq);
        const unsigned char *ext;
        size_t ext_len, total;
        unsigned char *buf;
        uint16_t seq;
        uint32_t ts;
        int length, status;

        if (delta > 0x8000)
            continue; /* older than this viewer's starting point */
        if (delta > 0x4000) /* the floor follows the stream across wrap-arounds */
            slot->start_seq = (uint16_t)(pkt->seq - 0x2000);

        ext = self->ext_data[slot->layout];
        ext_len = (size_t)self->ext_len[slot->layout];
        /* checked without overflow: both terms were bounded by the caller */
        if (ext_len > PROTECT_LIMIT || pkt->payload_len > PROTECT_LIMIT - ext_len ||
            RTP_HEADER > PROTECT_LIMIT - ext_len - pkt->payload_len) {
            fail_slot(self, slot); /* MediaSink: "too long to protect" */
            continue;
        }
        total = RTP_HEADER + ext_len + pkt->payload_len;

        if (pending && (slot->fd != pending_fd || pending == BATCH)) {
            flush(self, pending_fd, pending, pkt);
            pending = 0;
        }
        buf = self->buffers + (size_t)pending * BUF_SIZE;
        seq = (uint16_t)(pkt->seq + slot->seq_offset);
        ts = pkt->ts + slot->ts_offset;
        buf[0] = ext_len ? 0x90 : 0x80;
        buf[1] = (unsigned char)((pkt->marker ? 0x80 : 0) | slot->payload_type);
        buf[2] = (unsigned char)(seq >> 8);
        buf[3] = (unsigned char)seq;
        buf[4] = (unsigned char)(ts >> 24);
        buf[5] = (unsigned char)(ts >> 16);
        buf[6] = (unsigned char)(ts >> 8);
        buf[7] = (unsigned char)ts;
        buf[8] = (unsigned char)(slot->ssrc >> 24);
        buf[9] = (unsigned char)(slot->ssrc >> 16);
        buf[10] = (unsigned char)(slot->ssrc >> 8);
        buf[11] = (unsigned char)slot->ssrc;
        if (ext_len)
            memcpy(buf + RTP_HEADER, ext, ext_len);
        if (pkt->payload_len)
            memcpy(buf + RTP_HEADER + ext_len, pkt->payload, pkt->payload_len);

        length = (int)total;
        status = self->protect(slot->ctx, buf, &length);
        if (status != 0 || length < (int)total || length > BUF_SIZE) {
            fail_slot(self, slot);
            continue;
        }
        self->iov[pending].iov_base = buf;
        self->iov[pending].iov_len = (size_t)length;
        memset(&self->msgs[pending], 0, sizeof(struct mmsghdr));
        self->msgs[pending].msg_hdr.msg_name = &slot->addr;
        self->msgs[pending].msg_hdr.msg_namelen = slot->addrlen;
        self->msgs[pending].msg_hdr.msg_iov = &self->iov[pending];
        self->msgs[pending].msg_hdr.msg_iovlen = 1;
        self->owner[pending] = i;
        pending_fd = slot->fd;
        pending++;
    }
    if (pending)
        flush(self, pending_fd, pending, pkt);
    return self->call_errors;
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
    if (PyType_Ready(&GroupType) < 0)
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
    if (PyModule_AddIntConstant(module, "BATCH", BATCH) < 0 ||
        PyModule_AddIntConstant(module, "BUFFER_SIZE", BUF_SIZE) < 0 ||
        PyModule_AddIntConstant(module, "MAX_TRAILER", MAX_TRAILER) < 0 ||
        PyModule_AddIntConstant(module, "MAX_SLOTS", MAX_SLOTS) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
