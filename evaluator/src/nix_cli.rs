//! A `nix-instantiate`-compatible command line (parsed by hand: several
//! options take two values and unknown `--option`s must be tolerated), used
//! by `b3 instantiate` and the `nix-instantiate` multicall name.

use std::io::{Read, Write};

use crate::driver::{self, AutoArg, OutputMode};
use crate::{Lint, Options};

#[derive(Debug, Default, Clone)]
pub struct Cmdline {
    pub parse: bool,
    pub eval: bool,
    pub strict: bool,
    pub mode: Option<OutputMode>,
    pub show_trace: bool,
    pub attr_paths: Vec<String>,
    pub auto_args: Vec<AutoArg>,
    pub include: Vec<String>,
    pub exprs: Vec<String>,
    pub from_expr: bool,
    pub max_call_depth: Option<usize>,
    pub experimental: Vec<String>,
    pub lint_abs: Lint,
    pub lint_short: Lint,
    pub lint_url: Lint,
    pub impure: bool,
    /// `--pure-eval`; Nix 2.8's nix-instantiate is impure by default.
    pub pure_eval: bool,
    pub read_write: bool,
    /// `--readonly-mode` / `--dry-run`: compute drv paths without writing them.
    pub no_write: bool,
}

impl Cmdline {
    /// The `-A` paths to select, or the root itself (`""`) when none is given.
    pub fn selected_attr_paths(&self) -> Vec<String> {
        if self.attr_paths.is_empty() {
            vec![String::new()]
        } else {
            self.attr_paths.clone()
        }
    }
}

fn lint(v: &str) -> Result<Lint, String> {
    match v {
        "warn" => Ok(Lint::Warn),
        "fatal" => Ok(Lint::Fatal),
        "ignore" | "off" | "allow" => Ok(Lint::Off),
        _ => Err(format!("invalid lint level '{v}'")),
    }
}

pub fn parse_cmdline(args: &[String]) -> Result<Cmdline, String> {
    let mut c = Cmdline::default();
    let mut i = 0;
    let need = |i: usize, n: usize, name: &str| -> Result<(), String> {
        if i + n >= args.len() {
            Err(format!("flag '{name}' requires {n} argument(s)"))
        } else {
            Ok(())
        }
    };
    while i < args.len() {
        let a = args[i].as_str();
        match a {
            "--parse" => c.parse = true,
            "--eval" | "--eval-only" => c.eval = true,
            "--strict" => c.strict = true,
            "--json" => c.mode = Some(OutputMode::Json),
            "--xml" => c.mode = Some(OutputMode::Xml),
            "--raw" => c.mode = Some(OutputMode::Raw),
            "--no-location" | "--add-root" | "--indirect" | "--find-file" => {}
            "--show-trace" => c.show_trace = true,
            "--no-show-trace" => c.show_trace = false,
            "--impure" => {
                c.impure = true;
                c.pure_eval = false;
            }
            "--pure-eval" => {
                c.impure = false;
                c.pure_eval = true;
            }
            "--read-write-mode" => c.read_write = true,
            "--readonly-mode" => {
                c.read_write = false;
                c.no_write = true;
            }
            "--dry-run" => c.no_write = true,
            "-E" | "--expr" => c.from_expr = true,
            "-A" | "--attr" => {
                need(i, 1, a)?;
                c.attr_paths.push(args[i + 1].clone());
                i += 1;
            }
            "--arg" => {
                need(i, 2, a)?;
                c.auto_args
                    .push(AutoArg::Expr(args[i + 1].clone(), args[i + 2].clone()));
                i += 2;
            }
            "--argstr" => {
                need(i, 2, a)?;
                c.auto_args
                    .push(AutoArg::Str(args[i + 1].clone(), args[i + 2].clone()));
                i += 2;
            }
            "-I" | "--include" => {
                need(i, 1, a)?;
                c.include.push(args[i + 1].clone());
                i += 1;
            }
            "--max-call-depth" => {
                need(i, 1, a)?;
                c.max_call_depth = Some(
                    args[i + 1]
                        .parse()
                        .map_err(|_| format!("invalid number '{}'", args[i + 1]))?,
                );
                i += 1;
            }
            "--extra-experimental-features" | "--experimental-features" => {
                need(i, 1, a)?;
                c.experimental
                    .extend(args[i + 1].split_whitespace().map(|s| s.to_string()));
                i += 1;
            }
            "--lint-absolute-path-literals" => {
                need(i, 1, a)?;
                c.lint_abs = lint(&args[i + 1])?;
                i += 1;
            }
            "--lint-short-path-literals" => {
                need(i, 1, a)?;
                c.lint_short = lint(&args[i + 1])?;
                i += 1;
            }
            "--lint-url-literals" => {
                need(i, 1, a)?;
                c.lint_url = lint(&args[i + 1])?;
                i += 1;
            }
            "--option" => {
                need(i, 2, a)?;
                i += 2;
            }
            "-" => c.exprs.push("-".into()),
            s if s.starts_with("--") => {
                // Unknown boolean settings (`--foo`/`--no-foo`) are accepted like Nix settings.
            }
            s => c.exprs.push(s.to_string()),
        }
        i += 1;
    }
    Ok(c)
}

