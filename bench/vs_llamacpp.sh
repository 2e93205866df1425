#!/usr/bin/env bash
# vs_llamacpp.sh: wdmoe against llama.cpp on the very same GGUF files, side by side.
#
# llama.cpp is built from the source package of PyPI's llama-cpp-python (its
# vendored llama.cpp; tools llama-bench and llama-quantize), inside build/llamacpp
# with a virtual environment (build/llamacpp/venv) for llama.cpp's gguf-py writer;
# nothing is installed into the system. When that cannot be done (no network, no
# compiler), the script says so and exits 0 without figures.
#
# The model: the synthetic mini Mixtral (hidden 512, 8 layers, 8/2 heads, FFN 1792,
# 8 experts top-2, vocab 32000; 214M parameters) written as F32 GGUF by
# bench/synth_gguf.py, then quantised by llama-quantize to the other types. Per round,
# per type and thread count, llama-bench (pp PROMPT from an empty context, then tg DECODE
# at depth PROMPT: -d PROMPT; 1 repetition after its warm-up) and bench_decode (a
# PROMPT-token prefill and DECODE greedy steps after one untimed warm-up, 1 repetition)
# run one after the other, the order alternating between rounds (A B, B A, ...). The
# table gives medians over rounds, min-max, and the ratio wdmoe / llama.cpp of the
# medians. Both decode at the same depth: wdmoe's DECODE steps follow its PROMPT-token
# prompt (the tokens at positions PROMPT..PROMPT+DECODE-1), and llama-bench's tg fills
# its context with PROMPT tokens first (untimed), then times DECODE tokens at the same
# positions (its JSON's n_depth is checked).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${WDMOE_BUILD:-$ROOT/build}
ROUNDS=3
THREADS="1 2"
TYPES="F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q4_K"
PROMPT=128
DECODE=64
MD=""
UPDATE_DOCS=0
WAIT_IDLE=0
WDMOE_OPTS=""
GGUF=""

usage() {
    cat <<EOF
usage: bench/vs_llamacpp.sh [--rounds N] [--threads "1 2"] [--types "F32 F16 ..."]
                            [--prompt N] [--decode N] [--wdmoe-opts "--no-hugepages"]
                            [--md FILE] [--update-docs] [--gguf FILE] [--wait-idle S]

Runs wdmoe (build/bench_decode) and llama.cpp (llama-bench) on the same GGUF files,
interleaved, --rounds rounds (default $ROUNDS), for each thread count (default "$THREADS")
and weight type (default "$TYPES"; a type wdmoe cannot load is reported as such).
Prints one table of medians, min-max and ratios; --md FILE writes it as Markdown;
--gguf FILE compares on that model file instead (for example SmolLM2-135M-Instruct's Q4_1
GGUF), as it is: one row per thread count, no quantisation.
--update-docs puts it into docs/performance.md between its markers (vs_llamacpp; with
another --prompt vs_llamacpp_pN, with --gguf vs_llamacpp_gguf), and into build/vs/table.md
without --md; --wdmoe-opts passes
options to bench_decode (e.g. --no-hugepages: its weights stay file-mapped, 4 KB pages, as
llama.cpp's; by default they are copied into huge pages) and is named in the table's note.
--wait-idle S: before each llama.cpp/wdmoe pair, wait up to S seconds for a quiet machine
(the CPUs at least 95 % idle over 2 s; on a shared machine); the note says how many pairs
started quiet.
Needs ./build (cmake -S . -B build && cmake --build build) and, the first time,
PyPI for llama-cpp-python's source (built into build/llamacpp, never the system).
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
    --rounds) ROUNDS=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --types) TYPES=$2; shift 2 ;;
    --prompt) PROMPT=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --md) MD=$2; shift 2 ;;
    --wdmoe-opts) WDMOE_OPTS=$2; shift 2 ;;
    --gguf) GGUF=$2; shift 2 ;;
    --update-docs) UPDATE_DOCS=1; shift ;;
    --wait-idle) WAIT_IDLE=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "vs_llamacpp.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done
case "$WAIT_IDLE" in ''|*[!0-9]*) echo "vs_llamacpp.sh: --wait-idle wants seconds (0: no wait)" >&2; exit 2 ;; esac
# --update-docs without --md: the table also goes to build/vs/table.md (checked before the run, not after it)
[ "$UPDATE_DOCS" = 1 ] && [ -z "$MD" ] && MD=$BUILD/vs/table.md
# the default run (mini Mixtral, prompt 128) has the plain markers; another prompt
# length or a --gguf model its own: vs_llamacpp_p512, vs_llamacpp_gguf
tag=vs_llamacpp
[ "$PROMPT" != 128 ] && tag=${tag}_p$PROMPT
[ -n "$GGUF" ] && tag=${tag}_gguf
if [ "$UPDATE_DOCS" = 1 ]; then
    python3 "$ROOT/bench/update_docs.py" "$ROOT/docs/performance.md" "$tag" --check || exit 2
