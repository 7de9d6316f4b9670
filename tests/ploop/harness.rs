//! Running the ploop oracle (`shared/oracles/ploop/`): finding its drivers, running them on an
//! image file (read-only, bytes checked unchanged; the mount driver on a copy), and the
//! comparison of [`predict_ploop`] with what they did.

#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use parallels_image::oracle::ploop::{self, PloopDrivers, PloopObservation};
use parallels_image::{ploop::predict_ploop, ploop::PloopPrediction};
use rayon::prelude::*;

/// How long one driver may run in a test.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// What the drivers did with one image (the library's [`PloopObservation`]).
pub type Observed = PloopObservation;

/// Runs the three drivers on `path` ([`PloopDrivers::observe`]: the read-only ones checked to
/// leave it unchanged, the mount driver on a copy next to it); panics when they cannot be run or
/// their output makes no sense.
pub fn observe(bin: &Path, path: &Path) -> Observed {
    let drivers = PloopDrivers::at(bin).expect("the ploop drivers");
    drivers
        .observe(path, TIMEOUT)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The differences between a prediction and an observation, one line each (empty: they agree;
/// [`parallels_image::oracle::ploop::differences`]).
pub fn differences(p: &PloopPrediction, o: &Observed) -> Vec<String> {
    ploop::differences(p, o).iter().map(ToString::to_string).collect()
}

/// Writes `bytes` to `dir/name.hds`, predicts, observes, and returns the differences.
pub fn compare_bytes(bin: &Path, dir: &Path, name: &str, bytes: &[u8]) -> Vec<String> {
    let path = dir.join(format!("{name}.hds"));
    std::fs::write(&path, bytes).unwrap();
    let d = compare_file(bin, &path);
    let _ = std::fs::remove_file(&path);
    d
}

/// Predicts and observes the image at `path`; returns the differences.
pub fn compare_file(bin: &Path, path: &Path) -> Vec<String> {
    let bytes = std::fs::read(path).unwrap();
    let predicted = predict_ploop(&bytes, &path.display().to_string()).unwrap();
    let observed = observe(bin, path);
    differences(&predicted, &observed)
}

/// Compares every image (in parallel) and panics with every disagreement, naming the image.
/// Returns how many images were compared.
pub fn compare_all(bin: &Path, dir: &Path, images: Vec<(String, Vec<u8>)>) -> usize {
    compare_stream(bin, dir, images.into_iter())
}

/// [`compare_all`] of images made one at a time as the workers take them (`par_bridge`): only
/// the images being compared are in memory, not the whole campaign (the defects and mutations
/// campaigns hold gigabytes otherwise).
pub fn compare_stream(bin: &Path, dir: &Path, images: impl Iterator<Item = (String, Vec<u8>)> + Send) -> usize {
    use rayon::iter::ParallelBridge;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let count = AtomicUsize::new(0);
    let mut failures: Vec<String> = images
        .par_bridge()
        .filter_map(|(name, bytes)| {
            count.fetch_add(1, Ordering::Relaxed);
            let d = compare_bytes(bin, dir, &name, &bytes);
            drop(bytes);
            (!d.is_empty()).then(|| format!("{name}:\n  {}", d.join("\n  ")))
        })
        .collect();
    let n = count.into_inner();
    failures.sort();
    let shown: Vec<&String> = failures.iter().take(25).collect();
    assert!(
        failures.is_empty(),
        "{} of {n} images disagree with ploop:\n{}",
        failures.len(),
        shown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join("\n")
    );
    n
}

/// A scratch folder on a disk filesystem (ploop's check opens images with O_DIRECT).
pub fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("ploop-oracle")
        .tempdir_in(std::env::temp_dir())
        .unwrap()
}