/// Runs an already-parsed command line on the big-stack thread.
pub fn run_cmdline(c: Cmdline) -> u8 {
    driver::with_big_stack(move || execute_and_flush(c))
}

/// Runs the command, then writes the parse cache's new entries.
fn execute_and_flush(c: Cmdline) -> u8 {
    let code = execute(c);
    crate::parse_cache::flush();
    code
}

/// Runs nix-instantiate with `args` (without argv0); returns the exit code.
pub fn run_args(args: Vec<String>) -> u8 {
    let c = match parse_cmdline(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    };
    driver::with_big_stack(move || execute_and_flush(c))
}

pub fn options_for(c: &Cmdline) -> Options {
    let mut o = Options::default();
    let mut sp = c.include.clone();
    sp.extend(driver::nix_path_from_env());
    o.nix_path = driver::parse_search_path(&sp);
    if let Some(d) = c.max_call_depth {
        o.max_call_depth = d;
    }
    o.show_trace = c.show_trace;
    o.experimental = c.experimental.clone();
    o.lint_abs_path = c.lint_abs;
    o.lint_short_path = c.lint_short;
    o.lint_url = c.lint_url;
    o.pure = c.pure_eval;
    if let Ok(d) = std::env::var("NIX_STORE_DIR") {
        o.store_dir = d;
    }
    o.abort_on_warn = std::env::var("NIX_ABORT_ON_WARN").is_ok_and(|v| v == "1" || v == "true");
    // Fetched and filtered paths go into the b3 store as they are made,
    // except in read-only mode; missing derivation outputs are built.
    o.store.write = !c.no_write && std::env::var("NIX_REMOTE").as_deref() != Ok("dummy://");
    o.store.realise = crate::storepath::default_realise_hook();
    o
}

fn execute(c: Cmdline) -> u8 {
    let ev = driver::new_evaluator(options_for(&c));
    let mut stdout = std::io::stdout().lock();
    let mut inputs = c.exprs.clone();
    if inputs.is_empty() {
        inputs.push(if c.from_expr {
            String::new()
        } else {
            "./default.nix".into()
        });
    }
    for input in &inputs {
        let res: Result<Vec<String>, crate::EvalError> = (|| {
            if c.parse {
                let (text, origin) = if input == "-" {
                    let mut s = String::new();
                    let _ = std::io::stdin().read_to_string(&mut s);
                    (s, "«stdin»".to_string())
                } else if c.from_expr {
                    (input.clone(), "«string»".to_string())
                } else {
                    let p = input.clone();
                    (std::fs::read_to_string(&p).unwrap_or_default(), p)
                };
                let s = crate::parse_print::parse_and_print(&ev, &text, &origin, &driver::cwd())?;
                return Ok(vec![s]);
            }
            let root = if input == "-" {
                let mut s = String::new();
                let _ = std::io::stdin().read_to_string(&mut s);
                ev.eval_expr_str(&s, "«stdin»")?
            } else if c.from_expr {
                ev.eval_expr_str(input, "«string»")?
            } else {
                ev.eval_file(input)?
            };
            let args = ev.auto_args(&c.auto_args)?;
            let mut out = Vec::new();
            for p in &c.selected_attr_paths() {
                let v = ev.select_path(&root, p, &args)?;
                if c.eval {
                    out.push(ev.render(&v, c.mode.unwrap_or(OutputMode::Nix), c.strict)?);
                } else {
                    let mut drvs = Vec::new();
                    ev.collect_drv_paths(&v, &mut drvs, true)?;
                    if !c.no_write && std::env::var("NIX_REMOTE").as_deref() != Ok("dummy://") {
                        write_drvs(&ev, &drvs)
                            .map_err(|e| crate::EvalError::other(e, crate::pos::Pos::none()))?;
                    }
                    out.extend(drvs);
                }
            }
            Ok(out)
        })();
        match res {
            Ok(lines) => {
                for l in lines {
                    if c.mode == Some(OutputMode::Raw) && c.eval {
                        let _ = write!(stdout, "{l}");
                    } else {
                        let _ = writeln!(stdout, "{l}");
                    }
                }
            }
            Err(e) => {
                let _ = stdout.flush();
                eprint!("{}", e.render(c.show_trace));
                return 1;
            }
        }
    }
    0
}

