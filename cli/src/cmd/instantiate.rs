//! `b3 instantiate`, also reachable as `nix-instantiate` through a symlink.

use std::process::ExitCode;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_g: &Global, _a: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("not available yet")
}

pub fn main_multicall() -> ExitCode {
    eprintln!("error: not available yet");
    ExitCode::FAILURE
}