fi
for v in "$ROUNDS" "$PROMPT" "$DECODE"; do
    case "$v" in ''|*[!0-9]*|0) echo "vs_llamacpp.sh: --rounds, --prompt, --decode want positive integers" >&2; exit 2 ;; esac
done

BENCH=$BUILD/bench_decode
if [ ! -x "$BENCH" ]; then
    echo "vs_llamacpp.sh: $BENCH not found: build wdmoe first (cmake -S . -B build && cmake --build build -j2)" >&2
    exit 1
fi

# ---- llama.cpp from PyPI's llama-cpp-python source package ------------------------
LC=$BUILD/llamacpp
LBIN=$LC/lcpp-build/bin
skip() {
    echo "vs_llamacpp.sh: llama.cpp could not be installed ($1); see $LC/setup.log. Skipping the comparison."
    exit 0
}
if [ ! -x "$LBIN/llama-bench" ] || [ ! -x "$LBIN/llama-quantize" ] || [ ! -x "$LC/venv/bin/python" ] ||
   ! "$LC/venv/bin/python" -c "import gguf" 2>/dev/null; then
    mkdir -p "$LC"
    echo "vs_llamacpp.sh: building llama.cpp from llama-cpp-python's source package into $LC (once; minutes) ..."
    {
        [ -x "$LC/venv/bin/python" ] || python3 -m venv "$LC/venv"
        if ! ls "$LC"/src/llama_cpp_python-*.tar.gz >/dev/null 2>&1; then
            "$LC/venv/bin/pip" download --no-binary :all: --no-deps llama-cpp-python -d "$LC/src"
        fi
        tarball=$(ls "$LC"/src/llama_cpp_python-*.tar.gz | tail -1)
        tar xzf "$tarball" -C "$LC/src"
    } >"$LC/setup.log" 2>&1 || skip "no llama-cpp-python source package from PyPI, or no python3 venv"
    SRC=$(ls -d "$LC"/src/llama_cpp_python-*/vendor/llama.cpp | tail -1)
    {
        "$LC/venv/bin/pip" install "$SRC/gguf-py" &&
        cmake -S "$SRC" -B "$LC/lcpp-build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
            -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF &&
        cmake --build "$LC/lcpp-build" -j2 --target llama-bench llama-quantize
    } >>"$LC/setup.log" 2>&1 || skip "the build of llama.cpp or its gguf-py failed"
fi
export LD_LIBRARY_PATH=$LBIN${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

# ---- the GGUF files ------------------------------------------------------------------
VS=$BUILD/vs
mkdir -p "$VS"
MODEL_NOTE="Synthetic mini Mixtral GGUF (hidden 512, 8 layers, 8 experts top-2, vocab 32000)"
if [ -n "$GGUF" ]; then # one given file, under the name "model"
    [ -s "$GGUF" ] || { echo "vs_llamacpp.sh: --gguf $GGUF: no such file" >&2; exit 1; }
    VS=$BUILD/vs-gguf
    mkdir -p "$VS"
    ln -sf "$(cd "$(dirname "$GGUF")" && pwd)/$(basename "$GGUF")" "$VS/mini-model.gguf"
    ln -sf "$VS/mini-model.gguf" "$VS/mini-F32.gguf" # the bandwidth probe's model
    TYPES=model
    MODEL_NOTE="$(basename "$GGUF") as it is"
elif [ ! -s "$VS/mini-F32.gguf" ]; then
    echo "vs_llamacpp.sh: writing the synthetic mini Mixtral as F32 GGUF ..."
    "$LC/venv/bin/python" "$ROOT/bench/synth_gguf.py" "$VS/mini-F32.gguf.tmp" >/dev/null
    mv "$VS/mini-F32.gguf.tmp" "$VS/mini-F32.gguf"
fi
qtype() { case "$1" in Q4_K) echo Q4_K_S ;; *) echo "$1" ;; esac; }
for t in $TYPES; do
    [ "$t" = model ] && continue
    f=$VS/mini-$t.gguf
    [ "$t" = F32 ] || [ -s "$f" ] || {
        "$LBIN/llama-quantize" "$VS/mini-F32.gguf" "$f.tmp" "$(qtype "$t")" >"$VS/quantize-$t.log" 2>&1 &&
            mv "$f.tmp" "$f" || echo "vs_llamacpp.sh: llama-quantize to $t failed (see $VS/quantize-$t.log)"
    }
