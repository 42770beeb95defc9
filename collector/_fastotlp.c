/* Fast path for decoding OTLP/HTTP protobuf trace bodies (collector/otlp.py).
 *
 * decode(body, span_record_type, max_attributes, max_value_chars, max_service_chars)
 *     -> list[SpanRecord] | None
 *
 * Reads the protobuf wire format of an ExportTraceServiceRequest directly into the records
 * `collector.otlp._decode_protobuf` would build from the upb-parsed message, for the common
 * case only. It returns None whenever it is not certain to produce exactly what the Python
 * decoder produces with no rejected span, nothing truncated or dropped and no error: malformed
 * or truncated input, invalid UTF-8, a known field with an unexpected wire type, groups, the
 * legacy field 1000 of ResourceSpans, a singular message field present twice (upb would merge
 * them), a span the Python decoder rejects, anything a limit would trim, values nested deeper
 * than MAX_NESTING, out-of-range enums. The caller then runs the Python decoder. It never
 * raises for bad input, only for MemoryError and the like.
 *
 * Fields the decoder does not extract (scope, events, links' other fields, schema URLs, entity
 * refs, ...) are
 * still validated as upb would parse them (wire types, UTF-8, nested framing), from the schema
 * tables below; `known_fields()` exposes those tables so collector.otlp can check them against
 * the installed opentelemetry-proto descriptors and stay on the Python path if they differ.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* Results of the internal parse functions. */
#define OK 0
#define BAIL 1      /* not sure: the caller falls back to the Python decoder */
#define FAIL (-1)   /* a Python exception is set (MemoryError, ...) */

/* Arrays/kvlists nested this deep bail (collector.otlp.MAX_VALUE_DEPTH rejects at 8). */
#define MAX_NESTING 4
/* Links kept per span: collector.limits.MAX_LINKS (a test checks they agree). */
#define MAX_LINKS 128
/* Skipped sub-messages nested deeper than this bail (upb's own limit is 100). */
#define MAX_MESSAGE_DEPTH 48

/* Field types, numbered as google.protobuf.FieldDescriptor.TYPE_*. */
enum {
    PB_DOUBLE = 1, PB_FLOAT = 2, PB_INT64 = 3, PB_UINT64 = 4, PB_INT32 = 5, PB_FIXED64 = 6,
    PB_FIXED32 = 7, PB_BOOL = 8, PB_STRING = 9, PB_GROUP = 10, PB_MESSAGE = 11, PB_BYTES = 12,
    PB_UINT32 = 13, PB_ENUM = 14, PB_SFIXED32 = 15, PB_SFIXED64 = 16, PB_SINT32 = 17,
    PB_SINT64 = 18
};

/* ---- schema tables ------------------------------------------------------------------------ */

typedef struct MsgDef MsgDef;
typedef struct {
    uint32_t number;
    uint8_t type;      /* PB_* */
    uint8_t repeated;
    const MsgDef *sub; /* for PB_MESSAGE */
} FieldDef;
struct MsgDef {
    const char *name;
    const FieldDef *fields;
    int nfields;
};

#define MSG(var) static const MsgDef var
MSG(m_request); MSG(m_resource_spans); MSG(m_resource); MSG(m_entity_ref); MSG(m_scope_spans);
MSG(m_scope); MSG(m_span); MSG(m_event); MSG(m_link); MSG(m_status); MSG(m_key_value);
MSG(m_any_value); MSG(m_array_value); MSG(m_kvlist_value);

static const FieldDef f_request[] = {{1, PB_MESSAGE, 1, &m_resource_spans}};
static const FieldDef f_resource_spans[] = {
    {1, PB_MESSAGE, 0, &m_resource}, {2, PB_MESSAGE, 1, &m_scope_spans}, {3, PB_STRING, 0, NULL}};
static const FieldDef f_resource[] = {
    {1, PB_MESSAGE, 1, &m_key_value}, {2, PB_UINT32, 0, NULL}, {3, PB_MESSAGE, 1, &m_entity_ref}};
static const FieldDef f_entity_ref[] = {
    {1, PB_STRING, 0, NULL}, {2, PB_STRING, 0, NULL}, {3, PB_STRING, 1, NULL},
    {4, PB_STRING, 1, NULL}};
static const FieldDef f_scope_spans[] = {
    {1, PB_MESSAGE, 0, &m_scope}, {2, PB_MESSAGE, 1, &m_span}, {3, PB_STRING, 0, NULL}};
static const FieldDef f_scope[] = {
    {1, PB_STRING, 0, NULL}, {2, PB_STRING, 0, NULL}, {3, PB_MESSAGE, 1, &m_key_value},
    {4, PB_UINT32, 0, NULL}};
static const FieldDef f_span[] = {
    {1, PB_BYTES, 0, NULL}, {2, PB_BYTES, 0, NULL}, {3, PB_STRING, 0, NULL},
    {4, PB_BYTES, 0, NULL}, {5, PB_STRING, 0, NULL}, {6, PB_ENUM, 0, NULL},
    {7, PB_FIXED64, 0, NULL}, {8, PB_FIXED64, 0, NULL}, {9, PB_MESSAGE, 1, &m_key_value},
    {10, PB_UINT32, 0, NULL}, {11, PB_MESSAGE, 1, &m_event}, {12, PB_UINT32, 0, NULL},
    {13, PB_MESSAGE, 1, &m_link}, {14, PB_UINT32, 0, NULL}, {15, PB_MESSAGE, 0, &m_status},
    {16, PB_FIXED32, 0, NULL}};
