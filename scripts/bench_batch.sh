#!/usr/bin/env bash
# Batch check throughput: `prlimg check --recursive` over 10,000 small images (every defect of
# the corrupt catalogue on several shapes, with several seeds, and the clean shapes), with 1 and
# 2 threads, against a shell loop of `qemu-img check` over the same files. See BENCHMARKS.md.
#
#   scripts/bench_batch.sh [COUNT]        # COUNT images, default 10000
#
# Env: BENCH_DIR (scratch folder; default a new folder in /var/tmp, removed at the end unless
# KEEP=1; an existing BENCH_DIR/images with COUNT files is reused), RUNS (prlimg runs per
# thread count, default 5).
set -euo pipefail
cd "$(dirname "$0")/.."

COUNT=${1:-10000}
RUNS=${RUNS:-5}

command -v qemu-img >/dev/null 2>&1 || {
    echo "installing: qemu-utils"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq qemu-utils >/dev/null
}

cargo build --release --quiet --bin prlimg
TARGET=${CARGO_TARGET_DIR:-target}
PRLIMG=$(realpath "$TARGET/release/prlimg")

DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/prlimg-batch.XXXXXX)}
mkdir -p "$DIR"
if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then
    trap 'rm -rf "$DIR"' EXIT
fi
IMAGES="$DIR/images"

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /'
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
qemu-img --version | sed -n 1p

# The shapes: both variants, clusters of 512 B to 1 MiB, with and without bitmaps and data.
# Each is a few KiB to a few MiB on disk (sparse files).
UA=11111111-2222-3333-4444-555555555555
UB=e4f2eed0-37fe-4539-b50b-85d2e7fd235f
shapes=(
    "--size 60M --cluster-size 4K --data 0:8K:0x11 --data 1M:4K:0x22 --data 59M:4K:0x33 --bitmap $UA:512:0+512,16M+512,32M+512,48M+512 --bitmap $UB:64K:64K+64K,10M+64K"
    "--size 60M --cluster-size 4K --data 0:8K:0x11 --data 1M:4K:0x22 --bitmap $UA:64K:0+128K --v1"
    "--size 64M --cluster-size 64K --data 0:100K:0xaa --bitmap $UA:64K:0+128K,1M+1"
    "--size 16M --cluster-size 512 --data 0:4K:0x5 --bitmap $UB:512:0+4K"
    "--size 1G --cluster-size 1M --data 0:2M:0x7 --data 512M:1M:0x8 --bitmap $UA:64K:0+1M --bitmap $UB:1M:0+64M"
    "--size 8M --cluster-size 8K --data 0:16K:0x9"
    "--size 128M --cluster-size 16K --data 4M:64K:0x1 --bitmap $UB:32K:4M+64K --inuse v2.1"
    "--size 32M --cluster-size 32K --v1 --data 0:32K:0x2"
)

if [ -d "$IMAGES" ] && [ "$(find "$IMAGES" -type f | wc -l)" -eq "$COUNT" ]; then
    echo "== reusing $COUNT images in $IMAGES"
else
    echo "== generating $COUNT images in $IMAGES"
    rm -rf "$IMAGES" "$DIR/bases"
    mkdir -p "$IMAGES" "$DIR/bases"
    start=$(date +%s.%N)
    for i in "${!shapes[@]}"; do
        # shellcheck disable=SC2086
        "$PRLIMG" create "$DIR/bases/s$i.hds" ${shapes[$i]} >/dev/null
    done
    mapfile -t defects < <("$PRLIMG" corrupt --list | awk '{print $1}')
    # Jobs "shape defect seed" until COUNT images exist; a defect that does not apply to a shape
    # (v1-only defects on v2 images...) makes no image, so more jobs are listed than needed.
    jobs="$DIR/jobs"
    : >"$jobs"
    n=$((COUNT * 3 / 2 / (${#shapes[@]} * ${#defects[@]}) + 1))
    for seed in $(seq 1 "$n"); do
        for i in "${!shapes[@]}"; do
            for d in "${defects[@]}"; do echo "$i $d $seed"; done
        done
    done >"$jobs"
    export PRLIMG DIR IMAGES
    # shellcheck disable=SC2016
    xargs -P "$(nproc)" -L 1 sh -c '"$PRLIMG" corrupt "$DIR/bases/s$0.hds" "$IMAGES/s$0-$1-$2.hds" --defect "$1" --seed "$2" >/dev/null 2>&1 || true' <"$jobs"
    # The clean shapes too, then exactly COUNT files (the first in name order are kept).
    for i in "${!shapes[@]}"; do cp --sparse=always "$DIR/bases/s$i.hds" "$IMAGES/s$i-clean.hds"; done
    made=$(find "$IMAGES" -type f | wc -l)
    if [ "$made" -lt "$COUNT" ]; then
        echo "only $made images could be made" >&2
        exit 1
    fi
    find "$IMAGES" -type f | sort | tail -n +"$((COUNT + 1))" | xargs -r rm -f
    echo "generated in $(echo "$(date +%s.%N) - $start" | bc) s"
fi
echo "images: $(find "$IMAGES" -type f | wc -l), $(du -sh --apparent-size "$IMAGES" | cut -f1) apparent, $(du -sh "$IMAGES" | cut -f1) on disk"

# Seconds of wall-clock time of a command, output discarded.
seconds() {
    local start end
    start=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || true
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

# A warm page cache for every run.
cat "$IMAGES"/* >/dev/null

echo "== prlimg check --recursive (summary of one run)"
"$PRLIMG" check -R "$IMAGES" -j 2 | tail -n 3

for jobs in 1 2; do
    best=
    all=()
    for _ in $(seq 1 "$RUNS"); do
        t=$(seconds "$PRLIMG" check -R "$IMAGES" -j "$jobs")
        all+=("$t")
        if [ -z "$best" ] || [ "$(echo "$t < $best" | bc)" = 1 ]; then best=$t; fi
    done
    rate=$(echo "$COUNT / $best" | bc)
    echo "RESULT prlimg -j $jobs: best $best s of ${all[*]}: $rate images/s"
    eval "rate_$jobs=$rate"
done

echo "== qemu-img check, a shell loop over the same files (one run)"
loop() { for f in "$IMAGES"/*; do qemu-img check -f parallels "$f" >/dev/null 2>&1; done; }
t=$(seconds loop)
qrate=$(echo "scale=1; $COUNT / $t" | bc)
echo "RESULT qemu-img loop: $t s: $qrate images/s"
echo "== qemu-img check, two at a time (xargs -P 2)"
t=$(seconds sh -c "find '$IMAGES' -type f -print0 | xargs -0 -P 2 -n 1 sh -c 'qemu-img check -f parallels \"\$0\" >/dev/null 2>&1; true'")
qrate2=$(echo "scale=1; $COUNT / $t" | bc)
echo "RESULT qemu-img xargs -P 2: $t s: $qrate2 images/s"
echo "RESULT ratios: prlimg -j 1 / qemu-img loop $(echo "scale=1; $rate_1 / $qrate" | bc)x, prlimg -j 2 / qemu-img -P 2 $(echo "scale=1; $rate_2 / $qrate2" | bc)x"
