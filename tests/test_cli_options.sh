#!/usr/bin/env bash
# The option convention of every command (host/cli_args.c): each option that
# a command's --help shows with a value (`--name VALUE`) also works as
# `--name=VALUE` (so the command's table of value options matches its help),
# llama.cpp's short aliases work where the command has the option, and a value
# that looks like an option stays a value.
set -u
bin="$WDMOE"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAILED: $*"; }
M="$WD_SOURCE_DIR/weights/models/stories260k/moe4-top2"
for cmd in generate eval trace replay serve serve-cell moefy tokenize; do
  help=$("$bin" $cmd --help 2>&1) || { bad "$cmd --help"; continue; }
  opts=$(echo "$help" | grep -oE -- '--[a-z][a-z0-9-]*[ =][A-Z][A-Za-z0-9._]*' | sed 's/[ =].*//' | sort -u)
  [ -n "$opts" ] || { bad "$cmd: no value options found in --help"; continue; }
  for o in $opts; do
    out=$("$bin" $cmd "$o=1" --help 2>&1 >/dev/null)
    if echo "$out" | grep -q "unknown option"; then bad "$cmd $o=1: $out"; else ok; fi
  done
done
# aliases and --name=VALUE give the same text as the long spellings (greedy)
a=$("$bin" generate -m "$M" -p "Once upon" -n 12 -t 1 -s 7 --temp 0 2>/dev/null)
b=$("$bin" generate --model="$M" --prompt="Once upon" --steps=12 --threads=1 --seed=7 --temperature=0 2>/dev/null)
c=$("$bin" generate --model "$M" --prompt "Once upon" --steps 12 --threads 1 --seed 7 --temperature 0 2>/dev/null)
[ -n "$c" ] && [ "$a" = "$c" ] && ok || bad "aliases differ: '$a' vs '$c'"
[ "$b" = "$c" ] && ok || bad "--name=VALUE differs: '$b' vs '$c'"
# -f / --prompt-file: the prompt from a file (one trailing newline dropped)
printf 'Once upon\n' >"$WD_BINARY_DIR/cli_options_prompt.txt"
f=$("$bin" generate -m "$M" -f "$WD_BINARY_DIR/cli_options_prompt.txt" -n 12 -t 1 -s 7 --temp 0 2>/dev/null)
[ "$f" = "$c" ] && ok || bad "-f prompt file differs: '$f' vs '$c'"
rm -f "$WD_BINARY_DIR/cli_options_prompt.txt"
# --json - : the result JSON alone on stdout, never a file named "-"
j=$(cd "$WD_BINARY_DIR" && "$bin" generate -m "$M" -n 3 -t 1 --scenario "$WD_SOURCE_DIR/bench/scenarios/paper-cell.json" --json - 2>/dev/null)
echo "$j" | python3 -c "import json,sys; d=json.load(sys.stdin); assert d['schema_version'] >= 2 and d['git_commit'] and d['seeds']['sampling'] == 42 and d['command_line'][:2] == ['wdmoe', 'generate']" &&
  [ ! -e "$WD_BINARY_DIR/-" ] && ok || bad "generate --json -: '$j'"
# a value that looks like an alias or an option stays the value
d=$("$bin" generate --model "$M" --prompt -p -n 2 --threads 1 2>/dev/null | head -c 2)
[ "$d" = "-p" ] && ok || bad "--prompt -p was not taken as the prompt ('$d')"
e=$("$bin" generate --model "$M" -n 2 --threads 1 --prompt --seed=3 2>/dev/null | head -c 8)
[ "$e" = "--seed=3" ] && ok || bad "--prompt --seed=3 was not taken as the prompt ('$e')"
"$bin" generate --model "$M" --prompt 2>&1 | grep -q "needs a value" && ok || bad "--prompt without a value"
# an alias the command does not have stays unknown; a flag given a value is refused
"$bin" trace -m x 2>&1 | grep -q "unknown option '-m'" && ok || bad "trace -m accepted"
"$bin" generate --model "$M" --ids=1 2>&1 | grep -q "unknown option '--ids=1'" && ok || bad "--ids=1 accepted"
# a Hugging Face folder without tokenizer.json runs on --prompt-ids (the ids are the output)
nt="$WD_BINARY_DIR/cli_options_notok"
rm -rf "$nt" && mkdir -p "$nt" && cp "$M/config.json" "$M/model.safetensors" "$nt/"
g=$("$bin" generate -m "$nt" --prompt-ids 1,403,407 -n 5 -t 1 2>/dev/null | grep "^ids:")
h=$("$bin" generate -m "$M" --prompt-ids 1,403,407 -n 5 -t 1 --ids 2>/dev/null | grep '^ids:')
[ -n "$h" ] && [ "$g" = "$h" ] && ok || bad "no tokenizer.json: '$g' vs '$h'"
"$bin" generate -m "$nt" --prompt hi 2>&1 | grep -q "no tokenizer.json (give the prompt as --prompt-ids)" &&
  ok || bad "no tokenizer.json without --prompt-ids"
rm -rf "$nt"
echo "test_cli_options: $pass passed, $fail failed"
[ $fail -eq 0 ]
