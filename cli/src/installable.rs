//! Installables: what a user names on the command line of `b3 build`,
//! `b3 shell`, `b3 print-env` and the `nix-build`/`nix-shell` names, resolved
//! to derivations in the local store and the outputs wanted from them.
//!
//! # API
//!
//! - [`InstallableArgs`] is a `clap::Args` struct to `#[command(flatten)]`
//!   into a subcommand. It owns the positional arguments (`ITEMS`), so the
//!   subcommand must not declare positionals of its own. It understands
//!   `FILE` (default `./default.nix`, or `./shell.nix` first for shells),
//!   `-E/--expr` (the items are expressions), `-A/--attr PATH` (repeatable),
//!   `--arg NAME EXPR`, `--argstr NAME VALUE`, `-I/--include`, `-p/--packages
//!   PKG...` (like `nix-shell -p`), a `.drv` store path optionally followed by
//!   `!out,dev`, and a store path that is not a derivation (already built).
//! - [`resolve`] evaluates what needs evaluating, writes the resulting `.drv`
//!   files (and the sources they use) into the store as `b3 instantiate`
//!   does, and returns one [`Resolved`] per selected value, in order.
//!   Evaluation runs on the evaluator's big-stack thread; the store must be
//!   the one the process uses (`--store`/`$B3_STORE`), because the `.drv`
//!   files are written through `$B3_STORE`, which `resolve` sets to the
//!   store's root.
//!
//! Like `nix-build`, a derivation selected by evaluation wants only its
//! `outputName` (`out` unless an output attribute such as `.dev` was
//! selected); a `.drv` path without `!` wants every output (empty set).

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{bail, Context};
use b3_evaluator::driver::{self, AutoArg};
use b3_evaluator::nix_cli::{self, Cmdline};
use b3_evaluator::pos::Pos;
use b3_evaluator::{Ev, EvalError, Value};
use b3_store::local::LocalStore;
use b3_store::path::StorePath;

/// Command-line arguments naming installables (flatten into a subcommand).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct InstallableArgs {
    /// A Nix file (default `./default.nix`), a `.drv` store path (with
    /// optional `!out,dev`), a store path, or with `-E` expressions.
    #[arg(value_name = "ITEMS")]
    pub items: Vec<String>,
    /// The items are Nix expressions, not files.
    #[arg(short = 'E', long = "expr")]
    pub from_expr: bool,
    /// Select an attribute (dot-separated path; repeatable).
    #[arg(short = 'A', long = "attr", value_name = "ATTRPATH")]
    pub attrs: Vec<String>,
    /// Pass NAME=EXPR to the top-level function.
    #[arg(long = "arg", num_args = 2, value_names = ["NAME", "EXPR"], action = clap::ArgAction::Append)]
    pub arg: Vec<String>,
    /// Pass NAME="VALUE" (a string) to the top-level function.
    #[arg(long = "argstr", num_args = 2, value_names = ["NAME", "VALUE"], action = clap::ArgAction::Append)]
    pub argstr: Vec<String>,
    /// Add to the search path (`prefix=path` or `path`) before `$NIX_PATH`.
    #[arg(short = 'I', long = "include", value_name = "PATH")]
    pub include: Vec<String>,
    /// Packages from `<nixpkgs>` (expressions in its scope), as
    /// `nix-shell -p`: an environment with them as `buildInputs`.
    #[arg(short = 'p', long = "packages", num_args = 1.., value_name = "PKG")]
    pub packages: Vec<String>,
    /// Show the evaluation trace on errors.
    #[arg(long)]
    pub show_trace: bool,
}

/// One thing to build or use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A derivation in the store and the outputs wanted (empty: all).
    Derivation {
        drv: StorePath,
        outputs: BTreeSet<String>,
    },
    /// A store path that is not a derivation (nothing to build).
    Path(StorePath),
}

/// Which file stands for "no items": `default.nix` for builds, `shell.nix`
/// (if present) then `default.nix` for shells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultFile {
    Build,
    Shell,
}

