//! `prlimg corrupt`: placeholder until the library's corrupt module exists.

use std::path::PathBuf;

use crate::output::Failure;
use crate::Outcome;

#[derive(clap::Args, Debug)]
pub struct Args {
    input: Option<PathBuf>,
}

pub fn run(_args: &Args) -> Outcome {
    Err(Failure::plain("corrupt is not available yet"))
}
