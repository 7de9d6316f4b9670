//! Running the real QEMU tools: finding them, running them read-only on a file whose bytes are
//! checked unchanged afterwards, servers on unix sockets killed by a drop guard, and the
//! comparison of [`qemu::predict`] with what `qemu-img info` / `check` really did.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use parallels_image::oracle::qemu::{QemuImg, QemuTools};
use parallels_image::oracle::{self, End, RunOptions};
use parallels_image::qemu::{self, QemuCheck, QemuOutcome, Version};
use serde_json::Value;

use crate::fixtures::needs;

/// An image file written for a test, with its bytes kept to prove that QEMU left it alone.
pub struct Img {
    /// Where it is.
    pub path: PathBuf,
    /// Its contents when written.
    pub bytes: Vec<u8>,
}

impl Img {
    /// Writes `bytes` to `dir/name`.
    pub fn write(dir: &Path, name: &str, bytes: Vec<u8>) -> Img {
        let path = dir.join(name);
        std::fs::write(&path, &bytes).expect("write test image");
        Img { path, bytes }
    }

    /// Takes an existing file as it is now.
    pub fn existing(path: &Path) -> Img {
        Img {
            path: path.to_path_buf(),
            bytes: std::fs::read(path).expect("read test image"),
        }
    }

    /// The path as QEMU is given it (and prints it back).
    pub fn arg(&self) -> String {
        self.path.to_str().expect("utf-8 temp path").to_string()
    }

    /// Panics unless the file still holds exactly the bytes it was written with.
    pub fn assert_unchanged(&self, after: &str) {
        let now = std::fs::read(&self.path).expect("re-read test image");
        assert!(
            now == self.bytes,
            "{} changed after `{after}` (length {} -> {})",
            self.path.display(),
            self.bytes.len(),
            now.len()
        );
    }
}

/// What a tool did.
#[derive(Debug)]
pub struct Run {
    /// Exit status; 128 + signal number when killed by a signal (134 = SIGABRT).
    pub code: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error, split into lines.
    pub stderr: Vec<String>,
    /// The run as the library's oracle gives it.
    pub raw: oracle::Run,
}

impl From<oracle::Run> for Run {
    /// (`stderr` holds the lines kept: `qemu-img` runs keep the first
    /// [`parallels_image::qemu::MAX_ERROR_LINES`].)
    fn from(r: oracle::Run) -> Run {
        Run {
            code: r.end.shell_status().expect("an exit or a signal"),
            stdout: r.stdout.text(),
            stderr: r.stderr.head.clone(),
            raw: r,
        }
    }
}

impl Run {
    /// Standard output as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// How long a tool may run in a test before it counts as hung.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Checks that every image in `images` is unchanged after `run`, and that `run` ended in time.
fn finished(images: &[&Img], run: oracle::Run) -> oracle::Run {
    for img in images {
        img.assert_unchanged(&run.command);
    }
    assert_ne!(run.end, End::TimedOut, "{} did not finish in {TIMEOUT:?}", run.command);
    run
}

/// `qemu-img convert -f parallels -O raw IMG OUT`: the guest's bytes as QEMU reads them,
/// written to `out` (the image checked unchanged, as by [`run_on`]).
pub fn to_raw(img: &Img, out: &Path) -> Run {
    let out = out.to_str().expect("UTF-8 path");
    run_on(
        &[img],
        "qemu-img",
        &["convert", "-f", "parallels", "-O", "raw", &img.arg(), out],
    )
}

/// Runs `prog args` (through the library's [`oracle::run`]), then checks that every image in
/// `images` is unchanged.
pub fn run_on(images: &[&Img], prog: &str, args: &[&str]) -> Run {
    let program = oracle::on_path(prog).unwrap_or_else(|| PathBuf::from(prog));
    let args: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
    let options = RunOptions {
        keep_lines: 1 << 20,
        ..RunOptions::new(TIMEOUT)
    };
    let r = oracle::run(&program, &args, &options).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        r.stdout.is_complete() && r.stderr.is_complete(),
        "{}: output too long",
        r.command
    );
    Run::from(finished(images, r))
}

fn qemu_img() -> QemuImg {
    QemuImg::find().expect("qemu-img on PATH")
}

