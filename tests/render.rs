//! In-process tests of the library's report renderers (`parallels_image::report`): the exact
//! text and JSON `prlimg check` and `prlimg info` print, without a process (as gimli-rs/object's
//! readobj tests do). The images are built by the library as `prlimg create` builds them;
//! expected values are worked out by hand from the layout rules (header and BAT at 0, data area
//! at the end of the BAT rounded up to a cluster, data clusters in guest order, then the
//! extension cluster, then bitmap clusters). What needs a process (exit statuses, arguments,
//! pipes, terminals) stays in `tests/cli.rs`.

use std::fs;
use std::path::{Path, PathBuf};

use parallels_image::report::{allocated_size, check_path_with, gather, CheckOptions, PathReport};
use parallels_image::{BitmapSpec, FileSource, GuestData, Image, ImageBuilder, RuleMode};
use serde_json::{json, Value};

const UUID_A: &str = "11111111-2222-3333-4444-555555555555";

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `prlimg create a.hds --size 64M --cluster-size 64K --data 0:100K:0xaa --bitmap
/// UUID_A:64K:0+128K,1M+1`, by the library.
fn image_a(dir: &Path) -> PathBuf {
    let p = dir.join("a.hds");
    ImageBuilder::new(64 << 20)
        .cluster_size(64 << 10)
        .data(
            0,
            GuestData::Fill {
                len: 100 << 10,
                byte: 0xaa,
            },
        )
        .bitmap(BitmapSpec {
            id: *uuid::Uuid::parse_str(UUID_A).unwrap().as_bytes(),
            granularity: 64 << 10,
            extents: vec![(0, 128 << 10), (1 << 20, 1)],
        })
        .create_file(&p, false)
        .unwrap();
    p
}

fn patch(path: &Path, offset: usize, bytes: &[u8]) {
    let mut data = fs::read(path).unwrap();
    data[offset..offset + bytes.len()].copy_from_slice(bytes);
    fs::write(path, data).unwrap();
}

fn md5_of(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(bytes).into()
}

/// `prlimg check PATH` (with `--lenient` for `RuleMode::Lenient`): the report and its exit status.
fn checked(path: &Path, mode: RuleMode) -> (u8, PathReport) {
    let report = check_path_with(path, &CheckOptions::new(mode)).unwrap();
    (report.verdict().exit_code(), report)
}

/// `prlimg check PATH --output json`: the exit status and the JSON.
fn check_json(path: &Path, mode: RuleMode) -> (u8, Value) {
    let (code, report) = checked(path, mode);
    let mut out = Vec::new();
    report.write_json(&mut out).unwrap();
    (code, serde_json::from_slice(&out).unwrap())
}

/// `prlimg check PATH`: the exit status and the text.
fn check_human_code(path: &Path) -> (u8, String) {
    let (code, report) = checked(path, RuleMode::Strict);
    let mut out = Vec::new();
    report.write_human(&mut out).unwrap();
    (code, String::from_utf8(out).unwrap())
}

fn check_human(path: &Path) -> String {
    check_human_code(path).1
}

/// `prlimg info PATH`'s report.
fn info(path: &Path) -> parallels_image::report::Info {
    let source = FileSource::open(path).unwrap();
    let image = Image::parse_compact(&source, RuleMode::Strict).unwrap();
    gather(&image, s(path).to_string(), allocated_size(path))
}

