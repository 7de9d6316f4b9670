//! End-to-end tests of the `prlimg` binary: every image here is made by `prlimg create`, and
//! expected values are worked out by hand from the layout rules (header and BAT at 0, data area
//! at the end of the BAT rounded up to a cluster, data clusters in guest order, then the
//! extension cluster, then bitmap clusters).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use parallels_image::corrupt::DefectKind;
use parallels_image::{Rule, Severity};
use serde_json::{json, Value};

#[path = "fixtures/cli.rs"]
mod runner;
use runner::*;

const UUID_B: &str = "e4f2eed0-37fe-4539-b50b-85d2e7fd235f";

/// Whether `nbdinfo` and `qemu-nbd` run; panics when they are missing under CI=true.
fn nbd_tools() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if ok("nbdinfo") && ok("qemu-nbd") {
        return true;
    }
    assert!(!is_ci(), "nbdinfo or qemu-nbd is missing and CI=true");
    // Straight to stderr: the harness would swallow `eprintln!` of a passing test.
    let _ = std::io::Write::write_all(
        &mut std::io::stderr(),
        b"SKIPPED: nbdinfo or qemu-nbd is not installed (install libnbd-bin and qemu-utils)\n",
    );
    false
}

// --------------------------------------------------------------------------------------- check

/// The exit status is the verdict's, whatever the output format: 0 clean, 3 leaks only, 2
/// corrupt, and `--lenient` lowers an unknown feature to a note (the reports themselves are
/// compared in process, in `tests/render.rs`).
#[test]
fn check_exit_status_is_the_verdicts() {
    let dir = tmp();
    let a = image_a(dir.path());
    let status = |extra: &[&str]| {
        let mut args = vec!["check", s(&a)];
        args.extend_from_slice(extra);
        let out = prlimg(&args);
        (out.status.code(), json_of(&out)["result"].clone())
    };
    assert_eq!(status(&["--output", "json"]), (Some(0), json!("clean")));
    assert_eq!(prlimg(&["check", s(&a)]).status.code(), Some(0));
    let mut bytes = fs::read(&a).unwrap();
    bytes.extend_from_slice(&[0x55; 4096]);
    fs::write(&a, &bytes).unwrap();
    assert_eq!(status(&["--output", "json"]), (Some(3), json!("leaks")));
    // An unknown feature magic in the first record (feature #0 at byte 24 of the extension),
    // the checksum kept right: corrupt, and with --lenient a note beside the leaks.
    let ext = 196608usize;
    bytes[ext + 24..ext + 32].copy_from_slice(&0x1234_5678u64.to_le_bytes());
    let digest: [u8; 16] = <md5::Md5 as md5::Digest>::digest(&bytes[ext + 24..ext + 65536]).into();
    bytes[ext + 8..ext + 24].copy_from_slice(&digest);
    fs::write(&a, &bytes).unwrap();
    assert_eq!(status(&["--output", "json"]), (Some(2), json!("corrupt")));
    assert_eq!(status(&["--output", "json", "--lenient"]), (Some(3), json!("leaks")));
    assert_eq!(prlimg(&["check", s(&a)]).status.code(), Some(2));
}

#[test]
fn check_missing_file_exit_1_one_line() {
    let dir = tmp();
    let p = dir.path().join("none.hds");
    let out = prlimg(&["check", s(&p)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), format!("prlimg: {}: No such file or directory\n", s(&p)));
    assert!(out.stdout.is_empty());
}

#[test]
fn check_not_a_parallels_image_exit_1() {
    // An empty file and a qcow2 header are not Parallels images: exit 1, one line, as
    // qemu-img says "Image not in Parallels format" (a damaged magic stays R1, exit 2).
    let dir = tmp();
    let empty = dir.path().join("empty.hds");
    fs::write(&empty, b"").unwrap();
    let qcow2 = dir.path().join("x.qcow2");
    let mut q = vec![0u8; 1024];
    q[..8].copy_from_slice(b"QFI\xfb\0\0\0\x03");
    fs::write(&qcow2, &q).unwrap();
    let out = prlimg(&["check", s(&empty)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("prlimg: {}: empty file: not a Parallels image\n", s(&empty))
    );
    assert!(out.stdout.is_empty());
    let out = prlimg(&["check", s(&qcow2)]);
    assert_eq!(out.status.code(), Some(1));
    let hex = "514649fb000000030000000000000000";
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: not a Parallels image: bytes 0..16 are \"QFI\\xfb\\x00\\x00\\x00\\x03\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\" (hex {hex}), expected \"WithoutFreeSpace\" or \"WithouFreSpacExt\", and the version at byte 16 is 0, not 2\n",
            s(&qcow2),
        )
    );
}

#[test]
fn check_json_of_a_path_that_cannot_be_checked_is_a_record() {
    // --output json prints the batch's record for the path on stdout (stderr keeps its line).
    let dir = tmp();
    let empty = dir.path().join("empty.hds");
    fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("none.hds");
    for (path, result, error) in [
        (&empty, "not-parallels", "empty file: not a Parallels image"),
        (&missing, "unreadable", "No such file or directory"),
    ] {
        let out = prlimg(&["check", "--output", "json", s(path)]);
        assert_eq!(out.status.code(), Some(1));
        assert_eq!(
            json_of(&out),
            json!({"path": s(path), "result": result, "error": error})
        );
        assert_eq!(stderr(&out), format!("prlimg: {}: {error}\n", s(path)));
    }
}

