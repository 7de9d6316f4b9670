//! Running the ploop oracle (`shared/oracles/ploop/`): finding its drivers, running them on an
//! image file (read-only, bytes checked unchanged; the mount driver on a copy), and the
//! comparison of [`predict_ploop`] with what they did.

#![allow(dead_code)]

use std::fs::File;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use parallels_image::{predict_ploop, CbtOutcome, MountEffect, PloopPrediction, HEAP_OVERRUN, MAX_PLOOP_MESSAGES};
use rayon::prelude::*;

/// True when a missing oracle must fail the test instead of skipping it.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// The folder of the oracle's drivers: `$PLOOP_ORACLE_DIR/bin`, else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/ploop-oracle/bin` (where `shared/oracles/ploop/build.sh`
/// puts them). Panics under `CI=true` when they are missing; otherwise prints a visible SKIP
/// line and returns `None`.
pub fn oracle(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("PLOOP_ORACLE_DIR") {
        Some(d) => PathBuf::from(d).join("bin"),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/nonexistent"));
            cache.join("ploop-oracle/bin")
        }
    };
    if ["pcheck", "pmount_sim"].iter().all(|d| dir.join(d).is_file()) {
        return Some(dir);
    }
    if ci() {
        panic!(
            "{test}: the ploop oracle is not built in {} (run ../shared/oracles/ploop/build.sh)",
            dir.display()
        );
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIP: {test}: the ploop oracle is not built in {} (../shared/oracles/ploop/build.sh builds it)",
        dir.display()
    );
    None
}

/// How a driver ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    Exit(i32),
    Signal(i32),
}

/// Runs `prog args` with stdout and stderr in files (merged into one when `merge`), killing it
/// after 30 s. Returns its end, stdout, stderr.
fn run(prog: &Path, args: &[&Path], scratch: &Path, merge: bool) -> (End, String, String) {
    let out_path = scratch.with_extension("out");
    let err_path = scratch.with_extension("err");
    let out = File::create(&out_path).unwrap();
    let err = if merge {
        out.try_clone().unwrap()
    } else {
        File::create(&err_path).unwrap()
    };
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", prog.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{} {:?} did not finish in 30 s", prog.display(), args);
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let end = match (status.code(), status.signal()) {
        (Some(c), _) => End::Exit(c),
        (None, Some(s)) => End::Signal(s),
        _ => unreachable!("a process ends with a code or a signal"),
    };
    let read = |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let (o, e) = (read(&out_path), if merge { String::new() } else { read(&err_path) });
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    (end, o, e)
}

/// ploop's error lines start with `Error in FUNCTION (FILE:LINE): `; the prediction carries the
/// text after it.
pub fn strip_prefix(line: &str) -> &str {
    if let Some(rest) = line.strip_prefix("Error in ") {
        if let Some(i) = rest.find("): ") {
            return &rest[i + 3..];
        }
    }
    line
}

fn summary_rc(text: &str, tag: &str) -> Option<i32> {
    text.lines()
        .find_map(|l| l.strip_prefix(tag))
        .and_then(|r| r.split(|c: char| !(c.is_ascii_digit() || c == '-')).next())
        .and_then(|n| n.parse().ok())
}

/// What the drivers did with one image, in the prediction's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// `None` when the check died of a signal (its name is then the last message).
    pub check_rc: Option<i32>,
    pub check_messages: Vec<String>,
    pub cbt_outcome: CbtOutcome,
    pub cbt_bitmap: Option<String>,
    pub cbt_rc: Option<i32>,
    pub cbt_message: Option<String>,
    /// The 64-bit words of the bitmap the CBT loader printed, by L1 index (`1` chunks as the
    /// single word 1).
    pub cbt_words: Vec<(u32, Vec<u64>)>,
    pub mount_rc: Option<i32>,
    pub mount_effect: MountEffect,
    pub mount_file_size: u64,
    pub mount_ext_off: u64,
    pub mount_inuse: u32,
    pub mount_message: Option<String>,
}

fn signal_name(sig: i32) -> String {
    match sig {
        8 => "SIGFPE".into(),
        11 => "SIGSEGV".into(),
        6 => "SIGABRT".into(),
        7 => "SIGBUS".into(),
        s => format!("signal {s}"),
    }
}

