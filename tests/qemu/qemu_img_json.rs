//! `prlimg check --output json` and `prlimg info --output json` hold the very objects
//! `qemu-img check --output json` and `qemu-img info --output json` print (issue 29, item 3),
//! key for key and value for value, on every image where QEMU's check completes: clean ones,
//! leaking ones, corrupt ones, with bitmaps, fragmented, of a length off the sector grid, and
//! QEMU's own samples.

use std::process::Command;

use parallels_image::corrupt::{self, DefectKind};
use parallels_image::{GuestData, ImageBuilder};
use serde_json::{Map, Value};

use crate::defects::bases;
use crate::fixtures::needs;
use crate::harness::{self, Img};

const BIN: &str = env!("CARGO_BIN_EXE_prlimg");

fn prlimg_json(args: &[&str]) -> Option<Value> {
    let out = Command::new(BIN).args(args).output().expect("run prlimg");
    let text = String::from_utf8(out.stdout).unwrap();
    (!text.trim().is_empty()).then(|| serde_json::from_str(&text).unwrap_or_else(|e| panic!("{args:?}: {e}: {text}")))
}

/// The images: every defect on every base image (seed 0), the bases, a fragmented image, one
/// whose length is not a multiple of 512, QEMU's samples.
fn images(dir: &std::path::Path) -> Vec<Img> {
    let mut out = Vec::new();
    for (base, bytes) in bases() {
        out.push(Img::write(dir, &format!("{base}.hds"), bytes.clone()));
        let src = bytes.as_slice();
        let image = parallels_image::open(&src).unwrap();
        for &defect in DefectKind::ALL {
            if let Ok(patch) = corrupt::plan(&image, defect, 0) {
                let mut damaged = bytes.clone();
                patch.apply_to_vec(&mut damaged);
                out.push(Img::write(dir, &format!("{defect}.{base}.hds"), damaged));
            }
        }
    }
    // Guest clusters 0 and 1 swapped on disk: QEMU counts both as fragmented.
    let (mut bytes, _) = ImageBuilder::new(16 << 20)
        .cluster_size(64 << 10)
        .data(
            0,
            GuestData::Fill {
                len: 3 << 16,
                byte: 0x5a,
            },
        )
        .to_vec()
        .unwrap();
    let (a, b) = (bytes[64..68].to_vec(), bytes[68..72].to_vec());
    bytes[64..68].copy_from_slice(&b);
    bytes[68..72].copy_from_slice(&a);
    out.push(Img::write(dir, "fragmented.hds", bytes.clone()));
    // Two bytes more: the file node's size is rounded up to a sector, the tail leaks.
    bytes.extend([1, 2]);
    out.push(Img::write(dir, "fragmented-odd-length.hds", bytes));
    if let Some(samples) = needs::qemu_samples("qemu_img_json_objects") {
        for name in ["parallels-v1", "parallels-v2", "parallels-with-bitmap"] {
            let f = std::fs::File::open(samples.join(format!("{name}.bz2"))).unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut bzip2::read::BzDecoder::new(f), &mut bytes).unwrap();
            out.push(Img::write(dir, &format!("{name}.hds"), bytes));
        }
    }
    out
}

