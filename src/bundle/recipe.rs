//! A bundle to build, declaratively: what `prlimg create --bundle --recipe FILE` reads.
//!
//! ```json
//! { "size": 4194304, "cluster_size": 65536, "split_at": [2097152], "plain_root": false,
//!   "snapshots": [
//!     { "guid": "{11110000-0000-4000-8000-000000000001}", "data": [{"offset": 0, "len": 65536, "byte": 17}] },
//!     { "guid": "5fbaabe3-6958-40ff-92a7-860e329aab41", "parent": "{11110000-0000-4000-8000-000000000001}",
//!       "bitmaps": [{"id": "e4f2eed0-37fe-4539-b50b-85d2e7fd235f", "granularity": 65536, "dirty": [[0, 65536]]}] } ] }
//! ```

use super::descriptor::parse_guid_loose;
use super::write::{BundleBuilder, SnapshotSpec};
use crate::builder::{BitmapSpec, GuestData};
use crate::error::{BuildError, Error, Result};
use crate::recipe::{BitmapRecipe, DataRecipe};

/// One snapshot of a [`BundleRecipe`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct SnapshotRecipe {
    /// Its GUID (with or without braces).
    pub guid: String,
    /// Its parent's GUID; absent for the root.
    #[cfg_attr(feature = "serde", serde(default))]
    pub parent: Option<String>,
    /// What it writes over its parent.
    #[cfg_attr(feature = "serde", serde(default))]
    pub data: Vec<DataRecipe>,
    /// Its images' dirty bitmaps (guest offsets; each segment gets its part).
    #[cfg_attr(feature = "serde", serde(default))]
    pub bitmaps: Vec<BitmapRecipe>,
}

/// A whole bundle.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct BundleRecipe {
    /// Disk size in bytes (a multiple of 512); in a recipe file, bytes or a size such as "64M".
    #[cfg_attr(feature = "serde", serde(deserialize_with = "crate::recipe::sizes::one"))]
    pub size: u64,
    /// Cluster size in bytes (default 1 MiB).
    #[cfg_attr(
        feature = "serde",
        serde(default = "default_cluster", deserialize_with = "crate::recipe::sizes::one")
    )]
    pub cluster_size: u64,
    /// Guest byte offsets where the disk is split into segments.
    #[cfg_attr(feature = "serde", serde(default, deserialize_with = "crate::recipe::sizes::many"))]
    pub split_at: Vec<u64>,
    /// Store the root snapshot as Plain (raw) files.
    #[cfg_attr(feature = "serde", serde(default))]
    pub plain_root: bool,
    /// The top snapshot (default: the last).
    #[cfg_attr(feature = "serde", serde(default))]
    pub top: Option<String>,
    /// The images' `inuse` (default 0).
    #[cfg_attr(feature = "serde", serde(default))]
    pub inuse: u32,
    /// The snapshots, root first (default: one, the predefined top GUID, empty).
    #[cfg_attr(feature = "serde", serde(default))]
    pub snapshots: Vec<SnapshotRecipe>,
}

#[cfg(feature = "serde")]
fn default_cluster() -> u64 {
    1 << 20
}

fn guid(text: &str, what: &'static str) -> Result<uuid::Uuid> {
    parse_guid_loose(text).ok_or_else(|| {
        Error::Build(BuildError::Guid {
            what,
            text: text.to_string(),
        })
    })
}

impl BundleRecipe {
    /// The builder for this recipe.
    pub fn to_builder(&self) -> Result<BundleBuilder> {
        let mut b = BundleBuilder::new(self.size)
            .cluster_size(self.cluster_size)
            .split_at(self.split_at.clone())
            .plain_root(self.plain_root)
            .inuse(self.inuse);
        if let Some(t) = &self.top {
            b = b.top(guid(t, "top")?);
        }
        for s in &self.snapshots {
            let mut bitmaps = Vec::new();
            for m in &s.bitmaps {
                bitmaps.push(BitmapSpec {
                    id: *uuid::Uuid::parse_str(&m.id)
                        .map_err(|e| {
                            Error::Build(BuildError::BitmapId {
                                id: m.id.clone(),
                                reason: e.to_string(),
                            })
                        })?
                        .as_bytes(),
                    granularity: m.granularity,
                    extents: m.dirty.clone(),
                });
            }
            b = b.snapshot(SnapshotSpec {
                guid: guid(&s.guid, "snapshot")?,
                parent: s.parent.as_deref().map(|p| guid(p, "parent")).transpose()?,
                data: s
                    .data
                    .iter()
                    .map(|d| {
                        (
                            d.offset,
                            GuestData::Fill {
                                len: d.len,
                                byte: d.byte,
                            },
                        )
                    })
                    .collect(),
                bitmaps,
            });
        }
        Ok(b)
    }
}
