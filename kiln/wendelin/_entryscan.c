/*
 * Fast check of a fluentd chunk: a concatenation of msgpack [EventTime, map] entries.
 *
 * Checking every entry in Python costs more than writing and fsyncing the chunk, so the
 * common shape that fluentd v1 sends is checked here, in one pass over the bytes:
 *
 *   fixarray(2) | fixext8 type 0 (EventTime: 8 bytes) | a map (any msgpack inside)
 *
 * scan(buffer, max_depth) -> (count, lowest_time_bytes, highest_time_bytes), or None when the chunk is
 * not entirely of that shape or not well-formed msgpack.  None is not an error: the Python
 * parser then decides, and names the problem if there is one.  Every read is bounds-checked;
 * nesting is handled with a counter of objects still to skip, not recursion.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static uint64_t be(const unsigned char *p, int width)
{
    uint64_t value = 0;
    for (int i = 0; i < width; i++)
        value = (value << 8) | p[i];
    return value;
}

/* Nesting deeper than this is left to the Python parser (msgpack's own limit is 1024). */
#define MAX_DEPTH 512

static int is_container(unsigned char marker)
{
    return (marker >= 0x80 && marker <= 0x9f) || (marker >= 0xdc && marker <= 0xdf);
}

/*
 * Skip one msgpack object at data[*pos]; 0 on success, -1 if it is malformed, truncated,
 * or something Python's msgpack cannot read back as a record: a map or array used as a map
 * key (unhashable), an ext of a negative type (Python's ExtType takes 0..127 only), or
 * nesting deeper than MAX_DEPTH.  Each level counts the objects it still holds.
 */
static int skip_object(const unsigned char *data, Py_ssize_t size, Py_ssize_t *pos,
                       int max_depth)
{
    uint64_t left[MAX_DEPTH + 1];
    unsigned char in_map[MAX_DEPTH + 1];
    int depth = 0;
    Py_ssize_t at = *pos;
    left[0] = 1;
    in_map[0] = 0;
    for (;;) {
        if (left[depth] == 0) {
            if (depth == 0)
                break;
            depth--;
            continue;
        }
        if (at >= size)
            return -1;
        unsigned char marker = data[at++];
        /* In a map, objects alternate key, value: the key comes when an even count is left. */
        if (in_map[depth] && left[depth] % 2 == 0 && is_container(marker))
            return -1;
        left[depth]--;
        uint64_t length = 0;    /* payload bytes after the header */
        uint64_t children = 0;  /* objects inside a container */
        int width = 0;          /* bytes of a length field */
        int ext = 0;            /* an ext: its type byte follows the length */
        if (marker <= 0x7f || marker >= 0xe0 || marker == 0xc0 || marker == 0xc2 ||
            marker == 0xc3) {
            continue;
        } else if (marker <= 0x8f) {
            children = 2 * (uint64_t)(marker & 0x0f);
        } else if (marker <= 0x9f) {
            children = marker & 0x0f;
        } else if (marker <= 0xbf) {
            length = marker & 0x1f;
        } else {
            switch (marker) {
            case 0xc4: case 0xd9: width = 1; break;           /* bin8, str8 */
            case 0xc5: case 0xda: width = 2; break;           /* bin16, str16 */
            case 0xc6: case 0xdb: width = 4; break;           /* bin32, str32 */
            case 0xc7: width = 1; ext = 1; break;             /* ext8 */
            case 0xc8: width = 2; ext = 1; break;             /* ext16 */
            case 0xc9: width = 4; ext = 1; break;             /* ext32 */
            case 0xca: length = 4; break;                     /* float32 */
            case 0xcb: length = 8; break;                     /* float64 */
            case 0xcc: case 0xd0: length = 1; break;          /* (u)int8 */
            case 0xcd: case 0xd1: length = 2; break;          /* (u)int16 */
            case 0xce: case 0xd2: length = 4; break;          /* (u)int32 */
            case 0xcf: case 0xd3: length = 8; break;          /* (u)int64 */
            case 0xd4: ext = 1; length = 1; break;            /* fixext1 */
            case 0xd5: ext = 1; length = 2; break;            /* fixext2 */
            case 0xd6: ext = 1; length = 4; break;            /* fixext4 */
            case 0xd7: ext = 1; length = 8; break;            /* fixext8 */
            case 0xd8: ext = 1; length = 16; break;           /* fixext16 */
            case 0xdc: case 0xde: width = 2; break;           /* array16, map16 */
            case 0xdd: case 0xdf: width = 4; break;           /* array32, map32 */
            default: return -1;                               /* 0xc1: never used */
            }
            if (width) {
                if (size - at < width)
                    return -1;
                uint64_t n = be(data + at, width);
                at += width;
                if (marker == 0xdc || marker == 0xdd)
                    children = n;
                else if (marker == 0xde || marker == 0xdf)
                    children = 2 * n;
                else
                    length = n;
            }
            if (ext) {
                /* Python's msgpack reads only types 0..127 (and -1 as a Timestamp). */
                if (at >= size || data[at] >= 0x80)
                    return -1;
                at++;
            }
        }
        if (length > (uint64_t)(size - at))
            return -1;
        at += (Py_ssize_t)length;
        if (children) {
            /* Every object takes at least one byte: more objects than bytes left is a
               truncated chunk, and keeps the counts far from overflowing. */
            if (children > (uint64_t)(size - at) || depth >= max_depth)
                return -1;
            depth++;
            left[depth] = children;
            in_map[depth] = marker == 0xde || marker == 0xdf || (marker & 0xf0) == 0x80;
        }
    }
    *pos = at;
    return 0;
}

