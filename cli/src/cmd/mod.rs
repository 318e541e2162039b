//! One module per subcommand. Each exposes its clap arguments and a `run`
//! returning the process exit code; errors bubble up to `main` for rendering.

pub mod build;
pub mod config;
pub mod copy;
pub mod derivation;
pub mod dev_env;
pub mod eval;
pub mod hash;
pub mod instantiate;
pub mod key;
pub mod log;
pub mod nar;
pub mod path_info;
pub mod print_env;
pub mod query;
pub mod realise_config;
#[cfg(target_os = "linux")]
pub mod runtime;
pub mod serve;
pub mod shell;
pub mod store;

use std::path::PathBuf;

/// Options every subcommand understands.
#[derive(clap::Args, Debug, Clone)]
pub struct Global {
    /// Physical root of the local store (default: the user's data directory).
    #[arg(long, global = true, env = "B3_STORE")]
    pub store: Option<PathBuf>,
    /// Log format: raw, internal-json (Nix's `@nix` records, for nix-output-monitor), bar, bar-with-logs.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<crate::logformat::LogFormat>,
    /// More log output (repeatable).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

pub fn init_logging(g: &Global) {
    let level = match g.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("B3_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