#[test]
fn read_commands_never_modify_the_input() {
    let dir = tmp();
    let a = image_a(dir.path());
    let before = fs::read(&a).unwrap();
    let mtime = fs::metadata(&a).unwrap().modified().unwrap();
    for args in [
        vec!["info", s(&a)],
        vec!["check", s(&a)],
        vec!["bitmaps", s(&a)],
        vec!["bitmaps", s(&a), UUID_A],
        vec!["bitmaps", s(&a), UUID_A, "--output", "raw"],
    ] {
        prlimg_ok(&args);
    }
    assert_eq!(fs::read(&a).unwrap(), before);
    assert_eq!(fs::metadata(&a).unwrap().modified().unwrap(), mtime);
}

// ------------------------------------------------------------------------------------- bitmaps

#[test]
fn bitmaps_unknown_name_exit_1() {
    let dir = tmp();
    let a = image_a(dir.path());
    let out = prlimg(&["bitmaps", s(&a), UUID_B]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("prlimg: {}: no bitmap named \"{UUID_B}\"\n", s(&a))
    );
}

/// `prlimg bitmaps NAME` against `nbdinfo --map` over `qemu-nbd -r -B NAME`, text and JSON.
fn compare_with_nbdinfo(image: &Path, name: &str) {
    for json in [false, true] {
        let mut cmd = Command::new("nbdinfo");
        if json {
            cmd.arg("--json");
        }
        let theirs = cmd
            .arg(format!("--map=qemu:dirty-bitmap:{name}"))
            .args([
                "--",
                "[",
                "qemu-nbd",
                "-r",
                "-f",
                "parallels",
                "-B",
                name,
                s(image),
                "]",
            ])
            .output()
            .expect("run nbdinfo");
        assert!(
            theirs.status.success(),
            "nbdinfo failed: {}",
            String::from_utf8_lossy(&theirs.stderr)
        );
        let ours = if json {
            prlimg_ok(&["bitmaps", s(image), name, "--output", "json"])
        } else {
            prlimg_ok(&["bitmaps", s(image), name])
        };
        let (t, o) = (stdout(&theirs), stdout(&ours));
        assert!(t.lines().count() >= 2, "nbdinfo printed too little: {t}");
        for (i, (a, b)) in t.lines().zip(o.lines()).enumerate() {
            assert_eq!(b, a, "line {i} differs (json={json})");
        }
        assert_eq!(o, t, "json={json}");
    }
}

#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn bitmaps_match_nbdinfo_line_for_line() {
    if !nbd_tools() {
        return;
    }
    let dir = tmp();
    let a = image_a(dir.path());
    compare_with_nbdinfo(&a, UUID_A);

    // Many runs across several L1 chunks (4 KiB clusters: 32768 granules per chunk), a size that
    // is not a multiple of the granularity, and a v1 image with two bitmaps.
    let r = dir.path().join("r.hds");
    prlimg_ok(&[
        "create",
        s(&r),
        "--size",
        "1000000000",
        "--cluster-size",
        "4K",
        "--v1",
        "--random-bitmap",
        "0.4",
        "--random-granularity",
        "4K",
        "--seed",
        "9",
        "--bitmap",
        &format!("{UUID_B}:512:0+1,999999000+1000"),
    ]);
    let names: Vec<String> = json_of(&prlimg_ok(&["bitmaps", s(&r), "--output", "json"]))["bitmaps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2);
    for n in &names {
        compare_with_nbdinfo(&r, n);
    }
}

// -------------------------------------------------------------------------------------- create

#[test]
fn no_progress_bar_when_stderr_is_piped() {
    // 64 MiB of data is enough for a progress bar on a terminal.
    let dir = tmp();
    let p = dir.path().join("big.hds");
    let out = prlimg_ok(&["create", s(&p), "--size", "128M", "--data", "0:64M:0x77"]);
    assert_eq!(stderr(&out), "");
    let out = prlimg(&["check", s(&p)]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
    assert!(stdout(&out).contains("\n64/128 = 50.00% allocated, 0.00% fragmented, 0.00% compressed clusters\n"));
}

#[test]
fn create_refuses_existing_output_without_force() {
    let dir = tmp();
    let p = dir.path().join("x.hds");
    fs::write(&p, b"precious").unwrap();
    let out = prlimg(&["create", s(&p), "--size", "1M"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("prlimg: {}: already exists (use --force to replace it)\n", s(&p))
    );
    assert_eq!(fs::read(&p).unwrap(), b"precious");
    prlimg_ok(&["create", s(&p), "--size", "1M", "--force"]);
    // 1 MiB disk, 1 MiB clusters: BAT of one entry, data area at 1 MiB, nothing allocated.
    assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
    // No temporary file is left beside it.
    let names: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("x.hds")]);
}

/// A size `create` cannot read is refused, naming it, and nothing is written (the sizes it
/// reads: `outputs::create_size_suffixes` in `tests/integration`).
#[test]
fn create_refuses_a_bad_size() {
    let dir = tmp();
    let p = dir.path().join("bad.hds");
    let out = prlimg(&["create", s(&p), "--size", "12X"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid size \"12X\""), "{}", stderr(&out));
    assert!(!p.exists());
}

