//! Entry points for command-line front ends: evaluate a file or expression,
//! auto-call functions with `--arg`/`--argstr`, follow `-A` paths, force
//! strictly and render as Nix text, JSON or XML. All of it runs on a thread
//! with a large stack so deep (non-tail) recursion does not overflow.

use std::rc::Rc;

use crate::error::EvalError;
use crate::eval::{err, Ev, Options, R};
use crate::pos::Pos;
use crate::value::*;

/// One `--arg NAME EXPR` or `--argstr NAME VALUE`.
#[derive(Clone, Debug)]
pub enum AutoArg {
    Expr(String, String),
    Str(String, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputMode {
    Nix,
    Json,
    Xml,
    Raw,
}

/// Runs `f` on a thread with a big stack and returns its result.
pub fn with_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let h = std::thread::Builder::new().stack_size(4 << 30).spawn(f);
    match h {
        Ok(h) => match h.join() {
            Ok(v) => v,
            Err(p) => std::panic::resume_unwind(p),
        },
        Err(_) => panic!("cannot spawn the evaluation thread"),
    }
}

pub fn cwd() -> String {
    std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into())
}

/// Parses `-I`/`NIX_PATH` entries (`prefix=path` or `path`).
pub fn parse_search_path(entries: &[String]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in entries {
        match e.split_once('=') {
            Some((p, path)) => out.push((p.to_string(), abs(path))),
            None => out.push((String::new(), abs(e))),
        }
    }
    out
}

fn abs(p: &str) -> String {
    if p.starts_with('/') || p.contains("://") {
        crate::ast::canon_path(p)
    } else {
        crate::ast::canon_path(&format!("{}/{}", cwd(), p))
    }
}

