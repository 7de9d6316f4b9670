//! `prlimg create`: build an image from options or a recipe, reproducibly.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::Path;
use std::path::PathBuf;

use parallels_image::raw::header::INUSE_CLOSED_V21;
use parallels_image::Error;
use parallels_image::{recipe::DataRecipe, recipe::Recipe};
use parallels_image::{BitmapSpec, ImageBuilder};

use crate::output::{output_options, progress, Failure};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to create (refused if it exists, unless --force).
    out: PathBuf,
    /// Virtual size: bytes or K, M, G, T, P, E (powers of 1024).
    #[arg(long, allow_hyphen_values = true, value_parser = size, required_unless_present = "recipe")]
    size: Option<u64>,
    /// Cluster size (a multiple of 512).
    #[arg(long, allow_hyphen_values = true, value_parser = size, default_value = "1M")]
    cluster_size: u64,
    /// Use the v1 magic `WithoutFreeSpace` (BAT in sectors).
    #[arg(long)]
    v1: bool,
    /// Guest data: LEN copies of BYTE at OFFSET (sizes with suffixes; BYTE decimal or 0x..).
    #[arg(long, allow_hyphen_values = true, value_name = "OFFSET:LEN:BYTE", value_parser = parse_data)]
    data: Vec<DataRecipe>,
    /// A bitmap: its UUID, its granularity and its dirty ranges (may be empty after the last colon).
    #[arg(long, value_name = "UUID:GRANULARITY:OFFSET+LEN,...", value_parser = parse_bitmap)]
    bitmap: Vec<BitmapSpec>,
    /// Add a bitmap with this fraction (0.0 to 1.0) of granules dirty, in random runs.
    #[arg(long, allow_hyphen_values = true, value_name = "DENSITY", value_parser = parse_density)]
    random_bitmap: Option<f64>,
    /// Granularity of the --random-bitmap.
    #[arg(long, allow_hyphen_values = true, value_parser = size, default_value = "64K", requires = "random_bitmap")]
    random_granularity: u64,
    /// Seed of the --random-bitmap generator (ChaCha8).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Build from a recipe (.json or .toml) instead of the options above.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["size", "cluster_size", "v1", "data", "bitmap", "random_bitmap"])]
    recipe: Option<PathBuf>,
    /// The header's inuse: 0 (closed, as QEMU writes it), v2.1 (closed, as ploop and Parallels
    /// write it: the only value whose bitmaps ploop loads), Ynot (not closed), another 4-letter
    /// tag, or a number (decimal or 0x..).
    #[arg(long, value_name = "INUSE", value_parser = parse_inuse)]
    inuse: Option<u32>,
    /// Make an image ploop loads: inuse v2.1 (unless --inuse says otherwise) and a cluster size
    /// ploop accepts (a power of two from 32K to 64M); warns that ploop keeps only the last bitmap.
    #[arg(long, value_enum)]
    preset: Option<Preset>,
    /// Replace OUT if it is a regular file (a device, FIFO or folder is never replaced).
    #[arg(long)]
    force: bool,
    /// Create a bundle folder (NAME.hdd; an OUT ending in .hdd is one without this flag); with
    /// --recipe, a bundle recipe (snapshots, splits).
    #[arg(long, conflicts_with_all = ["v1", "random_bitmap"])]
    bundle: bool,
    /// If OUT is a symbolic link, write the file it points to (else a link is refused).
    #[arg(long)]
    follow_symlink: bool,
}

/// A size with qemu-img's suffixes, for clap.
fn size(text: &str) -> Result<u64, String> {
    parallels_image::parse_size(text).map_err(|e| e.to_string())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Virtuozzo ploop: its CBT loader reads the bitmaps.
    Ploop,
}

pub(crate) fn parse_inuse(s: &str) -> Result<u32, String> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u32::from_str_radix(hex, 16).map_err(|_| format!("invalid inuse {s:?}"));
    }
    if let Ok(n) = s.parse::<u32>() {
        return Ok(n);
    }
    match s.as_bytes() {
        tag @ [_, _, _, _] if tag.iter().all(u8::is_ascii_graphic) => {
            Ok(u32::from_le_bytes([tag[0], tag[1], tag[2], tag[3]]))
        }
        _ => Err(format!(
            "invalid inuse {s:?} (expected 0, v2.1, Ynot, another 4-letter tag, or a number)"
        )),
    }
}

fn parse_byte(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("invalid byte {s:?} (expected 0..255 or 0x00..0xff)"))
}

fn parse_data(s: &str) -> Result<DataRecipe, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [offset, len, byte] = parts[..] else {
        return Err(format!("invalid data {s:?} (expected OFFSET:LEN:BYTE)"));
    };
    Ok(DataRecipe {
        offset: size(offset)?,
        len: size(len)?,
        byte: parse_byte(byte)?,
    })
}

