//! `b3 build`: realise derivations in the local store, building them (and
//! their input derivations) in the sandbox, like `nix-store --realise`.
//!
//! Arguments are `.drv` store paths (or links to them), optionally with
//! `!out,dev` to pick outputs. Output paths are printed one per line on
//! stdout; builder logs go to stderr. `--out-link` makes a `result`-style
//! link (an indirect GC root) to the first output.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use b3_builder::realise::{realise_sync, RealiseSettings};
use b3_builder::sandbox::SandboxPath;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Derivations to realise: `/nix/store/…drv` or `/nix/store/…drv!out,dev`.
    #[arg(required = true)]
    paths: Vec<String>,
    /// Expose a host path in the sandbox, read-only (`TARGET=SOURCE`,
    /// `PATH`; a trailing `?` makes it optional). Repeatable, e.g.
    /// `--sandbox-path /bin/sh=/bin/busybox`.
    #[arg(long = "sandbox-path", value_name = "SPEC")]
    sandbox_paths: Vec<String>,
    /// `NIX_BUILD_CORES` for the builders (default: all cores).
    #[arg(long)]
    cores: Option<u32>,
    /// Kill a build that runs longer than this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
    /// Kill a build that prints nothing for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    max_silent_time: Option<u64>,
    /// Create a symlink to the first output at this path (an indirect root).
    #[arg(long, short = 'o', value_name = "PATH")]
    out_link: Option<PathBuf>,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    b3_builder::platform::sandbox_support()?;
    let store = super::store::open_store(g)?;
    let mut settings = RealiseSettings::default();
    for spec in &a.sandbox_paths {
        settings.extra_paths.push(SandboxPath::parse(spec)?);
    }
    if let Some(c) = a.cores {
        settings.cores = c;
    }
    settings.timeout = a.timeout.map(Duration::from_secs);
    settings.max_silent = a.max_silent_time.map(Duration::from_secs);

    let mut first = None;
    let stdout = std::io::stdout();
    for arg in &a.paths {
        let (path, wanted) = match arg.split_once('!') {
            Some((p, outs)) => (
                p,
                outs.split(',')
                    .filter(|o| !o.is_empty())
                    .map(str::to_string)
                    .collect::<BTreeSet<_>>(),
            ),
            None => (arg.as_str(), BTreeSet::new()),
        };
        let drv = store.resolve_user_path(path)?;
        if !drv.is_derivation() {
            anyhow::bail!("'{}' is not a derivation", store.print_path(&drv));
        }
        let mut stderr = std::io::stderr();
        let outs = realise_sync(&store, &settings, &drv, &wanted, &mut stderr)?;
        let mut out = stdout.lock();
        for p in outs.values() {
            writeln!(out, "{}", store.print_path(p))?;
            first.get_or_insert_with(|| p.clone());
        }
    }
    if let (Some(link), Some(p)) = (&a.out_link, &first) {
        store.create_result_link(link, p)?;
    }
    Ok(ExitCode::SUCCESS)
}
