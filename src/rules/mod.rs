//! The numbered rules and their checking: the rules and severities, the violations (with the
//! header's field table), every rule as typed violations, and the whole conformance check.

pub mod check;
pub mod helper;
pub mod rule;
pub mod validate;
pub mod violation;
