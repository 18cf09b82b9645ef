/*
 * model/pickle.c — reads the state dict inside a torch.save zip (pytorch_model.bin) without
 * executing anything.
 *
 * A pickle is a program for a stack machine, and a general unpickler runs arbitrary code
 * through GLOBAL + REDUCE. This one accepts exactly the opcodes a state dict uses (containers,
 * strings, numbers, memo, persistent ids) and calls exactly the functions a state dict names,
 * each implemented here as data: torch._utils._rebuild_tensor_v2 and _rebuild_parameter make
 * a tensor record, collections.OrderedDict makes an empty dict, torch.*Storage names a dtype.
 * Any other opcode or global is an error naming it. The result must be a dict of name ->
 * tensor; each tensor's bytes are found in the zip entry data/<key> of its storage and used
 * in place (stored entries, 64-byte aligned), after checking offset, size and contiguity.
 *
 * Values live in one arena freed after parsing; every opcode pushes at most one value, so a
 * hostile pickle cannot make the reader use more than a small multiple of its own size.
 */
#include "model/model_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef enum { V_MARK, V_NONE, V_BOOL, V_INT, V_FLOAT, V_STR, V_TUPLE, V_LIST, V_DICT, V_GLOBAL, V_STORAGE, V_TENSOR } vkind_t;

typedef enum { G_REBUILD_TENSOR, G_REBUILD_PARAM, G_ORDERED_DICT, G_STORAGE } gkind_t;

typedef struct value value_t;
struct value {
    vkind_t kind;
    union {
        int64_t i;
        double f;
        struct { const char *s; size_t len; } str;
        struct { value_t **items; size_t n, cap; } seq;   /* tuple, list; dict: k0 v0 k1 v1 ... */
        struct { gkind_t g; lunar_dtype_t dt; const char *name; } glob;
        struct { lunar_dtype_t dt; const char *key; size_t keylen; int64_t numel; } storage;
        struct { lunar_dtype_t dt; const char *key; size_t keylen; int64_t storage_numel, offset; int ndim; int64_t shape[4]; } tensor;
    } u;
};

typedef struct {
    const char *what;
    void **arena;
    size_t narena, caparena;
    value_t **stack;
    size_t sp, capstack;
    value_t **memo;
    size_t capmemo, nmemo;   /* nmemo: distinct slots written (MEMOIZE's next index) */
} vm_t;

#define PERR(...) lunar_error(LUNAR_EFORMAT, __VA_ARGS__)

static void *vm_alloc(vm_t *vm, size_t n)
{
    if (vm->narena == vm->caparena) {
        size_t cap = vm->caparena ? 2 * vm->caparena : 256;
        void **p = realloc(vm->arena, cap * sizeof *p);
        if (!p) return NULL;
        vm->arena = p;
        vm->caparena = cap;
    }
    void *v = calloc(1, n);
    if (v) vm->arena[vm->narena++] = v;
    return v;
}

static value_t *newv(vm_t *vm, vkind_t k)
{
    value_t *v = vm_alloc(vm, sizeof *v);
    if (v) v->kind = k;
    return v;
}

