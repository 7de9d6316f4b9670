//! The predictions of `parallels_image::readers` held to the real libphdi and
//! dissect.hypervisor (run through `scripts/readers/*_driver.py` in the venv `.ci/run` makes):
//! on the Parallels Desktop samples, on bundles of many shapes built by `prlimg create
//! --bundle`, on lone images, and on every defect of both corrupt catalogues. Without the venv
//! these tests are ignored (build.rs); with `CI=true` they run and fail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use parallels_image::oracle::readers::{differences, Reader, RealReader};
use parallels_image::readers::{
    dissect::predict_dissect_with, libphdi::predict_libphdi_with, ReaderOutcome, ReaderPrediction, Truth, READ_SIZE,
};

const TIMEOUT: Duration = Duration::from_secs(20);
const TOP: &str = "5fbaabe3-6958-40ff-92a7-860e329aab41";
const A: &str = "11111111-1111-4111-8111-111111111111";
const B: &str = "22222222-2222-4222-8222-222222222222";

fn prlimg() -> Command {
    Command::new(env!("CARGO_BIN_EXE_prlimg"))
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn readers() -> (RealReader, RealReader) {
    let l = RealReader::libphdi().expect("libphdi's venv (~/.cache/prlimg-readers-venv, made by .ci/run)");
    let d = RealReader::dissect().expect("dissect.hypervisor's venv (~/.cache/prlimg-readers-venv)");
    (l, d)
}

/// Runs both readers on `path` and both predictions; returns the predictions after asserting
/// that every field compared agrees.
fn agree_with(path: &Path, read_size: u64) -> (ReaderPrediction, ReaderPrediction) {
    let (l, d) = readers();
    let truth = Truth::of(path);
    let mut preds = Vec::new();
    for (real, predicted) in [
        (&l, predict_libphdi_with(path, truth.as_ref(), read_size)),
        (&d, predict_dissect_with(path, truth.as_ref(), read_size)),
    ] {
        let observed = real.observe(path, truth.as_ref(), read_size, TIMEOUT).unwrap();
        let diff = differences(&predicted, &observed);
        assert!(
            diff.is_empty(),
            "{} on {}: {}\npredicted {predicted:?}\nobserved {:?}",
            real.reader().name(),
            path.display(),
            diff.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            observed.outcome
        );
        preds.push(predicted);
    }
    let d = preds.pop().unwrap();
    (preds.pop().unwrap(), d)
}

fn agree(path: &Path) -> (ReaderPrediction, ReaderPrediction) {
    agree_with(path, READ_SIZE)
}

fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/samples/parallels-desktop")
}

/// A writable copy of a sample bundle with its storage file unpacked.
fn sample(dir: &Path, name: &str) -> PathBuf {
    let from = samples().join(name);
    let to = dir.join(name);
    std::fs::create_dir(&to).unwrap();
    for e in std::fs::read_dir(&from).unwrap() {
        let p = e.unwrap().path();
        let file = p.file_name().unwrap().to_str().unwrap().to_string();
        if let Some(stem) = file.strip_suffix(".gz") {
            let out = Command::new("gzip").arg("-dc").arg(&p).output().unwrap();
            assert!(out.status.success());
            std::fs::write(to.join(stem), out.stdout).unwrap();
        } else {
            std::fs::copy(&p, to.join(&file)).unwrap();
        }
    }
    to
}

fn recipe(dir: &Path, name: &str, json: &str) -> PathBuf {
    let r = dir.join(format!("{name}.json"));
    std::fs::write(&r, json).unwrap();
    let out = dir.join(format!("{name}.hdd"));
    ok(prlimg().args(["create", "--bundle", "--recipe"]).arg(&r).arg(&out));
    out
}

fn chain_json() -> String {
    format!(
        r#"{{"size":"8M","cluster_size":"1M","snapshots":[{{"guid":"{A}","data":[{{"offset":0,"len":"3M","byte":1}}]}},{{"guid":"{B}","parent":"{A}","data":[{{"offset":"2M","len":"1M","byte":4}}]}},{{"guid":"{TOP}","parent":"{B}","data":[{{"offset":"1M","len":"1M","byte":2}},{{"offset":"5M","len":"1M","byte":3}}]}}]}}"#
    )
}

