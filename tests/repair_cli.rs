//! `prlimg repair` and `prlimg check -r` end to end: the input is never changed without
//! `--in-place`, a clean image writes nothing, `--dry-run` writes nothing, `--in-place` keeps
//! the file's mode, the JSON plan is typed records, devices and streams are refused in place.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

#[path = "fixtures/cli.rs"]
mod runner;
use runner::*;

/// A v2 image of 64 KiB clusters with data and two bitmaps.
fn base(dir: &Path) -> PathBuf {
    let p = dir.join("base.hds");
    prlimg_ok(&[
        "create",
        s(&p),
        "--size",
        "64M",
        "--cluster-size",
        "64K",
        "--data",
        "0:1M:1",
        "--data",
        "32M:256K:2",
        "--bitmap",
        "11111111-2222-3333-4444-555555555555:64K:0+4M",
        "--bitmap",
        "21111111-2222-3333-4444-555555555555:128K:1M+40M",
    ]);
    p
}

fn damaged(dir: &Path, defect: &str) -> PathBuf {
    let b = base(dir);
    let p = dir.join(format!("{defect}.hds"));
    prlimg_ok(&["corrupt", s(&b), s(&p), "--defect", defect, "--force"]);
    p
}

#[test]
fn clean_image_writes_nothing() {
    let dir = tmp();
    let b = base(dir.path());
    let out = dir.path().join("out.hds");
    let o = prlimg(&["repair", s(&b), s(&out), "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("clean, nothing to repair; nothing written"),
        "{}",
        stdout(&o)
    );
    assert!(!out.exists());
}

#[test]
fn repair_leaves_the_input_and_fixes_a_copy() {
    let dir = tmp();
    let d = damaged(dir.path(), "bat-entry-duplicate");
    let before = fs::read(&d).unwrap();
    let out = dir.path().join("out.hds");
    let o = prlimg(&["repair", s(&d), s(&out), "--all", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::read(&d).unwrap(), before, "the input changed");
    let v: Value = json_of(&o);
    assert_eq!(v["level"], "all");
    assert_eq!(v["before"], "corrupt");
    assert_eq!(v["after"], "clean");
    assert_eq!(v["written"], true);
    let acts = v["actions"].as_array().unwrap();
    let copy = acts.iter().find(|a| a["rule"] == "R19").expect("an R19 action");
    assert_eq!(copy["action"], "move-cluster");
    assert_eq!(copy["copy"], true);
    assert_eq!(v["lost_bitmaps"].as_array().unwrap().len(), 0);
    assert_eq!(v["kept_bitmaps"].as_array().unwrap().len(), 2);
    let c = prlimg(&["check", s(&out)]);
    assert_eq!(c.status.code(), Some(0), "{}", stdout(&c));
    // The output exists now: not replaced without --force.
    let again = prlimg(&["repair", s(&d), s(&out), "--all"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));
}

#[test]
fn leaks_level_leaves_corruption_and_says_so() {
    let dir = tmp();
    let d = damaged(dir.path(), "bat-entry-past-eof");
    let out = dir.path().join("out.hds");
    let o = prlimg(&["repair", s(&d), s(&out), "--dry-run"]);
    // A dry run predicts: corruption is left, exit 2, nothing written.
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(stdout(&o).contains("left as they are: R18"), "{}", stdout(&o));
    assert!(!out.exists());
}

#[test]
fn in_place_keeps_the_mode_and_dry_run_writes_nothing() {
    let dir = tmp();
    let d = damaged(dir.path(), "inuse-set");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::read(&d).unwrap();
    let o = prlimg(&["repair", s(&d), "--dry-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("R7: header inuse 0x746f6e59 -> 0x0"),
        "{}",
        stdout(&o)
    );
    assert_eq!(fs::read(&d).unwrap(), before);
    let o = prlimg(&["repair", s(&d), "--in-place"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(fs::metadata(&d).unwrap().permissions().mode() & 0o777, 0o640);
    assert_eq!(fs::read(&d).unwrap(), fs::read(dir.path().join("base.hds")).unwrap());
}

#[test]
fn check_r_all_repairs_in_place_and_r_upper_is_recursive() {
    let dir = tmp();
    let d = damaged(dir.path(), "trailing-leak");
    let c = prlimg(&["check", s(&d)]);
    assert_eq!(c.status.code(), Some(3));
    let c = prlimg(&["check", "-r", "leaks", s(&d)]);
    assert_eq!(c.status.code(), Some(0), "{}{}", stdout(&c), stderr(&c));
    assert!(stdout(&c).contains("R20: file cut from"), "{}", stdout(&c));
    assert_eq!(fs::read(&d).unwrap(), fs::read(dir.path().join("base.hds")).unwrap());
    let c = prlimg(&["check", "-R", s(dir.path())]);
    assert_eq!(c.status.code(), Some(0), "{}", stdout(&c));
}

#[test]
fn in_place_refuses_a_stream() {
    let o = prlimg(&["repair", "/dev/stdin", "--in-place", "--all"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a regular file"), "{}", stderr(&o));
}
