//! `plan_repair(.., RepairLevel::All)` on every defect of the catalogue (bases with data and
//! bitmaps, `fixtures::repair`) and on a bounded sweep of mutants, checked with the real QEMU
//! tools: `qemu-img check` exits 0, or 3 where the prediction says its only leaks are the
//! extension and bitmap clusters; `qemu-img info` opens the result; every kept bitmap reads back
//! through `qemu-nbd`/`nbdinfo` with the extents of the input's bitmap; every guest byte not
//! reported lost reads as QEMU read it from the damaged input. Side by side, `qemu-img check -r
//! all` on a copy: which bitmaps and guest bytes QEMU's repair lost. With
//! `PRLIMG_REPAIR_TABLE=FILE` the test writes that comparison as the table of `spec/repair.md`.

use std::path::Path;

use parallels_image::corrupt::DefectKind;
use parallels_image::{
    mutate::MutateOptions, mutate::Mutator, qemu, repair::plan_repair, repair::RepairLevel, validate, Image, Verdict,
};

use crate::fixtures::needs;
use crate::fixtures::repair::{bases, damaged};
use crate::harness::{self, check_mismatch, nbd_dirty_map, nbd_server, run_on, with_gaps, Img};

/// The guest's bytes as QEMU reads them (`qemu-img convert -O raw`), or `None` when QEMU does
/// not open the image.
fn qemu_raw(dir: &Path, img: &Img) -> Option<Vec<u8>> {
    let out = dir.join(format!("{}.raw", img.path.file_name().unwrap().to_string_lossy()));
    let r = harness::to_raw(img, &out);
    if r.code != 0 {
        return None;
    }
    let v = std::fs::read(&out).unwrap();
    let _ = std::fs::remove_file(&out);
    Some(v)
}

/// The guest's bytes as this crate reads them, when the image parses.
fn guest_of(bytes: &[u8]) -> Option<Vec<u8>> {
    let image = Image::parse(&bytes).ok()?;
    let mut v = vec![0u8; image.header().virtual_size() as usize];
    image.read_guest(0, &mut v).ok()?;
    Some(v)
}

/// Bytes at which `a` and `b` differ outside `lost` (guest ranges).
fn differing(a: &[u8], b: &[u8], lost: &[(u64, u64)]) -> u64 {
    let n = a.len().max(b.len());
    let mut count = 0;
    for i in 0..n {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        if x != y && !lost.iter().any(|&(o, l)| (i as u64) >= o && (i as u64) < o + l) {
            count += 1;
        }
    }
    count
}

/// The dirty extents of bitmap `name` in `bytes` (our decoding), when it decodes there.
fn extents_in(bytes: &[u8], name: &str) -> Option<Vec<(u64, u64)>> {
    let image = Image::parse(&bytes).ok()?;
    image.bitmap_named(name)?.dirty_extents().ok()
}

/// One row of the side-by-side table.
struct Row {
    case: String,
    ours_kept: usize,
    ours_lost_bytes: u64,
    qemu_exit: i32,
    qemu_kept: usize,
    qemu_lost_bytes: Option<u64>,
    bitmaps: usize,
}