/// The shapes: (name, recipe).
fn shapes() -> Vec<(&'static str, String)> {
    vec![
        ("chain", chain_json()),
        (
            "topguid",
            format!(
                r#"{{"size":"8M","top":"{B}","snapshots":[{{"guid":"{A}","data":[{{"offset":0,"len":"3M","byte":1}}]}},{{"guid":"{B}","parent":"{A}","data":[{{"offset":"1M","len":"1M","byte":2}}]}}]}}"#
            ),
        ),
        (
            "split",
            format!(
                r#"{{"size":"8M","split_at":["3M"],"snapshots":[{{"guid":"{TOP}","data":[{{"offset":"2M","len":"2M","byte":7}}]}}]}}"#
            ),
        ),
        (
            "plainroot",
            format!(
                r#"{{"size":"8M","plain_root":true,"snapshots":[{{"guid":"{A}","data":[{{"offset":0,"len":"2M","byte":1}}]}},{{"guid":"{TOP}","parent":"{A}","data":[{{"offset":"1M","len":"1M","byte":2}}]}}]}}"#
            ),
        ),
        (
            "small-clusters",
            format!(
                r#"{{"size":"3M","cluster_size":"64K","snapshots":[{{"guid":"{TOP}","data":[{{"offset":"64K","len":"100K","byte":9}},{{"offset":"2M","len":"1K","byte":5}}]}}]}}"#
            ),
        ),
        (
            "small-clusters-chain",
            format!(
                r#"{{"size":"2M","cluster_size":"64K","snapshots":[{{"guid":"{A}","data":[{{"offset":0,"len":"2M","byte":1}}]}},{{"guid":"{TOP}","parent":"{A}","data":[{{"offset":"128K","len":"64K","byte":2}}]}}]}}"#
            ),
        ),
        (
            "sparse-start",
            format!(
                r#"{{"size":"8M","snapshots":[{{"guid":"{TOP}","data":[{{"offset":"1M","len":"1M","byte":4}}]}}]}}"#
            ),
        ),
        (
            "big-clusters",
            format!(
                r#"{{"size":"9M","cluster_size":"2M","snapshots":[{{"guid":"{TOP}","data":[{{"offset":"3M","len":"3M","byte":6}}]}}]}}"#
            ),
        ),
    ]
}

#[test]
#[cfg_attr(prlimg_no_samples, ignore = "needs ../shared/samples")]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn parallels_desktop_samples_open_in_both() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["expanding.hdd", "plain.hdd"] {
        let b = sample(dir.path(), name);
        let (l, d) = agree(&b);
        for p in [&l, &d] {
            assert_eq!(p.outcome, ReaderOutcome::Opens, "{name}: {p:?}");
            assert_eq!(p.media_size, Some(100 << 20));
            assert_eq!(p.top.as_deref(), Some("{5fbaabe3-6958-40ff-92a7-860e329aab41}"));
        }
    }
}

#[test]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn built_shapes_agree() {
    let dir = tempfile::tempdir().unwrap();
    for (name, json) in shapes() {
        let b = recipe(dir.path(), name, &json);
        let (l, d) = agree(&b);
        match name {
            // prlimg writes v2 images: libphdi opens the bundle and refuses the first read.
            "chain" | "sparse-start" => {
                assert_eq!(l.outcome, ReaderOutcome::Refuses);
                assert_eq!(
                    l.message.as_deref(),
                    Some("libphdi_sparse_image_header_read_data: unsupported signature")
                );
                assert_eq!(d.outcome, ReaderOutcome::Opens, "{name}: {d:?}");
            }
            "topguid" => {
                assert_eq!(
                    l.message.as_deref(),
                    Some("libphdi_disk_descriptor_xml_file_get_snapshots: unsupported snapshot tag: 0")
                );
                assert_eq!(
                    d.message.as_deref(),
                    Some("KeyError: 'Shot GUID not found: 5fbaabe3-6958-40ff-92a7-860e329aab41'")
                );
            }
            "split" => {
                assert_eq!(
                    l.message.as_deref(),
                    Some("libbfio_pool_set_handle: invalid handle entry: 0 value already set")
                );
                assert_eq!(d.outcome, ReaderOutcome::Opens);
            }
            "small-clusters" => {
                assert_eq!(
                    l.message.as_deref(),
                    Some("libphdi_disk_descriptor_xml_file_get_storage_data: unsupported block size: 128")
                );
                // The cluster at file offset 64 KiB follows a 64 KiB hole: merged, read as zeros.
                assert_eq!(d.outcome, ReaderOutcome::Misreads);
                assert_eq!(d.misread_mib, vec![0]);
            }
            _ => {}
        }
    }
}

