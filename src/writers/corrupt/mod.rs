//! A catalogue of defects: planned damage to a valid image, one rule of `spec/` at a time.
//!
//! [`plan`] looks at a parsed image and returns a [`Patch`] (byte writes and a new file length)
//! that breaks exactly one rule. Where damage would break more than the intended rule, the plan
//! does what is needed to keep the others intact:
//!
//! - after any edit inside the extension cluster the MD5 is recomputed (except for
//!   [`DefectKind::ExtBadChecksum`]), so the checksum rule does not fire too;
//! - a cluster that has to move (a data cluster below a new `data_off`, an extension or bitmap
//!   cluster that must sit at an unaligned or cut-off place) is copied to the end of the file;
//! - when the damage leaves the end of the file unreferenced (a BAT or L1 entry redirected away
//!   from the last cluster, a bitmap that no longer counts as one), the file is cut back to the
//!   end of the referenced data as the validator's leak rule measures it, so that rule does not
//!   fire too — except where that would cut off clusters a flagged bitmap record still points
//!   at: the extension cluster then moves to the end of the file instead.
//!
//! The `seed` picks among the candidate places (which BAT entry, which feature, which L1 entry)
//! as `seed % candidates`, so the same image, defect and seed always give the same patch.
//!
//! The catalogue is [`DefectKind`]: one variant per defect, each knowing its [`Rule`]. Planning
//! dispatches on it with an exhaustive `match`, one file per region of the image (`header`,
//! `bat`, `extension`, `bitmaps`, and `placement` for R43–R49); the edit session that every plan
//! works in is `edit`.

mod bat;
mod bitmaps;
mod edit;
mod extension;
mod header;
mod placement;

use std::fmt;
use std::str::FromStr;

use crate::error::{PlanError, Result};
use crate::image::Image;
use crate::rule::Rule;

pub use edit::Patch;
use edit::Work;

macro_rules! defects {
    ($($kind:ident $name:literal $rule:ident $summary:literal;)*) => {
        /// One kind of damage: the rule it breaks, its name and what it does.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum DefectKind {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($rule), "): ", $summary, ".")]
                $kind,
            )*
        }

        impl DefectKind {
            /// Every defect, in rule order (the order of `prlimg corrupt --list`).
            pub const ALL: &'static [DefectKind] = &[$(DefectKind::$kind),*];

            /// The name `prlimg corrupt --defect` takes (`"inuse-set"`).
            pub const fn name(self) -> &'static str {
                match self { $(DefectKind::$kind => $name,)* }
            }

            /// The rule it breaks.
            pub const fn rule(self) -> Rule {
                match self { $(DefectKind::$kind => Rule::$rule,)* }
            }

            /// What it does to the image.
            pub const fn summary(self) -> &'static str {
                match self { $(DefectKind::$kind => $summary,)* }
            }
        }
    };
}

