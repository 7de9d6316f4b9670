//! A tiny C harness linked against the static library calls libFuzzer's and AFL++'s entry
//! points; its outputs are exactly the variants [`parallels_image_mutator::mutate`] makes, and
//! they parse as Parallels images. Needs `cc` (skipped visibly without it, failing under
//! `CI=true`).

use std::path::{Path, PathBuf};
use std::process::Command;

use parallels_image::Image;
use parallels_image_mutator::{fallback, mutate};

const HARNESS: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);
void *afl_custom_init(void *afl, unsigned int seed);
size_t afl_custom_fuzz(void *data, uint8_t *buf, size_t buf_size, uint8_t **out_buf,
                       uint8_t *add_buf, size_t add_buf_size, size_t max_size);
void afl_custom_deinit(void *data);

static void put(const char *dir, const char *kind, int i, const uint8_t *b, size_t n) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s-%d.hds", dir, kind, i);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, n, f) != n || fclose(f)) { perror(path); exit(2); }
}

/* harness INPUT OUTDIR COUNT MAX: COUNT libFuzzer variants of INPUT (seed i), then COUNT AFL++
   variants (init seed 1000), each at most MAX bytes. */
int main(int argc, char **argv) {
    if (argc != 5) return 2;
    int count = atoi(argv[3]);
    size_t max = (size_t)atol(argv[4]);
    FILE *f = fopen(argv[1], "rb");
    if (!f) { perror(argv[1]); return 2; }
    uint8_t *input = malloc(max), *buf = malloc(max);
    size_t n = fread(input, 1, max, f);
    fclose(f);
    for (int i = 0; i < count; i++) {
        memcpy(buf, input, n);
        size_t m = LLVMFuzzerCustomMutator(buf, n, max, (unsigned)i);
        if (m > max) return 3;
        put(argv[2], "libfuzzer", i, buf, m);
    }
    void *state = afl_custom_init(NULL, 1000);
    for (int i = 0; i < count; i++) {
        uint8_t *out = NULL;
        size_t m = afl_custom_fuzz(state, input, n, &out, NULL, 0, max);
        if (m > max || (m > 0 && !out)) return 3;
        put(argv[2], "afl", i, out, m);
    }
    afl_custom_deinit(state);
    free(input);
    free(buf);
    return 0;
}
"#;

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

/// The static library cargo built for this test run: beside the test binary in `deps/` (where
/// `cargo test` leaves it), else one folder up (where `cargo build` puts it).
fn static_lib() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    let name = "libparallels_image_mutator.a";
    [deps.join(name), deps.parent().unwrap().join(name)]
        .into_iter()
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} was not built beside {}", exe.display()))
}

fn build_harness(dir: &Path) -> PathBuf {
    let src = dir.join("harness.c");
    std::fs::write(&src, HARNESS).unwrap();
    let lib = static_lib();
    let exe = dir.join("harness");
    let out = Command::new("cc")
        .arg(&src)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

#[test]
fn a_c_harness_gets_the_variants_and_they_parse() {
    if !on_path("cc") {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("cc is not installed");
        }
        eprintln!("SKIPPED: a_c_harness_gets_the_variants_and_they_parse: cc is not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = build_harness(dir.path());
    let max = 1usize << 20;
    let count = 200;
    for (name, input) in [("image", fallback().to_vec()), ("text", b"not an image\n".to_vec())] {
        let input_path = dir.path().join(format!("{name}.in"));
        std::fs::write(&input_path, &input).unwrap();
        let out = dir.path().join(name);
        std::fs::create_dir(&out).unwrap();
        let run = Command::new(&exe)
            .arg(&input_path)
            .arg(&out)
            .args([count.to_string(), max.to_string()])
            .output()
            .unwrap();
        assert!(run.status.success(), "{name}: {run:?}");
        let mut parsed = 0;
        for i in 0..count {
            let lf = std::fs::read(out.join(format!("libfuzzer-{i}.hds"))).unwrap();
            assert_eq!(lf, mutate(&input, i as u64, max), "{name}: libFuzzer variant {i}");
            let afl = std::fs::read(out.join(format!("afl-{i}.hds"))).unwrap();
            assert_eq!(afl, mutate(&input, 1000 + i as u64, max), "{name}: AFL++ variant {i}");
            for v in [&lf, &afl] {
                assert!(v.len() <= max);
                parsed += usize::from(Image::parse(v).is_ok());
            }
        }
        // A variant whose header edit breaks a reader's first checks (magic, version, tracks,
        // BAT size, ext_off) does not parse; the others do.
        assert!(parsed >= 2 * count * 8 / 10, "{name}: {parsed} of {} parse", 2 * count);
    }
}

#[test]
fn outputs_respect_max_size_and_odd_inputs() {
    // Empty input, a max_size smaller than any image: no panic, never longer than asked.
    assert_eq!(mutate(&[], 1, 0), Vec::<u8>::new());
    assert_eq!(mutate(b"abc", 1, 2), b"ab".to_vec());
    let base = fallback();
    let v = mutate(base, 5, base.len());
    assert!(v.len() <= base.len());
    assert!(Image::parse(&base).is_ok());
}
