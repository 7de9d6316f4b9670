//! `prlimg differential` end to end, with the real programs: a small campaign of variants
//! agrees with the predictions, its report counts what ran, and the output folder holds exactly
//! the cases where a program crashed or aborted (with their edits and bytes); a timeout too
//! short for any run keeps every case as a timeout; a folder of images runs as it is; an output
//! folder holding a report is refused; Ctrl-C ends the campaign, the programs it runs and its
//! scratch folder. The ploop drivers join in when they are built (and must be under `CI=true`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use parallels_image::oracle::builtin_base;
use parallels_image::oracle::ploop::PloopDrivers;
use parallels_image::qemu::{self, QemuCheck, QemuOutcome};
use parallels_image::{
    mutate::MutateOptions, mutate::Mutator, ploop::predict_ploop, ploop::CbtOutcome, ploop::MountEffect, ImageBuilder,
};
use serde_json::Value;

use crate::fixtures::needs;

const BIN: &str = env!("CARGO_BIN_EXE_prlimg");

/// `--ploop` when the drivers are built; under `CI=true` they must be.
fn ploop_args(test: &str) -> Vec<String> {
    if PloopDrivers::find().is_some() {
        return vec!["--ploop".into()];
    }
    assert!(
        !needs::ci(),
        "{test}: the ploop drivers are not built (../shared/oracles/ploop/build.sh)"
    );
    eprintln!("{test}: ploop drivers missing: QEMU only");
    Vec::new()
}

fn differential(args: &[&str]) -> (i32, String) {
    let out = Command::new(BIN).arg("differential").args(args).output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn report(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap()
}

/// The kept cases' indices (from `case-NNNNNN.hds` names), and checks each has its JSON.
fn kept(dir: &Path) -> BTreeSet<u64> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        if let Some(n) = name.strip_prefix("case-").and_then(|n| n.strip_suffix(".hds")) {
            assert!(dir.join(format!("case-{n}.json")).is_file(), "{name} without its JSON");
            out.insert(n.parse().unwrap());
        }
    }
    out
}

