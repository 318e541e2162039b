//! The `b3` binary: argument parsing and human-facing rendering only; the work
//! happens in the library crates.

mod cmd;
mod installable;
mod logformat;
mod multicall;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// b3: a Nix-compatible declarative package store.
#[derive(Parser)]
#[command(name = "b3", version, about, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: cmd::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write, read, list and restore Nix archives (NAR).
    #[command(subcommand)]
    Nar(cmd::nar::Command),
    /// Compute hashes of paths and files as Nix does.
    #[command(subcommand)]
    Hash(cmd::hash::Command),
    /// Work with the local store: add, dump, query, verify, garbage-collect.
    #[command(subcommand)]
    Store(cmd::store::Command),
    /// Show metadata of store paths (like `nix path-info`).
    PathInfo(cmd::path_info::Args),
    /// Inspect derivations.
    #[command(subcommand)]
    Derivation(cmd::derivation::Command),
    /// Evaluate a Nix expression and print the result.
    Eval(cmd::eval::Args),
    /// A drop-in for `nix-instantiate`.
    Instantiate(cmd::instantiate::Args),
    /// `nix-env -qa`: list the derivations an expression offers (`b3 env -qa --drv-path`).
    Env(cmd::query::Args),
    /// Same as `b3 env -qa`.
    QueryAll(cmd::query::Args),
    /// Binary-cache signing keys (Nix's format).
    #[command(subcommand)]
    Key(cmd::key::Command),
    /// Copy paths to or from a binary cache (file://, s3://, http(s)://).
    Copy(cmd::copy::Args),
    /// Serve the local store as a Nix HTTP binary cache.
    Serve(cmd::serve::Args),
    /// Show settings (nix.conf, NIX_CONFIG, --option) and where each value came from.
    #[command(subcommand)]
    Config(cmd::config::Command),
    /// Realise derivations in the sandbox (like `nix-store --realise`).
    Build(cmd::build::Args),
    /// Show the stored build log of a derivation or output path (like `nix log`).
    Log(cmd::log::Args),
    /// Start a shell with a derivation's build environment (like `nix-shell`).
    Shell(cmd::shell::Args),
    /// Print the environment `b3 shell` would set, for bash, zsh, fish or PowerShell.
    PrintEnv(cmd::print_env::Args),
    /// Print the build environment as Nix's `print-dev-env` does (bash or --json).
    PrintDevEnv(cmd::print_env::DevArgs),
    /// Runtimes: commands that see exactly one closure, served from the object database.
    #[cfg(target_os = "linux")]
    Runtime(cmd::runtime::Args),
}

// The evaluator allocates many small, short-lived thunks and frames.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

#[cfg(feature = "mimalloc")]
mod alloc {
    //! mimalloc as the global allocator, through its plain entry points
    //! for the alignments every allocation of at most 16 bytes' alignment
    //! gets anyway (the `mimalloc` crate always takes the aligned path,
    //! a few percent of the evaluator's time).
    use std::alloc::{GlobalAlloc, Layout};
    use std::ffi::c_void;

    use libmimalloc_sys as mi;

    /// mimalloc aligns every block to 16 bytes (`MI_MAX_ALIGN_SIZE`).
    const PLAIN_ALIGN: usize = 16;

    pub struct Mimalloc;

    // SAFETY: each method forwards to the mimalloc function with the same
    // contract; blocks from either entry point are freed by `mi_free`.
    unsafe impl GlobalAlloc for Mimalloc {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
            mi::mi_free(ptr.cast::<c_void>());
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            if layout.align() <= PLAIN_ALIGN {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

fn main() -> ExitCode {
    // Multicall: invoked as `nix-build`, `nix-shell`, `nix-store` or
    // `nix-instantiate` (through a symlink), behave like it.
    let argv0 = std::env::args_os()
        .next()
        .and_then(|a| {
            std::path::Path::new(&a)
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
        })
        .unwrap_or_default();
    let rest: Vec<String> = std::env::args().skip(1).collect();
    match multicall::personality(&argv0) {
        Some("nix-instantiate") => return cmd::instantiate::main_multicall(),
        Some("nix-build") => return multicall::nix_build(rest, run_b3),
        Some("nix-shell") => return multicall::nix_shell(rest),
        Some("nix-store") => return multicall::nix_store(rest, run_b3),
        _ => {}
    }
    // `b3 shell` re-executes itself to enter its mount namespace.
    if rest.first().map(String::as_str) == Some(cmd::shell::ns::ENTER_ARG) {
        let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
        return cmd::shell::ns::enter_main(&args);
    }
    dispatch(Cli::parse())
}

/// Runs `b3 ARGS` (used by the `nix-store` translation).
fn run_b3(args: Vec<String>) -> ExitCode {
    match Cli::try_parse_from(std::iter::once("b3".to_string()).chain(args)) {
        Ok(cli) => dispatch(cli),
        Err(e) => e.exit(),
    }
}

fn dispatch(cli: Cli) -> ExitCode {
    cmd::init_logging(&cli.global);
    let _activity_logger = logformat::install(cli.global.log_format, cli.global.verbose, 0);
    let result = match cli.command {
        Command::Nar(c) => cmd::nar::run(&cli.global, c),
        Command::Hash(c) => cmd::hash::run(&cli.global, c),
        Command::Store(c) => cmd::store::run(&cli.global, c),
        Command::PathInfo(a) => cmd::path_info::run(&cli.global, a),
        Command::Derivation(c) => cmd::derivation::run(&cli.global, c),
        Command::Eval(a) => cmd::eval::run(&cli.global, a),
        Command::Instantiate(a) => cmd::instantiate::run(&cli.global, a),
        Command::Env(a) => cmd::query::run(&cli.global, a, false),
        Command::QueryAll(a) => cmd::query::run(&cli.global, a, true),
        Command::Key(c) => cmd::key::run(&cli.global, c),
        Command::Copy(a) => cmd::copy::run(&cli.global, a),
        Command::Serve(a) => cmd::serve::run(&cli.global, a),
        Command::Config(c) => cmd::config::run(&cli.global, c),
        Command::Build(a) => cmd::build::run(&cli.global, a),
        Command::Log(a) => cmd::log::run(&cli.global, a),
        Command::Shell(a) => cmd::shell::run(&cli.global, a),
        Command::PrintEnv(a) => cmd::print_env::run(&cli.global, a),
        Command::PrintDevEnv(a) => cmd::print_env::run_dev(&cli.global, a),
        #[cfg(target_os = "linux")]
        Command::Runtime(a) => cmd::runtime::run(&cli.global, a),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