static const FieldDef f_event[] = {
    {1, PB_FIXED64, 0, NULL}, {2, PB_STRING, 0, NULL}, {3, PB_MESSAGE, 1, &m_key_value},
    {4, PB_UINT32, 0, NULL}};
static const FieldDef f_link[] = {
    {1, PB_BYTES, 0, NULL}, {2, PB_BYTES, 0, NULL}, {3, PB_STRING, 0, NULL},
    {4, PB_MESSAGE, 1, &m_key_value}, {5, PB_UINT32, 0, NULL}, {6, PB_FIXED32, 0, NULL}};
static const FieldDef f_status[] = {{2, PB_STRING, 0, NULL}, {3, PB_ENUM, 0, NULL}};
static const FieldDef f_key_value[] = {
    {1, PB_STRING, 0, NULL}, {2, PB_MESSAGE, 0, &m_any_value}, {3, PB_INT32, 0, NULL}};
static const FieldDef f_any_value[] = {
    {1, PB_STRING, 0, NULL}, {2, PB_BOOL, 0, NULL}, {3, PB_INT64, 0, NULL},
    {4, PB_DOUBLE, 0, NULL}, {5, PB_MESSAGE, 0, &m_array_value},
    {6, PB_MESSAGE, 0, &m_kvlist_value}, {7, PB_BYTES, 0, NULL}, {8, PB_INT32, 0, NULL}};
static const FieldDef f_array_value[] = {{1, PB_MESSAGE, 1, &m_any_value}};
static const FieldDef f_kvlist_value[] = {{1, PB_MESSAGE, 1, &m_key_value}};

#define COUNT(a) ((int)(sizeof(a) / sizeof((a)[0])))
#define DEFINE_MSG(var, name, fields) static const MsgDef var = {name, fields, COUNT(fields)}
DEFINE_MSG(m_request, "opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest",
           f_request);
DEFINE_MSG(m_resource_spans, "opentelemetry.proto.trace.v1.ResourceSpans", f_resource_spans);
DEFINE_MSG(m_resource, "opentelemetry.proto.resource.v1.Resource", f_resource);
DEFINE_MSG(m_entity_ref, "opentelemetry.proto.common.v1.EntityRef", f_entity_ref);
DEFINE_MSG(m_scope_spans, "opentelemetry.proto.trace.v1.ScopeSpans", f_scope_spans);
DEFINE_MSG(m_scope, "opentelemetry.proto.common.v1.InstrumentationScope", f_scope);
DEFINE_MSG(m_span, "opentelemetry.proto.trace.v1.Span", f_span);
DEFINE_MSG(m_event, "opentelemetry.proto.trace.v1.Span.Event", f_event);
DEFINE_MSG(m_link, "opentelemetry.proto.trace.v1.Span.Link", f_link);
DEFINE_MSG(m_status, "opentelemetry.proto.trace.v1.Status", f_status);
DEFINE_MSG(m_key_value, "opentelemetry.proto.common.v1.KeyValue", f_key_value);
DEFINE_MSG(m_any_value, "opentelemetry.proto.common.v1.AnyValue", f_any_value);
DEFINE_MSG(m_array_value, "opentelemetry.proto.common.v1.ArrayValue", f_array_value);
DEFINE_MSG(m_kvlist_value, "opentelemetry.proto.common.v1.KeyValueList", f_kvlist_value);

static const MsgDef *const all_messages[] = {
    &m_request, &m_resource_spans, &m_resource, &m_entity_ref, &m_scope_spans, &m_scope,
    &m_span, &m_event, &m_link, &m_status, &m_key_value, &m_any_value, &m_array_value,
    &m_kvlist_value};

static int wire_type_of(uint8_t type)
{
    switch (type) {
    case PB_DOUBLE: case PB_FIXED64: case PB_SFIXED64:
        return 1;
    case PB_FLOAT: case PB_FIXED32: case PB_SFIXED32:
        return 5;
    case PB_STRING: case PB_BYTES: case PB_MESSAGE:
        return 2;
    case PB_GROUP:
        return 3;
    default:
        return 0;
    }
}

/* ---- wire format ---------------------------------------------------------------------------- */

/* A varint of at most 10 bytes; as upb, bits beyond the 64th are dropped. */
static inline int read_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out)
{
    const uint8_t *p = *pp;
    if (p < end && *p < 0x80) {
        *out = *p;
        *pp = p + 1;
        return 1;
    }
    uint64_t value = 0;
    for (int i = 0; i < 10; i++) {
        if (p >= end)
            return 0;
        uint8_t b = *p++;
        value |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *out = value;
            *pp = p;
            return 1;
        }
    }
    return 0;
}