/// Checks one repair against QEMU; returns the side-by-side row.
fn verify(dir: &Path, tag: &str, bytes: &[u8], original: &[u8]) -> Option<Row> {
    let plan = match plan_repair(&bytes, RepairLevel::All) {
        Ok(p) => p,
        Err(parallels_image::Error::Repair(_)) => return None,
        Err(e) => panic!("{tag}: {e}"),
    };
    let out = plan.to_vec(&bytes).unwrap();
    let report = validate(&Image::parse(&out).unwrap()).unwrap();
    assert_eq!(report.verdict(), Verdict::Clean, "{tag}: {:?}", report.findings);
    let input = Img::write(dir, &format!("{tag}-in.hds"), bytes.to_vec());
    let base = Img::write(dir, &format!("{tag}-base.hds"), original.to_vec());
    let reference = qemu_raw(dir, &base).expect("QEMU reads the original");
    let reference = reference.as_slice();
    let rep = Img::write(dir, &format!("{tag}-out.hds"), out.clone());

    // qemu-img check: 0, or 3 for the kept extension's clusters, exactly as predicted.
    let pred = qemu::predict(&out.as_slice()).unwrap();
    let c = harness::check(&rep);
    assert!(
        c.code == 0 || c.code == 3,
        "{tag}: qemu-img check exit {}: {:?}",
        c.code,
        c.stderr
    );
    if let Some(m) = check_mismatch(&pred.check, &c, &rep.arg()) {
        panic!("{tag}: {m}");
    }
    if c.code == 3 {
        assert!(!plan.kept_bitmaps.is_empty(), "{tag}: leaks without an extension");
    }
    let i = harness::info(&rep);
    assert_eq!(i.code, 0, "{tag}: qemu-img info: {:?}", i.stderr);

    // Guest bytes: as QEMU read the damaged input (where QEMU refuses it: as this crate reads
    // it, or the original where the header cannot be read either).
    let lost = plan.lost_guest();
    let ours = qemu_raw(dir, &rep).expect("QEMU reads the repaired image");
    let before = qemu_raw(dir, &input).or_else(|| guest_of(bytes));
    let expected = before.as_deref().unwrap_or(reference);
    let wrong = differing(expected, &ours, &lost);
    assert_eq!(
        wrong, 0,
        "{tag}: {wrong} guest bytes differ outside the lost ranges {lost:?}"
    );
    let ours_lost_bytes = differing(reference, &ours, &[]);

    // Every kept bitmap reads back through qemu-nbd with the input's extents.
    if !plan.kept_bitmaps.is_empty() {
        let size = harness::virtual_size(&rep);
        let sub = dir.join(format!("{tag}-nbd"));
        std::fs::create_dir_all(&sub).unwrap();
        let server = nbd_server(&sub, &rep, &plan.kept_bitmaps);
        // The socket exists from bind(); wait until the server listens on it.
        let mut tries = 0;
        while std::os::unix::net::UnixStream::connect(&server.socket).is_err() && tries < 200 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            tries += 1;
        }
        for name in &plan.kept_bitmaps {
            let want = extents_in(bytes, name)
                .or_else(|| extents_in(original, name))
                .unwrap_or_else(|| panic!("{tag}: {name} decodes nowhere"));
            // Clipped to the repaired disk (R11's repair may shorten it).
            let want: Vec<(u64, u64)> = want
                .into_iter()
                .filter(|&(o, _)| o < size)
                .map(|(o, l)| (o, l.min(size - o)))
                .collect();
            let got = nbd_dirty_map(&server, &rep, name);
            assert_eq!(got, with_gaps(&want, size), "{tag}: bitmap {name}");
        }
    }

    // Side by side: qemu-img check -r all on a copy.
    let copy = dir.join(format!("{tag}-qemu.hds"));
    std::fs::write(&copy, bytes).unwrap();
    let copy_img = Img::existing(&copy);
    let r = run_on(
        &[],
        "qemu-img",
        &["check", "-r", "all", "-f", "parallels", copy.to_str().unwrap()],
    );
    let after = std::fs::read(&copy).unwrap();
    let qemu_kept = Image::parse(&after)
        .ok()
        .filter(|im| validate(im).is_ok_and(|r| r.verdict() != Verdict::Corrupt))
        .map_or(0, |im| im.bitmaps().len());
    let qemu_lost_bytes = qemu_raw(dir, &Img::existing(&copy)).map(|q| differing(reference, &q, &[]));
    let _ = copy_img;
    let bitmaps = Image::parse(&original).map_or(0, |i| i.bitmaps().len());
    for f in [&input.path, &rep.path, &copy, &base.path] {
        let _ = std::fs::remove_file(f);
    }
    Some(Row {
        case: tag.to_string(),
        ours_kept: plan.kept_bitmaps.len(),
        ours_lost_bytes,
        qemu_exit: r.code,
        qemu_kept,
        qemu_lost_bytes,
        bitmaps,
    })
}

/// The original base of a `base-defect` tag.
fn reference_image(tag: &str) -> &'static [u8] {
    use std::sync::OnceLock;
    static BASES: OnceLock<Vec<(&'static str, Vec<u8>)>> = OnceLock::new();
    let bases = BASES.get_or_init(bases);
    let (_, b) = bases
        .iter()
        .find(|(n, _)| tag.starts_with(&format!("{n}-")))
        .expect("a base");
    b
}