static int is_map_marker(unsigned char marker)
{
    return (marker & 0xf0) == 0x80 || marker == 0xde || marker == 0xdf;
}

static PyObject *scan(PyObject *module, PyObject *args)
{
    Py_buffer view;
    int max_depth = MAX_DEPTH;
    if (!PyArg_ParseTuple(args, "y*|i", &view, &max_depth))
        return NULL;
    /* Deeper than the arrays here allow: the Python parser decides (and checks the depth). */
    if (max_depth > MAX_DEPTH || max_depth < 0)
        max_depth = MAX_DEPTH;
    const unsigned char *data = view.buf;
    Py_ssize_t size = view.len, pos = 0, count = 0;
    const unsigned char *lowest = NULL, *highest = NULL;
    int shaped = size > 0;
    Py_BEGIN_ALLOW_THREADS
    while (shaped && pos < size) {
        /* fixarray(2), fixext8 of type 0, 8 time bytes, then the record's map marker */
        if (size - pos < 12 || data[pos] != 0x92 || data[pos + 1] != 0xd7 ||
            data[pos + 2] != 0x00 || !is_map_marker(data[pos + 11])) {
            shaped = 0;
            break;
        }
        const unsigned char *key = data + pos + 3;
        if (!lowest || memcmp(key, lowest, 8) < 0)
            lowest = key;
        if (!highest || memcmp(key, highest, 8) > 0)
            highest = key;
        pos += 11;
        if (skip_object(data, size, &pos, max_depth) < 0) {
            shaped = 0;
            break;
        }
        count++;
    }
    Py_END_ALLOW_THREADS
    PyObject *result;
    if (shaped)
        result = Py_BuildValue("(ny#y#)", count, (const char *)lowest, (Py_ssize_t)8,
                               (const char *)highest, (Py_ssize_t)8);
    else
        result = Py_NewRef(Py_None);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_VARARGS,
     "scan(chunk, max_depth=512) -> (count, lowest_time_bytes, highest_time_bytes) or None.\n\n"
     "None when the chunk is not made only of [EventTime, map] entries of well-formed "
     "msgpack nested at most max_depth levels; the caller then parses it in Python."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wendelin._entryscan",
    "Fast check of fluentd chunks of [EventTime, map] entries.", -1, methods,
};

PyMODINIT_FUNC PyInit__entryscan(void)
{
    return PyModule_Create(&module);
}
