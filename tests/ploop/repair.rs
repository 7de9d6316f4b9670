//! `plan_repair(.., RepairLevel::All)` of every defect over the repair bases
//! (`fixtures::repair`), run through ploop: its check, CBT loader and mount do what
//! `predict_ploop` says, and on a base of a cluster size ploop opens its check returns 0.

use parallels_image::{
    ploop::ploop_accepts_cluster_size, ploop::predict_ploop, repair::plan_repair, repair::RepairLevel, Image,
};

use crate::fixtures::needs;
use crate::fixtures::repair::damaged;
use crate::harness::{compare_all, scratch};

#[test]
#[cfg_attr(
    prlimg_no_ploop_oracle,
    ignore = "needs the ploop oracle (bash ../shared/oracles/ploop/build.sh); with CI=true it runs and fails"
)]
fn repaired_defects_pass_ploop_check() {
    let Some(bin) = needs::ploop_drivers("repaired_defects_pass_ploop_check") else {
        return;
    };
    let dir = scratch();
    let mut images = Vec::new();
    let mut zero = 0;
    for (name, d, bytes) in damaged() {
        let Ok(plan) = plan_repair(&bytes, RepairLevel::All) else {
            continue;
        };
        let out = plan.to_vec(&bytes).unwrap();
        let cs = Image::parse(&out).unwrap().header().cluster_size();
        if ploop_accepts_cluster_size(cs) {
            let p = predict_ploop(&out.as_slice(), "x.hds").unwrap();
            assert_eq!(p.check.rc, Some(0), "{name}/{d}: {:?}", p.check.messages);
            zero += 1;
        }
        images.push((format!("{name}_{d}"), out));
    }
    assert!(zero > 50, "{zero} repaired images of a cluster size ploop opens");
    compare_all(&bin, dir.path(), images);
}
