//! `prlimg check` of many paths (a batch): each image reported as `prlimg check PATH` reports it
//! alone, the summary's counts, unreadable files counted without stopping the run, and the
//! worst image's exit status.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

#[path = "fixtures/cli.rs"]
mod runner;
use runner::*;

/// A folder of images whose expected results are known:
///
/// ```text
/// DIR/a-clean.hds            clean (64 MiB, 4 KiB clusters, data and a bitmap)
/// DIR/b-leak.hds             leaks (R20)
/// DIR/c-bundle.hdd/          clean bundle (its image is not checked on its own)
/// DIR/d-broken.hdd/          corrupt bundle (D7)
/// DIR/e-dangling.hds         unreadable: a symbolic link to nothing
/// DIR/f-fifo                 unreadable: a FIFO, never opened
/// DIR/nested/g-checksum.hds  corrupt (R25)
/// DIR/nested/h-duplicate.hds corrupt (R19)
/// DIR/nested/i-inuse.hds     what a single check says of inuse "Ynot" (R7)
/// DIR/nested/j-text.txt      not a Parallels image (Error::NotParallels)
/// DIR/nested/k-empty         not a Parallels image (Error::EmptyFile)
/// ```
fn corpus(dir: &Path) -> PathBuf {
    let root = dir.join("corpus");
    let nested = root.join("nested");
    fs::create_dir_all(&nested).unwrap();
    let clean = root.join("a-clean.hds");
    prlimg_ok(&[
        "create",
        s(&clean),
        "--size",
        "64M",
        "--cluster-size",
        "4K",
        "--data",
        "0:8K:0x11",
        "--data",
        "1M:4K:0x22",
        "--bitmap",
        &format!("{UUID_A}:64K:0+128K,1M+1"),
    ]);
    for (defect, out) in [
        ("trailing-leak", root.join("b-leak.hds")),
        ("ext-bad-checksum", nested.join("g-checksum.hds")),
        ("bat-entry-duplicate", nested.join("h-duplicate.hds")),
        ("inuse-set", nested.join("i-inuse.hds")),
    ] {
        prlimg_ok(&["corrupt", s(&clean), s(&out), "--defect", defect]);
    }
    let bundle = root.join("c-bundle.hdd");
    prlimg_ok(&["create", s(&bundle), "--bundle", "--size", "8M", "--data", "1M:64K:0x7"]);
    prlimg_ok(&[
        "corrupt",
        s(&bundle),
        s(&root.join("d-broken.hdd")),
        "--defect",
        "size-mismatch",
    ]);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(root.join("nowhere.hds"), root.join("e-dangling.hds")).unwrap();
        let fifo = root.join("f-fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
    }
    fs::write(nested.join("j-text.txt"), "hello, not an image\n").unwrap();
    fs::write(nested.join("k-empty"), "").unwrap();
    root
}

/// The corpus's entries in walk order (names sorted, depth first).
fn walk_order(root: &Path) -> Vec<PathBuf> {
    let mut names = vec!["a-clean.hds", "b-leak.hds", "c-bundle.hdd", "d-broken.hdd"];
    if cfg!(unix) {
        names.extend(["e-dangling.hds", "f-fifo"]);
    }
    names.extend([
        "nested/g-checksum.hds",
        "nested/h-duplicate.hds",
        "nested/i-inuse.hds",
        "nested/j-text.txt",
        "nested/k-empty",
    ]);
    names.into_iter().map(|n| root.join(n)).collect()
}

/// What `prlimg check PATH --output json` says alone: its exit status and either its JSON or
/// the reason of its one-line error (after `prlimg: PATH: `).
fn single(path: &Path) -> (i32, Result<Value, String>) {
    let out = prlimg(&["check", s(path), "--output", "json"]);
    let code = out.status.code().expect("exit status");
    if code == 1 {
        let err = String::from_utf8(out.stderr).unwrap();
        let prefix = format!("prlimg: {}: ", path.display());
        let reason = err.trim_end().strip_prefix(&prefix).unwrap_or_else(|| panic!("{err}"));
        return (code, Err(reason.to_string()));
    }
    (code, Ok(serde_json::from_slice(&out.stdout).expect("JSON")))
}

fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn recursive_json_lines_are_single_checks_plus_path_then_exact_summary() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let out = prlimg(&["check", "--recursive", s(&root), "--output", "json"]);
    let records = json_lines(&out);
    let order = walk_order(&root);
    assert_eq!(records.len(), order.len() + 1, "{}", stdout(&out));

    let mut worst_rank = 0;
    let rank = |code: i32| [0, 3, 1, 2].iter().position(|c| *c == code).unwrap();
    for (record, path) in records.iter().zip(&order) {
        assert_eq!(record["path"], json!(s(path)), "order");
        let fifo = path.ends_with("f-fifo");
        if fifo {
            // Never opened: a single check would block reading it.
            assert_eq!(
                *record,
                json!({"path": s(path), "result": "unreadable", "error": "is a FIFO, not a file; not read in a batch"})
            );
            worst_rank = worst_rank.max(rank(1));
            continue;
        }
        let (code, alone) = single(path);
        worst_rank = worst_rank.max(rank(code));
        match alone {
            Ok(mut expected) => {
                expected.as_object_mut().unwrap().insert("path".into(), json!(s(path)));
                assert_eq!(*record, expected, "{}", path.display());
                let result = expected["result"].as_str().unwrap();
                assert_eq!(
                    code,
                    [("clean", 0), ("leaks", 3), ("corrupt", 2)]
                        .iter()
                        .find(|r| r.0 == result)
                        .unwrap()
                        .1
                );
            }
            Err(reason) => {
                let result = record["result"].as_str().unwrap();
                assert!(result == "unreadable" || result == "not-parallels", "{record}");
                assert_eq!(*record, json!({"path": s(path), "result": result, "error": reason}));
            }
        }
    }
    // The per-image records key by key, as the corpus was built.
    let results: Vec<&str> = records[..order.len()]
        .iter()
        .map(|r| r["result"].as_str().unwrap())
        .collect();
    let mut expected_results = vec!["clean", "leaks", "clean", "corrupt"];
    if cfg!(unix) {
        expected_results.extend(["unreadable", "unreadable"]);
    }
    // inuse "Ynot" (R7) is a corruption as QEMU reads it.
    expected_results.extend(["corrupt", "corrupt", "corrupt", "not-parallels", "not-parallels"]);
    assert_eq!(results, expected_results);

    let summary = &records[order.len()]["summary"];
    let unreadable = if cfg!(unix) { 2 } else { 0 };
    assert_eq!(summary["images"], json!(order.len()));
    assert_eq!(summary["clean"], json!(2));
    assert_eq!(summary["leaks"], json!(1));
    assert_eq!(summary["corrupt"], json!(4));
    assert_eq!(summary["not_parallels"], json!(2));
    assert_eq!(summary["unreadable"], json!(unreadable));
    assert_eq!(
        summary["rules"],
        json!([
            {"rule": "D7", "images": 1},
            {"rule": "R7", "images": 1},
            {"rule": "R19", "images": 1},
            {"rule": "R20", "images": 1},
            {"rule": "R25", "images": 1},
        ])
    );
    let slowest = summary["slowest"].as_array().unwrap();
    assert_eq!(slowest.len(), 5);
    let times: Vec<f64> = slowest.iter().map(|s| s["seconds"].as_f64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    // The worst image is corrupt: exit 2, as its single check.
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(summary["exit_code"], json!(2));
    assert_eq!([0, 3, 1, 2][worst_rank], 2);
}