/// The expression `nix-shell -p` evaluates for `packages`: a derivation
/// named `shell` whose `buildInputs` are the packages, made with
/// `runCommandCC` (or `runCommand`) from `<nixpkgs>`.
pub fn packages_expr(packages: &[String]) -> String {
    let inputs: Vec<String> = packages.iter().map(|p| format!("({p})")).collect();
    format!(
        "{{ ... }}@args: with import <nixpkgs> args; \
         (pkgs.runCommandCC or pkgs.runCommand) \"shell\" {{ buildInputs = [ {} ]; }} \"\"",
        inputs.join(" ")
    )
}

/// Resolves `args` against `store`: evaluates files/expressions (writing
/// their derivations into the store) and parses store paths.
pub fn resolve(
    store: &LocalStore,
    args: &InstallableArgs,
    default: DefaultFile,
) -> anyhow::Result<Vec<Resolved>> {
    // Each item is either ready (a store path) or the index of an input to
    // evaluate; evaluation happens once, for all inputs, then the user's
    // order is restored.
    enum Slot {
        Ready(Resolved),
        Eval(usize),
    }
    let mut slots = Vec::new();
    let mut to_eval: Vec<String> = Vec::new();
    let mut from_expr = args.from_expr;
    if !args.packages.is_empty() {
        if !args.items.is_empty() {
            bail!("'-p' cannot be combined with files, expressions or store paths");
        }
        to_eval.push(packages_expr(&args.packages));
        from_expr = true;
    } else if args.from_expr {
        if args.items.is_empty() {
            bail!("'-E' needs an expression");
        }
        to_eval.extend(args.items.iter().cloned());
    } else if args.items.is_empty() {
        let shell = Path::new("shell.nix");
        to_eval.push(if default == DefaultFile::Shell && shell.exists() {
            "./shell.nix".into()
        } else {
            "./default.nix".into()
        });
    } else {
        for item in &args.items {
            match store_item(store, item)? {
                Some(r) => slots.push(Slot::Ready(r)),
                None => {
                    slots.push(Slot::Eval(to_eval.len()));
                    to_eval.push(item.clone());
                }
            }
        }
    }
    if slots.is_empty() {
        slots.extend((0..to_eval.len()).map(Slot::Eval));
    }
    let mut evaluated = if to_eval.is_empty() {
        Vec::new()
    } else {
        evaluate(store, args, from_expr, to_eval)?
    };
    let mut results = Vec::new();
    for slot in slots {
        match slot {
            Slot::Ready(r) => results.push(r),
            Slot::Eval(i) => {
                if let Some(v) = evaluated.get_mut(i) {
                    results.append(v);
                }
            }
        }
    }
    Ok(results)
}