defects! {
    BadMagic "bad-magic" R1 "flips the case of one byte of the header magic";
    BadVersion "bad-version" R2 "sets the header version to 3, 1, 0 or a byte-swapped 2";
    ZeroTracks "zero-tracks" R3 "sets tracks (sectors per cluster) to 0";
    TooBigCluster "too-big-cluster" R4 "sets tracks to 4186128, one above QEMU's limit";
    CatalogTooLarge "catalog-too-large" R5 "sets bat_entries to 536870912, one above QEMU's limit";
    ExtOffTooBig "ext-off-too-big" R6 "sets ext_off to INT64_MAX >> 9";
    InuseSet "inuse-set" R7 "sets inuse to \"Ynot\": the image was not closed cleanly";
    UnknownInuse "unknown-inuse" R8 "sets inuse to 0x76322e31, a byte-swapped \"v2.1\"";
    UnknownFlags "unknown-flags" R9 "sets one undefined bit (2..31) of the header flags";
    V1SizeHighBits "v1-size-high-bits" R10 "v1 images only: sets a bit above the low 32 bits of nb_sectors";
    SizeBeyondBat "size-beyond-bat" R11
        "sets nb_sectors one sector above what the BAT covers (and every bitmap's size with it)";
    DataOffZero "data-off-zero" R12 "v2 images only: sets data_off to 0";
    DataOffUnaligned "data-off-unaligned" R13
        "v2 images only: moves data_off one sector up; a data cluster at the old start moves to the end of the file";
    DataOffInsideBat "data-off-inside-bat" R14
        "moves data_off one cluster down into the BAT or, if it cannot go lower, grows the BAT by one entry into the first data cluster (whose first 4 bytes are zeroed)";
    DataOffPastEof "data-off-past-eof" R15
        "moves data_off past the end of the file and unallocates every BAT entry (they would all be below the data area)";
    BatEntryInsideHeader "bat-entry-inside-header" R16
        "points a BAT entry into the header and BAT area or, when no entry can point there, raises data_off above the first data cluster";
    BatEntryUnaligned "bat-entry-unaligned" R17
        "v1 images only: moves a BAT entry one sector off the cluster grid of the data area";
    BatEntryPastEof "bat-entry-past-eof" R18 "points a BAT entry at a cluster past the end of the file";
    BatEntryDuplicate "bat-entry-duplicate" R19 "points a BAT entry at the cluster of another one";
    TrailingLeak "trailing-leak" R20 "appends a cluster that nothing references";
    ExtOffUnaligned "ext-off-unaligned" R21
        "copies the extension cluster to the end of the file, one sector off the cluster grid";
    ExtPastEof "ext-past-eof" R22
        "copies the extension cluster to the end of the file and cuts the file inside its zero tail";
    ExtOverlapData "ext-overlap-data" R23 "points a BAT entry at the extension cluster";
    ExtBadMagic "ext-bad-magic" R24 "changes one byte of the extension magic";
    ExtBadChecksum "ext-bad-checksum" R25 "flips one bit of the extension's stored MD5";
    FeatureTruncated "feature-truncated" R26
        "grows the last feature's data so that only 8 or 16 bytes are left for the next header \
         (a bitmap record then also has extra data, R33, non-canonical)";
    FeatureFlagsNecessary "feature-flags-necessary" R27 "sets the NECESSARY flag of a feature record";
    FeatureFlagsTransit "feature-flags-transit" R27 "sets the TRANSIT flag of a feature record";
    FeatureDataOverflow "feature-data-overflow" R28
        "sets a feature's data_size one byte beyond the end of the extension cluster";
    UnknownFeature "unknown-feature" R29 "changes the magic of a dirty-bitmap record to an unknown one";
    MissingEndRecord "missing-end-record" R30
        "grows the last feature's data to the end of the cluster, leaving no room for the end record \
         (a bitmap record then also has extra data, R33, non-canonical)";
    NonzeroPadding "nonzero-padding" R31 "sets a byte of the extension cluster after the end record";
    BitmapDataTooShort "bitmap-data-too-short" R32 "cuts a bitmap record's data_size by one byte, short of its L1 table";
    BitmapExtraData "bitmap-extra-data" R33 "appends 8 bytes of data after a bitmap's L1 table";
    BitmapSizeMismatch "bitmap-size-mismatch" R34 "sets a bitmap's size one sector above nb_sectors";
    GranularityZero "granularity-zero" R35 "sets a bitmap's granularity to 0";
    GranularityNotPowerOfTwo "granularity-not-power-of-two" R35 "multiplies a bitmap's granularity by 3";
    GranularityOverflow "granularity-overflow" R36
        "sets a bitmap's granularity to 2^23 sectors (4 GiB, beyond u32 bytes), with the clean L1 table that size calls for";
    L1SizeWrong "l1-size-wrong" R37 "adds a clean entry to a bitmap's L1 table (and data_size)";
    L1SizeZero "l1-size-zero" R37 "empties a bitmap's L1 table, as ploop does for an empty bitmap";
    L1EntryUnaligned "l1-entry-unaligned" R38
        "copies a bitmap cluster to the end of the file, one sector off the cluster grid";
    L1EntryPastEof "l1-entry-past-eof" R39 "points an L1 entry at a cluster past the end of the file";
    L1EntryOverlapBat "l1-entry-overlap-bat" R40 "points an L1 entry (not the last chunk) at a cluster inside the BAT";
    L1EntryOverlapExt "l1-entry-overlap-ext" R40 "points an L1 entry (not the last chunk) at the extension cluster";
    L1EntryOverlapData "l1-entry-overlap-data" R40 "points an L1 entry (not the last chunk) at a data cluster";
    L1EntryOverlapL1 "l1-entry-overlap-l1" R40
        "points an L1 entry (not the last chunk) at the bitmap cluster of another L1 entry";
    DuplicateBitmapId "duplicate-bitmap-id" R41 "gives a bitmap the id of another one";
    BitmapTrailingBits "bitmap-trailing-bits" R42 "sets the first bit past the last granule in a bitmap's last chunk";
    BatEntryPastDisk "bat-entry-past-disk" R43
        "adds a BAT entry past the clusters of the disk, pointing at a new cluster at the end of the file";
    BatSlackNonzero "bat-slack-nonzero" R44
        "copies an allocated BAT entry (or 1) into a slot between the end of the BAT and the data area, where ploop reads it";
    ExtBeforeData "ext-before-data" R45
        "moves the data area one cluster up (its data clusters there to the end of the file) and the extension cluster into the room \
         (whose bytes are then also non-zero slots, R44)";
    UnreferencedCluster "unreferenced-cluster" R46
        "unallocates a BAT entry whose cluster has referenced clusters after it: a hole QEMU's check does not see";
    V1DataOffUnset "v1-data-off-unset" R47
        "v1 images only: sets data_off to 0 (the end of the BAT) or 1, where the data area already starts";
    BatTooLargeToRead "bat-too-large-to-read" R48
        "on an image with nothing after its BAT: sets bat_entries one above what QEMU reads in one request \
         (the data area is then inside the BAT, R14)";
    BitmapOnEmptyDisk "bitmap-on-empty-disk" R49
        "shrinks the disk to 0 sectors: unallocates every BAT entry, empties every bitmap (size 0, no L1 table)";
}

