//! `prlimg convert`, `map`, `info`, `check`, `create --bundle` and `corrupt` on bundles, run as
//! a process.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Output};

use parallels_image::{bundle::Bundle, bundle::BundleDefect, FileSource, Image, RuleMode};

use crate::common::*;

/// Runs `prlimg ARGS` (paths or strings), capturing its output (also for `convert.rs`).
pub(crate) fn prlimg(args: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_prlimg"));
    for a in args {
        c.arg(a);
    }
    c.output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stdout)))
}

#[test]
fn convert_bundle_snapshots_to_sparse_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let top = tmp.path().join("top.raw");
    let o = prlimg(&[&"convert", &dir, &top]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(fs::read(&top).unwrap() == chain_expected(3));
    // Sparse: the 1 MiB of unallocated guest space [1M+64K, 2M) is a hole.
    let used = fs::metadata(&top).unwrap().blocks() * 512;
    assert!(used <= 3 * MIB, "{used} bytes on disk");
    // An older snapshot, with and without braces, through the XML.
    let xml = dir.join("DiskDescriptor.xml");
    for g in [
        format!("{{{}}}", guid(2).hyphenated()),
        guid(2).hyphenated().to_string().to_uppercase(),
    ] {
        let out = tmp.path().join("mid.raw");
        let o = prlimg(&[&"convert", &"--force", &"--snapshot", &g, &xml, &out]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(fs::read(&out).unwrap() == chain_expected(2));
    }
    // An unknown snapshot.
    let o = prlimg(&[
        &"convert",
        &"--snapshot",
        &guid(9).to_string(),
        &dir,
        &tmp.path().join("x.raw"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains(&format!("no snapshot {{{}}}", guid(9).hyphenated())),
        "{}",
        stderr(&o)
    );
    assert!(!tmp.path().join("x.raw").exists());
}

#[test]
fn convert_never_overwrites_without_force() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let out = tmp.path().join("o.raw");
    fs::write(&out, b"keep me").unwrap();
    let o = prlimg(&[&"convert", &dir, &out]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "prlimg: {}: already exists (use --force to replace it)\n",
            out.display()
        )
    );
    assert_eq!(fs::read(&out).unwrap(), b"keep me");
    let o = prlimg(&[&"convert", &"--force", &dir, &out]);
    assert_eq!(o.status.code(), Some(0));
    assert!(fs::read(&out).unwrap() == chain_expected(3));
    // A bundle output is refused the same way, and nothing is left beside it.
    let o = prlimg(&[&"convert", &out, &dir]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).ends_with("already exists (use --force to replace it)\n"),
        "{}",
        stderr(&o)
    );
    let left: Vec<_> = fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");
}

