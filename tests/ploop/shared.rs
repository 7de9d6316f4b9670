//! `prlimg check` predicts ploop's check with the rules' bit set of data clusters standing in for
//! ploop's own bit map of used blocks (one bit set alive instead of two, issue 27). The two differ
//! at the edges: ploop's map starts with the header and BAT blocks marked, which the rules never
//! mark (R16); entries ploop passes over (beyond the block device size, past the table it reads)
//! are marked by the rules all the same; v1 images are on another grid; ploop reads slots past
//! the rules' BAT on its own. On images made for each edge, the prediction `check` makes is
//! exactly the one of ploop's own walk ([`predict_ploop`], which keeps its own bit map), messages,
//! omitted count and return code, and (where the drivers can run them) what the real ploop does.

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use parallels_image::ploop::{predict_ploop, PloopCheck};
use parallels_image::{check, FileSource, GuestData, ImageBuilder, RuleMode, Source, Variant};

use crate::corpus::{KIB, MIB};
use crate::fixtures::needs;
use crate::harness::{compare_bytes, scratch};

/// BAT slot `i` (or a slot past the BAT: ploop reads up to the data area).
fn slot_at(i: u64) -> usize {
    (64 + 4 * i) as usize
}

fn get(bytes: &[u8], i: u64) -> u32 {
    u32::from_le_bytes(bytes[slot_at(i)..slot_at(i) + 4].try_into().unwrap())
}

fn set(bytes: &mut [u8], i: u64, v: u32) {
    bytes[slot_at(i)..slot_at(i) + 4].copy_from_slice(&v.to_le_bytes());
}

/// The header's `nb_sectors` (bytes 36..44).
fn set_nb_sectors(bytes: &mut [u8], sectors: u64) {
    bytes[36..44].copy_from_slice(&sectors.to_le_bytes());
}

/// ploop's check as `prlimg check` predicts it (the rules' walk feeding ploop's), asserted equal
/// to the one of ploop's own walk.
fn shared_and_own(source: &dyn Source, name: &str) -> PloopCheck {
    let shared = check(source, RuleMode::Strict, name).unwrap().ploop.check;
    let own = predict_ploop(source, name).unwrap().check;
    assert_eq!(shared, own, "{name}: the shared walk and ploop's own disagree");
    shared
}

fn dup(block: u32, slot: u64) -> [String; 2] {
    [
        format!("Block {block} is used more than once, vsec={slot}... "),
        "FATAL".into(),
    ]
}

fn skipped(slot: u64) -> [String; 2] {
    [
        format!("Data cluster ({slot}) beyond block device size... "),
        "Skipped".into(),
    ]
}

fn fatal_end(name: &str) -> String {
    format!("Fatal errors were found, image {name} is not repaired")
}

/// v2, 64 KiB clusters, a BAT of two clusters (the header and BAT blocks are 0 and 1): entries
/// pointing at block 1 are used twice for ploop, and the rules never mark them (R16).
fn into_the_bat() -> Vec<u8> {
    let (mut bytes, _) = ImageBuilder::new(16384 * 64 * KIB)
        .cluster_size(64 * KIB)
        .data(0, GuestData::Fill { len: 4096, byte: 1 })
        .data(64 * KIB, GuestData::Fill { len: 4096, byte: 2 })
        .to_vec()
        .unwrap();
    assert_eq!(
        (get(&bytes, 0), get(&bytes, 1)),
        (2, 3),
        "the data blocks follow the BAT's two"
    );
    set(&mut bytes, 5, 1);
    set(&mut bytes, 6, 1);
    set(&mut bytes, 7, 2);
    bytes
}

/// The slot past which ploop's guest offsets, computed in 32 bits, wrap for 1 MiB clusters
/// (`slot << 11` sectors): slots from here on are within a small disk again.
const WRAP: u64 = 1 << 21;

