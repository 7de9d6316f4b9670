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
//! Each layer uses only the ones above it (a test, `layers::modules_depend_only_on_lower_layers`,
//! reads the sources and fails on an arrow back up). The right-hand column is the folder of
//! `src/` a module's file is in: a change to the views goes in `views/`, a new rule in `rules/`,
//! anything that writes in `writers/`, a model of another program in `predict/`. Every module
//! keeps its path at the crate root (`parallels_image::qemu`, not `predict::qemu`).
//!
//! ```text
//!  raw            the on-disk grammar: zerocopy + binrw derive types        raw/
//!                 (public, for fuzzers and tools)
//!  rule, violation, error
//!                 the numbered rules, their severities, the violations      rules/, error.rs
//!                 (with the header's field table) and the typed errors
//!  source, outfile, size
//!                 where bytes come from (a slice, a Vec, a file read only   views/, writers/,
//!                 where metadata is), where they go (careful output         size.rs
//!                 files), sizes with suffixes
//!  header, extension, bitmap, image
//!                 zero-copy views over a Source                             views/
//!  helper, validate
//!                 every rule, as typed Violations; open/validate            rules/
//!  builder, random, recipe, stream, edit
//!                 writing whole images (random bitmaps, recipes); images    writers/, views/
//!                 read from a stream; rewriting an image's bitmaps          (stream)
//!  qemu, ploop    what QEMU 10 and ploop 9 do with an image                 predict/
//!  check          a whole conformance check (rules + statistics +           rules/
//!                 predictions)
//!  repair         repair plans (typed actions: the rule, the bytes, what    writers/
//!                 is lost) and writing the repaired image, the extension
//!                 and bitmaps kept
//!  picture        SVG pictures: the file's layout with its findings, the    picture.rs
//!                 guest view, dirty maps
//!  corrupt, mutate
//!                 the defect catalogue: planned damage, one rule at a       writers/
//!                 time; structure-aware variants by seed for fuzzers
//!                 (header fields, BAT and L1 entries, feature records,
//!                 bitmap headers, the checksum put right)
//!  bundle         disk bundles (NAME.hdd/ with DiskDescriptor.xml): the     bundle/
//!                 descriptor, the D rules (spec/bundles.md), guest data
//!                 through snapshot chains and split storages, writing
//!                 bundles, descriptor defects
//!  corpus, guest  folders of files for fuzzers (variants, the seed corpus)  writers/, guest.rs
//!                 with their manifests; the guest's bytes from an image, a
//!                 bundle or a raw file: copied, mapped
//!  readers        what libyal's libphdi and fox-it's dissect.hypervisor do  predict/
//!                 with a bundle or an image: models of both, compared MiB
//!                 by MiB with the guest's bytes
//!  report         a whole path checked, whatever it holds (image, device,   report/
//!                 stream, bundle): typed reports (image and bundle checks,
//!                 `info` of both, a batch's walk and summary, repair runs),
//!                 each rendered for people and as JSON, for `prlimg` and
//!                 the Python package
//!  oracle         running the real programs (qemu-img info/check, the       oracle/
//!                 ploop oracle's drivers) with a timeout, their outcomes
//!                 typed and compared with the predictions (feature `oracle`)
//!  (the CLI)      the command-line tool, behind the `cli` feature           bin/prlimg/
//! ```
//!
//! Every public type has one path. The crate root holds what a format user needs first: opening
//! and checking an image ([`open`], [`validate`], [`check`]), the image and its views
//! ([`Image`], [`Header`], [`Bitmap`], [`Extension`]), the builder ([`ImageBuilder`]), the errors
//! and the rules ([`Violation`], [`Rule`]). The rest lives in namespaces: [`raw`] (the on-disk
//! grammar), [`bundle`] (disk bundles), [`guest`] (a guest's bytes from an image, a bundle or a
//! raw file), [`picture`], [`edit`] (rewriting an image's bitmaps), [`recipe`], [`repair`],
//! [`outfile`], the predictions [`qemu`], [`ploop`] and [`readers`], the defect catalogue
//! [`corrupt`], the fuzzing mutator [`mutate`] and its seed [`corpus`], [`report`] and `oracle`.
//!
//! # Example
//! ```
//! use parallels_image::{BitmapSpec, GuestData, ImageBuilder};
//!
//! let (bytes, _) = ImageBuilder::new(16 << 20)
//!     .cluster_size(64 << 10)
//!     .data(0, GuestData::Fill { len: 4096, byte: 0xaa })
//!     .bitmap(BitmapSpec { id: [7; 16], granularity: 65536, extents: vec![(131072, 65536)] })
//!     .to_vec()?;
//! let image = parallels_image::open(&bytes)?;
//! let bitmaps = image.bitmaps();
//! assert_eq!(bitmaps[0].dirty_extents()?, vec![(131072, 65536)]);
//! # Ok::<(), parallels_image::Error>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The folders are the layers (see "Layers" above); the modules keep their paths at the root.
mod predict;
mod rules;
mod views;
mod writers;

pub mod bundle;
mod error;
pub mod guest;
#[cfg(feature = "oracle")]
#[cfg_attr(docsrs, doc(cfg(feature = "oracle")))]
pub mod oracle;
pub mod picture;
pub mod raw;
pub mod report;
mod size;

pub use predict::{ploop, qemu, readers};
pub use writers::{corpus, corrupt, edit, mutate, outfile, recipe, repair};

use rules::{check, helper, rule, validate, violation};
use views::{bitmap, extension, header, image, source, stream};
use writers::builder;

pub use bitmap::{Bitmap, BitmapGeometry, BitmapSummary, L1Table, MapError, MapFormat};
pub use builder::{BitmapSpec, BuiltLayout, GuestData, ImageBuilder};
pub use check::{check, check_versions, ClusterStatistics, Conformance, JSON_SCHEMA};
pub use error::{BuildError, Error, PlanError, RepairError, Requirement, Result};
pub use extension::{Extension, ExtensionDigest, FeatureEntry, ListEnd};
pub use header::{Header, Inuse, Variant};
pub use image::{AllocatedEntries, BatTable, Image, RuleMode};
pub use rule::{Rule, Severity};
pub use size::{parse_size, ParseSizeError};
pub use source::{FileSource, Source};
pub use stream::StreamSource;
pub use validate::{open, open_with, validate, validate_with, Finding, Report, Threads, Verdict};
pub use violation::{Location, Region, Violation};
