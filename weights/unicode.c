/* Unicode lookups for the pre-tokenizers: general-category class by binary
 * search over the generated ranges, White_Space, and UTF-8 decoding. */
#include "weights/unicode.h"

int wd_uc_class(uint32_t cp) {
    if (cp > 0x10FFFF) return WD_UC_C;
    int lo = 0, hi = wd_ucd_n_ranges - 1; /* last range with start <= cp */
    while (lo < hi) {
        int mid = (lo + hi + 1) / 2;
        if (wd_ucd_ranges[mid].start <= cp) lo = mid;
        else hi = mid - 1;
    }
    return wd_ucd_ranges[lo].cls;
}

int wd_uc_space(uint32_t cp) {
    return (cp >= 0x9 && cp <= 0xD) || cp == 0x20 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

int wd_utf8_next(const char *s, size_t n, uint32_t *cp) {
    const unsigned char *u = (const unsigned char *)s;
    unsigned char c = u[0];
    int len;
    uint32_t v, min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    } else if ((c & 0xE0) == 0xC0) {
        len = 2, v = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, v = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, v = c & 0x07, min = 0x10000;
    } else {
        goto bad;
    }
    if ((size_t)len > n) goto bad;
    for (int i = 1; i < len; i++) {
        if ((u[i] & 0xC0) != 0x80) goto bad;
        v = v << 6 | (u[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) goto bad;
    *cp = v;
    return len;
bad:
    *cp = 0xDC00 + c;
    return 1;
}
