//! `prlimg corrupt BUNDLE OUT --defect NAME` for bundles: a copy of the folder with one
//! descriptor defect (`BundleDefect`), listed by `prlimg corrupt --list-bundle`.

use std::io;
use std::path::Path;

use parallels_image::{bundle::Bundle, bundle::BundleDefect, Error};

use crate::convert::bundle_failure;
use crate::outln;
use crate::output::Failure;
use crate::Outcome;

/// `prlimg corrupt --list-bundle`: name, rule, summary.
pub fn list() -> Outcome {
    let width = BundleDefect::ALL.iter().map(|d| d.name().len()).max().unwrap_or(0);
    let mut out = String::new();
    for d in BundleDefect::ALL {
        outln!(out, "{:width$}  {:<4}  {}", d.name(), d.rule(), d.summary());
    }
    crate::output::emit(&out)?;
    Ok(0)
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
        Err(Error::Build(e)) => Err(Failure::at(input, e.to_string())),
        Err(e) => Err(Failure::lib(output, &e)),
    }
}
