//! Careful I/O of the `prlimg` binary: inputs that are not regular files (block devices, pipes,
//! standard input, FIFOs) and outputs that must never be clobbered or left half-written
//! (device nodes, FIFOs, symbolic links, modes, signals).

use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "fixtures/cli.rs"]
mod runner;
use runner::*;

/// A visible skip: straight to the process's stderr (the harness captures `eprintln!`), or a
/// failure under `CI=true`.
fn skip(test: &str, why: &str) {
    assert!(!is_ci(), "{test}: {why} (CI=true: not skipping)");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {why}");
}

/// What a folder holds: names, kinds, lengths and modes, sorted.
fn listing(dir: &Path) -> Vec<(String, String, u64, u32)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = fs::symlink_metadata(e.path()).unwrap();
            let ft = m.file_type();
            let kind = if ft.is_symlink() {
                format!("link to {}", fs::read_link(e.path()).unwrap().display())
            } else if ft.is_fifo() {
                "fifo".into()
            } else if ft.is_char_device() {
                "char".into()
            } else if ft.is_dir() {
                "dir".into()
            } else {
                "file".into()
            };
            (
                e.file_name().to_string_lossy().into_owned(),
                kind,
                if ft.is_file() { m.len() } else { 0 },
                m.permissions().mode(),
            )
        })
        .collect();
    v.sort();
    v
}

// ------------------------------------------------------------------------------------ outputs

#[test]
fn force_never_replaces_a_fifo_a_device_or_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let input = image_a(d);
    fs::write(d.join("target"), b"keep me").unwrap();
    std::os::unix::fs::symlink("target", d.join("link")).unwrap();
    std::os::unix::fs::symlink("nowhere", d.join("dangling")).unwrap();
    fs::create_dir(d.join("folder")).unwrap();
    assert!(Command::new("mkfifo").arg(d.join("fifo")).status().unwrap().success());
    // A character device node like /dev/null (needs root; skipped otherwise).
    let have_dev = Command::new("mknod")
        .arg(d.join("null"))
        .args(["c", "1", "3"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_dev {
        skip(
            "force_never_replaces_a_fifo_a_device_or_a_symlink (device part)",
            "mknod is not permitted",
        );
    }
    let before = listing(d);
    let cases: &[(&str, &str)] = &[
        (
            "fifo",
            "is a FIFO, not a regular file; refusing to replace it, even with --force",
        ),
        (
            "folder",
            "is a folder, not a regular file; refusing to replace it, even with --force",
        ),
        (
            "link",
            "is a symbolic link to target; refusing to replace it (--follow-symlink writes the file it points to)",
        ),
        (
            "dangling",
            "is a symbolic link to nowhere; refusing to replace it (--follow-symlink writes the file it points to)",
        ),
        (
            "null",
            "is a character device, not a regular file; refusing to replace it, even with --force",
        ),
    ];
    for &(name, why) in cases {
        if name == "null" && !have_dev {
            continue;
        }
        let out_path = d.join(name);
        for args in [
            vec!["create", s(&out_path), "--size", "1M", "--force"],
            vec!["corrupt", s(&input), s(&out_path), "--defect", "bad-magic", "--force"],
        ] {
            let out = prlimg(&args);
            assert_eq!(out.status.code(), Some(1), "{args:?}");
            assert_eq!(
                stderr(&out),
                format!("prlimg: {}: {why}\n", out_path.display()),
                "{args:?}"
            );
            assert_eq!(listing(d), before, "{args:?} changed the folder");
        }
    }
    // Followed, a link to a FIFO is still refused, and names where it leads.
    std::os::unix::fs::symlink("fifo", d.join("to-fifo")).unwrap();
    let to_fifo = d.join("to-fifo");
    let out = prlimg(&["create", s(&to_fifo), "--size", "1M", "--force", "--follow-symlink"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: leads to {}, a FIFO, not a regular file; refusing to replace it, even with --force\n",
            to_fifo.display(),
            d.join("fifo").display()
        )
    );
}

#[test]
fn follow_symlink_writes_the_target_and_keeps_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("target"), b"old").unwrap();
    std::os::unix::fs::symlink("target", d.join("link")).unwrap();
    let link = d.join("link");
    // The target exists: --follow-symlink alone does not replace it.
    let out = prlimg(&["create", s(&link), "--size", "1M", "--follow-symlink"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "prlimg: {}: already exists (use --force to replace it)\n",
            link.display()
        )
    );
    assert_eq!(fs::read(d.join("target")).unwrap(), b"old");
    let out = prlimg(&["create", s(&link), "--size", "1M", "--follow-symlink", "--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_link(&link).unwrap(), Path::new("target"));
    // 1 MiB, 1 MiB clusters: header and BAT in the first (only) cluster.
    assert_eq!(fs::metadata(d.join("target")).unwrap().len(), 1 << 20);
    // A dangling link gets its target created.
    std::os::unix::fs::symlink("new.hds", d.join("dangling")).unwrap();
    let out = prlimg(&["create", s(&d.join("dangling")), "--size", "1M", "--follow-symlink"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::metadata(d.join("new.hds")).unwrap().len(), 1 << 20);
}

/// Runs `prlimg create` under `umask`.
fn create_under_umask(umask: &str, out: &Path, named: bool) {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" create \"$1\" --size 1M"))
        .arg(BIN)
        .arg(out);
    if named {
        cmd.env("PRLIMG_NAMED_TEMPORARY", "1");
    }
    let st = cmd.status().unwrap();
    assert!(st.success());
}