/* A tag: upb accepts at most 5 bytes and 32 bits, and no field number 0. */
static inline int read_tag(const uint8_t **pp, const uint8_t *end, uint32_t *field, int *wire)
{
    const uint8_t *p = *pp;
    uint32_t value;
    if (p < end && *p < 0x80) {
        value = *p++;
    } else {
        uint64_t v = 0;
        int i = 0;
        for (;; i++) {
            if (i == 5 || p >= end)
                return 0;
            uint8_t b = *p++;
            v |= (uint64_t)(b & 0x7f) << (7 * i);
            if (!(b & 0x80))
                break;
        }
        if (v > 0xffffffffu)
            return 0;
        value = (uint32_t)v;
    }
    *field = value >> 3;
    *wire = (int)(value & 7);
    if (*field == 0)
        return 0;
    *pp = p;
    return 1;
}

/* The payload of a length-delimited field. */
static inline int read_len(const uint8_t **pp, const uint8_t *end, const uint8_t **start,
                           Py_ssize_t *len)
{
    uint64_t n;
    if (!read_varint(pp, end, &n))
        return 0;
    if (n > (uint64_t)(end - *pp))
        return 0;
    *start = *pp;
    *len = (Py_ssize_t)n;
    *pp += n;
    return 1;
}

static inline uint64_t load64(const uint8_t *p)
{
    return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 | (uint64_t)p[3] << 24
           | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 | (uint64_t)p[6] << 48
           | (uint64_t)p[7] << 56;
}

/* Skips an unknown field's value; groups (3, 4) and wire types 6, 7 are refused. */
static int skip_value(const uint8_t **pp, const uint8_t *end, int wire)
{
    uint64_t v;
    const uint8_t *s;
    Py_ssize_t n;
    switch (wire) {
    case 0:
        return read_varint(pp, end, &v);
    case 1:
        if (end - *pp < 8)
            return 0;
        *pp += 8;
        return 1;
    case 2:
        return read_len(pp, end, &s, &n);
    case 5:
        if (end - *pp < 4)
            return 0;
        *pp += 4;
        return 1;
    default:
        return 0;
    }
}

/* Strict UTF-8 (Unicode table 3-7), as upb and Python's decoder check it. */
static int utf8_valid(const uint8_t *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ULL)) {
                i += 8;
                continue;
            }
        }
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        int more;
        uint8_t lo = 0x80, hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) {
            more = 1;
        } else if (c == 0xe0) {
            more = 2;
            lo = 0xa0;
        } else if ((c >= 0xe1 && c <= 0xec) || c == 0xee || c == 0xef) {
            more = 2;
        } else if (c == 0xed) {
            more = 2;
            hi = 0x9f;
        } else if (c == 0xf0) {
            more = 3;
            lo = 0x90;
        } else if (c >= 0xf1 && c <= 0xf3) {
            more = 3;
        } else if (c == 0xf4) {
            more = 3;
            hi = 0x8f;
        } else {
            return 0;
        }
        if (n - i <= more)
            return 0;
        if (s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (int k = 2; k <= more; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf)
                return 0;
        }
        i += more + 1;
    }
    return 1;
}

static int validate_message(const MsgDef *def, const uint8_t *p, const uint8_t *end, int depth);

/* A field the fast path does not extract: validated as upb would parse it (its declared wire
 * type, UTF-8 for strings, sub-messages recursively), or skipped when the schema lacks it. */
static int other_field(const MsgDef *def, uint32_t field, int wire, const uint8_t **pp,
                       const uint8_t *end, int depth)
{
    const FieldDef *f = NULL;
    for (int i = 0; i < def->nfields; i++) {
        if (def->fields[i].number == field) {
            f = &def->fields[i];
            break;
        }
    }
    if (f == NULL)
        return skip_value(pp, end, wire) ? OK : BAIL;
    if (wire != wire_type_of(f->type))
        return BAIL; /* upb keeps it as an unknown field; not worth reproducing */
    if (wire != 2)
        return skip_value(pp, end, wire) ? OK : BAIL;
    const uint8_t *s;
    Py_ssize_t n;
    if (!read_len(pp, end, &s, &n))
        return BAIL;
    if (f->type == PB_STRING)
        return utf8_valid(s, n) ? OK : BAIL;
    if (f->type == PB_MESSAGE)
        return validate_message(f->sub, s, s + n, depth + 1);
    return OK;
}

static int validate_message(const MsgDef *def, const uint8_t *p, const uint8_t *end, int depth)
{
    if (depth > MAX_MESSAGE_DEPTH)
        return BAIL;
    while (p < end) {
        uint32_t field;
        int wire;
        if (!read_tag(&p, end, &field, &wire))
            return BAIL;
        int r = other_field(def, field, wire, &p, end, depth);
        if (r != OK)
            return r;
    }
    return OK;
}

/* ---- strings -------------------------------------------------------------------------------- */

/* Recently seen short ASCII strings (attribute keys, services, common values), direct-mapped:
 * the same str object is returned for equal bytes, with its hash already computed. */
#define CACHE_SLOTS 1024
#define CACHE_MAX_LEN 48
typedef struct {
    PyObject *str;
    uint32_t len;
    uint32_t hash;
} CacheSlot;
static CacheSlot cache[CACHE_SLOTS];

static PyObject *empty_str;   /* "" */
static PyObject *unknown_service;
static PyObject *service_name_key;

