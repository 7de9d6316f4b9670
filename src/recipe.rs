//! A declarative description of an image to build: what `prlimg create` reads from JSON or TOML,
//! what the fuzzers generate, and what property tests shrink.

use crate::builder::{BitmapSpec, Data, ImageBuilder};
use crate::error::BuildError;
use crate::header::Variant;

/// One data write.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DataRecipe {
    /// Guest byte offset.
    pub offset: u64,
    /// Number of bytes.
    pub len: u64,
    /// The byte written `len` times.
    pub byte: u8,
}

/// One bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BitmapRecipe {
    /// The name: a UUID string (any form `uuid` parses), stored in the order written.
    pub id: String,
    /// Granularity in bytes (a power of two, at least 512).
    pub granularity: u64,
    /// Dirty `(offset, length)` guest byte ranges.
    pub dirty: Vec<(u64, u64)>,
}

/// A whole image.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Recipe {
    /// Virtual size in bytes.
    pub size: u64,
    /// Cluster size in bytes (default 1 MiB).
    #[cfg_attr(feature = "serde", serde(default = "default_cluster"))]
    pub cluster_size: u64,
    /// Use the v1 magic.
    #[cfg_attr(feature = "serde", serde(default))]
    pub v1: bool,
    /// Data writes.
    #[cfg_attr(feature = "serde", serde(default))]
    pub data: Vec<DataRecipe>,
    /// Bitmaps.
    #[cfg_attr(feature = "serde", serde(default))]
    pub bitmaps: Vec<BitmapRecipe>,
}

#[cfg(feature = "serde")]
fn default_cluster() -> u64 {
    1 << 20
}

impl Recipe {
    /// The builder for this recipe.
    pub fn to_builder(&self) -> crate::error::Result<ImageBuilder> {
        let mut b = ImageBuilder::new(self.size)
            .cluster_size(self.cluster_size)
            .variant(if self.v1 { Variant::V1 } else { Variant::V2 });
        for d in &self.data {
            b = b.data(
                d.offset,
                Data::Fill {
                    len: d.len,
                    byte: d.byte,
                },
            );
        }
        for m in &self.bitmaps {
            let id = uuid::Uuid::parse_str(&m.id).map_err(|e| BuildError::BitmapId {
                id: m.id.clone(),
                reason: e.to_string(),
            })?;
            b = b.bitmap(BitmapSpec {
                id: *id.as_bytes(),
                granularity: m.granularity,
                extents: m.dirty.clone(),
            });
        }
        Ok(b)
    }
}