/// A store path given directly: `DRV[!outs]` or a built path. `None` means
/// "evaluate it as a file".
fn store_item(store: &LocalStore, item: &str) -> anyhow::Result<Option<Resolved>> {
    let (path, outs) = match item.split_once('!') {
        Some((p, o)) => (p, Some(o)),
        None => (item, None),
    };
    let in_store = match store.store_dir().parse_path_within(path) {
        Ok((p, rest)) if rest.trim_matches('/').is_empty() => Some(p),
        Ok(_) => None,
        Err(_) if outs.is_some() || path.ends_with(".drv") || is_link(path) => {
            store.resolve_user_path(path).ok()
        }
        Err(_) => None,
    };
    let Some(sp) = in_store else {
        if outs.is_some() {
            bail!("'{path}' is not a derivation in the store");
        }
        return Ok(None);
    };
    if sp.is_derivation() {
        if !store.is_valid_sync(&sp)? {
            bail!(
                "derivation '{}' is not valid in the store",
                store.print_path(&sp)
            );
        }
        let outputs = outs
            .map(|o| {
                o.split(',')
                    .filter(|s| !s.is_empty() && *s != "*")
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        return Ok(Some(Resolved::Derivation { drv: sp, outputs }));
    }
    if outs.is_some() {
        bail!("'{}' is not a derivation", store.print_path(&sp));
    }
    // A store directory holding a Nix expression is evaluated, as Nix does.
    if store.real_path(&sp).join("default.nix").exists() {
        return Ok(None);
    }
    Ok(Some(Resolved::Path(sp)))
}

fn is_link(p: &str) -> bool {
    std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink())
}

/// Evaluates each input (file or expression), selects the `-A` paths and
/// writes the derivations; one list of results per input.
fn evaluate(
    store: &LocalStore,
    args: &InstallableArgs,
    from_expr: bool,
    inputs: Vec<String>,
) -> anyhow::Result<Vec<Vec<Resolved>>> {
    // The evaluator writes `.drv`s through `$B3_STORE`: point it at our store.
    std::env::set_var("B3_STORE", store.root());
    let mut c = Cmdline {
        attr_paths: args.attrs.clone(),
        include: args.include.clone(),
        show_trace: args.show_trace,
        from_expr,
        ..Cmdline::default()
    };
    for pair in args.arg.chunks(2) {
        if let [n, e] = pair {
            c.auto_args.push(AutoArg::Expr(n.clone(), e.clone()));
        }
    }
    for pair in args.argstr.chunks(2) {
        if let [n, v] = pair {
            c.auto_args.push(AutoArg::Str(n.clone(), v.clone()));
        }
    }
    let show_trace = c.show_trace;
    let res = driver::with_big_stack(move || -> Result<Vec<Vec<(String, String)>>, String> {
        let ev = driver::new_evaluator(nix_cli::options_for(&c));
        let mut all = Vec::new();
        for input in &inputs {
            let r = eval_one(&ev, &c, input).map_err(|e| e.render(show_trace))?;
            let roots: Vec<String> = r.iter().map(|(d, _)| d.clone()).collect();
            nix_cli::write_drvs(&ev, &roots)?;
            all.push(r);
        }
        Ok(all)
    })
    .map_err(|e| anyhow::anyhow!("{}", e.trim_end().trim_start_matches("error: ")))?;
    let mut out = Vec::new();
    for per_input in res {
        let mut v = Vec::new();
        for (drv, output) in per_input {
            let sp = store
                .store_dir()
                .parse(&drv)
                .with_context(|| format!("the evaluator returned a bad drv path '{drv}'"))?;
            v.push(Resolved::Derivation {
                drv: sp,
                outputs: [output].into_iter().collect(),
            });
        }
        out.push(v);
    }
    Ok(out)
}

fn eval_one(ev: &Ev, c: &Cmdline, input: &str) -> Result<Vec<(String, String)>, EvalError> {
    let root = if c.from_expr {
        ev.eval_expr_str(input, "«string»")?
    } else {
        ev.eval_file(input)?
    };
    let auto = ev.auto_args(&c.auto_args)?;
    let mut out = Vec::new();
    for p in &c.selected_attr_paths() {
        let v = ev.select_path(&root, p, &auto)?;
        collect(ev, &v, &mut out, true)?;
    }
    Ok(out)
}

/// nix-build's `getDerivations`: a derivation, or the derivations in a
/// top-level set/list (recursing into sets with `recurseForDerivations`).
fn collect(
    ev: &Ev,
    v: &Value,
    out: &mut Vec<(String, String)>,
    top: bool,
) -> Result<(), EvalError> {
    let v = ev.force(v)?;
    match &v {
        Value::Attrs(a) => {
            if ev.is_derivation(a)? {
                let drv = match a.get("drvPath") {
                    Some(d) => ev.force_string(d, Pos::none())?,
                    None => return Ok(()),
                };
                let output = match a.get("outputName") {
                    Some(o) => ev.force_string(o, Pos::none())?,
                    None => "out".to_string(),
                };
                out.push((drv, output));
                return Ok(());
            }
            let recurse = top
                || match a.get("recurseForDerivations") {
                    Some(r) => matches!(ev.force(r)?, Value::Bool(true)),
                    None => false,
                };
            if recurse {
                for (_, x, _) in a.iter() {
                    collect(ev, x, out, false)?;
                }
            }
        }
        Value::List(l) if top => {
            for x in l.iter() {
                collect(ev, x, out, false)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packages_expr_wraps_each_package_in_parentheses() {
        let e = packages_expr(&["hello".into(), "python3.withPackages (p: [])".into()]);
        assert!(e.contains("buildInputs = [ (hello) (python3.withPackages (p: [])) ]"));
        assert!(e.contains("import <nixpkgs> args"));
    }
}
