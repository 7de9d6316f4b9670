//! Valid images of many shapes: every `inuse`, both magics, cluster sizes ploop accepts and
//! some it refuses, no/one/several bitmaps, data or none; QEMU-written images; the samples.

use parallels_image::{GuestData, ImageBuilder, Variant};

use crate::corpus::{bm, INUSE, KIB, MIB};
use crate::fixtures::needs;
use crate::harness::{compare_all, compare_file, scratch};

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn built_images_of_many_shapes_agree_with_ploop() {
    let Some(bin) = needs::ploop_drivers("built_images_of_many_shapes_agree_with_ploop") else {
        return;
    };
    let dir = scratch();
    let mut images = Vec::new();
    // 16 KiB and 128 MiB are outside ploop's 32 KiB..64 MiB; 96 KiB is not a power of two.
    let clusters = [16 * KIB, 32 * KIB, 64 * KIB, 96 * KIB, 256 * KIB, MIB];
    for (iname, inuse) in INUSE {
        for variant in [Variant::V1, Variant::V2] {
            for &cluster in &clusters {
                for bitmaps in 0..=2usize {
                    let disk = 40 * cluster + 512 * (bitmaps as u64);
                    let mut b = ImageBuilder::new(disk)
                        .variant(variant)
                        .cluster_size(cluster)
                        .inuse(inuse);
                    if bitmaps != 1 {
                        b = b.data(cluster + 100, GuestData::Fill { len: 5000, byte: 0x5a });
                    }
                    for k in 0..bitmaps {
                        let g = [512, 64 * KIB][k % 2];
                        b = b.bitmap(bm(k as u8 + 10, g, &[(k as u64 * cluster, 3 * cluster)]));
                    }
                    let bytes = b.to_vec().unwrap().0;
                    let v = if variant == Variant::V1 { "v1" } else { "v2" };
                    images.push((format!("{iname}_{v}_c{}k_{bitmaps}bm", cluster / KIB), bytes));
                }
            }
        }
    }
    let n = compare_all(&bin, dir.path(), images);
    assert_eq!(n, 4 * 2 * 6 * 3);
}

#[test]
#[cfg_attr(
    any(prlimg_no_ploop_oracle, prlimg_no_qemu_tools),
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh) and the QEMU tools; with CI=true it runs and fails"
)]
fn qemu_written_images_agree_with_ploop() {
    let test = "qemu_written_images_agree_with_ploop";
    let Some(bin) = needs::ploop_drivers(test) else { return };
    if !needs::tools(test, &["qemu-img", "qemu-io"]) {
        return;
    }
    let dir = scratch();
    let mut n = 0;
    for (cluster, size) in [("64K", "10M"), ("1M", "20M"), ("32K", "3M")] {
        let path = dir.path().join(format!("qemu_{cluster}.hds"));
        let st = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "parallels", "-o"])
            .arg(format!("cluster_size={cluster}"))
            .arg(&path)
            .arg(size)
            .status()
            .unwrap();
        assert!(st.success());
        let d = compare_file(&bin, &path);
        assert!(d.is_empty(), "{}: {d:#?}", path.display());
        // Written by QEMU itself (no extension: QEMU may open it read-write).
        let st = std::process::Command::new("qemu-io")
            .args([
                "-f",
                "parallels",
                "-c",
                "write -P 0x11 0 70k",
                "-c",
                "write -P 0x22 2M 4k",
            ])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let d = compare_file(&bin, &path);
        assert!(d.is_empty(), "{} with data: {d:#?}", path.display());
        n += 2;
    }
    assert_eq!(n, 6);
}

/// The shared samples: QEMU's test images (one written by Virtuozzo tools, "v2.1" with a
/// bitmap) and the Parallels Desktop bundles' images ("pd17").
#[test]
#[cfg_attr(
    any(prlimg_no_ploop_oracle, prlimg_no_samples),
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh) and the sample images in ../shared/samples; with CI=true it runs and fails"
)]
fn samples_agree_with_ploop() {
    let test = "samples_agree_with_ploop";
    let Some(bin) = needs::ploop_drivers(test) else { return };
    let Some(root) = needs::samples(test) else { return };
    let dir = scratch();
    // Decompressed one at a time, as the workers take them: a plain bundle's image is large.
    let mut sources: Vec<(String, std::path::PathBuf)> = ["parallels-v1", "parallels-v2", "parallels-with-bitmap"]
        .iter()
        .map(|name| (name.to_string(), root.join(format!("qemu/{name}.bz2"))))
        .collect();
    for bundle in ["expanding", "plain"] {
        let folder = root.join(format!("parallels-desktop/{bundle}.hdd"));
        for entry in std::fs::read_dir(&folder).unwrap() {
            let p = entry.unwrap().path();
            if p.to_string_lossy().ends_with(".hds.gz") {
                sources.push((format!("pd_{bundle}"), p));
            }
        }
    }
    let images = sources.into_iter().map(|(name, p)| {
        let bytes = if p.extension().is_some_and(|e| e == "bz2") {
            let f = std::fs::File::open(&p).unwrap();
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut bzip2::read::BzDecoder::new(f), &mut bytes).unwrap();
            bytes
        } else {
            let out = std::process::Command::new("gzip").arg("-dc").arg(&p).output().unwrap();
            assert!(out.status.success());
            out.stdout
        };
        (name, bytes)
    });
    let n = crate::harness::compare_stream(&bin, dir.path(), images);
    assert!(n >= 4, "{n}");
}
