//! The first lines of `prlimg check` (issue 29, item 7): one sentence per other program saying
//! whether the image works there and why not, before "No errors were found on the image." and
//! the detail. Golden outputs of the README's demo, the v1 recipe of `examples/recipes/` and an
//! image with a bad magic.

use std::path::Path;
use std::process::{Command, Output};

#[path = "fixtures/readme.rs"]
mod readme;

const BIN: &str = env!("CARGO_BIN_EXE_prlimg");

fn prlimg(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run prlimg")
}

fn check(dir: &Path, image: &str, code: i32) -> String {
    let out = prlimg(dir, &["check", image]);
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The README's main job: clean by the format's rules, but qemu-img check exits 3 and a
/// read-write open by QEMU loses the bitmaps; ploop takes it. The first lines say so.
#[test]
fn readme_demo_says_what_qemu_and_ploop_do_first() {
    let dir = tempfile::tempdir().unwrap();
    let args = readme::demo_create_args();
    let out = prlimg(dir.path(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        check(dir.path(), "demo.hds", 0),
        "QEMU 10: opens it with its 2 bitmaps, but `qemu-img check` exits 3 with 3 leaked clusters (it counts \
         the extension and bitmap clusters as leaked); a read-write open drops the extension, losing the bitmaps.
ploop: works: `ploop check` passes, and its CBT loader skips the bitmaps (inuse is 0).

No errors were found on the image.
5/65536 = 0.01% allocated, 0.00% fragmented, 0.00% compressed clusters
Image end offset: 9437184
QEMU 10: opens the image with bitmaps e4f2eed0-37fe-4539-b50b-85d2e7fd235f, bb43d723-3453-4528-ba29-9b2ed359012b
qemu-img check: exit 3 (0 corruptions, 3 leaked clusters)
    ERROR space leaked at the end of the image 3145728
QEMU 10 read-write: ignores the Format Extension, which is lost with its bitmaps; cuts the file at byte 6291456
ploop: check exit 0; CBT ignores the extension (inuse is 0)
libphdi 20260902: refuses (libphdi_sparse_image_header_read_data: unsupported signature); media size 68719476736 bytes; top {5fbaabe3-6958-40ff-92a7-860e329aab41}
dissect.hypervisor 3.21: opens and reads the disk's bytes; media size 68719476736 bytes; top {5fbaabe3-6958-40ff-92a7-860e329aab41}
"
    );
}

/// The v1 recipe: 4 KiB clusters, which ploop does not open.
#[test]
fn v1_recipe_says_ploop_cannot_open_its_cluster_size() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/recipes/v1-two-bitmaps.toml");
    let out = prlimg(dir.path(), &["create", "v1.hds", "--recipe", recipe.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = check(dir.path(), "v1.hds", 0);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..4],
        [
            "QEMU 10: opens it with its 2 bitmaps, but `qemu-img check` exits 3 with 1 leaked cluster (it counts the \
             extension and bitmap clusters as leaked); a read-write open drops the extension, losing the bitmaps.",
            "ploop: does not take it: `ploop check` exits 11 (Wrong cluster size 8 in image v1.hds): a cluster size \
             ploop cannot open: 4 KiB, where ploop takes a power of two from 32 KiB to 64 MiB.",
            "",
            "No errors were found on the image.",
        ],
        "{text}"
    );
    // The detail ends with ploop's line, then the other readers' (tests/readers holds those
    // against the real libphdi and dissect.hypervisor).
    assert_eq!(
        lines[lines.len() - 3..],
        [
            "ploop: check exit 11 (Wrong cluster size 8 in image v1.hds); CBT refuses the extension (rc 4: Invalid image header v1.hds)",
            "libphdi 20260902: refuses (libphdi_disk_descriptor_xml_file_get_storage_data: unsupported block size: 8)",
            "dissect.hypervisor 3.21: opens and reads the disk's bytes; media size 104857600 bytes; top {5fbaabe3-6958-40ff-92a7-860e329aab41}",
        ],
        "{text}"
    );
}

/// A bad magic: QEMU refuses it with -f parallels; without -f it probes the file as raw (the
/// real tool's outcome is tests/qemu's `bad_magic_without_format_is_raw`).
#[test]
fn bad_magic_prediction_says_it_assumes_format_parallels() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["create", "good.hds", "--size", "1M"][..],
        &["corrupt", "good.hds", "bad.hds", "--defect", "bad-magic"],
    ] {
        let out = prlimg(dir.path(), args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = check(dir.path(), "bad.hds", 2);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[..3],
        [
            "QEMU 10: does not open it (Image not in Parallels format), with -f parallels; without -f, qemu-img \
             probes the file as raw and `qemu-img check` exits 63 (This image format does not support checks).",
            "ploop: does not take it: `ploop check` exits 11 (Wrong signature in image bad.hds): the magic is not a \
             Parallels one.",
            "",
        ],
        "{text}"
    );
    let qemu = lines.iter().position(|l| l.starts_with("QEMU 10: rejects")).unwrap();
    assert_eq!(
        lines[qemu..qemu + 4],
        [
            "QEMU 10: rejects the image [H1]: Image not in Parallels format",
            "qemu-img check: cannot open the image, as qemu-img info does (exit 1)",
            "    (with -f parallels; without -f, qemu-img probes the file as raw: `qemu-img check` exits 63, This \
             image format does not support checks)",
            "QEMU 10 read-write: refuses the image [H1]",
        ]
    );
}