#[test]
fn outputs_follow_the_umask_and_corrupt_keeps_the_input_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for named in [false, true] {
        for (umask, mode) in [("077", 0o600), ("022", 0o644), ("002", 0o664)] {
            let p = d.join(format!("u{umask}-{named}.hds"));
            create_under_umask(umask, &p, named);
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                mode,
                "umask {umask}, named temporary {named}"
            );
        }
    }
    let input = image_a(d);
    for mode in [0o600, 0o640, 0o755] {
        fs::set_permissions(&input, fs::Permissions::from_mode(mode)).unwrap();
        let out = d.join(format!("c{mode:o}.hds"));
        let o = prlimg(&["corrupt", s(&input), s(&out), "--defect", "bad-magic"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_eq!(fs::metadata(&out).unwrap().permissions().mode() & 0o777, mode);
    }
}

#[test]
fn a_replaced_file_is_whole_and_no_temporary_remains() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = d.join("x.hds");
    for named in [false, true] {
        fs::write(&p, b"old").unwrap();
        let mut cmd = Command::new(BIN);
        cmd.args(["create", s(&p), "--size", "4M", "--force"]);
        if named {
            cmd.env("PRLIMG_NAMED_TEMPORARY", "1");
        }
        assert!(cmd.status().unwrap().success());
        assert_eq!(fs::metadata(&p).unwrap().len(), 1 << 20);
        assert_eq!(&fs::read(&p).unwrap()[..16], b"WithouFreSpacExt");
        assert_eq!(
            listing(d).iter().map(|e| e.0.as_str()).collect::<Vec<_>>(),
            ["x.hds"],
            "named temporary {named}"
        );
    }
}

