//! The 64-byte image header at offset 0.
//!
//! ```text
//!  0               16      20      24      28      32      36              44      48      52      56              64
//!  +---------------+-------+-------+-------+-------+-------+---------------+-------+-------+-------+---------------+
//!  | magic [16]    |version| heads | cyls  |tracks |bat_ent| nb_sectors    | inuse |data_off| flags | ext_off       |
//!  +---------------+-------+-------+-------+-------+-------+---------------+-------+-------+-------+---------------+
//! ```

use binrw::{BinRead, BinWrite};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Magic of the original format: BAT entries are in sectors, `nb_sectors` is 32 bits wide.
pub const MAGIC_V1: [u8; 16] = *b"WithoutFreeSpace";
/// Magic of the extended format: BAT entries are in clusters.
pub const MAGIC_V2: [u8; 16] = *b"WithouFreSpacExt";
/// The only version there is.
pub const VERSION: u32 = 2;
/// `inuse`: the image is open, or was not closed cleanly ("Ynot").
pub const INUSE_OPEN: u32 = 0x746F_6E59;
/// `inuse`: closed cleanly, as ploop and Parallels write it ("v2.1").
pub const INUSE_CLOSED_V21: u32 = 0x312E_3276;
/// `inuse`: closed cleanly, as QEMU and old software write it.
pub const INUSE_CLOSED: u32 = 0;
/// `inuse`: closed cleanly, as Parallels Desktop 17 writes it (ASCII "pd17").
pub const INUSE_PD17: u32 = u32::from_le_bytes(*b"pd17");
/// `inuse`: closed cleanly, as Parallels Desktop 22 writes it (ASCII "pd22").
pub const INUSE_PD22: u32 = u32::from_le_bytes(*b"pd22");

/// The name of an `inuse` value a known writer uses: `"closed"` (0), the ASCII tags `"v2.1"`
/// (ploop), `"pd17"` and `"pd22"` (Parallels Desktop), and `"Ynot"` (open); `None` for any
/// other value (rule R8).
pub const fn inuse_name(inuse: u32) -> Option<&'static str> {
    match inuse {
        INUSE_CLOSED => Some("closed"),
        INUSE_CLOSED_V21 => Some("v2.1"),
        INUSE_PD17 => Some("pd17"),
        INUSE_PD22 => Some("pd22"),
        INUSE_OPEN => Some("Ynot"),
        _ => None,
    }
}
/// `flags` bit 0: the image is empty.
pub const FLAG_EMPTY: u32 = 1 << 0;
/// `flags` bit 1 (ploop): a format conversion is in progress.
pub const FLAG_FORMAT_CONVERSION: u32 = 1 << 1;
/// Every `flags` bit with a known meaning.
pub const FLAGS_KNOWN: u32 = FLAG_EMPTY | FLAG_FORMAT_CONVERSION;
/// Largest `tracks` QEMU accepts (`INT32_MAX / 513`).
pub const MAX_TRACKS: u32 = 4_186_127;
/// Largest `bat_entries` QEMU accepts (`INT_MAX / 4`).
pub const MAX_BAT_ENTRIES: u32 = 536_870_911;
/// `ext_off` must be below this (`INT64_MAX >> 9`) for QEMU.
pub const MAX_EXT_OFF: u64 = (i64::MAX as u64) >> 9;
/// Size of the header in bytes.
pub const HEADER_SIZE: usize = 64;

/// The image header exactly as stored. Every field is little-endian.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, BinRead, BinWrite,
)]
#[br(map = |b: [u8; 64]| zerocopy::transmute!(b))]
#[bw(map = |h: &Self| -> [u8; 64] { zerocopy::transmute!(*h) })]
#[repr(C)]
pub struct RawHeader {
    /// [`MAGIC_V1`] or [`MAGIC_V2`]; no NUL terminator.
    pub magic: [u8; 16],
    /// Must be [`VERSION`].
    pub version: U32,
    /// Geometry only; never read by QEMU (which writes 16).
    pub heads: U32,
    /// Geometry only.
    pub cylinders: U32,
    /// Cluster size in sectors; must be non-zero and at most [`MAX_TRACKS`].
    pub tracks: U32,
    /// Number of BAT entries (guest clusters); at most [`MAX_BAT_ENTRIES`].
    pub bat_entries: U32,
    /// Virtual size in sectors; only the low 32 bits count for [`MAGIC_V1`].
    pub nb_sectors: U64,
    /// [`INUSE_OPEN`], [`INUSE_CLOSED_V21`] or [`INUSE_CLOSED`].
    pub inuse: U32,
    /// Start of the data area, in sectors (v1: 0 = end of BAT rounded up to a sector).
    pub data_off: U32,
    /// [`FLAG_EMPTY`], [`FLAG_FORMAT_CONVERSION`]; ignored by QEMU.
    pub flags: U32,
    /// Offset of the Format Extension cluster in sectors (both magics); 0 = none.
    pub ext_off: U64,
}

impl RawHeader {
    /// Views the first 64 bytes of `bytes` as a header, without copying.
    pub fn view(bytes: &[u8]) -> Option<&RawHeader> {
        RawHeader::ref_from_prefix(bytes).ok().map(|(h, _)| h)
    }

    /// Reads a header from `bytes`, treating missing bytes as zeros (as QEMU does for a short file).
    pub fn read_padded(bytes: &[u8]) -> RawHeader {
        zerocopy::transmute!(super::padded::<HEADER_SIZE>(bytes, 0))
    }
}
