#!/usr/bin/env bash
# Whole-process comparisons of prlimg with QEMU's tools, side by side in one run, and peak
# memory at two scales. See BENCHMARKS.md for the figures and how to read them.
#
#   scripts/bench.sh [quick|data|xfs|chain|campaign|guard|python]
#
# Env: BENCH_DIR (scratch folder on a filesystem with sparse files; default a new folder in
# /var/tmp, removed at the end unless KEEP=1), RUNS (hyperfine runs, default 10), WARMUP
# (default 2). `quick` skips the slow qemu-img check of the half-allocated 16 Mi-entry image
# (about 200 s a run; the full script takes about 15 minutes). `data` runs only the guest-data
# rows (convert to raw and back, against qemu-img convert and cp --sparse=always); DATA_MIB sets
# their data size (default 4096: they need 5 * DATA_MIB of space at once while the images are
# made, 4 * DATA_MIB during the rounds; in /dev/shm that is memory), DATA_RUNS the
# interleaved rounds (default 5), DATA_DIR where their files go (default BENCH_DIR; /dev/shm
# takes the disk out of the figures). `chain` runs only the three-level chain against a single
# image (CHAIN_MIB, default DATA_MIB; part of `data`).
# `campaign` runs only the differential campaign rows (CAMPAIGN_CASES variants, default 400;
# CAMPAIGN_JOBS parallel cases, default the CPUs). PRLIMG_BIN times another prlimg binary (an
# older build, to compare) instead of the release build made here.
# `guard` (about two minutes; CI runs it) times the headline rows side by side, interleaved,
# and exits non-zero when a ratio falls below half its aim: check of the empty and of the
# half-allocated 16 Mi-entry images against qemu-img check (aims 10x and 1000x), bitmaps against
# nbdinfo (10x), convert to raw against qemu-img convert, each followed by `sync` of its output
# (1x; GUARD_MIB of data, default 512), and peak RSS of check against qemu-img check's (1/10).
# GUARD_RUNS sets the rounds (default 7). It is a benchmark with wide margins, not a timed
# test: a machine twice as slow passes, a regression of several times does not.
# `python` runs only the Python package's rows (scripts/bench_python.py): guest data through
# open_guest().readinto against pyphdi and dissect.hypervisor in reads of 512 B, 4 KiB, 64 KiB
# and 1 MiB, on the Parallels Desktop sample and a 1 GiB bundle of v1 images (which pyphdi reads),
# beside the floors (readinto of a raw file of the same bytes, one copy out of an mmap of it,
# copies in Python), and
# check of 1,000 images from Python against a loop of `prlimg check` processes; in a venv of its
# own, ~/.cache/prlimg-bench-venv (PY_BIG_MIB sets the big bundle's size, default 1024;
# PY_PARTS=guest or check runs one part).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

RUNS=${RUNS:-10}
WARMUP=${WARMUP:-2}
QUICK=${1:-}

need=()
[ "$QUICK" = guard ] || command -v hyperfine >/dev/null 2>&1 || need+=(hyperfine)
[ -x /usr/bin/time ] || need+=(time)
command -v qemu-img >/dev/null 2>&1 || need+=(qemu-utils)
command -v nbdinfo >/dev/null 2>&1 || need+=(libnbd-bin)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet --bin prlimg --example bench_image
TARGET=${CARGO_TARGET_DIR:-target}
PRLIMG=$(realpath "${PRLIMG_BIN:-$TARGET/release/prlimg}")
MKIMG=$(realpath "$TARGET/release/examples/bench_image")

DIR=${BENCH_DIR:-$(mktemp -d /var/tmp/prlimg-bench.XXXXXX)}
mkdir -p "$DIR"
if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then
    trap 'rm -rf "$DIR"' EXIT
fi
cd "$DIR"

T=1099511627776 # 1 TiB
NAME=00000001-0000-0000-0000-000000000001

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /'
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
[ "$QUICK" = guard ] || hyperfine --version
qemu-img --version | sed -n 1p
nbdinfo --version | sed -n 1p

