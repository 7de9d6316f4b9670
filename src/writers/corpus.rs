//! Folders of files for other programs' fuzzers, each with a `manifest.json` saying what every
//! file is: structure-aware variants of one image ([`write_variants`], `prlimg mutate`) and a
//! reproducible seed corpus ([`write_seed_corpus`], `prlimg corpus`). Every file goes through
//! the careful writer; nothing that exists is replaced without `force`, and that is checked for
//! every file before the first is written. A folder a run makes is removed whole if the run is
//! interrupted before its manifest ([`write_manifest`]).

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::mutate::{seed_corpus, ChecksumState, CorpusEntry, CorpusKind, Edit, MutateOptions, Mutator};
use crate::outfile::{hold_output_folder, release_output_folder, write_file_atomically};

/// The manifest's name in the output folder.
pub const MANIFEST: &str = "manifest.json";
/// The manifests' schema version.
pub const SCHEMA: u32 = 1;

/// Why a folder could not be written.
#[derive(Debug, thiserror::Error)]
pub enum FolderError {
    /// The folder could not be made.
    #[error("{}: {source}", path.display())]
    Io {
        /// The folder.
        path: PathBuf,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// A file could not be written (or the folder held for the run).
    #[error("{}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        #[source]
        source: Error,
    },
    /// A file of the run is there already (and `force` is off): nothing was written.
    #[error("{}: exists; nothing was written (use --force to replace, or another folder)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The seed corpus could not be made.
    #[error("making the corpus: {0}")]
    Corpus(#[source] Error),
}

/// One variant of a [`VariantsManifest`].
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VariantRecord {
    /// Its file name.
    pub file: String,
    /// Its seed.
    pub seed: u64,
    /// The extension's checksum after the edits.
    pub checksum: ChecksumState,
    /// The edits made.
    pub edits: Vec<Edit>,
}

/// The manifest of a folder of variants.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct VariantsManifest {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The image varied, as the caller names it.
    pub input: String,
    /// The seed of the first variant.
    pub seed: u64,
    /// How many variants.
    pub count: u64,
    /// Edits per variant, at least and at most.
    pub edits: [usize; 2],
    /// Whether the extension's checksum was put right after the edits.
    pub fix_checksum: bool,
    /// Every variant, in order.
    pub mutants: Vec<VariantRecord>,
}

/// One file of a [`CorpusManifest`].
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CorpusRecord {
    /// Its file name.
    pub file: String,
    /// What it is.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub kind: CorpusKind,
}

/// The manifest of a seed corpus.
#[derive(Clone, Debug)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CorpusManifest {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The corpus's seed.
    pub seed: u64,
    /// Every file, in order.
    pub files: Vec<CorpusRecord>,
}

