//! The Nix language conformance harness: runs a folder of upstream-layout
//! tests (`parse-fail-*`, `parse-okay-*`, `eval-fail-*`, `eval-okay-*`)
//! against `b3 instantiate` (or any `nix-instantiate`) the way upstream's
//! `lang.sh` does, and prints `PASS`/`FAIL`/`SKIP` lines followed by a
//! final `N passed, N failed[, N skipped]` line.

mod fsutil;
mod run;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[derive(Parser, Debug)]
#[command(
    name = "b3-lang-tests",
    about = "Runs Nix language tests (upstream lang.sh layout) against b3 or nix-instantiate"
)]
struct Args {
    /// Check only exit codes of *-fail tests and ignore stderr of *-okay tests (default).
    #[arg(long, conflicts_with = "official")]
    lenient: bool,
    /// Compare everything exactly, as upstream does.
    #[arg(long)]
    official: bool,
    /// The b3 binary, run as `b3 instantiate ARGS`. A binary named
    /// `nix-instantiate` is run directly.
    #[arg(long, value_name = "PATH")]
    b3: Option<PathBuf>,
    /// Run this nix-instantiate directly instead of b3.
    #[arg(long, value_name = "PATH", conflicts_with = "b3")]
    nix_instantiate: Option<PathBuf>,
    /// Only run tests whose name contains this string.
    #[arg(long, value_name = "SUBSTR")]
    filter: Option<String>,
    /// Show expected and actual output of failing tests.
    #[arg(long, short)]
    verbose: bool,
    /// Exit with status 1 if fewer than N tests pass.
    #[arg(long, value_name = "N", default_value_t = 0)]
    min_pass: usize,
    /// Number of tests run at once.
    #[arg(long, short, value_name = "N")]
    jobs: Option<usize>,
    /// Per-test time limit in seconds; a test that exceeds it fails.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    timeout: u64,
    /// Keep the scratch directory and print its path.
    #[arg(long)]
    keep_scratch: bool,
    /// Folder of tests in the upstream layout.
    dir: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match real_main(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("b3-lang-tests: {e}");
            ExitCode::from(2)
        }
    }
}

fn default_b3() -> PathBuf {
    // Next to this harness in the target directory, else on PATH.
    if let Ok(me) = std::env::current_exe() {
        if let Some(dir) = me.parent() {
            let sibling = dir.join("b3");
            if sibling.is_file() {
                return sibling;
            }
        }
    }
    PathBuf::from("b3")
}

fn real_main(args: Args) -> Result<ExitCode, String> {
    let program = match (&args.nix_instantiate, &args.b3) {
        (Some(p), _) => run::Program::direct(p),
        (None, Some(p)) => run::Program::for_binary(p),
        (None, None) => run::Program::for_binary(&default_b3()),
    };
    let config = suite::Config {
        lenient: !args.official,
        timeout: std::time::Duration::from_secs(args.timeout),
        verbose: args.verbose,
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get().clamp(2, 4))
            .unwrap_or(2)
    });
    let scratch = fsutil::Scratch::create().map_err(|e| format!("creating scratch dir: {e}"))?;
    let setup = suite::Setup::prepare(&args.dir, scratch.path(), program)
        .map_err(|e| format!("preparing {}: {e}", args.dir.display()))?;
    let mut tests =
        suite::discover(&setup.lang_dir()).map_err(|e| format!("listing tests: {e}"))?;
    if let Some(f) = &args.filter {
        tests.retain(|t| t.name.contains(f.as_str()));
    }
    let results = suite::run_all(&setup, &config, &tests, jobs);
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for (test, outcome) in tests.iter().zip(&results) {
        match outcome {
            suite::Outcome::Pass => {
                passed += 1;
                println!("PASS {}", test.name);
            }
            suite::Outcome::Fail { reason, details } => {
                failed += 1;
                println!("FAIL {} ({reason})", test.name);
                if args.verbose && !details.is_empty() {
                    println!("{details}");
                }
            }
            suite::Outcome::Skip(reason) => {
                skipped += 1;
                println!("SKIP {} ({reason})", test.name);
            }
        }
    }
    if args.keep_scratch {
        eprintln!("scratch directory kept at {}", scratch.keep().display());
    }
    if skipped > 0 {
        println!("{passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("{passed} passed, {failed} failed");
    }
    if passed < args.min_pass {
        eprintln!(
            "b3-lang-tests: only {passed} tests passed, at least {} required",
            args.min_pass
        );
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}
