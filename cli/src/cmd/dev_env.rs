//! The environment of `b3 shell` (and `print-env`/`print-dev-env`), as
//! `nix-shell` computes it: realise the derivation's inputs, take its
//! environment (outputs included, `passAsFile` and structured attributes
//! written to a temporary build directory), add `IN_NIX_SHELL`,
//! `NIX_BUILD_TOP`/`TMPDIR`/…, `NIX_STORE`, `NIX_BUILD_CORES`, and write the
//! bash start-up file that sources `$stdenv/setup` when the derivation has
//! a stdenv (else puts its inputs' `bin/` directories in front of `PATH`),
//! runs `shellHook` and then the user's command.
//!
//! Building goes through [`realise`], the one place that calls the builder.
// Off Linux only PowerShell start-up uses the environment (no rc script,
// no roots to register): the rest is compiled but unused there.
#![cfg_attr(not(target_os = "linux"), allow(dead_code))]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use b3_builder::realise::{read_derivation, realise_sync, RealiseSettings};
use b3_builder::sandbox::SandboxPath;
use b3_store::local::LocalStore;
use b3_store::path::StorePath;

use crate::installable::Resolved;

/// Variables `--pure` keeps from the caller's environment (Nix 2.8's list).
const PURE_KEEP: &[&str] = &[
    "HOME",
    "XDG_RUNTIME_DIR",
    "USER",
    "LOGNAME",
    "DISPLAY",
    "WAYLAND_DISPLAY",
    "WAYLAND_SOCKET",
    "PATH",
    "TERM",
    "IN_NIX_SHELL",
    "NIX_SHELL_PRESERVE_PROMPT",
    "TZ",
    "PAGER",
    "NIX_BUILD_SHELL",
    "SHLVL",
    "http_proxy",
    "https_proxy",
    "ftp_proxy",
    "all_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "FTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
];

/// How to make the environment.
#[derive(Debug, Clone, Default)]
pub struct EnvOptions {
    /// Start from a nearly empty environment (`--pure`).
    pub pure: bool,
    /// Start from an empty environment: only what the derivation and the
    /// shell define (for `print-dev-env`).
    pub clean: bool,
    /// Extra variables `--pure` keeps (`--keep NAME`).
    pub keep: Vec<String>,
    /// Host paths exposed to the builds of the inputs (`--sandbox-path`).
    pub sandbox_paths: Vec<String>,
    /// `NIX_BUILD_CORES` (0: all cores).
    pub cores: u32,
    /// `--option NAME VALUE` pairs, applied after the nix.conf files.
    pub options: Vec<String>,
}

/// A prepared shell: the process environment and the start-up script.
#[derive(Debug)]
pub struct DevEnv {
    /// The complete environment of the shell process.
    pub vars: BTreeMap<String, String>,
    /// The temporary build directory (`NIX_BUILD_TOP`), removed on drop.
    pub tmp: tempfile::TempDir,
    /// The derivation's stdenv has a `setup` script to source.
    pub has_stdenv: bool,
    /// Structured attributes were written (`.attrs.sh` to source).
    pub structured: bool,
    /// Directories to put in front of `PATH` when there is no stdenv.
    pub path_prefix: Vec<String>,
    /// The store paths the environment uses: the inputs' outputs and
    /// sources, and store paths named directly (their closure is what a
    /// `--vfs` view must show).
    pub roots: BTreeSet<StorePath>,
}

/// Builds the wanted outputs of `drv` (all if empty) and returns them. The
/// single call into the builder, so a change of its API is one edit here.
pub fn realise(
    store: &LocalStore,
    settings: &RealiseSettings,
    drv: &StorePath,
    outputs: &BTreeSet<String>,
) -> anyhow::Result<BTreeMap<String, StorePath>> {
    let mut log = std::io::stderr();
    Ok(realise_sync(store, settings, drv, outputs, &mut log)?)
}

/// The builder settings for `opts`: nix.conf's (substituters, sandbox
/// paths, …) as `b3 build` reads them, then the command's flags.
pub fn settings(store: &LocalStore, opts: &EnvOptions) -> anyhow::Result<RealiseSettings> {
    let config = super::config::load(&opts.options)?;
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    let mut s = super::realise_config::from_config(&config, store.store_dir())?;
    for spec in &opts.sandbox_paths {
        s.extra_paths.push(SandboxPath::parse(spec)?);
    }
    if opts.cores != 0 {
        s.cores = opts.cores;
    }
    Ok(s)
}