#[test]
fn create_from_recipe_json_and_toml_matches_options() {
    let dir = tmp();
    let by_options = image_a(dir.path());
    let json_recipe = dir.path().join("a.json");
    fs::write(
        &json_recipe,
        format!(
            r#"{{"size": 67108864, "cluster_size": 65536,
                "data": [{{"offset": 0, "len": 102400, "byte": 170}}],
                "bitmaps": [{{"id": "{UUID_A}", "granularity": 65536, "dirty": [[0, 131072], [1048576, 1]]}}]}}"#
        ),
    )
    .unwrap();
    let toml_recipe = dir.path().join("a.toml");
    fs::write(
        &toml_recipe,
        format!(
            "size = 67108864\ncluster_size = 65536\n\n[[data]]\noffset = 0\nlen = 102400\nbyte = 170\n\n\
             [[bitmaps]]\nid = \"{UUID_A}\"\ngranularity = 65536\ndirty = [[0, 131072], [1048576, 1]]\n"
        ),
    )
    .unwrap();
    let expected = fs::read(&by_options).unwrap();
    for recipe in [&json_recipe, &toml_recipe] {
        let out = dir.path().join("from-recipe.hds");
        prlimg_ok(&["create", s(&out), "--recipe", s(recipe), "--force"]);
        assert_eq!(fs::read(&out).unwrap(), expected, "{}", recipe.display());
    }
    let bad = dir.path().join("bad.json");
    fs::write(&bad, r#"{"size": 1, "colour": "red"}"#).unwrap();
    let out = prlimg(&["create", s(&dir.path().join("y.hds")), "--recipe", s(&bad)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).starts_with(&format!("prlimg: {}: unknown field `colour`", s(&bad))));
}

