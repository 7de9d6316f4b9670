//! `prlimg create OUT.hdd --bundle`: a bundle folder from options (one snapshot, the
//! predefined top GUID) or from a bundle recipe (snapshots with data and bitmaps, split
//! segments, plain or expanding root). Built beside OUT and renamed.

use std::io;
use std::path::Path;

use parallels_image::{
    bundle::BundleRecipe, bundle::SnapshotSpec, bundle::DEFAULT_TOP_GUID, recipe::DataRecipe, BitmapSpec, Data, Error,
};

use crate::output::Failure;
use crate::Outcome;

/// `--size`, `--cluster-size`, `--data`, `--bitmap`.
pub type Options<'a> = (Option<u64>, u64, &'a [DataRecipe], &'a [BitmapSpec]);

pub fn run(out: &Path, recipe: Option<&Path>, options: Options<'_>, force: bool) -> Outcome {
    let builder = match recipe {
        Some(path) => {
            let parsed: BundleRecipe = crate::create::read_recipe(path)?;
            parsed.to_builder().map_err(|e| Failure::at(path, e.to_string()))?
        }
        None => {
            let (size, cluster_size, data, bitmaps) = options;
            let size = size.ok_or_else(|| Failure::plain("--size is required"))?;
            parallels_image::bundle::BundleBuilder::new(size)
                .cluster_size(cluster_size)
                .snapshot(SnapshotSpec {
                    guid: DEFAULT_TOP_GUID,
                    parent: None,
                    data: data
                        .iter()
                        .map(|d| {
                            (
                                d.offset,
                                Data::Fill {
                                    len: d.len,
                                    byte: d.byte,
                                },
                            )
                        })
                        .collect(),
                    bitmaps: bitmaps.to_vec(),
                })
        }
    };
    match builder.create(out, force) {
        Ok(_) => Ok(0),
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(Failure::at(out, "already exists (use --force to replace it)"))
        }
        Err(e) => Err(Failure::lib(out, &e)),
    }
}
