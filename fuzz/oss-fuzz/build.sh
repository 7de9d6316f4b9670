#!/usr/bin/env bash
# Builds the fuzz targets the way OSS-Fuzz and ClusterFuzzLite expect: run inside their builder
# image (gcr.io/oss-fuzz-base/base-builder-rust) with the checkout at $SRC/parallels-image, it
# leaves in $OUT, for each target of fuzz/ (`cargo fuzz list`):
#
#   $OUT/<target>                  the libFuzzer binary (`cargo fuzz build -O`)
#   $OUT/<target>_seed_corpus.zip  its seeds (examples/fuzz_seeds.rs, as fuzz/smoke.sh makes them)
#   $OUT/<target>.dict             fuzz/parallels.dict
#   $OUT/<target>.options          max_len and the memory limits libFuzzer runs it with
#
# Also runs outside the builder (fuzz/oss-fuzz/test.sh does, in a temporary $SRC/$OUT): it then
# uses the nightly toolchain if there is one, else RUSTC_BOOTSTRAP=1, as fuzz/smoke.sh does.
# Needs: cargo-fuzz, zip. $WORK (a scratch folder; the builder sets it) holds the seeds.
set -euo pipefail
: "${SRC:?SRC must name the folder holding parallels-image/}" "${OUT:?OUT must name the output folder}"
WORK="${WORK:-$(mktemp -d)}"

# -P: the physical folder, so that a checkout reached through a symbolic link reuses its builds.
cd -P "$SRC/parallels-image"
root=$PWD

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install --locked cargo-fuzz
fi
fuzz=(cargo fuzz)
if [ -z "${FUZZING_ENGINE:-}" ] && ! rustc --version | grep -q nightly; then
    # Outside the builder: its nightly toolchain when installed, else bootstrap the default.
    if rustup run nightly rustc --version >/dev/null 2>&1; then
        fuzz=(cargo +nightly fuzz)
    else
        export RUSTC_BOOTSTRAP=1
    fi
fi

# The seeds come from an example of the library, built as ordinary code: without the builder's
# sanitizer flags (RUSTFLAGS, CFLAGS...), and in its own target folder inside the builder.
echo "oss-fuzz: seeds"
seeds="$WORK/seeds"
rm -rf "$seeds"
seed_target="${CARGO_TARGET_DIR:-}"
if [ -n "${FUZZING_ENGINE:-}" ]; then seed_target="$WORK/seed-target"; fi
env -u RUSTFLAGS -u CFLAGS -u CXXFLAGS -u LDFLAGS -u RUSTC_BOOTSTRAP \
    ${seed_target:+CARGO_TARGET_DIR="$seed_target"} \
    cargo run --quiet --example fuzz_seeds -- "$seeds"

echo "oss-fuzz: cargo fuzz build -O"
(cd fuzz && "${fuzz[@]}" build -O)
built="$root/fuzz/target/x86_64-unknown-linux-gnu/release"

# Longest input libFuzzer makes for each target. header reads 64 bytes; bat a 6-byte prefix and a
# BAT (seeds up to 32 KiB); extension one cluster's body (4 KiB, or 64 KiB for longer inputs);
# the whole-image targets (image, check and their _mutator variants) images up to 128 KiB, the
# seeds' limit (MAX_WHOLE in examples/fuzz_seeds.rs, as fuzz/smoke.sh runs them); roundtrip an
# `arbitrary` description of an image, a few hundred bytes.
max_len() {
    case "$1" in
        header) echo 64 ;;
        bat | extension) echo 65536 ;;
        image | check | image_mutator | check_mutator) echo 131072 ;;
        roundtrip) echo 4096 ;;
        *) echo "oss-fuzz: no max_len for target $1: add it to $0" >&2; return 1 ;;
    esac
}

mkdir -p "$OUT"
mapfile -t targets < <(cd fuzz && "${fuzz[@]}" list)
for t in "${targets[@]}"; do
    len=$(max_len "$t")
    cp "$built/$t" "$OUT/$t"
    cp fuzz/parallels.dict "$OUT/$t.dict"
    # The limits fuzz/README.md states for every target; -timeout: one input this slow is a hang.
    cat >"$OUT/$t.options" <<OPTIONS
[libfuzzer]
max_len = $len
rss_limit_mb = 512
malloc_limit_mb = 512
timeout = 30
OPTIONS
    rm -f "$OUT/${t}_seed_corpus.zip"
    if [ -d "$seeds/$t" ] && [ -n "$(ls -A "$seeds/$t")" ]; then
        (cd "$seeds/$t" && zip -q -r "$OUT/${t}_seed_corpus.zip" .)
    else
        echo "oss-fuzz: no seeds for target $t" >&2
        exit 1
    fi
    echo "oss-fuzz: $t (max_len $len, $(ls "$seeds/$t" | wc -l) seeds)"
done
