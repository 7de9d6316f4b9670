//! The format's units as types: [`Sectors`], [`Bytes`] and [`ClusterIndex`].
//!
//! A header field, a BAT entry or an L1 entry holds a bare integer whose unit the format fixes
//! (sectors of 512 bytes, clusters, bytes). These newtypes name the unit, in the manner of
//! gpt-disk-rs's `Lba`, and hold every conversion between units in one place. The values read
//! from an image are hostile: conversions that can overflow are checked (`Option`) or saturate
//! (for values that only need to compare as "too large"); the infallible ones say why they cannot
//! overflow.
//!
//! ```
//! use parallels_image::raw::{Bytes, ClusterIndex, Sectors};
//!
//! assert_eq!(Sectors(8).checked_bytes(), Some(Bytes(4096)));
//! assert_eq!(Sectors(u64::MAX).checked_bytes(), None);
//! assert_eq!(Bytes(4097).sectors_ceil(), Sectors(9));
//! assert_eq!(Bytes(4097).exact_sectors(), None);
//! assert_eq!(ClusterIndex(3).checked_offset(Bytes(1 << 20)), Some(Bytes(3 << 20)));
//! ```

use core::fmt;

use super::SECTOR_SIZE;

/// A count of sectors, or a position in sectors from the start of a file or disk (512 bytes each):
/// `nb_sectors`, `data_off`, `ext_off`, `tracks`, v1 BAT entries, L1 entries, bitmap granularity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Sectors(pub u64);

/// A count of bytes, or a position in bytes from the start of a file or disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct Bytes(pub u64);

/// The index of a cluster: of a guest cluster (a BAT index) or of a cluster of the file (a v2 BAT
/// entry).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(transparent)]
pub struct ClusterIndex(pub u64);

impl Sectors {
    /// Bytes in one sector.
    pub const SIZE: Bytes = Bytes(SECTOR_SIZE);

    /// The number of sectors.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The same length in bytes, or `None` past `u64::MAX` bytes (a hostile 64-bit field).
    #[must_use]
    pub const fn checked_bytes(self) -> Option<Bytes> {
        match self.0.checked_mul(SECTOR_SIZE) {
            Some(b) => Some(Bytes(b)),
            None => None,
        }
    }

    /// The same length in bytes, saturating at `u64::MAX`: for a hostile field that only needs
    /// to compare as "too large".
    #[must_use]
    pub const fn saturating_bytes(self) -> Bytes {
        Bytes(self.0.saturating_mul(SECTOR_SIZE))
    }

    /// The length in bytes of a 32-bit count of sectors. Never overflows: 2^32 sectors are 2^41
    /// bytes.
    #[must_use]
    pub const fn bytes_of_u32(sectors: u32) -> Bytes {
        Bytes(sectors as u64 * SECTOR_SIZE)
    }
}

impl Bytes {
    /// The number of bytes.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Whether the length is a whole number of sectors.
    #[must_use]
    pub const fn is_sector_aligned(self) -> bool {
        self.0.is_multiple_of(SECTOR_SIZE)
    }

    /// The whole sectors in this length, rounding down (the sector a byte offset falls in).
    #[must_use]
    pub const fn sectors_floor(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }

    /// The sectors that cover this length, rounding up.
    #[must_use]
    pub const fn sectors_ceil(self) -> Sectors {
        Sectors(self.0.div_ceil(SECTOR_SIZE))
    }

    /// The length in sectors when it is a whole number of them, else `None`.
    #[must_use]
    pub const fn exact_sectors(self) -> Option<Sectors> {
        if self.is_sector_aligned() {
            Some(self.sectors_floor())
        } else {
            None
        }
    }

    /// This offset rounded up to the next sector boundary, or `None` past `u64::MAX`.
    #[must_use]
    pub const fn checked_next_sector(self) -> Option<Bytes> {
        match self.0.checked_next_multiple_of(SECTOR_SIZE) {
            Some(b) => Some(Bytes(b)),
            None => None,
        }
    }
}

impl ClusterIndex {
    /// The index.
    #[must_use]
    pub const fn get(self) -> u64 {
        self.0
    }

