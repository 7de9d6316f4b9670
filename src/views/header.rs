//! The decoded header: native fields, the format variant and derived sizes.

use crate::error::Violation;
use crate::raw::bat::{BAT_ENTRY_SIZE, BAT_OFFSET};
use crate::raw::header::*;
use crate::raw::{Sectors, SECTOR_SIZE};

/// Which magic the image has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Variant {
    /// `WithoutFreeSpace`: BAT entries in sectors, 32-bit `nb_sectors`.
    V1,
    /// `WithouFreSpacExt`: BAT entries in clusters.
    V2,
}

impl Variant {
    /// The magic bytes.
    pub fn magic(self) -> [u8; 16] {
        match self {
            Variant::V1 => MAGIC_V1,
            Variant::V2 => MAGIC_V2,
        }
    }
}

/// What the header's `inuse` field says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Inuse {
    /// 0: closed (QEMU writes this on close).
    Closed,
    /// `0x312e3276` ("v2.1"): closed (ploop and Parallels).
    ClosedV21,
    /// ASCII "pd17": closed by Parallels Desktop 17 (every Parallels Desktop sample has it).
    ClosedPd17,
    /// ASCII "pd22": closed by Parallels Desktop 22.
    ClosedPd22,
    /// `0x746f6e59` ("Ynot"): open, or not closed cleanly.
    Open,
    /// A value no known writer uses.
    Unknown(u32),
}

impl Inuse {
    /// Classifies a stored `inuse` value.
    pub fn from_raw(value: u32) -> Inuse {
        match value {
            INUSE_CLOSED => Inuse::Closed,
            INUSE_CLOSED_V21 => Inuse::ClosedV21,
            INUSE_PD17 => Inuse::ClosedPd17,
            INUSE_PD22 => Inuse::ClosedPd22,
            INUSE_OPEN => Inuse::Open,
            other => Inuse::Unknown(other),
        }
    }

    /// `"closed"`, `"closed-v2.1"`, `"closed-pd17"`, `"closed-pd22"`, `"open"` or `"unknown"`.
    pub fn name(self) -> &'static str {
        match self {
            Inuse::Closed => "closed",
            Inuse::ClosedV21 => "closed-v2.1",
            Inuse::ClosedPd17 => "closed-pd17",
            Inuse::ClosedPd22 => "closed-pd22",
            Inuse::Open => "open",
            Inuse::Unknown(_) => "unknown",
        }
    }

    /// A few words for people.
    pub fn description(self) -> &'static str {
        match self {
            Inuse::Closed => "closed",
            Inuse::ClosedV21 => "closed, \"v2.1\" (ploop)",
            Inuse::ClosedPd17 => "closed, \"pd17\" (Parallels Desktop)",
            Inuse::ClosedPd22 => "closed, \"pd22\" (Parallels Desktop)",
            Inuse::Open => "\"Ynot\": open or not closed cleanly",
            Inuse::Unknown(_) => "unknown value",
        }
    }
}

/// A header that passed the checks every reader makes before it can interpret anything else
/// (rules R1–R6, in QEMU's order).
///
/// As JSON (feature `serde`): every stored field under its own name (`magic` as text,
/// `tracks`, `nb_sectors`, `data_off` and `ext_off` in sectors, as stored) and the derived
/// values: `variant` (`"v1"`/`"v2"`), `cluster_size`, `virtual_size`, `data_offset` and
/// `ext_offset` (bytes; `ext_offset` null without an extension), `inuse_state` and
/// `flag_names`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The header as stored.
    pub raw: RawHeader,
    /// Which magic.
    pub variant: Variant,
    /// Sectors per cluster (`tracks`).
    pub cluster_sectors: u32,
    /// Number of BAT entries.
    pub bat_entries: u32,
    /// Virtual size in sectors as readers use it (low 32 bits only for v1).
    pub nb_sectors: u64,
    /// `ext_off` in sectors; 0 = no extension.
    pub ext_off: u64,
}