# Runs hyperfine on two commands (ours first) and prints "LABEL: ours X ms, theirs Y ms,
# ratio Z" from its CSV export (mean times).
compare() {
    local label=$1 ours=$2 theirs=$3 runs=${4:-$RUNS} warmup=${5:-$WARMUP}
    echo
    echo "== $label"
    hyperfine -N -i --style basic --warmup "$warmup" --runs "$runs" --export-csv "$label.csv" \
        -n prlimg "$ours" -n qemu "$theirs" | grep -E 'Benchmark|Time|Range'
    awk -F, -v label="$label" 'NR == 2 { o = $2 } NR == 3 { t = $2 }
        END { printf "RESULT %s: prlimg %.1f ms, qemu %.1f ms, qemu/prlimg = %.2f\n",
              label, o * 1000, t * 1000, t / o }' "$label.csv" | tee -a results.txt
}

# Same with shell commands (for pipelines of two QEMU tools).
compare_sh() {
    local label=$1 ours=$2 theirs=$3 prepare=$4
    echo
    echo "== $label"
    hyperfine -i --style basic --warmup "$WARMUP" --runs "$RUNS" --prepare "$prepare" \
        --export-csv "$label.csv" -n prlimg "sh -c '$ours && sync'" -n qemu "sh -c '$theirs && sync'" |
        grep -E 'Benchmark|Time|Range'
    awk -F, -v label="$label" 'NR == 2 { o = $2 } NR == 3 { t = $2 }
        END { printf "RESULT %s: prlimg %.1f ms, qemu %.1f ms, qemu/prlimg = %.2f\n",
              label, o * 1000, t * 1000, t / o }' "$label.csv" | tee -a results.txt
}

# Guest data out and in: DATA_MIB of random data, dense (a disk of exactly that) and sparse
# (1 MiB of data every 4 MiB), converted to raw by prlimg (as stored: copy_file_range; and
# --detect-zeros: read, holes for zero blocks) and by qemu-img, against copying the image's
# allocated bytes with cp --sparse=always; raw to .hds by both, compared with qemu-img compare
# and checked by both. The tools run interleaved (one run of each per round, DATA_RUNS rounds),
# each as `sh -c 'CMD && sync OUT'`; medians of wall time and of user + system CPU, peak RSS.
# DATA_DIR puts the files elsewhere (e.g. /dev/shm: no disk, the tools' own work only).
guest_data() {
    local mib=${DATA_MIB:-4096} runs=${DATA_RUNS:-5}
    local ddir=${DATA_DIR:-$DIR}
    mkdir -p "$ddir"
    pushd "$ddir" >/dev/null
    echo
    echo "== guest data ($mib MiB in $ddir: $(df -T . | awk 'NR == 2 { print $2 }'))"
    python3 - "$mib" <<'EOF'
import os, sys
mib = int(sys.argv[1])
M = 1 << 20
with open('dense.raw', 'wb') as f:
    for i in range(mib):
        f.write(os.urandom(M))
with open('sparse.raw', 'wb') as f:
    for i in range(mib):
        f.seek(4 * i * M)
        f.write(os.urandom(M))
    f.truncate(4 * mib * M)
EOF
    "$PRLIMG" convert --force dense.raw dense.hds
    "$PRLIMG" convert --force sparse.raw sparse.hds
    ls -ls dense.raw sparse.raw dense.hds sparse.hds
    # Agreement: every output is the guest (qemu-img compare) and every .hds is clean.
    "$PRLIMG" convert --force dense.hds out.raw && cmp dense.raw out.raw
    "$PRLIMG" convert --force --detect-zeros sparse.hds out.raw && cmp sparse.raw out.raw
    "$PRLIMG" convert --force -f raw dense.raw out.hds
    qemu-img compare -f raw -F parallels dense.raw out.hds | tee -a "$DIR/results.txt"
    qemu-img check -f parallels out.hds | sed -n 1p
    "$PRLIMG" check out.hds >/dev/null && echo "prlimg check: clean"
    rm -f sparse.raw out.raw out.hds
    sync
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/results.txt"
    interleave data "$runs" \
        prlimg-dense "$PRLIMG convert --force dense.hds out.raw" \
        prlimg-z-dense "$PRLIMG convert --force --detect-zeros dense.hds out.raw" \
        qemu-dense "qemu-img convert -f parallels -O raw dense.hds out.raw" \
        cp-dense "cp --sparse=always dense.hds out.raw" \
        prlimg-sparse "$PRLIMG convert --force sparse.hds out.raw" \
        prlimg-z-sparse "$PRLIMG convert --force --detect-zeros sparse.hds out.raw" \
        qemu-sparse "qemu-img convert -f parallels -O raw sparse.hds out.raw" \
        cp-sparse "cp --sparse=always sparse.hds out.raw" \
        prlimg-hds "$PRLIMG convert --force -f raw dense.raw out.hds" \
        qemu-hds "qemu-img convert -f raw -O parallels dense.raw out.hds"
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/results.txt"
    medians data.tsv | tee -a "$DIR/results.txt"
    rm -f out.raw out.hds dense.raw dense.hds sparse.hds time.tmp
    popd >/dev/null
}