static PyObject *new_ascii(const uint8_t *p, Py_ssize_t n)
{
    PyObject *s = PyUnicode_New(n, 127);
    if (s != NULL)
        memcpy(PyUnicode_DATA(s), p, (size_t)n);
    return s;
}

/* A str from UTF-8 bytes into *out (a new reference): OK, BAIL (invalid UTF-8) or FAIL. */
static int make_str(const uint8_t *p, Py_ssize_t n, PyObject **out)
{
    if (n == 0) {
        *out = Py_NewRef(empty_str);
        return OK;
    }
    if (n <= CACHE_MAX_LEN) {
        uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n, bits = 0, w;
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            memcpy(&w, p + i, 8);
            bits |= w;
            h = (h ^ w) * 0xff51afd7ed558ccdULL;
            h ^= h >> 29;
        }
        if (i < n) {
            w = 0;
            for (int k = 0; i + k < n; k++)
                w |= (uint64_t)p[i + k] << (8 * k);
            bits |= w;
            h = (h ^ w) * 0xff51afd7ed558ccdULL;
            h ^= h >> 29;
        }
        if (!(bits & 0x8080808080808080ULL)) {
            h ^= h >> 32;
            CacheSlot *slot = &cache[(h >> 20) & (CACHE_SLOTS - 1)];
            if (slot->hash == (uint32_t)h && slot->len == (uint32_t)n && slot->str != NULL
                && memcmp(PyUnicode_DATA(slot->str), p, (size_t)n) == 0) {
                *out = Py_NewRef(slot->str);
                return OK;
            }
            PyObject *s = new_ascii(p, n);
            if (s == NULL)
                return FAIL;
            if (PyObject_Hash(s) == -1) {
                Py_DECREF(s);
                return FAIL;
            }
            Py_XSETREF(slot->str, Py_NewRef(s));
            slot->len = (uint32_t)n;
            slot->hash = (uint32_t)h;
            *out = s;
            return OK;
        }
    } else {
        Py_ssize_t i = 0;
        for (; i + 8 <= n; i += 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ULL)
                break;
        }
        for (; i < n && p[i] < 0x80; i++) {
        }
        if (i == n) {
            *out = new_ascii(p, n);
            return *out ? OK : FAIL;
        }
    }
    if (!utf8_valid(p, n))
        return BAIL;
    *out = PyUnicode_DecodeUTF8((const char *)p, n, "strict");
    if (*out != NULL)
        return OK;
    if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return BAIL;
    }
    return FAIL;
}

/* ---- attributes ------------------------------------------------------------------------------ */

typedef struct {
    PyObject *record_type;
    Py_ssize_t max_attributes;
    Py_ssize_t max_value_chars;
    Py_ssize_t max_service_chars;
    PyObject *spans;
} Ctx;

static int parse_key_value(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *dict,
                           int nesting, int depth);

/* An AnyValue into *out (new reference). `nesting` counts enclosing arrays/kvlists, as the
 * Python decoder's depth; `depth` is the message depth for skipped fields. */
