#!/usr/bin/env bash
# One exit-code table for every command (README.md, "Exit codes"): each subcommand `rsi --help`
# lists answers its own --help with 0, a missing input path with 3 (the file or directory named),
# and a word that is not a command is named with exit code 2 and a did-you-mean, with or without
# --help. The subcommands come from `rsi --help`, so a new one is covered without editing this.
#   bash tests/integration/cli.sh BUILD_DIR SOURCE_DIR
set -euo pipefail

build_dir=${1:?usage: cli.sh BUILD_DIR SOURCE_DIR}
rsi=${RSI:-$build_dir/runtime/rsi}
[[ -x $rsi ]] || { echo "cli.sh: no rsi executable at $rsi" >&2; exit 1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/rsi-cli.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
missing=$tmp/no-such-path

failures=0
expect() {  # expect CODE TEXT COMMAND...: exit code CODE and TEXT in the output
  local want=$1 text=$2 rc=0
  shift 2
  "$rsi" "$@" >"$tmp/out" 2>&1 || rc=$?
  if [[ $rc != "$want" ]] || ! grep -qF -- "$text" "$tmp/out"; then
    echo "FAIL: rsi $* -> exit $rc (want $want, output with '$text'):" >&2
    head -5 "$tmp/out" >&2
    failures=$((failures + 1))
  fi
}

commands=$("$rsi" --help | awk 'tolower($0) ~ /^subcommands:/ { on = 1; next } on && /^  [a-z]/ { print $1 }')
[[ -n $commands ]] || { echo "FAIL: no subcommands in rsi --help" >&2; exit 1; }
count=0
for c in $commands; do
  expect 0 "Usage" "$c" --help
  count=$((count + 1))
done
echo "== $count subcommands answer --help with 0: $(echo $commands | tr '\n' ' ')"

# A missing input path: exit code 3, the path named. Each command with its other required arguments.
expect 3 "$missing" train --genome "$missing"
for c in run submit validate study; do expect 3 "$missing" "$c" "$missing"; done
for c in reproduce verify lineage report audit stop compare status; do expect 3 "$missing: no such directory" "$c" "$missing"; done
expect 3 "$missing: no such directory" show "$missing" 1
expect 3 "$missing: no such directory" export "$missing" 1 --out "$tmp/m.h5"
expect 3 "$missing: no such file" eval "$missing"
expect 3 "$missing: no such directory" approve "$missing" --generation 1 --reason x
expect 3 "$missing: no such directory" reject "$missing" --generation 1 --reason x
expect 3 "not a directory" verify /etc/hostname
mkdir -p "$tmp/empty"
expect 3 "not a run directory" status "$tmp/empty"
echo "== a missing input is exit code 3 for every command that reads one"

expect 2 "'verfy' is not an rsi command (did you mean 'verify'?)" verfy "$tmp"
expect 2 "'nosuch' is not an rsi command" nosuch --help
expect 2 "the commands are: " stauts "$tmp"
echo "== an unknown command is named, exit code 2"

# --json: one object that a JSON parser reads, with the same exit code.
source_dir=${2:?usage: cli.sh BUILD_DIR SOURCE_DIR}
json_check() {  # json_check WANT_RC PYTHON_ASSERTION COMMAND...
  local want=$1 check=$2 rc=0
  shift 2
  "$rsi" "$@" >"$tmp/json" 2>"$tmp/json.err" || rc=$?
  if [[ $rc != "$want" ]] || ! /usr/bin/python3 -c "import json, sys; d = json.load(open('$tmp/json')); assert $check, d"; then
    echo "FAIL: rsi $* (exit $rc, want $want; '$check'):" >&2
    head -c 400 "$tmp/json" "$tmp/json.err" >&2
    failures=$((failures + 1))
  fi
}
json_check 0 "d['valid'] and 'population:' in d['resolved']" validate "$source_dir/tests/manifests/surrogate-small.yaml" --json
printf 'seeds: [x]\npopulation: {size: 0}\n' >"$tmp/bad.yaml"
json_check 3 "not d['valid'] and 'population.size' in d['error']" validate "$tmp/bad.yaml" --json
json_check 0 "d['ok'] and d['generations'] == 2 and d['problems'] == []" verify "$source_dir/tests/golden/lineage-format1" --json
json_check 0 "d['arms'][0]['runs'][0]['generations'] == 2 and d['arms'][0]['metrics']['final_test']['n'] == 1" \
  compare "$source_dir/tests/golden/lineage-format1" --json
golden=$source_dir/tests/golden/lineage-format1
json_check 0 "d['state'] == 'unknown' and 'no status.json' in d['detail'] and d['last_durable_generation'] == 1 and d['best']['id'] == 4 and d['alive'] is None" \
  status "$golden" --json
json_check 0 "d['id'] == 4 and d['parents'] == [1] and d['gain']['parent'] == 1 and '+ ' in d['design_diff']" \
  show "$golden" 4 --json
json_check 0 "d['latest_generation'] == 1 and d['generation_files'] == 2 and isinstance(d['events'], list)" \
  audit "$golden" --json
echo "== --json output parses (validate, verify, compare, status, show, audit)"

((failures == 0)) && echo "cli: all checks passed" || { echo "cli: $failures failure(s)" >&2; exit 1; }