/// v2, 1 MiB clusters, a BAT of `WRAP + 2` entries (the data area at 9 MiB: blocks 0–8 are
/// the header's and the BAT's) on a disk of 4 clusters: ploop skips slots 5 to `WRAP - 1` as
/// beyond the block device size (the rules mark their clusters: "ghosts") and checks slots
/// `WRAP` on, its guest offsets wrapped.
fn wrapped(data: &[u64]) -> Vec<u8> {
    let mut b = ImageBuilder::new((WRAP + 2) * MIB).cluster_size(MIB);
    for &c in data {
        b = b.data(
            c * MIB,
            GuestData::Fill {
                len: 4096,
                byte: c as u8,
            },
        );
    }
    let (mut bytes, _) = b.to_vec().unwrap();
    assert_eq!(
        u32::from_le_bytes(bytes[48..52].try_into().unwrap()),
        9 * 2048,
        "data_off"
    );
    set_nb_sectors(&mut bytes, 4 * 2048);
    bytes
}

/// Ghosts before real entries on the same blocks, and slots past the rules' BAT (ploop reads
/// them on its own, after the rules' walk) on blocks marked by ghosts and by real entries.
fn ghosts_first() -> (Vec<u8>, [u32; 4]) {
    let mut bytes = wrapped(&[1, 6, 7, 8]);
    let b = [1, 6, 7, 8].map(|c| get(&bytes, c));
    assert_eq!(b, [9, 10, 11, 12]);
    set(&mut bytes, 2, 1); // into the BAT blocks
    set(&mut bytes, 3, b[0]); // a real duplicate of a real entry
    set(&mut bytes, 9, b[1]); // a ghost duplicate of a ghost
    set(&mut bytes, WRAP, b[1]); // real, on a block only ghosts marked: not a duplicate
    set(&mut bytes, WRAP + 1, b[2]); // the same
    set(&mut bytes, WRAP + 2, b[2]); // past the rules' BAT: now a duplicate
    set(&mut bytes, WRAP + 3, b[3]); // past the rules' BAT, on a ghost's block
    set(&mut bytes, WRAP + 4, b[0]); // past the rules' BAT, a duplicate of a real entry
    (bytes, b)
}

#[test]
fn blocks_of_the_header_and_bat_are_used_for_ploop_and_not_for_the_rules() {
    let name = "bat.hds";
    let c = shared_and_own(&into_the_bat(), name);
    let mut want: Vec<String> = [dup(1, 5), dup(1, 6), dup(2, 7)].concat();
    want.push(fatal_end(name));
    assert_eq!((c.rc, c.messages, c.messages_omitted), (Some(11), want, 0));
}

#[test]
fn entries_ploop_skips_mark_no_block_for_it() {
    let name = "ghosts.hds";
    let (bytes, b) = ghosts_first();
    let c = shared_and_own(&bytes, name);
    let mut want: Vec<String> = [
        dup(1, 2),
        dup(b[0], 3),
        skipped(6),
        skipped(7),
        skipped(8),
        skipped(9),
        dup(b[2], WRAP + 2),
        dup(b[0], WRAP + 4),
    ]
    .concat();
    want.push(fatal_end(name));
    assert_eq!((c.rc, c.messages, c.messages_omitted), (Some(11), want, 0));
}

/// v2, 64 KiB clusters, a BAT of 16400 entries whose last 32 are in the first data cluster:
/// ploop reads 16368 slots (its table ends at the data area); the rules mark the clusters of
/// the others.
fn past_ploops_table() -> Vec<u8> {
    let mut first = Vec::new();
    for v in [3u32, 3, 2] {
        first.extend_from_slice(&v.to_le_bytes());
    }
    let (mut bytes, _) = ImageBuilder::new(MIB)
        .cluster_size(64 * KIB)
        .data(0, GuestData::Bytes(first))
        .data(64 * KIB, GuestData::Fill { len: 4096, byte: 2 })
        .data(2 * 64 * KIB, GuestData::Fill { len: 4096, byte: 3 })
        .to_vec()
        .unwrap();
    assert_eq!([0, 1, 2].map(|i| get(&bytes, i)), [1, 2, 3]);
    bytes[32..36].copy_from_slice(&16400u32.to_le_bytes());
    assert_eq!([16368, 16369, 16370].map(|i| get(&bytes, i)), [3, 3, 2]);
    set(&mut bytes, 5, 2);
    bytes
}

#[test]
fn duplicates_past_ploops_table_are_not_its_own() {
    let name = "past.hds";
    let c = shared_and_own(&past_ploops_table(), name);
    let mut want: Vec<String> = dup(2, 5).to_vec();
    want.push(fatal_end(name));
    assert_eq!((c.rc, c.messages, c.messages_omitted), (Some(11), want, 0));
}