/// Starts a `create` that writes 4 GiB of data into `dir`, waits until it has written some
/// (its output file, named or not, is open and longer than 1 MiB), and sends it `signal`.
/// Returns how it ended.
fn interrupt_create(dir: &Path, signal: &str, named: bool) -> std::process::ExitStatus {
    let out = dir.join("big.hds");
    let mut cmd = Command::new(BIN);
    cmd.args(["create", s(&out), "--size", "8G", "--data", "0:4G:0xaa"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if named {
        cmd.env("PRLIMG_NAMED_TEMPORARY", "1");
    }
    let mut child = cmd.spawn().unwrap();
    let fds = PathBuf::from(format!("/proc/{}/fd", child.id()));
    let start = Instant::now();
    let canon = dir.canonicalize().unwrap();
    'wait: loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "create never started writing"
        );
        if let Some(st) = child.try_wait().unwrap() {
            panic!("create ended by itself ({st}) before it could be interrupted");
        }
        for fd in fs::read_dir(&fds).into_iter().flatten().flatten() {
            let Ok(to) = fs::read_link(fd.path()) else { continue };
            // An unnamed file shows as "DIR/#INODE (deleted)", a named one as DIR/.prlimg-*.tmp.
            if to.starts_with(&canon) && fs::metadata(fd.path()).is_ok_and(|m| m.len() > 1 << 20) {
                break 'wait;
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let st = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    child.wait().unwrap()
}

#[test]
fn an_interrupted_create_leaves_the_folder_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("keep.txt"), b"already here").unwrap();
    let before = listing(d);
    for (signal, number) in [("INT", 2), ("TERM", 15), ("HUP", 1), ("KILL", 9)] {
        for named in [false, true] {
            if named && signal == "KILL" {
                // Nothing can remove a named file after SIGKILL: that is why it is unnamed.
                continue;
            }
            let st = interrupt_create(d, signal, named);
            assert_eq!(st.signal(), Some(number), "SIG{signal}, named temporary {named}: {st}");
            assert_eq!(listing(d), before, "SIG{signal}, named temporary {named}");
        }
    }
}

/// Runs `prlimg ARGS` as a job in its own process group (as a shell runs a job: Ctrl-C goes to
/// the whole group), waits until `ready(pid)` (at most 60 s), sends `signal` to the group and
/// returns how it ended, or `None` when it ended by itself first.
fn interrupt_job_when(
    args: &[&str],
    signal: &str,
    mut ready: impl FnMut(u32) -> bool,
) -> Option<std::process::ExitStatus> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(BIN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ready(child.id()) {
        assert!(start.elapsed() < Duration::from_secs(60), "{args:?} never got ready");
        if child.try_wait().unwrap().is_some() {
            return None;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let st = Command::new("kill")
        .args([&format!("-{signal}"), "--", &format!("-{}", child.id())])
        .status()
        .unwrap();
    assert!(st.success());
    Some(child.wait().unwrap())
}

/// [`interrupt_job_when`] it has written more than 1 MiB into a file under `dir` (a bundle's
/// temporary folder included).
fn interrupt_job(dir: &Path, args: &[&str], signal: &str) -> std::process::ExitStatus {
    let canon = dir.canonicalize().unwrap();
    let writing = |pid: u32| {
        let fds = PathBuf::from(format!("/proc/{pid}/fd"));
        fs::read_dir(&fds).into_iter().flatten().flatten().any(|fd| {
            fs::read_link(fd.path()).is_ok_and(|to| to.starts_with(&canon))
                && fs::metadata(fd.path()).is_ok_and(|m| m.len() > 1 << 20)
        })
    };
    interrupt_job_when(args, signal, writing)
        .unwrap_or_else(|| panic!("{args:?} ended by itself before it could be interrupted"))
}

#[test]
fn an_interrupted_bundle_write_leaves_the_folder_as_it_was() {
    let src_dir = tempfile::tempdir().unwrap();
    let src = src_dir.path().join("big.hds");
    let made = prlimg(&["create", s(&src), "--size", "2G", "--data", "0:2G:0xaa"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("keep.txt"), b"already here").unwrap();
    let before = listing(d);
    let out = d.join("t.hdd");
    let jobs: [Vec<&str>; 2] = [
        vec!["convert", s(&src), s(&out)],
        vec!["create", "--bundle", s(&out), "--size", "8G", "--data", "0:4G:0xaa"],
    ];
    for args in &jobs {
        for (signal, number) in [("INT", 2), ("TERM", 15), ("HUP", 1)] {
            let st = interrupt_job(d, args, signal);
            assert_eq!(st.signal(), Some(number), "{args:?} SIG{signal}: {st}");
            assert_eq!(listing(d), before, "{args:?} SIG{signal}");
        }
    }
}

#[test]
fn an_interrupted_mutate_removes_the_folder_it_made() {
    use std::os::unix::process::CommandExt;
    let src_dir = tempfile::tempdir().unwrap();
    let a = image_a(src_dir.path());
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("keep.txt"), b"already here").unwrap();
    let before = listing(d);
    let out = d.join("variants");
    for (signal, number) in [("INT", 2), ("TERM", 15), ("HUP", 1)] {
        let mut child = Command::new(BIN)
            .args(["mutate", s(&a), s(&out), "--count", "1000000"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while fs::read_dir(&out).map_or(0, |r| r.count()) < 3 {
            assert!(start.elapsed() < Duration::from_secs(60), "mutate never wrote");
            assert!(child.try_wait().unwrap().is_none(), "mutate ended by itself");
            std::thread::sleep(Duration::from_millis(2));
        }
        let st = Command::new("kill")
            .args([&format!("-{signal}"), "--", &format!("-{}", child.id())])
            .status()
            .unwrap();
        assert!(st.success());
        let st = child.wait().unwrap();
        assert_eq!(st.signal(), Some(number), "SIG{signal}: {st}");
        assert_eq!(listing(d), before, "SIG{signal}");
    }
    // Into a folder that was there: it stays, with what was complete (each file whole).
    fs::create_dir(&out).unwrap();
    let done = prlimg(&["mutate", s(&a), s(&out), "--count", "2"]);
    assert_eq!(done.status.code(), Some(0));
    assert_eq!(fs::read_dir(&out).unwrap().count(), 3);
}

// ------------------------------------------------------------------------------------- inputs

/// `prlimg ARGS` with `stdin` fed from `bytes` through a pipe.
fn prlimg_piped(args: &[&str], bytes: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let bytes = bytes.to_vec();
    // A writer thread: the reader may stop early, so a broken pipe here is fine.
    let feeder = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    out
}

/// What `check`, `info` (the file name made `IMAGE`) and `bitmaps` say about the
/// image at `path` (as given on the command line).
fn reports(path: &str, stdin: Option<&[u8]>) -> Vec<(Option<i32>, String, String)> {
    report_commands(path)
        .iter()
        .map(|args| {
            let out = match stdin {
                Some(b) => prlimg_piped(args, b),
                None => prlimg(args),
            };
            normalized(path, out)
        })
        .collect()
}

fn report_commands(path: &str) -> Vec<Vec<&str>> {
    vec![
        vec!["check", path],
        vec!["check", path, "--output", "json"],
        vec!["info", path],
        vec!["bitmaps", path],
        vec!["bitmaps", path, UUID_A],
    ]
}

/// Exit status, stdout with the file name made `IMAGE`, stderr.
fn normalized(path: &str, out: Output) -> (Option<i32>, String, String) {
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let text = text
        .replace(&format!("\"filename\": \"{path}\""), "\"filename\": \"IMAGE\"")
        .replace(&format!("image: {path}\n"), "image: IMAGE\n");
    // JSON as one canonical text, so that reports from which keys were taken compare equal.
    let text = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) if text.starts_with('{') => serde_json::to_string_pretty(&v).unwrap() + "\n",
        _ => text,
    };
    (out.status.code(), text, stderr(&out))
}

/// The reports of a file, less what only a file gets: libphdi's and dissect.hypervisor's
/// predictions (the readers are handed a path; a stream or a device gets none), asserted to be
/// there: the last two lines of the human check, the keys `libphdi` and `dissect` of the JSON.
fn without_readers(mut reports: Vec<(Option<i32>, String, String)>) -> Vec<(Option<i32>, String, String)> {
    let human: Vec<&str> = reports[0].1.lines().collect();
    let n = human.len();
    assert!(human[n - 2].starts_with("libphdi 20260902: "), "{}", reports[0].1);
    assert!(
        human[n - 1].starts_with("dissect.hypervisor 3.21: "),
        "{}",
        reports[0].1
    );
    reports[0].1 = human[..n - 2].iter().map(|l| format!("{l}\n")).collect();
    let mut json: serde_json::Value = serde_json::from_str(&reports[1].1).unwrap();
    let m = json.as_object_mut().unwrap();
    for key in ["libphdi", "dissect"] {
        let block = m.remove(key).unwrap_or_else(|| panic!("no {key} in {}", reports[1].1));
        assert!(block["outcome"].is_string(), "{key}: {block}");
    }
    reports[1].1 = serde_json::to_string_pretty(&json).unwrap() + "\n";
    reports
}

#[test]
fn an_image_reads_the_same_from_a_pipe_stdin_and_a_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = image_a(d);
    let bytes = fs::read(&p).unwrap();
    let from_file = without_readers(reports(s(&p), None));
    assert_eq!(from_file[0].0, Some(0), "a clean image");
    assert!(from_file[0]
        .1
        .contains("QEMU 10: opens the image with bitmaps 11111111-2222-3333-4444-555555555555"));
    assert_eq!(reports("-", Some(&bytes)), from_file, "- as a pipe");
    assert_eq!(reports("/dev/stdin", Some(&bytes)), from_file, "/dev/stdin as a pipe");
    // `-` redirected from the file is the file itself.
    let redirected: Vec<_> = ["check", "info"]
        .iter()
        .map(|cmd| {
            let out = Command::new(BIN)
                .args([cmd, "-"])
                .stdin(fs::File::open(&p).unwrap())
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .replace("image: -", "image: IMAGE")
        })
        .collect();
    assert_eq!(redirected, [from_file[0].1.clone(), from_file[2].1.clone()]);
    // A FIFO: each command opens it, then is fed the image, and ends before the next.
    let fifo = d.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut from_fifo = Vec::new();
    for args in report_commands(s(&fifo)) {
        let child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Opening for writing waits for the reader; the image then goes in whole.
        let mut w = fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        let _ = w.write_all(&bytes);
        drop(w);
        from_fifo.push(normalized(s(&fifo), child.wait_with_output().unwrap()));
    }
    assert_eq!(from_fifo, from_file, "a FIFO");
}

#[test]
fn a_stream_whose_bat_passes_the_limit_is_refused_naming_it() {
    // A v2 header with 300,000,000 BAT entries: 1.2 GB of BAT, more than 1 GiB held.
    let mut header = [0u8; 64];
    header[..16].copy_from_slice(b"WithouFreSpacExt");
    header[16..20].copy_from_slice(&2u32.to_le_bytes());
    header[28..32].copy_from_slice(&128u32.to_le_bytes());
    header[32..36].copy_from_slice(&300_000_000u32.to_le_bytes());
    let out = prlimg_piped(&["check", "-"], &header);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "prlimg: -: reading the image from a stream: holding its metadata needs more than 1073741824 \
         bytes of memory (the limit; reached at byte 1073741824 of the stream); save it to a file first\n"
    );
}

#[test]
fn an_image_reads_the_same_from_a_loop_device() {
    let dir = tempfile::tempdir().unwrap();
    let p = image_a(dir.path());
    let setup = Command::new("losetup").args(["-r", "-f", "--show"]).arg(&p).output();
    let dev = match setup {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap().trim().to_string(),
        Ok(o) => return skip("an_image_reads_the_same_from_a_loop_device", &stderr(&o)),
        Err(e) => return skip("an_image_reads_the_same_from_a_loop_device", &format!("losetup: {e}")),
    };
    let from_device = reports(&dev, None);
    let _ = Command::new("losetup").args(["-d", &dev]).status();
    assert_eq!(from_device, without_readers(reports(s(&p), None)));
}

#[test]
fn a_stream_that_is_not_an_image_is_refused_at_its_first_bytes() {
    let zeros = "\"\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\" (hex 00000000000000000000000000000000)";
    for path in ["/dev/urandom", "/dev/zero"] {
        let start = Instant::now();
        let out = prlimg(&["check", path]);
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{path}: {:?}",
            start.elapsed()
        );
        assert_eq!(out.status.code(), Some(1), "{path}");
        let err = stderr(&out);
        assert!(
            err.starts_with(&format!("prlimg: {path}: not a Parallels image: bytes 0..16 are \"")),
            "{path}: {err}"
        );
        if path == "/dev/zero" {
            assert_eq!(
                err,
                format!(
                    "prlimg: /dev/zero: not a Parallels image: bytes 0..16 are {zeros}, expected \
                     \"WithoutFreeSpace\" or \"WithouFreSpacExt\", and the version at byte 16 is 0, not 2\n"
                )
            );
        }
    }
    // Text on standard input: shown as text and hex.
    let out = prlimg_piped(&["info", "-"], &b"hello world, this is not an image".repeat(1000));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "prlimg: -: not a Parallels image: bytes 0..16 are \"hello world, thi\" (hex 68656c6c6f20776f726c642c20746869), \
         expected \"WithoutFreeSpace\" or \"WithouFreSpacExt\", and the version at byte 16 is 1936269427, not 2\n"
    );
}

