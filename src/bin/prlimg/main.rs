//! `prlimg`: inspect, check, build and damage Parallels disk images.
//!
//! Conventions follow `qemu-img`: `check` exits 0 (clean), 2 (corruption), 3 (leaks only) or
//! 1 (the image could not be checked); every other failure is one line on stderr,
//! `prlimg: <path>: <reason>`, and exit status 1.

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

mod args;
mod bitmaps;
mod check;
mod convert;
mod corrupt;
mod create;
mod differential;
mod info;
mod input;
mod map;
mod mutate;
mod output;
mod repair;

use output::Failure;

/// Parallels disk image (.hds/.hdd) tool: info, conformance check, dirty bitmaps, test images.
#[derive(Parser, Debug)]
#[command(name = "prlimg", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Quiet: print nothing but errors (no report, no progress, no notes), as `qemu-img -q`.
    #[arg(short = 'q', long, global = true)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Print every header field, the allocation and the dirty bitmaps.
    Info(info::Args),
    /// Check the image against every rule of the format (exit 0 clean, 2 corrupt, 3 leaks, 1 error).
    Check(check::Args),
    /// List the dirty bitmaps, or print one bitmap's extents as `nbdinfo --map` does.
    Bitmaps(bitmaps::Args),
    /// Create an image with data and bitmaps, from options or a recipe file.
    Create(create::Args),
    /// Copy an image and break one rule on purpose (test images for validators).
    Corrupt(corrupt::Args),
    /// Repair an image, keeping its extension and dirty bitmaps: the plan (each action, the rule
    /// it fixes, what is lost), then the repaired copy (or --in-place).
    Repair(repair::Args),
    /// Copy the guest's data: .hds, bundle or raw in; raw (sparse), .hds or bundle out.
    Convert(convert::Args),
    /// Where each guest extent's data is (file, host offset) or that it is zeros.
    Map(map::Args),
    /// Write structure-aware variants of an image (for other programs' fuzzers) and a manifest.
    Mutate(mutate::Args),
    /// Run variants (or images) through qemu-img and the ploop oracle and compare with the
    /// predictions; keep every disagreement, crash, abort and timeout (exit 0 all agree, 4 not).
    Differential(differential::Args),
    /// Write a reproducible seed corpus: valid images of many shapes, every defect, variants.
    Corpus(mutate::CorpusArgs),
    /// Print a shell completion script: `prlimg completions bash > /etc/bash_completion.d/prlimg`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual pages (roff), prlimg(1) then every subcommand's (prlimg-check(1) ...):
    /// `prlimg man > prlimg.1; man ./prlimg.1`; or write each to its own file in a folder:
    /// `prlimg man --dir /usr/local/share/man/man1`.
    Man {
        /// Write prlimg.1, prlimg-check.1 ... into this folder (created if missing) instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
        /// Replace pages of the same names in DIR.
        #[arg(long, requires = "dir")]
        force: bool,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors exit 1 as in qemu-img,
            // so that 2 and 3 keep their `check` meanings.
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    output::set_quiet(cli.quiet);
    if !matches!(cli.command, Command::Completions { .. }) {
        // Every other command may write an output (a file, a bundle folder, a report).
        clean_up_on_signals();
    }
    let result = match cli.command {
        Command::Info(a) => info::run(&a),
        Command::Check(a) => check::run(&a),
        Command::Bitmaps(a) => bitmaps::run(&a),
        Command::Create(a) => create::run(&a),
        Command::Corrupt(a) => corrupt::run(&a),
        Command::Repair(a) => repair::run(&a),
        Command::Convert(a) => convert::run(&a),
        Command::Map(a) => map::run(&a),
        Command::Mutate(a) => mutate::run(&a),
        Command::Corpus(a) => mutate::run_corpus(&a),
        Command::Differential(a) => differential::run(&a),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir, force } => man(dir.as_deref(), force),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if !f.reason.is_empty() {
                eprintln!("{f}");
            }
            ExitCode::from(f.code)
        }
    }
}

/// Exit status of a command that succeeded (`check` uses 2 and 3 for what it found).
pub type Outcome = Result<u8, Failure>;

/// On SIGINT, SIGTERM or SIGHUP: remove the named temporary file or folder of an output being written
/// (an unnamed one needs nothing), kill the programs a `differential` campaign runs and remove
/// its scratch folder, then die of the signal as if it had not been caught.
fn clean_up_on_signals() {
    #[cfg(unix)]
    {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
            return;
        };
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                parallels_image::outfile::abandon_outputs();
                parallels_image::oracle::campaign::abandon();
                let _ = signal_hook::low_level::emulate_default_handler(sig);
                std::process::exit(128 + sig);
            }
        });
    }
}

/// `prlimg completions SHELL`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> Outcome {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "prlimg", &mut script);
    output::emit(&String::from_utf8_lossy(&script))?;
    Ok(0)
}

/// Every manual page: `prlimg` first, then each subcommand's (and theirs), as (file name, roff).
fn man_pages() -> Result<Vec<(String, Vec<u8>)>, Failure> {
    fn walk(cmd: &clap::Command, out: &mut Vec<(String, Vec<u8>)>) -> Result<(), Failure> {
        let man = clap_mangen::Man::new(cmd.clone());
        let mut page = Vec::new();
        man.render(&mut page)
            .map_err(|e| Failure::plain(format!("man page: {e}")))?;
        out.push((man.get_filename(), page));
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, out)?;
        }
        Ok(())
    }
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    walk(&cmd, &mut out)?;
    Ok(out)
}

/// `prlimg man`: every manual page, in roff, on stdout (one after another: `man` shows them
/// in turn), or each in its own file in `dir`.
fn man(dir: Option<&std::path::Path>, force: bool) -> Outcome {
    let pages = man_pages()?;
    let Some(dir) = dir else {
        let all: Vec<u8> = pages.into_iter().flat_map(|(_, page)| page).collect();
        output::emit(&String::from_utf8_lossy(&all))?;
        return Ok(0);
    };
    // A folder made here is removed whole if the run is interrupted before its last page (as
    // `mutate` and `corpus` do); into a folder that was there, each page is whole or absent.
    let made = std::fs::symlink_metadata(dir).is_err();
    if made {
        parallels_image::outfile::hold_output_folder(dir).map_err(|e| Failure::lib(dir, &e))?;
    }
    std::fs::create_dir_all(dir).map_err(|e| Failure::io(dir, &e))?;
    for (name, page) in &pages {
        let path = dir.join(name);
        parallels_image::outfile::write_file_atomically(&path, force, |f| Ok(std::io::Write::write_all(f, page)?))
            .map_err(|e| Failure::lib(&path, &e))?;
    }
    if made {
        parallels_image::outfile::release_output_folder(dir);
    }
    Ok(0)
}
