//! Random dirty bitmaps for synthetic images ([`BitmapSpec::random`]), reproducible by seed.

use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::builder::BitmapSpec;
use crate::error::BuildError;

/// At most this many dirty runs in a random bitmap, whatever the disk size.
const MAX_RUNS: u64 = 4096;

/// A random bitmap over `granules` granules with `round(density * granules)` dirty ones, in at
/// most [`MAX_RUNS`] runs: the dirty count is split into `k` random positive run lengths and
/// the clean count into `k + 1` random gaps (the outer two may be empty). Work and memory grow
/// with `k`, not with the disk size. Returns dirty `(first granule, count)` runs in order.
fn random_runs(rng: &mut ChaCha8Rng, granules: u64, density: f64) -> Vec<(u64, u64)> {
    let dirty = ((granules as f64 * density).round() as u64).min(granules);
    let clean = granules - dirty;
    if dirty == 0 {
        return Vec::new();
    }
    // About as many runs as independent coin flips would give, within what fits.
    let expected = (granules as f64 * density * (1.0 - density)).round() as u64;
    let k = expected.clamp(1, MAX_RUNS.min(dirty).min(clean + 1));
    let runs = composition(rng, dirty, k);
    let mut gaps = composition(rng, clean + 2, k + 1);
    gaps[0] -= 1;
    gaps[k as usize] -= 1;
    let mut out = Vec::with_capacity(k as usize);
    let mut at = 0u64;
    for (i, len) in runs.into_iter().enumerate() {
        at += gaps[i];
        out.push((at, len));
        at += len;
    }
    out
}

/// `n` split into `k` positive parts (`1 <= k <= n`), uniformly among all such splits: the cut
/// points are `k - 1` distinct values of `1..n`, drawn with Floyd's algorithm.
fn composition(rng: &mut ChaCha8Rng, n: u64, k: u64) -> Vec<u64> {
    let mut cuts = std::collections::BTreeSet::new();
    let m = k - 1;
    // Floyd: for j in (N - m)..N pick t in 0..=j; take t, or j if t is taken. Here N = n - 1
    // values 1..=n-1, shifted by 1.
    for j in (n - 1 - m)..(n - 1) {
        let t = rng.random_range(0..=j);
        if !cuts.insert(t + 1) {
            cuts.insert(j + 1);
        }
    }
    let mut parts = Vec::with_capacity(k as usize);
    let mut prev = 0u64;
    for c in cuts {
        parts.push(c - prev);
        prev = c;
    }
    parts.push(n - prev);
    parts
}

impl BitmapSpec {
    /// A random bitmap over a disk of `virtual_size` bytes with `round(density * granules)`
    /// dirty granules of `granularity` bytes, in at most 4096 runs; the same `seed` gives the
    /// same bitmap, and its id comes from the same generator (ChaCha8; a version 4 UUID).
    /// Work and memory grow with the run count, not with the disk size.
    pub fn random(seed: u64, virtual_size: u64, granularity: u64, density: f64) -> Result<BitmapSpec, BuildError> {
        if granularity < 512 || !granularity.is_power_of_two() || granularity > 1 << 31 {
            return Err(BuildError::Granularity { found: granularity });
        }
        if !(0.0..=1.0).contains(&density) {
            return Err(BuildError::Density { found: density });
        }
        random_bitmap(seed, virtual_size, granularity, density)
    }
}

fn random_bitmap(seed: u64, virtual_size: u64, granularity: u64, density: f64) -> Result<BitmapSpec, BuildError> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut id = [0u8; 16];
    rng.fill_bytes(&mut id);
    let id = *uuid::Builder::from_random_bytes(id).into_uuid().as_bytes();
    let disk = virtual_size.div_ceil(512) * 512;
    let granules = disk.div_ceil(granularity);
    // The last granule may reach past the disk: its run ends with the disk (the builder
    // refuses dirty ranges past it).
    let extents = random_runs(&mut rng, granules, density)
        .into_iter()
        .map(|(g, n)| (g * granularity, (n * granularity).min(disk - g * granularity)))
        .collect();
    Ok(BitmapSpec {
        id,
        granularity,
        extents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec_for(seed: u64, size: u64, density: f64) -> BitmapSpec {
        BitmapSpec::random(seed, size, 65536, density).unwrap()
    }

    fn dirty(runs: &[(u64, u64)]) -> u64 {
        runs.iter().map(|r| r.1).sum()
    }

    fn check_shape(runs: &[(u64, u64)], granules: u64) {
        for w in runs.windows(2) {
            assert!(w[0].0 + w[0].1 < w[1].0, "runs {w:?} touch or overlap");
        }
        for r in runs {
            assert!(r.1 > 0);
        }
        if let Some(last) = runs.last() {
            assert!(last.0 + last.1 <= granules);
        }
    }

    #[test]
    fn density_is_exact_and_runs_are_separate() {
        for (g, d) in [
            (1000u64, 0.5),
            (1000, 0.01),
            (7, 0.5),
            (1, 1.0),
            (64, 0.999),
            (1 << 30, 0.25),
        ] {
            let mut rng = ChaCha8Rng::seed_from_u64(42);
            let runs = random_runs(&mut rng, g, d);
            assert_eq!(dirty(&runs), (g as f64 * d).round() as u64, "g={g} d={d}");
            check_shape(&runs, g);
            assert!(runs.len() as u64 <= MAX_RUNS);
        }
    }

    #[test]
    fn extremes() {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert_eq!(random_runs(&mut rng, 100, 0.0), vec![]);
        assert_eq!(random_runs(&mut rng, 100, 1.0), vec![(0, 100)]);
        assert_eq!(random_runs(&mut rng, 0, 0.5), vec![]);
    }

    #[test]
    fn a_64_tib_disk_is_bounded() {
        // 2^30 granules of 64 KiB: the run count, not the disk, bounds the work.
        let spec = spec_for(7, 64 << 40, 0.5);
        assert_eq!(spec.extents.len() as u64, MAX_RUNS);
        let total: u64 = spec.extents.iter().map(|e| e.1).sum();
        assert_eq!(total, 32 << 40);
    }

    #[test]
    fn reproducible_by_seed() {
        assert_eq!(spec_for(1, 1 << 30, 0.3), spec_for(1, 1 << 30, 0.3));
        assert_ne!(spec_for(1, 1 << 30, 0.3), spec_for(2, 1 << 30, 0.3));
        // The id is a version 4 UUID drawn from the same generator.
        let id = uuid::Uuid::from_bytes(spec_for(1, 1 << 30, 0.3).id);
        assert_eq!(id.get_version_num(), 4);
    }

    #[test]
    fn composition_parts_are_positive_and_sum_to_n() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for (n, k) in [(10u64, 10u64), (10, 1), (5, 3), (1000, 999)] {
            let parts = composition(&mut rng, n, k);
            assert_eq!(parts.len() as u64, k);
            assert_eq!(parts.iter().sum::<u64>(), n);
            assert!(parts.iter().all(|&p| p >= 1));
        }
    }

    #[test]
    fn bad_granularity_and_density_are_typed_errors() {
        assert_eq!(
            BitmapSpec::random(0, 1 << 20, 1000, 0.5),
            Err(BuildError::Granularity { found: 1000 })
        );
        assert_eq!(
            BitmapSpec::random(0, 1 << 20, 256, 0.5),
            Err(BuildError::Granularity { found: 256 })
        );
        assert_eq!(
            BitmapSpec::random(0, 1 << 20, 65536, 1.5),
            Err(BuildError::Density { found: 1.5 })
        );
    }
}