#[test]
fn human_lines_name_each_result_and_rules_then_the_summary() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let out = prlimg(&["check", "-R", s(&root), "--jobs", "2"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let order = walk_order(&root);
    for (line, path) in lines.iter().zip(&order) {
        let expected = if path.ends_with("f-fifo") {
            format!(
                "{}: unreadable: is a FIFO, not a file; not read in a batch",
                path.display()
            )
        } else {
            match single(path).1 {
                Ok(v) => {
                    let rules: Vec<&str> = v["rules"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|r| r.as_str().unwrap())
                        .collect();
                    let result = v["result"].as_str().unwrap();
                    if rules.is_empty() {
                        format!("{}: {result}", path.display())
                    } else {
                        format!("{}: {result} ({})", path.display(), rules.join(", "))
                    }
                }
                Err(reason) if reason.contains("not a Parallels image") => {
                    format!("{}: not-parallels: {reason}", path.display())
                }
                Err(reason) => format!("{}: unreadable: {reason}", path.display()),
            }
        };
        assert_eq!(*line, expected);
    }
    assert_eq!(lines[order.len()], "");
    let counts = if cfg!(unix) {
        "2 clean, 1 leaks, 4 corrupt, 2 not-parallels, 2 unreadable"
    } else {
        "2 clean, 1 leaks, 4 corrupt, 2 not-parallels"
    };
    let head = format!("{} images checked in ", order.len());
    assert!(lines[order.len() + 1].starts_with(&head), "{text}");
    assert!(
        lines[order.len() + 1].ends_with(&format!("2 threads): {counts}")),
        "{text}"
    );
    assert_eq!(
        lines[order.len() + 2],
        "rules (images): D7 1, R7 1, R19 1, R20 1, R25 1"
    );
    assert!(lines[order.len() + 3].starts_with("slowest: "), "{text}");
    assert_eq!(lines.len(), order.len() + 4);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn exit_status_is_the_worst_images() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let nested = root.join("nested");
    let code = |paths: &[PathBuf]| {
        let mut args = vec!["check".to_string()];
        args.extend(paths.iter().map(|p| p.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        prlimg(&args).status.code().unwrap()
    };
    let clean = root.join("a-clean.hds");
    let leak = root.join("b-leak.hds");
    let missing = root.join("missing.hds");
    let corrupt = nested.join("g-checksum.hds");
    assert_eq!(code(&[clean.clone(), clean.clone()]), 0);
    assert_eq!(code(&[clean.clone(), leak.clone()]), 3);
    // Could not check one: worse than leaks, better than a corruption.
    assert_eq!(code(&[leak.clone(), missing.clone(), clean.clone()]), 1);
    assert_eq!(code(&[corrupt.clone(), missing.clone(), leak.clone()]), 2);
    assert_eq!(code(&[root.join("c-bundle.hdd"), root.join("d-broken.hdd")]), 2);
}

#[test]
fn unreadable_paths_are_counted_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let missing = root.join("missing.hds");
    let clean = root.join("a-clean.hds");
    // A folder without a descriptor is not walked without --recursive.
    let out = prlimg(&[
        "check",
        s(&missing),
        s(&root.join("nested")),
        s(&clean),
        "--output",
        "json",
    ]);
    let records = json_lines(&out);
    assert_eq!(
        records[0],
        json!({"path": s(&missing), "result": "unreadable", "error": "No such file or directory"})
    );
    assert_eq!(
        records[1],
        json!({"path": s(&root.join("nested")), "result": "unreadable",
               "error": "a folder without DiskDescriptor.xml (--recursive checks the files in it)"})
    );
    assert_eq!(records[2]["result"], json!("clean"));
    assert_eq!(records[3]["summary"]["images"], json!(3));
    assert_eq!(records[3]["summary"]["unreadable"], json!(2));
    assert_eq!(records[3]["summary"]["clean"], json!(1));
    assert_eq!(records.len(), 4);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn one_thread_and_two_give_the_same_lines_in_the_same_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = corpus(dir.path());
    let per_image = |jobs: &str| {
        let out = prlimg(&["check", "-R", s(&root), "-j", jobs, "--output", "json"]);
        let mut records = json_lines(&out);
        records.pop();
        records
    };
    assert_eq!(per_image("1"), per_image("2"));
}
