use parallels_image::*;
fn main() {
    for p in std::env::args().skip(1) {
        let src = FileSource::open(&p).unwrap();
        match Image::parse(&src) {
            Err(e) => println!("{p}: parse error {e}"),
            Ok(img) => {
                println!("{p}: {:?}", img.header().variant);
                let r = parallels_image::validate(&img).unwrap();
                for f in &r.findings {
                    println!("  {} {:?} {}", f.violation.rule(), f.severity, f.violation);
                }
                for b in img.bitmaps() {
                    println!(
                        "  bitmap {} gran {} extents {:?}",
                        b.name(),
                        b.granularity_bytes(),
                        b.dirty_extents()
                    );
                }
            }
        }
    }
}