done

# ---- interleaved rounds ----------------------------------------------------------------
RES=$VS/results.tsv
: >"$RES"
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2>/dev/null | head -1)" ] &&
    COMMIT="$COMMIT+local changes"
run_llama() { # type threads round: pp PROMPT at depth 0, tg DECODE at depth PROMPT (two calls)
    local j=$VS/llama-$1-$2
    if ! "$LBIN/llama-bench" -m "$VS/mini-$1.gguf" -t "$2" -p "$PROMPT" -n 0 -r 1 -o json \
        >"$j-pp.json" 2>"$j-pp.err" ||
       ! "$LBIN/llama-bench" -m "$VS/mini-$1.gguf" -t "$2" -p 0 -n "$DECODE" -d "$PROMPT" -r 1 -o json \
        >"$j-tg.json" 2>"$j-tg.err"; then
        echo "vs_llamacpp.sh: llama-bench failed on $1 (see $j-pp.err, $j-tg.err)"
        return
    fi
    python3 - "$j" "$1" "$2" "$3" "$PROMPT" >>"$RES" <<'EOF'
import json, sys
j, t, th, r, prompt = sys.argv[1:]
for part, kind, depth in (("pp", "prefill", 0), ("tg", "decode", int(prompt))):
    for e in json.load(open("%s-%s.json" % (j, part))):
        if e.get("n_depth", 0) != depth:
            sys.exit("vs_llamacpp.sh: %s-%s.json: n_depth %s, expected %d" % (j, part, e.get("n_depth"), depth))
        print("llama.cpp\t%s\t%s\t%s\t%s\t%.3f" % (t, th, r, kind, e["avg_ts"]))
EOF
}
run_wdmoe() {
    local j=$VS/wdmoe-$1-$2.json
    # shellcheck disable=SC2086
    if "$BENCH" --model "$VS/mini-$1.gguf" --threads "$2" --reps 1 --bw-passes 0 --prompt "$PROMPT" \
        --decode "$DECODE" $WDMOE_OPTS --json "$j" >/dev/null 2>"$VS/wdmoe-$1-$2.err"; then
        python3 -c "
import json, sys
d = json.load(open('$j'))
print('wdmoe\t$1\t$2\t$3\tprefill\t%.3f' % d['prefill_tok_per_s']['median'])
print('wdmoe\t$1\t$2\t$3\tdecode\t%.3f' % d['decode_tok_per_s']['median'])
print('wdmoe\t$1\t$2\t$3\tdecode_cpu\t%.3f' % d['decode_tok_per_cpu_s']['median'])
print('wdmoe\t$1\t$2\t$3\tactive_bytes\t%.0f' % d['active_bytes_per_token'])
print('wdmoe\t$1\t$2\t$3\thugepages\t%d' % d['hugepages'])" >>"$RES"
    else
        echo -e "wdmoe\t$1\t$2\t$3\tunsupported\t0" >>"$RES"
    fi
}
# One thread, decode per CPU-second (what the time slices other processes take do not change):
# the CPU time of llama-bench with 6 tg repetitions at depth PROMPT minus that with 1 (no
# warm-up) is the CPU time of 5 decodes (llama-bench fills the context to depth PROMPT in
# the first repetition and restores that state in the later ones, a copy of the KV cache);
# wdmoe's is bench_decode's "decode, CPU time", at the same depth. Both CPU times go to the
# results per round; the table takes the least of each over the rounds: loading costs
# llama.cpp a system time that varies by up to a second from run to run (page faults of its
# repacked Q4_0/Q4_K weights), as much as the 5 decodes themselves.
run_llama_cpu() { # type round
    /usr/bin/time -f "%U %S" -o "$VS/cpu-1.txt" "$LBIN/llama-bench" -m "$VS/mini-$1.gguf" -t 1 -p 0 \
        -n "$DECODE" -d "$PROMPT" -r 1 --no-warmup -o json >/dev/null 2>&1 || return 0
    /usr/bin/time -f "%U %S" -o "$VS/cpu-6.txt" "$LBIN/llama-bench" -m "$VS/mini-$1.gguf" -t 1 -p 0 \
        -n "$DECODE" -d "$PROMPT" -r 6 --no-warmup -o json >/dev/null 2>&1 || return 0
    python3 -c "
for n in (1, 6):
    print('llama.cpp\t$1\t1\t$2\tcpu_s_%d\t%.3f' % (n, sum(map(float, open('$VS/cpu-%d.txt' % n).read().split()))))" >>"$RES"
}
[ -x /usr/bin/time ] || echo "vs_llamacpp.sh: no /usr/bin/time: the per-CPU-second column stays empty"
# the read bandwidth with each thread count (median of 7 whole passes), for the roofline: once
# per round (a shared machine's bandwidth changes over minutes), each round's decode against
# its own figure
probe_bw() { # round
    for th in $THREADS; do
        "$BENCH" --model "$VS/mini-F32.gguf" --no-hugepages --threads "$th" --reps 1 --prompt 8 \
            --decode 1 --bw-passes 7 --json "$VS/bw-$th.json" >/dev/null 2>&1 &&
            python3 -c "
import json; d = json.load(open('$VS/bw-$th.json'))
print('machine\t-\t$th\t$1\tbandwidth\t%.0f' % d['read_bandwidth_bytes_per_s']['median'])" >>"$RES"
    done
}
idle_pct() { # percent of CPU time idle over the next 2 s (/proc/stat)
    local a b
    read -r _ a </proc/stat; sleep 2; read -r _ b </proc/stat
    python3 -c "a, b = [list(map(int, s.split())) for s in ('$a', '$b')]; d = [y - x for x, y in zip(a, b)]
print(100 * (d[3] + d[4]) // max(1, sum(d[:8])))"
}
PAIRS=0 QUIET=0
wait_idle() { # up to WAIT_IDLE seconds for >= 95 % idle
    [ "$WAIT_IDLE" -gt 0 ] || return 0
    local end=$((SECONDS + WAIT_IDLE))
    PAIRS=$((PAIRS + 1))
    while [ "$SECONDS" -lt "$end" ]; do
        [ "$(idle_pct)" -ge 95 ] && { QUIET=$((QUIET + 1)); return 0; }
    done
    return 0 # not quiet in time: run anyway (the note counts it)
}
for r in $(seq 1 "$ROUNDS"); do
    echo "vs_llamacpp.sh: round $r of $ROUNDS ..."
    probe_bw "$r"
    for t in $TYPES; do
        [ -s "$VS/mini-$t.gguf" ] || continue
        for th in $THREADS; do
            wait_idle
            if [ $((r % 2)) -eq 1 ]; then run_llama "$t" "$th" "$r"; run_wdmoe "$t" "$th" "$r"
            else run_wdmoe "$t" "$th" "$r"; run_llama "$t" "$th" "$r"; fi
            [ "$th" = 1 ] && [ -x /usr/bin/time ] && run_llama_cpu "$t" "$r"
        done
    done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)
