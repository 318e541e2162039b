//! The builder settings that come from Nix's configuration (`nix.conf`
//! files, `NIX_CONFIG`, `--option`), shared by every command that realises
//! derivations: `b3 build`, `b3 shell`, `print-env`/`print-dev-env` and the
//! `nix-build`/`nix-shell`/`nix-store --realise` personalities. Each command
//! applies its own flags on top; a setting the user left at its default
//! keeps b3's default (e.g. `max-jobs` = number of cores).

use std::sync::Arc;
use std::time::Duration;

use b3_builder::realise::RealiseSettings;
use b3_builder::sandbox::SandboxPath;
use b3_store::binary_cache::Substituters;
use b3_store::path::StoreDir;
use b3_store::settings::{Config, Origin};
use b3_store::substitute::Substitute;

/// The settings `config` asks for, on top of the builder's defaults.
pub fn from_config(config: &Config, store_dir: &StoreDir) -> anyhow::Result<RealiseSettings> {
    let conf = &config.settings;
    let mut s = RealiseSettings::default();
    for p in &conf.sandbox_paths.0 {
        s.extra_paths.push(SandboxPath::parse(&p.spec)?);
    }
    if conf.cores > 0 {
        s.cores = conf.cores as u32;
    }
    let set = |name: &str| {
        config
            .provenance(name)
            .is_some_and(|p| p.set != Origin::Default)
    };
    if set("max-jobs") {
        s.max_jobs = conf.max_jobs.0 as usize;
    }
    s.max_substitution_jobs = conf.max_substitution_jobs.max(1) as usize;
    s.keep_going = conf.keep_going;
    s.keep_failed = conf.keep_failed;
    let secs = |v: u64| (v > 0).then(|| Duration::from_secs(v));
    s.timeout = secs(conf.timeout);
    s.max_silent = secs(conf.max_silent_time);
    s.log_lines = conf.log_lines as usize;
    // Binary caches (`substituters`, `trusted-public-keys`, `require-sigs`,
    // `substitute`): asked for missing outputs before building.
    if let Some(subst) = Substituters::from_settings(conf, store_dir)? {
        s.substituter = Some(Arc::new(subst) as Arc<dyn Substitute>);
    }
    Ok(s)
}