/// Writes the `.drv` files of the closure of `roots` (inputs first, so each
/// one's references are valid when it is registered) into the local b3
/// store (`$B3_STORE` or the default data directory).
pub fn write_drvs(ev: &crate::eval::Ev, roots: &[String]) -> Result<(), String> {
    use b3_store::local::{LocalStore, LocalStoreConfig};
    let mut order: Vec<String> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    // Iterative post-order walk over derivations known to the evaluator.
    let mut stack: Vec<(String, bool)> = roots.iter().map(|r| (r.clone(), false)).collect();
    while let Some((p, done)) = stack.pop() {
        if done {
            order.push(p);
            continue;
        }
        if !seen.insert(p.clone()) {
            continue;
        }
        stack.push((p.clone(), true));
        if let Some(d) = ev.drvs.borrow().get(&p) {
            for i in d.drv.input_drvs.keys() {
                let ip = ev.drv_hashes.borrow().store_dir().display(i);
                stack.push((ip, false));
            }
        }
    }
    let mut cfg = LocalStoreConfig::resolve(None).map_err(|e| e.to_string())?;
    cfg.store_dir = b3_store::path::StoreDir::new(&ev.opts.store_dir).map_err(|e| e.to_string())?;
    let store = LocalStore::open(cfg).map_err(|e| e.to_string())?;
    // The store's blocking calls are used directly: through the async
    // traits each one is a hand-off to a blocking thread and back, hundreds
    // of them for a nixpkgs package.
    let sd = ev.drv_hashes.borrow().store_dir().clone();
    // Every path this writes, kept alive with one temporary-roots append
    // (each add would otherwise take gc.lock and append on its own), so
    // that the derivations already valid (all of them, on a second run) can
    // be skipped with one query each.
    let mut roots = Vec::new();
    for p in &order {
        if let Some(d) = ev.drvs.borrow().get(p) {
            roots.push(sd.parse(p).map_err(|e| e.to_string())?);
            roots.extend(d.drv.input_srcs.iter().cloned());
        }
    }
    store
        .add_temp_roots(roots.iter())
        .map_err(|e| e.to_string())?;
    for p in order {
        let srcs: Vec<String> = match ev.drvs.borrow().get(&p) {
            Some(d) => d.drv.input_srcs.iter().map(|s| sd.display(s)).collect(),
            None => Vec::new(),
        };
        for src in srcs {
            add_source(ev, &store, &sd, &src)?;
        }
        let d = match ev.drvs.borrow().get(&p) {
            Some(d) => d.clone(),
            None => continue,
        };
        let sp = sd.parse(&p).map_err(|e| e.to_string())?;
        if store.is_valid_sync(&sp).map_err(|e| e.to_string())? {
            continue;
        }
        let name = format!("{}.drv", d.name);
        store
            .add_text_sync(&name, d.aterm.as_bytes(), &d.drv.references())
            .map_err(|e| format!("writing '{p}' to the b3 store: {e}"))?;
    }
    Ok(())
}

/// Adds a source path the evaluator computed (and its references) to the
/// store unless it is valid already; derivations are added by the caller.
fn add_source(
    ev: &crate::eval::Ev,
    store: &b3_store::local::LocalStore,
    sd: &b3_store::path::StoreDir,
    src: &str,
) -> Result<(), String> {
    use crate::builtins::store::Source;
    let sp = sd.parse(src).map_err(|e| e.to_string())?;
    if sp.is_derivation() || store.is_valid_sync(&sp).map_err(|e| e.to_string())? {
        return Ok(());
    }
    let how = ev.sources.borrow().get(src).cloned();
    let added = match how {
        Some(Source::Text(name, text, refs)) => {
            let mut set = std::collections::BTreeSet::new();
            for r in &refs {
                add_source(ev, store, sd, r)?;
                set.insert(sd.parse(r).map_err(|e| e.to_string())?);
            }
            store.add_text_sync(&name, &text, &set)
        }
        Some(Source::Path(fs, name)) => store.add_path_sync(
            &name,
            std::path::Path::new(&fs),
            b3_store::path::FileIngestionMethod::Recursive,
            b3_store::hash::HashAlgo::Sha256,
        ),
        None => {
            return Err(format!(
                "cannot add source '{src}' to the b3 store: b3 does not know how it was made \
                 (filtered sources are not supported yet)"
            ))
        }
    }
    .map_err(|e| format!("adding '{src}' to the b3 store: {e}"))?;
    if added != sp {
        return Err(format!(
            "source '{src}' was added as '{}'",
            sd.display(&added)
        ));
    }
    Ok(())
}