/// Realises what `items` need and computes the shell's environment.
pub fn prepare(
    store: &LocalStore,
    items: &[Resolved],
    opts: &EnvOptions,
) -> anyhow::Result<DevEnv> {
    let settings = settings(store, opts)?;
    let mut drvs = items.iter().filter_map(|r| match r {
        Resolved::Derivation { drv, .. } => Some(drv),
        Resolved::Path(_) => None,
    });
    let drv_path = drvs.next().cloned();
    if drvs.next().is_some() {
        bail!("b3 shell needs a single derivation, but several were selected");
    }
    let tmp = tempfile::Builder::new()
        .prefix("b3-shell-")
        .tempdir()
        .context("creating the shell's build directory")?;
    let top = tmp.path().to_string_lossy().into_owned();

    let mut vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| {
            !opts.clean && (!opts.pure || PURE_KEEP.contains(&k.as_str()) || opts.keep.contains(k))
        })
        .collect();
    let mut path_prefix = Vec::new();
    let mut roots = BTreeSet::new();
    for r in items {
        if let Resolved::Path(p) = r {
            roots.insert(p.clone());
            if !store.is_valid_sync(p)? {
                bail!("path '{}' is not valid in the store", store.print_path(p));
            }
            path_prefix.push(format!("{}/bin", store.print_path(p)));
        }
    }

    let mut has_stdenv = false;
    let mut structured = false;
    if let Some(drv_path) = &drv_path {
        let drv = read_derivation(store, drv_path)?;
        for (input, outs) in &drv.input_drvs {
            let built = realise(store, &settings, input, outs)
                .with_context(|| format!("building '{}'", store.print_path(input)))?;
            roots.extend(
                built
                    .into_iter()
                    .filter(|(name, _)| outs.is_empty() || outs.contains(name))
                    .map(|(_, p)| p),
            );
        }
        roots.extend(drv.input_srcs.iter().cloned());
        for src in &drv.input_srcs {
            if !store.is_valid_sync(src)? {
                bail!(
                    "input '{}' of '{}' is not valid in the store",
                    store.print_path(src),
                    store.print_path(drv_path)
                );
            }
        }
        let outputs: BTreeMap<String, String> = drv
            .outputs
            .iter()
            .filter_map(|(n, o)| o.path().map(|p| (n.clone(), store.print_path(p))))
            .collect();
        let env_opts = b3_builder::env::EnvOptions {
            store_dir: store.store_dir().as_str(),
            cores: settings.cores,
            fixed_output: false,
            impure_lookup: &|_| None,
        };
        let benv = b3_builder::env::builder_env(&drv.env, &outputs, &env_opts)?;
        let sandbox_top = b3_builder::sandbox::SANDBOX_BUILD_DIR;
        for (name, contents) in &benv.files {
            std::fs::write(tmp.path().join(name), contents)
                .with_context(|| format!("writing {name} to the shell's build directory"))?;
        }
        // The builder's fixed variables describe the sandbox; a shell keeps
        // the user's PATH, HOME and terminal, and has its own build directory.
        const SANDBOX_ONLY: &[&str] = &[
            "PATH",
            "HOME",
            "TERM",
            "NIX_LOG_FD",
            "PWD",
            "NIX_BUILD_TOP",
            "TMPDIR",
            "TEMPDIR",
            "TMP",
            "TEMP",
        ];
        for (k, v) in benv.vars {
            if SANDBOX_ONLY.contains(&k.as_str()) && !drv.env.contains_key(&k) {
                continue;
            }
            // Files the builder would find in /build (passAsFile, structured
            // attributes) are in the shell's own build directory.
            let v = match v.strip_prefix(sandbox_top) {
                Some(rest) if rest.starts_with('/') && !drv.env.contains_key(&k) => {
                    format!("{top}{rest}")
                }
                _ => v,
            };
            vars.insert(k, v);
        }
        structured = drv.env.contains_key("__json");
        has_stdenv = match drv.env.get("stdenv") {
            Some(s) => Path::new(&physical(store, s)?).join("setup").exists(),
            None => false,
        };
        if !has_stdenv {
            for key in ["nativeBuildInputs", "buildInputs", "propagatedBuildInputs"] {
                for word in drv
                    .env
                    .get(key)
                    .map(|s| s.split_whitespace())
                    .into_iter()
                    .flatten()
                {
                    let bin = format!("{word}/bin");
                    if Path::new(&physical(store, &bin)?).is_dir() && !path_prefix.contains(&bin) {
                        path_prefix.push(bin);
                    }
                }
            }
        }
    }
    vars.insert(
        "IN_NIX_SHELL".into(),
        if opts.pure { "pure" } else { "impure" }.into(),
    );
    for k in ["NIX_BUILD_TOP", "TMPDIR", "TEMPDIR", "TMP", "TEMP"] {
        vars.insert(k.into(), top.clone());
    }
    vars.insert("NIX_STORE".into(), store.store_dir().as_str().to_string());
    vars.insert("NIX_BUILD_CORES".into(), settings.cores.to_string());
    Ok(DevEnv {
        vars,
        tmp,
        has_stdenv,
        structured,
        path_prefix,
        roots,
    })
}

