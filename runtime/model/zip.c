/*
 * model/zip.c — just enough of the ZIP format to read torch.save files (pytorch_model.bin).
 *
 * torch.save writes a zip whose entries are all *stored* (compression method 0; verified on
 * torch 2.11 output, and PyTorch's writer never compresses), with each tensor's bytes aligned
 * to 64, so a stored entry's bytes can be used in place from the memory-mapped file. ZIP64
 * records are read because a 7B model in one file (Baichuan-7B's 14 GB) needs them. A
 * compressed or encrypted entry is rejected with a clear message instead of being inflated.
 * Every offset read from the file is checked against the file's length before use.
 */
#include "model/model_internal.h"

#include <stdlib.h>
#include <string.h>

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* [off, off + n) lies inside a buffer of `len` bytes (no overflow). */
static bool inside(uint64_t off, uint64_t n, size_t len) { return off <= len && n <= len - off; }

/* Reads the ZIP64 extended-information extra field for the values that were 0xffffffff. */
static int zip64_extra(const uint8_t *extra, size_t n, uint64_t *usize, uint64_t *csize, uint64_t *off)
{
    size_t i = 0;
    while (i + 4 <= n) {
        uint16_t id = rd16(extra + i), sz = rd16(extra + i + 2);
        if (i + 4 + sz > n) return -1;
        if (id == 0x0001) {
            const uint8_t *p = extra + i + 4, *end = p + sz;
            uint64_t *fields[3] = { usize, csize, off };
            for (int k = 0; k < 3; k++) {
                if (*fields[k] != 0xffffffffu) continue;
                if (p + 8 > end) return -1;
                *fields[k] = rd64(p);
                p += 8;
            }
            return 0;
        }
        i += 4 + (size_t)sz;
    }
    return 0;
}

int zip_open(const uint8_t *buf, size_t len, const char *what, zip_entry_t **out, int *count)
{
    *out = NULL;
    *count = 0;
    if (len < 22 || rd32(buf) != 0x04034b50u)
        return lunar_error(LUNAR_EFORMAT, "%s: not a zip archive", what);
    /* the end-of-central-directory record is in the last 64 KiB + 22 bytes */
    size_t eocd = 0;
    bool found = false;
    size_t lo = len > 65557 ? len - 65557 : 0;
    for (size_t i = len - 22 + 1; i-- > lo;)
        if (rd32(buf + i) == 0x06054b50u) { eocd = i; found = true; break; }
    if (!found) return lunar_error(LUNAR_EFORMAT, "%s: zip archive without an end record (truncated?)", what);
    uint64_t nent = rd16(buf + eocd + 10), cdsize = rd32(buf + eocd + 12), cdoff = rd32(buf + eocd + 16);
    if (eocd >= 20 && rd32(buf + eocd - 20) == 0x07064b50u) {        /* ZIP64 locator */
        uint64_t z64 = rd64(buf + eocd - 20 + 8);
        if (!inside(z64, 56, len) || rd32(buf + z64) != 0x06064b50u)
            return lunar_error(LUNAR_EFORMAT, "%s: bad zip64 end record", what);
        nent = rd64(buf + z64 + 32);
        cdsize = rd64(buf + z64 + 40);
        cdoff = rd64(buf + z64 + 48);
    }
    if (!inside(cdoff, cdsize, len) || nent > cdsize / 46 + 1)
        return lunar_error(LUNAR_EFORMAT, "%s: zip central directory outside the file", what);
    zip_entry_t *e = calloc((size_t)nent + 1, sizeof *e);
    if (!e) return lunar_error(LUNAR_ENOMEM, "%s: out of memory", what);
    uint64_t p = cdoff, end = cdoff + cdsize;
    int rc = 0;
    for (uint64_t k = 0; k < nent; k++) {
        if (p + 46 > end || rd32(buf + p) != 0x02014b50u) { rc = lunar_error(LUNAR_EFORMAT, "%s: zip entry %llu: bad central header", what, (unsigned long long)k); break; }
        uint16_t flags = rd16(buf + p + 8), method = rd16(buf + p + 10);
        uint64_t csize = rd32(buf + p + 20), usize = rd32(buf + p + 24), loff = rd32(buf + p + 42);
        uint16_t nlen = rd16(buf + p + 28), xlen = rd16(buf + p + 30), clen = rd16(buf + p + 32);
        if (p + 46 + nlen + xlen + clen > end) { rc = lunar_error(LUNAR_EFORMAT, "%s: zip entry %llu: header past the directory", what, (unsigned long long)k); break; }
        const char *name = (const char *)buf + p + 46;
        if (zip64_extra(buf + p + 46 + nlen, xlen, &usize, &csize, &loff)) { rc = lunar_error(LUNAR_EFORMAT, "%s: zip entry %.*s: bad zip64 field", what, nlen, name); break; }
        if (flags & 1) { rc = lunar_error(LUNAR_EUNSUPPORTED, "%s: zip entry %.*s is encrypted", what, nlen, name); break; }
        if (method != 0) {
            rc = lunar_error(LUNAR_EUNSUPPORTED, "%s: zip entry %.*s is compressed (method %u); torch.save stores entries "
                             "uncompressed, so this file was re-zipped: unzip and save it again with torch.save, or convert to safetensors",
                             what, nlen, name, method);
            break;
        }
        if (csize != usize) { rc = lunar_error(LUNAR_EFORMAT, "%s: zip entry %.*s: stored sizes differ", what, nlen, name); break; }
        if (!inside(loff, 30, len) || rd32(buf + loff) != 0x04034b50u) { rc = lunar_error(LUNAR_EFORMAT, "%s: zip entry %.*s: bad local header", what, nlen, name); break; }
        uint64_t data = loff + 30 + rd16(buf + loff + 26) + rd16(buf + loff + 28);
        if (!inside(data, usize, len)) { rc = lunar_error(LUNAR_EFORMAT, "%s: zip entry %.*s: data runs past the end of the file", what, nlen, name); break; }
        e[k] = (zip_entry_t){ name, nlen, buf + data, usize };
        p += 46 + (uint64_t)nlen + xlen + clen;
    }
    if (rc) { free(e); return rc; }
    *out = e;
    *count = (int)nent;
    return 0;
}

const zip_entry_t *zip_find(const zip_entry_t *e, int n, const char *prefix, size_t plen, const char *name)
{
    size_t nl = strlen(name);
    for (int i = 0; i < n; i++)
        if (e[i].name_len == plen + nl && memcmp(e[i].name, prefix, plen) == 0 && memcmp(e[i].name + plen, name, nl) == 0)
            return &e[i];
    return NULL;
}
