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
    install_realise_hook();
    Ok(ExitCode::from(b3_evaluator::nix_cli::run_args(a.args)))
}

pub fn main_multicall() -> ExitCode {
    install_realise_hook();
    ExitCode::from(b3_evaluator::nix_cli::run_args(
        std::env::args().skip(1).collect(),
    ))
}

/// Import from derivation: a missing output the evaluator needs is built by
/// the local builder, after the `.drv` closure is written to the store.
pub fn install_realise_hook() {
    b3_evaluator::storepath::set_default_realise_hook(std::sync::Arc::new(|ev, drv, output| {
        b3_evaluator::nix_cli::write_drvs(ev, &[drv.to_string()])?;
        let mut cfg =
            b3_store::local::LocalStoreConfig::resolve(None).map_err(|e| e.to_string())?;
        cfg.store_dir =
            b3_store::path::StoreDir::new(&ev.opts.store_dir).map_err(|e| e.to_string())?;
        let store = b3_store::local::LocalStore::open(cfg).map_err(|e| e.to_string())?;
        let drv_path = store.store_dir().parse(drv).map_err(|e| e.to_string())?;
        let wanted = std::collections::BTreeSet::from([output.to_string()]);
        let settings = b3_builder::realise::RealiseSettings::default();
        b3_builder::realise::realise_sync(
            &store,
            &settings,
            &drv_path,
            &wanted,
            &mut std::io::stderr(),
        )
        .map(|_| ())
        .map_err(|e| e.to_string())
    }));
}