# Guest data of a three-level snapshot chain against the same data in one image: a bundle of
# CHAIN_MIB MiB (default DATA_MIB) of 1 MiB clusters whose root writes every cluster, the middle
# snapshot every fourth and the top every eighth (the pattern of benches/chain.rs), and the
# single image `prlimg convert` makes of it; each converted to raw by prlimg, interleaved as the
# rows above (DATA_RUNS rounds, `&& sync OUT`, medians, peak RSS). Aim: chain at most 1.2x the
# single image.
chain_data() {
    local mib=${CHAIN_MIB:-${DATA_MIB:-4096}} runs=${DATA_RUNS:-5}
    local ddir=${DATA_DIR:-$DIR}
    mkdir -p "$ddir"
    pushd "$ddir" >/dev/null
    echo
    echo "== three-level chain vs single image ($mib MiB in $ddir: $(df -T . | awk 'NR == 2 { print $2 }'))"
    python3 - "$mib" >chain.json <<'EOF2'
import json, sys
mib = int(sys.argv[1])
M = 1 << 20
guid = lambda n: "{11110000-0000-4000-8000-%012d}" % n
def fills(every, byte):
    return [{"offset": i * M, "len": M, "byte": byte} for i in range(mib) if i % every == 0]
snaps = [{"guid": guid(1), "data": fills(1, 0x11)},
         {"guid": guid(2), "parent": guid(1), "data": fills(4, 0x22)},
         {"guid": guid(3), "parent": guid(2), "data": fills(8, 0x33)}]
json.dump({"size": mib * M, "cluster_size": M, "snapshots": snaps}, sys.stdout)
EOF2
    rm -rf chain.hdd
    "$PRLIMG" create --bundle --recipe chain.json chain.hdd
    "$PRLIMG" convert --force chain.hdd single.hds
    du -sh chain.hdd single.hds
    # Agreement: both give the same guest bytes.
    "$PRLIMG" convert --force chain.hdd out.raw && mv out.raw chain.raw
    "$PRLIMG" convert --force single.hds out.raw && cmp chain.raw out.raw && echo "chain and single image: the same guest bytes"
    rm -f chain.raw out.raw chain.json
    sync
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/results.txt"
    interleave chain "$runs" \
        prlimg-chain "$PRLIMG convert --force chain.hdd out.raw" \
        prlimg-single "$PRLIMG convert --force single.hds out.raw"
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$DIR/results.txt"
    medians chain.tsv | tee -a "$DIR/results.txt"
    rm -rf chain.hdd single.hds out.raw time.tmp
    popd >/dev/null
}