#[test]
fn a_small_campaign_agrees_and_keeps_exactly_its_crashes_with_their_edits() {
    let test = "a_small_campaign_agrees_and_keeps_exactly_its_crashes_with_their_edits";
    if !needs::tools(test, &["qemu-img"]) {
        return;
    }
    let with_ploop = ploop_args(test);
    let dir = tempfile::tempdir().unwrap();
    // The built-in base (no --from): the library's builtin_base.
    let bytes = builtin_base().unwrap();
    let out = dir.path().join("out");
    let (seed, count) = (1u64, 60u64);
    let mut args = vec!["--seed", "1", "--count", "60", "-j", "2", "--qemu"];
    args.extend(with_ploop.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    let (code, stderr) = differential(&args);
    assert_eq!(code, 0, "{stderr}");

    let r = report(&out);
    assert_eq!(r["cases"], count);
    assert_eq!(r["seeds"], serde_json::json!([seed]));
    assert_eq!(r["verdicts"], serde_json::json!({ "agrees": count }));
    assert_eq!(r["base"], "built-in");
    let info: u64 = r["outcomes"]["qemu-img info"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(info, count, "{}", r["outcomes"]);
    // Each program's total run time: QEMU's two runs, and ploop's three drivers when they ran.
    let mut programs = vec!["qemu-img check", "qemu-img info"];
    if !with_ploop.is_empty() {
        programs.extend(["ploop cbt", "ploop check", "ploop mount"]);
    }
    programs.sort_unstable();
    let run_seconds = r["run_seconds"].as_object().unwrap();
    assert_eq!(run_seconds.keys().map(String::as_str).collect::<Vec<_>>(), programs);
    let campaign = r["seconds"].as_f64().unwrap();
    for (program, t) in run_seconds {
        let t = t.as_f64().unwrap();
        // Two cases at a time: no program ran longer, in all, than twice the campaign.
        assert!(t > 0.0 && t < 2.0 * campaign, "{program}: {t} s of {campaign}");
    }

    // Which variants make a program die of a signal, by the predictions (which the campaign
    // just showed right); where QEMU's outcome is undefined, either.
    let m = Mutator::new(&bytes, MutateOptions::default()).unwrap();
    let (mut must, mut may) = (BTreeSet::new(), BTreeSet::new());
    for i in 0..count {
        let v = m.mutant(seed + i);
        let p = qemu::predict(&v.bytes.as_slice()).unwrap();
        let dies = |o: &QemuOutcome| matches!(o, QemuOutcome::Aborts { .. } | QemuOutcome::Crashes { .. });
        let mut crash = dies(&p.info)
            || matches!(&p.check, QemuCheck::Aborts { .. })
            || matches!(&p.check, QemuCheck::OpenFails(o) if dies(o));
        if !with_ploop.is_empty() {
            let pp = predict_ploop(&v.bytes.as_slice(), "x").unwrap();
            crash |= pp.check.rc.is_none()
                || pp.cbt.outcome == CbtOutcome::Crashes
                || pp.mount.effect == MountEffect::Crashes;
        }
        if crash {
            must.insert(i);
        } else if matches!(p.info, QemuOutcome::Undefined { .. }) {
            may.insert(i);
        }
    }
    assert!(
        !must.is_empty(),
        "no crash among the {count} variants: pick another seed"
    );
    let kept = kept(&out);
    assert!(
        must.is_subset(&kept) && kept.difference(&must).all(|i| may.contains(i)),
        "kept {kept:?}, crashing {must:?}, undefined {may:?}"
    );
    assert_eq!(r["kept"], kept.len() as u64);
    assert_eq!(r["crashed"], kept.len() as u64);
    for i in &kept {
        let v = m.mutant(seed + i);
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("case-{i:06}.json"))).unwrap()).unwrap();
        assert_eq!(json["edits"], serde_json::to_value(&v.edits).unwrap(), "case {i}");
        assert_eq!(
            (json["verdict"].as_str(), json["crashed"].as_bool()),
            (Some("agrees"), Some(true))
        );
        assert_eq!(json["case"]["seed"], seed + i);
        let seconds = |v: &Value| v.as_f64().is_some_and(|t| t > 0.0);
        assert!(seconds(&json["qemu"]["info"]["seconds"]) && seconds(&json["qemu"]["check"]["seconds"]));
        if !with_ploop.is_empty() {
            let ploop = json["ploop"]["seconds"].as_object().unwrap();
            assert_eq!(
                ploop.keys().map(String::as_str).collect::<Vec<_>>(),
                ["cbt", "check", "mount"]
            );
            assert!(ploop.values().all(seconds), "case {i}: {ploop:?}");
        }
        assert_eq!(
            std::fs::read(out.join(format!("case-{i:06}.hds"))).unwrap(),
            v.bytes,
            "case {i}"
        );
    }

    // The same folder again: refused, nothing replaced.
    let before = std::fs::read(out.join("report.json")).unwrap();
    let (code, stderr) = differential(&args);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("exists; nothing was run"), "{stderr}");
    assert_eq!(std::fs::read(out.join("report.json")).unwrap(), before);
}

