//! What `prlimg create`, `prlimg info` and `prlimg bitmaps` print and write, in process: the
//! images are built as `create` builds them (a [`Recipe`] of its options, the builder's
//! defaults), and the outputs rendered by the library functions the binary calls
//! ([`BitmapList`], [`Bitmap::write_map`], [`Bitmap::write_serialized`], [`gather`]). What needs
//! a process (exit statuses, error lines, pipes) stays in `tests/cli.rs`.

use std::path::{Path, PathBuf};

use parallels_image::recipe::{BitmapRecipe, DataRecipe, Recipe};
use parallels_image::report::{gather, BitmapList};
use parallels_image::{parse_size, Bitmap, BitmapSpec, Image, MapFormat, RuleMode};
use serde_json::{json, Value};

const UUID_A: &str = "11111111-2222-3333-4444-555555555555";

/// `prlimg create` with these options: `--size`, `--cluster-size` (1M when not given), `--v1`,
/// `--data`, `--bitmap` (id, granularity, dirty ranges); written to `dir/name`.
fn create(dir: &Path, name: &str, recipe: Recipe) -> PathBuf {
    let p = dir.join(name);
    recipe.to_builder().unwrap().create_file(&p, false).unwrap();
    p
}

fn recipe(size: u64) -> Recipe {
    Recipe {
        size,
        cluster_size: 1 << 20,
        v1: false,
        data: Vec::new(),
        bitmaps: Vec::new(),
    }
}