QUIET_NOTE=""
[ "$PAIRS" -gt 0 ] && QUIET_NOTE=" $QUIET of $PAIRS pairs started on a quiet machine (at least 95 % idle over 2 s; --wait-idle $WAIT_IDLE)."
export QUIET_NOTE

# ---- the table ----------------------------------------------------------------------------
CPU=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
python3 - "$RES" "$ROUNDS" "$PROMPT" "$DECODE" "$CPU" "$(nproc)" "$COMMIT" "$LOAD0" "$LOAD1" "${MD:-}" "$THREADS" "$TYPES" "$WDMOE_OPTS" "$MODEL_NOTE" <<'EOF'
import datetime, os, statistics, sys
res, rounds, prompt, decode, cpu, cores, commit, load0, load1, md, threads, types, wopts, model_note = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(res) if l.strip()]
val = {}
byround = {}
for eng, t, th, r, kind, v in rows:
    val.setdefault((eng, t, th, kind), []).append(float(v))
    byround.setdefault((eng, t, th, kind), {})[r] = float(v)
# llama.cpp's decode per CPU-second: 5 decodes over the least CPU time of 6 repetitions
# minus the least of 1 (its load's system time varies by up to a second between runs)
for (eng, t, th, kind), v1 in list(val.items()):
    v6 = val.get((eng, t, th, "cpu_s_6"))
    if kind == "cpu_s_1" and v6 and min(v6) > min(v1):
        val[(eng, t, th, "decode_cpu")] = [5 * int(decode) / (min(v6) - min(v1))]
def med(eng, t, th, kind):
    v = val.get((eng, t, th, kind))
    return (statistics.median(v), min(v), max(v)) if v else None
def fmt(m):
    if not m: return "n/a"
    return "%.0f (%.0f-%.0f)" % m if m[0] >= 100 else "%.1f (%.1f-%.1f)" % m
date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
head = ("| type | threads | decode tok/s llama.cpp | decode tok/s wdmoe | ratio | wdmoe %% of roofline "
        "| prefill %s tok/s llama.cpp | prefill wdmoe | ratio | decode per CPU-s llama.cpp | wdmoe | ratio |" % prompt)