/// `prlimg ARGS` with standard input redirected from the file `from`.
fn prlimg_from(args: &[&str], from: &Path) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(fs::File::open(from).unwrap())
        .output()
        .unwrap()
}

#[test]
fn every_command_reads_stdin_or_says_why_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = image_a(d);
    let bytes = fs::read(&p).unwrap();
    // Read at offsets: stdin redirected from the file is the file.
    let by_name = prlimg(&["map", "--output", "json", s(&p)]);
    assert_eq!(by_name.status.code(), Some(0));
    let from_stdin = prlimg_from(&["map", "--output", "json", "-"], &p);
    assert_eq!(
        (from_stdin.status.code(), stdout(&from_stdin)),
        (Some(0), stdout(&by_name))
    );
    let (a, b) = (d.join("a.raw"), d.join("b.raw"));
    assert_eq!(prlimg(&["convert", s(&p), s(&a)]).status.code(), Some(0));
    let out = prlimg_from(&["convert", "-", s(&b)], &p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    let damaged = d.join("damaged.hds");
    let out = prlimg_from(&["corrupt", "-", s(&damaged), "--defect", "bad-magic"], &p);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(&fs::read(&damaged).unwrap()[16..], &bytes[16..]);
    // ... and from a pipe they say why not, and write nothing.
    for cmd in ["map", "convert", "corrupt"] {
        let mut args = vec![cmd, "-"];
        let target = d.join(format!("from-pipe-{cmd}"));
        if cmd != "map" {
            args.push(s(&target));
        }
        if cmd == "corrupt" {
            args.extend(["--defect", "bad-magic"]);
        }
        let out = prlimg_piped(&args, &bytes);
        assert_eq!(out.status.code(), Some(1), "{cmd}");
        assert_eq!(
            stderr(&out),
            format!(
                "prlimg: -: standard input is a pipe or stream; `prlimg {cmd}` reads its source at offsets: \
                 save it to a file first (or redirect stdin from the file)\n"
            )
        );
        assert!(!target.exists());
    }
    // Held in memory: read whole from a pipe, as from the file.
    let (m1, m2) = (d.join("m1"), d.join("m2"));
    assert_eq!(
        prlimg(&["mutate", s(&p), s(&m1), "--count", "3"]).status.code(),
        Some(0)
    );
    let out = prlimg_piped(&["mutate", "-", s(&m2), "--count", "3"], &bytes);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    for k in 0..3 {
        let name = format!("mutant-{k:06}.hds");
        assert_eq!(
            fs::read(m1.join(&name)).unwrap(),
            fs::read(m2.join(&name)).unwrap(),
            "{name}"
        );
    }
}

