//! Everything that writes: whole images (the builder, random bitmaps, recipes), careful output
//! files, bitmap edits, repairs, and deliberately broken images (the defect catalogue, the
//! fuzzing mutator and its seed corpus).

pub mod builder;
pub mod corpus;
pub mod corrupt;
pub mod edit;
pub mod mutate;
pub mod outfile;
pub mod random;
pub mod recipe;
pub mod repair;
