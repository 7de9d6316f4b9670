//! `edit_bitmaps` (`prlimg bitmaps add|remove|clear`) on images QEMU wrote with data and on
//! built images with bitmaps: the data clusters are copied as they are (holes stay holes), the
//! new extension and bitmap clusters follow the data, the result checks clean, QEMU reads the
//! same guest data and the same dirty extents back, and ploop loads the bitmap with our bits.
//! Never in place unless asked; in place is a rename.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use parallels_image::raw::header::{INUSE_CLOSED, INUSE_CLOSED_V21};
use parallels_image::{
    edit::edit_bitmaps_file, edit::BitmapEdit, open, outfile::OutputError, ploop::CbtOutcome, validate, BuildError,
    Error, FileSource, GuestData, ImageBuilder, Severity, Variant,
};

use crate::corpus::{bm, KIB, MIB};
use crate::fixtures::needs;
use crate::harness::{observe, scratch};
use crate::loads::expected_words;

/// The dirty extents QEMU serves for bitmap `name` (read-only).
fn qemu_dirty(path: &Path, name: &str) -> Vec<(u64, u64)> {
    let out = Command::new("nbdinfo")
        .arg("--json")
        .arg(format!("--map=qemu:dirty-bitmap:{name}"))
        .args(["--", "[", "qemu-nbd", "-r", "-f", "parallels", "-B", name])
        .arg(path)
        .arg("]")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == 1)
        .map(|e| (e["offset"].as_u64().unwrap(), e["length"].as_u64().unwrap()))
        .collect()
}

fn qemu_same_data(a: &Path, b: &Path) {
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "parallels", "-F", "parallels"])
        .arg(a)
        .arg(b)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
}

fn assert_clean(path: &Path) {
    let src = FileSource::open(path).unwrap();
    let report = validate(&open(&src).unwrap()).unwrap();
    let bad: Vec<_> = report
        .findings
        .iter()
        .filter(|f| f.severity != Severity::Note)
        .collect();
    assert!(bad.is_empty(), "{}: {bad:?}", path.display());
}

#[test]
#[cfg_attr(
    any(prlimg_no_ploop_oracle, prlimg_no_qemu_tools),
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh) and the QEMU tools; with CI=true it runs and fails"
)]
fn bitmaps_added_to_qemu_images_read_back_in_qemu_and_ploop() {
    let test = "bitmaps_added_to_qemu_images_read_back_in_qemu_and_ploop";
    let Some(bin) = needs::ploop_drivers(test) else { return };
    if !needs::tools(test, &["qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let dir = scratch();
    for (cluster, size) in [("64K", "20M"), ("1M", "40M")] {
        let input = dir.path().join(format!("q{cluster}.hds"));
        assert!(Command::new("qemu-img")
            .args(["create", "-q", "-f", "parallels", "-o"])
            .arg(format!("cluster_size={cluster}"))
            .arg(&input)
            .arg(size)
            .status()
            .unwrap()
            .success());
        // QEMU writes its own image (no extension yet): data at the start, a hole, data later.
        assert!(Command::new("qemu-io")
            .args([
                "-f",
                "parallels",
                "-c",
                "write -P 0x11 0 70k",
                "-c",
                "write -P 0x22 9M 4k"
            ])
            .arg(&input)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap()
            .success());
        let original = std::fs::read(&input).unwrap();

        let spec = bm(0x41, 64 * KIB, &[(0, 128 * KIB), (3 * MIB, MIB), (19 * MIB + 1, 1)]);
        let name = uuid::Uuid::from_bytes(spec.id).to_string();
        let added = dir.path().join(format!("q{cluster}_add.hds"));
        let layout = edit_bitmaps_file(&input, &added, &BitmapEdit::Add(spec), Some(INUSE_CLOSED_V21), false).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), original, "the input is never changed");
        // The data area is copied byte for byte, except the header's inuse and ext_off.
        let out = std::fs::read(&added).unwrap();
        assert_eq!(out[..44], original[..44]);
        assert_eq!(out[48..56], original[48..56]);
        assert_eq!(out[64..original.len()], original[64..]);
        assert_eq!(
            layout.ext_offset,
            Some(original.len() as u64),
            "the extension follows the data"
        );
        assert_eq!(
            u64::from_le_bytes(out[56..64].try_into().unwrap()) * 512,
            original.len() as u64
        );
        // Holes stay holes: the copy allocates at most the input's blocks and the new clusters.
        let cs = if cluster == "1M" { MIB } else { 64 * KIB };
        let (in_blocks, out_blocks) = (
            std::fs::metadata(&input).unwrap().blocks(),
            std::fs::metadata(&added).unwrap().blocks(),
        );
        assert!(
            out_blocks <= in_blocks + 2 * cs / 512,
            "{out_blocks} blocks vs {in_blocks}"
        );
        assert_clean(&added);

        qemu_same_data(&input, &added);
        let dirty = qemu_dirty(&added, &name);
        assert_eq!(dirty, vec![(0, 128 * KIB), (3 * MIB, MIB), (19 * MIB, 64 * KIB)]);

        let o = observe(&bin, &added);
        assert_eq!(o.cbt.outcome, CbtOutcome::Loads);
        assert_eq!(o.cbt.bitmap.as_deref(), Some(name.as_str()));
        assert_eq!(o.check.rc, Some(0));
        let src = FileSource::open(&added).unwrap();
        assert_eq!(o.cbt_words, expected_words(&open(&src).unwrap()));

        // Clearing with inuse 0 gives back QEMU's file exactly.
        let cleared = dir.path().join(format!("q{cluster}_clear.hds"));
        edit_bitmaps_file(&added, &cleared, &BitmapEdit::Clear, Some(INUSE_CLOSED), false).unwrap();
        assert_eq!(std::fs::read(&cleared).unwrap(), original);
    }
}

