//! Reader, validator and writer for Parallels disk images (`.hds`, `.hdd`) and the Parallels
//! Format Extension with its dirty bitmaps.
//!
//! ```text
//!  byte 0           64                 bat_end        data_off*512          ext_off*512
//!  +----------------+------------------+---- ... ----+----------------------+-------------+----------------+
//!  | header (64 B)  | BAT: u32 x n     |  (padding)  | data clusters ...    | extension   | bitmap         |
//!  |                | 0 = unallocated  |             | one per BAT entry    | cluster     | clusters ...   |
//!  +----------------+------------------+---- ... ----+----------------------+-------------+----------------+
//! ```
//!
//! # Units and byte order
//! Every integer is little-endian. A sector is 512 bytes. `tracks` is the cluster size in
//! sectors. BAT entries are file offsets in sectors (v1 magic `WithoutFreeSpace`) or in clusters
//! (v2 magic `WithouFreSpacExt`); `ext_off` and L1 entries are in sectors for both magics.
//!
//! # Layers
//! - [`raw`]: the on-disk grammar as `zerocopy` + `binrw` derive types.
//! - [`image`], [`extension`], [`bitmap`]: zero-copy parsing over a [`Source`] (a slice or a
//!   file read only where metadata is).
//! - [`validate`]: every rule of `spec/`, as typed [`Violation`]s.
//! - [`builder`]: whole images, with data and bitmaps.
//! - [`qemu`]: what QEMU 10 does with an image.
//!
//! # Example
//! ```
//! use parallels_image::{builder::{BitmapSpec, Data, ImageBuilder}, Image};
//!
//! let (bytes, _) = ImageBuilder::new(16 << 20)
//!     .cluster_size(64 << 10)
//!     .data(0, Data::Fill { len: 4096, byte: 0xaa })
//!     .bitmap(BitmapSpec { id: [7; 16], granularity: 65536, extents: vec![(131072, 65536)] })
//!     .to_vec()?;
//! let image = Image::open(&bytes)?;
//! let bitmaps = image.bitmaps();
//! assert_eq!(bitmaps[0].dirty_extents(&image)?, vec![(131072, 65536)]);
//! # Ok::<(), parallels_image::Error>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bitmap;
pub mod builder;
pub mod corrupt;
pub mod error;
pub mod extension;
pub mod header;
pub mod image;
pub mod raw;
mod rule;
pub mod source;
pub mod validate;

pub use bitmap::Bitmap;
pub use builder::{BitmapSpec, Data, ImageBuilder, Layout};
pub use corrupt::{Defect, Patch};
pub use error::{Error, Location, Region, Result, Severity, Violation};
pub use extension::{Extension, FeatureEntry, ListEnd};
pub use header::{Header, Variant};
pub use image::{AllocatedEntries, Image, Mode};
pub use qemu::{CheckCounts, Prediction, QemuCheck, QemuOutcome};
pub use recipe::{BitmapRecipe, DataRecipe, Recipe};
pub use rule::Rule;
pub use source::{FileSource, Source};
pub use validate::{Finding, Report, Threads};
pub mod qemu;
pub mod recipe;