#[test]
fn create_rejects_impossible_images_cleanly() {
    let dir = tmp();
    let p = dir.path().join("c.hds");
    let out = prlimg(&["create", s(&p), "--size", "10M", "--cluster-size", "1000"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).starts_with(&format!(
        "prlimg: {}: cannot build this image: cluster size 1000",
        s(&p)
    )));
    let nowhere = dir.path().join("no-such-dir").join("x.hds");
    let out = prlimg(&["create", s(&nowhere), "--size", "1M"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("prlimg: {}: No such file or directory\n", s(&nowhere))
    );
    let out = prlimg(&["create", s(&p), "--size", "1M", "--data", "1M:1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!stderr(&out).contains("panicked"));
    assert!(!p.exists());
}

// ------------------------------------------------------------------------------------- corrupt

/// Base images for the defect catalogue: v2 and v1 (BAT in sectors), 4 KiB clusters, 60 MiB.
/// Bitmap A (512-byte granules, 122880 granules, 4 L1 chunks of 32768, the last one partial)
/// has one dirty granule in each chunk, so each chunk has its own bitmap cluster; bitmap B
/// (64 KiB granules) has one chunk with two dirty granules. Three data writes allocate guest
/// clusters 0, 1, 256 and 15104.
fn defect_bases(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for (name, v1) in [("base-v2.hds", false), ("base-v1.hds", true)] {
        let p = dir.join(name);
        let mut args = vec![
            "create",
            s(&p),
            "--size",
            "60M",
            "--cluster-size",
            "4K",
            "--data",
            "0:8K:0x11",
            "--data",
            "1M:4K:0x22",
            "--data",
            "59M:4K:0x33",
        ];
        let a = format!("{UUID_A}:512:0+512,16M+512,32M+512,48M+512");
        let b = format!("{UUID_B}:64K:64K+64K,10M+64K");
        args.extend(["--bitmap", &a, "--bitmap", &b]);
        if v1 {
            args.push("--v1");
        }
        prlimg_ok(&args);
        let check = prlimg(&["check", s(&p), "--output", "json"]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "base {name} is not clean: {}",
            stdout(&check)
        );
        assert_eq!(json_of(&check)["findings"], json!([]), "base {name}");
        out.push(p);
    }
    // An empty disk (nothing after the BAT), and a v1 image whose data area starts right after
    // the BAT (which `create` does not make).
    let empty = dir.join("base-empty.hds");
    prlimg_ok(&["create", s(&empty), "--size", "1M"]);
    out.push(empty);
    let compact = dir.join("base-v1-compact.hds");
    parallels_image::ImageBuilder::new(20 << 20)
        .variant(parallels_image::Variant::V1)
        .cluster_size(64 << 10)
        .compact_v1(true)
        .data(0, parallels_image::GuestData::Fill { len: 4096, byte: 0x99 })
        .create_file(&compact, false)
        .unwrap();
    out.push(compact);
    for p in &out[2..] {
        assert_eq!(
            json_of(&prlimg(&["check", s(p), "--output", "json"]))["findings"],
            json!([])
        );
    }
    out
}

/// `check`'s exit status for an image whose worst finding breaks `rule`.
fn exit_for_rule(rule: Rule) -> i32 {
    match rule.severity() {
        Severity::Corruption => 2,
        Severity::Leak => 3,
        Severity::NonCanonical | Severity::Note => 0,
    }
}

#[test]
fn corrupt_list_names_every_defect() {
    let text = stdout(&prlimg_ok(&["corrupt", "--list"]));
    let lines: Vec<&str> = text.lines().collect();
    let defects = defects_listed();
    assert_eq!(lines.len(), defects.len());
    assert!(defects.len() >= 42, "{} defects", defects.len());
    // One line per defect of the catalogue, in its order: name, rule, summary.
    assert_eq!(defects.len(), DefectKind::ALL.len());
    let width = DefectKind::ALL.iter().map(|d| d.name().len()).max().unwrap();
    for ((line, (name, rule)), d) in lines.iter().zip(&defects).zip(DefectKind::ALL) {
        assert_eq!((name.as_str(), *rule), (d.name(), d.rule()));
        assert_eq!(
            *line,
            format!("{:width$}  {:<4}  {}", d.name(), d.rule().code(), d.summary())
        );
    }
    for &rule in Rule::ALL {
        assert!(defects.iter().any(|d| d.1 == rule), "no defect for {rule}");
    }
    assert!(lines
        .iter()
        .any(|l| l.starts_with("inuse-set ") && l.contains(" R7 ") && l.contains("Ynot")));
}

/// (name, rule) of every defect, from `prlimg corrupt --list`.
fn defects_listed() -> Vec<(String, Rule)> {
    stdout(&prlimg_ok(&["corrupt", "--list"]))
        .lines()
        .map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next().unwrap().to_string();
            let rule = f.next().unwrap();
            (
                name,
                Rule::from_code(rule).unwrap_or_else(|| panic!("unknown rule {rule}")),
            )
        })
        .collect()
}

#[test]
fn corrupt_every_defect_breaks_exactly_its_rule() {
    let dir = tmp();
    let bases = defect_bases(dir.path());
    let mut failures = Vec::new();
    for (defect, rule) in defects_listed() {
        let out = dir.path().join(format!("{defect}.hds"));
        let mut done = false;
        let mut refusals = Vec::new();
        for base in &bases {
            let before = fs::read(base).unwrap();
            let r = prlimg(&["corrupt", s(base), s(&out), "--defect", &defect, "--seed", "1"]);
            assert_eq!(fs::read(base).unwrap(), before, "{defect} modified its input");
            if r.status.code() != Some(0) {
                assert_eq!(r.status.code(), Some(1));
                assert!(!out.exists(), "{defect}: output left after a refusal");
                refusals.push(stderr(&r));
                continue;
            }
            done = true;
            let check = prlimg(&["check", s(&out), "--output", "json"]);
            let v = json_of(&check);
            let kind: DefectKind = defect.parse().unwrap();
            let mut expected: Vec<&str> = vec![rule.code()];
            expected.extend(kind.also_breaks().iter().map(|r| r.code()));
            let mut found: Vec<&str> = v["rules"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect();
            found.sort_unstable();
            expected.sort_unstable();
            if found != expected {
                failures.push(format!(
                    "{defect} on {}: rules {found:?}, expected {expected:?}",
                    base.display()
                ));
            }
            let code = exit_for_rule(rule);
            if check.status.code() != Some(code) {
                failures.push(format!(
                    "{defect} on {}: exit {:?}, expected {code}",
                    base.display(),
                    check.status.code()
                ));
            }
            read_everything(&out);
            fs::remove_file(&out).unwrap();
        }
        assert!(done, "{defect}: no base image suits it: {refusals:?}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn corrupt_is_reproducible_and_refuses_to_overwrite() {
    let dir = tmp();
    let a = image_a(dir.path());
    let out = dir.path().join("dup.hds");
    prlimg_ok(&["corrupt", s(&a), s(&out), "--defect", "bat-entry-duplicate"]);
    let first = fs::read(&out).unwrap();
    // Refused without --force; the existing output is untouched.
    let r = prlimg(&["corrupt", s(&a), s(&out), "--defect", "inuse-set"]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        stderr(&r),
        format!("prlimg: {}: already exists (use --force to replace it)\n", s(&out))
    );
    assert_eq!(fs::read(&out).unwrap(), first);
    prlimg_ok(&["corrupt", s(&a), s(&out), "--defect", "bat-entry-duplicate", "--force"]);
    assert_eq!(fs::read(&out).unwrap(), first);
    // Writing over the input is refused even with --force.
    let before = fs::read(&a).unwrap();
    let r = prlimg(&["corrupt", s(&a), s(&a), "--defect", "inuse-set", "--force"]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(fs::read(&a).unwrap(), before);
    // Unknown defect: one line, exit 1.
    let r = prlimg(&["corrupt", s(&a), s(&dir.path().join("n.hds")), "--defect", "no-such"]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        stderr(&r),
        "prlimg: unknown defect \"no-such\" (prlimg corrupt --list shows them)\n"
    );
}

#[test]
fn corrupt_copy_stays_sparse() {
    // A 64 GiB disk with data only at its end: the BAT ends at 256 KiB, the data area starts at
    // 1 MiB, one data cluster follows. The copy must not fill the gap after the BAT.
    let dir = tmp();
    let p = dir.path().join("big.hds");
    prlimg_ok(&["create", s(&p), "--size", "64G", "--data", "63G:1:1"]);
    let out = dir.path().join("big-bad.hds");
    prlimg_ok(&["corrupt", s(&p), s(&out), "--defect", "inuse-set"]);
    use std::os::unix::fs::MetadataExt;
    let (a, b) = (fs::metadata(&p).unwrap(), fs::metadata(&out).unwrap());
    assert_eq!(a.len(), b.len());
    assert!(
        b.blocks() <= a.blocks() + 8,
        "copy uses {} blocks, original {}",
        b.blocks(),
        a.blocks()
    );
    let (x, y) = (fs::read(&p).unwrap(), fs::read(&out).unwrap());
    assert_eq!(x[..44], y[..44]);
    assert_eq!(&y[44..48], b"Ynot");
    assert_eq!(x[48..], y[48..]);
}

/// Runs every read command on `path`; none may panic, each exits 0-3 with at most one line on
/// stderr.
fn read_everything(path: &Path) {
    let mut runs = vec![
        prlimg(&["info", s(path)]),
        prlimg(&["info", s(path), "--output", "json"]),
        prlimg(&["check", s(path)]),
        prlimg(&["check", s(path), "--lenient"]),
    ];
    let list = prlimg(&["bitmaps", s(path), "--output", "json"]);
    if list.status.success() {
        for b in json_of(&list)["bitmaps"].as_array().unwrap() {
            let name = b["name"].as_str().unwrap();
            for format in ["human", "json", "raw"] {
                runs.push(prlimg(&["bitmaps", s(path), name, "--output", format]));
            }
        }
    }
    runs.push(list);
    for r in runs {
        let err = stderr(&r);
        assert!(
            matches!(r.status.code(), Some(0..=3)),
            "{}: {:?} {err}",
            path.display(),
            r.status
        );
        assert!(
            !err.contains("panicked") && err.lines().count() <= 1,
            "{}: {err}",
            path.display()
        );
    }
}

#[test]
fn hostile_files_give_one_line_errors() {
    let dir = tmp();
    let a = image_a(dir.path());
    let whole = fs::read(&a).unwrap();
    let mut noise = vec![0u8; 70000];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    let mut noisy_header = whole.clone();
    noisy_header[..16].copy_from_slice(b"WithouFreSpacExt");
    noisy_header[64..64 + 4096].copy_from_slice(&noise[..4096]);
    for (name, bytes) in [
        ("empty", Vec::new()),
        ("noise", noise),
        ("short", whole[..30].to_vec()),
        ("cut", whole[..200000].to_vec()),
        ("noisy-bat", noisy_header),
    ] {
        let p = dir.path().join(name);
        fs::write(&p, bytes).unwrap();
        read_everything(&p);
    }
    let empty = dir.path().join("empty");
    let out = prlimg(&["info", s(&empty)]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!("prlimg: {}: empty file: not a Parallels image\n", s(&empty))
    );
}

#[test]
fn closed_pipe_is_not_a_panic() {
    let dir = tmp();
    let p = dir.path().join("r.hds");
    prlimg_ok(&["create", s(&p), "--size", "1T", "--random-bitmap", "0.5"]);
    let name = json_of(&prlimg_ok(&["bitmaps", s(&p), "--output", "json"]))["bitmaps"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut child = Command::new(BIN)
        .args(["bitmaps", s(&p), &name])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    // Quietly, with status 0, as Unix tools end when the reader goes away.
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}

// ------------------------------------------------------------------------------------- recipes

/// Every recipe in `examples/recipes/` builds an image that checks clean; the JSON and TOML
/// versions of the demo build the same bytes as the README's options.
#[test]
fn example_recipes_build_clean_images() {
    let dir = tmp();
    let recipes = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipes");
    let mut names: Vec<PathBuf> = fs::read_dir(&recipes).unwrap().map(|e| e.unwrap().path()).collect();
    names.sort();
    assert_eq!(
        names
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap())
            .collect::<Vec<_>>(),
        [
            "demo.json",
            "demo.toml",
            "v1-two-bitmaps.toml",
            "with-snapshots.bundle.toml"
        ]
    );
    let mut built = Vec::new();
    // The bundle recipe is built by tests/ux.rs (with --bundle).
    for recipe in &names[..3] {
        let out = dir.path().join("out.hds");
        prlimg_ok(&["create", s(&out), "--recipe", s(recipe), "--force"]);
        let check = prlimg(&["check", s(&out)]);
        assert_eq!(check.status.code(), Some(0), "{}: {}", recipe.display(), stdout(&check));
        built.push(fs::read(&out).unwrap());
    }
    let by_options = dir.path().join("demo.hds");
    prlimg_ok(&[
        "create",
        s(&by_options),
        "--size",
        "64G",
        "--cluster-size",
        "1M",
        "--data",
        "0:4M:0xaa",
        "--data",
        "10G:1M:0x55",
        "--bitmap",
        &format!("{UUID_B}:64K:5M+2M,1G+64K"),
    ]);
    let demo = fs::read(&by_options).unwrap();
    assert_eq!(built[0], demo, "demo.json");
    assert_eq!(built[1], demo, "demo.toml");
    // v1: 100 MiB = 25600 BAT entries in 4 KiB clusters; data [1000, 11000) touches clusters 0..=2.
    let v1 = dir.path().join("v1.hds");
    prlimg_ok(&["create", s(&v1), "--recipe", s(&names[2]), "--force"]);
    let info = json_of(&prlimg_ok(&["info", s(&v1), "--output", "json"]));
    assert_eq!(info["variant"], "v1");
    assert_eq!(info["bat_entries"], 25600);
    assert_eq!(info["allocated_clusters"], 3);
    assert_eq!(info["bitmaps"][0]["dirty_bytes"], 100 << 20);
    assert_eq!(info["bitmaps"][1]["dirty_bytes"], 0);
}

/// A recipe error names the file, the place (TOML: line and column) and serde's reason.
#[test]
fn recipe_errors_keep_the_reason() {
    let dir = tmp();
    let out = dir.path().join("x.hds");
    let cases: &[(&str, &str, &str)] = &[
        ("a.toml", "size = \"64X\"\n", "TOML at line 1, column 8: invalid size \"64X\" (expected bytes or a number with K, M, G, T, P or E)"),
        ("b.toml", "size = -1\n", "TOML at line 1, column 8: invalid size -1 (a size cannot be negative)"),
        ("c.toml", "size = \"1M\"\ncolour = 1\n", "TOML at line 2, column 1: unknown field `colour`, expected one of `size`, `cluster_size`, `v1`, `data`, `bitmaps`"),
        ("d.toml", "size = \"1M\"\n[[data]]\noffset = 0\nlen = 1\nbyte = 1\nbogus = 1\n", "TOML at line 6, column 1: unknown field `bogus`, expected one of `offset`, `len`, `byte`"),
        ("e.toml", "size = \"1M\"\n[[bitmaps]]\nid = \"x\"\ngranularity = 512\nname = 1\n", "TOML at line 5, column 1: unknown field `name`, expected one of `id`, `granularity`, `dirty`"),
        ("f.toml", "size = \"1M\"\nsize = 2\n", "TOML at line 2, column 1: duplicate key"),
        ("g.json", r#"{"size": "1M", "bitmaps": [{"id": "x", "granularity": 512, "dirty": [], "n": 1}]}"#, "unknown field `n`, expected one of `id`, `granularity`, `dirty` at line 1 column 75"),
        ("h.json", r#"{"size": "1.3K"}"#, "size \"1.3K\" is not a whole number of bytes at line 1 column 15"),
    ];
    for (name, text, why) in cases {
        let recipe = dir.path().join(name);
        fs::write(&recipe, text).unwrap();
        let o = prlimg(&["create", s(&out), "--recipe", s(&recipe)]);
        assert_eq!(o.status.code(), Some(1), "{name}");
        assert_eq!(stderr(&o), format!("prlimg: {}: {why}\n", recipe.display()), "{name}");
        assert!(!out.exists());
    }
    // A bundle recipe's errors are read the same way.
    let bundle = dir.path().join("x.hdd");
    let recipe = dir.path().join("bundle.toml");
    fs::write(&recipe, "size = \"1M\"\n[[snapshots]]\nguid = 7\n").unwrap();
    let o = prlimg(&["create", s(&bundle), "--bundle", "--recipe", s(&recipe)]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "prlimg: {}: TOML at line 3, column 8: invalid type: integer `7`, expected a string\n",
            recipe.display()
        )
    );
    assert!(!bundle.exists());
    // ...and take sizes as image recipes do ("4M", "64K").
    fs::write(
        &recipe,
        "size = \"4M\"\ncluster_size = \"64K\"\nsplit_at = [\"2M\"]\n[[snapshots]]\nguid = \"5fbaabe3-6958-40ff-92a7-860e329aab41\"\n",
    )
    .unwrap();
    prlimg_ok(&["create", s(&bundle), "--bundle", "--recipe", s(&recipe)]);
    let info = json_of(&prlimg_ok(&["info", "--output", "json", s(&bundle)]));
    assert_eq!(info["virtual_size"], 4 << 20, "{info}");
    assert_eq!(info["storages"].as_array().map(Vec::len), Some(2), "{info}");
    assert_eq!(info["storages"][0]["blocksize"], 128, "{info}");
}

/// `create` refuses what its own `check` would reject: a repeated bitmap id (R41) and dirty
/// ranges outside the disk (once silently dropped). Nothing is written.
#[test]
fn create_refuses_duplicate_bitmap_ids_and_ranges_outside_the_disk() {
    let dir = tmp();
    let out = dir.path().join("x.hds");
    let cases: Vec<(Vec<String>, String)> = vec![
        (
            vec!["--bitmap".into(), format!("{UUID_A}:64K:0+1"), "--bitmap".into(), format!("{UUID_A}:512:")],
            format!("bitmaps #0 and #1 have the same id {UUID_A}; bitmap ids must be unique (R41)"),
        ),
        (
            // 1 MiB + 1 byte is 2049 sectors: the disk ends at byte 1049088.
            vec!["--bitmap".into(), format!("{UUID_B}:64K:0+1,1M+513")],
            format!("bitmap #0 ({UUID_B}): dirty range 1048576+513 ends at byte 1049089, past the end of the disk at byte 1049088"),
        ),
    ];
    for (extra, why) in cases {
        let mut args: Vec<String> = vec!["create".into(), s(&out).into(), "--size".into(), "1048577".into()];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = prlimg(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(
            stderr(&o),
            format!("prlimg: {}: cannot build this image: {why}\n", s(&out))
        );
        assert!(!out.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
    // Up to the very end of the disk is fine.
    prlimg_ok(&[
        "create",
        s(&out),
        "--size",
        "1049089",
        "--bitmap",
        &format!("{UUID_B}:64K:1M+512"),
    ]);
}

// ------------------------------------------------------------------------------ CLI extras

#[test]
fn completions_and_man_page_generate() {
    for (shell, marker) in [
        ("bash", "_prlimg() {"),
        ("zsh", "#compdef prlimg"),
        (
            "fish",
            "complete -c prlimg -n \"__fish_prlimg_needs_command\" -f -a \"check\"",
        ),
    ] {
        let text = stdout(&prlimg_ok(&["completions", shell]));
        assert!(text.contains(marker), "{shell}: no {marker:?} in\n{text}");
        assert!(text.contains("follow-symlink"), "{shell}");
    }
    let page = stdout(&prlimg_ok(&["man"]));
    assert!(page.starts_with(".ie \\n(.g .ds Aq \\(aq"), "{}", &page[..100]);
    assert!(page.contains(".TH prlimg 1"), "{page}");
    for sub in ["info", "check", "bitmaps", "create", "corrupt", "completions", "man"] {
        assert!(page.contains(&format!("prlimg\\-{sub}(1)")), "{sub} in\n{page}");
    }
    let out = prlimg(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(1));
}

const UUID_P1: &str = "00112233-4455-6677-8899-aabbccddeeff";
const UUID_P2: &str = "10112233-4455-6677-8899-aabbccddeeff";

#[test]
fn create_preset_ploop_writes_v21_and_warns_about_the_last_bitmap() {
    let dir = tmp();
    let p = dir.path().join("p.hds");
    let b1 = format!("{UUID_P1}:64K:0+128K");
    let b2 = format!("{UUID_P2}:64K:1M+128K");
    let out = prlimg(&[
        "create",
        s(&p),
        "--size",
        "64M",
        "--preset",
        "ploop",
        "--bitmap",
        &b1,
        "--bitmap",
        &b2,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!("prlimg: warning: ploop keeps only the last of 2 bitmaps ({UUID_P2}); it ignores the others\n")
    );
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[44..48], b"v2.1");
    let v = json_of(&prlimg(&["check", s(&p), "--output", "json"]));
    assert_eq!(
        v["ploop"]["cbt"],
        json!({"outcome": "loads", "bitmap": UUID_P2, "rc": 0, "message": null})
    );
    assert_eq!(v["ploop"]["check"]["rc"], 0);
    // The mount cuts the extension and the two bitmap clusters (the file ends with them).
    assert_eq!(v["ploop"]["mount"]["effect"], "truncates");
    assert_eq!(v["ploop"]["mount"]["file_size"], 1 << 20);

    // A cluster size ploop refuses is refused, and nothing is written.
    let q = dir.path().join("q.hds");
    let out = prlimg(&[
        "create",
        s(&q),
        "--size",
        "64M",
        "--preset",
        "ploop",
        "--cluster-size",
        "16K",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "prlimg: --preset ploop: ploop does not open images with 16384-byte clusters (it wants a power of two from 32K to 64M)\n"
    );
    assert!(!q.exists());
}

#[test]
fn create_inuse_takes_tags_and_numbers() {
    let dir = tmp();
    for (arg, stored) in [
        ("v2.1", *b"v2.1"),
        ("Ynot", *b"Ynot"),
        ("pd17", *b"pd17"),
        ("0", [0; 4]),
        ("0x312e3276", *b"v2.1"),
    ] {
        let p = dir.path().join(format!("i{}.hds", arg.replace('.', "_")));
        prlimg_ok(&["create", s(&p), "--size", "1M", "--inuse", arg]);
        assert_eq!(&std::fs::read(&p).unwrap()[44..48], &stored, "--inuse {arg}");
    }
    let out = prlimg(&[
        "create",
        s(&dir.path().join("x.hds")),
        "--size",
        "1M",
        "--inuse",
        "v2.10",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("invalid inuse \"v2.10\""), "{}", stderr(&out));
}

#[test]
fn bitmaps_add_remove_clear_write_new_files_unless_in_place() {
    let dir = tmp();
    let a = dir.path().join("a.hds");
    prlimg_ok(&[
        "create",
        s(&a),
        "--size",
        "8M",
        "--cluster-size",
        "64K",
        "--data",
        "0:4K:0xaa",
    ]);
    let original = std::fs::read(&a).unwrap();
    let b = dir.path().join("b.hds");
    let spec = format!("{UUID_P1}:64K:0+128K");
    prlimg_ok(&["bitmaps", "add", s(&a), s(&b), "--bitmap", &spec, "--inuse", "v2.1"]);
    assert_eq!(std::fs::read(&a).unwrap(), original, "IN is not touched");
    assert_eq!(
        stdout(&prlimg_ok(&["bitmaps", s(&b), UUID_P1])),
        "         0      131072    1  dirty\n    131072     8257536    0  clean\n"
    );
    let v = json_of(&prlimg(&["check", s(&b), "--output", "json"]));
    assert_eq!(v["result"], "clean");
    assert_eq!(v["ploop"]["cbt"]["bitmap"], UUID_P1);

    // OUT exists: refused without --force.
    let out = prlimg(&["bitmaps", "add", s(&a), s(&b), "--bitmap", &spec]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with("already exists (use --force to replace it)\n"),
        "{}",
        stderr(&out)
    );

    let c = dir.path().join("c.hds");
    prlimg_ok(&["bitmaps", "remove", s(&b), s(&c), UUID_P1, "--inuse", "0"]);
    assert_eq!(std::fs::read(&c).unwrap(), original);
    prlimg_ok(&["bitmaps", "clear", s(&b), "--in-place", "--inuse", "0"]);
    assert_eq!(std::fs::read(&b).unwrap(), original);
    let out = prlimg(&["bitmaps", "remove", s(&b), UUID_P1, "--in-place"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).ends_with(&format!("there is no bitmap named {UUID_P1}\n")),
        "{}",
        stderr(&out)
    );
}

// -------------------------------------------------------------------------------- mutate, corpus

/// Every file of `dir`, by name.
fn files_of(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[test]
fn mutate_writes_the_variants_the_library_makes_and_a_manifest_of_their_edits() {
    use parallels_image::{mutate::MutateOptions, mutate::Mutator};
    let dir = tmp();
    let a = image_a(dir.path());
    let input = fs::read(&a).unwrap();
    let out = dir.path().join("m");
    let r = prlimg_ok(&["mutate", s(&a), s(&out), "--count", "4", "--seed", "7"]);
    assert_eq!((stdout(&r), stderr(&r)), (String::new(), String::new()));
    assert_eq!(fs::read(&a).unwrap(), input, "mutate modified its input");
    assert_eq!(
        files_of(&out),
        [
            "manifest.json",
            "mutant-000000.hds",
            "mutant-000001.hds",
            "mutant-000002.hds",
            "mutant-000003.hds"
        ]
    );
    let m = Mutator::new(&input, MutateOptions::default()).unwrap();
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    let mut mutants = Vec::new();
    for i in 0..4u64 {
        let v = m.mutant(7 + i);
        assert_eq!(
            fs::read(out.join(format!("mutant-{i:06}.hds"))).unwrap(),
            v.bytes,
            "variant {i}"
        );
        mutants.push(json!({
            "file": format!("mutant-{i:06}.hds"),
            "seed": 7 + i,
            "checksum": serde_json::to_value(v.checksum).unwrap(),
            "edits": serde_json::to_value(&v.edits).unwrap(),
        }));
    }
    assert_eq!(
        manifest,
        json!({
            "schema": 1, "input": s(&a), "seed": 7, "count": 4, "edits": [1, 3], "fix_checksum": true,
            "mutants": mutants,
        })
    );
    // Variant i alone: seed 7 + i, count 1.
    let one = dir.path().join("one");
    prlimg_ok(&["mutate", s(&a), s(&one), "--count", "1", "--seed", "9"]);
    assert_eq!(
        fs::read(one.join("mutant-000000.hds")).unwrap(),
        fs::read(out.join("mutant-000002.hds")).unwrap()
    );
    // Nothing is replaced without --force, and nothing is written when one file is in the way.
    let before = fs::read(out.join("mutant-000000.hds")).unwrap();
    let r = prlimg(&["mutate", s(&a), s(&out), "--count", "4", "--seed", "100"]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        stderr(&r),
        format!(
            "prlimg: {}: exists; nothing was written (use --force to replace, or another folder)\n",
            out.join("mutant-000000.hds").display()
        )
    );
    assert_eq!(fs::read(out.join("mutant-000000.hds")).unwrap(), before);
    prlimg_ok(&["mutate", s(&a), s(&out), "--count", "4", "--seed", "100", "--force"]);
    assert_eq!(fs::read(out.join("mutant-000000.hds")).unwrap(), m.mutant(100).bytes);
}

#[test]
fn mutate_can_leave_the_checksum_broken_and_takes_the_edit_count() {
    use parallels_image::{mutate::ChecksumState, mutate::MutateOptions, mutate::Mutator};
    let dir = tmp();
    let a = image_a(dir.path());
    let input = fs::read(&a).unwrap();
    let out = dir.path().join("m");
    prlimg_ok(&[
        "mutate",
        s(&a),
        s(&out),
        "--count",
        "3",
        "--edits",
        "2",
        "--broken-checksum",
    ]);
    let m = Mutator::new(
        &input,
        MutateOptions {
            fix_checksum: false,
            edits: 2..=2,
            max_len: None,
        },
    )
    .unwrap();
    let manifest: Value = serde_json::from_slice(&fs::read(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["fix_checksum"], false);
    assert_eq!(manifest["edits"], json!([2, 2]));
    for i in 0..3u64 {
        let v = m.mutant(i);
        assert_eq!(v.edits.len(), 2);
        assert_eq!(v.checksum, ChecksumState::LeftAsIs);
        assert_eq!(manifest["mutants"][i as usize]["checksum"], "left-as-is");
        assert_eq!(fs::read(out.join(format!("mutant-{i:06}.hds"))).unwrap(), v.bytes);
    }
    let r = prlimg(&["mutate", s(&a), s(&out), "--edits", "3-2"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        stderr(&r).contains("\"3-2\": MIN must not exceed MAX, and MAX is at most 64"),
        "{}",
        stderr(&r)
    );
}

#[test]
fn mutate_refuses_a_file_that_is_not_an_image_and_writes_nothing() {
    let dir = tmp();
    let p = dir.path().join("hello.txt");
    fs::write(&p, "hello\n").unwrap();
    let out = dir.path().join("m");
    let r = prlimg(&["mutate", s(&p), s(&out)]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        stderr(&r),
        format!(
            "prlimg: {}: not a Parallels image: bytes 0..16 are \"hello\\n\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\" \
             (hex 68656c6c6f0a00000000000000000000), expected \"WithoutFreeSpace\" or \"WithouFreSpacExt\", \
             and the version at byte 16 is 0, not 2\n",
            p.display()
        )
    );
    assert!(!out.exists());
}

#[test]
fn corpus_writes_the_library_corpus_every_defect_and_is_reproducible() {
    use parallels_image::{mutate::seed_corpus, mutate::CORPUS_MUTANTS};
    let dir = tmp();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    prlimg_ok(&["corpus", s(&a), "--seed", "5"]);
    prlimg_ok(&["corpus", s(&b), "--seed", "5"]);
    let corpus = seed_corpus(5).unwrap();
    let mut names: Vec<String> = corpus.iter().map(|e| e.name.clone()).collect();
    names.push("manifest.json".into());
    names.sort();
    assert_eq!(files_of(&a), names);
    for e in &corpus {
        assert_eq!(fs::read(a.join(&e.name)).unwrap(), e.bytes, "{}", e.name);
        assert_eq!(fs::read(b.join(&e.name)).unwrap(), e.bytes, "{}", e.name);
        assert!(e.bytes.len() <= 1 << 20, "{} is {} bytes", e.name, e.bytes.len());
    }
    assert_eq!(
        fs::read(a.join("manifest.json")).unwrap(),
        fs::read(b.join("manifest.json")).unwrap()
    );
    // Every defect of the catalogue, 10 valid shapes, the mutants.
    for d in DefectKind::ALL {
        assert!(a.join(format!("defect-{}.hds", d.name())).is_file(), "{}", d.name());
    }
    assert_eq!(corpus.len(), 10 + DefectKind::ALL.len() + CORPUS_MUTANTS);
    let manifest: Value = serde_json::from_slice(&fs::read(a.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["files"].as_array().unwrap().len(), corpus.len());
    assert_eq!(
        manifest["files"][0],
        json!({"file": "valid-v2-empty-512.hds", "kind": "valid", "shape": "v2-empty-512"})
    );
    // Every valid shape checks clean (`prlimg check --output json`, in process).
    for e in corpus.iter().filter(|e| e.name.starts_with("valid-")) {
        let options = parallels_image::report::CheckOptions::new(parallels_image::RuleMode::Strict);
        let report = parallels_image::report::check_path_with(&a.join(&e.name), &options).unwrap();
        let mut json = Vec::new();
        report.write_json(&mut json).unwrap();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["findings"], json!([]), "{}", e.name);
    }
    // Another seed, another corpus; the same folder is not overwritten.
    assert_ne!(seed_corpus(6).unwrap(), corpus);
    let r = prlimg(&["corpus", s(&a), "--seed", "6"]);
    assert_eq!(r.status.code(), Some(1));
    assert_eq!(
        fs::read(a.join("manifest.json")).unwrap(),
        fs::read(b.join("manifest.json")).unwrap()
    );
}