pub(crate) fn parse_bitmap(s: &str) -> Result<BitmapSpec, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let [id, granularity, extents] = parts[..] else {
        return Err(format!(
            "invalid bitmap {s:?} (expected UUID:GRANULARITY:OFFSET+LEN,...)"
        ));
    };
    let id = uuid::Uuid::parse_str(id).map_err(|e| format!("invalid bitmap id {id:?}: {e}"))?;
    let mut list = Vec::new();
    for e in extents.split(',').filter(|e| !e.is_empty()) {
        let (o, l) = e
            .split_once('+')
            .ok_or_else(|| format!("invalid dirty range {e:?} (expected OFFSET+LEN)"))?;
        list.push((size(o)?, size(l)?));
    }
    Ok(BitmapSpec {
        id: *id.as_bytes(),
        granularity: size(granularity)?,
        extents: list,
    })
}

fn parse_density(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(d) if (0.0..=1.0).contains(&d) => Ok(d),
        _ => Err(format!("invalid density {s:?} (expected a number from 0.0 to 1.0)")),
    }
}

fn builder_from_args(args: &Args) -> Result<ImageBuilder, Failure> {
    if let Some(recipe) = &args.recipe {
        let parsed: Recipe = read_recipe(recipe).map_err(|f| {
            if read_recipe::<parallels_image::bundle::BundleRecipe>(recipe).is_ok() {
                Failure::at(
                    recipe,
                    "is a bundle recipe: add --bundle to create the bundle folder it describes",
                )
            } else {
                f
            }
        })?;
        let b = parsed.to_builder().map_err(|e| Failure::at(recipe, e.to_string()))?;
        return Ok(apply_inuse(b, args));
    }
    let size = args.size.ok_or_else(|| Failure::plain("--size is required"))?;
    // The options are a recipe whose bitmaps are already parsed.
    let recipe = Recipe {
        size,
        cluster_size: args.cluster_size,
        v1: args.v1,
        data: args.data.clone(),
        bitmaps: Vec::new(),
    };
    let mut b = recipe.to_builder().map_err(|e| Failure::plain(e.to_string()))?;
    for spec in &args.bitmap {
        b = b.bitmap(spec.clone());
    }
    if let Some(density) = args.random_bitmap {
        let spec = BitmapSpec::random(args.seed, size, args.random_granularity, density)
            .map_err(|e| Failure::plain(e.to_string()))?;
        b = b.bitmap(spec);
    }
    Ok(apply_inuse(b, args))
}

fn apply_inuse(b: ImageBuilder, args: &Args) -> ImageBuilder {
    match (args.inuse, args.preset) {
        (Some(inuse), _) => b.inuse(inuse),
        (None, Some(Preset::Ploop)) => b.inuse(INUSE_CLOSED_V21),
        (None, None) => b,
    }
}

/// `--preset ploop`: refuses a cluster size ploop does not open; warns (on stderr) when there
/// are several bitmaps, since ploop's loader keeps only the last one.
fn check_preset(args: &Args, builder: &ImageBuilder) -> Result<(), Failure> {
    if args.preset != Some(Preset::Ploop) {
        return Ok(());
    }
    let cluster = builder.cluster_size_bytes();
    if !parallels_image::ploop::ploop_accepts_cluster_size(cluster) {
        return Err(Failure::plain(format!(
            "--preset ploop: ploop does not open images with {cluster}-byte clusters (it wants a power of two from 32K to 64M)"
        )));
    }
    let ids = builder.bitmap_ids();
    if ids.len() > 1 {
        let last = uuid::Uuid::from_bytes(ids[ids.len() - 1]);
        eprintln!(
            "prlimg: warning: ploop keeps only the last of {} bitmaps ({last}); it ignores the others",
            ids.len()
        );
    }
    Ok(())
}

/// A TOML error on one line: where (line and column, from 1) and serde's reason.
/// Reads an image or bundle recipe, TOML or JSON by the file name's extension.
pub fn read_recipe<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| Failure::io(path, &e))?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("toml") => toml::from_str(&text).map_err(|e| Failure::at(path, toml_reason(&text, &e))),
        Some("json") => serde_json::from_str(&text).map_err(|e| Failure::at(path, e.to_string())),
        _ => Err(Failure::at(path, "a recipe file name must end in .json or .toml")),
    }
}

