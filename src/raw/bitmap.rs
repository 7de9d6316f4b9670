//! The dirty-bitmap feature: a 32-byte header followed by the L1 table.
//!
//! ```text
//!  0               8                               24      28      32
//!  +---------------+-------------------------------+-------+-------+-------------------------+
//!  | size          | id [16]                       | gran  |l1_size| l1 [l1_size] (u64 each) |
//!  +---------------+-------------------------------+-------+-------+-------------------------+
//! ```
//! L1 entry 0: the chunk is clean; 1: the chunk is all dirty; otherwise the sector offset of a
//! cluster that holds the chunk's bits, least significant bit first.

use binrw::{BinRead, BinWrite};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// L1 marker: every granule of the chunk is clean.
pub const L1_CLEAN: u64 = 0;
/// L1 marker: every granule of the chunk is dirty.
pub const L1_DIRTY: u64 = 1;
/// Size of the dirty-bitmap feature header.
pub const BITMAP_HEADER_SIZE: usize = 32;
/// Bytes per L1 entry.
pub const L1_ENTRY_SIZE: usize = 8;

/// One L1 entry as stored.
pub type L1Entry = U64;

/// The dirty-bitmap feature header exactly as stored.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, BinRead, BinWrite,
)]
#[br(map = |b: [u8; 32]| zerocopy::transmute!(b))]
#[bw(map = |h: &Self| -> [u8; 32] { zerocopy::transmute!(*h) })]
#[repr(C)]
pub struct RawBitmapHeader {
    /// Size of the bitmap in sectors; must equal the image's `nb_sectors`.
    pub size: U64,
    /// The bitmap's name: 16 bytes, shown as a UUID in stored byte order.
    pub id: [u8; 16],
    /// Sectors per bit; a power of two with `granularity * 512` fitting in u32.
    pub granularity: U32,
    /// Number of L1 entries: one per cluster's worth of bits.
    pub l1_size: U32,
}

impl RawBitmapHeader {
    /// The bitmap header at the start of a dirty-bitmap record's `data`, for editing in place;
    /// `None` when the 32 bytes are not all there.
    pub fn mut_in(data: &mut [u8]) -> Option<&mut RawBitmapHeader> {
        RawBitmapHeader::mut_from_prefix(data).ok().map(|(h, _)| h)
    }

    /// L1 entry `index` of a dirty-bitmap record's `data` (header first), for editing in place;
    /// `None` when its 8 bytes are not all there.
    pub fn l1_entry_mut(data: &mut [u8], index: usize) -> Option<&mut L1Entry> {
        let at = BITMAP_HEADER_SIZE.checked_add(index.checked_mul(L1_ENTRY_SIZE)?)?;
        L1Entry::mut_from_prefix(data.get_mut(at..)?).ok().map(|(e, _)| e)
    }
}

/// A dirty-bitmap feature's data in the declarative grammar: header, the count-driven L1 table
/// and any bytes after the table that `data_size` covers.
#[derive(Clone, Debug, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
#[br(import(data_size: u32))]
pub struct DirtyBitmapFeature {
    /// The bitmap header.
    pub header: RawBitmapHeader,
    /// L1 entries, `header.l1_size` of them.
    #[br(parse_with = |r, e, _: ()| super::bounded_vec(r, u64::from(header.l1_size.get()), 8, |r| u64::read_options(r, e, ())))]
    pub l1: Vec<u64>,
    /// Bytes covered by `data_size` beyond the L1 table (none in a canonical record).
    #[br(parse_with = |r, e, _: ()| {
        let used = BITMAP_HEADER_SIZE as u64 + 8 * u64::from(header.l1_size.get());
        let extra = u64::from(data_size).checked_sub(used).ok_or_else(|| binrw::Error::AssertFail {
            pos: 0,
            message: format!("data_size {data_size} is smaller than the {used} bytes of the bitmap header and L1 table"),
        })?;
        super::bounded_vec(r, extra, 1, |r| u8::read_options(r, e, ()))
    })]
    pub extra: Vec<u8>,
}

impl DirtyBitmapFeature {
    /// A canonical feature: `l1_size` matches `l1`, no extra bytes.
    pub fn new(size_sectors: u64, id: [u8; 16], granularity_sectors: u32, l1: Vec<u64>) -> Self {
        DirtyBitmapFeature {
            header: RawBitmapHeader {
                size: size_sectors.into(),
                id,
                granularity: granularity_sectors.into(),
                l1_size: (l1.len() as u32).into(),
            },
            l1,
            extra: Vec::new(),
        }
    }

    /// Bytes of feature data this encodes to.
    pub fn encoded_len(&self) -> u64 {
        BITMAP_HEADER_SIZE as u64 + 8 * self.l1.len() as u64 + self.extra.len() as u64
    }
}