#[test]
fn runs_cut_short_by_the_timeout_are_kept_as_timeouts() {
    let test = "runs_cut_short_by_the_timeout_are_kept_as_timeouts";
    if !needs::tools(test, &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // 16 Mi entries of 64 KiB clusters: qemu-img reads the 64 MiB table to open each of the
    // four variants of seed 5 (60-100 ms a run here), so each is still running at the 1 ms
    // timeout even when the runner's thread waits that long for a CPU (a 16 MiB image, opened
    // in a few ms, once finished before a loaded machine's runner looked at it).
    let (base, _) = ImageBuilder::new(1 << 40).cluster_size(64 << 10).to_vec().unwrap();
    let from = dir.path().join("from.hds");
    std::fs::write(&from, base).unwrap();
    // 1 ms: qemu-img cannot even load its libraries in that time.
    let (code, stderr) = differential(&[
        "--from",
        from.to_str().unwrap(),
        "--qemu",
        "--seed",
        "5",
        "--count",
        "4",
        "--timeout",
        "0.001",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 4, "{stderr}");
    let r = report(&out);
    assert_eq!(r["verdicts"], serde_json::json!({ "timed_out": 4 }));
    assert_eq!(r["base"], from.display().to_string());
    assert_eq!(r["outcomes"]["qemu-img info"], serde_json::json!({ "timeout": 4 }));
    assert_eq!(r["outcomes"]["qemu-img check"], serde_json::json!({ "timeout": 4 }));
    assert_eq!(kept(&out), BTreeSet::from([0, 1, 2, 3]));
    for i in 0..4 {
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(out.join(format!("case-{i:06}.json"))).unwrap()).unwrap();
        assert_eq!(json["verdict"], "timed_out");
        assert_eq!(json["crashed"], false);
        let kinds: Vec<&str> = json["qemu"]["disagreements"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds, ["timed_out", "timed_out"]);
        assert_eq!(json["qemu"]["info"]["end"], "timeout");
    }
}

#[test]
fn a_folder_of_images_runs_as_it_is() {
    let test = "a_folder_of_images_runs_as_it_is";
    if !needs::tools(test, &["qemu-img"]) {
        return;
    }
    let with_ploop = ploop_args(test);
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    std::fs::write(images.join("a.hds"), builtin_base().unwrap()).unwrap();
    let (plain, _) = ImageBuilder::new(8 << 20).cluster_size(1 << 20).to_vec().unwrap();
    std::fs::write(images.join("sub/b.hds"), plain).unwrap();
    let out = dir.path().join("out");
    let mut args = vec![images.to_str().unwrap(), "--qemu"];
    args.extend(with_ploop.iter().map(String::as_str));
    args.extend(["--out", out.to_str().unwrap()]);
    let (code, stderr) = differential(&args);
    assert_eq!(code, 0, "{stderr}");
    let r = report(&out);
    assert_eq!((r["cases"].as_u64(), r["kept"].as_u64()), (Some(2), Some(0)));
    assert_eq!(r["outcomes"]["qemu-img info"], serde_json::json!({ "exit 0": 2 }));
    assert_eq!(r["seeds"], serde_json::json!([]));
    assert!(kept(&out).is_empty());
}

/// The processes whose command line mentions `dir` (read from /proc).
#[cfg(target_os = "linux")]
fn processes_on(dir: &Path) -> Vec<String> {
    let needle = dir.to_str().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(needle))
        .collect()
}

#[cfg(target_os = "linux")]
#[test]
fn ctrl_c_ends_the_campaign_with_its_programs_and_scratch_folder() {
    use std::os::unix::process::ExitStatusExt;
    use std::time::{Duration, Instant};
    let test = "ctrl_c_ends_the_campaign_with_its_programs_and_scratch_folder";
    if !needs::tools(test, &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = dir.path().join("out");
    let mut child = Command::new(BIN)
        .args([
            "differential",
            "--qemu",
            "--seed",
            "9",
            "--count",
            "100000",
            "-j",
            "2",
            "--out",
        ])
        .arg(&out)
        .env("TMPDIR", &tmp)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Until qemu-img runs on a case in the scratch folder (inside `tmp`).
    let t0 = Instant::now();
    while processes_on(&tmp).is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no qemu-img started");
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    // It dies of the signal, as if it had not caught it (a shell shows 130).
    assert_eq!(status.signal(), Some(2), "{status:?}");
    // The programs it ran were killed with it (SIGKILL is delivered at once), and its scratch
    // folder is gone.
    let t1 = Instant::now();
    while !processes_on(&tmp).is_empty() {
        assert!(
            t1.elapsed() < Duration::from_secs(5),
            "left running: {:?}",
            processes_on(&tmp)
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in TMPDIR: {left:?}");
}
