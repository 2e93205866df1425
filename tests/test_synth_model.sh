#!/usr/bin/env bash
# The synth_model tool: writes a loadable folder, prints its size, rejects bad options.
set -u
bin="$WD_BINARY_DIR/synth_model"
[ -x "$bin" ] || { echo "SKIPPED: $bin not built"; exit 77; }
tmp=$(mktemp -d "${WD_BINARY_DIR}/tmp_synth_model_XXXXXX")
trap 'rm -rf "$tmp"' EXIT
fail=0
check() { if ! eval "$1"; then echo "FAILED: $1"; fail=1; fi; }

out=$("$bin" --out "$tmp/m" --hidden 32 --heads 2 --kv-heads 1 --layers 1 --experts 2 --ffn 16 \
      --vocab 300 --dtype bf16 --tied --seed 3 2>&1)

check '[ -f "$tmp/m/config.json" ] && [ -f "$tmp/m/model.safetensors" ] && [ -f "$tmp/m/tokenizer.json" ]'
check 'grep -q "\"head_dim\": 16" "$tmp/m/config.json"'
check 'grep -q "\"tie_word_embeddings\": true" "$tmp/m/config.json"'
check 'grep -q "\"torch_dtype\": \"bfloat16\"" "$tmp/m/config.json"'
# 1 embed + 1 layer x (7 + 3*2) + final norm (tied: no lm_head)
check 'echo "$out" | grep -q "^15 tensors"'
check 'echo "$out" | grep -q "bytes"'
check '! grep -q lm_head "$tmp/m/model.safetensors"'

out=$("$bin" --out "$tmp/s" --layers 2 --shard-mb 1 2>&1) || { echo "FAILED: sharded write: $out"; fail=1; }
check '[ -f "$tmp/s/model.safetensors.index.json" ] && [ -f "$tmp/s/model-00001-of-00002.safetensors" ]'

check '"$bin" --help | grep -q "usage: synth_model"'
for bad in "" "--out $tmp/x --hidden abc" "--out $tmp/x --vocab 100" "--out $tmp/x --bogus" \
           "--out $tmp/x --preset nope" "--out $tmp/x --dtype q4" "--out $tmp/x --heads 4 --kv-heads 3"; do
    # shellcheck disable=SC2086
    msg=$("$bin" $bad 2>&1) && { echo "FAILED: accepted: $bad"; fail=1; }
    case "$msg" in synth_model:*) ;; *) echo "FAILED: no message for: $bad: $msg"; fail=1 ;; esac
done
[ $fail -eq 0 ] && echo "test_synth_model: ok"
exit $fail
