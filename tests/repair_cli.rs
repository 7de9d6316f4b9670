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
#[path = "fixtures/files.rs"]
mod files;
use files::folder_files;

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

/// A bundle with snapshots (the example recipe), its marker deleted and its Version made 2.0.
fn damaged_bundle(dir: &Path) -> (PathBuf, PathBuf) {
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipes/with-snapshots.bundle.toml");
    let base = dir.join("base.hdd");
    prlimg_ok(&["create", s(&base), "--bundle", "--recipe", s(&recipe)]);
    let bad = dir.join("bad.hdd");
    prlimg_ok(&["corrupt", s(&base), s(&bad), "--defect", "descriptor-bad-version"]);
    fs::remove_file(bad.join("bad.hdd")).unwrap();
    (base, bad)
}

#[test]
fn repair_of_a_bundle_writes_a_new_folder_and_leaves_the_input() {
    let t = tmp();
    let (base, bad) = damaged_bundle(t.path());
    let before = folder_files(&bad);
    // The dry run: the plan as typed records, nothing written.
    // Its status is the result's predicted: everything broken is planned, 0.
    let o = prlimg(&["repair", s(&bad), "--all", "--dry-run", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json_of(&o);
    assert_eq!(j["format"], "parallels-bundle");
    assert_eq!(j["before"], "corrupt");
    assert_eq!(j["written"], false);
    let rules: Vec<&str> = j["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["D3", "D22"]);
    assert_eq!(j["actions"][0]["kind"], "set-value");
    assert_eq!(j["actions"][0]["from"], "2.0");
    assert_eq!(j["actions"][0]["to"], "1.0");
    assert_eq!(j["actions"][1]["kind"], "create-marker");
    assert_eq!(j["images"], serde_json::json!([]));
    // The repair: a new folder, clean, the original descriptor back; the input unchanged.
    let out = t.path().join("fixed.hdd");
    let o = prlimg(&["repair", s(&bad), s(&out), "--all"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        format!(
            "{}: 2 descriptor actions, 0 images (repaired):\n  D3: Parallels_disk_image/@Version \"2.0\" -> \"1.0\"\n  \
             D22: marker file \"bad.hdd\" created\nresult: clean\n",
            bad.display()
        )
    );
    assert_eq!(folder_files(&bad), before);
    assert_eq!(
        fs::read(out.join("DiskDescriptor.xml")).unwrap(),
        fs::read(base.join("DiskDescriptor.xml")).unwrap()
    );
    assert!(out.join("fixed.hdd").is_file());
    prlimg_ok(&["check", s(&out)]);
    // An existing output is refused without --force; the input as output always.
    let o = prlimg(&["repair", s(&bad), s(&out), "--all"]);
    assert_eq!(o.status.code(), Some(1));
    let o = prlimg(&["repair", s(&bad), s(&bad), "--all", "--force"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is the input bundle"), "{}", stderr(&o));
    assert_eq!(folder_files(&bad), before);
    // --leaks creates the marker only and leaves D3, listed; in place.
    let o = prlimg(&["repair", s(&bad), "--in-place"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stdout(&o).ends_with("left as they are: D3\nresult: corrupt\n"),
        "{}",
        stdout(&o)
    );
    assert!(bad.join("bad.hdd").is_file());
    // A refusal names the rule and why.
    let cyc = t.path().join("roots.hdd");
    prlimg_ok(&["corrupt", s(&base), s(&cyc), "--defect", "two-roots"]);
    let o = prlimg(&["repair", s(&cyc), s(&t.path().join("c2.hdd")), "--all"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o)
            .contains("[D17]; not repaired: not one root: which snapshot is the parent of which would be a guess"),
        "{}",
        stderr(&o)
    );
    assert!(!t.path().join("c2.hdd").exists());
}

#[test]
fn check_r_all_repairs_a_bundle_in_place() {
    let t = tmp();
    let (base, bad) = damaged_bundle(t.path());
    // As for an image: the plan, then the check of the result (clean: 0).
    let o = prlimg(&["check", "-r", "all", s(&bad)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let plan = format!(
        "{}: 2 descriptor actions, 0 images (repaired):\n  D3: Parallels_disk_image/@Version \"2.0\" -> \"1.0\"\n  \
         D22: marker file \"bad.hdd\" created\nresult: clean\n",
        bad.display()
    );
    assert!(stdout(&o).starts_with(&plan), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("No errors were found in the bundle."),
        "{}",
        stdout(&o)
    );
    assert_eq!(
        fs::read(bad.join("DiskDescriptor.xml")).unwrap(),
        fs::read(base.join("DiskDescriptor.xml")).unwrap()
    );
    assert!(bad.join("bad.hdd").is_file());
    prlimg_ok(&["check", s(&bad)]);
}
