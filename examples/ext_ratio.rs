//! Extension validation as a ratio to a bare MD5 of the same 1 MiB, measured interleaved: each
//! round times `Md5::digest` of the cluster, then `Image::parse` + `validate` of the image that
//! holds it, then the same image without its extension, then `Image::parse` +
//! `validate_with(Threads::Caller)` (no helper thread), back to back. The per-round ratios are
//! taken before any median, so a machine that slows down for a while moves both sides alike
//! (criterion measures one function for seconds before the next).
//!
//!     cargo run --release --example ext_ratio [ROUNDS]     (default 400)
//!
//! Cases (benches/common): the worst case, a cluster filled with 5 698 minimal bitmap records,
//! and the common case, four bitmaps and zeros.

#[path = "../benches/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use md5::{Digest, Md5};
use parallels_image::{Image, Source, Threads};

use common::{four_bitmaps, full_extension, without_extension, EXT_CLUSTER};

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args().nth(1).map_or(400, |s| s.parse().expect("ROUNDS"));
    println!(
        "case                     md5 ms   parse+validate ms   ratio (median, p10-p90)   extension alone   one thread"
    );
    for (name, img) in [
        ("5 698 bitmaps (worst)", full_extension()),
        ("4 bitmaps (common)", four_bitmaps()),
    ] {
        let image = Image::parse(&img).unwrap();
        assert!(parallels_image::validate(&image).unwrap().findings.is_empty());
        let off = image.extension().unwrap().file_offset;
        let cluster = img.read_at(off, EXT_CLUSTER).unwrap().into_owned();
        let bare = without_extension(&img);
        let time = |f: &mut dyn FnMut()| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        };
        let (mut md5, mut full, mut ratio, mut alone, mut caller) = (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..rounds + 20 {
            let m = time(&mut || {
                black_box(Md5::digest(black_box(&cluster[24..])));
            });
            let p = time(&mut || {
                black_box(parallels_image::validate(&Image::parse(&img).unwrap()).unwrap());
            });
            let b = time(&mut || {
                black_box(parallels_image::validate(&Image::parse(&bare).unwrap()).unwrap());
            });
            let c = time(&mut || {
                black_box(parallels_image::validate_with(&Image::parse(&img).unwrap(), Threads::Caller).unwrap());
            });
            if round >= 20 {
                // The first rounds warm caches and clocks.
                md5.push(m);
                full.push(p);
                ratio.push(p / m);
                alone.push((p - b) / m);
                caller.push(c / m);
            }
        }
        let r = median(&mut ratio);
        let (p10, p90) = (ratio[rounds / 10], ratio[rounds * 9 / 10]);
        println!(
            "{name:<24} {:>6.3}   {:>17.3}   {r:.3} ({p10:.3}-{p90:.3})         {:.3}             {:.3}",
            median(&mut md5) * 1e3,
            median(&mut full) * 1e3,
            median(&mut alone),
            median(&mut caller),
        );
    }
}
