//! `prlimg corrupt BUNDLE OUT --defect NAME` for bundles: a copy of the folder with one
//! descriptor defect (`BundleDefect`), listed by `prlimg corrupt --list-bundle`.

use std::io;
use std::path::Path;

use parallels_image::{Bundle, BundleDefect, Error};

use crate::convert::bundle_failure;
use crate::outln;
use crate::output::Failure;
use crate::Outcome;

/// Appends the bundle defects to `--list`.
pub fn list(out: &mut String, width: usize) {
    let width = BundleDefect::ALL
        .iter()
        .map(|d| d.name().len())
        .max()
        .unwrap_or(0)
        .max(width);
    for d in BundleDefect::ALL {
        outln!(out, "{:width$}  {:<4}  {} (bundles)", d.name(), d.rule(), d.summary());
    }
}

pub fn run(input: &Path, output: &Path, defect: &str, force: bool) -> Outcome {
    let Some(defect) = BundleDefect::from_name(defect) else {
        return Err(Failure::plain(format!(
            "unknown bundle defect {defect:?} (prlimg corrupt --list-bundle shows them)"
        )));
    };
    let bundle = Bundle::open(input).map_err(|e| bundle_failure(&e))?;
    if let (Ok(a), Ok(b)) = (std::fs::canonicalize(bundle.dir()), std::fs::canonicalize(output)) {
        if a == b {
            return Err(Failure::at(
                output,
                "is the input bundle; write the damaged copy elsewhere",
            ));
        }
    }
    match defect.apply(&bundle, output, force) {
        Ok(()) => Ok(0),
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(Failure::at(output, "already exists (use --force to replace it)"))
        }
        Err(Error::Build(msg)) => Err(Failure::at(input, msg)),
        Err(e) => Err(Failure::lib(output, &e)),
    }
}