impl DefectKind {
    /// Rules that fire besides [`DefectKind::rule`]: a bitmap record grown to fill the cluster
    /// has extra data (R33, non-canonical); an extension before the data area is in the slots
    /// ploop reads as BAT entries (R44); a BAT too large to read holds the data area (R14).
    pub const fn also_breaks(self) -> &'static [Rule] {
        match self {
            DefectKind::FeatureTruncated | DefectKind::MissingEndRecord => &[Rule::R33],
            DefectKind::ExtBeforeData => &[Rule::R44],
            DefectKind::BatTooLargeToRead => &[Rule::R14],
            _ => &[],
        }
    }
}

impl fmt::Display for DefectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DefectKind {
    type Err = PlanError;

    /// The defect with this name (`"inuse-set"`); [`PlanError::UnknownDefect`] otherwise.
    fn from_str(name: &str) -> Result<DefectKind, PlanError> {
        DefectKind::ALL
            .iter()
            .copied()
            .find(|d| d.name() == name)
            .ok_or_else(|| PlanError::UnknownDefect { name: name.to_string() })
    }
}

/// Plans `defect` on a parsed valid image (parsed whole or compact). `seed` picks among
/// candidate places (e.g. which BAT entry) deterministically.
///
/// Errors: [`PlanError::NotApplicable`] (as [`crate::Error::Plan`]) when the image lacks the
/// structure the defect needs, naming it as a [`crate::Requirement`]; I/O errors from the
/// source.
///
/// ```
/// use parallels_image::corrupt::{self, DefectKind, Patch};
/// use parallels_image::{Image, ImageBuilder};
///
/// let (bytes, _) = ImageBuilder::new(1 << 20).to_vec()?;
/// let image = Image::parse(&bytes)?;
/// let patch = corrupt::plan(&image, DefectKind::InuseSet, 0)?;
/// assert_eq!(patch, Patch { writes: vec![(44, b"Ynot".to_vec())], set_len: None });
/// # Ok::<(), parallels_image::Error>(())
/// ```
pub fn plan(image: &Image<'_>, defect: DefectKind, seed: u64) -> Result<Patch> {
    let mut w = Work::new(image, defect);
    apply(&mut w, seed)?;
    w.finish()
}

