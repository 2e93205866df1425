/* dtype names, sizes and scalar conversions (bf16, f16, quantised rows). */
#include <math.h>
#include <string.h>

#include "kernels/cpu/quant.h"
#include "kernels/cpu/simd.h"
#include "kernels/kernels.h"

const char *wd_dtype_name(wd_dtype dt) {
    static const char *names[] = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q5_K", "Q6_K"};
    _Static_assert(sizeof names / sizeof names[0] == WD_DT_COUNT, "a name per dtype");
    return (unsigned)dt < WD_DT_COUNT ? names[dt] : "?";
}

int wd_dtype_block(wd_dtype dt) {
    switch (dt) {
    case WD_DT_Q8_0:
    case WD_DT_Q4_0:
    case WD_DT_Q4_1: return 32;
    case WD_DT_Q4_K:
    case WD_DT_Q5_K:
    case WD_DT_Q6_K: return 256;
    default: return 1;
    }
}

int wd_dtype_quantised(wd_dtype dt) { return (unsigned)dt < WD_DT_COUNT && dt >= WD_DT_Q8_0; }

size_t wd_dtype_bytes(wd_dtype dt, int64_t n) {
    switch (dt) {
    case WD_DT_F32: return (size_t)n * 4;
    case WD_DT_F16:
    case WD_DT_BF16: return (size_t)n * 2;
    case WD_DT_Q8_0: return (size_t)(n / 32) * 34;
    case WD_DT_Q4_0: return (size_t)(n / 32) * WD_Q4_0_BYTES;
    case WD_DT_Q4_1: return (size_t)(n / 32) * WD_Q4_1_BYTES;
    case WD_DT_Q4_K: return (size_t)(n / 256) * WD_Q4_K_BYTES;
    case WD_DT_Q5_K: return (size_t)(n / 256) * WD_Q5_K_BYTES;
    case WD_DT_Q6_K: return (size_t)(n / 256) * WD_Q6_K_BYTES;
    default: return 0;
    }
}

float wd_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t wd_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float wd_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu;
    uint32_t man = h & 0x3ffu;
    uint32_t u;
    if (exp == 0) {
        if (man == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            u = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (man << 13);
    } else {
        u = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint16_t wd_f32_to_f16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u; /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u; /* rounds to >= 65520: inf */
    if (a < 0x38800000u) {                       /* below 2^-14: subnormal or zero */
        /* value * 2^24 rounded to nearest even gives the subnormal mantissa */
        float v;
        memcpy(&v, &a, 4);
        float m = v * 16777216.0f; /* exact scaling */
        float r = nearbyintf(m);   /* default rounding mode: nearest even */
        return sign | (uint16_t)r;
    }
    uint32_t mant_round = a + 0x0fffu + ((a >> 13) & 1u);
    uint32_t exp = (mant_round >> 23) - 127 + 15;
    return sign | (uint16_t)((exp << 10) | ((mant_round >> 13) & 0x3ffu));
}

void wd_row_to_f32(float *dst, const void *w, wd_dtype dt, int64_t row, int cols) {
    switch (dt) {
    case WD_DT_F32: memcpy(dst, (const float *)w + row * cols, (size_t)cols * 4); break;
    case WD_DT_F16: {
        const uint16_t *p = (const uint16_t *)w + row * cols;
        int i = 0;
#ifdef WD_AVX512
        for (; i + 16 <= cols; i += 16) _mm512_storeu_ps(dst + i, wd_load_f16x16(p + i, 0xffff));
#endif
        for (; i < cols; i++) dst[i] = wd_f16_to_f32(p[i]);
        break;
    }
    case WD_DT_BF16: {
        const uint16_t *p = (const uint16_t *)w + row * cols;
        int i = 0;
#ifdef WD_AVX512
        for (; i + 16 <= cols; i += 16) _mm512_storeu_ps(dst + i, wd_load_bf16x16(p + i, 0xffff));
#endif
        for (; i < cols; i++) dst[i] = wd_bf16_to_f32(p[i]);
        break;
    }
    case WD_DT_Q8_0: {
        const uint8_t *p = (const uint8_t *)w + (size_t)row * wd_dtype_bytes(WD_DT_Q8_0, cols);
        for (int b = 0; b < cols / 32; b++) {
            float d = wd_q8_scale(p + 34 * b);
            const int8_t *q = (const int8_t *)(p + 34 * b + 2);
#ifdef WD_AVX512
            __m512 vd = _mm512_set1_ps(d);
            _mm512_storeu_ps(dst + b * 32, _mm512_mul_ps(vd, wd_load_q8x16(q)));
            _mm512_storeu_ps(dst + b * 32 + 16, _mm512_mul_ps(vd, wd_load_q8x16(q + 16)));
#else
            for (int i = 0; i < 32; i++) dst[b * 32 + i] = d * q[i];
#endif
        }
        break;
    }
    case WD_DT_Q4_0:
    case WD_DT_Q4_1:
    case WD_DT_Q4_K:
    case WD_DT_Q5_K:
    case WD_DT_Q6_K:
        wd_cpu_dequant_row(dst, (const uint8_t *)w + (size_t)row * wd_dtype_bytes(dt, cols), dt, cols);
        break;
    default: memset(dst, 0, (size_t)cols * 4);
    }
}