fn header_fields(bytes: &[u8]) -> (u64, u32) {
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map_or(0, |b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    (u64_at(56), u32_at(44))
}

/// Parses the CBT loader's dump: `<i>` then `1`, or rows of `OFFSET word word ...`.
fn parse_words(stdout: &str) -> Vec<(u32, Vec<u64>)> {
    let mut chunks: Vec<(u32, Vec<u64>)> = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix('<') {
            let (idx, tail) = rest.split_once('>').expect("<index>");
            let mut words = Vec::new();
            if tail.trim() == "1" {
                words.push(1);
            }
            chunks.push((idx.parse().expect("index"), words));
        } else if let Some((_, words)) = chunks.last_mut() {
            let mut it = line.split_whitespace();
            if it
                .next()
                .is_some_and(|o| o.len() == 8 && u64::from_str_radix(o, 16).is_ok())
            {
                words.extend(it.map(|w| u64::from_str_radix(w, 16).expect("hex word")));
            }
        }
    }
    chunks
}

/// Runs the three drivers on `path` (checked unchanged by the read-only ones; the mount driver
/// runs on a copy next to it).
pub fn observe(bin: &Path, path: &Path) -> Observed {
    let before = std::fs::read(path).unwrap();
    let (ext_off, inuse) = header_fields(&before);

    let (end, out, _) = run(&bin.join("pcheck"), &[Path::new("--check-only"), path], path, true);
    let mut check_messages = Vec::new();
    for line in out.lines() {
        if line.starts_with("CHECK rc=") {
            break;
        }
        check_messages.push(strip_prefix(line).to_string());
    }
    let check_rc = match end {
        End::Exit(0) => Some(summary_rc(&out, "CHECK rc=").unwrap_or_else(|| panic!("no CHECK line: {out}"))),
        End::Signal(s) => {
            check_messages.push(signal_name(s));
            None
        }
        End::Exit(c) => panic!("pcheck --check-only exited {c}: {out}"),
    };

    let (end, out, err) = run(&bin.join("pcheck"), &[Path::new("--cbt-only"), path], path, false);
    let last_err = err.lines().last().map(|l| strip_prefix(l).to_string());
    let uuid = out.lines().find_map(|l| l.strip_prefix("uuid: ")).map(str::to_string);
    let (cbt_outcome, cbt_bitmap, cbt_rc, cbt_message) = match end {
        End::Signal(s) => (CbtOutcome::Crashes, None, None, Some(signal_name(s))),
        End::Exit(0) => match summary_rc(&out, "CBTLOAD rc=").unwrap_or_else(|| panic!("no CBTLOAD: {out}")) {
            0 if uuid.is_some() => (CbtOutcome::Loads, uuid, Some(0), None),
            0 if ext_off == 0 => (CbtOutcome::None, None, Some(0), None),
            0 if inuse == 0 => (CbtOutcome::Ignores, None, Some(0), None),
            0 => (CbtOutcome::Loads, None, Some(0), None),
            rc => (CbtOutcome::Refuses, None, Some(rc), last_err),
        },
        End::Exit(c) => panic!("pcheck --cbt-only exited {c}: {out}{err}"),
    };
    let cbt_words = parse_words(&out);
    assert_eq!(
        std::fs::read(path).unwrap(),
        before,
        "pcheck changed {}",
        path.display()
    );

    let copy = path.with_extension("mount.hds");
    std::fs::copy(path, &copy).unwrap();
    let (end, out, err) = run(&bin.join("pmount_sim"), &[&copy], &copy, false);
    let after = std::fs::read(&copy).unwrap();
    let _ = std::fs::remove_file(&copy);
    let (after_ext, after_inuse) = header_fields(&after);
    // Messages that name the copy are compared as if they named the image.
    let (copy_name, name) = (copy.display().to_string(), path.display().to_string());
    let mount_message = err.lines().last().map(|l| strip_prefix(l).replace(&copy_name, &name));
    let (mount_rc, mount_effect, mount_message) = match end {
        End::Signal(s) => (None, MountEffect::Crashes, Some(signal_name(s))),
        End::Exit(0) => {
            let rc = summary_rc(&out, "MOUNTLOAD rc=").unwrap_or_else(|| panic!("no MOUNTLOAD: {out}"));
            let effect = if (after.len() as u64) < before.len() as u64 {
                MountEffect::Truncates
            } else if after_ext != ext_off && after_ext == 0 {
                MountEffect::DropsExtension
            } else {
                assert_eq!(after, before, "pmount_sim changed {} in another way", path.display());
                MountEffect::Unchanged
            };
            (Some(rc), effect, mount_message)
        }
        End::Exit(c) => panic!("pmount_sim exited {c}: {out}{err}"),
    };
    Observed {
        check_rc,
        check_messages,
        cbt_outcome,
        cbt_bitmap,
        cbt_rc,
        cbt_message,
        cbt_words,
        mount_rc,
        mount_effect,
        mount_file_size: after.len() as u64,
        mount_ext_off: after_ext,
        mount_inuse: after_inuse,
        mount_message,
    }
}