static int push(vm_t *vm, value_t *v)
{
    if (!v) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", vm->what);
    if (vm->sp == vm->capstack) {
        size_t cap = vm->capstack ? 2 * vm->capstack : 64;
        value_t **p = realloc(vm->stack, cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", vm->what);
        vm->stack = p;
        vm->capstack = cap;
    }
    vm->stack[vm->sp++] = v;
    return 0;
}

static value_t *pop(vm_t *vm)
{
    if (vm->sp == 0 || vm->stack[vm->sp - 1]->kind == V_MARK) return NULL;
    return vm->stack[--vm->sp];
}

static int seq_add(vm_t *vm, value_t *s, value_t *item)
{
    if (s->u.seq.n == s->u.seq.cap) {
        size_t cap = s->u.seq.cap ? 2 * s->u.seq.cap : 4;
        value_t **p = vm_alloc(vm, cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", vm->what);
        if (s->u.seq.n) memcpy(p, s->u.seq.items, s->u.seq.n * sizeof *p);
        s->u.seq.items = p;
        s->u.seq.cap = cap;
    }
    s->u.seq.items[s->u.seq.n++] = item;
    return 0;
}

/* Index of the topmost MARK, or -1. */
static long find_mark(const vm_t *vm)
{
    for (size_t i = vm->sp; i-- > 0;)
        if (vm->stack[i]->kind == V_MARK) return (long)i;
    return -1;
}

/* Pops everything above the topmost MARK (and the mark) into a new sequence of kind k. */
static int collect(vm_t *vm, vkind_t k, value_t **out)
{
    long m = find_mark(vm);
    if (m < 0) return PERR("%s: pickle: container without MARK", vm->what);
    value_t *s = newv(vm, k);
    if (!s) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", vm->what);
    for (size_t i = (size_t)m + 1; i < vm->sp; i++) {
        int rc = seq_add(vm, s, vm->stack[i]);
        if (rc) return rc;
    }
    vm->sp = (size_t)m;
    *out = s;
    return 0;
}

static int memo_put(vm_t *vm, uint64_t idx)
{
    if (vm->sp == 0) return PERR("%s: pickle: PUT on an empty stack", vm->what);
    if (idx > (1u << 24)) return PERR("%s: pickle: memo index %llu too large", vm->what, (unsigned long long)idx);
    if (idx >= vm->capmemo) {
        size_t cap = vm->capmemo ? vm->capmemo : 64;
        while (cap <= idx) cap *= 2;
        value_t **p = realloc(vm->memo, cap * sizeof *p);
        if (!p) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", vm->what);
        memset(p + vm->capmemo, 0, (cap - vm->capmemo) * sizeof *p);
        vm->memo = p;
        vm->capmemo = cap;
    }
    if (!vm->memo[idx]) vm->nmemo++;
    vm->memo[idx] = vm->stack[vm->sp - 1];
    return 0;
}

static int memo_get(vm_t *vm, uint64_t idx)
{
    if (idx >= vm->capmemo || !vm->memo[idx]) return PERR("%s: pickle: memo %llu read before it was written", vm->what, (unsigned long long)idx);
    return push(vm, vm->memo[idx]);
}

static const struct { const char *mod, *name; gkind_t g; lunar_dtype_t dt; } globals[] = {
    { "torch._utils", "_rebuild_tensor_v2", G_REBUILD_TENSOR, 0 },
    { "torch._utils", "_rebuild_parameter", G_REBUILD_PARAM, 0 },
    { "collections", "OrderedDict", G_ORDERED_DICT, 0 },
    { "torch", "FloatStorage", G_STORAGE, LUNAR_DTYPE_F32 },
    { "torch", "HalfStorage", G_STORAGE, LUNAR_DTYPE_F16 },
    { "torch", "BFloat16Storage", G_STORAGE, LUNAR_DTYPE_BF16 },
    { "torch", "IntStorage", G_STORAGE, LUNAR_DTYPE_I32 },
    { "torch", "LongStorage", G_STORAGE, LUNAR_DTYPE_I64 },
    { "torch", "ByteStorage", G_STORAGE, LUNAR_DTYPE_U8 },
    { "torch", "CharStorage", G_STORAGE, LUNAR_DTYPE_I8 },
    { "torch", "BoolStorage", G_STORAGE, LUNAR_DTYPE_BOOL },
    { "torch", "DoubleStorage", G_STORAGE, LUNAR_DTYPE_F64 },
};

static int make_global(vm_t *vm, const char *mod, size_t ml, const char *name, size_t nl)
{
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        if (strlen(globals[i].mod) == ml && strlen(globals[i].name) == nl && memcmp(globals[i].mod, mod, ml) == 0 &&
            memcmp(globals[i].name, name, nl) == 0) {
            value_t *v = newv(vm, V_GLOBAL);
            if (v) {
                v->u.glob.g = globals[i].g;
                v->u.glob.dt = globals[i].dt;
                v->u.glob.name = globals[i].name;
            }
            return push(vm, v);
        }
    return lunar_error(LUNAR_EUNSUPPORTED, "%s: pickle refers to %.*s.%.*s, which a plain state dict never does "
                       "(lunar reads state dicts only and runs no pickle code)", vm->what,
                       (int)(ml > 80 ? 80 : ml), mod, (int)(nl > 80 ? 80 : nl), name);
}

static bool is_int(const value_t *v) { return v && (v->kind == V_INT || v->kind == V_BOOL); }

/* ('storage', torch.XStorage, key, location, numel) -> a storage record. */
static int persistent_load(vm_t *vm, value_t *pid)
{
    if (!pid || pid->kind != V_TUPLE || pid->u.seq.n != 5) return PERR("%s: pickle: persistent id is not a storage tuple", vm->what);
    value_t **it = pid->u.seq.items;
    if (it[0]->kind != V_STR || it[0]->u.str.len != 7 || memcmp(it[0]->u.str.s, "storage", 7) != 0 ||
        it[1]->kind != V_GLOBAL || it[1]->u.glob.g != G_STORAGE || it[2]->kind != V_STR || !is_int(it[4]) || it[4]->u.i < 0)
        return PERR("%s: pickle: persistent id is not ('storage', type, key, location, numel)", vm->what);
    value_t *s = newv(vm, V_STORAGE);
    if (s) {
        s->u.storage.dt = it[1]->u.glob.dt;
        s->u.storage.key = it[2]->u.str.s;
        s->u.storage.keylen = it[2]->u.str.len;
        s->u.storage.numel = it[4]->u.i;
    }
    return push(vm, s);
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks[, metadata]) */
static int rebuild_tensor(vm_t *vm, value_t *args)
{
    if (args->u.seq.n < 4) return PERR("%s: pickle: _rebuild_tensor_v2 with %zu arguments", vm->what, args->u.seq.n);
    value_t **a = args->u.seq.items, *st = a[0], *size = a[2], *stride = a[3];
    if (st->kind != V_STORAGE || !is_int(a[1]) || size->kind != V_TUPLE || stride->kind != V_TUPLE ||
        size->u.seq.n != stride->u.seq.n)
        return PERR("%s: pickle: malformed _rebuild_tensor_v2 arguments", vm->what);
    if (size->u.seq.n > 4) return lunar_error(LUNAR_EUNSUPPORTED, "%s: a tensor of %zu dimensions (at most 4)", vm->what, size->u.seq.n);
    value_t *t = newv(vm, V_TENSOR);
    if (!t) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", vm->what);
    t->u.tensor.dt = st->u.storage.dt;
    t->u.tensor.key = st->u.storage.key;
    t->u.tensor.keylen = st->u.storage.keylen;
    t->u.tensor.storage_numel = st->u.storage.numel;
    t->u.tensor.offset = a[1]->u.i;
    t->u.tensor.ndim = (int)size->u.seq.n;
    int64_t expect = 1;
    for (int d = t->u.tensor.ndim - 1; d >= 0; d--) {
        value_t *sz = size->u.seq.items[d], *sd = stride->u.seq.items[d];
        if (!is_int(sz) || !is_int(sd) || sz->u.i < 0) return PERR("%s: pickle: tensor size/stride is not an integer", vm->what);
        t->u.tensor.shape[d] = sz->u.i;
        if (sz->u.i != 1 && sd->u.i != expect)
            return lunar_error(LUNAR_EUNSUPPORTED, "%s: a tensor is not contiguous (stride %lld where %lld was expected); "
                               "save .contiguous() tensors", vm->what, (long long)sd->u.i, (long long)expect);
        if (sz->u.i && expect > INT64_MAX / sz->u.i) return PERR("%s: pickle: tensor size overflows", vm->what);
        expect *= sz->u.i;
    }
    if (t->u.tensor.offset < 0 || t->u.tensor.offset > t->u.tensor.storage_numel ||
        expect > t->u.tensor.storage_numel - t->u.tensor.offset)
        return PERR("%s: pickle: tensor of %lld elements at offset %lld runs past its storage of %lld", vm->what,
                    (long long)expect, (long long)t->u.tensor.offset, (long long)t->u.tensor.storage_numel);
    return push(vm, t);
}

static int reduce(vm_t *vm)
{
    value_t *args = pop(vm), *fn = pop(vm);
    if (!args || !fn || args->kind != V_TUPLE || fn->kind != V_GLOBAL)
        return PERR("%s: pickle: REDUCE needs a global and an argument tuple", vm->what);
    switch (fn->u.glob.g) {
    case G_REBUILD_TENSOR: return rebuild_tensor(vm, args);
    case G_REBUILD_PARAM:
        if (args->u.seq.n < 1 || args->u.seq.items[0]->kind != V_TENSOR) return PERR("%s: pickle: bad _rebuild_parameter", vm->what);
        return push(vm, args->u.seq.items[0]);
    case G_ORDERED_DICT:
        if (args->u.seq.n != 0) return PERR("%s: pickle: OrderedDict with arguments", vm->what);
        return push(vm, newv(vm, V_DICT));
    default: return lunar_error(LUNAR_EUNSUPPORTED, "%s: pickle calls torch.%s, which a state dict never does", vm->what, fn->u.glob.name);
    }
}

/* Bounds-checked readers over the pickle bytes. */
#define NEED(n) do { if ((size_t)(end - p) < (size_t)(n)) return PERR("%s: pickle: truncated at byte %zu", what, (size_t)(p - buf)); } while (0)

static uint64_t le(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static int run(vm_t *vm, const uint8_t *buf, size_t len, value_t **result)
{
    const char *what = vm->what;
    const uint8_t *p = buf, *end = buf + len;
    int rc = 0;
    value_t *v, *k, *t;
    while (!rc) {
        NEED(1);
        uint8_t op = *p++;
        switch (op) {
        case 0x80: NEED(1); if (*p > 5) return PERR("%s: pickle protocol %d", what, *p); p++; break;     /* PROTO */
        case 0x95: NEED(8); p += 8; break;                                                               /* FRAME */
        case '.':                                                                                        /* STOP */
            if (vm->sp != 1 || vm->stack[0]->kind == V_MARK) return PERR("%s: pickle: STOP with %zu values on the stack", what, vm->sp);
            *result = vm->stack[0];
            return 0;
        case '}': rc = push(vm, newv(vm, V_DICT)); break;
        case ']': rc = push(vm, newv(vm, V_LIST)); break;
        case ')': rc = push(vm, newv(vm, V_TUPLE)); break;
        case '(': rc = push(vm, newv(vm, V_MARK)); break;
        case 'N': rc = push(vm, newv(vm, V_NONE)); break;
        case 0x88: case 0x89:                                                                            /* NEWTRUE/FALSE */
            if ((v = newv(vm, V_BOOL))) v->u.i = op == 0x88;
            rc = push(vm, v);
            break;
        case 'K': case 'M': case 'J': {                                                                  /* BININT1/2/4 */
            int n = op == 'K' ? 1 : op == 'M' ? 2 : 4;
            NEED(n);
            if ((v = newv(vm, V_INT))) v->u.i = op == 'J' ? (int64_t)(int32_t)le(p, 4) : (int64_t)le(p, n);
            p += n;
            rc = push(vm, v);
            break;
        }
        case 0x8a: {                                                                                     /* LONG1 */
            NEED(1);
            int n = *p++;
            NEED(n);
            if (n > 8) return PERR("%s: pickle: integer of %d bytes", what, n);
            uint64_t u = n ? le(p, n) : 0;
            if (n && n < 8 && (p[n - 1] & 0x80)) u |= ~(uint64_t)0 << (8 * n);   /* sign-extend */
            p += n;
            if ((v = newv(vm, V_INT))) v->u.i = (int64_t)u;
            rc = push(vm, v);
            break;
        }
        case 'G': {                                                                                      /* BINFLOAT (big-endian) */
            NEED(8);
            uint64_t u = 0;
            for (int i = 0; i < 8; i++) u = (u << 8) | p[i];
            p += 8;
            if ((v = newv(vm, V_FLOAT))) memcpy(&v->u.f, &u, 8);
            rc = push(vm, v);
            break;
        }
        case 'X': case 0x8c: {                                                                           /* BINUNICODE, SHORT_BINUNICODE */
            int n = op == 'X' ? 4 : 1;
            NEED(n);
            uint64_t l = le(p, n);
            p += n;
            NEED(l);
            if ((v = newv(vm, V_STR))) { v->u.str.s = (const char *)p; v->u.str.len = (size_t)l; }
            p += l;
            rc = push(vm, v);
            break;
        }
        case 'c': {                                                                                      /* GLOBAL "mod\nname\n" */
            const uint8_t *nl1 = memchr(p, '\n', (size_t)(end - p));
            const uint8_t *nl2 = nl1 ? memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1)) : NULL;
            if (!nl2) return PERR("%s: pickle: truncated GLOBAL", what);
            rc = make_global(vm, (const char *)p, (size_t)(nl1 - p), (const char *)nl1 + 1, (size_t)(nl2 - nl1 - 1));
            p = nl2 + 1;
            break;
        }
        case 0x93: {                                                                                     /* STACK_GLOBAL */
            value_t *name = pop(vm), *mod = pop(vm);
            if (!name || !mod || name->kind != V_STR || mod->kind != V_STR) return PERR("%s: pickle: bad STACK_GLOBAL", what);
            rc = make_global(vm, mod->u.str.s, mod->u.str.len, name->u.str.s, name->u.str.len);
            break;
        }
        case 'q': NEED(1); rc = memo_put(vm, *p++); break;                                               /* BINPUT */
        case 'r': NEED(4); rc = memo_put(vm, le(p, 4)); p += 4; break;                                   /* LONG_BINPUT */
        case 0x94: rc = memo_put(vm, vm->nmemo); break;                                                  /* MEMOIZE */
        case 'h': NEED(1); rc = memo_get(vm, *p++); break;                                               /* BINGET */
        case 'j': NEED(4); rc = memo_get(vm, le(p, 4)); p += 4; break;                                   /* LONG_BINGET */
        case 't': rc = collect(vm, V_TUPLE, &v); if (!rc) rc = push(vm, v); break;                       /* TUPLE */
        case 0x85: case 0x86: case 0x87: {                                                               /* TUPLE1/2/3 */
            size_t n = (size_t)(op - 0x84);
            if (vm->sp < n) return PERR("%s: pickle: TUPLE%zu on a short stack", what, n);
            if (!(t = newv(vm, V_TUPLE))) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", what);
            for (size_t i = vm->sp - n; i < vm->sp && !rc; i++) {
                if (vm->stack[i]->kind == V_MARK) return PERR("%s: pickle: MARK inside TUPLE%zu", what, n);
                rc = seq_add(vm, t, vm->stack[i]);
            }
            vm->sp -= n;
            if (!rc) rc = push(vm, t);
            break;
        }
        case 'Q': rc = persistent_load(vm, pop(vm)); break;                                              /* BINPERSID */
        case 'R': rc = reduce(vm); break;                                                                /* REDUCE */
        case 's': case 'u': {                                                                            /* SETITEM(S) */
            value_t *items = NULL;
            if (op == 's') {
                v = pop(vm);
                k = pop(vm);
                if (!v || !k) return PERR("%s: pickle: SETITEM on a short stack", what);
                if (!(items = newv(vm, V_TUPLE))) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", what);
                if ((rc = seq_add(vm, items, k)) || (rc = seq_add(vm, items, v))) return rc;
            } else if ((rc = collect(vm, V_TUPLE, &items))) {
                return rc;
            }
            if (items->u.seq.n % 2) return PERR("%s: pickle: SETITEMS with an odd item count", what);
            if (vm->sp == 0 || (t = vm->stack[vm->sp - 1])->kind != V_DICT) return PERR("%s: pickle: SETITEM(S) without a dict", what);
            for (size_t i = 0; i < items->u.seq.n && !rc; i++) rc = seq_add(vm, t, items->u.seq.items[i]);
            break;
        }
        case 'a': case 'e': {                                                                            /* APPEND(S) */
            value_t *items = NULL;
            if (op == 'a') {
                if (!(v = pop(vm))) return PERR("%s: pickle: APPEND on a short stack", what);
                if (!(items = newv(vm, V_TUPLE)) || seq_add(vm, items, v)) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", what);
            } else if ((rc = collect(vm, V_TUPLE, &items))) {
                return rc;
            }
            if (vm->sp == 0 || (t = vm->stack[vm->sp - 1])->kind != V_LIST) return PERR("%s: pickle: APPEND(S) without a list", what);
            for (size_t i = 0; i < items->u.seq.n && !rc; i++) rc = seq_add(vm, t, items->u.seq.items[i]);
            break;
        }
        case 'b':                                                                                        /* BUILD */
            /* only a state dict's OrderedDict gets a state (its _metadata attribute): dropped */
            if (!(v = pop(vm)) || vm->sp == 0 || vm->stack[vm->sp - 1]->kind != V_DICT)
                return PERR("%s: pickle: BUILD on something other than a dict", what);
            break;
        case '0': if (!pop(vm)) return PERR("%s: pickle: POP on an empty stack", what); break;          /* POP */
        default:
            return lunar_error(LUNAR_EUNSUPPORTED, "%s: pickle opcode 0x%02x at byte %zu is not one a state dict uses "
                               "(lunar runs no pickle code)", what, op, (size_t)(p - 1 - buf));
        }
    }
    return rc;
}

static void vm_free(vm_t *vm)
{
    for (size_t i = 0; i < vm->narena; i++) free(vm->arena[i]);
    free(vm->arena);
    free(vm->stack);
    free(vm->memo);
}

int pt_parse(const uint8_t *buf, size_t len, const char *what, pt_tensor_fn fn, void *ctx)
{
    if (len >= 2 && buf[0] == 0x80 && buf[1] <= 5)
        return lunar_error(LUNAR_EUNSUPPORTED, "%s: the legacy (before PyTorch 1.6) torch.save format is not supported; "
                           "load and save it again with a current torch, or convert it to safetensors", what);
    zip_entry_t *ents;
    int n, rc = zip_open(buf, len, what, &ents, &n);
    if (rc) return rc;
    const zip_entry_t *pkl = NULL;
    for (int i = 0; i < n && !pkl; i++) {
        const char *slash = memchr(ents[i].name, '/', ents[i].name_len);
        if (slash && (size_t)(ents[i].name + ents[i].name_len - slash) == 9 && memcmp(slash, "/data.pkl", 9) == 0) pkl = &ents[i];
    }
    if (!pkl) { free(ents); return lunar_error(LUNAR_EFORMAT, "%s: no */data.pkl in the archive (not a torch.save file)", what); }
    size_t plen = pkl->name_len - 8;   /* "<archive>/" */
    const zip_entry_t *bo = zip_find(ents, n, pkl->name, plen, "byteorder");
    if (bo && !(bo->size == 6 && memcmp(bo->data, "little", 6) == 0)) {
        free(ents);
        return lunar_error(LUNAR_EUNSUPPORTED, "%s: tensors saved big-endian", what);
    }
    vm_t vm = { .what = what };
    value_t *root = NULL;
    rc = run(&vm, pkl->data, (size_t)pkl->size, &root);
    if (!rc && root->kind != V_DICT) rc = PERR("%s: the pickle holds no dict of tensors (is it a full checkpoint, not a state dict?)", what);
    for (size_t i = 0; !rc && i + 1 < root->u.seq.n; i += 2) {
        value_t *k = root->u.seq.items[i], *t = root->u.seq.items[i + 1];
        if (k->kind != V_STR || k->u.str.len == 0 || k->u.str.len > 255 || memchr(k->u.str.s, 0, k->u.str.len)) {
            rc = PERR("%s: a state dict key is not a tensor name", what);
            break;
        }
        char name[256];
        memcpy(name, k->u.str.s, k->u.str.len);
        name[k->u.str.len] = 0;
        if (t->kind != V_TENSOR) { rc = PERR("%s: tensor %s: the value is not a tensor", what, name); break; }
        char key[96];
        if (t->u.tensor.keylen > 80) { rc = PERR("%s: tensor %s: storage key too long", what, name); break; }
        snprintf(key, sizeof key, "data/%.*s", (int)t->u.tensor.keylen, t->u.tensor.key);
        const zip_entry_t *d = zip_find(ents, n, pkl->name, plen, key);
        size_t es = lunar_dtype_size(t->u.tensor.dt);
        if (!d) { rc = PERR("%s: tensor %s: storage %s is not in the archive", what, name, key); break; }
        if ((uint64_t)t->u.tensor.storage_numel > d->size / es) {
            rc = PERR("%s: tensor %s: storage %s holds %llu bytes, fewer than its %lld elements need", what, name, key,
                      (unsigned long long)d->size, (long long)t->u.tensor.storage_numel);
            break;
        }
        size_t nbytes = (size_t)model_numel(t->u.tensor.ndim, t->u.tensor.shape) * es;
        if (fn) rc = fn(ctx, name, t->u.tensor.dt, t->u.tensor.ndim, t->u.tensor.shape,
                        d->data + (size_t)t->u.tensor.offset * es, nbytes);
    }
    vm_free(&vm);
    free(ents);
    return rc;
}

/* Runs a bare pickle (no zip) to its STOP: for the tests of the opcode and global filters. */
int pt_run_pickle_for_test(const uint8_t *buf, size_t len, const char *what)
{
    vm_t vm = { .what = what };
    value_t *root = NULL;
    int rc = run(&vm, buf, len, &root);
    vm_free(&vm);
    return rc;
}

typedef struct { lunar_model_t *m; int fi; } ptctx_t;

static int add_one(void *ctx, const char *name, lunar_dtype_t dt, int ndim, const int64_t *shape, const void *data, size_t nbytes)
{
    ptctx_t *c = ctx;
    (void)nbytes;
    int rc = model_add_tensor(c->m, name, dt, ndim, shape, (void *)data, c->m->files[c->fi].path);
    return rc < 0 ? rc : 0;
}

int pt_load(lunar_model_t *m, int fi)
{
    ptctx_t c = { m, fi };
    return pt_parse(m->files[fi].map, m->files[fi].size, m->files[fi].path, add_one, &c);
}
