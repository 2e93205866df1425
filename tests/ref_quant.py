#!/usr/bin/env python3
"""Golden files for the quantised dtypes, from gguf-py (llama.cpp's own Python
package on PyPI, `gguf`), not from wdmoe code.

For each of Q4_0, Q4_1, Q4_K, Q5_K, Q6_K it writes tests/data/quant/<TYPE>.bin:

  char magic[4] = "WDQ1"; u32 ggml_type, rows, cols, n   (little-endian)
  u8   blocks[rows * row_bytes]     quantised matrix, row-major
  f32  deq[rows * cols]             gguf.quants.dequantize(blocks)
  f32  x[n * cols]                  activations
  f64  y[n * rows]                  y[t][r] = sum_c deq[r][c] * x[t][c] in float64

The blocks are random bytes (every scale/min/quant bit pattern is a valid block)
with the f16 scale fields set to finite values, some of them zero or subnormal;
for Q4_0/Q4_1 two rows come from gguf's own quantizer. The shapes are odd on
purpose: rows not a multiple of 4, an odd number of blocks per row, and row
sizes that leave rows unaligned.

Usage: python3 -m venv build/venv && build/venv/bin/pip install gguf
       build/venv/bin/python tests/ref_quant.py   (writes tests/data/quant/)
"""
import os
import struct
import sys

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize, quantize

SHAPES = {  # type: (rows, cols, n, offsets of the f16 scale fields in a block)
    T.Q4_0: (7, 224, 3, [0]),
    T.Q4_1: (7, 224, 3, [0, 2]),
    T.Q4_K: (5, 768, 3, [0, 2]),
    T.Q5_K: (5, 768, 3, [0, 2]),
    T.Q6_K: (5, 768, 3, [208]),
}


def make(qt, rng):
    rows, cols, n, f16_offsets = SHAPES[qt]
    bs, tsz = GGML_QUANT_SIZES[qt]
    nb = rows * cols // bs
    blocks = rng.integers(0, 256, size=(nb, tsz), dtype=np.uint8)
    scales = (rng.uniform(0.002, 0.06, size=(nb, len(f16_offsets))) *
              rng.choice([-1.0, 1.0], size=(nb, len(f16_offsets)))).astype(np.float16)
    scales[0, 0] = 0.0                                  # a zero scale
    scales[1, 0] = np.frombuffer(b"\x07\x00", np.float16)[0]  # a subnormal one
    scales[2, -1] = np.frombuffer(b"\x01\x80", np.float16)[0]  # negative subnormal
    for k, off in enumerate(f16_offsets):
        blocks[:, off:off + 2] = scales[:, k:k + 1].view(np.uint8).reshape(nb, 2)
    q = blocks.reshape(rows, cols // bs * tsz)
    if qt in (T.Q4_0, T.Q4_1):  # two rows from gguf's quantizer
        real = rng.standard_normal((2, cols)).astype(np.float32) * 0.05
        q[3:5] = quantize(real, qt)
    deq = dequantize(q, qt).astype(np.float32)
    assert deq.shape == (rows, cols)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    y = x.astype(np.float64) @ deq.astype(np.float64).T
    return rows, cols, n, q, deq, x, y


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "quant")
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(20261204)
    for qt in SHAPES:
        rows, cols, n, q, deq, x, y = make(qt, rng)
        path = os.path.join(out, qt.name + ".bin")
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(b"WDQ1" + struct.pack("<4I", int(qt), rows, cols, n))
            f.write(np.ascontiguousarray(q).tobytes())
            f.write(deq.astype("<f4").tobytes())
            f.write(x.astype("<f4").tobytes())
            f.write(y.astype("<f8").tobytes())
        os.replace(tmp, path)
        print(f"{path}: {qt.name} {rows}x{cols}, n {n}, {os.path.getsize(path)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