/// A bundle's first lines: what QEMU 10 does with it (it opens no bundle), then one sentence
/// per reader the report predicts, libphdi and dissect.hypervisor, with why it refuses; then a
/// blank line and the findings. On a clean bundle, one with a descriptor defect libphdi refuses
/// (a non-zero Padding), one both readers refuse (a descriptor that is not XML) and one missing
/// its image file.
#[test]
fn a_bundle_check_says_what_qemu_and_the_readers_do_first() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = prlimg(
        d,
        &["create", "b.hdd", "--bundle", "--size", "8M", "--data", "0:1M:0xaa"],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for defect in ["padding-nonzero", "descriptor-not-xml", "missing-file"] {
        let out = prlimg(d, &["corrupt", "b.hdd", &format!("{defect}.hdd"), "--defect", defect]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    const QEMU: &str = "QEMU 10: does not open a bundle: with -f parallels it refuses DiskDescriptor.xml (Image not \
                        in Parallels format), and without -f it reads the XML as a raw disk.";
    const DISSECT_WORKS: &str = "dissect.hypervisor 3.21: works: it opens the bundle and reads the guest's bytes.";
    const IMAGE: &str = "b.hdd.0.{5fbaabe3-6958-40ff-92a7-860e329aab41}.hds";
    let abs = d.canonicalize().unwrap();
    let cases: [(&str, i32, [String; 5]); 4] = [
        (
            "b.hdd",
            0,
            [
                QEMU.into(),
                "libphdi 20260902: does not open it (libphdi_sparse_image_header_read_data: unsupported signature): \
                 it reads only images whose magic is \"WithoutFreeSpace\" (a v1 header)."
                    .into(),
                DISSECT_WORKS.into(),
                String::new(),
                "No errors were found in the bundle.".into(),
            ],
        ),
        (
            "padding-nonzero.hdd",
            0,
            [
                QEMU.into(),
                "libphdi 20260902: does not open it (libphdi_disk_descriptor_xml_file_get_disk_parameters: \
                 unsupported padding: 1): it takes only Padding 0."
                    .into(),
                DISSECT_WORKS.into(),
                String::new(),
                "Non-canonical D5 in DiskDescriptor.xml: Disk_Parameters/Padding is 1, expected 0".into(),
            ],
        ),
        (
            "descriptor-not-xml.hdd",
            2,
            [
                QEMU.into(),
                "libphdi 20260902: does not open it (libphdi_disk_descriptor_xml_file_read_data: unable to parse \
                 XML): the descriptor is not XML it can parse."
                    .into(),
                "dissect.hypervisor 3.21: does not open it (ParseError): the descriptor is not XML it can parse."
                    .into(),
                String::new(),
                "ERROR D1 in DiskDescriptor.xml: DiskDescriptor.xml is not well-formed XML at line 1, column 1: the \
                 root node was opened but never closed"
                    .into(),
            ],
        ),
        (
            "missing-file.hdd",
            2,
            [
                QEMU.into(),
                format!(
                    "libphdi 20260902: does not open it (libcfile_file_open_with_error_code: no such file: \
                     {}/missing-file.hdd/{IMAGE}): an image's file is missing.",
                    abs.display()
                ),
                format!(
                    "dissect.hypervisor 3.21: does not open it (FileNotFoundError: [Errno 2] No such file or \
                     directory: 'missing-file.hdd/{IMAGE}'): an image's file is missing."
                ),
                String::new(),
                format!(
                    "ERROR D11 in DiskDescriptor.xml: Storage[0]/Image[0]/File \"{IMAGE}\": No such file or \
                     directory, expected a regular file"
                ),
            ],
        ),
    ];
    for (bundle, code, expected) in cases {
        let text = check(d, bundle, code);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..5], expected, "{bundle}:\n{text}");
    }
}
