//! Feature records of the Format Extension cluster.
//!
//! ```text
//!  0               8               16      20      24
//!  +---------------+---------------+-------+-------+----------------------+
//!  | magic         | flags         | size  |unused | data [size] ...      |
//!  +---------------+---------------+-------+-------+----------------------+
//! ```
//! Records follow each other, each starting at the next 8-byte boundary counted from the start
//! of the cluster; the list ends with a record whose magic is 0.

use binrw::{BinRead, BinResult, BinWrite};
use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::bitmap::DirtyBitmapFeature;

/// Magic of the end-of-features record.
pub const FEATURE_END: u64 = 0;
/// Magic of the dirty-bitmap feature.
pub const FEATURE_DIRTY_BITMAP: u64 = 0x2038_5FAE_252C_B34A;
/// Feature flag: an implementation that does not know the feature must not open the image.
pub const FEATURE_FLAG_NECESSARY: u64 = 1 << 0;
/// Feature flag: the feature is to be dropped when the image is modified.
pub const FEATURE_FLAG_TRANSIT: u64 = 1 << 1;
/// Records start at multiples of this, counted from the start of the cluster.
pub const FEATURE_ALIGN: u64 = 8;
/// Size of a feature header.
pub const FEATURE_HEADER_SIZE: usize = 24;

/// A feature header exactly as stored.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, BinRead, BinWrite,
)]
#[br(map = |b: [u8; 24]| zerocopy::transmute!(b))]
#[bw(map = |h: &Self| -> [u8; 24] { zerocopy::transmute!(*h) })]
#[repr(C)]
pub struct RawFeatureHeader {
    /// Which feature; [`FEATURE_END`] ends the list.
    pub magic: U64,
    /// [`FEATURE_FLAG_NECESSARY`], [`FEATURE_FLAG_TRANSIT`]; QEMU accepts only 0.
    pub flags: U64,
    /// Bytes of feature data after this header.
    pub data_size: U32,
    /// Reserved, written as 0.
    pub unused: U32,
}

impl RawFeatureHeader {
    /// A header with the given magic, no flags and `data_size` bytes of data.
    pub fn new(magic: u64, data_size: u32) -> Self {
        RawFeatureHeader {
            magic: magic.into(),
            flags: 0.into(),
            data_size: data_size.into(),
            unused: 0.into(),
        }
    }

    /// The feature header at byte `at` of `cluster`, for editing in place; `None` when the 24
    /// bytes are not all there.
    pub fn mut_at(cluster: &mut [u8], at: usize) -> Option<&mut RawFeatureHeader> {
        RawFeatureHeader::mut_from_prefix(cluster.get_mut(at..)?)
            .ok()
            .map(|(h, _)| h)
    }
}

/// One feature record (header and data) of the declarative grammar.
///
/// Reading aligns to [`FEATURE_ALIGN`] before the record, relative to the start of the stream,
/// which must be the start of the extension cluster. `data_size` in the header is authoritative:
/// writing emits the header as it is, then the body.
#[derive(Clone, Debug, PartialEq, Eq, BinRead, BinWrite)]
#[brw(little)]
pub struct FeatureRecord {
    /// The record header, at the next multiple of 8 from the start of the cluster.
    #[brw(align_before = 8)]
    pub header: RawFeatureHeader,
    /// The record's data, typed where the magic is known.
    #[br(args(header))]
    pub body: FeatureBody,
}

impl FeatureRecord {
    /// True for the end-of-features record.
    pub fn is_end(&self) -> bool {
        self.header.magic.get() == FEATURE_END
    }

    /// A dirty-bitmap record with a `data_size` that matches the feature.
    pub fn dirty_bitmap(bitmap: DirtyBitmapFeature) -> Self {
        let size = bitmap.encoded_len();
        FeatureRecord {
            header: RawFeatureHeader::new(FEATURE_DIRTY_BITMAP, size as u32),
            body: FeatureBody::DirtyBitmap(bitmap),
        }
    }

    /// A record kept as opaque bytes (an unknown feature, or a known one with flags).
    pub fn opaque(magic: u64, flags: u64, data: Vec<u8>) -> Self {
        let mut header = RawFeatureHeader::new(magic, data.len() as u32);
        header.flags = flags.into();
        FeatureRecord {
            header,
            body: FeatureBody::Opaque(data),
        }
    }

    /// The record's data as written after its header.
    pub fn body_bytes(&self, endian: binrw::Endian) -> BinResult<Vec<u8>> {
        let mut out = binrw::io::Cursor::new(Vec::new());
        self.body.write_options(&mut out, endian, ())?;
        Ok(out.into_inner())
    }

    /// Size of the record in bytes, header included, padding excluded.
    pub fn encoded_len(&self) -> u64 {
        FEATURE_HEADER_SIZE as u64 + u64::from(self.header.data_size.get())
    }
}

/// The data of a feature record.
#[derive(Clone, Debug, PartialEq, Eq, BinWrite)]
pub enum FeatureBody {
    /// A dirty bitmap with no flags.
    DirtyBitmap(DirtyBitmapFeature),
    /// Any other record, byte for byte.
    Opaque(Vec<u8>),
}

impl BinRead for FeatureBody {
    type Args<'a> = (RawFeatureHeader,);

    fn read_options<R: binrw::io::Read + binrw::io::Seek>(
        reader: &mut R,
        endian: binrw::Endian,
        (header,): Self::Args<'_>,
    ) -> BinResult<Self> {
        let size = header.data_size.get();
        if header.magic.get() == FEATURE_END {
            // The list ends at the end record's magic (as for QEMU and the walk): its other
            // fields are not read, and it has no data.
            return Ok(FeatureBody::Opaque(Vec::new()));
        }
        if header.magic.get() == FEATURE_DIRTY_BITMAP && header.flags.get() == 0 {
            let bitmap = DirtyBitmapFeature::read_options(reader, endian, (size,))?;
            Ok(FeatureBody::DirtyBitmap(bitmap))
        } else {
            let data = super::bounded_vec(reader, u64::from(size), 1, |r| u8::read_options(r, endian, ()))?;
            Ok(FeatureBody::Opaque(data))
        }
    }
}
