//! Random field mutations: one to three header, BAT, extension, feature-record, bitmap or L1
//! fields of a base image set to values ploop treats specially (0, 1, powers of two, the old
//! value plus or minus one, all ones, random), the extension's MD5 usually refreshed so that
//! the walk of its records is reached, sometimes the file cut or grown. Deterministic for a
//! seed (`PLOOP_MUTATION_SEED`, printed); `PLOOP_MUTATIONS` sets how many (default 400).

use parallels_image::raw::extension::checksum;

use crate::corpus::bases;
use crate::fixtures::needs;
use crate::harness::{compare_stream, scratch};

/// SplitMix64: small, good enough to pick fields and values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4).map_or(0, |s| u32::from_le_bytes(s.try_into().unwrap()))
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8).map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap()))
}

/// The fields worth mutating: `(offset, width in bytes)`.
fn fields(b: &[u8]) -> Vec<(usize, usize)> {
    let mut f = vec![
        (16, 4),
        (28, 4),
        (32, 4),
        (36, 8),
        (40, 4),
        (44, 4),
        (48, 4),
        (52, 4),
        (56, 8),
    ];
    let bat_entries = u32_at(b, 32) as usize;
    for i in 0..bat_entries.min(64) {
        if i < 4 || u32_at(b, 64 + 4 * i) != 0 {
            f.push((64 + 4 * i, 4));
        }
    }
    let cluster = u32_at(b, 28) as usize * 512;
    let ext = u64_at(b, 56).saturating_mul(512).min(usize::MAX as u64 / 2) as usize;
    if ext == 0 || ext + cluster > b.len() {
        return f;
    }
    f.extend([(ext, 8), (ext + 8, 1), (ext + 23, 1)]);
    let mut pos = 24;
    while pos + 24 <= cluster {
        let at = ext + pos;
        let (magic, size) = (u64_at(b, at), u32_at(b, at + 16) as usize);
        f.extend([(at, 8), (at + 8, 8), (at + 16, 4)]);
        if magic == 0 {
            break;
        }
        if magic == 0x2038_5FAE_252C_B34A {
            let d = at + 24;
            f.extend([(d, 8), (d + 8, 1), (d + 24, 4), (d + 28, 4)]);
            let l1 = u32_at(b, d + 28) as usize;
            for k in 0..l1.min(4) {
                f.push((d + 32 + 8 * k, 8));
            }
        }
        pos = (pos + 24 + size).div_ceil(8) * 8;
    }
    f
}

fn value(rng: &mut Rng, old: u64, width: usize) -> u64 {
    let max = if width == 8 {
        u64::MAX
    } else {
        (1u64 << (8 * width)) - 1
    };
    let v = match rng.below(12) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 1 << rng.below(8 * width as u64),
        4 => old.wrapping_add(1),
        5 => old.wrapping_sub(1),
        6 => max,
        7 => old ^ (1 << rng.below(8 * width as u64)),
        8 => old.wrapping_mul(2),
        9 => old / 2,
        10 => [64, 128, 2048, 4096, 0x312e_3276, 0x746f_6e59][rng.below(6) as usize],
        _ => rng.next(),
    };
    v & max
}

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn random_field_mutations_agree_with_ploop() {
    let Some(bin) = needs::ploop_drivers("random_field_mutations_agree_with_ploop") else {
        return;
    };
    let seed: u64 = std::env::var("PLOOP_MUTATION_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_0013);
    let count: usize = std::env::var("PLOOP_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(400);
    eprintln!("random_field_mutations_agree_with_ploop: seed {seed}, {count} mutations");
    let bases = bases();
    let mut rng = Rng(seed);
    // Made one at a time as the workers take them (in the same order, from the same seed).
    let mut next = 0..count;
    let images = std::iter::from_fn(move || {
        let n = next.next()?;
        let (base_name, base) = &bases[rng.below(bases.len() as u64) as usize];
        let mut b = base.clone();
        let cluster = u32_at(&b, 28) as usize * 512;
        let ext = u64_at(&b, 56) as usize * 512;
        let mut what = Vec::new();
        for _ in 0..1 + rng.below(3) {
            if rng.below(12) == 0 {
                // Cut or grow the file by a sector, a cluster or a random amount.
                let len = b.len() as u64;
                let new = match rng.below(4) {
                    0 => len - 512,
                    1 => len - cluster as u64,
                    2 => len + 512,
                    _ => len - rng.below(len),
                };
                b.resize(new as usize, 0);
                what.push(format!("len={new}"));
                continue;
            }
            let f = fields(&b);
            let (at, width) = f[rng.below(f.len() as u64) as usize];
            if at + width > b.len() {
                continue;
            }
            let old = match width {
                1 => u64::from(b[at]),
                4 => u64::from(u32_at(&b, at)),
                _ => u64_at(&b, at),
            };
            let v = value(&mut rng, old, width);
            b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            what.push(format!("@{at}={v:#x}"));
        }
        // Refresh the MD5 three times out of four, so that the record walk is reached.
        if ext != 0 && ext + cluster <= b.len() && rng.below(4) != 0 {
            let sum = checksum(&b[ext + 24..ext + cluster]);
            b[ext + 8..ext + 24].copy_from_slice(&sum);
        }
        Some((format!("m{n}_{base_name}_{}", what.join("_")), b))
    });
    let dir = scratch();
    assert_eq!(compare_stream(&bin, dir.path(), images), count);
}
