//! `b3 hash`.

use std::process::ExitCode;

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {}

pub fn run(_g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {}
}
