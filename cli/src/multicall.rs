//! Multicall: the `b3` binary answers to `nix-build`, `nix-shell`,
//! `nix-store` and `nix-instantiate` when started through a symlink of that
//! name, for the flags b3 supports, so existing scripts run on b3.
//!
//! - `nix-build` is `b3 build` that always makes `result` links (GC roots).
//! - `nix-shell` is `b3 shell`.
//! - `nix-store` operations are translated into `b3 build`/`b3 store`/
//!   `b3 nar` command lines ([`nix_store_args`]); `--query --outputs` is
//!   done here.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};

use crate::cmd::{self, Global};

/// Which personality argv[0] asks for.
pub fn personality(argv0: &str) -> Option<&'static str> {
    match argv0 {
        "nix-build" => Some("nix-build"),
        "nix-shell" => Some("nix-shell"),
        "nix-store" => Some("nix-store"),
        "nix-instantiate" => Some("nix-instantiate"),
        _ => None,
    }
}

fn report(r: anyhow::Result<ExitCode>) -> ExitCode {
    match r {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `nix-build ARGS` is `b3 build ARGS`, which reads nix.conf, shows
/// progress and reports failures the same way; unlike `b3 build` of a
/// `.drv` path, nix-build always makes `result` links unless told not to.
pub fn nix_build(args: Vec<String>, run_b3: fn(Vec<String>) -> ExitCode) -> ExitCode {
    run_b3(nix_build_args(args))
}

/// The `b3` command line `nix-build ARGS` becomes.
pub fn nix_build_args(args: Vec<String>) -> Vec<String> {
    let links_chosen = args.iter().any(|a| {
        matches!(a.as_str(), "-o" | "--out-link" | "--no-out-link") || a.starts_with("--out-link=")
    });
    let mut b3 = vec!["build".to_string()];
    b3.extend(args);
    if !links_chosen {
        b3.extend(["-o".to_string(), "result".to_string()]);
    }
    b3
}

/// nix-build's link names: `result`, `result-dev`, then `result-2`, … for
/// the following derivations.
pub fn link_name(base: &str, index: usize, output: &str) -> String {
    let mut s = base.to_string();
    if index > 0 {
        s.push_str(&format!("-{}", index + 1));
    }
    if output != "out" {
        s.push_str(&format!("-{output}"));
    }
    s
}

pub fn nix_shell(args: Vec<String>) -> ExitCode {
    cmd::shell::main_multicall(args)
}

/// What a `nix-store` command line becomes.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// Run `b3` with these arguments.
    B3(Vec<String>),
    /// `--query --outputs PATHS`.
    Outputs(Vec<String>),
}

/// Translates `nix-store` arguments (without argv0).
pub fn nix_store_args(args: &[String]) -> anyhow::Result<StoreOp> {
    let mut op: Option<String> = None;
    let mut flags: Vec<String> = Vec::new();
    let mut rest: Vec<String> = Vec::new();
    let mut global: Vec<String> = Vec::new();
    let mut add_root = None;
    // `-qR` is `-q -R`.
    let expanded: Vec<String> = args
        .iter()
        .flat_map(|a| {
            let b = a.as_bytes();
            if b.len() > 2
                && b[0] == b'-'
                && b[1] != b'-'
                && a.chars().skip(1).all(|c| c.is_ascii_alphabetic())
            {
                a.chars().skip(1).map(|c| format!("-{c}")).collect()
            } else {
                vec![a.clone()]
            }
        })
        .collect();
    let mut it = expanded.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-r" | "--realise" | "--realize" | "-q" | "--query" | "--add" | "--add-fixed"
            | "--dump" | "--restore" | "--verify" | "--gc" | "--export" | "--import"
            | "--delete" | "--verify-path" | "--repair-path" => {
                if op.is_some() {
                    bail!("only one operation may be given");
                }
                op = Some(a.clone());
            }
            "--store" => {
                let v = it.next().context("'--store' needs a value")?;
                global.extend(["--store".into(), v.clone()]);
            }
            "--add-root" => {
                add_root = Some(it.next().context("'--add-root' needs a value")?.clone())
            }
            "--indirect" => {}
            "-v" | "--verbose" => global.push("-v".into()),
            s if s.starts_with('-') && s.len() > 1 => flags.push(s.to_string()),
            s => rest.push(s.to_string()),
        }
    }
    let op = op.context("no operation given (e.g. --realise, --query, --add)")?;
    let mut b3: Vec<String> = global;
    let has = |f: &[&str]| flags.iter().any(|x| f.contains(&x.as_str()));
    match op.as_str() {
        // `b3 build` of the paths: nix.conf's settings, progress, Nix's
        // failure report; a root only when asked for.
        "-r" | "--realise" | "--realize" => {
            b3.push("build".into());
            match add_root {
                Some(root) => b3.extend(["-o".into(), root]),
                None => b3.push("--no-out-link".into()),
            }
        }
        "-q" | "--query" => {
            if has(&["--outputs"]) {
                return Ok(StoreOp::Outputs(rest));
            }
            b3.extend(["store".into(), "query".into()]);
            let what = if has(&["--references"]) {
                "--references"
            } else if has(&["--referrers"]) {
                "--referrers"
            } else if has(&["--requisites", "-R"]) {
                "--requisites"
            } else if has(&["--deriver", "-d"]) {
                "--deriver"
            } else {
                bail!("unsupported or missing query (b3 knows --references, --referrers, --requisites/-R, --deriver/-d, --outputs)");
            };
            b3.push(what.into());
        }
        "--add" => b3.extend(["store".into(), "add".into()]),
        "--add-fixed" => {
            b3.extend(["store".into(), "add-fixed".into()]);
            if has(&["--recursive"]) {
                b3.push("--recursive".into());
            }
        }
        // A store path is read from the store's physical directory; any
        // other path is archived as it is.
        "--dump" => {
            let store_dir = std::env::var("NIX_STORE_DIR").unwrap_or_else(|_| "/nix/store".into());
            let in_store = rest
                .first()
                .is_some_and(|p| p.starts_with(&format!("{store_dir}/")));
            b3.extend([if in_store { "store" } else { "nar" }.into(), "dump".into()]);
        }
        "--restore" => b3.extend(["nar".into(), "restore".into()]),
        "--export" => b3.extend([
            "store".into(),
            "export".into(),
            "--format".into(),
            "nix".into(),
        ]),
        "--import" => b3.extend([
            "store".into(),
            "import".into(),
            "--format".into(),
            "nix".into(),
        ]),
        "--verify" => {
            b3.extend(["store".into(), "verify".into()]);
            if has(&["--check-contents"]) {
                b3.push("--check-contents".into());
            }
            if has(&["--repair"]) {
                b3.push("--repair".into());
            }
        }
        "--gc" => {
            b3.extend(["store".into(), "gc".into()]);
            if has(&["--print-dead"]) {
                b3.push("--dry-run".into());
            }
            if let Some(i) = args.iter().position(|a| a == "--max-freed") {
                if let Some(v) = args.get(i + 1) {
                    b3.extend(["--max-freed".into(), v.clone()]);
                    rest.retain(|r| r != v);
                }
            }
        }
        other => bail!("nix-store {other} is not supported by b3"),
    }
    b3.extend(rest);
    Ok(StoreOp::B3(b3))
}

