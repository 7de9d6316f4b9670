//! The numbered rules of the format (`spec/rules.md`), as a type.
//!
//! Every [`crate::Violation`] names one [`Rule`]; the rule knows its code (`R17`), its title,
//! its severity and whether a parse checks it. The same table is rendered in `spec/rules.md`,
//! and a test keeps the two in step.

/// How serious a breach of a rule ([`crate::Violation`]) is, in the categories `qemu-img check` uses plus two of our own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize), serde(rename_all = "kebab-case"))]
pub enum Severity {
    /// Valid, but worth knowing (an unknown feature kept in lenient mode, ploop's leftovers).
    Note,
    /// Valid, but not what a careful writer produces (non-zero padding, unaligned extension).
    NonCanonical,
    /// Space in the file that nothing references.
    Leak,
    /// The image is corrupt: a reader may misread or refuse it.
    Corruption,
}

impl Severity {
    /// Lower-case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Note => "note",
            Severity::NonCanonical => "non-canonical",
            Severity::Leak => "leak",
            Severity::Corruption => "corruption",
        }
    }
}

/// Declares a family of numbered rules (the image's `R` rules here, a bundle's `D` rules in
/// `bundle::rule`) from its table: the enum, with `ALL`, `code`, `title`, `severity` and
/// `from_code`, `Display` as the code and serde as the code.
macro_rules! rule_family {
    (
        $(#[$meta:meta])*
        pub enum $name:ident in $spec:literal;
        #[doc = $severity_doc:literal]
        $($rule:ident $code:literal $severity:ident $title:literal;)*
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $(
                #[doc = concat!($code, ": ", $title)]
                $rule,
            )*
        }

        impl $name {
            #[doc = concat!("Every rule, in the order of `", $spec, "`.")]
            pub const ALL: &'static [$name] = &[$($name::$rule),*];

            #[doc = concat!("The rule's code in `", $spec, "`.")]
            pub const fn code(self) -> &'static str {
                match self { $($name::$rule => $code,)* }
            }

            #[doc = concat!("The rule's title in `", $spec, "`.")]
            pub const fn title(self) -> &'static str {
                match self { $($name::$rule => $title,)* }
            }

            #[doc = $severity_doc]
            pub const fn severity(self) -> $crate::rule::Severity {
                match self { $($name::$rule => $crate::rule::Severity::$severity,)* }
            }

            /// The rule with this code, if there is one.
            pub fn from_code(code: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|r| r.code() == code)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.code())
            }
        }

        #[cfg(feature = "serde")]
        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.code())
            }
        }
    };
}
pub(crate) use rule_family;

rule_family! {
    /// A numbered rule of the format. `Display` gives its code (`R17`).
    ///
    /// What follows is `spec/rules.md`: every rule, the error it raises and the tests that
    /// prove it.
    ///
    #[doc = include_str!("../../spec/rules.md")]
    pub enum Rule in "spec/rules.md";
    #[doc = "How serious a breach is, in strict mode (`RuleMode::Strict`); lenient mode lowers R27 and R29 to notes."]

    R1 "R1" Corruption "magic";
    R2 "R2" Corruption "version";
    R3 "R3" Corruption "cluster size not zero";
    R4 "R4" Corruption "cluster size bound";
    R5 "R5" Corruption "BAT size bound";
    R6 "R6" Corruption "extension offset bound";
    R7 "R7" Corruption "closed cleanly";
    R8 "R8" NonCanonical "known inuse value";
    R9 "R9" NonCanonical "known flags";
    R10 "R10" NonCanonical "v1 size fits 32 bits";
    R11 "R11" Corruption "the BAT covers the disk";
    R12 "R12" Corruption "v2 data offset present";
    R13 "R13" Corruption "v2 data offset aligned";
    R14 "R14" Corruption "data area after the BAT";
    R15 "R15" Corruption "data area inside the file";
    R16 "R16" Corruption "entry in the data area";
    R17 "R17" Corruption "v1 entry on the cluster grid";
    R18 "R18" Corruption "entry inside the file";
    R19 "R19" Corruption "entries unique";
    R20 "R20" Leak "no leaked tail";
    R21 "R21" NonCanonical "extension on the cluster grid";
    R22 "R22" Corruption "extension inside the file";
    R23 "R23" Corruption "extension overlaps nothing";
    R24 "R24" Corruption "extension magic";
    R25 "R25" Corruption "extension checksum";
    R26 "R26" Corruption "room for a feature header";
    R27 "R27" Corruption "no feature flags";
    R28 "R28" Corruption "feature data inside the cluster";
    R29 "R29" Corruption "known features";
    R30 "R30" Corruption "end record";
    R31 "R31" NonCanonical "zero padding";
    R32 "R32" Corruption "bitmap data complete";
    R33 "R33" NonCanonical "no extra bitmap data";
    R34 "R34" Corruption "bitmap size";
    R35 "R35" Corruption "granularity a power of two";
    R36 "R36" Corruption "granularity fits 32 bits in bytes";
    R37 "R37" Corruption "L1 size";
    R38 "R38" NonCanonical "L1 clusters on the grid";
    R39 "R39" Corruption "L1 clusters inside the file";
    R40 "R40" Corruption "L1 clusters overlap nothing";
    R41 "R41" Corruption "unique ids";
    R42 "R42" Note "no bits past the last granule";
    R43 "R43" Corruption "BAT entries inside the disk";
    R44 "R44" Corruption "zero slots up to the data area";
    R45 "R45" Corruption "nothing between the BAT and the data area";
    R46 "R46" Leak "no unreferenced space inside the image";
    R47 "R47" Note "v1 data offset set";
    R48 "R48" Corruption "BAT readable in one request";
    R49 "R49" Corruption "bitmaps need a disk";
}

impl Rule {
    /// Whether every parse checks this rule (R1–R6: a failure stops parsing), rather than
    /// the validator.
    pub const fn checked_at_parse(self) -> bool {
        matches!(self, Rule::R1 | Rule::R2 | Rule::R3 | Rule::R4 | Rule::R5 | Rule::R6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_numbered_in_order() {
        for (i, rule) in Rule::ALL.iter().enumerate() {
            assert_eq!(rule.code(), format!("R{}", i + 1));
            assert_eq!(Rule::from_code(rule.code()), Some(*rule));
            assert_eq!(rule.to_string(), rule.code());
        }
        assert_eq!(Rule::from_code("R0"), None);
    }
}
