//! Each command reads an image's table (its BAT) once (#27): `check`, `info`, `map` and a batch
//! check. A source that counts the bytes read in the table's region proves it for the library
//! calls `check` and `info` make; the commands that open files by name (`map`, a batch) are
//! measured by the bytes the process reads (`rchar` of `/proc/self/io`), with one test only in
//! this binary so that nothing else reads meanwhile.

use std::sync::atomic::{AtomicU64, Ordering};

use parallels_image::bundle::GuestDisk;
use parallels_image::report::{gather, run_batch, BatchRun, CheckOptions, InfoWarning};
use parallels_image::{GuestData, Image, ImageBuilder, RuleMode, Source};

/// 64 Ki entries: a table of 256 KiB, two blocks of the walks' 128 KiB reads.
const ENTRIES: u64 = 65536;
const CS: u64 = 4096;
const TABLE: std::ops::Range<u64> = 64..64 + 4 * ENTRIES;

/// An image with clusters allocated here and there over its whole table.
fn image() -> Vec<u8> {
    let mut b = ImageBuilder::new(ENTRIES * CS).cluster_size(CS);
    for k in (0..ENTRIES).step_by(997) {
        b = b.data(k * CS, GuestData::Fill { len: 512, byte: 0x5a });
    }
    b.to_vec().unwrap().0
}

/// Bytes in memory, counting the bytes read in [`TABLE`].
struct Counting {
    bytes: Vec<u8>,
    read: AtomicU64,
}

impl Source for Counting {
    fn size(&self) -> u64 {
        self.bytes.len() as u64
    }

    fn read_at(&self, offset: u64, len: u64) -> std::io::Result<std::borrow::Cow<'_, [u8]>> {
        let got = self.bytes.as_slice().read_at(offset, len)?;
        let end = offset + got.len() as u64;
        let overlap = end.min(TABLE.end).saturating_sub(offset.max(TABLE.start));
        self.read.fetch_add(overlap, Ordering::Relaxed);
        Ok(got)
    }
}

/// Bytes this process has read from files so far.
fn rchar() -> u64 {
    let io = std::fs::read_to_string("/proc/self/io").expect("/proc/self/io");
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("rchar")
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "counts reads through /proc/self/io (Linux)")]
fn check_info_map_and_a_batch_read_the_table_once() {
    let bytes = image();
    let table = TABLE.end - TABLE.start;

    // check: the rules, QEMU's predicted check and ploop's check on one walk.
    let source = Counting {
        bytes: bytes.clone(),
        read: 0.into(),
    };
    let checked = parallels_image::check(&source, RuleMode::Strict, "x.hds").unwrap();
    assert_eq!(checked.statistics.unwrap().allocated, ENTRIES.div_ceil(997));
    assert_eq!(source.read.load(Ordering::Relaxed), table, "check");

    // info: the allocation and both QEMU versions' checks on one walk.
    let source = Counting {
        bytes: bytes.clone(),
        read: 0.into(),
    };
    let image = Image::parse_compact(&source, RuleMode::Strict).unwrap();
    let info = gather(&image, "x.hds".into(), None);
    assert_eq!(info.allocated_clusters, ENTRIES.div_ceil(997));
    // As of the whole table held in memory (which walks it as often as it likes).
    let whole = Image::parse(&bytes).unwrap();
    assert_eq!(info.warnings, InfoWarning::of(&whole));
    assert_eq!(source.read.load(Ordering::Relaxed), table, "info");

    // The commands that open the file by name: the header and the extension are read besides
    // the table (a few hundred bytes each), a second walk would read the table again.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.hds");
    std::fs::write(&path, &bytes).unwrap();
    let measured = |what: &str, run: &dyn Fn()| {
        let before = rchar();
        run();
        let read = rchar() - before;
        assert!(
            (table..table + 16384).contains(&read),
            "{what}: {read} bytes read, the table is {table}"
        );
    };
    measured("map", &|| {
        let disk = GuestDisk::open(&path, None, Default::default()).unwrap();
        let extents = disk.try_extents().unwrap();
        assert_eq!(
            extents.iter().filter(|e| e.data.is_some()).count() as u64,
            ENTRIES.div_ceil(997)
        );
    });
    measured("batch", &|| {
        let run = BatchRun {
            paths: std::slice::from_ref(&path),
            recursive: false,
            jobs: Some(1),
            json: false,
            options: CheckOptions {
                readers: false,
                ..CheckOptions::new(RuleMode::Strict)
            },
        };
        let mut lines = Vec::new();
        run_batch(
            &run,
            |e| e.to_string(),
            || {},
            |l| {
                lines.push(l.line.clone());
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with(&format!("{}: clean", path.display())),
            "{}",
            lines[0]
        );
    });
}