/// Creates `dir` if missing (held: removed whole if the run dies before its manifest) and
/// refuses, without `force`, if any of `names` or the manifest exists in it.
pub fn prepare(dir: &Path, names: impl Iterator<Item = String>, force: bool) -> Result<(), FolderError> {
    let made = std::fs::symlink_metadata(dir).is_err();
    std::fs::create_dir_all(dir).map_err(|source| FolderError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if made {
        return hold_output_folder(dir).map_err(|source| FolderError::Write {
            path: dir.to_path_buf(),
            source,
        });
    }
    if force {
        return Ok(());
    }
    for name in names.chain([MANIFEST.to_string()]) {
        let path = dir.join(&name);
        if std::fs::symlink_metadata(&path).is_ok() {
            return Err(FolderError::Exists { path });
        }
    }
    Ok(())
}

/// Writes `bytes` to `path` through the careful writer.
pub fn write(path: &Path, bytes: &[u8], force: bool) -> Result<(), FolderError> {
    write_file_atomically(path, force, |f| Ok(f.write_all(bytes)?)).map_err(|source| FolderError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the manifest (`text`, its JSON) and lets the folder be: the run is complete.
pub fn write_manifest(dir: &Path, text: &[u8], force: bool) -> Result<(), FolderError> {
    write(&dir.join(MANIFEST), text, force)?;
    release_output_folder(dir);
    Ok(())
}

/// Writes `count` variants (`mutant-000000.hds`..., variant i of seed `seed + i`) into `dir`
/// ([`prepare`]d here); their manifest, with `input` for the image varied and the `options` the
/// mutator was made with, is the caller's to write ([`write_manifest`]).
pub fn write_variants(
    mutator: &Mutator,
    options: &MutateOptions,
    input: String,
    dir: &Path,
    seed: u64,
    count: u64,
    force: bool,
) -> Result<VariantsManifest, FolderError> {
    let name = |i: u64| format!("mutant-{i:06}.hds");
    prepare(dir, (0..count).map(name), force)?;
    let mut mutants = Vec::new();
    // One buffer for every variant: only the bytes the last one's edits wrote are copied back.
    let mut buffer = mutator.buffer();
    for i in 0..count {
        let seed = seed.wrapping_add(i);
        let bytes = buffer.mutate(seed);
        write(&dir.join(name(i)), bytes, force)?;
        mutants.push(VariantRecord {
            file: name(i),
            seed,
            checksum: buffer.checksum(),
            edits: buffer.edits().to_vec(),
        });
    }
    Ok(VariantsManifest {
        schema: SCHEMA,
        input,
        seed,
        count,
        edits: [*options.edits.start(), *options.edits.end()],
        fix_checksum: options.fix_checksum,
        mutants,
    })
}

/// Writes the seed corpus of `seed` ([`seed_corpus`]) into `dir` ([`prepare`]d here); its
/// manifest is the caller's to write ([`write_manifest`]).
pub fn write_seed_corpus(dir: &Path, seed: u64, force: bool) -> Result<CorpusManifest, FolderError> {
    let corpus: Vec<CorpusEntry> = seed_corpus(seed).map_err(FolderError::Corpus)?;
    prepare(dir, corpus.iter().map(|e| e.name.clone()), force)?;
    for e in &corpus {
        write(&dir.join(&e.name), &e.bytes, force)?;
    }
    let files = corpus
        .into_iter()
        .map(|e| CorpusRecord {
            file: e.name,
            kind: e.kind,
        })
        .collect();
    Ok(CorpusManifest {
        schema: SCHEMA,
        seed,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::ImageBuilder;

    #[test]
    fn variants_are_written_with_their_records_and_nothing_is_replaced_unless_forced() {
        let (image, _) = ImageBuilder::new(1 << 20).cluster_size(65536).to_vec().unwrap();
        let options = MutateOptions::default();
        let mutator = Mutator::new(&image, options.clone()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("variants");
        let manifest = write_variants(&mutator, &options, "base.hds".into(), &out, 5, 3, false).unwrap();
        assert_eq!(
            (manifest.schema, manifest.input.as_str(), manifest.seed, manifest.count),
            (1, "base.hds", 5, 3)
        );
        let files: Vec<(&str, u64)> = manifest.mutants.iter().map(|m| (m.file.as_str(), m.seed)).collect();
        assert_eq!(
            files,
            [
                ("mutant-000000.hds", 5),
                ("mutant-000001.hds", 6),
                ("mutant-000002.hds", 7)
            ]
        );
        for m in &manifest.mutants {
            let variant = mutator.mutant(m.seed);
            assert_eq!(std::fs::read(out.join(&m.file)).unwrap(), variant.bytes);
            assert_eq!(m.edits.len(), variant.edits.len());
        }
        write_manifest(&out, b"{}\n", false).unwrap();
        match write_variants(&mutator, &options, "base.hds".into(), &out, 5, 1, false) {
            Err(FolderError::Exists { path }) => assert_eq!(path, out.join("mutant-000000.hds")),
            other => panic!("{other:?}"),
        }
        write_variants(&mutator, &options, "base.hds".into(), &out, 9, 1, true).unwrap();
        assert_eq!(
            std::fs::read(out.join("mutant-000000.hds")).unwrap(),
            mutator.mutant(9).bytes
        );
    }
}
