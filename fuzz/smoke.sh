#!/usr/bin/env bash
# Fuzz smoke run, as CI does it: regenerate the seed corpus, build every target, run each for
# SECONDS (default 60) under libFuzzer's memory limits, and fail if any of them crashes, leaks
# memory past the limits or hangs on one input.
#
#   fuzz/smoke.sh [SECONDS] [TARGET...]
#
# Uses `cargo +nightly fuzz` when a nightly toolchain is installed, otherwise the default
# toolchain with RUSTC_BOOTSTRAP=1 (cargo fuzz needs -Z flags). Installs cargo-fuzz if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

seconds="${1:-60}"
shift || true
targets=("$@")

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "smoke: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi
if rustup run nightly rustc --version >/dev/null 2>&1; then
    fuzz=(cargo +nightly fuzz)
else
    echo "smoke: no nightly toolchain; using $(rustc --version) with RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
    fuzz=(cargo fuzz)
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && "${fuzz[@]}" list)
fi

echo "smoke: seeds"
# The seed generator is an example of the library crate; it must not share the fuzz build's
# target dir (different flags), so it uses the caller's CARGO_TARGET_DIR or the default.
cargo run --quiet --example fuzz_seeds -- "$root/fuzz/corpus"

echo "smoke: building ${targets[*]}"
(cd fuzz && "${fuzz[@]}" build)

failed=()
for t in "${targets[@]}"; do
    echo "smoke: $t for ${seconds}s"
    mkdir -p "fuzz/corpus/$t"
    log="fuzz/artifacts/$t.smoke.log"
    # The whole-image targets take images up to 128 KiB (the seeds' limit, fuzz_seeds.rs's
    # MAX_WHOLE): a run then costs a small cluster's hash and a short BAT, not a megabyte's.
    extra=()
    case "$t" in image | check | image_mutator | check_mutator) extra=(-max_len=131072) ;; esac
    mkdir -p fuzz/artifacts
    # -timeout: one input taking longer than this is a hang. Output goes to a log (libFuzzer is
    # verbose); its summary lines are printed.
    if (cd fuzz && "${fuzz[@]}" run "$t" "corpus/$t" -- \
        -max_total_time="$seconds" -rss_limit_mb=512 -malloc_limit_mb=512 -timeout=30 \
        -dict=parallels.dict -print_final_stats=1 "${extra[@]}") >"$log" 2>&1; then
        grep -E '^(Done|stat::average_exec_per_sec|stat::number_of_executed_units)' "$log" || true
    else
        echo "smoke: $t FAILED; the end of $log:"
        tail -n 60 "$log"
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "smoke: crashes in ${failed[*]}; inputs in fuzz/artifacts/<target>/"
    exit 1
fi
echo "smoke: ${#targets[@]} targets ran ${seconds}s each without a crash"