pub fn nix_path_from_env() -> Vec<String> {
    match std::env::var("NIX_PATH") {
        Ok(s) => s
            .split(':')
            .filter(|x| !x.is_empty())
            .map(|x| x.to_string())
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl Ev {
    pub fn eval_file(&self, path: &str) -> R<Value> {
        let p = abs(path);
        self.import_file(&p, Pos::none())
    }

    pub fn eval_expr_str(&self, text: &str, origin: &str) -> R<Value> {
        self.eval_source(text, origin, false, &cwd())
    }

    pub fn auto_args(&self, args: &[AutoArg]) -> R<Rc<Attrs>> {
        let mut v = Vec::new();
        for a in args {
            match a {
                AutoArg::Expr(n, e) => {
                    let e = self.parse_source(e, "«string»", false, &cwd(), None)?;
                    v.push((
                        Sym::from(n.as_str()),
                        Value::thunk(e, &self.globals_env),
                        Pos::none(),
                    ));
                }
                AutoArg::Str(n, s) => v.push((
                    Sym::from(n.as_str()),
                    Value::str(s.as_bytes().to_vec()),
                    Pos::none(),
                )),
            }
        }
        Ok(Rc::new(Attrs::from_unsorted(v)))
    }

    /// Nix's `autoCallFunction`: functions with formals get called with the
    /// auto-arguments they name.
    pub fn auto_call(&self, v: &Value, args: &Rc<Attrs>) -> R<Value> {
        let v = self.force(v)?;
        match &v {
            Value::Attrs(a) if a.get("__functor").is_some() => {
                let f = a.get("__functor").cloned().unwrap_or(Value::Null);
                let g = self.apply(&f, v.clone(), Pos::none())?;
                self.auto_call(&g, args)
            }
            Value::Lambda(c) => match &c.lambda.param {
                crate::ast::Param::Pattern {
                    formals, ellipsis, ..
                } => {
                    if *ellipsis {
                        return self.apply(&v, Value::Attrs(args.clone()), Pos::none());
                    }
                    let mut out = Vec::new();
                    for f in formals {
                        match args.get_entry(&f.name) {
                            Some(e) => out.push(e.clone()),
                            None if f.default.is_some() => {}
                            None => {
                                return err(
                                    format!(
                                        "cannot evaluate a function that has an argument without a value ('{}')\nNix attempted to evaluate a function as a top level expression; in\nthis case it must have its arguments supplied either by default\nvalues, or passed explicitly with '--arg' or '--argstr'. See\nhttps://nix.dev/manual/nix/stable/language/syntax.html#functions.",
                                        f.name
                                    ),
                                    f.pos,
                                )
                            }
                        }
                    }
                    self.apply(&v, Value::attrs(Attrs::from_unsorted(out)), Pos::none())
                }
                _ => Ok(v),
            },
            _ => Ok(v),
        }
    }

    /// Follows an `-A` attribute path (dot-separated; numbers index lists).
    pub fn select_path(&self, v: &Value, path: &str, args: &Rc<Attrs>) -> R<Value> {
        let mut v = self.auto_call(v, args)?;
        if path.is_empty() {
            return Ok(v);
        }
        for comp in split_attr_path(path) {
            if let Ok(i) = comp.parse::<usize>() {
                if let Value::List(l) = self.force(&v)? {
                    match l.get(i) {
                        Some(x) => v = self.force(x)?,
                        None => {
                            return err(
                                format!(
                                    "list index {i} in selection path '{path}' is out of range"
                                ),
                                Pos::none(),
                            )
                        }
                    }
                    v = self.auto_call(&v, args)?;
                    continue;
                }
            }
            let a = match self.force(&v)? {
                Value::Attrs(a) => a,
                other => {
                    return err(
                        format!("the expression selected by the selection path '{path}' should be a set but is {}", other.type_name()),
                        Pos::none(),
                    )
                }
            };
            match a.get(&comp) {
                Some(x) => v = self.force(x)?,
                None => {
                    return err(
                        format!("attribute '{comp}' in selection path '{path}' not found"),
                        Pos::none(),
                    )
                }
            }
            v = self.auto_call(&v, args)?;
        }
        Ok(v)
    }

    pub fn render(&self, v: &Value, mode: OutputMode, strict: bool) -> R<String> {
        if strict {
            self.deep_force(v, Pos::none())?;
        }
        let v = self.force(v)?;
        Ok(match mode {
            OutputMode::Nix => crate::print::print_value(&v),
            OutputMode::Json => {
                let mut out = Vec::new();
                let mut ctx = Context::new();
                crate::builtins::json::write_json(
                    self,
                    &v,
                    &mut out,
                    &mut ctx,
                    Pos::none(),
                    false,
                )?;
                String::from_utf8_lossy(&out).into_owned()
            }
            OutputMode::Xml => {
                let mut ctx = Context::new();
                let s = crate::builtins::xml::value_to_xml(self, &v, Pos::none(), &mut ctx)?;
                return Ok(s.trim_end_matches('\n').to_string());
            }
            OutputMode::Raw => {
                let (s, _) = self.coerce_to_string(&v, false, false, Pos::none())?;
                return Ok(String::from_utf8_lossy(&s).into_owned());
            }
        })
    }

    /// The derivations in a value for `nix-instantiate` (top-level set or
    /// list of derivations, or a single one): their drv paths.
    pub fn collect_drv_paths(&self, v: &Value, out: &mut Vec<String>, top: bool) -> R<()> {
        let v = self.force(v)?;
        match &v {
            Value::Attrs(a) => {
                if self.is_derivation(a)? {
                    if let Some(dp) = a.get("drvPath") {
                        let s = self.force_string(dp, Pos::none())?;
                        out.push(s);
                    }
                    return Ok(());
                }
                let recurse = top
                    || match a.get("recurseForDerivations") {
                        Some(r) => matches!(self.force(r)?, Value::Bool(true)),
                        None => false,
                    };
                if recurse {
                    for (_, x, _) in a.iter() {
                        self.collect_drv_paths(x, out, false)?;
                    }
                }
            }
            Value::List(l) if top => {
                for x in l.iter() {
                    self.collect_drv_paths(x, out, false)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

fn split_attr_path(p: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in p.chars() {
        match c {
            '"' => quoted = !quoted,
            '.' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out
}

/// Creates an evaluator for `opts`.
pub fn new_evaluator(opts: Options) -> Rc<Ev> {
    Ev::new(opts)
}

pub type DriverResult = Result<String, EvalError>;