/// Where a logical store path (or a path inside one) is on this disk, so
/// `b3 shell` can look at it before entering its namespace.
pub fn physical(store: &LocalStore, logical: &str) -> anyhow::Result<PathBuf> {
    match store.store_dir().parse_path_within(logical) {
        Ok((p, rest)) => {
            let mut out = store.real_path(&p);
            let rest = rest.trim_start_matches('/');
            if !rest.is_empty() {
                out.push(rest);
            }
            Ok(out)
        }
        Err(_) => Ok(PathBuf::from(logical)),
    }
}

/// Single-quotes `s` for bash and POSIX sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What the start-up file ends with.
#[derive(Debug, Clone)]
pub enum Then {
    /// Stay interactive.
    Interactive,
    /// Run this shell code, then exit with its status.
    Run(String),
}

impl DevEnv {
    /// The bash start-up file (`--rcfile` for an interactive shell, the
    /// script itself for `--run`).
    pub fn rc_script(&self, then: &Then, pure: bool) -> String {
        let mut s = String::new();
        s.push_str("# b3 shell start-up file\n");
        if !pure && matches!(then, Then::Interactive) {
            s.push_str("[ -n \"$PS1\" ] && [ -e ~/.bashrc ] && . ~/.bashrc\n");
        }
        s.push_str("__b3_p=$PATH\n");
        s.push_str("dontAddDisableDepTrack=1\n");
        if self.structured {
            s.push_str("[ -e \"$NIX_BUILD_TOP/.attrs.sh\" ] && . \"$NIX_BUILD_TOP/.attrs.sh\"\n");
        }
        if self.has_stdenv {
            s.push_str(". \"$stdenv/setup\"\n");
            s.push_str("PATH=\"$PATH${__b3_p:+:$__b3_p}\"\n");
        }
        if !self.path_prefix.is_empty() {
            let pre: Vec<String> = self.path_prefix.iter().map(|p| sh_quote(p)).collect();
            s.push_str(&format!(
                "PATH={}\"${{PATH:+:$PATH}}\"\n",
                pre.join("\":\"")
            ));
        }
        s.push_str("export PATH\nunset __b3_p\nset +e\n");
        s.push_str(
            "if [ -n \"$PS1\" ] && [ -z \"$NIX_SHELL_PRESERVE_PROMPT\" ]; then \
             PS1='\\n\\[\\033[1;32m\\][b3-shell:\\w]\\$\\[\\033[0m\\] '; fi\n",
        );
        s.push_str(
            "if command -v runHook >/dev/null 2>&1 && [ \"$(command -v runHook)\" = runHook ]; then \
             runHook shellHook; elif [ -n \"${shellHook:-}\" ]; then eval \"$shellHook\"; fi\n",
        );
        s.push_str("unset NIX_ENFORCE_PURITY\n");
        s.push_str("[ -n \"${BASH_VERSION:-}\" ] && shopt -u nullglob && shopt -s execfail\n");
        if let Then::Run(cmd) = then {
            s.push_str(cmd);
            s.push_str("\nexit\n");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sh_quote_survives_single_quotes() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert_eq!(sh_quote(""), "''");
    }
}
