/* libFuzzer: any bytes through every byte-level pre-tokenizer: the pieces
 * cover the input in order, never empty, and end on character boundaries
 * (as wd_utf8_next steps: malformed bytes are one character each). */
#include "tests/fuzz/fuzz_util.h"
#include "weights/tokenizer_internal.h"
#include "weights/unicode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > 4096) return 0;
    const char *s = (const char *)data;
    unsigned char *boundary = calloc(size + 1, 1);
    if (!boundary) return 0;
    for (size_t i = 0; i < size;) {
        boundary[i] = 1;
        uint32_t cp;
        i += (size_t)wd_utf8_next(s + i, size - i, &cp);
    }
    boundary[size] = 1;
    for (int p = 0; p < WD_PRETOK_COUNT; p++) {
        int *ends = NULL, n = 0;
        if (wd_tok_pretokenize(p, s, size, &ends, &n)) continue; /* out of memory */
        if ((n == 0) != (size == 0)) abort();
        for (int i = 0; i < n; i++) {
            int prev = i ? ends[i - 1] : 0;
            if (ends[i] <= prev || (size_t)ends[i] > size || !boundary[ends[i]]) abort();
        }
        if (n && (size_t)ends[n - 1] != size) abort();
        free(ends);
    }
    free(boundary);
    return 0;
}