/// The dispatch: one arm per defect, so a defect without a plan does not compile.
fn apply(w: &mut Work<'_, '_>, seed: u64) -> Result<()> {
    use extension::Grow;
    use DefectKind as D;
    match w.defect {
        D::BadMagic => header::bad_magic(w, seed),
        D::BadVersion => header::bad_version(w, seed),
        D::ZeroTracks => header::zero_tracks(w),
        D::TooBigCluster => header::too_big_cluster(w),
        D::CatalogTooLarge => header::catalog_too_large(w),
        D::ExtOffTooBig => header::ext_off_too_big(w),
        D::InuseSet => header::inuse_set(w),
        D::UnknownInuse => header::unknown_inuse(w),
        D::UnknownFlags => header::unknown_flags(w, seed),
        D::V1SizeHighBits => header::v1_size_high_bits(w, seed),
        D::SizeBeyondBat => header::size_beyond_bat(w),
        D::DataOffZero => header::data_off_zero(w),
        D::DataOffUnaligned => header::data_off_unaligned(w),
        D::DataOffInsideBat => header::data_off_inside_bat(w),
        D::DataOffPastEof => header::data_off_past_eof(w),
        D::BatEntryInsideHeader => bat::entry_inside_header(w, seed),
        D::BatEntryUnaligned => bat::entry_unaligned(w, seed),
        D::BatEntryPastEof => bat::entry_past_eof(w, seed),
        D::BatEntryDuplicate => bat::entry_duplicate(w, seed),
        D::TrailingLeak => bat::trailing_leak(w),
        D::ExtOffUnaligned => extension::off_unaligned(w),
        D::ExtPastEof => extension::past_eof(w),
        D::ExtOverlapData => extension::overlap_data(w, seed),
        D::ExtBadMagic => extension::bad_magic(w, seed),
        D::ExtBadChecksum => extension::bad_checksum(w, seed),
        D::FeatureTruncated => extension::grow_last_record(w, seed, Grow::LeaveAShortHeader),
        D::FeatureFlagsNecessary => extension::flag_feature(w, seed, crate::raw::feature::FEATURE_FLAG_NECESSARY),
        D::FeatureFlagsTransit => extension::flag_feature(w, seed, crate::raw::feature::FEATURE_FLAG_TRANSIT),
        D::FeatureDataOverflow => extension::data_overflow(w, seed),
        D::UnknownFeature => extension::unknown_feature(w, seed),
        D::MissingEndRecord => extension::grow_last_record(w, seed, Grow::ToTheEnd),
        D::NonzeroPadding => extension::nonzero_padding(w, seed),
        D::BitmapDataTooShort => bitmaps::data_too_short(w, seed),
        D::BitmapExtraData => bitmaps::extra_data(w, seed),
        D::BitmapSizeMismatch => bitmaps::size_mismatch(w, seed),
        D::GranularityZero => bitmaps::granularity_zero(w, seed),
        D::GranularityNotPowerOfTwo => bitmaps::granularity_not_power_of_two(w, seed),
        D::GranularityOverflow => bitmaps::granularity_overflow(w, seed),
        D::L1SizeWrong => bitmaps::l1_size_wrong(w, seed),
        D::L1SizeZero => bitmaps::l1_size_zero(w, seed),
        D::L1EntryUnaligned => bitmaps::l1_entry_unaligned(w, seed),
        D::L1EntryPastEof => bitmaps::l1_entry_past_eof(w, seed),
        D::L1EntryOverlapBat => bitmaps::l1_overlap(w, seed, bitmaps::Target::Bat),
        D::L1EntryOverlapExt => bitmaps::l1_overlap(w, seed, bitmaps::Target::Extension),
        D::L1EntryOverlapData => bitmaps::l1_overlap(w, seed, bitmaps::Target::Data),
        D::L1EntryOverlapL1 => bitmaps::l1_overlap(w, seed, bitmaps::Target::OtherL1),
        D::DuplicateBitmapId => bitmaps::duplicate_id(w, seed),
        D::BitmapTrailingBits => bitmaps::trailing_bits(w, seed),
        D::BatEntryPastDisk => placement::entry_past_disk(w),
        D::BatSlackNonzero => placement::slack_nonzero(w, seed),
        D::ExtBeforeData => placement::ext_before_data(w),
        D::UnreferencedCluster => placement::unreferenced_cluster(w, seed),
        D::V1DataOffUnset => placement::v1_data_off_unset(w),
        D::BatTooLargeToRead => placement::bat_too_large_to_read(w),
        D::BitmapOnEmptyDisk => placement::bitmap_on_empty_disk(w),
    }
}

/// The candidate at `seed % len`.
fn pick<T: Clone>(v: &[T], seed: u64) -> T {
    v[(seed % v.len() as u64) as usize].clone()
}
