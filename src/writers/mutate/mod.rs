//! Structure-aware mutation: variants of an image made by editing its header fields, BAT
//! entries, feature records, bitmap headers, L1 entries, bitmap clusters and length, with the
//! extension checksum put right afterwards (by default) so that a reader gets past it.
//!
//! Every variant is a pure function of the input bytes, the options and a seed (ChaCha8, as for
//! [`crate::BitmapSpec::random`]), and carries the list of [`Edit`]s that made it. The structures
//! are found again after each edit, through the raw views ([`crate::raw`]) and the extension
//! walk, so edits compose: a record dropped by one edit is not edited by the next, a header
//! edited to a smaller cluster moves the extension the next edit sees.
//!
//! Work and memory follow the input: a variant is a copy of it plus at most
//! [`MutateOptions::max_len`] bytes, and only the part of the BAT and of the extension cluster
//! that lies in the file is edited.

mod bitmaps;
mod corpus;
mod edits;
mod features;
mod header;
mod view;
mod work;

use std::ops::RangeInclusive;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use corpus::{seed_corpus, CorpusEntry, CorpusKind, CORPUS_MUTANTS};
pub use edits::{BatTarget, BitmapField, Edit, EditKind, FeatureField, HeaderField, Inserted, L1Target, MagicName};

use crate::error::Result;
use crate::extension::ExtensionDigest;
use crate::image::{Image, RuleMode};
use view::{ext_place, View};
use work::Work;

/// The checksum is recomputed only over clusters up to this size (hashing QEMU's largest,
/// 2 GiB, takes seconds; a fuzzer wants thousands of variants a second).
pub(super) const MAX_REHASH: u64 = 64 << 20;

/// How a [`Mutator`] edits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MutateOptions {
    /// Recompute the extension's MD5 after the edits (the default), so that a reader gets past
    /// its checksum test to the feature walk; `false` leaves it as the edits leave it.
    pub fix_checksum: bool,
    /// How many edits each variant gets, drawn uniformly from this range (default `1..=3`).
    pub edits: RangeInclusive<usize>,
    /// No variant is longer than this many bytes: edits that would grow the file past it are
    /// not made (a fuzzer's `max_size`). A variant of a longer input keeps its length unless an
    /// edit shortens it. `None` (the default): twice the input's length plus 1 MiB.
    pub max_len: Option<u64>,
}

impl Default for MutateOptions {
    fn default() -> Self {
        MutateOptions {
            fix_checksum: true,
            edits: 1..=3,
            max_len: None,
        }
    }
}

/// What became of the extension checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum ChecksumState {
    /// Recomputed over the extension cluster the header points at after the edits (bytes past
    /// the end of the file counted as zeros, as readers do).
    Fixed,
    /// Left as the edits left it ([`MutateOptions::fix_checksum`] false, or the cluster is
    /// larger than this module hashes).
    LeftAsIs,
    /// The header points at no extension cluster in the file.
    NoExtension,
}

/// One variant of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutant {
    /// The variant's bytes.
    pub bytes: Vec<u8>,
    /// The edits, in the order made (may be fewer than asked when nothing applied).
    pub edits: Vec<Edit>,
    /// What became of the extension checksum.
    pub checksum: ChecksumState,
    /// The MD5 the checksum was fixed to, with the cluster it covers in these bytes: `Some`
    /// exactly when [`Mutant::checksum`] is [`ChecksumState::Fixed`]. A reader of the variant that
    /// would hash the same cluster may take it instead ([`ExtensionDigest`]).
    pub digest: Option<ExtensionDigest>,
}

/// Makes variants of one image ([`Mutator::mutant`]).
///
/// ```
/// use parallels_image::{BitmapSpec, ImageBuilder, mutate::MutateOptions, mutate::Mutator};
///
/// let (bytes, _) = ImageBuilder::new(1 << 20)
///     .cluster_size(4096)
///     .bitmap(BitmapSpec { id: [7; 16], granularity: 4096, extents: vec![(0, 8192)] })
///     .to_vec()?;
/// let mutator = Mutator::new(&bytes, MutateOptions::default())?;
/// let a = mutator.mutant(42);
/// assert_eq!(a, mutator.mutant(42));
/// assert!((1..=3).contains(&a.edits.len()));
/// // Not a Parallels image: a typed error, not a panic.
/// assert!(Mutator::new(b"hello", MutateOptions::default()).is_err());
/// # Ok::<(), parallels_image::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Mutator<'a> {
    input: &'a [u8],
    options: MutateOptions,
}

impl<'a> Mutator<'a> {
    /// A mutator of `input`, whose header must pass the checks every reader makes first (rules
    /// R1–R6: magic, version, tracks, BAT size, `ext_off`): otherwise the error opening it
    /// gives ([`crate::Error::EmptyFile`], [`crate::Error::NotParallels`], [`crate::Error::Invalid`] with the
    /// violation). Nothing else need be valid: variants of variants are made the same way.
    pub fn new(input: &'a [u8], options: MutateOptions) -> Result<Mutator<'a>> {
        Image::parse_without_bat(&input, RuleMode::Lenient)?;
        Ok(Mutator { input, options })
    }

    /// The variant for `seed`.
    pub fn mutant(&self, seed: u64) -> Mutant {
        let mut buffer = self.buffer();
        buffer.mutate(seed);
        Mutant {
            bytes: buffer.bytes,
            edits: buffer.edits,
            checksum: buffer.checksum,
            digest: buffer.digest,
        }
    }

    /// A buffer that makes variant after variant of this input ([`MutantBuffer::mutate`])
    /// without copying the whole input each time: the same variants as [`Mutator::mutant`].
    pub fn buffer(&self) -> MutantBuffer<'_> {
        MutantBuffer {
            mutator: self,
            bytes: Vec::new(),
            touched: Vec::new(),
            low: 0,
            fresh: true,
            edits: Vec::new(),
            checksum: ChecksumState::NoExtension,
            digest: None,
        }
    }
}