#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn repair_of_every_defect_satisfies_qemu() {
    if !needs::tools(
        "repair_of_every_defect_satisfies_qemu",
        &["qemu-img", "qemu-nbd", "nbdinfo"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut rows = Vec::new();
    for (name, d, bytes) in damaged() {
        let tag = format!("{name}-{d}");
        if let Some(row) = verify(dir.path(), &tag, &bytes, reference_image(&tag)) {
            rows.push((d, row));
        }
    }
    assert!(rows.len() > 150, "{} cases", rows.len());
    // spec/repair.md holds this table between its markers: it must be what was measured
    // (`PRLIMG_REPAIR_TABLE=write` rewrites it).
    let spec_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("spec/repair.md");
    let spec = std::fs::read_to_string(&spec_path).unwrap();
    let (begin, end) = ("<!-- repair-table:begin -->\n", "<!-- repair-table:end -->");
    let a = spec.find(begin).expect("begin marker") + begin.len();
    let b = spec.find(end).expect("end marker");
    let measured = table(&rows);
    if std::env::var("PRLIMG_REPAIR_TABLE").is_ok_and(|v| v == "write") {
        std::fs::write(&spec_path, format!("{}{measured}{}", &spec[..a], &spec[b..])).unwrap();
    } else {
        assert_eq!(
            spec[a..b],
            measured,
            "spec/repair.md's table is not what was measured (PRLIMG_REPAIR_TABLE=write)"
        );
    }
}

/// The side-by-side table (markdown), one row per base and defect.
fn table(rows: &[(DefectKind, Row)]) -> String {
    let mut s = String::from(
        "| base-defect | rule | bitmaps | `prlimg repair --all`: bitmaps kept | guest bytes not as in the original | `qemu-img check -r all`: exit | bitmaps left readable | guest bytes not as in the original |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (d, r) in rows {
        s += &format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.case,
            d.rule(),
            r.bitmaps,
            r.ours_kept,
            r.ours_lost_bytes,
            r.qemu_exit,
            r.qemu_kept,
            r.qemu_lost_bytes
                .map_or("image unreadable".to_string(), |b| b.to_string()),
        );
    }
    s
}

#[test]
#[cfg_attr(
    prlimg_no_qemu_tools,
    ignore = "needs the QEMU tools (apt-get install qemu-utils libnbd-bin); with CI=true it runs and fails"
)]
fn repair_of_mutants_satisfies_qemu() {
    if !needs::tools("repair_of_mutants_satisfies_qemu", &["qemu-img", "qemu-nbd", "nbdinfo"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (name, base) = &bases()[0];
    let mutator = Mutator::new(base, MutateOptions::default()).unwrap();
    let mut checked = 0;
    for seed in 0..40u64 {
        let m = mutator.mutant(seed);
        let tag = format!("{name}-mutant{seed}");
        let Ok(plan) = plan_repair(&m.bytes.as_slice(), RepairLevel::All) else {
            continue;
        };
        let out = plan.to_vec(&m.bytes.as_slice()).unwrap();
        let report = validate(&Image::parse(&out).unwrap()).unwrap();
        assert_eq!(
            report.verdict(),
            Verdict::Clean,
            "{tag} {:?}: {:?}",
            m.edits,
            report.findings
        );
        let rep = Img::write(dir.path(), &format!("{tag}.hds"), out.clone());
        let pred = qemu::predict(&out.as_slice()).unwrap();
        let c = harness::check(&rep);
        assert!(c.code == 0 || c.code == 3, "{tag}: qemu-img check exit {}", c.code);
        if let Some(mm) = check_mismatch(&pred.check, &c, &rep.arg()) {
            panic!("{tag}: {mm}");
        }
        assert_eq!(harness::info(&rep).code, 0, "{tag}: qemu-img info");
        let input = Img::write(dir.path(), &format!("{tag}-in.hds"), m.bytes.clone());
        if let Some(before) = qemu_raw(dir.path(), &input) {
            let ours = qemu_raw(dir.path(), &rep).unwrap();
            assert_eq!(differing(&before, &ours, &plan.lost_guest()), 0, "{tag} {:?}", m.edits);
        }
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} mutants repaired");
}