/// `prlimg info PATH --output json`.
fn info_json(path: &Path) -> Value {
    let mut out = Vec::new();
    info(path).write_json(&mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

/// `prlimg info PATH`.
fn info_human(path: &Path) -> String {
    let mut out = Vec::new();
    info(path).write_human(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// `prlimg check`'s human report after its first lines (a sentence each for QEMU 10 and ploop,
/// then a blank line; `tests/headline.rs` holds them exactly).
fn after_headline(text: &str) -> &str {
    let lines: Vec<&str> = text.splitn(4, '\n').collect();
    assert!(
        lines[0].starts_with("QEMU 10: ") && lines[1].starts_with("ploop: ") && lines[2].is_empty(),
        "{text}"
    );
    lines[3]
}

#[test]
fn info_json_reports_every_header_field() {
    let dir = tmp();
    let a = image_a(dir.path());
    let v = info_json(&a);
    // What `qemu-img info -f parallels --output json` prints (QEMU 10.0.2).
    let actual = std::os::unix::fs::MetadataExt::blocks(&fs::metadata(&a).unwrap()) * 512;
    let qemu = json!({
        "children": [{"name": "file", "info": {
            "children": [], "virtual-size": 327680, "filename": s(&a), "format": "file",
            "actual-size": actual, "format-specific": {"type": "file", "data": {}}, "dirty-flag": false
        }}],
        "virtual-size": 67108864, "filename": s(&a), "format": "parallels", "actual-size": actual
    });
    assert_eq!(
        v,
        json!({
            "schema": 3,
            "filename": s(&a),
            "format": "parallels",
            "file_size": 327680,
            "variant": "v2",
            "magic": "WithouFreSpacExt",
            "version": 2,
            "heads": 16,
            "cylinders": 256,
            "tracks": 128,
            "cluster_size": 65536,
            "bat_entries": 1024,
            "nb_sectors": 131072,
            "virtual_size": 67108864,
            "inuse": 0,
            "inuse_state": "closed",
            "data_off": 128,
            "data_offset": 65536,
            "flags": 0,
            "flag_names": [],
            "ext_off": 384,
            "ext_offset": 196608,
            "allocated_clusters": 2,
            "extension": true,
            "bitmaps": [{
                "name": UUID_A,
                "feature": 0,
                "granularity": 65536,
                "dirty_bytes": 196608,
                "l1_size": 1,
                "error": null
            }],
            "warnings": [],
            "children": qemu["children"],
            "virtual-size": 67108864,
            "actual-size": actual,
            "qemu_img_info": qemu
        })
    );
}

#[test]
fn info_human_shows_units() {
    let dir = tmp();
    let a = image_a(dir.path());
    let text = info_human(&a);
    for line in [
        "magic: WithouFreSpacExt (v2)",
        "tracks: 128 sectors",
        "cluster size: 65536 bytes (64 KiB)",
        "nb_sectors: 131072 sectors",
        "virtual size: 64 MiB (67108864 bytes)",
        "inuse: 0x00000000 (closed)",
        "data_off: 128 sectors (data starts at byte 65536)",
        "ext_off: 384 sectors (byte 196608)",
        "allocated clusters: 2 of 1024",
        "extension: present",
        "    11111111-2222-3333-4444-555555555555: granularity 65536 bytes (64 KiB), 196608 dirty bytes (192 KiB), l1_size 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing line {line:?} in:\n{text}");
    }
}

#[test]
fn check_clean_image_exit_0_with_statistics_and_qemu_prediction() {
    let dir = tmp();
    let a = image_a(dir.path());
    let (code, v) = check_json(&a, RuleMode::Strict);
    assert_eq!(code, 0);
    assert_eq!(v["schema"], 3);
    assert_eq!(v["filename"], s(&a));
    assert_eq!(v["format"], "parallels");
    assert_eq!(v["result"], "clean");
    assert_eq!(v["mode"], "strict");
    assert_eq!(v["findings"], json!([]));
    assert_eq!(v["rules"], json!([]));
    assert_eq!(v["corruption_findings"], 0);
    assert_eq!(v["leak_findings"], 0);
    // qemu-img check's own object: the extension and the bitmap cluster are leaks to it.
    let qemu = json!({
        "image-end-offset": 196608, "total-clusters": 1024, "check-errors": 0, "leaks": 2,
        "allocated-clusters": 2, "filename": s(&a), "format": "parallels"
    });
    assert_eq!(v["qemu_img_check"], qemu);
    for (k, want) in qemu.as_object().unwrap() {
        assert_eq!(&v[k], want, "{k}");
    }
    assert_eq!(v.get("corruptions"), None);
    assert_eq!(v["total_clusters"], 1024);
    assert_eq!(v["allocated_clusters"], 2);
    assert_eq!(v["fragmented_clusters"], 0);
    assert_eq!(v["image_end_offset"], 327680);
    assert_eq!(v["file_size"], 327680);
    assert_eq!(
        v["qemu"],
        json!({"outcome": "opens", "exit_code": 0, "message": null, "bitmaps": [UUID_A], "reason": null, "signal": null, "version": "10.0"})
    );
    assert_eq!(v["qemu_check"]["outcome"], "completes");
    // QEMU counts the extension and bitmap clusters after the data as leaked.
    let leak_line = "ERROR space leaked at the end of the image 131072";
    assert_eq!(v["qemu_check"]["errors"], json!([leak_line]));
    assert_eq!(v["qemu_check"]["errors_omitted"], 0);
    let read_write = "ignores the Format Extension, which is lost with its bitmaps; cuts the file at byte 196608";
    assert_eq!(v["qemu_read_write"], read_write);
    // inuse 0: ploop skips the extension; its check passes; a mount leaves the file alone.
    assert_eq!(
        v["ploop"],
        json!({
            "check": {"rc": 0, "messages": [], "messages_omitted": 0},
            "cbt": {"outcome": "ignores", "bitmap": null, "rc": 0, "message": null},
            "mount": {"rc": 0, "effect": "unchanged", "file_size": 327680, "ext_off": 384, "inuse": 0, "message": null}
        })
    );

    let text = check_human(&a);
    let text = after_headline(&text);
    assert!(text.starts_with("No errors were found on the image.\n"), "{text}");
    assert!(text.contains("\n2/1024 = 0.20% allocated, 0.00% fragmented, 0.00% compressed clusters\n"));
    assert!(text.contains("\nImage end offset: 327680\n"));
    let prediction = format!(
        "\nQEMU 10: opens the image with bitmaps {UUID_A}\nqemu-img check: exit 3 (0 corruptions, 2 leaked clusters)\n    {leak_line}\nQEMU 10 read-write: {read_write}\nploop: check exit 0; CBT ignores the extension (inuse is 0)\n\
         libphdi 20260902: refuses (libphdi_disk_descriptor_xml_file_get_storage_data: unsupported block size: 128)\n\
         dissect.hypervisor 3.21: opens and reads the disk's bytes; media size 67108864 bytes; \
         top {{5fbaabe3-6958-40ff-92a7-860e329aab41}}\n"
    );
    assert!(text.ends_with(&prediction), "{text}");
}

#[test]
fn check_leak_only_exit_3() {
    let dir = tmp();
    let a = image_a(dir.path());
    let mut bytes = fs::read(&a).unwrap();
    bytes.extend_from_slice(&[0x55; 4096]);
    fs::write(&a, bytes).unwrap();
    let (code, v) = check_json(&a, RuleMode::Strict);
    assert_eq!(code, 3);
    assert_eq!(v["result"], "leaks");
    assert_eq!(v["leak_findings"], 1);
    assert_eq!(v["leaked_bytes"], 4096);
    // qemu-img's `leaks` counts clusters: the extension, the bitmap cluster, the tail.
    assert_eq!(v["leaks"], 3);
    assert_eq!(v["qemu_img_check"]["leaks"], 3);
    assert_eq!(v["image_end_offset"], 327680);
    assert_eq!(v["file_size"], 331776);
    assert_eq!(
        v["findings"],
        json!([{
            "code": "R20",
            "severity": "leak",
            "location": "file @327680",
            "where": {"kind": "file", "offset": 327680},
            "message": "4096 bytes at 327680 after the last referenced cluster are leaked"
        }])
    );
    let text = check_human(&a);
    let text = after_headline(&text);
    assert!(
        text.starts_with(
            "Leaked R20 at file @327680: 4096 bytes at 327680 after the last referenced cluster are leaked\n\n\
             1 leak (4096 bytes) was found on the image.\nThis means waste of disk space, but no harm to data.\n"
        ),
        "{text}"
    );
}

#[test]
fn check_corruption_exit_2() {
    let dir = tmp();
    let a = image_a(dir.path());
    patch(&a, 44, b"Ynot");
    let (code, v) = check_json(&a, RuleMode::Strict);
    assert_eq!(code, 2);
    assert_eq!(v["result"], "corrupt");
    assert_eq!(v["corruption_findings"], 1);
    assert_eq!(v["corruptions"], 1);
    assert_eq!(v["rules"], json!(["R7"]));
    assert_eq!(
        v["findings"][0],
        json!({
            "code": "R7",
            "severity": "corruption",
            "location": "header.inuse @44",
            "where": {"kind": "header", "field": "inuse", "offset": 44},
            "message": "header inuse at byte 44 is 0x746f6e59 (\"Ynot\"): the image was not closed cleanly"
        })
    );
    let text = check_human(&a);
    let text = after_headline(&text);
    assert!(
        text.starts_with("ERROR R7 at header.inuse @44: header inuse at byte 44"),
        "{text}"
    );
    assert!(text.contains("\n1 error was found on the image.\n"), "{text}");
}

#[test]
fn check_unparsable_header_is_the_single_finding() {
    let dir = tmp();
    let a = image_a(dir.path());
    patch(&a, 0, b"NotParallelsDisk");
    let (code, v) = check_json(&a, RuleMode::Strict);
    assert_eq!(code, 2);
    assert_eq!(v["rules"], json!(["R1"]));
    assert_eq!(v["findings"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["findings"][0]["where"],
        json!({"kind": "header", "field": "magic", "offset": 0})
    );
    assert_eq!(v["total_clusters"], Value::Null);
    assert_eq!(v["image_end_offset"], Value::Null);
    assert_eq!(v["qemu"]["outcome"], "rejects");
    assert_eq!(v["qemu"]["message"], "Image not in Parallels format");
}

#[test]
fn check_lenient_lowers_unknown_features_to_notes() {
    // An unknown feature magic in the first record (feature #0 at byte 24 of the extension).
    let dir = tmp();
    let a = image_a(dir.path());
    let ext = 196608usize;
    let mut bytes = fs::read(&a).unwrap();
    bytes[ext + 24..ext + 32].copy_from_slice(&0x1234_5678u64.to_le_bytes());
    // Keep the checksum right: MD5 of bytes 24.. of the cluster.
    let digest = md5_of(&bytes[ext + 24..ext + 65536]);
    bytes[ext + 8..ext + 24].copy_from_slice(&digest);
    fs::write(&a, &bytes).unwrap();
    let (code, strict) = check_json(&a, RuleMode::Strict);
    assert_eq!(code, 2);
    // The bitmap cluster is no longer referenced by a bitmap: it is leaked space too.
    assert_eq!(strict["rules"], json!(["R29", "R20"]));
    let (lenient, v) = check_json(&a, RuleMode::Lenient);
    assert_eq!(v["mode"], "lenient");
    assert_eq!(v["findings"][0]["severity"], "note");
    assert_eq!(v["notes"], 1);
    assert_eq!(v["corruption_findings"], 0);
    assert_eq!(lenient, 3, "{v}");
}

#[test]
fn info_warns_when_the_extension_would_be_refused() {
    let dir = tmp();
    let a = image_a(dir.path());
    let clean = info_human(&a);
    assert!(!clean.contains("warning"), "{clean}");
    assert_eq!(info_json(&a)["warnings"], json!([]));
    // The extension cluster is at 192 KiB; its checksum is bytes 8..16 of it.
    patch(&a, 196608 + 8, &[0xde, 0xad, 0xbe, 0xef]);
    let qemu = "QEMU 10 refuses this image: Wrong checksum in Format Extension header. Format extension is corrupted.";
    let ploop = "ploop does not load the bitmaps of this extension (prlimg check says why)";
    let warned = |a: &Path| {
        let text = info_human(a);
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        let at = lines.iter().position(|l| l == "extension: present").unwrap();
        let shown: Vec<String> = lines[at + 1..]
            .iter()
            .take_while(|l| l.starts_with("warning: "))
            .cloned()
            .collect();
        let json = info_json(a)["warnings"].clone();
        (shown, json)
    };
    // inuse 0: ploop skips the extension without reading it, so only QEMU refuses.
    assert_eq!(warned(&a), (vec![format!("warning: {qemu}")], json!([qemu])));
    // inuse "v2.1": ploop reads the extension and refuses its checksum too.
    patch(&a, 44, b"v2.1");
    assert_eq!(
        warned(&a),
        (
            vec![format!("warning: {qemu}"), format!("warning: {ploop}")],
            json!([qemu, ploop])
        )
    );
}

#[test]
fn readers_are_not_predicted_for_an_image_of_more_than_a_mebi_clusters() {
    // An empty image of 2^20 + 1 clusters of 512 bytes: check names why the libphdi and
    // dissect blocks are missing (their prediction reads the guest through a map of every
    // allocated cluster), and the JSON has them as null.
    let dir = tmp();
    let path = dir.path().join("big.hds");
    let clusters: u64 = (1 << 20) + 1;
    ImageBuilder::new(clusters * 512)
        .cluster_size(512)
        .create_file(&path, false)
        .unwrap();
    let (code, text) = check_human_code(&path);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "libphdi, dissect.hypervisor: not predicted for an image of {clusters} clusters (more than 1048576: the readers' models hold the whole table, as the readers do)\n"
        )),
        "{text}"
    );
    let (_, v) = check_json(&path, RuleMode::Strict);
    assert_eq!(v["libphdi"], Value::Null);
    assert_eq!(v["dissect"], Value::Null);
    assert!(v.as_object().unwrap().contains_key("libphdi"));
    // One cluster fewer than the limit is predicted.
    let small = dir.path().join("small.hds");
    ImageBuilder::new((1u64 << 20) * 512)
        .cluster_size(512)
        .create_file(&small, false)
        .unwrap();
    let (_, v) = check_json(&small, RuleMode::Strict);
    assert_eq!(v["dissect"]["outcome"], "opens", "{v}");
}

/// Issue 29 item 6: one of a thing reads in the singular ("1 leaked cluster", "1 leak", "1
/// corruption"), and ploop's CBT line of an image without an extension is a sentence ("CBT has
/// no extension to load").
#[test]
fn one_of_a_thing_is_singular_and_the_cbt_line_reads() {
    let dir = tmp();
    let path = dir.path().join("leak.hds");
    ImageBuilder::new(1 << 20).create_file(&path, false).unwrap();
    // One cluster (1 MiB) after the last referenced one: one leak.
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len + (1 << 20))
        .unwrap();
    let (code, text) = check_human_code(&path);
    assert_eq!(code, 3, "{text}");
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with("libphdi") && !l.starts_with("dissect"))
        .collect();
    assert_eq!(
        lines,
        [
            "QEMU 10: opens it, but `qemu-img check` exits 3 with 1 leaked cluster (unreferenced space); a read-write \
             open cuts the file short.",
            "ploop: works: `ploop check` passes.",
            "",
            &format!("Leaked R20 at file @{len}: 1048576 bytes at {len} after the last referenced cluster are leaked"),
            "",
            "1 leak (1048576 bytes) was found on the image.",
            "This means waste of disk space, but no harm to data.",
            &format!("Image end offset: {len}"),
            "QEMU 10: opens the image",
            "qemu-img check: exit 3 (0 corruptions, 1 leaked cluster)",
            &format!("    ERROR space leaked at the end of the image {len}"),
            &format!("QEMU 10 read-write: cuts the file at byte {len}"),
            "ploop: check exit 0; CBT has no extension to load",
        ],
        "{text}"
    );
}