/// v1, 64 KiB clusters (entries in sectors): a duplicate, an entry off the cluster grid, one
/// past the end of the file.
fn v1_image() -> Vec<u8> {
    let (mut bytes, _) = ImageBuilder::new(MIB)
        .variant(Variant::V1)
        .cluster_size(64 * KIB)
        .data(0, GuestData::Fill { len: 4096, byte: 1 })
        .data(64 * KIB, GuestData::Fill { len: 4096, byte: 2 })
        .to_vec()
        .unwrap();
    let first = get(&bytes, 0);
    assert_eq!(first % 128, 0);
    set(&mut bytes, 2, first);
    set(&mut bytes, 3, first + 1);
    set(&mut bytes, 4, 128 * 100);
    let second = get(&bytes, 1);
    set(&mut bytes, 5, second);
    bytes
}

#[test]
fn v1_images_keep_ploops_own_bit_map() {
    let name = "v1.hds";
    let bytes = v1_image();
    let c = shared_and_own(&bytes, name);
    let (b0, b1) = (get(&bytes, 0) / 128, get(&bytes, 1) / 128);
    let size = bytes.len();
    let want = vec![
        dup(b0, 2)[0].clone(),
        "FATAL".into(),
        "L2 slot (3) corrupted... ".into(),
        "FATAL".into(),
        format!("Data cluster 100 is beyond EOF, image size={size} vsec=4... "),
        "FATAL".into(),
        dup(b1, 5)[0].clone(),
        "FATAL".into(),
        fatal_end(name),
    ];
    assert_eq!((c.rc, c.messages, c.messages_omitted), (Some(11), want, 0));
}

/// The number of ghosts [`many_ghosts`] makes: more than ploop's walk keeps apart from the
/// rules' bit set (4096) before it takes a bit map of its own.
const GHOSTS: u64 = 4100;

/// [`wrapped`] as a sparse file of 1 MiB clusters with `GHOSTS` ghost entries (slots 5 on, one
/// block each from block 9), then real entries and slots past the BAT on their blocks.
fn many_ghosts(path: &Path) {
    let head = wrapped(&[]);
    let first = 9u32;
    let fresh = first + GHOSTS as u32;
    let mut f = std::fs::File::create(path).unwrap();
    f.write_all(&head).unwrap();
    let at = |f: &mut std::fs::File, slot: u64, v: u32| {
        f.seek(SeekFrom::Start(slot_at(slot) as u64)).unwrap();
        f.write_all(&v.to_le_bytes()).unwrap();
    };
    at(&mut f, 0, fresh); // a real block
    for k in 0..GHOSTS {
        at(&mut f, 5 + k, first + k as u32);
    }
    at(&mut f, WRAP, first); // a block of a ghost before ploop's walk took its own map
    at(&mut f, WRAP + 1, first + GHOSTS as u32 - 1); // one of a ghost after
    at(&mut f, WRAP + 2, first + 1); // past the BAT: a ghost's block
    at(&mut f, WRAP + 3, first); // a duplicate
    at(&mut f, WRAP + 4, fresh); // a duplicate
    f.set_len(u64::from(fresh + 1) * MIB).unwrap();
}