    /// The byte offset of this cluster for clusters of `cluster_size` bytes, or `None` past
    /// `u64::MAX`.
    #[must_use]
    pub const fn checked_offset(self, cluster_size: Bytes) -> Option<Bytes> {
        match self.0.checked_mul(cluster_size.0) {
            Some(b) => Some(Bytes(b)),
            None => None,
        }
    }

    /// The cluster that byte `offset` falls in, for clusters of `cluster_size` bytes; `None` when
    /// the cluster size is zero (a hostile header).
    #[must_use]
    pub const fn containing(offset: Bytes, cluster_size: Bytes) -> Option<ClusterIndex> {
        match offset.0.checked_div(cluster_size.0) {
            Some(i) => Some(ClusterIndex(i)),
            None => None,
        }
    }
}

impl From<u32> for Sectors {
    fn from(n: u32) -> Self {
        Sectors(u64::from(n))
    }
}

impl From<u32> for ClusterIndex {
    fn from(n: u32) -> Self {
        ClusterIndex(u64::from(n))
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Display for ClusterIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sectors_to_bytes_is_checked_or_saturating() {
        assert_eq!(Sectors(0).checked_bytes(), Some(Bytes(0)));
        assert_eq!(Sectors(3).checked_bytes(), Some(Bytes(1536)));
        assert_eq!(
            Sectors(u64::MAX >> 9).checked_bytes(),
            Some(Bytes((u64::MAX >> 9) << 9))
        );
        assert_eq!(Sectors((u64::MAX >> 9) + 1).checked_bytes(), None);
        assert_eq!(Sectors(u64::MAX).saturating_bytes(), Bytes(u64::MAX));
        assert_eq!(Sectors(2).saturating_bytes(), Bytes(1024));
        assert_eq!(Sectors::bytes_of_u32(u32::MAX), Bytes(u64::from(u32::MAX) * 512));
        assert_eq!(Sectors::from(7u32), Sectors(7));
        assert_eq!(Sectors::SIZE, Bytes(512));
    }

    #[test]
    fn bytes_to_sectors_rounds_as_named() {
        assert_eq!(Bytes(0).sectors_floor(), Sectors(0));
        assert_eq!(Bytes(511).sectors_floor(), Sectors(0));
        assert_eq!(Bytes(511).sectors_ceil(), Sectors(1));
        assert_eq!(Bytes(1024).sectors_ceil(), Sectors(2));
        assert_eq!(Bytes(1025).sectors_ceil(), Sectors(3));
        assert_eq!(Bytes(u64::MAX).sectors_ceil(), Sectors((u64::MAX >> 9) + 1));
        assert_eq!(Bytes(1024).exact_sectors(), Some(Sectors(2)));
        assert_eq!(Bytes(1023).exact_sectors(), None);
        assert!(Bytes(4096).is_sector_aligned());
        assert!(!Bytes(4095).is_sector_aligned());
        assert_eq!(Bytes(513).checked_next_sector(), Some(Bytes(1024)));
        assert_eq!(Bytes(512).checked_next_sector(), Some(Bytes(512)));
        assert_eq!(Bytes(u64::MAX).checked_next_sector(), None);
    }

    #[test]
    fn cluster_index_offsets_are_checked() {
        assert_eq!(ClusterIndex(0).checked_offset(Bytes(1 << 20)), Some(Bytes(0)));
        assert_eq!(ClusterIndex(5).checked_offset(Bytes(4096)), Some(Bytes(20480)));
        assert_eq!(ClusterIndex(u64::MAX).checked_offset(Bytes(2)), None);
        assert_eq!(
            ClusterIndex::containing(Bytes(20479), Bytes(4096)),
            Some(ClusterIndex(4))
        );
        assert_eq!(
            ClusterIndex::containing(Bytes(20480), Bytes(4096)),
            Some(ClusterIndex(5))
        );
        assert_eq!(ClusterIndex::containing(Bytes(1), Bytes(0)), None);
        assert_eq!(ClusterIndex::from(9u32), ClusterIndex(9));
    }

    #[test]
    fn units_display_as_their_number() {
        assert_eq!(Sectors(12).to_string(), "12");
        assert_eq!(Bytes(4096).to_string(), "4096");
        assert_eq!(ClusterIndex(3).to_string(), "3");
    }
}
