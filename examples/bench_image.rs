//! Test images for `scripts/bench.sh`, built sparse so that they cost only their metadata on
//! disk:
//!
//! - `bench_image half OUT ENTRIES CLUSTER`: a v2 image of ENTRIES clusters of CLUSTER bytes,
//!   every other BAT entry allocated (in guest order). The data clusters are holes.
//! - `bench_image bitmap OUT SIZE CLUSTER GRANULARITY`: a SIZE-byte image with one bitmap
//!   (id `00000001-0000-0000-0000-000000000001`) of mostly clean chunks, every 16th chunk all
//!   dirty and every 8th a mix of runs of 1 to 512 granules (the benches' pattern).
//! - `bench_image worst OUT`: the benches' worst case for extension validation, a 64 GiB image
//!   whose 1 MiB extension cluster is full of 5 698 minimal bitmap records.
//!
//! Sizes are in bytes.

#[path = "../benches/common/mod.rs"]
mod common;

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use parallels_image::{BitmapSpec, ImageBuilder};

fn usage() -> ! {
    eprintln!(
        "usage: bench_image half OUT ENTRIES CLUSTER | bench_image bitmap OUT SIZE CLUSTER GRANULARITY | bench_image worst OUT"
    );
    std::process::exit(1)
}

fn num(s: Option<&String>) -> u64 {
    s.and_then(|s| s.parse().ok()).unwrap_or_else(|| usage())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = Path::new(args.get(1).unwrap_or_else(|| usage()));
    match args.first().map(String::as_str) {
        Some("half") => {
            let (entries, cluster) = (num(args.get(2)), num(args.get(3)));
            let layout = ImageBuilder::new(entries * cluster)
                .cluster_size(cluster)
                .create_file(out, true)?;
            let first = layout.data_start / cluster;
            let mut bat = Vec::with_capacity(4 * entries as usize);
            for i in 0..entries {
                let e = if i % 2 == 0 { (first + i / 2) as u32 } else { 0 };
                bat.extend_from_slice(&e.to_le_bytes());
            }
            let mut f = OpenOptions::new().write(true).open(out)?;
            f.seek(SeekFrom::Start(64))?;
            f.write_all(&bat)?;
            f.set_len(layout.data_start + entries.div_ceil(2) * cluster)?;
            f.sync_all()?;
        }
        Some("bitmap") => {
            let (size, cluster, gran) = (num(args.get(2)), num(args.get(3)), num(args.get(4)));
            let granules = size.div_ceil(gran);
            let mut id = [0u8; 16];
            id[3] = 1;
            id[15] = 1;
            ImageBuilder::new(size)
                .cluster_size(cluster)
                .bitmap(BitmapSpec {
                    id,
                    granularity: gran,
                    extents: common::realistic_extents(granules, gran, cluster * 8, 7),
                })
                .create_file(out, true)?;
        }
        Some("worst") => {
            common::full_extension_builder().create_file(out, true)?;
        }
        _ => usage(),
    }
    Ok(())
}
