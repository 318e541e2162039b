//! `b3 log PATH`: print the stored build log of a derivation, like `nix log`.
//!
//! PATH is a `.drv` path, or an output path (or a link such as `result` to
//! one), whose deriver is looked up in the store. Logs are kept compressed
//! per derivation by the builder (`b3_builder::buildlog`), for failed builds
//! too.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use b3_builder::buildlog::read_log;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A derivation, or an output path (the log of its deriver is shown).
    path: String,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open_store(g)?;
    let path = store.resolve_user_path(&a.path)?;
    let shown = store.print_path(&path);
    let drv = if path.is_derivation() {
        path
    } else {
        store
            .query_path_info_sync(&path)?
            .and_then(|info| info.deriver)
            .with_context(|| format!("build log of '{shown}' is not available"))?
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let found = read_log(store.root(), &drv.base_name(), &mut out)
        .with_context(|| format!("reading the build log of '{}'", store.print_path(&drv)))?;
    out.flush()?;
    if !found {
        anyhow::bail!("build log of '{shown}' is not available");
    }
    Ok(ExitCode::SUCCESS)
}
