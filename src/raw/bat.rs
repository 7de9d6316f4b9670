//! The Block Allocation Table: `bat_entries` little-endian u32 right after the header.
//!
//! Entry `i` maps guest cluster `i` to a file offset: in sectors for the v1 magic, in clusters for
//! the v2 magic. 0 means unallocated (reads as zeros).

use zerocopy::little_endian::U32;

/// One BAT entry as stored.
pub type BatEntry = U32;

/// Byte offset of the BAT in the file.
pub const BAT_OFFSET: u64 = 64;
/// Bytes per BAT entry.
pub const BAT_ENTRY_SIZE: u64 = 4;
