//! `b3 instantiate`, also reachable as `nix-instantiate` through a symlink.
//! The command line itself is nix-instantiate's (see `b3_evaluator::nix_cli`).

use std::process::ExitCode;

use super::Global;

#[derive(clap::Args, Debug)]
#[command(disable_help_flag = true)]
pub struct Args {
    /// nix-instantiate arguments (see `nix-instantiate --help`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    // The evaluator opens the local store itself (`$B3_STORE` or the default).
    if let Some(s) = &g.store {
        std::env::set_var("B3_STORE", s);
    }
    Ok(ExitCode::from(b3_evaluator::nix_cli::run_args(a.args)))
}

pub fn main_multicall() -> ExitCode {
    ExitCode::from(b3_evaluator::nix_cli::run_args(
        std::env::args().skip(1).collect(),
    ))
}