#[test]
fn more_ghosts_than_ploops_walk_keeps_apart() {
    let dir = scratch();
    let path = dir.path().join("many.hds");
    many_ghosts(&path);
    let name = "many.hds";
    let c = shared_and_own(&FileSource::open(&path).unwrap(), name);
    // Every ghost is skipped (2 messages), two duplicates (2 each), the last line.
    let kept: Vec<String> = (5..105).flat_map(skipped).collect();
    let all = 2 * GHOSTS + 2 * 2 + 1;
    assert_eq!((c.rc, c.messages, c.messages_omitted), (Some(11), kept, all - 200));
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn the_edges_of_the_shared_bit_set_agree_with_ploop() {
    let Some(bin) = needs::ploop_drivers("the_edges_of_the_shared_bit_set_agree_with_ploop") else {
        return;
    };
    let dir = scratch();
    let images = [
        ("bat", into_the_bat()),
        ("ghosts", ghosts_first().0),
        ("past", past_ploops_table()),
        ("v1", v1_image()),
    ];
    for (name, bytes) in images {
        let d = compare_bytes(&bin, dir.path(), name, &bytes);
        assert!(d.is_empty(), "{name}: {d:?}");
    }
}

/// v2, 64 KiB clusters, a BAT of 16 entries in a sparse file of 1 TiB: more clusters than the
/// rules keep a bit set for (they keep a sorted list), so ploop's walk keeps its own bit map.
fn sparse_and_large(path: &Path) {
    let (mut bytes, _) = ImageBuilder::new(MIB)
        .cluster_size(64 * KIB)
        .data(0, GuestData::Fill { len: 4096, byte: 1 })
        .data(64 * KIB, GuestData::Fill { len: 4096, byte: 2 })
        .to_vec()
        .unwrap();
    assert_eq!((get(&bytes, 0), get(&bytes, 1)), (1, 2));
    set(&mut bytes, 5, 1);
    set(&mut bytes, 6, 1 << 20);
    set(&mut bytes, 7, 1 << 20);
    std::fs::write(path, &bytes).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
}

#[test]
fn a_file_too_large_for_the_rules_bit_set_keeps_ploops_own() {
    let dir = scratch();
    let path = dir.path().join("large.hds");
    sparse_and_large(&path);
    let name = "large.hds";
    let c = shared_and_own(&FileSource::open(&path).unwrap(), name);
    let mut want: Vec<String> = [dup(1, 5), dup(1 << 20, 7)].concat();
    want.push(fatal_end(name));
    assert_eq!((c.rc, c.messages, c.messages_omitted), (Some(11), want, 0));
}

/// `pcheck --check-only` (the check driver alone: the mount driver works on a copy in memory,
/// and [`many_ghosts`] and [`sparse_and_large`] are sparse files of 4 GiB and 1 TiB) on `path`: its return code and its messages,
/// every line before its summary, without ploop's `Error in FUNCTION (FILE:LINE): ` prefix.
fn pcheck(bin: &Path, path: &Path) -> (i32, Vec<String>) {
    // Its errors go to stderr, the rest to stdout: one pipe keeps their order.
    let out = std::process::Command::new("sh")
        .args(["-c", "exec \"$0\" --check-only \"$1\" 2>&1"])
        .arg(bin.join("pcheck"))
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let summary = lines.pop().unwrap();
    let rc = summary
        .strip_prefix("CHECK rc=")
        .and_then(|s| s.split(' ').next())
        .unwrap_or_else(|| panic!("no summary: {summary}"))
        .parse()
        .unwrap();
    let bare = |l: String| match (l.strip_prefix("Error in "), l.find("): ")) {
        (Some(_), Some(at)) => l[at + 3..].to_string(),
        _ => l,
    };
    (rc, lines.into_iter().map(bare).collect())
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn more_ghosts_and_a_large_file_agree_with_ploop() {
    let Some(bin) = needs::ploop_drivers("more_ghosts_and_a_large_file_agree_with_ploop") else {
        return;
    };
    let dir = scratch();
    let path = dir.path().join("many.hds");
    many_ghosts(&path);
    let name = path.display().to_string();
    let c = shared_and_own(&FileSource::open(&path).unwrap(), &name);
    let (rc, lines) = pcheck(&bin, &path);
    assert_eq!(Some(rc), c.rc);
    assert_eq!(lines.len() as u64, c.messages.len() as u64 + c.messages_omitted);
    assert_eq!(lines[..c.messages.len()], c.messages[..]);
    // The lines past those kept: the ghosts' and the two duplicates.
    let first = 9;
    let fresh = first + GHOSTS as u32;
    let mut tail: Vec<String> = (105..5 + GHOSTS).flat_map(skipped).collect();
    tail.extend(dup(first, WRAP + 3));
    tail.extend(dup(fresh, WRAP + 4));
    tail.push(fatal_end(&name));
    assert_eq!(lines[c.messages.len()..], tail[..]);

    let path = dir.path().join("large.hds");
    sparse_and_large(&path);
    let name = path.display().to_string();
    let c = shared_and_own(&FileSource::open(&path).unwrap(), &name);
    assert_eq!(pcheck(&bin, &path), (c.rc.unwrap(), c.messages));
}