/// Variants of one [`Mutator`]'s input made one after another in one buffer
/// ([`Mutator::buffer`]).
///
/// [`Mutator::mutant`] copies the whole input into a new vector for each variant; a campaign
/// writing thousands of variants of an image of 1 MiB clusters would spend more time copying
/// megabytes than editing them. The buffer instead remembers the byte ranges the last variant's
/// edits wrote (and how short it was cut) and copies back only those from the input before
/// making the next: a variant then costs its edits and the extension's MD5. Each variant is
/// exactly what [`Mutator::mutant`] gives for the same seed.
///
/// ```
/// use parallels_image::{BitmapSpec, ImageBuilder, mutate::MutateOptions, mutate::Mutator};
///
/// let (bytes, _) = ImageBuilder::new(1 << 20)
///     .cluster_size(4096)
///     .bitmap(BitmapSpec { id: [7; 16], granularity: 4096, extents: vec![(0, 8192)] })
///     .to_vec()?;
/// let mutator = Mutator::new(&bytes, MutateOptions::default())?;
/// let mut buffer = mutator.buffer();
/// for seed in 0..10 {
///     let variant = buffer.mutate(seed).to_vec();
///     assert_eq!(variant, mutator.mutant(seed).bytes);
///     assert_eq!(buffer.edits(), &mutator.mutant(seed).edits[..]);
/// }
/// # Ok::<(), parallels_image::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct MutantBuffer<'m> {
    mutator: &'m Mutator<'m>,
    /// The last variant (empty before the first).
    bytes: Vec<u8>,
    /// Byte ranges the last variant's edits wrote (some may lie past the input's end).
    touched: Vec<(usize, usize)>,
    /// The shortest the last variant was while it was made: bytes from here on are the input's
    /// again only after a copy.
    low: usize,
    /// No variant made yet: `bytes` does not hold the input.
    fresh: bool,
    edits: Vec<Edit>,
    checksum: ChecksumState,
    digest: Option<ExtensionDigest>,
}

impl MutantBuffer<'_> {
    /// Makes the variant for `seed` (the one [`Mutator::mutant`] makes) in place of the last
    /// one, and returns its bytes.
    pub fn mutate(&mut self, seed: u64) -> &[u8] {
        self.restore();
        let options = &self.mutator.options;
        let input = self.mutator.input;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let (lo, hi) = (*options.edits.start(), *options.edits.end());
        let want = if lo >= hi { lo } else { rng.random_range(lo..=hi) };
        self.edits.clear();
        self.touched.clear();
        let mut m = Work {
            bytes: std::mem::take(&mut self.bytes),
            touched: std::mem::take(&mut self.touched),
            low: input.len(),
            max_len: (options.max_len)
                .unwrap_or(2 * input.len() as u64 + (1 << 20))
                .max(input.len() as u64),
            rng,
            edits: std::mem::take(&mut self.edits),
        };
        for _ in 0..want {
            // A drawn kind may find nothing to edit (a bitmap edit on a variant whose records
            // are gone): draw again, a bounded number of times.
            for _ in 0..16 {
                let view = View::of(&m.bytes);
                let kind = m.draw_kind(&view);
                if let Some(edit) = m.apply(kind, &view) {
                    m.edits.push(edit);
                    break;
                }
            }
        }
        (self.checksum, self.digest) = if options.fix_checksum {
            m.fix_checksum()
        } else {
            let state = match ext_place(&m.bytes) {
                Some(_) => ChecksumState::LeftAsIs,
                None => ChecksumState::NoExtension,
            };
            (state, None)
        };
        self.bytes = m.bytes;
        self.touched = m.touched;
        self.low = m.low;
        self.edits = m.edits;
        &self.bytes
    }

    /// Puts the input's bytes back where the last variant changed them.
    fn restore(&mut self) {
        let input = self.mutator.input;
        if std::mem::take(&mut self.fresh) {
            self.bytes = input.to_vec();
            return;
        }
        let keep = self.low.min(input.len());
        self.bytes.truncate(keep);
        for &(s, e) in &self.touched {
            let e = e.min(keep);
            if s < e {
                self.bytes[s..e].copy_from_slice(&input[s..e]);
            }
        }
        self.bytes.extend_from_slice(&input[keep..]);
    }

    /// The last variant's bytes (empty before the first [`MutantBuffer::mutate`]).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The last variant's edits, in the order made.
    pub fn edits(&self) -> &[Edit] {
        &self.edits
    }

    /// What became of the last variant's extension checksum.
    pub fn checksum(&self) -> ChecksumState {
        self.checksum
    }

    /// The MD5 the last variant's checksum was fixed to, with the cluster it covers
    /// ([`Mutant::digest`]).
    pub fn digest(&self) -> Option<ExtensionDigest> {
        self.digest
    }
}