fn toml_reason(text: &str, e: &toml::de::Error) -> String {
    let reason = e.message().trim().replace('\n', "; ");
    let Some(span) = e.span() else {
        return format!("TOML: {reason}");
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("TOML at line {line}, column {column}: {reason}")
}

/// Counts bytes written, for the progress bar.
struct Counting<'a> {
    file: &'a mut std::fs::File,
    bar: indicatif::ProgressBar,
    written: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        self.bar.set_position(self.written);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for Counting<'_> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Bytes of data clusters the builder will write (each touched cluster once).
fn data_bytes(args: &Args, cluster_size: u64) -> u64 {
    if cluster_size == 0 {
        return 0;
    }
    let mut ranges: Vec<(u64, u64)> = args
        .data
        .iter()
        .filter(|d| d.len > 0)
        .map(|d| {
            (
                d.offset / cluster_size,
                d.offset.saturating_add(d.len - 1) / cluster_size + 1,
            )
        })
        .collect();
    ranges.sort_unstable();
    let (mut total, mut end) = (0u64, 0u64);
    for (s, e) in ranges {
        let s = s.max(end);
        if e > s {
            total += e - s;
            end = e;
        }
    }
    total.saturating_mul(cluster_size)
}

/// What `create` did that the options did not say: a size rounded up to whole sectors, `--data`
/// ranges that overlap (the later one wins where they do).
fn notes(args: &Args) -> Vec<String> {
    let mut notes = Vec::new();
    if let Some(size) = args.size.filter(|s| !s.is_multiple_of(512)) {
        notes.push(format!(
            "--size {size} rounded up to {} bytes (whole 512-byte sectors, as qemu-img does)",
            size.next_multiple_of(512)
        ));
    }
    for (j, later) in args.data.iter().enumerate() {
        let end = |d: &DataRecipe| d.offset.saturating_add(d.len);
        if let Some(earlier) = args.data[..j]
            .iter()
            .find(|d| d.len > 0 && later.len > 0 && d.offset < end(later) && later.offset < end(d))
        {
            notes.push(format!(
                "--data {}:{}:{:#04x} overlaps --data {}:{}:{:#04x}; the later one wins where they overlap",
                later.offset, later.len, later.byte, earlier.offset, earlier.len, earlier.byte
            ));
        }
    }
    notes
}

pub fn run(args: &Args) -> Outcome {
    let out = &args.out;
    let hdd = out.extension().is_some_and(|e| e.eq_ignore_ascii_case("hdd"));
    if hdd && !args.bundle {
        // A .hdd name is a bundle, as for `convert`; what only a single image has is refused.
        let single = [("--v1", args.v1), ("--random-bitmap", args.random_bitmap.is_some())];
        if let Some((flag, _)) = single.iter().find(|(_, on)| *on) {
            return Err(Failure::at(
                out,
                format!("a name ending in .hdd makes a bundle folder, which {flag} is not for; name the image .hds"),
            ));
        }
    }
    if args.bundle || hdd {
        let options = (args.size, args.cluster_size, &args.data[..], &args.bitmap[..]);
        return crate::create_bundle::run(out, args.recipe.as_deref(), options, args.force);
    }
    let builder = builder_from_args(args)?;
    check_preset(args, &builder)?;
    let expected = data_bytes(args, args.cluster_size);
    let bar = if expected >= 64 << 20 {
        progress(expected, "writing")
    } else {
        indicatif::ProgressBar::hidden()
    };
    let options = output_options(args.force, args.follow_symlink, None);
    let result = parallels_image::outfile::write_atomically(out, &options, |file| {
        let mut w = Counting {
            file,
            bar: bar.clone(),
            written: 0,
        };
        builder.write_to(&mut w)
    });
    bar.finish_and_clear();
    match result {
        Ok(_) => {
            for note in notes(args).into_iter().filter(|_| !crate::output::quiet()) {
                eprintln!("prlimg: {}: note: {note}", out.display());
            }
            Ok(0)
        }
        Err(Error::Build(e)) => Err(Failure::at(out, format!("cannot build this image: {e}"))),
        Err(e) => Err(Failure::lib(out, &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_parsers() {
        let d = parse_data("1M:64K:0xaa").unwrap();
        assert_eq!((d.offset, d.len, d.byte), (1 << 20, 65536, 0xaa));
        assert_eq!(parse_data("0:1:255").unwrap().byte, 255);
        assert!(parse_data("0:1:256").is_err());
        assert!(parse_data("0:1").is_err());
        let b = parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:64K:0+128K,1M+64K").unwrap();
        assert_eq!(b.granularity, 65536);
        assert_eq!(b.extents, vec![(0, 131072), (1 << 20, 65536)]);
        assert_eq!(b.id[..4], [0xe4, 0xf2, 0xee, 0xd0]);
        assert_eq!(
            parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:512:")
                .unwrap()
                .extents,
            vec![]
        );
        assert!(parse_bitmap("nope:64K:").is_err());
        assert!(parse_bitmap("e4f2eed0-37fe-4539-b50b-85d2e7fd235f:64K:5").is_err());
        assert_eq!(parse_density("0.25"), Ok(0.25));
        assert!(parse_density("1.5").is_err());
        assert!(parse_density("NaN").is_err());
    }
}