/// `qemu-img info -f parallels --output=json IMG` ([`QemuImg::info`]).
pub fn info(img: &Img) -> Run {
    let r = qemu_img().info(&img.path, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    Run::from(finished(&[img], r))
}

/// `qemu-img check -f parallels --output=json IMG` (no `-r`: QEMU opens the image read-only;
/// [`QemuImg::check`]).
pub fn check(img: &Img) -> Run {
    let r = qemu_img().check(&img.path, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    Run::from(finished(&[img], r))
}

/// `qemu-img map -f parallels --output=json IMG`, as `(start, length, data, offset)` extents.
pub fn map(img: &Img) -> Vec<(u64, u64, bool, Option<u64>)> {
    let r = run_on(
        &[img],
        "qemu-img",
        &["map", "-f", "parallels", "--output=json", &img.arg()],
    );
    assert_eq!(r.code, 0, "qemu-img map failed: {:?}", r.stderr);
    let v = r.json();
    v.as_array()
        .expect("map is a list")
        .iter()
        .map(|e| {
            (
                e["start"].as_u64().unwrap(),
                e["length"].as_u64().unwrap(),
                e["data"].as_bool().unwrap(),
                e.get("offset").and_then(Value::as_u64),
            )
        })
        .collect()
}

/// The virtual size `qemu-img info` reports (the image must open).
pub fn virtual_size(img: &Img) -> u64 {
    let r = info(img);
    assert_eq!(r.code, 0, "qemu-img info failed: {:?}", r.stderr);
    r.json()["virtual-size"].as_u64().expect("virtual-size")
}

/// How long to wait for a server to accept connections on its socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A server process, killed (and reaped) when dropped, also when the test panics.
pub struct Server {
    child: Child,
    /// The unix socket it listens on.
    pub socket: PathBuf,
    /// What it runs, for messages.
    label: String,
}

impl Server {
    /// Starts `prog args` and waits until it accepts a connection on `socket` (the socket's
    /// file appears before the server listens on it; a connection in between is refused).
    /// Gives that connection beside the server; `Err` carries the server's stderr if it exits
    /// first.
    pub fn start(prog: &str, args: &[String], socket: &Path) -> Result<(Server, UnixStream), String> {
        let child = Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {prog}: {e}"));
        let mut server = Server {
            child,
            socket: socket.to_path_buf(),
            label: format!("{prog} {}", args.join(" ")),
        };
        let t0 = Instant::now();
        loop {
            if let Ok(stream) = UnixStream::connect(socket) {
                return Ok((server, stream));
            }
            if let Some(err) = server.exited() {
                return Err(err);
            }
            assert!(
                t0.elapsed() < START_TIMEOUT,
                "{} does not accept connections on {}",
                server.label,
                socket.display()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// If the server has exited: what it wrote to stderr, with its status.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.try_wait().expect("poll server")?;
        let mut err = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut err);
        }
        Some(format!("{} exited with {status}: {err}", self.label))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `qemu-nbd -r -t -f parallels -B NAME... -k SOCK IMG`: the bitmaps exported read-only.
pub fn nbd_server(dir: &Path, img: &Img, bitmaps: &[String]) -> Server {
    let socket = dir.join("nbd.sock");
    let mut args: Vec<String> = ["-r", "-t", "-f", "parallels"].iter().map(|s| s.to_string()).collect();
    for b in bitmaps {
        args.push("-B".into());
        args.push(b.clone());
    }
    args.extend(["-k".into(), socket.to_str().unwrap().into(), img.arg()]);
    // The first connection is closed at once: `qemu-nbd -t` serves on.
    let (server, _) = Server::start("qemu-nbd", &args, &socket).unwrap_or_else(|e| panic!("{e}"));
    server
}

/// `nbdinfo --map=qemu:dirty-bitmap:NAME --json` against a server: `(offset, length, dirty)`
/// with neighbours of the same kind merged.
pub fn nbd_dirty_map(server: &Server, img: &Img, name: &str) -> Vec<(u64, u64, bool)> {
    let uri = format!("nbd+unix:///?socket={}", server.socket.display());
    let r = run_on(
        &[img],
        "nbdinfo",
        &[&format!("--map=qemu:dirty-bitmap:{name}"), "--json", &uri],
    );
    assert_eq!(r.code, 0, "nbdinfo failed: {:?}", r.stderr);
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for e in r.json().as_array().expect("extent list") {
        let (o, l, t) = (
            e["offset"].as_u64().unwrap(),
            e["length"].as_u64().unwrap(),
            e["type"].as_u64().unwrap(),
        );
        assert!(t <= 1, "unexpected extent type {t}");
        match out.last_mut() {
            Some(last) if last.2 == (t == 1) && last.0 + last.1 == o => last.1 += l,
            _ => out.push((o, l, t == 1)),
        }
    }
    out
}

/// The crate's dirty extents with the clean gaps between them, over `[0, size)`.
pub fn with_gaps(dirty: &[(u64, u64)], size: u64) -> Vec<(u64, u64, bool)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(o, l) in dirty {
        if o > at {
            out.push((at, o - at, false));
        }
        out.push((o, l, true));
        at = o + l;
    }
    if at < size {
        out.push((at, size - at, false));
    }
    out
}

/// qemu-storage-daemon with the image opened read-only (file and parallels nodes) and a QMP
/// monitor on a unix socket.
pub struct Qsd {
    server: Server,
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qsd {
    /// Starts the daemon; `Err` carries its stderr when the image does not open.
    pub fn start(dir: &Path, img: &Img) -> Result<Qsd, String> {
        let socket = dir.join("qmp.sock");
        let args = vec![
            "--blockdev".to_string(),
            format!("driver=file,node-name=f,filename={},read-only=on", img.arg()),
            "--blockdev".into(),
            "driver=parallels,node-name=p,file=f,read-only=on".into(),
            "--chardev".into(),
            format!("socket,id=m,path={},server=on,wait=off", socket.display()),
            "--monitor".into(),
            "chardev=m,mode=control".into(),
        ];
        let (server, stream) = Server::start("qemu-storage-daemon", &args, &socket)?;
        stream.set_read_timeout(Some(START_TIMEOUT)).unwrap();
        let mut q = Qsd {
            server,
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        let greeting = q.read();
        assert!(greeting.get("QMP").is_some(), "no QMP greeting: {greeting}");
        q.cmd("qmp_capabilities", Value::Null);
        Ok(q)
    }

    fn read(&mut self) -> Value {
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).expect("read QMP");
            assert!(n > 0, "QMP connection closed");
            let v: Value = serde_json::from_str(&line).expect("QMP JSON");
            if v.get("event").is_none() {
                return v;
            }
        }
    }

    /// Runs a QMP command and returns its `return` value (panics on `error`).
    pub fn cmd(&mut self, execute: &str, arguments: Value) -> Value {
        let mut msg = serde_json::json!({ "execute": execute });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        writeln!(self.writer, "{msg}").expect("write QMP");
        // The daemon sometimes greets a client twice (a CI run once read a second greeting as
        // the reply to `qmp_capabilities`): a greeting is never a command's reply, so it is
        // passed over here.
        let reply = loop {
            let v = self.read();
            if v.get("QMP").is_none() {
                break v;
            }
        };
        match reply.get("return") {
            Some(r) => r.clone(),
            None => panic!("QMP {execute} failed: {reply}"),
        }
    }

    /// The dirty bitmaps of the parallels node as `(name, granularity, count)`, in QEMU's order.
    pub fn bitmaps(&mut self) -> Vec<(String, u64, u64)> {
        let nodes = self.cmd("query-named-block-nodes", serde_json::json!({ "flat": true }));
        let node = nodes
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node-name"] == "p")
            .expect("parallels node");
        node.get("dirty-bitmaps")
            .and_then(Value::as_array)
            .map(|l| {
                l.iter()
                    .map(|b| {
                        (
                            b["name"].as_str().unwrap().to_string(),
                            b["granularity"].as_u64().unwrap(),
                            b["count"].as_u64().unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `x-debug-block-dirty-bitmap-sha256` of bitmap `name` on the parallels node.
    pub fn sha256(&mut self, name: &str) -> String {
        let r = self.cmd(
            "x-debug-block-dirty-bitmap-sha256",
            serde_json::json!({ "node": "p", "name": name }),
        );
        r["sha256"].as_str().unwrap().to_string()
    }

    /// Stops the daemon (the drop guard would too) and checks the image is unchanged.
    pub fn finish(self, img: &Img) {
        drop(self);
        img.assert_unchanged("qemu-storage-daemon");
    }
}

impl std::fmt::Debug for Qsd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Qsd({})", self.server.label)
    }
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where `qemu-img info`'s real behaviour differs from the prediction, if it does
/// ([`oracle::qemu::info_disagreement`]).
/// `None` also for [`QemuOutcome::Undefined`] (QEMU reads past its buffer: nothing to compare).
pub fn info_mismatch(pred: &QemuOutcome, run: &Run, path: &str) -> Option<String> {
    oracle::qemu::info_disagreement(pred, &run.raw, path).map(|d| d.to_string())
}

/// Where `qemu-img check`'s real behaviour differs from the prediction, if it does
/// ([`oracle::qemu::check_disagreement`]).
pub fn check_mismatch(pred: &QemuCheck, run: &Run, path: &str) -> Option<String> {
    oracle::qemu::check_disagreement(pred, &run.raw, path).map(|d| d.to_string())
}

/// The `qemu-img` programs to compare with, each predicted as its version: 10.0 from `PATH`,
/// and QEMU 7.2 from where `.ci/run` unpacks it (`oracle::qemu::qemu_7_2_dir`). A missing 7.2
/// fails under `CI=true`, and otherwise is skipped with one visible `SKIP:` line per run.
pub fn qemu_imgs() -> Vec<QemuImg> {
    let mut out = vec![qemu_img()];
    out.extend(qemu_7_2());
    out
}

/// QEMU 7.2's `qemu-img` (see [`qemu_imgs`]).
pub fn qemu_7_2() -> Option<QemuImg> {
    static FOUND: std::sync::OnceLock<Result<QemuImg, String>> = std::sync::OnceLock::new();
    let found = FOUND.get_or_init(|| {
        let dir = oracle::qemu::qemu_7_2_dir().ok_or("no HOME or QEMU_7_2_DIR")?;
        if !dir.join("qemu-img").is_file() {
            return Err(format!(
                "QEMU 7.2 is not unpacked in {} (.ci/run's step \"QEMU 7.2\" puts it there)",
                dir.display()
            ));
        }
        let tools = QemuTools::detect(&dir).map_err(|e| e.to_string())?;
        if tools.version != Version::V7_2 {
            return Err(format!("{} holds QEMU {}, not 7.2", dir.display(), tools.version));
        }
        Ok(tools.qemu_img())
    });
    match found {
        Ok(q) => Some(q.clone()),
        Err(why) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            let mut skipped = None;
            SAID.call_once(|| skipped = needs::missing("the QEMU 7.2 comparisons", why));
            skipped
        }
    }
}

/// Runs `qemu-img info` and `check` on `img` and compares both with [`qemu::predict`], for
/// QEMU 10.0 and (where it is installed, always under `CI=true`) QEMU 7.2 with
/// [`qemu::predict_for`]; returns every difference, each naming the version (empty: both QEMUs
/// did what was predicted).
pub fn compare_with_qemu(img: &Img) -> Vec<String> {
    qemu_imgs()
        .iter()
        .flat_map(|q| {
            compare_with(q, img)
                .into_iter()
                .map(move |p| format!("QEMU {}: {p}", q.version()))
        })
        .collect()
}

/// [`compare_with_qemu`] for one `qemu-img`, predicted as its version.
pub fn compare_with(q: &QemuImg, img: &Img) -> Vec<String> {
    let version = q.version();
    let pred = qemu::predict_for(&img.bytes.as_slice(), version).expect("predict on a slice");
    let path = img.arg();
    let mut out = Vec::new();
    // The same prediction from the file (its BAT read through a buffer, as `prlimg check`
    // does) and from the whole BAT held in memory.
    let file = parallels_image::FileSource::open(&img.path).expect("open test image");
    let from_file = qemu::predict_for(&file, version).expect("predict on the file");
    if from_file != pred {
        out.push(format!(
            "{path}: predicted from the file {from_file:?}, from its bytes {pred:?}"
        ));
    }
    if let Ok(whole) = parallels_image::Image::parse(&img.bytes) {
        let from_whole = qemu::predict_image_for(&whole, version);
        if from_whole != pred {
            out.push(format!(
                "{path}: predicted from the whole BAT {from_whole:?}, compact {pred:?}"
            ));
        }
    }
    let info = q.info(&img.path, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let info = Run::from(finished(&[img], info));
    let check = q.check(&img.path, TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let check = Run::from(finished(&[img], check));
    out.extend(info_mismatch(&pred.info, &info, &path));
    out.extend(check_mismatch(&pred.check, &check, &path));
    out
}