# Prints, from an interleave TSV, each command's runs, median wall and CPU and peak RSS, and
# the RESULT ratios of the pairs it knows (a ratio whose commands did not run is left out).
medians() {
    python3 - "$1" <<'EOF2'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    name, wall, user, sys_, rss = line.split()
    r = rows.setdefault(name, {'wall': [], 'cpu': [], 'rss': []})
    r['wall'].append(float(wall)); r['cpu'].append(float(user) + float(sys_)); r['rss'].append(int(rss))
med = {n: (statistics.median(r['wall']), statistics.median(r['cpu']), max(r['rss'])) for n, r in rows.items()}
print(f"{'command':16} {'runs':>4} {'wall med':>9} {'cpu med':>8} {'maxRSS KiB':>10}   wall of each run")
for n, r in rows.items():
    w, c, m = med[n]
    print(f"{n:16} {len(r['wall']):4} {w:8.3f}s {c:7.2f}s {m:10}   {' '.join(f'{x:.3f}' for x in r['wall'])}")
def quotient(x, y):
    # CPU times come in 10 ms steps: a tool that shares blocks instead of copying may use none.
    return f"{x / y:.2f}" if y > 0 else ("1.00" if x == 0 else "inf")
def ratio(label, a, b):
    if a in med and b in med:
        print(f"RESULT {label}: wall {quotient(med[a][0], med[b][0])}, cpu {quotient(med[a][1], med[b][1])}")
for kind in ('dense', 'sparse'):
    ratio(f"qemu-img / prlimg to raw, {kind}", f"qemu-{kind}", f"prlimg-{kind}")
    ratio(f"prlimg / cp --sparse=always, {kind}", f"prlimg-{kind}", f"cp-{kind}")
    ratio(f"qemu-img / prlimg --detect-zeros to raw, {kind}", f"qemu-{kind}", f"prlimg-z-{kind}")
    ratio(f"prlimg --detect-zeros / cp --sparse=always, {kind}", f"prlimg-z-{kind}", f"cp-{kind}")
ratio("qemu-img -O parallels / prlimg raw to .hds", "qemu-hds", "prlimg-hds")
ratio("three-level chain / single image, prlimg convert to raw", "prlimg-chain", "prlimg-single")
EOF2
}

