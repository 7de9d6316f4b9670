//! The D rules, one test each.