pub fn nix_store(args: Vec<String>, run_b3: fn(Vec<String>) -> ExitCode) -> ExitCode {
    let op = match nix_store_args(&args) {
        Ok(op) => op,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    match op {
        StoreOp::B3(b3) => run_b3(b3),
        StoreOp::Outputs(paths) => report(query_outputs(&args, paths)),
    }
}

fn global_from(args: &[String]) -> Global {
    let store = args
        .iter()
        .position(|a| a == "--store")
        .and_then(|i| args.get(i + 1))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("B3_STORE").map(PathBuf::from));
    Global {
        store,
        log_format: None,
        verbose: 0,
    }
}

fn query_outputs(args: &[String], paths: Vec<String>) -> anyhow::Result<ExitCode> {
    let g = global_from(args);
    let store = cmd::store::open_store(&g)?;
    let mut so = std::io::stdout().lock();
    for p in &paths {
        let sp = store.resolve_user_path(p)?;
        if !sp.is_derivation() {
            writeln!(so, "{}", store.print_path(&sp))?;
            continue;
        }
        let drv = b3_builder::realise::read_derivation(&store, &sp)?;
        for o in drv.outputs.values() {
            if let Some(op) = o.path() {
                writeln!(so, "{}", store.print_path(op))?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn nix_store_queries_map_to_b3_store_query() {
        assert_eq!(
            nix_store_args(&v(&["-q", "--references", "/nix/store/x"])).unwrap(),
            StoreOp::B3(v(&["store", "query", "--references", "/nix/store/x"]))
        );
        assert_eq!(
            nix_store_args(&v(&["-qR", "/nix/store/x"])).unwrap(),
            StoreOp::B3(v(&["store", "query", "--requisites", "/nix/store/x"]))
        );
        assert!(nix_store_args(&v(&["/nix/store/x"])).is_err());
        assert_eq!(
            nix_store_args(&v(&["--query", "-R", "/nix/store/x"])).unwrap(),
            StoreOp::B3(v(&["store", "query", "--requisites", "/nix/store/x"]))
        );
        assert_eq!(
            nix_store_args(&v(&["--gc", "--print-dead"])).unwrap(),
            StoreOp::B3(v(&["store", "gc", "--dry-run"]))
        );
        assert_eq!(
            nix_store_args(&v(&["--add-fixed", "--recursive", "sha256", "f"])).unwrap(),
            StoreOp::B3(v(&["store", "add-fixed", "--recursive", "sha256", "f"]))
        );
    }

    #[test]
    fn nix_build_link_names_follow_nix() {
        assert_eq!(link_name("result", 0, "out"), "result");
        assert_eq!(link_name("result", 0, "dev"), "result-dev");
        assert_eq!(link_name("r", 1, "out"), "r-2");
    }
}