#[test]
#[cfg_attr(
    any(prlimg_no_ploop_oracle, prlimg_no_qemu_tools),
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh) and the QEMU tools; with CI=true it runs and fails"
)]
fn remove_keeps_the_other_bitmaps_and_in_place_is_atomic() {
    let test = "remove_keeps_the_other_bitmaps_and_in_place_is_atomic";
    let Some(bin) = needs::ploop_drivers(test) else { return };
    if !needs::tools(test, &["qemu-img", "qemu-io", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let dir = scratch();
    for variant in [Variant::V1, Variant::V2] {
        let (a, b, c) = (
            bm(1, 64 * KIB, &[(0, 1), (5 * MIB, 300_000)]),
            bm(2, 512, &[(MIB, 4096)]),
            bm(3, 128 * KIB, &[(8 * MIB - 1, 1)]),
        );
        let bytes = ImageBuilder::new(8 * MIB)
            .variant(variant)
            .cluster_size(64 * KIB)
            .inuse(INUSE_CLOSED_V21)
            .data(0, GuestData::Fill { len: 4096, byte: 0xaa })
            .data(
                6 * MIB,
                GuestData::Fill {
                    len: 70_000,
                    byte: 0xbb,
                },
            )
            .bitmap(a.clone())
            .bitmap(b.clone())
            .bitmap(c.clone())
            .to_vec()
            .unwrap()
            .0;
        let input = dir.path().join(format!("{variant:?}.hds"));
        std::fs::write(&input, &bytes).unwrap();
        let out = dir.path().join(format!("{variant:?}_rm.hds"));
        edit_bitmaps_file(&input, &out, &BitmapEdit::Remove(c.id), None, false).unwrap();
        assert_eq!(std::fs::read(&input).unwrap(), bytes);
        assert_clean(&out);
        qemu_same_data(&input, &out);
        let src = FileSource::open(&out).unwrap();
        let image = open(&src).unwrap();
        let names: Vec<String> = image.bitmaps().iter().map(|b| b.name()).collect();
        let name = |s: &parallels_image::BitmapSpec| uuid::Uuid::from_bytes(s.id).to_string();
        assert_eq!(names, vec![name(&a), name(&b)]);
        assert_eq!(
            qemu_dirty(&out, &name(&a)),
            vec![(0, 64 * KIB), (5 * MIB, 5 * 64 * KIB)]
        );
        assert_eq!(qemu_dirty(&out, &name(&b)), vec![(MIB, 4096)]);
        // ploop keeps the last one left.
        let o = observe(&bin, &out);
        assert_eq!(o.cbt.bitmap, Some(name(&b)));
        assert_eq!(o.cbt_words, expected_words(&image));

        // Removing a bitmap that is not there, or writing over an existing file, is refused
        // and leaves every file as it was.
        let before = std::fs::read(&out).unwrap();
        match edit_bitmaps_file(&input, &out, &BitmapEdit::Remove(c.id), None, false) {
            Err(Error::Output(OutputError::Exists { path })) => assert_eq!(path, out),
            other => panic!("{other:?}"),
        }
        match edit_bitmaps_file(&out, &out, &BitmapEdit::Remove(c.id), None, false) {
            Err(Error::Build(e)) => assert_eq!(e, BuildError::NoSuchBitmap { name: name(&c) }),
            other => panic!("{other:?}"),
        }
        match edit_bitmaps_file(&out, &out, &BitmapEdit::Add(a.clone()), None, false) {
            Err(Error::Build(e)) => assert_eq!(e, BuildError::BitmapExists { name: name(&a) }),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read(&out).unwrap(), before);

        // In place: the same path, replaced by a rename (a new inode), no temporary left.
        let inode = std::fs::metadata(&out).unwrap().ino();
        edit_bitmaps_file(&out, &out, &BitmapEdit::Add(c.clone()), None, false).unwrap();
        assert_ne!(std::fs::metadata(&out).unwrap().ino(), inode);
        assert_clean(&out);
        assert_eq!(qemu_dirty(&out, &name(&c)), vec![(8 * MIB - 128 * KIB, 128 * KIB)]);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".prlimg-"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