/// `v`'s keys spelled as qemu-img's (kebab-case) and the two it shares with this tool.
fn qemu_keys_of(v: &Value) -> Value {
    let m: Map<String, Value> = v
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| {
            k.contains('-') || ["filename", "format", "leaks", "corruptions", "children"].contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Value::Object(m)
}

#[test]
#[cfg_attr(
    any(prlimg_no_qemu_tools, prlimg_no_samples),
    ignore = "needs the QEMU tools and the sample images in ../shared/samples/qemu; with CI=true it runs and fails"
)]
fn qemu_img_json_objects() {
    if !needs::tools("qemu_img_json_objects", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut checks, mut infos, mut leaks, mut corrupt, mut fragmented, mut undefined) = (0, 0, 0, 0, 0, 0);
    for img in images(dir.path()) {
        let p = img.arg();
        let name = img.path.file_name().unwrap().to_string_lossy().to_string();
        let check = harness::check(&img);
        let ours = prlimg_json(&["check", &p, "--output", "json"]).unwrap_or_else(|| panic!("{name}: no JSON"));
        assert_eq!(ours["schema"], 3);
        if ours["qemu"]["outcome"] == "undefined" {
            // QEMU reads past its buffer (spec/qemu.md, UB): no prediction, no object.
            assert_eq!(ours["qemu_img_check"], Value::Null, "{name}");
            undefined += 1;
            continue;
        }
        if check.stdout.trim().is_empty() {
            // QEMU's check printed no object (the open failed, the check failed or aborted).
            assert_eq!(ours["qemu_img_check"], Value::Null, "{name}: {check:?}");
            assert_eq!(
                qemu_keys_of(&ours),
                serde_json::json!({"filename": p, "format": "parallels"}),
                "{name}"
            );
        } else {
            let qemu = check.json();
            assert_eq!(ours["qemu_img_check"], qemu, "{name}: {:?}", check.stderr);
            // The same keys at the top level, with qemu-img's meanings.
            assert_eq!(qemu_keys_of(&ours), qemu, "{name}");
            checks += 1;
            leaks += usize::from(qemu.get("leaks").is_some());
            corrupt += usize::from(qemu.get("corruptions").is_some());
            fragmented += usize::from(qemu.get("fragmented-clusters").is_some());
        }
        let info = harness::info(&img);
        let ours = prlimg_json(&["info", &p, "--output", "json"]);
        match (info.stdout.trim().is_empty(), ours) {
            (true, None) => {}
            (true, Some(ours)) => assert_eq!(ours["qemu_img_info"], Value::Null, "{name}: {info:?}"),
            (false, Some(ours)) => {
                let qemu = info.json();
                assert_eq!(ours["qemu_img_info"], qemu, "{name}");
                let mut top = qemu.as_object().unwrap().clone();
                top.remove("filename");
                top.remove("format");
                for (k, v) in top {
                    assert_eq!(ours[&k], v, "{name}: {k}");
                }
                infos += 1;
            }
            (false, None) => panic!("{name}: qemu-img info opens it, prlimg info does not"),
        }
    }
    eprintln!("compared: {checks} checks, {infos} infos ({leaks} leaking, {corrupt} corrupt, {fragmented} fragmented), {undefined} undefined");
    assert!(undefined <= 10, "{undefined} images of undefined outcome");
    assert!(checks >= 80, "{checks} completed checks compared");
    assert!(infos >= 90, "{infos} info objects compared");
    assert!(
        leaks >= 40 && corrupt >= 10 && fragmented >= 2,
        "{leaks} {corrupt} {fragmented}"
    );
}

/// What the bad-magic prediction says of QEMU without `-f`: it probes the file as raw, `info`
/// says so, and `check` exits 63 ("This image format does not support checks"); with
/// `-f parallels` both exit 1 with "Image not in Parallels format".
#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn bad_magic_without_format_is_raw() {
    if !needs::tools("bad_magic_without_format_is_raw", &["qemu-img"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (bytes, _) = ImageBuilder::new(1 << 20).to_vec().unwrap();
    let src = bytes.as_slice();
    let patch = corrupt::plan(&parallels_image::open(&src).unwrap(), DefectKind::BadMagic, 0).unwrap();
    let mut bad = bytes.clone();
    patch.apply_to_vec(&mut bad);
    let img = Img::write(dir.path(), "bad.hds", bad);
    let p = img.arg();
    let check = harness::run_on(&[&img], "qemu-img", &["check", &p]);
    assert_eq!(check.code, 63, "{check:?}");
    assert_eq!(check.stderr, ["qemu-img: This image format does not support checks"]);
    let info = harness::run_on(&[&img], "qemu-img", &["info", "--output=json", &p]);
    assert_eq!(info.code, 0, "{info:?}");
    assert_eq!(info.json()["format"], "raw");
    let with_f = harness::check(&img);
    assert_eq!(with_f.code, 1, "{with_f:?}");
    assert_eq!(
        with_f.stderr,
        [format!("qemu-img: Could not open '{p}': Image not in Parallels format")]
    );
    let ours = prlimg_json(&["check", &p, "--output", "json"]).unwrap();
    assert_eq!(ours["qemu"]["reason"], "H1");
    assert_eq!(ours["qemu_check"]["exit_code"], 1);
}