/// Image A of `tests/fixtures/cli.rs`: `--size 64M --cluster-size 64K --data 0:100K:0xaa
/// --bitmap UUID_A:64K:0+128K,1M+1`.
fn image_a(dir: &Path) -> PathBuf {
    create(
        dir,
        "a.hds",
        Recipe {
            cluster_size: 64 << 10,
            data: vec![DataRecipe {
                offset: 0,
                len: 100 << 10,
                byte: 0xaa,
            }],
            bitmaps: vec![BitmapRecipe {
                id: UUID_A.into(),
                granularity: 64 << 10,
                dirty: vec![(0, 128 << 10), (1 << 20, 1)],
            }],
            ..recipe(64 << 20)
        },
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `prlimg bitmaps PATH` (`--output json` when `json`).
fn bitmaps_list(path: &Path, json: bool) -> String {
    let bytes = std::fs::read(path).unwrap();
    let src = bytes.as_slice();
    let image = Image::parse_without_bat(&src, RuleMode::Strict).unwrap();
    let list = BitmapList::of(&image, s(path).to_string());
    let mut out = Vec::new();
    if json {
        list.write_json(&mut out).unwrap();
    } else {
        list.write_human(&mut out).unwrap();
    }
    String::from_utf8(out).unwrap()
}

/// `prlimg bitmaps PATH NAME`, with what `f` writes of the bitmap.
fn bitmap_output(path: &Path, name: &str, f: impl Fn(&Bitmap<'_>, &mut Vec<u8>)) -> Vec<u8> {
    let bytes = std::fs::read(path).unwrap();
    let src = bytes.as_slice();
    let image = Image::parse_without_bat(&src, RuleMode::Strict).unwrap();
    let bitmap = image.bitmap_named(name).unwrap();
    let mut out = Vec::new();
    f(&bitmap, &mut out);
    out
}

/// `prlimg info PATH --output json`.
fn info_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap();
    let src = bytes.as_slice();
    let image = Image::parse(&src).unwrap();
    let mut out = Vec::new();
    gather(&image, s(path).to_string(), None).write_json(&mut out).unwrap();
    serde_json::from_slice(&out).unwrap()
}

#[test]
fn info_v1_image() {
    let dir = tempfile::tempdir().unwrap();
    // --size 2M --cluster-size 64K --v1 --data 64K:1:1
    let p = create(
        dir.path(),
        "v1.hds",
        Recipe {
            cluster_size: 64 << 10,
            v1: true,
            data: vec![DataRecipe {
                offset: 64 << 10,
                len: 1,
                byte: 1,
            }],
            ..recipe(2 << 20)
        },
    );
    let v = info_json(&p);
    assert_eq!(v["variant"], "v1");
    assert_eq!(v["magic"], "WithoutFreeSpace");
    assert_eq!(v["bat_entries"], 32);
    assert_eq!(v["allocated_clusters"], 1);
    assert_eq!(v["extension"], false);
    assert_eq!(v["ext_offset"], Value::Null);
    // Guest cluster 1 is the only one written: the first data cluster, at 64 KiB = sector 128.
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(bytes[64 + 4..64 + 8], 128u32.to_le_bytes());
    assert_eq!(bytes.len(), 131072);
}

#[test]
fn bitmaps_list_and_extents() {
    let dir = tempfile::tempdir().unwrap();
    let a = image_a(dir.path());
    let v: Value = serde_json::from_str(&bitmaps_list(&a, true)).unwrap();
    assert_eq!(
        v,
        json!({"schema": 3, "filename": s(&a), "bitmaps": [{
            "name": UUID_A, "feature": 0, "granularity": 65536, "dirty_bytes": 196608, "l1_size": 1, "error": null
        }]})
    );
    // Granules 0-1 and 16 dirty; the disk ends at 64 MiB.
    let map = |format| bitmap_output(&a, UUID_A, |b, out| b.write_map(format, out).unwrap());
    assert_eq!(
        String::from_utf8(map(MapFormat::Text)).unwrap(),
        "         0      131072    1  dirty\n    131072      917504    0  clean\n   1048576       65536    1  dirty\n   1114112    65994752    0  clean\n"
    );
    assert_eq!(
        String::from_utf8(map(MapFormat::Json)).unwrap(),
        "[\n\
         { \"offset\": 0, \"length\": 131072, \"type\": 1, \"description\": \"dirty\"},\n\
         { \"offset\": 131072, \"length\": 917504, \"type\": 0, \"description\": \"clean\"},\n\
         { \"offset\": 1048576, \"length\": 65536, \"type\": 1, \"description\": \"dirty\"},\n\
         { \"offset\": 1114112, \"length\": 65994752, \"type\": 0, \"description\": \"clean\"}\n\
         ]\n"
    );
}

#[test]
fn bitmaps_raw_is_the_serialized_bitmap() {
    let dir = tempfile::tempdir().unwrap();
    let a = image_a(dir.path());
    let raw = bitmap_output(&a, UUID_A, |b, out| b.write_serialized(out).unwrap());
    // 1024 granules: 128 bytes; granules 0 and 1 in byte 0, granule 16 is bit 0 of byte 2.
    let mut expected = vec![0u8; 128];
    expected[0] = 0b11;
    expected[2] = 1;
    assert_eq!(raw, expected);
}

#[test]
fn bitmaps_says_when_there_are_none() {
    let dir = tempfile::tempdir().unwrap();
    let plain = create(dir.path(), "plain.hds", recipe(1 << 20));
    assert_eq!(
        bitmaps_list(&plain, false),
        "no bitmaps (the image has no Format Extension)\n"
    );
    let v: Value = serde_json::from_str(&bitmaps_list(&plain, true)).unwrap();
    assert_eq!(v["bitmaps"], json!([]));
}

#[test]
fn create_size_suffixes() {
    let dir = tempfile::tempdir().unwrap();
    for (size, virtual_size, bat_entries) in [
        ("1.5G", 1610612736u64, 1536u64),
        ("64g", 68719476736, 65536),
        ("1000000", 1000448, 1),
        ("2T", 2199023255552, 2097152),
    ] {
        let p = create(dir.path(), &format!("{size}.hds"), recipe(parse_size(size).unwrap()));
        let v = info_json(&p);
        assert_eq!(v["virtual_size"], virtual_size, "{size}");
        assert_eq!(v["bat_entries"], bat_entries, "{size}");
    }
}

/// `create --size 1G --data 3M:5K:0x5a --random-bitmap 0.2 --seed SEED` (the random bitmap's
/// granularity 64K, `--random-granularity`'s default).
#[test]
fn create_is_reproducible_by_seed() {
    let dir = tempfile::tempdir().unwrap();
    let make = |name: &str, seed: u64| {
        let builder = Recipe {
            data: vec![DataRecipe {
                offset: 3 << 20,
                len: 5 << 10,
                byte: 0x5a,
            }],
            ..recipe(1 << 30)
        }
        .to_builder()
        .unwrap()
        .bitmap(BitmapSpec::random(seed, 1 << 30, 64 << 10, 0.2).unwrap());
        let p = dir.path().join(name);
        builder.create_file(&p, false).unwrap();
        std::fs::read(p).unwrap()
    };
    let (one, again, other) = (make("1.hds", 17), make("2.hds", 17), make("3.hds", 18));
    assert_eq!(one, again);
    assert_ne!(one, other);
    // Density 0.2 of 16384 granules of 64 KiB: round(3276.8) = 3277 dirty granules.
    let v: Value = serde_json::from_str(&bitmaps_list(&dir.path().join("1.hds"), true)).unwrap();
    assert_eq!(v["bitmaps"][0]["dirty_bytes"], 3277 * 65536);
}