impl Header {
    /// Decodes and checks a raw header (R1–R6).
    pub fn decode(raw: &RawHeader) -> Result<Header, Violation> {
        let variant = if raw.version.get() != VERSION {
            // QEMU checks the version before the magic and gives the same answer for both.
            if raw.magic != MAGIC_V1 && raw.magic != MAGIC_V2 {
                return Err(Violation::BadMagic { found: raw.magic });
            }
            return Err(Violation::BadVersion {
                found: raw.version.get(),
            });
        } else if raw.magic == MAGIC_V1 {
            Variant::V1
        } else if raw.magic == MAGIC_V2 {
            Variant::V2
        } else {
            return Err(Violation::BadMagic { found: raw.magic });
        };
        let tracks = raw.tracks.get();
        if tracks == 0 {
            return Err(Violation::ZeroTracks);
        }
        if tracks > MAX_TRACKS {
            return Err(Violation::ClusterTooBig {
                tracks,
                max: MAX_TRACKS,
            });
        }
        let bat_entries = raw.bat_entries.get();
        if bat_entries > MAX_BAT_ENTRIES {
            return Err(Violation::CatalogTooLarge {
                bat_entries,
                max: MAX_BAT_ENTRIES,
            });
        }
        let ext_off = raw.ext_off.get();
        if ext_off >= MAX_EXT_OFF {
            return Err(Violation::ExtOffTooBig {
                ext_off,
                max: MAX_EXT_OFF,
            });
        }
        let nb_sectors = match variant {
            Variant::V1 => raw.nb_sectors.get() & 0xffff_ffff,
            Variant::V2 => raw.nb_sectors.get(),
        };
        Ok(Header {
            raw: *raw,
            variant,
            cluster_sectors: tracks,
            bat_entries,
            nb_sectors,
            ext_off,
        })
    }

    /// Cluster size in bytes.
    pub fn cluster_size(&self) -> u64 {
        Sectors::bytes_of_u32(self.cluster_sectors).get()
    }

    /// Virtual disk size in bytes.
    pub fn virtual_size(&self) -> u64 {
        Sectors(self.nb_sectors).saturating_bytes().get()
    }

    /// Byte offset just past the last BAT entry.
    pub fn bat_end(&self) -> u64 {
        BAT_OFFSET + BAT_ENTRY_SIZE * u64::from(self.bat_entries)
    }

    /// Where the data area starts by default: the end of the BAT rounded up to a sector (v1) or a
    /// cluster (v2).
    pub fn min_data_start(&self) -> u64 {
        match self.variant {
            Variant::V1 => self.bat_end().next_multiple_of(SECTOR_SIZE),
            Variant::V2 => self.bat_end().next_multiple_of(self.cluster_size()),
        }
    }

    /// Byte offset of the data area: `data_off` sectors, or for a v1 image with `data_off == 0`
    /// the end of the BAT rounded up to a sector.
    pub fn data_start(&self) -> u64 {
        match (self.variant, self.raw.data_off.get()) {
            (Variant::V1, 0) => self.min_data_start(),
            (_, d) => Sectors::bytes_of_u32(d).get(),
        }
    }

    /// File offset of a BAT entry's data cluster; `None` for an unallocated (0) entry.
    pub fn bat_entry_offset(&self, entry: u32) -> Option<u64> {
        match (entry, self.variant) {
            (0, _) => None,
            (e, Variant::V1) => Some(Sectors::bytes_of_u32(e).get()),
            (e, Variant::V2) => Some(u64::from(e) * self.cluster_size()),
        }
    }

    /// Byte offset of the extension cluster, if any.
    pub fn ext_offset(&self) -> Option<u64> {
        (self.ext_off != 0).then(|| Sectors(self.ext_off).saturating_bytes().get())
    }

    /// What `inuse` says.
    pub fn inuse(&self) -> Inuse {
        Inuse::from_raw(self.raw.inuse.get())
    }

    /// The names of the known `flags` bits set: `"empty"`, `"format-conversion"`.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let flags = self.raw.flags.get();
        [(FLAG_EMPTY, "empty"), (FLAG_FORMAT_CONVERSION, "format-conversion")]
            .into_iter()
            .filter(|(bit, _)| flags & bit != 0)
            .map(|(_, name)| name)
            .collect()
    }
}

#[cfg(feature = "serde")]
impl serde::Serialize for Header {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let raw = &self.raw;
        let mut st = s.serialize_struct("Header", 18)?;
        st.serialize_field(
            "variant",
            match self.variant {
                Variant::V1 => "v1",
                Variant::V2 => "v2",
            },
        )?;
        st.serialize_field("magic", &String::from_utf8_lossy(&raw.magic))?;
        st.serialize_field("version", &raw.version.get())?;
        st.serialize_field("heads", &raw.heads.get())?;
        st.serialize_field("cylinders", &raw.cylinders.get())?;
        st.serialize_field("tracks", &raw.tracks.get())?;
        st.serialize_field("cluster_size", &self.cluster_size())?;
        st.serialize_field("bat_entries", &self.bat_entries)?;
        st.serialize_field("nb_sectors", &raw.nb_sectors.get())?;
        st.serialize_field("virtual_size", &self.virtual_size())?;
        st.serialize_field("inuse", &raw.inuse.get())?;
        st.serialize_field("inuse_state", self.inuse().name())?;
        st.serialize_field("data_off", &raw.data_off.get())?;
        st.serialize_field("data_offset", &self.data_start())?;
        st.serialize_field("flags", &raw.flags.get())?;
        st.serialize_field("flag_names", &self.flag_names())?;
        st.serialize_field("ext_off", &self.ext_off)?;
        st.serialize_field("ext_offset", &self.ext_offset())?;
        st.end()
    }
}