static int parse_any_value(Ctx *ctx, const uint8_t *p, const uint8_t *end, int nesting,
                           int depth, PyObject **out)
{
    PyObject *value = NULL;
    int seen_array = 0, seen_kvlist = 0;
    int r = OK;
    while (p < end) {
        uint32_t field;
        int wire;
        uint64_t v;
        const uint8_t *s;
        Py_ssize_t n;
        PyObject *item = NULL;
        if (!read_tag(&p, end, &field, &wire)) {
            r = BAIL;
            break;
        }
        switch (field) {
        case 1: /* string_value */
            if (wire != 2 || !read_len(&p, end, &s, &n)) {
                r = BAIL;
                break;
            }
            r = make_str(s, n, &item);
            if (r == OK && PyUnicode_GET_LENGTH(item) > ctx->max_value_chars) {
                Py_DECREF(item);
                item = NULL;
                r = BAIL;
            }
            break;
        case 2: /* bool_value */
            if (wire != 0 || !read_varint(&p, end, &v)) {
                r = BAIL;
                break;
            }
            item = Py_NewRef(v ? Py_True : Py_False);
            break;
        case 3: /* int_value */
            if (wire != 0 || !read_varint(&p, end, &v)) {
                r = BAIL;
                break;
            }
            item = PyLong_FromLongLong((long long)(int64_t)v);
            if (item == NULL)
                r = FAIL;
            break;
        case 4: { /* double_value */
            if (wire != 1 || end - p < 8) {
                r = BAIL;
                break;
            }
            uint64_t bits = load64(p);
            double d;
            memcpy(&d, &bits, 8);
            p += 8;
            item = PyFloat_FromDouble(d);
            if (item == NULL)
                r = FAIL;
            break;
        }
        case 5: /* array_value */
            if (wire != 2 || seen_array++ || nesting >= MAX_NESTING
                || !read_len(&p, end, &s, &n)) {
                r = BAIL;
                break;
            }
            item = PyList_New(0);
            if (item == NULL) {
                r = FAIL;
                break;
            }
            {
                const uint8_t *q = s, *qend = s + n;
                while (q < qend) {
                    uint32_t f2;
                    int w2;
                    if (!read_tag(&q, qend, &f2, &w2)) {
                        r = BAIL;
                        break;
                    }
                    if (f2 != 1) {
                        r = other_field(&m_array_value, f2, w2, &q, qend, depth + 1);
                        if (r != OK)
                            break;
                        continue;
                    }
                    const uint8_t *es;
                    Py_ssize_t en;
                    if (w2 != 2 || !read_len(&q, qend, &es, &en)
                        || PyList_GET_SIZE(item) >= ctx->max_attributes) {
                        r = BAIL;
                        break;
                    }
                    PyObject *element;
                    r = parse_any_value(ctx, es, es + en, nesting + 1, depth + 2, &element);
                    if (r != OK)
                        break;
                    int failed = PyList_Append(item, element);
                    Py_DECREF(element);
                    if (failed) {
                        r = FAIL;
                        break;
                    }
                }
            }
            if (r != OK)
                Py_CLEAR(item);
            break;
        case 6: /* kvlist_value */
            if (wire != 2 || seen_kvlist++ || nesting >= MAX_NESTING
                || !read_len(&p, end, &s, &n)) {
                r = BAIL;
                break;
            }
            item = PyDict_New();
            if (item == NULL) {
                r = FAIL;
                break;
            }
            {
                const uint8_t *q = s, *qend = s + n;
                Py_ssize_t count = 0;
                while (q < qend) {
                    uint32_t f2;
                    int w2;
                    if (!read_tag(&q, qend, &f2, &w2)) {
                        r = BAIL;
                        break;
                    }
                    if (f2 != 1) {
                        r = other_field(&m_kvlist_value, f2, w2, &q, qend, depth + 1);
                        if (r != OK)
                            break;
                        continue;
                    }
                    const uint8_t *es;
                    Py_ssize_t en;
                    if (w2 != 2 || !read_len(&q, qend, &es, &en)
                        || ++count > ctx->max_attributes) {
                        r = BAIL;
                        break;
                    }
                    r = parse_key_value(ctx, es, es + en, item, nesting + 1, depth + 2);
                    if (r != OK)
                        break;
                }
            }
            if (r != OK)
                Py_CLEAR(item);
            break;
        case 7: /* bytes_value */
            if (wire != 2 || !read_len(&p, end, &s, &n) || n > ctx->max_value_chars) {
                r = BAIL;
                break;
            }
            item = PyBytes_FromStringAndSize((const char *)s, n);
            if (item == NULL)
                r = FAIL;
            break;
        default:
            /* Field 8 (string_value_strindex) and any newer member of the oneof would change
             * which value is current: not the fast path's business. */
            r = BAIL;
            break;
        }
        if (r != OK)
            break;
        Py_XSETREF(value, item);
    }
    if (r != OK) {
        Py_XDECREF(value);
        return r;
    }
    *out = value != NULL ? value : Py_NewRef(Py_None);
    return OK;
}

/* One KeyValue, stored into `dict` (a repeated key overwrites, as dict assignment does). */
static int parse_key_value(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *dict,
                           int nesting, int depth)
{
    PyObject *key = NULL;
    const uint8_t *vs = NULL;
    Py_ssize_t vn = 0;
    int r = OK;
    while (p < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        if (!read_tag(&p, end, &field, &wire)) {
            r = BAIL;
            break;
        }
        if (field == 1) {
            PyObject *k;
            if (wire != 2 || !read_len(&p, end, &s, &n)) {
                r = BAIL;
                break;
            }
            r = make_str(s, n, &k);
            if (r != OK)
                break;
            Py_XSETREF(key, k);
        } else if (field == 2) {
            if (wire != 2 || vs != NULL || !read_len(&p, end, &s, &n)) {
                r = BAIL; /* a second value would be merged into the first by upb */
                break;
            }
            vs = s;
            vn = n;
        } else {
            r = other_field(&m_key_value, field, wire, &p, end, depth);
            if (r != OK)
                break;
        }
    }
    if (r == OK) {
        PyObject *value;
        if (vs != NULL) {
            r = parse_any_value(ctx, vs, vs + vn, nesting, depth + 1, &value);
        } else {
            value = Py_NewRef(Py_None);
        }
        if (r == OK) {
            if (PyDict_SetItem(dict, key != NULL ? key : empty_str, value) < 0)
                r = FAIL;
            Py_DECREF(value);
        }
    }
    Py_XDECREF(key);
    return r;
}

/* ---- spans ------------------------------------------------------------------------------------ */

static int all_zero(const uint8_t *p, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i])
            return 0;
    }
    return 1;
}

static int parse_status(const uint8_t *p, const uint8_t *end, int depth,
                        PyObject **message, uint64_t *code)
{
    while (p < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        if (!read_tag(&p, end, &field, &wire))
            return BAIL;
        if (field == 2) {
            PyObject *m;
            if (wire != 2 || !read_len(&p, end, &s, &n))
                return BAIL;
            int r = make_str(s, n, &m);
            if (r != OK)
                return r;
            Py_XSETREF(*message, m);
        } else if (field == 3) {
            if (wire != 0 || !read_varint(&p, end, code))
                return BAIL;
        } else {
            int r = other_field(&m_status, field, wire, &p, end, depth);
            if (r != OK)
                return r;
        }
    }
    return OK;
}

