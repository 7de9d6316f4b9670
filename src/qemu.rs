//! What QEMU 10 does when it opens an image read-only (`qemu-img info`), predicted from the
//! bytes, and whether ploop would load the image's bitmaps.
//!
//! QEMU checks less than [`crate::validate`] does and in its own order; this module follows
//! QEMU's order and messages, so that a conformance tester knows in advance whether QEMU opens an
//! image, rejects it (and with which message), or aborts.

use crate::extension::ListEnd;
use crate::header::Header;
use crate::image::Image;
use crate::raw::bitmap::BITMAP_HEADER_SIZE;
use crate::raw::extension::EXT_MAGIC;
use crate::raw::feature::FEATURE_DIRTY_BITMAP;
use crate::raw::header::RawHeader;
use crate::source::Source;
use crate::Violation;

/// QEMU's verdict on a read-only open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QemuOutcome {
    /// The image opens; these bitmaps are loaded (names as QEMU prints them).
    Opens {
        /// Bitmap names.
        bitmaps: Vec<String>,
    },
    /// QEMU refuses the image with this message (what follows `Could not open 'PATH': `).
    Rejects {
        /// The message.
        message: String,
    },
    /// QEMU stops on a failed assertion (exit status 134).
    Aborts {
        /// What triggers it.
        reason: String,
    },
}

impl QemuOutcome {
    /// `"opens"`, `"rejects"` or `"aborts"`.
    pub fn kind(&self) -> &'static str {
        match self {
            QemuOutcome::Opens { .. } => "opens",
            QemuOutcome::Rejects { .. } => "rejects",
            QemuOutcome::Aborts { .. } => "aborts",
        }
    }
}

/// Predictions for the reference implementations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prediction {
    /// What `qemu-img info` (a read-only open) does.
    pub qemu: QemuOutcome,
    /// Whether ploop would load the bitmaps (`None`: there is nothing to load).
    pub ploop_loads_bitmaps: Option<bool>,
}

const NOT_PARALLELS: &str = "Image not in Parallels format";

/// Predicts what QEMU and ploop do with the image in `source`.
pub fn predict(source: &dyn Source) -> std::io::Result<Prediction> {
    let head = source.read_at(0, 64)?;
    let raw = RawHeader::read_padded(&head);
    let header = match Header::decode(&raw) {
        Ok(h) => h,
        Err(v) => {
            return Ok(Prediction {
                qemu: Q::reject(header_message(&v)),
                ploop_loads_bitmaps: None,
            });
        }
    };
    let _ = header;
    let image = match Image::parse(source) {
        Ok(i) => i,
        Err(crate::Error::Io(e)) => return Err(e),
        Err(e) => {
            return Ok(Prediction {
                qemu: Q::reject(e.to_string()),
                ploop_loads_bitmaps: None,
            })
        }
    };
    let qemu = extension_outcome(&image);
    let ploop_loads_bitmaps = image.extension().map(|_| ploop_loads(&image));
    Ok(Prediction {
        qemu,
        ploop_loads_bitmaps,
    })
}

struct Q;
impl Q {
    fn reject(message: impl Into<String>) -> QemuOutcome {
        QemuOutcome::Rejects {
            message: message.into(),
        }
    }
}

fn header_message(v: &Violation) -> String {
    match v {
        Violation::BadMagic { .. } | Violation::BadVersion { .. } => NOT_PARALLELS.into(),
        Violation::ZeroTracks => "Invalid image: Zero sectors per track".into(),
        Violation::ClusterTooBig { .. } => "Invalid image: Too big cluster".into(),
        Violation::CatalogTooLarge { .. } => "Catalog too large".into(),
        Violation::ExtOffTooBig { .. } => "Invalid image: Too big offset".into(),
        other => other.to_string(),
    }
}

fn extension_outcome(image: &Image<'_>) -> QemuOutcome {
    let Some(ext) = image.extension() else {
        return QemuOutcome::Opens { bitmaps: Vec::new() };
    };
    if ext.magic() != EXT_MAGIC {
        return Q::reject("Wrong parallels Format Extension magic");
    }
    if ext.stored_checksum() != ext.computed_checksum {
        return Q::reject("Wrong checksum in Format Extension header. Format extension is corrupted.");
    }
    let mut names: Vec<String> = Vec::new();
    let nb_sectors = image.header().nb_sectors;
    for f in &ext.features {
        if f.header.flags.get() != 0 {
            return Q::reject(format!("Flags for extension feature are not supported"));
        }
        if f.header.magic.get() != FEATURE_DIRTY_BITMAP {
            return Q::reject(format!("Unknown feature: 0x{:x}", f.header.magic.get()));
        }
        if (f.header.data_size.get() as usize) < BITMAP_HEADER_SIZE {
            return Q::reject("Too short bitmap feature");
        }
        let Some(b) = image.bitmaps().into_iter().find(|b| b.feature == f.index) else {
            continue;
        };
        let g = b.granularity_sectors();
        if g == 0 || !g.is_power_of_two() {
            return QemuOutcome::Aborts {
                reason: format!("bitmap granularity {g} sectors is not a power of two"),
            };
        }
        if b.header.size.get() != nb_sectors {
            return Q::reject("Invalid bitmap size");
        }
        if u64::from(b.header.l1_size.get()) != b.expected_l1_size() {
            return Q::reject("Invalid bitmap l1 size");
        }
        if names.contains(&b.name()) {
            return Q::reject(format!("Bitmap already exists: {}", b.name()));
        }
        names.push(b.name());
    }
    match ext.end {
        ListEnd::EndRecord { .. } => QemuOutcome::Opens { bitmaps: names },
        ListEnd::Overflow { entry, .. } if entry.header.flags.get() != 0 => {
            Q::reject("Flags for extension feature are not supported")
        }
        ListEnd::Overflow { .. } => Q::reject("Invalid data size in Format Extension feature"),
        ListEnd::Truncated { .. } | ListEnd::NoEndRecord { .. } => {
            Q::reject("Can not read feature header, as remaining bytes in Format Extension is less than Format Extension Header size")
        }
    }
}

/// ploop skips unknown features and does not check flags; it needs a readable extension and
/// sane bitmap headers.
fn ploop_loads(image: &Image<'_>) -> bool {
    let Some(ext) = image.extension() else { return false };
    ext.magic() == EXT_MAGIC
        && ext.stored_checksum() == ext.computed_checksum
        && image.bitmaps().iter().all(|b| {
            let g = b.granularity_sectors();
            g != 0 && g.is_power_of_two() && b.header.size.get() == image.header().nb_sectors
        })
}
