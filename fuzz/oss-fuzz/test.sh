#!/usr/bin/env bash
# Test of fuzz/oss-fuzz/build.sh: runs it as OSS-Fuzz would, in a temporary $SRC (holding a link
# to this checkout, so that the fuzz build of fuzz/smoke.sh is reused) and $OUT, checks that every
# target has its binary, seed corpus zip, dictionary and options in $OUT, then runs each built
# binary for SECONDS (default 5) on its unzipped seeds with its options and dictionary, as
# ClusterFuzz would, failing on a crash.
#
#   fuzz/oss-fuzz/test.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
seconds="${1:-5}"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src" "$tmp/out" "$tmp/work"
ln -s "$root" "$tmp/src/parallels-image"
SRC="$tmp/src" OUT="$tmp/out" WORK="$tmp/work" fuzz/oss-fuzz/build.sh

fail() {
    echo "oss-fuzz test: $*" >&2
    exit 1
}
if rustup run nightly rustc --version >/dev/null 2>&1; then list=(cargo +nightly fuzz list); else list=(env RUSTC_BOOTSTRAP=1 cargo fuzz list); fi
mapfile -t targets < <(cd fuzz && "${list[@]}")
[ ${#targets[@]} -gt 0 ] || fail "no targets"
for t in "${targets[@]}"; do
    out="$tmp/out"
    [ -x "$out/$t" ] || fail "$out/$t: no binary"
    cmp -s "$out/$t.dict" fuzz/parallels.dict || fail "$out/$t.dict is not fuzz/parallels.dict"
    grep -qx '\[libfuzzer\]' "$out/$t.options" || fail "$out/$t.options: no [libfuzzer] section"
    for key in max_len rss_limit_mb malloc_limit_mb timeout; do
        grep -Eq "^$key = [0-9]+$" "$out/$t.options" || fail "$out/$t.options: no $key"
    done
    corpus="$tmp/run/$t"
    mkdir -p "$corpus"
    unzip -q "$out/${t}_seed_corpus.zip" -d "$corpus"
    seeds=$(find "$corpus" -type f | wc -l)
    [ "$seeds" -gt 0 ] || fail "${t}_seed_corpus.zip is empty"
    # The options as libFuzzer flags, as ClusterFuzz passes them.
    flags=()
    while IFS=' =' read -r key value; do
        [ -n "$value" ] && flags+=("-$key=$value")
    done < <(grep ' = ' "$out/$t.options")
    echo "oss-fuzz test: $t, $seeds seeds, ${flags[*]}, ${seconds}s"
    log="$tmp/$t.log"
    if ! "$out/$t" "${flags[@]}" -dict="$out/$t.dict" -max_total_time="$seconds" \
        -print_final_stats=1 "$corpus" >"$log" 2>&1; then
        tail -n 40 "$log"
        fail "$t crashed"
    fi
    grep -q '^Done [0-9]* runs' "$log" || { tail -n 20 "$log"; fail "$t did not finish its run"; }
    grep -E '^stat::number_of_executed_units' "$log" || true
done
echo "oss-fuzz test: ${#targets[@]} targets built into \$OUT with seeds, dictionary and options; each ran ${seconds}s"