/// The differences between a prediction and an observation, one line each (empty: they agree).
pub fn differences(p: &PloopPrediction, o: &Observed) -> Vec<String> {
    let mut d = Vec::new();
    let mut same = |what: &str, predicted: String, observed: String| {
        if predicted != observed {
            d.push(format!("{what}: predicted {predicted}, ploop {observed}"));
        }
    };
    same("check rc", format!("{:?}", p.check.rc), format!("{:?}", o.check_rc));
    let kept = o.check_messages.len().min(MAX_PLOOP_MESSAGES);
    // A check that overruns its heap dies wherever glibc notices: only the crash is predicted.
    let crashed = p.check.rc.is_none() && o.check_rc.is_none();
    let heap = p.check.messages.last().is_some_and(|m| m == HEAP_OVERRUN)
        && o.check_messages
            .last()
            .is_some_and(|m| m == "SIGABRT" || m == "SIGSEGV");
    if !(crashed && heap) {
        same(
            "check messages",
            format!("{:?} +{}", p.check.messages, p.check.messages_omitted),
            format!("{:?} +{}", &o.check_messages[..kept], o.check_messages.len() - kept),
        );
    }
    same("cbt outcome", p.cbt.outcome.name().into(), o.cbt_outcome.name().into());
    same(
        "cbt bitmap",
        format!("{:?}", p.cbt.bitmap),
        format!("{:?}", o.cbt_bitmap),
    );
    same("cbt rc", format!("{:?}", p.cbt.rc), format!("{:?}", o.cbt_rc));
    same(
        "cbt message",
        format!("{:?}", p.cbt.message),
        format!("{:?}", o.cbt_message),
    );
    same("mount rc", format!("{:?}", p.mount.rc), format!("{:?}", o.mount_rc));
    same(
        "mount effect",
        p.mount.effect.name().into(),
        o.mount_effect.name().into(),
    );
    same(
        "mount file size",
        p.mount.file_size.to_string(),
        o.mount_file_size.to_string(),
    );
    same(
        "mount ext_off",
        p.mount.ext_off.to_string(),
        o.mount_ext_off.to_string(),
    );
    same(
        "mount inuse",
        format!("{:#x}", p.mount.inuse),
        format!("{:#x}", o.mount_inuse),
    );
    same(
        "mount message",
        format!("{:?}", p.mount.message),
        format!("{:?}", o.mount_message),
    );
    d
}

/// Writes `bytes` to `dir/name.hds`, predicts, observes, and returns the differences.
pub fn compare_bytes(bin: &Path, dir: &Path, name: &str, bytes: &[u8]) -> Vec<String> {
    let path = dir.join(format!("{name}.hds"));
    std::fs::write(&path, bytes).unwrap();
    let d = compare_file(bin, &path);
    let _ = std::fs::remove_file(&path);
    d
}

/// Predicts and observes the image at `path`; returns the differences.
pub fn compare_file(bin: &Path, path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let predicted = predict_ploop(&bytes, &path.display().to_string()).unwrap();
    let observed = observe(bin, path);
    differences(&predicted, &observed)
}

/// Compares every image (in parallel) and panics with every disagreement, naming the image.
/// Returns how many images were compared.
pub fn compare_all(bin: &Path, dir: &Path, images: Vec<(String, Vec<u8>)>) -> usize {
    let n = images.len();
    let mut failures: Vec<String> = images
        .into_par_iter()
        .filter_map(|(name, bytes)| {
            let d = compare_bytes(bin, dir, &name, &bytes);
            (!d.is_empty()).then(|| format!("{name}:\n  {}", d.join("\n  ")))
        })
        .collect();
    failures.sort();
    let shown: Vec<&String> = failures.iter().take(25).collect();
    assert!(
        failures.is_empty(),
        "{} of {n} images disagree with ploop:\n{}",
        failures.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    n
}

/// A scratch folder on a disk filesystem (ploop's check opens images with O_DIRECT).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ploop-oracle")
        .tempdir_in(std::env::temp_dir())
        .unwrap()
}