#[test]
fn convert_raw_to_hds_and_bundle_keeps_zero_clusters_unallocated() {
    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("in.raw");
    let mut bytes = vec![0u8; (4 * MIB + 4096) as usize];
    bytes[100] = 1; // cluster 0
    bytes[(3 * MIB + 5) as usize] = 2; // cluster 3
    bytes[(4 * MIB + 4095) as usize] = 3; // the last, partial cluster
    fs::write(&raw, &bytes).unwrap();
    let hds = tmp.path().join("out.hds");
    let o = prlimg(&[&"convert", &"--cluster-size", &"1M", &raw, &hds]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let src = FileSource::open(&hds).unwrap();
    let image = Image::parse(&src).unwrap();
    assert!(parallels_image::validate(&image).unwrap().findings.is_empty());
    let allocated: Vec<u32> = image.allocated_entries().map(|(i, _)| i).collect();
    assert_eq!(allocated, [0, 3, 4]);
    assert_eq!(fs::metadata(&hds).unwrap().len(), 4 * MIB);
    let _ = Image::parse_compact(&src, RuleMode::Strict).unwrap();
    // Back to raw: the same bytes (the size rounds up to whole sectors, here already whole).
    let back = tmp.path().join("back.raw");
    assert_eq!(prlimg(&[&"convert", &hds, &back]).status.code(), Some(0));
    assert!(fs::read(&back).unwrap() == bytes);

    // Into a new bundle.
    let dir = tmp.path().join("new.hdd");
    let o = prlimg(&[&"convert", &"--cluster-size", &"64K", &raw, &dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bundle = Bundle::open(&dir).unwrap();
    assert_eq!(bundle.validate().findings, vec![]);
    let disk = bundle.disk(None).unwrap();
    assert!(read_all(&disk) == bytes);
    assert_eq!(
        disk.extents()
            .iter()
            .filter(|e| e.data.is_some())
            .map(|e| e.length)
            .sum::<u64>(),
        2 * (64 << 10) + 4096
    );
}

#[test]
fn map_json_is_qemu_shaped() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().split_at(vec![2 * MIB]).create(&dir, false).unwrap();
    let o = prlimg(&[&"map", &"--output", &"json", &dir]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let expected = "\
[{ \"start\": 0, \"length\": 65536, \"depth\": 2, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 65536},
{ \"start\": 65536, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 65536},
{ \"start\": 131072, \"length\": 393216, \"depth\": 2, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 196608},
{ \"start\": 524288, \"length\": 589824, \"depth\": 1, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 65536},
{ \"start\": 1114112, \"length\": 983040, \"depth\": 2, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false},
{ \"start\": 2097152, \"length\": 1048576, \"depth\": 2, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 65536},
{ \"start\": 3145728, \"length\": 131072, \"depth\": 0, \"present\": true, \"zero\": false, \"data\": true, \"compressed\": false, \"offset\": 65536},
{ \"start\": 3276800, \"length\": 917504, \"depth\": 2, \"present\": false, \"zero\": true, \"data\": false, \"compressed\": false}]
";
    assert_eq!(String::from_utf8_lossy(&o.stdout), expected);
    // The table names the files.
    let o = prlimg(&[&"map", &dir.join("DiskDescriptor.xml")]);
    let text = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "Offset          Length          Mapped to       File");
    assert_eq!(lines.len(), 7);
    assert!(
        lines[6].starts_with("0x300000        0x20000         0x10000         "),
        "{}",
        lines[6]
    );
    assert!(
        lines[6].ends_with(&format!("c.hdd.1.{{{}}}.hds", guid(3).hyphenated())),
        "{}",
        lines[6]
    );
}

#[test]
fn info_and_check_take_a_folder_or_its_xml() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    for src in [dir.clone(), dir.join("DiskDescriptor.xml")] {
        let o = prlimg(&[&"check", &"--output", &"json", &src]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let j = json(&o);
        assert_eq!(j["result"], "clean");
        assert_eq!(j["format"], "parallels-bundle");
        let o = prlimg(&[&"info", &"--output", &"json", &src]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let j = json(&o);
        assert_eq!(j["virtual_size"], 4 * MIB);
        assert_eq!(j["top"], format!("{{{}}}", guid(3).hyphenated()));
        assert_eq!(j["storages"][0]["images"].as_array().unwrap().len(), 3);
        assert_eq!(j["storages"][0]["images"][2]["info"]["allocated_clusters"], 3);
    }
    let o = prlimg(&[&"check", &dir]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "QEMU 10: does not open a bundle: with -f parallels it refuses DiskDescriptor.xml (Image not in Parallels \
         format), and without -f it reads the XML as a raw disk.\n\
         libphdi 20260902: does not open it (libphdi_disk_descriptor_xml_file_get_storage_data: unsupported block \
         size: 128): it takes only Blocksize 2048 (1 MiB clusters).\n\
         dissect.hypervisor 3.21: does not open it (KeyError: 'Shot GUID not found: \
         5fbaabe3-6958-40ff-92a7-860e329aab41'): it always takes {5fbaabe3-6958-40ff-92a7-860e329aab41} as the top, \
         whatever TopGUID says.\n\
         \n\
         No errors were found in the bundle.\n\
         libphdi 20260902: refuses (libphdi_disk_descriptor_xml_file_get_storage_data: unsupported block size: 128)\n\
         dissect.hypervisor 3.21: refuses (KeyError: 'Shot GUID not found: 5fbaabe3-6958-40ff-92a7-860e329aab41'); \
         top {5fbaabe3-6958-40ff-92a7-860e329aab41}\n"
    );
}

#[test]
fn check_reports_each_defect_with_its_rule() {
    let tmp = tempfile::tempdir().unwrap();
    let chain = tmp.path().join("c.hdd");
    chain_builder().split_at(vec![2 * MIB]).create(&chain, false).unwrap();
    let plain = tmp.path().join("p.hdd");
    chain_builder().plain_root(true).create(&plain, false).unwrap();
    for d in BundleDefect::ALL {
        let src: &Path = if *d == BundleDefect::PlainSizeMismatch {
            &plain
        } else {
            &chain
        };
        let out = tmp.path().join(format!("{}.hdd", d.name()));
        let o = prlimg(&[&"corrupt", &src, &out, &"--defect", &d.name()]);
        assert_eq!(o.status.code(), Some(0), "{}: {}", d.name(), stderr(&o));
        let o = prlimg(&[&"check", &"--output", &"json", &out]);
        let j = json(&o);
        let rules: Vec<String> = j["rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            rules.first().map(String::as_str),
            Some(d.rule().code()),
            "{}: {rules:?}",
            d.name()
        );
        let code = if d.rule().severity() == parallels_image::Severity::Corruption {
            2
        } else {
            0
        };
        assert_eq!(o.status.code(), Some(code), "{}", d.name());
    }
    // The input is untouched, and the list names them.
    assert_eq!(Bundle::open(&chain).unwrap().validate().findings, vec![]);
    let o = prlimg(&[&"corrupt", &"--list-bundle"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(text.lines().count(), BundleDefect::ALL.len());
    assert!(
        text.lines()
            .any(|l| l.starts_with("parent-cycle ") && l.contains(" D19 ")),
        "{text}"
    );
}

#[test]
fn create_bundle_from_recipe_and_options() {
    let tmp = tempfile::tempdir().unwrap();
    let recipe = tmp.path().join("r.json");
    let g = |n| guid(n).hyphenated().to_string();
    fs::write(
        &recipe,
        format!(
            r#"{{ "size": 4194304, "cluster_size": 65536, "split_at": [1572864, 3145728],
  "snapshots": [
    {{ "guid": "{}", "data": [{{"offset": 0, "len": 1048576, "byte": 17}}, {{"offset": 2097152, "len": 1048576, "byte": 18}}] }},
    {{ "guid": "{{{}}}", "parent": "{}", "data": [{{"offset": 524288, "len": 589824, "byte": 34}}] }},
    {{ "guid": "{}", "parent": "{}", "data": [{{"offset": 65536, "len": 65536, "byte": 51}}, {{"offset": 3178496, "len": 65536, "byte": 52}}],
      "bitmaps": [{{"id": "e4f2eed0-37fe-4539-b50b-85d2e7fd235f", "granularity": 65536, "dirty": [[65536, 65536], [3178496, 65536]]}}] }} ] }}"#,
            g(1),
            g(2),
            g(1),
            g(3),
            g(2)
        ),
    )
    .unwrap();
    let dir = tmp.path().join("r.hdd");
    let o = prlimg(&[&"create", &dir, &"--bundle", &"--recipe", &recipe]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bundle = Bundle::open(&dir).unwrap();
    assert_eq!(bundle.validate().findings, vec![]);
    assert_eq!(bundle.descriptor().storages.len(), 3);
    assert!(read_all(&bundle.disk(None).unwrap()) == chain_expected(3));
    // The top's bitmap is split between segments 0 and 2.
    let seg2 = dir.join(format!("r.hdd.2.{{{}}}.hds", g(3)));
    let src = FileSource::open(&seg2).unwrap();
    let image = parallels_image::open(&src).unwrap();
    assert_eq!(image.bitmaps()[0].dirty_extents().unwrap(), vec![(0, 131072)]); // local [32K, 96K) touches granules 0 and 1

    let one = tmp.path().join("one.hdd");
    let o = prlimg(&[&"create", &one, &"--bundle", &"--size", &"8M", &"--data", &"1M:64K:0x7"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let bundle = Bundle::open(&one).unwrap();
    assert_eq!(bundle.validate().findings, vec![]);
    let mut expect = vec![0u8; 8 * MIB as usize];
    expect[MIB as usize..(MIB + 65536) as usize].fill(7);
    assert!(read_all(&bundle.disk(None).unwrap()) == expect);
    let o = prlimg(&[&"create", &one, &"--bundle", &"--size", &"8M"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn a_broken_descriptor_is_reported_not_taken_for_an_image() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("c.hdd");
    chain_builder().create(&dir, false).unwrap();
    let xml = dir.join("DiskDescriptor.xml");
    fs::write(&xml, "this is not XML").unwrap();
    for src in [dir.clone(), xml.clone()] {
        let o = prlimg(&[&"check", &"--output", &"json", &src]);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let j = json(&o);
        assert_eq!(j["rules"], serde_json::json!(["D1"]));
        assert_eq!(j["findings"][0]["file"], serde_json::Value::Null);
    }
    let o = prlimg(&[&"convert", &xml, &tmp.path().join("x.raw")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("is not well-formed XML at line 1, column 1"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).ends_with("[D1]\n"), "{}", stderr(&o));
}
