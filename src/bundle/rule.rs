//! The numbered rules of a disk bundle (`spec/bundles.md`), as a type: `D1`, `D2`, …
//!
//! They are a family of their own, beside the image rules ([`crate::Rule`], `R1`…): every
//! [`super::BundleViolation`] names one [`BundleRule`]; each `.hds` in a bundle is still checked
//! against the `R` rules.

crate::rule::rule_family! {
    /// A numbered rule of disk bundles. `Display` gives its code (`D7`).
    pub enum BundleRule in "spec/bundles.md";
    #[doc = "How serious a breach is."]
    D1 "D1" Corruption "descriptor is well-formed XML";
    D2 "D2" Corruption "required elements and values";
    D3 "D3" Corruption "version 1.0";
    D4 "D4" Corruption "geometry matches the size";
    D5 "D5" NonCanonical "padding 0";
    D6 "D6" Corruption "storages contiguous from 0";
    D7 "D7" Corruption "storages end at the disk size";
    D8 "D8" Corruption "block size matches the images";
    D9 "D9" Corruption "expanding images cover their storage";
    D10 "D10" Corruption "plain images have the storage's size";
    D11 "D11" Corruption "image files exist";
    D12 "D12" Corruption "image files not shared";
    D13 "D13" Corruption "image files inside the bundle";
    D14 "D14" Corruption "GUIDs well-formed";
    D15 "D15" Corruption "GUIDs unique";
    D16 "D16" Corruption "one image per snapshot in every storage";
    D17 "D17" Corruption "exactly one root";
    D18 "D18" Corruption "parents exist";
    D19 "D19" Corruption "no cycles";
    D20 "D20" Corruption "the top snapshot exists";
    D21 "D21" Corruption "only the root is plain";
    D22 "D22" NonCanonical "marker file present";
}

impl BundleRule {
    /// Whether opening a bundle checks this rule (D1, D2: a failure stops reading the
    /// descriptor), rather than [`super::Bundle::validate`].
    pub const fn checked_at_open(self) -> bool {
        matches!(self, BundleRule::D1 | BundleRule::D2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_numbered_in_order() {
        for (i, rule) in BundleRule::ALL.iter().enumerate() {
            assert_eq!(rule.code(), format!("D{}", i + 1));
            assert_eq!(BundleRule::from_code(rule.code()), Some(*rule));
            assert_eq!(rule.to_string(), rule.code());
        }
        assert_eq!(BundleRule::from_code("D0"), None);
    }
}