/* A Link's trace and span ids (the last of each, as upb keeps them); its other fields are
 * checked as upb would parse them. Ids of another length are returned as they are. */
static int parse_link(const uint8_t *p, const uint8_t *end, int depth, const uint8_t **trace,
                      Py_ssize_t *trace_n, const uint8_t **span, Py_ssize_t *span_n)
{
    *trace = *span = NULL;
    *trace_n = *span_n = 0;
    while (p < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        if (!read_tag(&p, end, &field, &wire))
            return BAIL;
        if (field == 1 || field == 2) {
            if (wire != 2 || !read_len(&p, end, &s, &n))
                return BAIL;
            if (field == 1) {
                *trace = s;
                *trace_n = n;
            } else {
                *span = s;
                *span_n = n;
            }
        } else {
            int r = other_field(&m_link, field, wire, &p, end, depth);
            if (r != OK)
                return r;
        }
    }
    return OK;
}

static int parse_span(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *service,
                      PyObject *resource, int depth)
{
    const uint8_t *trace_id = NULL, *span_id = NULL, *parent = NULL, *status = NULL;
    Py_ssize_t trace_n = 0, span_n = 0, parent_n = 0, status_n = 0, n_attrs = 0;
    uint64_t kind = 0, start = 0, stop = 0, code = 0;
    PyObject *name = NULL, *attributes = NULL, *message = NULL, *trace_state = NULL;
    PyObject *links = NULL;
    Py_ssize_t n_links = 0;
    PyObject *args[14] = {NULL};
    int r = OK;

    while (p < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        if (!read_tag(&p, end, &field, &wire)) {
            r = BAIL;
            goto done;
        }
        switch (field) {
        case 1:
        case 2:
        case 4:
        case 15:
            if (wire != 2 || !read_len(&p, end, &s, &n)) {
                r = BAIL;
                goto done;
            }
            if (field == 1) {
                trace_id = s;
                trace_n = n;
            } else if (field == 2) {
                span_id = s;
                span_n = n;
            } else if (field == 4) {
                parent = s;
                parent_n = n;
            } else {
                if (status != NULL) { /* upb would merge two statuses */
                    r = BAIL;
                    goto done;
                }
                status = s;
                status_n = n;
            }
            break;
        case 3:
        case 5: {
            PyObject *text;
            if (wire != 2 || !read_len(&p, end, &s, &n)) {
                r = BAIL;
                goto done;
            }
            r = make_str(s, n, &text);
            if (r != OK)
                goto done;
            if (field == 3)
                Py_XSETREF(trace_state, text);
            else
                Py_XSETREF(name, text);
            break;
        }
        case 6:
            if (wire != 0 || !read_varint(&p, end, &kind)) {
                r = BAIL;
                goto done;
            }
            break;
        case 7:
        case 8:
            if (wire != 1 || end - p < 8) {
                r = BAIL;
                goto done;
            }
            if (field == 7)
                start = load64(p);
            else
                stop = load64(p);
            p += 8;
            break;
        case 9:
            if (wire != 2 || !read_len(&p, end, &s, &n) || ++n_attrs > ctx->max_attributes) {
                r = BAIL;
                goto done;
            }
            if (attributes == NULL && (attributes = PyDict_New()) == NULL) {
                r = FAIL;
                goto done;
            }
            r = parse_key_value(ctx, s, s + n, attributes, 0, depth + 1);
            if (r != OK)
                goto done;
            break;
        case 13: { /* a link: its trace and span ids, as the Python decoder keeps them */
            const uint8_t *lt, *ls;
            Py_ssize_t lt_n, ls_n;
            if (wire != 2 || !read_len(&p, end, &s, &n)) {
                r = BAIL;
                goto done;
            }
            r = parse_link(s, s + n, depth + 1, &lt, &lt_n, &ls, &ls_n);
            if (r != OK)
                goto done;
            if (n_links++ < MAX_LINKS && lt_n == 16 && ls_n == 8) {
                PyObject *pair;
                if (links == NULL && (links = PyList_New(0)) == NULL) {
                    r = FAIL;
                    goto done;
                }
                pair = Py_BuildValue("(y#y#)", (const char *)lt, (Py_ssize_t)16,
                                     (const char *)ls, (Py_ssize_t)8);
                if (pair == NULL) {
                    r = FAIL;
                    goto done;
                }
                int appended = PyList_Append(links, pair);
                Py_DECREF(pair);
                if (appended < 0) {
                    r = FAIL;
                    goto done;
                }
            }
            break;
        }
        default:
            r = other_field(&m_span, field, wire, &p, end, depth);
            if (r != OK)
                goto done;
            break;
        }
    }
    /* What the Python decoder rejects (or reads differently): not the fast path's. */
    if (trace_n != 16 || all_zero(trace_id, 16) || span_n != 8 || all_zero(span_id, 8)
        || (parent_n != 0 && parent_n != 8) || stop < start || kind > 0x7fffffff) {
        r = BAIL;
        goto done;
    }
    if (status != NULL) {
        r = parse_status(status, status + status_n, depth + 1, &message, &code);
        if (r != OK)
            goto done;
        if (code > 0x7fffffff) {
            r = BAIL;
            goto done;
        }
    }
    if ((name != NULL && PyUnicode_GET_LENGTH(name) > ctx->max_value_chars)
        || (message != NULL && PyUnicode_GET_LENGTH(message) > ctx->max_value_chars)
        || (trace_state != NULL && PyUnicode_GET_LENGTH(trace_state) > ctx->max_value_chars)) {
        r = BAIL;
        goto done;
    }

    args[0] = PyBytes_FromStringAndSize((const char *)trace_id, 16);
    args[1] = PyBytes_FromStringAndSize((const char *)span_id, 8);
    if (parent_n == 8 && !all_zero(parent, 8))
        args[2] = PyBytes_FromStringAndSize((const char *)parent, 8);
    else
        args[2] = PyBytes_FromStringAndSize(NULL, 0);
    args[3] = Py_NewRef(service);
    args[4] = name != NULL ? Py_NewRef(name) : Py_NewRef(empty_str);
    args[5] = PyLong_FromUnsignedLongLong(kind);
    args[6] = PyLong_FromUnsignedLongLong(start);
    args[7] = PyLong_FromUnsignedLongLong(stop);
    args[8] = Py_NewRef(code == 2 ? Py_True : Py_False);
    args[9] = attributes != NULL ? Py_NewRef(attributes) : PyDict_New();
    args[10] = Py_NewRef(resource);
    args[11] = message != NULL ? Py_NewRef(message) : Py_NewRef(empty_str);
    args[12] = trace_state != NULL ? Py_NewRef(trace_state) : Py_NewRef(empty_str);
    args[13] = links != NULL ? PyList_AsTuple(links) : PyTuple_New(0);
    for (int i = 0; i < 14; i++) {
        if (args[i] == NULL) {
            r = FAIL;
            goto done;
        }
    }
    PyObject *record = PyObject_Vectorcall(ctx->record_type, args, 14, NULL);
    if (record == NULL) {
        r = FAIL;
        goto done;
    }
    if (PyList_Append(ctx->spans, record) < 0)
        r = FAIL;
    Py_DECREF(record);

done:
    for (int i = 0; i < 14; i++)
        Py_XDECREF(args[i]);
    Py_XDECREF(name);
    Py_XDECREF(trace_state);
    Py_XDECREF(links);
    Py_XDECREF(attributes);
    Py_XDECREF(message);
    return r;
}