#[test]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn dissect_misreads_depend_on_the_read_size() {
    let dir = tempfile::tempdir().unwrap();
    let (_, json) = shapes().into_iter().find(|s| s.0 == "small-clusters").unwrap();
    let b = recipe(dir.path(), "small", &json);
    // Reads of one cluster never merge a hole with the cluster after it.
    let (_, d) = agree_with(&b, 64 << 10);
    assert_eq!(d.outcome, ReaderOutcome::Opens);
    let (_, d) = agree_with(&b, 1 << 20);
    assert_eq!(d.misread_mib, vec![0]);
    let (_, d) = agree_with(&b, 3 << 20);
    assert_eq!(d.outcome, ReaderOutcome::Misreads);
}

#[test]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn lone_images_agree() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("v2.hds", &["--size", "4M", "--data", "0:1M:3"]),
        ("v1.hds", &["--v1", "--size", "4M", "--data", "1M:1M:3"]),
        (
            "v1-64k.hds",
            &["--v1", "--size", "4M", "--cluster-size", "64K", "--data", "64K:64K:3"],
        ),
        (
            "v1-2m.hds",
            &["--v1", "--size", "4M", "--cluster-size", "2M", "--data", "2M:1M:3"],
        ),
    ];
    for (name, args) in cases {
        let p = dir.path().join(name);
        ok(prlimg().arg("create").args(*args).arg(&p));
        let (l, d) = agree(&p);
        if *name == "v1.hds" {
            assert_eq!(l.outcome, ReaderOutcome::Opens);
            assert_eq!(d.outcome, ReaderOutcome::Opens);
        }
    }
}

/// A lone image whose disk size makes the wrapper's Cylinders pass 32 bits: libphdi refuses
/// the descriptor's disk parameters before it looks at the storage (a campaign's case, seed
/// 3463861807: nb_sectors set to 2^54).
#[test]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn libphdi_refuses_cylinders_past_32_bits_first() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("huge.hds");
    ok(prlimg()
        .arg("create")
        .args(["--size", "4M", "--cluster-size", "64K"])
        .arg(&p));
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[36..44].copy_from_slice(&(1u64 << 54).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let (l, _) = agree(&p);
    assert_eq!(l.outcome, ReaderOutcome::Refuses);
    assert_eq!(
        l.message.as_deref(),
        Some("libphdi_disk_descriptor_xml_file_get_disk_parameters: invalid number of cylinders value out of bounds")
    );
}

/// The defect names `prlimg corrupt LIST_FLAG` lists (the first word of each line).
fn defect_names(list_flag: &str) -> Vec<String> {
    let list = prlimg().args(["corrupt", list_flag]).output().unwrap();
    String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Every defect of `prlimg corrupt --list-bundle`, applied to the first base bundle it fits.
#[test]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn every_bundle_defect_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let bases: Vec<PathBuf> = shapes()
        .into_iter()
        .filter(|s| ["chain", "plainroot", "split"].contains(&s.0))
        .map(|(n, j)| recipe(dir.path(), n, &j))
        .collect();
    let names = defect_names("--list-bundle");
    assert!(names.len() >= 22);
    let mut done = 0;
    for name in &names {
        let out = dir.path().join(format!("def-{name}.hdd"));
        let applied = bases.iter().any(|b| {
            prlimg()
                .args(["corrupt", "--defect", name])
                .arg(b)
                .arg(&out)
                .output()
                .unwrap()
                .status
                .success()
        });
        assert!(applied, "no base bundle takes the defect {name}");
        agree(&out);
        done += 1;
    }
    assert_eq!(done, names.len());
}

