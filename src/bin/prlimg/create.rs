//! `prlimg create`: build an image from options or a recipe, reproducibly.

use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use parallels_image::raw::header::INUSE_CLOSED_V21;
use parallels_image::{
    bundle::BundleBuilder, bundle::BundleRecipe, bundle::SnapshotSpec, bundle::DEFAULT_TOP_GUID, recipe::DataRecipe,
    recipe::Recipe, BitmapSpec, Error, GuestData, ImageBuilder,
};

use crate::args;
use crate::output::{output_options, progress, Failure};
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The image to create (refused if it exists, unless --force).
    out: PathBuf,
    /// Virtual size: bytes or K, M, G, T, P, E (powers of 1024).
    #[arg(long, allow_hyphen_values = true, value_parser = args::size, required_unless_present = "recipe")]
    size: Option<u64>,
    /// Cluster size (a multiple of 512).
    #[arg(long, allow_hyphen_values = true, value_parser = args::size, default_value = "1M")]
    cluster_size: u64,
    /// Use the v1 magic `WithoutFreeSpace` (BAT in sectors).
    #[arg(long)]
    v1: bool,
    /// Guest data: LEN copies of BYTE at OFFSET (sizes with suffixes; BYTE decimal or 0x..).
    #[arg(long, allow_hyphen_values = true, value_name = "OFFSET:LEN:BYTE", value_parser = args::parse_data)]
    data: Vec<DataRecipe>,
    /// A bitmap: its UUID, its granularity and its dirty ranges (may be empty after the last colon).
    #[arg(long, value_name = "UUID:GRANULARITY:OFFSET+LEN,...", value_parser = args::parse_bitmap)]
    bitmap: Vec<BitmapSpec>,
    /// Add a bitmap with this fraction (0.0 to 1.0) of granules dirty, in random runs.
    #[arg(long, allow_hyphen_values = true, value_name = "DENSITY", value_parser = args::parse_density)]
    random_bitmap: Option<f64>,
    /// Granularity of the --random-bitmap.
    #[arg(long, allow_hyphen_values = true, value_parser = args::size, default_value = "64K", requires = "random_bitmap")]
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
    #[arg(long, value_name = "INUSE", value_parser = args::parse_inuse)]
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

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Virtuozzo ploop: its CBT loader reads the bitmaps.
    Ploop,
}

fn builder_from_args(args: &Args) -> Result<ImageBuilder, Failure> {
    if let Some(recipe) = &args.recipe {
        let parsed: Recipe = args::read_recipe(recipe).map_err(|f| {
            if args::read_recipe::<parallels_image::bundle::BundleRecipe>(recipe).is_ok() {
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
    let mut b = options_recipe(args)
        .to_builder()
        .map_err(|e| Failure::plain(e.to_string()))?;
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

/// The options as a recipe (the bitmaps apart: they are parsed already; size 0 with --recipe).
fn options_recipe(args: &Args) -> Recipe {
    Recipe {
        size: args.size.unwrap_or(0),
        cluster_size: args.cluster_size,
        v1: args.v1,
        data: args.data.clone(),
        bitmaps: Vec::new(),
    }
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
    for (later, earlier) in options_recipe(args).overlapping_data() {
        notes.push(format!(
            "--data {}:{}:{:#04x} overlaps --data {}:{}:{:#04x}; the later one wins where they overlap",
            later.offset, later.len, later.byte, earlier.offset, earlier.len, earlier.byte
        ));
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
        return bundle(out, args);
    }
    let builder = builder_from_args(args)?;
    check_preset(args, &builder)?;
    let expected = options_recipe(args).data_bytes();
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

/// `create OUT.hdd` or `create --bundle`: a bundle folder from the options (one snapshot, the
/// predefined top GUID) or from a bundle recipe (snapshots, split segments).
fn bundle(out: &Path, args: &Args) -> Outcome {
    let builder = match &args.recipe {
        Some(path) => {
            let parsed: BundleRecipe = args::read_recipe(path)?;
            parsed.to_builder().map_err(|e| Failure::at(path, e.to_string()))?
        }
        None => {
            let size = args.size.ok_or_else(|| Failure::plain("--size is required"))?;
            let fill = |d: &DataRecipe| {
                (
                    d.offset,
                    GuestData::Fill {
                        len: d.len,
                        byte: d.byte,
                    },
                )
            };
            BundleBuilder::new(size)
                .cluster_size(args.cluster_size)
                .snapshot(SnapshotSpec {
                    guid: DEFAULT_TOP_GUID,
                    parent: None,
                    data: args.data.iter().map(fill).collect(),
                    bitmaps: args.bitmap.clone(),
                })
        }
    };
    builder.create(out, args.force).map_err(|e| Failure::lib(out, &e))?;
    Ok(0)
}