static int parse_scope_spans(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *service,
                             PyObject *resource, int depth)
{
    while (p < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        int r;
        if (!read_tag(&p, end, &field, &wire))
            return BAIL;
        if (field == 2) {
            if (wire != 2 || !read_len(&p, end, &s, &n))
                return BAIL;
            r = parse_span(ctx, s, s + n, service, resource, depth + 1);
        } else {
            r = other_field(&m_scope_spans, field, wire, &p, end, depth);
        }
        if (r != OK)
            return r;
    }
    return OK;
}

static int parse_resource(Ctx *ctx, const uint8_t *p, const uint8_t *end, PyObject *dict,
                          int depth)
{
    Py_ssize_t count = 0;
    while (p < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        int r;
        if (!read_tag(&p, end, &field, &wire))
            return BAIL;
        if (field == 1) {
            if (wire != 2 || !read_len(&p, end, &s, &n) || ++count > ctx->max_attributes)
                return BAIL;
            r = parse_key_value(ctx, s, s + n, dict, 0, depth + 1);
        } else {
            r = other_field(&m_resource, field, wire, &p, end, depth);
        }
        if (r != OK)
            return r;
    }
    return OK;
}

static int parse_resource_spans(Ctx *ctx, const uint8_t *p, const uint8_t *end, int depth)
{
    const uint8_t *resource_bytes = NULL, *q = p;
    Py_ssize_t resource_n = 0;
    int r;
    /* First pass: everything but the spans, which need the resource's dict and service. */
    while (q < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        if (!read_tag(&q, end, &field, &wire))
            return BAIL;
        if (field == 1) {
            if (wire != 2 || resource_bytes != NULL || !read_len(&q, end, &s, &n))
                return BAIL; /* a second resource would be merged into the first by upb */
            resource_bytes = s;
            resource_n = n;
        } else if (field == 2) {
            if (wire != 2 || !read_len(&q, end, &s, &n))
                return BAIL;
        } else if (field == 1000) {
            return BAIL; /* pre-1.0 instrumentation_library_spans */
        } else {
            r = other_field(&m_resource_spans, field, wire, &q, end, depth);
            if (r != OK)
                return r;
        }
    }
    PyObject *resource = PyDict_New();
    if (resource == NULL)
        return FAIL;
    if (resource_bytes != NULL) {
        r = parse_resource(ctx, resource_bytes, resource_bytes + resource_n, resource,
                           depth + 1);
        if (r != OK) {
            Py_DECREF(resource);
            return r;
        }
    }
    PyObject *service = PyDict_GetItemWithError(resource, service_name_key); /* borrowed */
    if (service == NULL && PyErr_Occurred()) {
        Py_DECREF(resource);
        return FAIL;
    }
    if (service == NULL || !PyUnicode_Check(service) || PyUnicode_GET_LENGTH(service) == 0) {
        service = unknown_service;
    } else if (PyUnicode_GET_LENGTH(service) > ctx->max_service_chars) {
        Py_DECREF(resource);
        return BAIL;
    }
    Py_INCREF(service);
    /* Second pass: the scope spans, in order (framing already checked). */
    r = OK;
    q = p;
    while (q < end && r == OK) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        if (!read_tag(&q, end, &field, &wire)) {
            r = BAIL;
        } else if (field == 2 && wire == 2) {
            r = read_len(&q, end, &s, &n)
                    ? parse_scope_spans(ctx, s, s + n, service, resource, depth + 1) : BAIL;
        } else if (!skip_value(&q, end, wire)) {
            r = BAIL;
        }
    }
    Py_DECREF(service);
    Py_DECREF(resource);
    return r;
}

