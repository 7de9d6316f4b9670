//! A declarative description of an image to build: what `prlimg create` reads from JSON or TOML,
//! what the fuzzers generate, and what property tests shrink.
//!
//! In JSON and TOML (feature `serde`), every size and offset is a number of bytes or a string
//! with `qemu-img`'s suffixes (`"64G"`, `"1M"`, `"64K"`), and unknown keys are refused at every
//! level:
//!
//! ```toml
//! size = "64G"
//! cluster_size = "1M"        # optional, 1 MiB by default
//! v1 = false                 # optional: the v1 magic, BAT in sectors
//!
//! [[data]]                   # LEN copies of BYTE at OFFSET
//! offset = 0
//! len = "4M"
//! byte = 0xaa
//!
//! [[bitmaps]]
//! id = "e4f2eed0-37fe-4539-b50b-85d2e7fd235f"
//! granularity = "64K"
//! dirty = [["5M", "2M"], ["1G", "64K"]]   # (offset, length) ranges within the disk
//! ```

use crate::builder::{BitmapSpec, GuestData, ImageBuilder};
use crate::error::BuildError;
use crate::header::Variant;

/// One data write.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct DataRecipe {
    /// Guest byte offset.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "sizes::one"))]
    pub offset: u64,
    /// Number of bytes.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "sizes::one"))]
    pub len: u64,
    /// The byte written `len` times.
    pub byte: u8,
}

/// One bitmap.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub struct BitmapRecipe {
    /// The name: a UUID string (any form `uuid` parses), stored in the order written.
    pub id: String,
    /// Granularity in bytes (a power of two, at least 512).
    #[cfg_attr(feature = "serde", serde(deserialize_with = "sizes::one"))]
    pub granularity: u64,
    /// Dirty `(offset, length)` guest byte ranges, each within the disk.
    #[cfg_attr(feature = "serde", serde(default, deserialize_with = "sizes::pairs"))]
    pub dirty: Vec<(u64, u64)>,
}

/// A whole image.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(deny_unknown_fields))]
pub struct Recipe {
    /// Virtual size in bytes.
    #[cfg_attr(feature = "serde", serde(deserialize_with = "sizes::one"))]
    pub size: u64,
    /// Cluster size in bytes (default 1 MiB).
    #[cfg_attr(
        feature = "serde",
        serde(default = "default_cluster", deserialize_with = "sizes::one")
    )]
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

/// Sizes in recipes: a number of bytes, or a string that [`parse_size`](crate::parse_size) takes.
#[cfg(feature = "serde")]
pub(crate) mod sizes {
    use std::fmt;

    use serde::de::{self, Deserializer, Visitor};
    use serde::Deserialize;

    struct Size(u64);

    impl<'de> Deserialize<'de> for Size {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Size;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("a size: bytes, or a string such as \"64K\", \"1M\", \"64G\"")
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Size, E> {
                    Ok(Size(v))
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Size, E> {
                    u64::try_from(v)
                        .map(Size)
                        .map_err(|_| E::custom(format!("invalid size {v} (a size cannot be negative)")))
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Size, E> {
                    crate::size::parse_size(v).map(Size).map_err(E::custom)
                }
            }
            d.deserialize_any(V)
        }
    }

    pub(crate) fn one<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        Size::deserialize(d).map(|s| s.0)
    }

    pub(super) fn pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, u64)>, D::Error> {
        let v: Vec<(Size, Size)> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|(o, l)| (o.0, l.0)).collect())
    }

    pub(crate) fn many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        let v: Vec<Size> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|s| s.0).collect())
    }
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
                GuestData::Fill {
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

    /// Bytes of the data clusters the data writes fill (each cluster touched counted once).
    pub fn data_bytes(&self) -> u64 {
        let cluster_size = self.cluster_size;
        if cluster_size == 0 {
            return 0;
        }
        let mut ranges: Vec<(u64, u64)> = self
            .data
            .iter()
            .filter(|d| d.len > 0)
            .map(|d| {
                (
                    d.offset / cluster_size,
                    d.offset.saturating_add(d.len - 1) / cluster_size + 1,
                )
            })
            .collect();
        ranges.sort_unstable();
        let (mut total, mut end) = (0u64, 0u64);
        for (s, e) in ranges {
            let s = s.max(end);
            if e > s {
                total += e - s;
                end = e;
            }
        }
        total.saturating_mul(cluster_size)
    }

    /// Each data write that overlaps an earlier one, with the first earlier one it overlaps (the
    /// later write wins where they do).
    pub fn overlapping_data(&self) -> Vec<(&DataRecipe, &DataRecipe)> {
        let end = |d: &DataRecipe| d.offset.saturating_add(d.len);
        let overlap = |a: &DataRecipe, b: &DataRecipe| a.len > 0 && b.len > 0 && a.offset < end(b) && b.offset < end(a);
        let earlier = |j: usize| self.data[..j].iter().find(|d| overlap(d, &self.data[j]));
        (0..self.data.len())
            .filter_map(|j| earlier(j).map(|e| (&self.data[j], e)))
            .collect()
    }
}
