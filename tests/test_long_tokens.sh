#!/usr/bin/env bash
# Tokens longer than any fixed buffer (issue 11): a GGUF whose vocab holds a
# 3000-byte and a 300-byte token, and a tokenizer.json whose 3000-byte added
# token is used in the prompt. generate's stdout must be exactly the bytes
# of the pieces (SentencePiece decoding, written out independently here in
# Python and checked first against the unchanged model): a stack over-read
# used to print memory after 256 bytes.
set -u
bin="$WDMOE"
src="$WD_SOURCE_DIR"
models="$src/weights/models/stories260k"
command -v python3 >/dev/null || { echo "SKIPPED: python3 is needed to write the files"; exit 77; }
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_long_tokens_XXXXXX")
trap '[ -n "${KEEP:-}" ] || rm -rf "$tmp"' EXIT
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }

cat >"$tmp/gguf_vocab.py" <<'PY'
import struct, sys
def rd(b, o, fmt):
    v = struct.unpack_from("<" + fmt, b, o); return v[0], o + struct.calcsize(fmt)
SZ = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "B", 10: "Q", 11: "q", 12: "d"}
def rstr(b, o):
    n, o = rd(b, o, "Q"); return b[o:o + n], o + n
def rval(b, o, t):
    if t == 8: return rstr(b, o)
    if t == 9:
        it, o = rd(b, o, "I"); n, o = rd(b, o, "Q")
        out = []
        for _ in range(n):
            v, o = rval(b, o, it); out.append(v)
        return (it, out), o
    return rd(b, o, SZ[t])
def wstr(s): return struct.pack("<Q", len(s)) + s
def wval(t, v):
    if t == 8: return wstr(v)
    if t == 9:
        it, items = v
        return struct.pack("<IQ", it, len(items)) + b"".join(wval(it, x) for x in items)
    return struct.pack("<" + SZ[t], v)
def load(p):
    b = open(p, "rb").read()
    magic, ver, nt, nkv = struct.unpack_from("<4sIQQ", b, 0); o = 24
    kvs = []
    for _ in range(nkv):
        k, o = rstr(b, o); t, o = rd(b, o, "I"); v, o = rval(b, o, t); kvs.append([k, t, v])
    t0 = o
    for _ in range(nt):
        _, o = rstr(b, o); nd, o = rd(b, o, "I"); o += 8 * nd + 4 + 8
    tinfo = b[t0:o]
    align = next((v for k, t, v in kvs if k == b"general.alignment"), 32)
    data = b[(o + align - 1) // align * align:]
    return dict(ver=ver, nt=nt, kvs=kvs, tinfo=tinfo, data=data, align=align)
def save(g, p):
    h = struct.pack("<4sIQQ", b"GGUF", g["ver"], g["nt"], len(g["kvs"]))
    h += b"".join(wstr(k) + struct.pack("<I", t) + wval(t, v) for k, t, v in g["kvs"]) + g["tinfo"]
    h += b"\0" * (-len(h) % g["align"])
    open(p, "wb").write(h + g["data"])
def tokens(g): return next(v for k, t, v in g["kvs"] if k == b"tokenizer.ggml.tokens")[1]
PY

# 1. the unchanged GGUF: ids, and the Python decoder reproduces its stdout
"$bin" generate --model "$models/moe4-top2.gguf" -n 24 --ids >"$tmp/orig.out" 2>"$tmp/err" ||
    bad "generate on the shipped GGUF: $(cat "$tmp/err")"
# 2. the long-token GGUF: the first generated token and a later one become long
python3 - "$tmp" "$models/moe4-top2.gguf" <<'PY' || bad "writing the long-token GGUF / expected output"
import sys
d, src = sys.argv[1], sys.argv[2]
sys.path.insert(0, d)
import gguf_vocab as G
g = G.load(src)
toks = G.tokens(g)
ttype = next(v for k, t, v in g["kvs"] if k == b"tokenizer.ggml.token_type")[1]
out = open(d + "/orig.out", "rb").read()
ids = [int(x) for x in out.rsplit(b"\nids:", 1)[1].split()]
def decode(toks, ids):
    s = b""
    for i, t in enumerate(ids):
        w = toks[t]
        if ttype[t] == 3: continue                      # control (<s>, </s>)
        if ttype[t] == 6: p = bytes([int(w[3:5], 16)])  # byte fallback <0xNN>
        else: p = w.replace("\u2581".encode(), b" ")
        if p.startswith(b" ") and (i == 0 or ids[i - 1] == 1): p = p[1:]
        s += p
    return s
ids_line = b"ids: " + b" ".join(str(i).encode() for i in ids) + b"\n"
assert out == decode(toks, ids) + b"\n" + ids_line, "the Python decoder does not match"
a = ids[1]
b = next(t for t in ids[3:] if t != a and ttype[t] == 1)
toks[a] = "\u2581".encode() + b"A" * 3000 + "\u00e9".encode()
toks[b] = b"B" * 300
G.save(g, d + "/long.gguf")
want = decode(toks, ids) + b"\n" + ids_line
assert len(want) > 3300
open(d + "/long.want", "wb").write(want)
PY
"$bin" generate --model "$tmp/long.gguf" -n 24 --ids >"$tmp/long.out" 2>"$tmp/err" ||
    bad "generate on the long-token GGUF: $(cat "$tmp/err")"
cmp -s "$tmp/long.out" "$tmp/long.want" && ok ||
    bad "long-token GGUF: stdout differs from the expected bytes ($(wc -c <"$tmp/long.out") vs $(wc -c <"$tmp/long.want"))"

# 3. tokenizer.json: a 3000-byte added token in the prompt is echoed whole
mkdir -p "$tmp/m"
cp "$models/moe4-top2/"* "$tmp/m/"
python3 - "$tmp/m/tokenizer.json" <<'PY' || bad "writing the tokenizer.json"
import json, sys
p = sys.argv[1]
t = json.load(open(p))
long = "Z" * 3000
m = t["model"]
parts = {x for pair in m["merges"] for x in (pair.split(" ") if isinstance(pair, str) else pair)}
i, old = max((v, k) for k, v in m["vocab"].items() if k not in parts)  # a token no merge uses
del m["vocab"][old]
m["merges"] = [x for x in m["merges"] if "".join(x.split(" ") if isinstance(x, str) else x) != old]
m["vocab"][long] = i
t["added_tokens"].append({"id": i, "content": long, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": False})
json.dump(t, open(p, "w"))
open(p + ".id", "w").write(str(i))
PY
long=$(printf 'Z%.0s' $(seq 3000))
"$bin" generate --model "$tmp/m" --prompt "Once upon a ${long} time" -n 0 --ids >"$tmp/p.out" 2>"$tmp/err" ||
    bad "generate with the long added token: $(cat "$tmp/err")"
# (the spaces around an added token follow the tokenizer's normalizer: one or two)
LC_ALL=C grep -qxE "Once upon a {1,2}Z{3000} {1,2}time" <(head -n 1 "$tmp/p.out") && ok ||
    bad "prompt echo with the long added token differs: $(head -c 120 "$tmp/p.out" | od -c | head -3)"
grep -q "^ids: 1 .* $(cat "$tmp/m/tokenizer.json.id") " "$tmp/p.out" && ok || bad "the long added token was not used: $(tail -1 "$tmp/p.out")"

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