static int parse_request(Ctx *ctx, const uint8_t *p, const uint8_t *end)
{
    while (p < end) {
        uint32_t field;
        int wire;
        const uint8_t *s;
        Py_ssize_t n;
        int r;
        if (!read_tag(&p, end, &field, &wire))
            return BAIL;
        if (field == 1) {
            if (wire != 2 || !read_len(&p, end, &s, &n))
                return BAIL;
            r = parse_resource_spans(ctx, s, s + n, 1);
        } else {
            r = other_field(&m_request, field, wire, &p, end, 0);
        }
        if (r != OK)
            return r;
    }
    return OK;
}

/* ---- module ---------------------------------------------------------------------------------- */

/* A limit as a Py_ssize_t (huge values saturate); -1 when negative, -2 on error. */
static Py_ssize_t limit_arg(PyObject *obj)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred())
        return -2;
    if (overflow > 0 || v > PY_SSIZE_T_MAX)
        return PY_SSIZE_T_MAX;
    if (overflow < 0 || v < 0)
        return -1;
    return (Py_ssize_t)v;
}

static PyObject *fast_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "decode(body, span_record_type, max_attributes, max_value_chars, "
                        "max_service_chars) takes exactly 5 arguments");
        return NULL;
    }
    Ctx ctx;
    ctx.record_type = args[1];
    ctx.max_attributes = limit_arg(args[2]);
    ctx.max_value_chars = limit_arg(args[3]);
    ctx.max_service_chars = limit_arg(args[4]);
    if (ctx.max_attributes == -2 || ctx.max_value_chars == -2 || ctx.max_service_chars == -2)
        return NULL;
    if (ctx.max_attributes < 0 || ctx.max_value_chars < 0 || ctx.max_service_chars < 0)
        Py_RETURN_NONE; /* negative limits trim everything: the Python decoder's business */
    Py_buffer view;
    if (PyObject_GetBuffer(args[0], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    ctx.spans = PyList_New(0);
    if (ctx.spans == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)view.buf;
    int r = parse_request(&ctx, p, p + view.len);
    PyBuffer_Release(&view);
    if (r == OK)
        return ctx.spans;
    Py_DECREF(ctx.spans);
    if (r == FAIL)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *known_fields(PyObject *module, PyObject *unused)
{
    (void)module;
    (void)unused;
    PyObject *result = PyDict_New();
    if (result == NULL)
        return NULL;
    for (int m = 0; m < COUNT(all_messages); m++) {
        const MsgDef *def = all_messages[m];
        PyObject *fields = PyDict_New();
        if (fields == NULL || PyDict_SetItemString(result, def->name, fields) < 0) {
            Py_XDECREF(fields);
            Py_DECREF(result);
            return NULL;
        }
        Py_DECREF(fields); /* result holds it */
        for (int i = 0; i < def->nfields; i++) {
            const FieldDef *f = &def->fields[i];
            PyObject *number = PyLong_FromUnsignedLong(f->number);
            PyObject *entry = Py_BuildValue("(iOs)", f->type, f->repeated ? Py_True : Py_False,
                                            f->sub != NULL ? f->sub->name : NULL);
            int failed = number == NULL || entry == NULL
                         || PyDict_SetItem(fields, number, entry) < 0;
            Py_XDECREF(number);
            Py_XDECREF(entry);
            if (failed) {
                Py_DECREF(result);
                return NULL;
            }
        }
    }
    return result;
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))fast_decode, METH_FASTCALL,
     "decode(body, span_record_type, max_attributes, max_value_chars, max_service_chars)\n"
     "--\n\n"
     "The spans of an OTLP ExportTraceServiceRequest protobuf body as span_record_type\n"
     "instances, or None when the body needs the full Python decoder."},
    {"known_fields", known_fields, METH_NOARGS,
     "{message full name: {field number: (FieldDescriptor type, repeated, message type)}}:\n"
     "the schema this decoder validates against."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "collector._fastotlp",
    "Compiled fast path for OTLP protobuf trace decoding (see collector.otlp).", -1, methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__fastotlp(void)
{
    if (empty_str == NULL) {
        empty_str = PyUnicode_FromStringAndSize("", 0);
        unknown_service = PyUnicode_InternFromString("unknown_service");
        service_name_key = PyUnicode_InternFromString("service.name");
        if (empty_str == NULL || unknown_service == NULL || service_name_key == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddIntConstant(m, "MAX_LINKS", MAX_LINKS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_NESTING", MAX_NESTING) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
