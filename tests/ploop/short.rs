//! Files cut short of ploop's 4 KiB header block (found by `prlimg differential`): ploop's mount
//! cannot read them and leaves them as they are, so the header fields after it are the file's
//! own (the missing bytes read as zeros), not zeros.

use parallels_image::ploop::predict_ploop;
use parallels_image::raw::header::INUSE_CLOSED_V21;

use crate::corpus::{base, INUSE};
use crate::fixtures::needs;
use crate::harness::{compare_file, scratch};

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn a_file_shorter_than_the_header_block_keeps_its_header_through_a_mount() {
    let Some(bin) = needs::ploop_drivers("a_file_shorter_than_the_header_block_keeps_its_header_through_a_mount")
    else {
        return;
    };
    let dir = scratch();
    assert_eq!(INUSE[1].1, INUSE_CLOSED_V21);
    // v2, 64 KiB clusters, 4 MiB, "v2.1", with an extension.
    let full = base(1, INUSE_CLOSED_V21, 1);
    let ext_off = u64::from_le_bytes(full[56..64].try_into().unwrap());
    assert_ne!(ext_off, 0);
    for len in [320usize, 60, 4095] {
        let bytes = &full[..len];
        let path = dir.path().join(format!("short{len}.hds"));
        std::fs::write(&path, bytes).unwrap();
        let p = predict_ploop(&bytes, &path.display().to_string()).unwrap();
        // 60 bytes: ext_off's last 4 bytes are missing and read as zeros.
        let want_ext = if len >= 64 { ext_off } else { ext_off & 0xffff_ffff };
        assert_eq!(
            (p.mount.rc, p.mount.ext_off, p.mount.inuse, p.mount.file_size),
            (Some(4), want_ext, INUSE_CLOSED_V21, len as u64),
            "{len} bytes"
        );
        assert_eq!(compare_file(&bin, &path), Vec::<String>::new(), "{len} bytes");
    }
}