/// The library's one entry point takes `-`: `report::check_path_with(Path::new("-"), …)` checks
/// standard input, whether it is a file (read at offsets) or a pipe (read once), with the same
/// report as the file by name less the readers (they need a path). The test runs itself again
/// as a child with standard input redirected; the child prints the human report.
#[test]
fn check_path_with_takes_standard_input() {
    use parallels_image::report::{check_path_with, CheckOptions, PathReport};
    use parallels_image::RuleMode;
    const CHILD: &str = "PRLIMG_TEST_CHECK_STDIN";
    let human = |r: &PathReport| {
        let mut out = Vec::new();
        r.write_human(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    if std::env::var_os(CHILD).is_some() {
        let report = check_path_with(Path::new("-"), &CheckOptions::new(RuleMode::Strict)).unwrap();
        let PathReport::Image(c) = &report else {
            panic!("standard input is an image")
        };
        println!("FILENAME {}", c.conformance.filename);
        println!("EXIT {}", c.conformance.verdict().exit_code());
        print!("{}", human(&report));
        println!("END");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = image_a(d);
    let leaky = d.join("leaky.hds");
    prlimg_ok(&["corrupt", s(&a), s(&leaky), "--defect", "trailing-leak"]);
    for (image, code) in [(&a, 0), (&leaky, 3)] {
        let by_name = check_path_with(
            image,
            &CheckOptions {
                readers: false,
                ..CheckOptions::new(RuleMode::Strict)
            },
        )
        .unwrap();
        let expected = format!("FILENAME -\nEXIT {code}\n{}END\n", human(&by_name));
        let child = || {
            let mut cmd = Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "check_path_with_takes_standard_input",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .stderr(Stdio::null());
            cmd
        };
        // Redirected from the file.
        let out = child().stdin(fs::File::open(image).unwrap()).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let report = &text[text.find("FILENAME").unwrap()..text.find("END\n").unwrap() + 4];
        assert_eq!(report, expected, "{} from a file", image.display());
        // Through a pipe.
        let mut c = child().stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        let bytes = fs::read(image).unwrap();
        let mut stdin = c.stdin.take().unwrap();
        let feeder = std::thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
        let out = c.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let report = &text[text.find("FILENAME").unwrap()..text.find("END\n").unwrap() + 4];
        assert_eq!(report, expected, "{} from a pipe", image.display());
    }
}

/// [`interrupt_job_when`] `out` holds more than `files` entries.
fn interrupt_when(args: &[&str], out: &Path, files: usize, signal: &str) -> Option<std::process::ExitStatus> {
    interrupt_job_when(args, signal, |_| fs::read_dir(out).is_ok_and(|r| r.count() >= files))
}

/// `man --dir` into a folder it makes: interrupted, the folder goes whole (as `mutate`'s and
/// `corpus`'s); run to its end, every page is there. Each signal is tried until one run is
/// caught writing (the pages take a few milliseconds).
#[test]
fn an_interrupted_man_dir_removes_the_folder_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("keep.txt"), b"already here").unwrap();
    let before = listing(d);
    let pages = d.join("man");
    let all = {
        let whole = tempfile::tempdir().unwrap();
        prlimg_ok(&["man", "--dir", s(&whole.path().join("m"))]);
        fs::read_dir(whole.path().join("m")).unwrap().count()
    };
    for (signal, number) in [("INT", 2), ("TERM", 15), ("HUP", 1)] {
        let mut caught = false;
        for _ in 0..50 {
            // A run that ends on its own (before the signal, or as it lands once the last
            // page is in place: status 0) has written every page; it is tried again.
            match interrupt_when(&["man", "--dir", s(&pages)], &pages, 0, signal) {
                Some(st) if !st.success() => {
                    assert_eq!(st.signal(), Some(number), "SIG{signal}: {st}");
                    assert_eq!(listing(d), before, "SIG{signal}");
                    caught = true;
                    break;
                }
                _ => {
                    assert_eq!(
                        fs::read_dir(&pages).unwrap().count(),
                        all,
                        "a finished run writes every page"
                    );
                    fs::remove_dir_all(&pages).unwrap();
                }
            }
        }
        assert!(caught, "SIG{signal}: `man --dir` always finished before the signal");
    }
}

/// `differential --out DIR` into a folder it makes: interrupted before `report.json`, the
/// folder goes whole, kept cases with it (and the campaign's scratch folder).
#[test]
fn an_interrupted_differential_removes_the_folder_it_made() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        return skip(
            "an_interrupted_differential_removes_the_folder_it_made",
            "qemu-img is not on PATH",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::write(d.join("keep.txt"), b"already here").unwrap();
    let before = listing(d);
    let out = d.join("campaign");
    let args = [
        "differential",
        "--out",
        s(&out),
        "--qemu",
        "--count",
        "100000",
        "--seed",
        "1",
    ];
    for (signal, number) in [("INT", 2), ("TERM", 15), ("HUP", 1)] {
        // Once it has kept a case (a disagreement or crash of the built-in base's variants).
        let st = interrupt_when(&args, &out, 1, signal).expect("a campaign of 100000 cases is interrupted");
        assert_eq!(st.signal(), Some(number), "SIG{signal}: {st}");
        assert_eq!(listing(d), before, "SIG{signal}");
    }
}