/// Every defect of `prlimg corrupt --list`, on a lone image (wrapped by the drivers).
#[test]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn every_image_defect_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let bases: Vec<PathBuf> = [
        (
            "base-v2.hds",
            vec!["--size", "4M", "--data", "0:2M:3", "--random-bitmap", "0.3"],
        ),
        ("base-v1.hds", vec!["--v1", "--size", "4M", "--data", "1M:2M:3"]),
    ]
    .iter()
    .map(|(n, a)| {
        let p = dir.path().join(n);
        ok(prlimg().arg("create").args(a).arg(&p));
        p
    })
    .collect();
    let names = defect_names("--list");
    assert!(names.len() >= 10);
    let mut done = 0;
    for name in &names {
        for b in &bases {
            let out = dir
                .path()
                .join(format!("{name}-{}", b.file_name().unwrap().to_str().unwrap()));
            let made = prlimg()
                .args(["corrupt", "--defect", name])
                .arg(b)
                .arg(&out)
                .output()
                .unwrap()
                .status
                .success();
            if made {
                agree(&out);
                done += 1;
            }
        }
    }
    assert!(
        done >= names.len(),
        "only {done} damaged images for {} defects",
        names.len()
    );
}

#[test]
fn libphdi_cause_is_the_first_cause_after_pyphdi() {
    use parallels_image::oracle::readers::libphdi_cause;
    assert_eq!(
        libphdi_cause(
            "OSError: pyphdi_handle_open_extent_data_files: unable to open extent data files. \
             libcfile_file_open_with_error_code: no such file: /t/a.hdd/a.hdd.0.{x}.hds. libcfile_file_open: unable to open file."
        ),
        "libcfile_file_open_with_error_code: no such file: /t/a.hdd/a.hdd.0.{x}.hds"
    );
    let _ = Reader::Libphdi;
}

/// `prlimg check` shows both readers: JSON keys `libphdi` and `dissect` (bundle and image), a
/// line each in the human report, and what they say is what the real readers do.
#[test]
#[cfg_attr(
    prlimg_no_readers,
    ignore = "needs the readers' venv (~/.cache/prlimg-readers-venv; .ci/run makes it)"
)]
fn check_shows_both_readers() {
    let dir = tempfile::tempdir().unwrap();
    let (_, json) = shapes().into_iter().find(|s| s.0 == "small-clusters").unwrap();
    let bundle = recipe(dir.path(), "small", &json);
    let image = dir.path().join("v1.hds");
    ok(prlimg()
        .args(["create", "--v1", "--size", "4M", "--data", "1M:1M:3"])
        .arg(&image));
    let (l, d) = readers();
    for path in [&bundle, &image] {
        let out = prlimg().args(["check", "--output", "json"]).arg(path).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let truth = Truth::of(path);
        for real in [&l, &d] {
            let block = &v[real.reader().name()];
            let observed = real.observe(path, truth.as_ref(), READ_SIZE, TIMEOUT).unwrap().outcome;
            assert_eq!(block["outcome"], observed.outcome.name(), "{}: {block}", path.display());
            assert_eq!(block["message"], serde_json::json!(observed.message));
            assert_eq!(block["media_size"], serde_json::json!(observed.media_size));
            assert_eq!(block["misread_mib"], serde_json::json!(observed.misread_mib));
        }
    }
    let out = prlimg()
        .args(["check", "--output", "json"])
        .arg(&bundle)
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["dissect"]["outcome"], "misreads");
    assert_eq!(v["dissect"]["misread_mib"], serde_json::json!([0]));
    assert_eq!(
        v["libphdi"]["message"],
        "libphdi_disk_descriptor_xml_file_get_storage_data: unsupported block size: 128"
    );
    let human = prlimg().arg("check").arg(&bundle).output().unwrap();
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains(
        "libphdi 20260902: refuses (libphdi_disk_descriptor_xml_file_get_storage_data: unsupported block size: 128)\n"
    ));
    assert!(text.contains(
        "dissect.hypervisor 3.21: misreads MiB 0 in reads of 1048576 bytes (reads zeros there instead of the disk's \
         bytes); media size 3145728 bytes; top {5fbaabe3-6958-40ff-92a7-860e329aab41}\n"
    ));
    let human = prlimg().arg("check").arg(&image).output().unwrap();
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains(
        "libphdi 20260902: opens and reads the disk's bytes; media size 4194304 bytes; top \
         {5fbaabe3-6958-40ff-92a7-860e329aab41}\n"
    ));
}