lines = [head, "|" + "---|" * 12]
for t in types.split():
    for th in threads.split():
        ld, wd = med("llama.cpp", t, th, "decode"), med("wdmoe", t, th, "decode")
        lp, wp = med("llama.cpp", t, th, "prefill"), med("wdmoe", t, th, "prefill")
        if not (ld or wd):
            if val.get(("wdmoe", t, th, "unsupported")):
                lines.append("| %s | %s | | wdmoe cannot load this type | | | | | | | | |" % (t, th))
            continue
        # each round's decode against the bandwidth probed at the start of that round
        fr = [100 * byround[("wdmoe", t, th, "decode")][r] * byround[("wdmoe", t, th, "active_bytes")][r]
              / byround[("machine", "-", th, "bandwidth")][r]
              for r in byround.get(("wdmoe", t, th, "decode"), {})
              if r in byround.get(("machine", "-", th, "bandwidth"), {})
              and r in byround.get(("wdmoe", t, th, "active_bytes"), {})]
        roof = "%.0f %%" % statistics.median(fr) if fr else "n/a"
        rd = "%.2f" % (wd[0] / ld[0]) if (ld and wd) else "n/a"
        rp = "%.2f" % (wp[0] / lp[0]) if (lp and wp) else "n/a"
        if val.get(("wdmoe", t, th, "unsupported")) and not wd:
            rd = rp = "wdmoe cannot load this type"
        lc, wc = med("llama.cpp", t, th, "decode_cpu"), med("wdmoe", t, th, "decode_cpu")
        rc = "%.2f" % (wc[0] / lc[0]) if (lc and wc) else ""
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            t, th, fmt(ld), fmt(wd), rd, roof, fmt(lp), fmt(wp), rp,
            "%.0f" % lc[0] if lc else "", fmt(wc) if (wc and th == "1") else "", rc if th == "1" else ""))
bws = ", ".join("%s thread%s %.1f GB/s (%.1f-%.1f)" % ((th, "" if th == "1" else "s") + tuple(
                    x / 1e9 for x in med("machine", "-", th, "bandwidth")))
                for th in threads.split() if med("machine", "-", th, "bandwidth"))
hp = [v for (eng, t, th, kind), vs in val.items() if kind == "hugepages" for v in vs]
hp_note = ("copied into transparent huge pages (its default)" if hp and all(hp) else
           "read from the file mapping (4 KB pages)" if hp and not any(hp) else
           "huge pages in some runs only" if hp else "n/a")
note = ("%s; %s, %s cores online; wdmoe %s%s; llama.cpp from llama-cpp-python's source package. "
        "%s, "
        "decode %s tokens at depth %s (both engines: positions %s..%d after a %s-token context; "
        "llama-bench -d %s), prefill %s tokens from an empty context; medians of %s interleaved "
        "rounds (min-max); ratio = wdmoe / llama.cpp. Decode per CPU-second (1 thread, same depth): "
        "tokens per CPU-second of the process, immune to the time slices other processes take; "
        "llama.cpp's from the least CPU time of 6 tg repetitions minus the least of 1 over the rounds "
        "(its load's system time varies by up to a second between runs). Read bandwidth (median of 7 "
        "whole passes over max(1 GiB, 8x LLC), probed at the start of every round; median (min-max) "
        "over the rounds): %s; the roofline column is the median over the rounds of each round's "
        "decode against that round's bandwidth. "
        "wdmoe's weights: %s; llama.cpp reads the 4 KB pages of its file mapping. KV cache: llama.cpp F16 (its default), wdmoe F32. "
        "Load average %s at the start, %s at the end (the machine is shared: figures are noisy).%s"
        % (date, cpu, cores, commit, (" with " + wopts) if wopts else "", model_note, decode, prompt, prompt,
           int(prompt) + int(decode) - 1, prompt, prompt, prompt, rounds, bws or "n/a",
           hp_note, load0, load1, os.environ.get("QUIET_NOTE", "")))
text = "\n".join(lines)
print(text)
print()
print(note)
if md:
    with open(md + ".tmp", "w") as f:
        f.write(note + "\n\n" + text + "\n")
    import os
    os.replace(md + ".tmp", md)
EOF
if [ "$UPDATE_DOCS" = 1 ]; then
    DOC=$ROOT/docs/performance.md
    python3 "$ROOT/bench/update_docs.py" "$DOC" "$tag" "$MD" || exit 1
    echo "vs_llamacpp.sh: updated $DOC"
fi