# Runs commands interleaved: ROUNDS rounds, each running every NAME CMD pair once in order,
# the outputs (out.raw, out.hds) removed and the page cache flushed to disk before each, each
# timed as `sh -c 'CMD && sync OUT'` (OUT: the command's last word) by /usr/bin/time into
# LABEL.tsv (name, wall, user, sys, RSS).
interleave() {
    local label=$1 rounds=$2
    shift 2
    local args=("$@") r i
    : >"$label.tsv"
    for r in $(seq "$rounds"); do
        for ((i = 0; i < ${#args[@]}; i += 2)); do
            rm -f out.raw out.hds
            sync
            # `sync FILE` flushes that file only (fsync): the same work for every tool, and not
            # the dirty data of whatever else runs on the machine, as a bare `sync` would.
            # Wall time to the millisecond (time's %e has 10 ms steps: too coarse where the
            # copy is the file system sharing blocks); CPU in time's 10 ms steps.
            local t0 ms wall
            t0=$(date +%s%N)
            /usr/bin/time -f "%U %S %M" -o time.tmp sh -c "${args[i + 1]} >/dev/null && sync ${args[i + 1]##* }"
            ms=$((($(date +%s%N) - t0) / 1000000))
            printf -v wall '%d.%03d' $((ms / 1000)) $((ms % 1000))
            echo "${args[i]} $wall $(cat time.tmp)" >>"$label.tsv"
        done
        echo "round $r of $rounds done (load $(cut -d' ' -f1-3 /proc/loadavg))"
    done
}

rss() {
    { /usr/bin/time -f '%M' "$@" 2>&1 >/dev/null || true; } | tail -1
}
row() {
    local what=$1 virtual=$2 meta=$3
    shift 3
    printf '%-38s %8s %-34s %10s\n' "$what" "$virtual" "$meta" "$(rss "$@")" | tee -a results.txt
}

# Differential campaign throughput (issue 18 item 3): CAMPAIGN_CASES variants of an image with
# two bitmaps, written once; the mean wall and CPU time of one `qemu-img info` + `qemu-img
# check` pair over all of them, run one after another; then `prlimg differential --qemu -j N`
# over the same files. "ideal" is N / (pair time): every CPU busy with QEMU and nothing else;
# efficiency = cases per second / ideal (the aim: at least 0.8). On a machine others load, the
# CPU-time figures say more: QEMU's CPU time per case against the campaign's (prlimg and its
# children) per case; "CPUs used" (CPU time / wall time) shows how much of the machine the
# serial pairs and the campaign each got.
campaign() {
    local cases=${CAMPAIGN_CASES:-400} jobs=${CAMPAIGN_JOBS:-$(nproc)}
    echo
    echo "== differential campaign ($cases variants, -j $jobs)"
    echo "load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    rm -rf cases camp
    "$PRLIMG" create --force --size 4M --cluster-size 64K --inuse v2.1 --data 0:4K:0xaa \
        --data 2M:70000:0xbb --bitmap 01010101-0101-0101-0101-010101010101:64K:0+1,1M+300000 \
        --bitmap 02020202-0202-0202-0202-020202020202:512:0+4M campaign-base.hds
    "$PRLIMG" mutate campaign-base.hds cases --count "$cases" --seed 1 >/dev/null
    rm cases/manifest.json
    # One pair after another, wall and CPU (user + sys of the children) time.
    local t0 t1 c0 c1
    read -r c0 < <(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
    t0=$(date +%s.%N)
    # (In a subshell: bash reports each abort of qemu-img on stderr.)
    for f in cases/*.hds; do
        (qemu-img info -f parallels --output=json "$f" >/dev/null 2>&1 || true)
        (qemu-img check -f parallels --output=json "$f" >/dev/null 2>&1 || true)
    done 2>/dev/null
    t1=$(date +%s.%N)
    read -r c1 < <(awk '{ print $14 + $15 + $16 + $17 }' /proc/$$/stat)
    local tck
    tck=$(getconf CLK_TCK)
    /usr/bin/time -f '%e %U %S' -o camp.time "$PRLIMG" differential --qemu -j "$jobs" --out camp cases 2>camp.log ||
        { cat camp.log; echo "differential: not every case agreed" >&2; exit 1; }
    tail -1 camp.log
    echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
    read -r wall user sys <camp.time
    awk -v n="$cases" -v j="$jobs" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v tck="$tck" \
        -v wall="$wall" -v user="$user" -v sys="$sys" 'BEGIN {
        pair = (t1 - t0) / n; pair_cpu = (c1 - c0) / tck / n
        rate = n / wall; ideal = j / pair; case_cpu = (user + sys) / n
        printf "RESULT campaign: pair %.1f ms wall (%.1f ms CPU); differential -j %d: %.1f cases/s, ideal %.1f/s, efficiency %.2f; CPU per case %.1f ms, QEMU share %.2f; CPUs used: pairs %.2f, campaign %.2f\n",
            pair * 1000, pair_cpu * 1000, j, rate, ideal, rate / ideal, case_cpu * 1000, pair_cpu / case_cpu,
            pair_cpu / pair, (user + sys) / wall
    }' | tee -a results.txt
}

# The guard (see the top). Images made and agreement checked here; then scripts/guard.py runs
# the commands interleaved round by round, timing each (wall, and user + system CPU time and peak
# RSS from wait4, to the microsecond), prints every row's medians and its ratio against its aim,
# and exits non-zero when one falls below half of it.
guard() {
    local mib=${GUARD_MIB:-512}
    echo
    echo "== guard images"
    qemu-img create -q -f parallels -o cluster_size=64K empty.hds 1T
    # The same bytes with the table written out (qemu-img leaves it allocated but unwritten).
    rm -f written.hds && cp --sparse=never empty.hds written.hds
    "$MKIMG" half half.hds 16777216 65536
    "$MKIMG" bitmap bitmap64t.hds $((64 * T)) $((1 << 20)) 65536
    head -c $((mib << 20)) /dev/urandom >dense.raw
    "$PRLIMG" convert --force -f raw dense.raw dense.hds
    rm dense.raw
    # Agreement first: the same verdicts, extents and bytes as QEMU's tools.
    "$PRLIMG" check empty.hds >/dev/null && qemu-img check -f parallels empty.hds >/dev/null
    "$PRLIMG" check written.hds >/dev/null && qemu-img check -f parallels written.hds >/dev/null
    "$PRLIMG" check half.hds >/dev/null
    "$PRLIMG" bitmaps bitmap64t.hds "$NAME" >ours.map
    nbdinfo --map="qemu:dirty-bitmap:$NAME" -- [ qemu-nbd -r -f parallels -B "$NAME" bitmap64t.hds ] >qemu.map
    cmp ours.map qemu.map
    "$PRLIMG" convert --force dense.hds ours.raw
    qemu-img convert -f parallels -O raw dense.hds out.raw && cmp ours.raw out.raw
    rm -f ours.raw out.raw ours.map qemu.map
    ls -ls ./*.hds
    python3 "$ROOT/scripts/guard.py" "$PRLIMG" "$NAME"
}

if [ "$QUICK" = guard ]; then
    guard
    exit 0
fi

if [ "$QUICK" = campaign ]; then
    : >results.txt
    campaign
    echo
    echo "== summary"
    cat results.txt
    exit 0
fi

if [ "$QUICK" = python ]; then
    venv=${HOME}/.cache/prlimg-bench-venv
    [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check libphdi-python dissect.hypervisor
    CARGO_TARGET_DIR=${HOME}/.cache/prlimg-python/target \
        "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps "$ROOT/python"
    "$venv/bin/python" "$ROOT/scripts/bench_python.py" "$PRLIMG" "$DIR" | tee results.txt
    exit 0
fi

if [ "$QUICK" = chain ]; then
    : >results.txt
    chain_data
    echo
    echo "== summary"
    cat results.txt
    exit 0
fi

# `xfs`: the `data` rows on an XFS made for the run, where copy_file_range shares blocks (a
# reflink) instead of copying: a sparse file of XFS_GIB GiB (default 24; the rows at DATA_MIB
# write up to 5 * DATA_MIB into it) in the scratch folder, mounted on a loop device. Needs root
# and loop devices; installs xfsprogs if missing; unmounts and removes the file at the end.
if [ "$QUICK" = xfs ]; then
    command -v mkfs.xfs >/dev/null 2>&1 || apt-get install -y -qq xfsprogs >/dev/null
    XFS_IMG=$DIR/xfs.img XFS_MNT=$DIR/xfs
    truncate -s "${XFS_GIB:-24}G" "$XFS_IMG"
    mkfs.xfs -q -f "$XFS_IMG"
    mkdir -p "$XFS_MNT"
    mount -o loop "$XFS_IMG" "$XFS_MNT"
    trap 'cd /; umount "$XFS_MNT"; rm -f "$XFS_IMG"; if [ "${KEEP:-0}" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then rm -rf "$DIR"; fi' EXIT
    DATA_DIR=$XFS_MNT/data
    QUICK=data
fi

if [ "$QUICK" = data ]; then
    : >results.txt
    guest_data
    chain_data
    echo
    echo "== summary"
    cat results.txt
    exit 0
fi

echo
echo "== images"
# 16 Mi BAT entries (64 MiB of BAT), nothing allocated.
qemu-img create -q -f parallels -o cluster_size=64K empty.hds 1T
# 16 Mi BAT entries, every other one allocated: a 512 GiB sparse file.
"$MKIMG" half half.hds 16777216 65536
# 1 Mi entries, half allocated (QEMU checks it in under a second).
"$MKIMG" half half1m.hds 1048576 65536
# A 64 TiB disk at 64 KiB granularity: 128 MiB of bitmap in 128 chunks of 1 MiB.
"$MKIMG" bitmap bitmap64t.hds $((64 * T)) $((1 << 20)) 65536
ls -ls ./*.hds

echo
echo "== agreement"
"$PRLIMG" check half.hds | tail -4
"$PRLIMG" bitmaps bitmap64t.hds "$NAME" >ours.map
nbdinfo --map="qemu:dirty-bitmap:$NAME" -- [ qemu-nbd -r -f parallels -B "$NAME" bitmap64t.hds ] >qemu.map
if cmp -s ours.map qemu.map; then
    echo "bitmaps: the same $(wc -l <ours.map) extents as nbdinfo"
else
    echo "bitmaps: DIFFERENT from nbdinfo" >&2
    exit 1
fi

: >results.txt
compare check-empty-16M "$PRLIMG check empty.hds" "qemu-img check -f parallels empty.hds"
compare check-half-1M "$PRLIMG check half1m.hds" "qemu-img check -f parallels half1m.hds"
if [ "$QUICK" != quick ]; then
    # qemu-img check takes minutes here: one warm-up, two runs.
    compare check-half-16M "$PRLIMG check half.hds" "qemu-img check -f parallels half.hds" 2 1
fi
compare bitmaps-64T "$PRLIMG bitmaps bitmap64t.hds $NAME" \
    "nbdinfo --map=qemu:dirty-bitmap:$NAME -- [ qemu-nbd -r -f parallels -B $NAME bitmap64t.hds ]"

# create: a 1 TiB image of 64 KiB clusters with 64 writes of 1 MiB of 0xaa, 16 GiB apart.
ours="$PRLIMG create --force --size 1T --cluster-size 64K"
theirs="qemu-img create -q -f parallels -o cluster_size=64K theirs.hds 1T && qemu-io -f parallels"
for i in $(seq 0 63); do
    off=$((i * 16 << 30))
    ours+=" --data $off:1M:0xaa"
    theirs+=" -c 'write -q -P 0xaa $off 1M'"
done
ours+=" ours.hds"
theirs+=" theirs.hds"
compare_sh create-1T-64x1M "$ours" "$theirs" "rm -f ours.hds theirs.hds"
# (--prepare removed the files before each run: build both once more to compare them.)
sh -c "$ours" && sh -c "$theirs"
# (qemu-img compare and map fail on these 1 TiB images, whoever made them; the files are
# compared byte for byte instead: the builder lays clusters out as QEMU allocates them here.)
if cmp -s ours.hds theirs.hds; then
    echo "create: the two files are byte for byte the same"
else
    echo "create: the files differ" >&2
    exit 1
fi
rm -f ours.hds theirs.hds

echo
echo "== peak RSS (KiB) by metadata size"
printf '%-38s %8s %-34s %10s\n' command virtual metadata maxRSS | tee -a results.txt
qemu-img create -q -f parallels -o cluster_size=64K c1t64k.hds 1T
qemu-img create -q -f parallels -o cluster_size=4M c64t4m.hds 64T
qemu-img create -q -f parallels -o cluster_size=1M c64t1m.hds 64T
qemu-img create -q -f parallels -o cluster_size=64M c64t64m.hds 64T
row "prlimg check" 64T "BAT 4 MiB (64 MiB clusters)" "$PRLIMG" check c64t64m.hds
row "prlimg check" 1T "BAT 64 MiB (64 KiB clusters)" "$PRLIMG" check c1t64k.hds
row "prlimg check" 64T "BAT 64 MiB (4 MiB clusters)" "$PRLIMG" check c64t4m.hds
row "prlimg check" 64T "BAT 256 MiB (1 MiB clusters)" "$PRLIMG" check c64t1m.hds
row "prlimg check (half allocated)" 64G "BAT 4 MiB, 0.5 Mi clusters" "$PRLIMG" check half1m.hds
row "prlimg check (half allocated)" 1T "BAT 64 MiB, 8 Mi clusters" "$PRLIMG" check half.hds
row "prlimg info (half allocated)" 64G "BAT 4 MiB, 0.5 Mi clusters" "$PRLIMG" info half1m.hds
row "prlimg info (half allocated)" 1T "BAT 64 MiB, 8 Mi clusters" "$PRLIMG" info half.hds
row "qemu-img check (half allocated)" 64G "BAT 4 MiB, 0.5 Mi clusters" qemu-img check -f parallels half1m.hds
row "qemu-img info (half allocated)" 1T "BAT 64 MiB, 8 Mi clusters" qemu-img info -f parallels half.hds
row "qemu-img check" 1T "BAT 64 MiB (64 KiB clusters)" qemu-img check -f parallels c1t64k.hds
row "qemu-img check" 64T "BAT 256 MiB (1 MiB clusters)" qemu-img check -f parallels c64t1m.hds
# Bitmaps: 16 Mi granules (2 MiB of bitmap) on 1 TiB and on 64 TiB; then 2^30 granules.
"$MKIMG" bitmap b1t.hds "$T" $((64 << 10)) $((64 << 10))
"$MKIMG" bitmap b64t.hds $((64 * T)) $((4 << 20)) $((4 << 20))
row "prlimg bitmaps NAME" 1T "2 MiB bitmap, 64 KiB clusters" "$PRLIMG" bitmaps b1t.hds "$NAME"
row "prlimg bitmaps NAME" 64T "2 MiB bitmap, 4 MiB clusters" "$PRLIMG" bitmaps b64t.hds "$NAME"
row "prlimg bitmaps NAME" 64T "128 MiB bitmap, 1 MiB clusters" "$PRLIMG" bitmaps bitmap64t.hds "$NAME"

echo
echo "== extension validation vs a bare MD5 of the cluster, interleaved rounds"
(cd "$ROOT" && cargo run --release --quiet --example ext_ratio) | tee -a results.txt

guest_data

chain_data

campaign

echo
echo "== summary"
cat results.txt
