//! The tree-walking evaluator: forcing thunks, applying functions, building
//! attribute sets and environments, operators, coercions and equality.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::ast::{self, AttrName, AttrsExpr, BinOp, Expr, Param};
use crate::error::{ErrorKind, EvalError};
use crate::pos::Pos;
use crate::value::*;

pub type R<T> = Result<T, EvalError>;

/// Evaluation settings taken from the command line.
#[derive(Clone, Debug)]
pub struct Options {
    /// `-I` entries first, then `NIX_PATH`: (prefix, path).
    pub nix_path: Vec<(String, String)>,
    pub max_call_depth: usize,
    pub show_trace: bool,
    pub pure: bool,
    pub experimental: Vec<String>,
    pub lint_abs_path: Lint,
    pub lint_short_path: Lint,
    pub lint_url: Lint,
    pub store_dir: String,
    pub abort_on_warn: bool,
    /// Store writes and import from derivation (see `storepath`).
    pub store: crate::storepath::StoreOptions,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Lint {
    #[default]
    Off,
    Warn,
    Fatal,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nix_path: Vec::new(),
            max_call_depth: 200_000,
            show_trace: false,
            pure: false,
            experimental: Vec::new(),
            lint_abs_path: Lint::Off,
            lint_short_path: Lint::Off,
            lint_url: Lint::Off,
            store_dir: "/nix/store".into(),
            abort_on_warn: false,
            store: Default::default(),
        }
    }
}

pub struct Ev {
    pub opts: Options,
    pub globals_env: Rc<Env>,
    pub global_names: Vec<Sym>,
    pub builtins: Value,
    pub depth: Cell<usize>,
    /// Call depth when the current JSON/XML/deepSeq walk started.
    pub depth_base: Cell<usize>,
    pub import_cache: RefCell<FxHashMap<String, Value>>,
    /// drv path -> hashDerivationModulo, for derivations evaluated so far.
    pub drv_hashes: RefCell<b3_store::derivation::DrvHashCache>,
    pub sym_cache: RefCell<FxHashMap<&'static str, Sym>>,
    pub regex_cache: RefCell<crate::regex::RegexCache>,
    pub drv_outputs: RefCell<FxHashMap<String, Vec<String>>>,
    /// Derivations computed so far (drv path -> derivation), read-only mode.
    pub drvs: RefCell<FxHashMap<String, Rc<crate::builtins::derivation::Drv>>>,
    /// Store paths computed for sources (toFile, copied paths), so that
    /// `b3 instantiate` can add them: store path -> how to make it.
    pub sources: RefCell<FxHashMap<String, crate::builtins::store::Source>>,
    /// The local store, scratch space and fetch cache of this evaluation.
    pub store_io: crate::storepath::StoreIo,
}

pub fn err<T>(msg: impl Into<String>, pos: Pos) -> R<T> {
    Err(EvalError::other(msg, pos))
}

impl Ev {
    pub fn new(opts: Options) -> Rc<Ev> {
        crate::builtins::make_ev(opts)
    }

    pub fn sym(&self, s: &'static str) -> Sym {
        self.sym_cache
            .borrow_mut()
            .entry(s)
            .or_insert_with(|| Sym::from(s))
            .clone()
    }

    pub fn has_feature(&self, f: &str) -> bool {
        self.opts.experimental.iter().any(|x| x == f)
    }

    // ---------- forcing ----------

    #[inline]
    pub fn force(&self, v: &Value) -> R<Value> {
        match v {
            Value::Thunk(t) => self.force_thunk(t),
            v => Ok(v.clone()),
        }
    }

    /// Forces a value the caller owns (saves a clone for non-thunks).
    #[inline]
    pub fn force_owned(&self, v: Value) -> R<Value> {
        match v {
            Value::Thunk(t) => self.force_thunk(&t),
            v => Ok(v),
        }
    }

    pub fn force_thunk(&self, t: &Rc<Thunk>) -> R<Value> {
        let st = match t.start() {
            Ok(st) => st,
            Err(r) => return r,
        };
        let r = match &st {
            ThunkState::Pending(e, env) => self.eval(e, env),
            ThunkState::Native(f) => f(self),
            ThunkState::Apply(lf, x) => self.apply(&lf.f, x.clone(), lf.pos),
            _ => unreachable!("checked by start"),
        };
        // A thunk may evaluate to another thunk only through natives.
        let r = match r {
            Ok(Value::Thunk(t2)) => self.force_thunk(&t2),
            r => r,
        };
        match &r {
            Ok(v) => t.set(ThunkState::Done(v.clone())),
            Err(e) if e.kind() == ErrorKind::StackOverflow => t.set(st),
            Err(e) => t.set(ThunkState::Failed(e.clone())),
        }
        r
    }

    /// Makes a lazy value for `e` in `env`. `building` is true while `env`'s
    /// own slots are still being filled (so same-frame lookups must wait).
    #[inline]
    pub fn mk_thunk(&self, e: &'static Expr, env: &Rc<Env>, building: bool) -> Value {
        match e {
            Expr::Lit(v) => v.clone(),
            Expr::Var(d, i) if !building || *d > 0 => env.lookup(*d, *i),
            Expr::Lambda(l) => Value::Lambda(Rc::new(Closure {
                lambda: l,
                env: env.clone(),
            })),
            Expr::Bin(op, l, r, _) => match self.peek_binop(*op, l, r, env, building) {
                Some(v) => v,
                None => match self.pure(e, &[], env, building) {
                    Some(v) => v,
                    None => Value::thunk(e, env),
                },
            },
            Expr::Select { .. } | Expr::If { .. } => match self.pure(e, &[], env, building) {
                Some(v) => v,
                None => Value::thunk(e, env),
            },
            _ => Value::thunk(e, env),
        }
    }

    /// The value of `e` when it can be had without evaluating anything that
    /// might fail, loop, allocate or have effects: integer arithmetic and
    /// comparison, `!` and `if` on already-forced operands, and `x.a` on an
    /// already-forced set that has `a` (giving `a`'s own value or thunk).
    /// Laziness is unobservable there, so no thunk or frame is needed; on
    /// `None` the caller evaluates the ordinary way, which reports any error.
    ///
    /// `args` are frames that were never allocated: the arguments of the
    /// innermost calls (innermost first), each the single slot of a plain
    /// `x: …` lambda's frame; deeper variables are looked up in `env`.
    /// `building` is [`Ev::mk_thunk`]'s.
    pub fn pure(
        &self,
        e: &'static Expr,
        args: &[Value],
        env: &Rc<Env>,
        building: bool,
    ) -> Option<Value> {
        match e {
            Expr::Lit(_) | Expr::Var(..) => self.pure_operand(e, args, env, building),
            Expr::Bin(op, l, r, _) => {
                let x = take_int(self.pure_operand(l, args, env, building)?)?;
                let y = take_int(self.pure_operand(r, args, env, building)?)?;
                int_binop(*op, x, y)
            }
            Expr::If { c, t, e, .. } => match self.pure(c, args, env, building)? {
                Value::Bool(b) => self.pure(if b { t } else { e }, args, env, building),
                _ => None,
            },
            Expr::Not(x, _) => match self.pure(x, args, env, building)? {
                Value::Bool(b) => Some(Value::Bool(!b)),
                _ => None,
            },
            Expr::Select { e: inner, path, .. } => {
                self.pure_select(inner, path, args, env, building)
            }
            _ => None,
        }
    }

    /// [`Ev::pure`] of `inner.path` (kept out of `pure`, whose arithmetic
    /// is the hot part).
    #[inline(never)]
    fn pure_select(
        &self,
        inner: &'static Expr,
        path: &'static [AttrName],
        args: &[Value],
        env: &Rc<Env>,
        building: bool,
    ) -> Option<Value> {
        let mut v = self.pure(inner, args, env, building)?;
        let n = path.len();
        for (k, name) in path.iter().enumerate() {
            let AttrName::Static(key) = name else {
                return None;
            };
            let Value::Attrs(a) = &v else { return None };
            let x = a.get_sym(key)?.clone();
            if k + 1 < n {
                if let Value::Thunk(t) = &x {
                    v = t.forced()?;
                    continue;
                }
            }
            v = x;
        }
        Some(v)
    }

    /// [`Ev::pure`] with literals and variables done in place (most
    /// operands are).
    #[inline(always)]
    fn pure_operand(
        &self,
        e: &'static Expr,
        args: &[Value],
        env: &Rc<Env>,
        building: bool,
    ) -> Option<Value> {
        match e {
            Expr::Lit(v) => Some(v.clone()),
            Expr::Var(d, i) => {
                let d = *d as usize;
                let v = if d < args.len() {
                    if *i != 0 {
                        return None;
                    }
                    args[d].clone()
                } else {
                    let d = (d - args.len()) as u32;
                    if building && d == 0 {
                        return None;
                    }
                    env.lookup(d, *i)
                };
                match v {
                    Value::Thunk(t) => t.forced(),
                    v => Some(v),
                }
            }
            _ => self.pure(e, args, env, building),
        }
    }

    /// [`Ev::pure`] for a call's result, which must be a forced value (a
    /// selected attribute may still be an unforced thunk).
    #[inline]
    pub fn pure_call(&self, body: &'static Expr, args: &[Value], env: &Rc<Env>) -> Option<Value> {
        match self.pure_operand(body, args, env, false)? {
            Value::Thunk(t) => t.forced(),
            v => Some(v),
        }
    }

    // ---------- typed forcing helpers ----------

    pub fn force_int(&self, v: &Value, pos: Pos) -> R<i64> {
        match self.force(v)? {
            Value::Int(i) => Ok(i),
            v => err(
                format!(
                    "expected an integer but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }
    pub fn force_bool(&self, v: &Value, pos: Pos) -> R<bool> {
        match self.force(v)? {
            Value::Bool(b) => Ok(b),
            v => err(
                format!(
                    "expected a Boolean but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }
    pub fn force_attrs(&self, v: &Value, pos: Pos) -> R<Rc<Attrs>> {
        match self.force(v)? {
            Value::Attrs(a) => Ok(a),
            v => err(
                format!(
                    "expected a set but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }
    pub fn force_list(&self, v: &Value, pos: Pos) -> R<Rc<NixList>> {
        match self.force(v)? {
            Value::List(l) => Ok(l),
            v => err(
                format!(
                    "expected a list but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }
    pub fn force_fn(&self, v: &Value, pos: Pos) -> R<Value> {
        let v = self.force(v)?;
        match &v {
            Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(..) => Ok(v),
            Value::Attrs(a) if a.get("__functor").is_some() => Ok(v),
            _ => err(
                format!(
                    "expected a function but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }
    /// A string value (no coercion); returns the NixStr.
    pub fn force_str(&self, v: &Value, pos: Pos) -> R<Rc<NixStr>> {
        match self.force(v)? {
            Value::Str(s) => Ok(s),
            v => err(
                format!(
                    "expected a string but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }
    /// A string without context requirement, as UTF-8 (lossy).
    pub fn force_string(&self, v: &Value, pos: Pos) -> R<String> {
        Ok(self.force_str(v, pos)?.lossy())
    }
    pub fn force_float(&self, v: &Value, pos: Pos) -> R<f64> {
        match self.force(v)? {
            Value::Int(i) => Ok(i as f64),
            Value::Float(f) => Ok(f),
            v => err(
                format!(
                    "expected a float but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }

    pub fn show_short(&self, v: &Value) -> String {
        crate::print::print_short(v)
    }

    // ---------- evaluation ----------

    pub fn eval(&self, e: &'static Expr, env: &Rc<Env>) -> R<Value> {
        let mut calls = 0usize;
        let r = self.eval_tail(e, env, &mut calls);
        if calls != 0 {
            self.depth.set(self.depth.get() - calls);
        }
        r
    }

    /// [`Ev::eval`]'s loop. An expression in tail position (the branch of
    /// an `if`, the body of a `let`, `with` or `assert`, and the body of a
    /// lambda called by an application) is evaluated by the next turn of
    /// the loop rather than by a recursive call, in the frame the loop now
    /// owns. `calls` counts the lambda calls entered that way: each still
    /// counts towards `max-call-depth` until the caller subtracts them, as
    /// nested calls would have. Only the common forms are handled here, so
    /// that this recursive function keeps a small stack frame; the rest is
    /// in `eval_cold`.
    #[inline(always)]
    fn eval_tail(&self, mut e: &'static Expr, env: &Rc<Env>, calls: &mut usize) -> R<Value> {
        let mut owned: Option<Rc<Env>> = None;
        loop {
            let env: &Rc<Env> = match &owned {
                Some(o) => o,
                None => env,
            };
            return match e {
                Expr::Lit(v) => Ok(v.clone()),
                Expr::Var(d, i) => self.force_owned(env.lookup(*d, *i)),
                Expr::Select {
                    e,
                    path,
                    default,
                    pos,
                } => self.eval_select(e, path, default.as_deref(), *pos, env),
                Expr::App { f, args, pos } => {
                    let mut fv = self.eval_operand(f, env)?;
                    let Some((last, init)) = args.split_last() else {
                        return Ok(fv);
                    };
                    for a in init {
                        let av = self.mk_thunk(a, env, false);
                        fv = self.apply(&fv, av, *pos)?;
                    }
                    let av = match last {
                        Expr::Bin(op, l, r, _) => match self.peek_binop(*op, l, r, env, false) {
                            Some(v) => v,
                            None => self.mk_thunk(last, env, false),
                        },
                        _ => self.mk_thunk(last, env, false),
                    };
                    // With `--show-trace` every call adds its own frames to
                    // an error, so it keeps its own stack frame.
                    let c = match fv {
                        Value::Lambda(c) if !self.opts.show_trace => c,
                        fv => return self.apply(&fv, av, *pos),
                    };
                    let l: &'static ast::Lambda = c.lambda;
                    if l.pure {
                        if let Some(v) = self.pure_call(&l.body, std::slice::from_ref(&av), &c.env)
                        {
                            return Ok(v);
                        }
                    }
                    self.enter(*pos)?;
                    *calls += 1;
                    let new_env = self.bind(&c.env, l, av, *pos)?;
                    owned = Some(new_env);
                    e = &l.body;
                    continue;
                }
                Expr::Lambda(l) => Ok(Value::Lambda(Rc::new(Closure {
                    lambda: l,
                    env: env.clone(),
                }))),
                Expr::If { c, t, e: f, pos } => {
                    let cv = match &**c {
                        Expr::Bin(op, l, r, bpos) => match self.peek_binop(*op, l, r, env, false) {
                            Some(v) => v,
                            None => self.eval_bin(*op, l, r, env, *bpos)?,
                        },
                        c => self.eval(c, env)?,
                    };
                    match cv {
                        Value::Bool(b) => {
                            e = if b { t } else { f };
                            continue;
                        }
                        v => Err(self.if_type_error(v, *pos)),
                    }
                }
                Expr::Bin(op, l, r, pos) => match self.peek_binop(*op, l, r, env, false) {
                    Some(v) => Ok(v),
                    None => self.eval_bin(*op, l, r, env, *pos),
                },
                Expr::Let(a, body) => {
                    let new_env = self.build_frame(a, env)?;
                    owned = Some(new_env);
                    e = body;
                    continue;
                }
                Expr::Attrs(a) => self.eval_attrs(a, env),
                Expr::List(items) => {
                    let v: Vec<Value> =
                        items.iter().map(|i| self.mk_thunk(i, env, false)).collect();
                    Ok(Value::list(v))
                }
                _ => self.eval_cold(e, env),
            };
        }
    }

    /// Integer arithmetic or comparison on operands that are integer
    /// literals or variables already holding integers, read in place (no
    /// value is cloned or dropped): the common case of `n - 1` or `i < n`.
    /// `None` when an operand is anything else or the result would be an
    /// error; the caller then evaluates the ordinary way. `building` is
    /// [`Ev::mk_thunk`]'s.
    #[inline(always)]
    fn peek_binop(
        &self,
        op: BinOp,
        l: &'static Expr,
        r: &'static Expr,
        env: &Env,
        building: bool,
    ) -> Option<Value> {
        // The right operand first: when it is not an integer it is mostly
        // not a variable either (`acc // { … }`, `f x + f y`, `i - i / 2`),
        // which settles it without a look into the frames.
        let y = peek_int(r, env, building)?;
        let x = peek_int(l, env, building)?;
        int_binop(op, x, y)
    }

    /// [`Ev::eval`] with variables and literals done in place: they are
    /// most operands, and a recursive call costs more than their lookup.
    #[inline(always)]
    fn eval_operand(&self, e: &'static Expr, env: &Rc<Env>) -> R<Value> {
        match e {
            Expr::Var(d, i) => self.force_owned(env.lookup(*d, *i)),
            Expr::Lit(v) => Ok(v.clone()),
            _ => self.eval(e, env),
        }
    }

    #[cold]
    #[inline(never)]
    fn if_type_error(&self, v: Value, pos: Pos) -> EvalError {
        let e = EvalError::other(
            format!(
                "expected a Boolean but found {}: {}",
                v.type_name(),
                self.show_short(&v)
            ),
            pos,
        );
        self.frame(e, pos, || "while evaluating a branch condition".into())
    }

    fn eval_select(
        &self,
        e: &'static Expr,
        path: &'static [AttrName],
        default: Option<&'static Expr>,
        pos: Pos,
        env: &Rc<Env>,
    ) -> R<Value> {
        let mut v = self.eval(e, env)?;
        for name in path {
            let dynkey;
            let key: &Sym = match name {
                AttrName::Static(s) => s,
                AttrName::Dynamic(_) => {
                    dynkey = self.attr_name(name, env)?;
                    &dynkey
                }
            };
            let found = match &v {
                Value::Attrs(a) => a.get_sym(key).cloned(),
                _ if default.is_some() => None,
                other => return Err(self.select_type_error(other, pos)),
            };
            match found {
                Some(x) => {
                    v = self.force_owned(x).map_err(|er| {
                        self.frame(er, pos, || {
                            format!("while evaluating the attribute '{key}'")
                        })
                    })?
                }
                None => {
                    if let Some(d) = default {
                        return self.eval(d, env);
                    }
                    return Err(self.missing_attr_error(key, &v, pos));
                }
            }
        }
        Ok(v)
    }

    #[cold]
    #[inline(never)]
    fn select_type_error(&self, other: &Value, pos: Pos) -> EvalError {
        EvalError::other(
            format!(
                "expected a set but found {}: {}",
                other.type_name(),
                self.show_short(other)
            ),
            pos,
        )
    }

    #[cold]
    #[inline(never)]
    fn missing_attr_error(&self, key: &str, v: &Value, pos: Pos) -> EvalError {
        let mut msg = format!("attribute '{key}' missing");
        if let Value::Attrs(a) = v {
            if let Some(s) = suggest(key, a) {
                msg.push_str(&format!("\n\nDid you mean {s}?"));
            }
        }
        EvalError::other(msg, pos)
    }

    #[inline(never)]
    fn eval_cold(&self, e: &'static Expr, env: &Rc<Env>) -> R<Value> {
        match e {
            Expr::WithVar { name, withs, pos } => {
                let v = self.lookup_with(name, withs, env, *pos)?;
                self.force_owned(v)
            }
            Expr::Interp(parts, pos) => {
                // Room for the literal parts and a short interpolation, so
                // that `"item-${toString i}"` is one allocation.
                let lits: usize = parts
                    .iter()
                    .map(|p| match p {
                        Expr::Lit(Value::Str(s)) => s.s.len(),
                        _ => 16,
                    })
                    .sum();
                let mut s = Vec::with_capacity(lits);
                let mut ctx = Context::new();
                for p in parts {
                    let v = self.eval(p, env)?;
                    self.coerce_into(&v, &mut s, &mut ctx, true, false, *pos)?;
                }
                Ok(Value::str_ctx(s, ctx))
            }
            Expr::PathInterp(parts, pos) => {
                let mut s = Vec::new();
                let mut ctx = Context::new();
                for p in parts {
                    let v = self.eval(p, env)?;
                    self.coerce_into(&v, &mut s, &mut ctx, false, false, *pos)?;
                }
                if !ctx.is_empty() {
                    return err(
                        "a string that refers to a store path cannot be appended to a path",
                        *pos,
                    );
                }
                let s = String::from_utf8_lossy(&s).into_owned();
                Ok(Value::Path(ast::canon_path(&s).into()))
            }
            Expr::HomePath(rest, pos) => {
                let home =
                    std::env::var("HOME").map_err(|_| EvalError::other("HOME is not set", *pos))?;
                Ok(Value::Path(
                    ast::canon_path(&format!("{home}{rest}")).into(),
                ))
            }
            Expr::HasAttr { e, path } => {
                let mut v = self.eval(e, env)?;
                for name in path {
                    let key = self.attr_name(name, env)?;
                    match &v {
                        Value::Attrs(a) => match a.get_sym(&key) {
                            Some(x) => v = self.force(x)?,
                            None => return Ok(Value::Bool(false)),
                        },
                        _ => return Ok(Value::Bool(false)),
                    }
                }
                Ok(Value::Bool(true))
            }
            Expr::With { ns, body } => {
                let nsv = self.mk_thunk(ns, env, false);
                let new_env = Env::new(Some(env.clone()), smallvec::smallvec![nsv]);
                self.eval(body, &new_env)
            }
            Expr::Assert { c, body, pos, text } => {
                let cv = self.eval(c, env)?;
                match cv {
                    Value::Bool(true) => self.eval(body, env),
                    Value::Bool(false) => Err(EvalError::new(
                        ErrorKind::Assert,
                        format!("assertion '{text}' failed"),
                        *pos,
                    )),
                    v => err(
                        format!(
                            "expected a Boolean but found {}: {}",
                            v.type_name(),
                            self.show_short(&v)
                        ),
                        *pos,
                    ),
                }
            }
            Expr::Not(x, pos) => {
                let v = self.eval(x, env)?;
                match v {
                    Value::Bool(b) => Ok(Value::Bool(!b)),
                    v => err(
                        format!(
                            "expected a Boolean but found {}: {}",
                            v.type_name(),
                            self.show_short(&v)
                        ),
                        *pos,
                    ),
                }
            }
            Expr::Neg(x, pos) => {
                let v = self.eval(x, env)?;
                self.arith(BinOp::Sub, Value::Int(0), v, *pos)
            }
            Expr::CurPos(pos) => Ok(self.pos_value(*pos)),
            // The common forms are handled by `eval` itself.
            _ => self.eval(e, env),
        }
    }

    pub fn frame(&self, e: EvalError, pos: Pos, msg: impl FnOnce() -> String) -> EvalError {
        if self.opts.show_trace {
            e.with_frame(pos, msg())
        } else {
            e
        }
    }

    pub fn pos_value(&self, pos: Pos) -> Value {
        match pos.resolve() {
            Some(r) => Value::attrs(Attrs::from_sorted(vec![
                (self.sym("column"), Value::Int(r.col as i64), Pos::none()),
                (
                    self.sym("file"),
                    Value::str(r.file.name.as_bytes().to_vec()),
                    Pos::none(),
                ),
                (self.sym("line"), Value::Int(r.line as i64), Pos::none()),
            ])),
            None => Value::Null,
        }
    }

    fn attr_name(&self, n: &'static AttrName, env: &Rc<Env>) -> R<Sym> {
        match n {
            AttrName::Static(s) => Ok(s.clone()),
            AttrName::Dynamic(e) => {
                let v = self.eval(e, env)?;
                match v {
                    Value::Str(s) => Ok(Sym::from(&*s.lossy_ref())),
                    v => err(
                        format!(
                            "expected a string but found {}: {}",
                            v.type_name(),
                            self.show_short(&v)
                        ),
                        Pos::none(),
                    ),
                }
            }
        }
    }

    fn lookup_with(&self, name: &Sym, withs: &[u32], env: &Rc<Env>, pos: Pos) -> R<Value> {
        for d in withs {
            let ns = env.lookup(*d, 0);
            let a = self.force_attrs(&ns, pos)?;
            if let Some(v) = a.get_sym(name) {
                return Ok(v.clone());
            }
        }
        err(format!("undefined variable '{name}'"), pos)
    }

    /// Creates the frame of a `let`/`rec` set, filling its slots with thunks.
    fn build_frame(&self, a: &'static AttrsExpr, env: &Rc<Env>) -> R<Rc<Env>> {
        let n = a.statics.len();
        let new_env = Env::new(Some(env.clone()), Slots::new());
        let building = a.rec;
        let mut slots = Slots::with_capacity(n);
        for (_, e, _) in &a.statics {
            slots.push(if building {
                Value::Null
            } else {
                self.mk_thunk(e, &new_env, false)
            });
        }
        new_env.set_all(slots);
        if building {
            for (i, (_, e, _)) in a.statics.iter().enumerate() {
                let v = self.mk_thunk(e, &new_env, true);
                new_env.set(i, v);
            }
        }
        Ok(new_env)
    }

    fn eval_attrs(&self, a: &'static AttrsExpr, env: &Rc<Env>) -> R<Value> {
        let (venv, building) = if a.frame {
            (self.build_frame(a, env)?, true)
        } else {
            (env.clone(), false)
        };
        let mut entries: Vec<(Sym, Value, Pos)> =
            Vec::with_capacity(a.statics.len() + a.dynamics.len());
        if a.frame {
            for (i, (name, e, pos)) in a.statics.iter().enumerate() {
                let v = if a.rec {
                    venv.get(i)
                } else {
                    self.mk_thunk(e, &venv, false)
                };
                entries.push((name.clone(), v, *pos));
            }
        } else {
            for (name, e, pos) in &a.statics {
                entries.push((name.clone(), self.mk_thunk(e, &venv, building), *pos));
            }
        }
        let mut sorted = true;
        for w in entries.windows(2) {
            if w[0].0 >= w[1].0 {
                sorted = false;
                break;
            }
        }
        if !sorted {
            entries.sort_by(|x, y| x.0.cmp(&y.0));
        }
        if a.rec && a.statics.iter().any(|s| &*s.0 == "__overrides") {
            let ov = entries
                .iter()
                .find(|e| &*e.0 == "__overrides")
                .map(|e| e.1.clone());
            if let Some(ov) = ov {
                let ov = self.force_attrs(&ov, Pos::none())?;
                for (k, v, p) in ov.iter() {
                    if let Some(i) = a.statics.iter().position(|s| &s.0 == k) {
                        venv.set(i, v.clone());
                    }
                    match entries.binary_search_by(|e| e.0.cmp(k)) {
                        Ok(i) => entries[i].1 = v.clone(),
                        Err(i) => entries.insert(i, (k.clone(), v.clone(), *p)),
                    }
                }
            }
        }
        for (k, e, pos) in &a.dynamics {
            let kv = self.eval(k, &venv)?;
            let key = match kv {
                Value::Null => continue,
                Value::Str(s) => s,
                v => {
                    return err(
                        format!(
                            "expected a string but found {}: {}",
                            v.type_name(),
                            self.show_short(&v)
                        ),
                        *pos,
                    )
                }
            };
            let key: Sym = Sym::from(&*key.lossy_ref());
            let v = self.mk_thunk(e, &venv, false);
            match entries.binary_search_by(|x| x.0.cmp(&key)) {
                Ok(_) => {
                    return err(
                        format!(
                            "dynamic attribute '{key}' already defined at {}",
                            show_pos(*pos)
                        ),
                        *pos,
                    )
                }
                Err(i) => entries.insert(i, (key, v, *pos)),
            }
        }
        Ok(Value::attrs(Attrs::from_sorted(entries)))
    }

    // ---------- application ----------

    pub fn apply(&self, f: &Value, arg: Value, pos: Pos) -> R<Value> {
        if let Value::Lambda(c) = f {
            return self.call_lambda(c, arg, pos);
        }
        let f = self.force(f)?;
        match &f {
            Value::Lambda(c) => self.call_lambda(c, arg, pos),
            Value::PrimOp(p) => {
                if p.arity == 1 {
                    self.call_prim(p, &[arg], pos)
                } else {
                    Ok(Value::PrimOpApp(Rc::new(PartialApp {
                        op: p.clone(),
                        args: vec![arg],
                    })))
                }
            }
            Value::PrimOpApp(pa) => {
                let mut all = Vec::with_capacity(pa.args.len() + 1);
                all.extend(pa.args.iter().cloned());
                all.push(arg);
                if all.len() == pa.op.arity {
                    self.call_prim(&pa.op, &all, pos)
                } else {
                    Ok(Value::PrimOpApp(Rc::new(PartialApp {
                        op: pa.op.clone(),
                        args: all,
                    })))
                }
            }
            Value::Attrs(a) => match a.get("__functor") {
                Some(func) => {
                    let g = self.apply(func, f.clone(), pos)?;
                    self.apply(&g, arg, pos)
                }
                None => err(
                    "attempt to call something which is not a function but a set",
                    pos,
                ),
            },
            v => err(
                format!(
                    "attempt to call something which is not a function but {}: {}",
                    v.type_name(),
                    self.show_short(v)
                ),
                pos,
            ),
        }
    }

    /// `f a b`. A curried lambda `x: y: body` is entered directly: its
    /// inner closure is never allocated, only the two frames (this is the
    /// path of `foldl'`, `sort` and `mapAttrs` callbacks).
    pub fn call2(&self, f: &Value, a: Value, b: Value, pos: Pos) -> R<Value> {
        match f {
            Value::PrimOp(p) if p.arity == 2 => return self.call_prim(p, &[a, b], pos),
            Value::Lambda(c) => {
                if let Expr::Lambda(inner) = &c.lambda.body {
                    if inner.pure && matches!(c.lambda.param, Param::Ident(_)) {
                        let ba = [b, a];
                        if let Some(v) = self.pure_call(&inner.body, &ba, &c.env) {
                            return Ok(v);
                        }
                        let [b, a] = ba;
                        return self.call_curried(c, inner, a, b, pos);
                    }
                    return self.call_curried(c, inner, a, b, pos);
                }
            }
            _ => {}
        }
        let g = self.apply(f, a, pos)?;
        self.apply(&g, b, pos)
    }

    fn call_curried(
        &self,
        c: &Rc<Closure>,
        inner: &'static ast::Lambda,
        a: Value,
        b: Value,
        pos: Pos,
    ) -> R<Value> {
        let l: &'static ast::Lambda = c.lambda;
        self.enter(pos)?;
        let env1 = self.bind(&c.env, l, a, pos);
        self.depth.set(self.depth.get() - 1);
        let env1 = env1.map_err(|e| self.lambda_frame(e, l, pos))?;
        self.enter(pos)?;
        let r = self
            .bind(&env1, inner, b, pos)
            .and_then(|env2| self.eval(&inner.body, &env2));
        self.depth.set(self.depth.get() - 1);
        r.map_err(|e| self.lambda_frame(e, inner, pos))
    }

    fn lambda_frame(&self, e: EvalError, l: &'static ast::Lambda, pos: Pos) -> EvalError {
        if self.opts.show_trace {
            let name = match &l.name {
                Some(n) => format!("while calling '{n}'"),
                None => "while calling anonymous lambda".to_string(),
            };
            e.with_frame(l.pos, name).with_frame(pos, "from call site")
        } else {
            e
        }
    }

    fn call_prim(&self, p: &Rc<PrimOp>, args: &[Value], pos: Pos) -> R<Value> {
        (p.f)(self, args, pos).map_err(|e| {
            let e = e.at(pos);
            self.frame(e, pos, || format!("while calling the '{}' builtin", p.name))
        })
    }

    fn enter(&self, pos: Pos) -> R<()> {
        let d = self.depth.get() + 1;
        if d > self.opts.max_call_depth {
            return Err(EvalError::new(
                ErrorKind::StackOverflow,
                "stack overflow; max-call-depth exceeded",
                pos,
            ));
        }
        self.depth.set(d);
        Ok(())
    }

    pub fn call_lambda(&self, c: &Rc<Closure>, arg: Value, pos: Pos) -> R<Value> {
        let l: &'static ast::Lambda = c.lambda;
        if l.pure {
            if let Some(v) = self.pure_call(&l.body, std::slice::from_ref(&arg), &c.env) {
                return Ok(v);
            }
        }
        self.enter(pos)?;
        let r = self
            .bind(&c.env, l, arg, pos)
            .and_then(|env| self.eval(&l.body, &env));
        self.depth.set(self.depth.get() - 1);
        r.map_err(|e| self.lambda_frame(e, l, pos))
    }

    /// The frame of a call of `l` (closed over `parent`) with `arg`.
    #[inline]
    fn bind(&self, parent: &Rc<Env>, l: &'static ast::Lambda, arg: Value, pos: Pos) -> R<Rc<Env>> {
        match &l.param {
            Param::Ident(_) => Ok(Env::new1(parent.clone(), arg)),
            _ => self.bind_pattern(parent, l, arg, pos),
        }
    }

    fn bind_pattern(
        &self,
        parent: &Rc<Env>,
        l: &'static ast::Lambda,
        arg: Value,
        pos: Pos,
    ) -> R<Rc<Env>> {
        match &l.param {
            Param::Ident(_) => Ok(Env::new(Some(parent.clone()), smallvec::smallvec![arg])),
            Param::Pattern {
                formals,
                ellipsis,
                at,
            } => {
                let args = self.force_attrs(&arg, pos)?;
                let n = formals.len() + usize::from(at.is_some());
                let env = Env::new(Some(parent.clone()), Slots::new());
                let mut slots = Slots::with_capacity(n);
                let mut used = 0usize;
                for f in formals.iter() {
                    match args.get_sym(&f.name) {
                        Some(v) => {
                            used += 1;
                            slots.push(v.clone());
                        }
                        None => {
                            match &f.default {
                                Some(d) => slots.push(self.mk_thunk(d, &env, true)),
                                None => {
                                    let fname = l
                                        .name
                                        .as_ref()
                                        .map(|n| format!("'{n}'"))
                                        .unwrap_or_else(|| "anonymous lambda".into());
                                    return err(
                                    format!("function {fname} called without required argument '{}'", f.name),
                                    pos,
                                );
                                }
                            }
                        }
                    }
                }
                if !ellipsis && used < args.len() {
                    for (k, _, _) in args.iter() {
                        if !formals.iter().any(|f| &f.name == k) {
                            let fname = l
                                .name
                                .as_ref()
                                .map(|n| format!("'{n}'"))
                                .unwrap_or_else(|| "anonymous lambda".into());
                            let mut msg =
                                format!("function {fname} called with unexpected argument '{k}'");
                            let cands: Vec<&str> = formals.iter().map(|f| &*f.name).collect();
                            if let Some(s) = suggest_from(k, &cands) {
                                msg.push_str(&format!("\n\nDid you mean {s}?"));
                            }
                            return err(msg, pos);
                        }
                    }
                }
                if at.is_some() {
                    slots.push(arg);
                }
                env.set_all(slots);
                Ok(env)
            }
        }
    }

    // ---------- operators ----------

    fn eval_bin(
        &self,
        op: BinOp,
        l: &'static Expr,
        r: &'static Expr,
        env: &Rc<Env>,
        pos: Pos,
    ) -> R<Value> {
        match op {
            BinOp::And => {
                if !self.bool_operand(l, env, pos, "&&")? {
                    return Ok(Value::Bool(false));
                }
                Ok(Value::Bool(self.bool_operand(r, env, pos, "&&")?))
            }
            BinOp::Or => {
                if self.bool_operand(l, env, pos, "||")? {
                    return Ok(Value::Bool(true));
                }
                Ok(Value::Bool(self.bool_operand(r, env, pos, "||")?))
            }
            BinOp::Impl => {
                if !self.bool_operand(l, env, pos, "->")? {
                    return Ok(Value::Bool(true));
                }
                Ok(Value::Bool(self.bool_operand(r, env, pos, "->")?))
            }
            BinOp::PipeRight => {
                let a = self.mk_thunk(l, env, false);
                let f = self.eval(r, env)?;
                self.apply(&f, a, pos)
            }
            BinOp::PipeLeft => {
                let a = self.mk_thunk(r, env, false);
                let f = self.eval(l, env)?;
                self.apply(&f, a, pos)
            }
            _ => {
                let a = self.eval_operand(l, env)?;
                let b = self.eval_operand(r, env)?;
                if let (Value::Int(x), Value::Int(y)) = (&a, &b) {
                    if let Some(v) = int_binop(op, *x, *y) {
                        // Integers own nothing: skip the (out-of-line)
                        // drop of two values on the hot path.
                        std::mem::forget(a);
                        std::mem::forget(b);
                        return Ok(v);
                    }
                }
                self.binop(op, a, b, pos)
            }
        }
    }

    fn bool_operand(&self, e: &'static Expr, env: &Rc<Env>, pos: Pos, op: &str) -> R<bool> {
        match self.eval(e, env)? {
            Value::Bool(b) => Ok(b),
            v => err(
                format!(
                    "expected a Boolean but found {}: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            )
            .map_err(|e: EvalError| {
                self.frame(e, pos, || {
                    format!("in the left operand of the {op} operator")
                })
            }),
        }
    }

    pub fn binop(&self, op: BinOp, a: Value, b: Value, pos: Pos) -> R<Value> {
        match op {
            BinOp::Eq => Ok(Value::Bool(self.eq_values(&a, &b, pos, false)?)),
            BinOp::Neq => Ok(Value::Bool(!self.eq_values(&a, &b, pos, false)?)),
            BinOp::Lt => Ok(Value::Bool(self.less_than(&a, &b, pos)?)),
            BinOp::Le => Ok(Value::Bool(!self.less_than(&b, &a, pos)?)),
            BinOp::Gt => Ok(Value::Bool(self.less_than(&b, &a, pos)?)),
            BinOp::Ge => Ok(Value::Bool(!self.less_than(&a, &b, pos)?)),
            BinOp::Concat => {
                let x = self.force_list(&a, pos)?;
                let y = self.force_list(&b, pos)?;
                if x.is_empty() {
                    return Ok(Value::List(y));
                }
                if y.is_empty() {
                    return Ok(Value::List(x));
                }
                let mut v = Vec::with_capacity(x.len() + y.len());
                v.extend(x.iter().cloned());
                v.extend(y.iter().cloned());
                Ok(Value::list(v))
            }
            BinOp::Update => {
                let x = self.force_attrs(&a, pos)?;
                let y = self.force_attrs(&b, pos)?;
                Ok(Value::Attrs(update(&x, &y)))
            }
            BinOp::Add => match (&a, &b) {
                (Value::Str(_), _) | (Value::Path(_), _) => self.concat_strings(a, b, pos),
                // Nix concatenates strings unless the first operand is a
                // path or number: `drv + "/bin"` coerces the set.
                (Value::Attrs(_), Value::Str(_) | Value::Attrs(_)) => {
                    let (s, ctx) = self.coerce_to_string(&a, true, false, pos)?;
                    self.concat_strings(Value::str_ctx(s, ctx), b, pos)
                }
                _ => self.arith(op, a, b, pos),
            },
            _ => self.arith(op, a, b, pos),
        }
    }

    fn concat_strings(&self, a: Value, b: Value, pos: Pos) -> R<Value> {
        match a {
            Value::Path(p) => {
                let mut s = p.as_bytes().to_vec();
                let mut ctx = Context::new();
                self.coerce_into(&b, &mut s, &mut ctx, false, false, pos)?;
                if !ctx.is_empty() {
                    return err(
                        "a string that refers to a store path cannot be appended to a path",
                        pos,
                    );
                }
                Ok(Value::Path(
                    ast::canon_path(&String::from_utf8_lossy(&s)).into(),
                ))
            }
            Value::Str(x) => {
                // One allocation of the final size when `b` is a string
                // (`acc + p` in a loop would otherwise copy `acc` twice).
                let extra = match &b {
                    Value::Str(y) => y.s.len(),
                    _ => 0,
                };
                let mut s = Vec::with_capacity(x.s.len() + extra);
                s.extend_from_slice(&x.s);
                let mut ctx = Context::new();
                merge_ctx(&mut ctx, &x.ctx);
                self.coerce_into(&b, &mut s, &mut ctx, true, false, pos)?;
                Ok(Value::str_ctx(s, ctx))
            }
            _ => unreachable!("checked by caller"),
        }
    }

    pub fn arith(&self, op: BinOp, a: Value, b: Value, pos: Pos) -> R<Value> {
        match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => {
                let (x, y) = (*x, *y);
                let r = match op {
                    BinOp::Add => x.checked_add(y),
                    BinOp::Sub => x.checked_sub(y),
                    BinOp::Mul => x.checked_mul(y),
                    _ => {
                        if y == 0 {
                            return err("division by zero", pos);
                        }
                        x.checked_div(y)
                    }
                };
                let sym = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    _ => "/",
                };
                let verb = match op {
                    BinOp::Add => "adding",
                    BinOp::Sub => "subtracting",
                    BinOp::Mul => "multiplying",
                    _ => "dividing",
                };
                match r {
                    Some(v) => Ok(Value::Int(v)),
                    None => err(format!("integer overflow in {verb} {x} {sym} {y}"), pos),
                }
            }
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                let x = num(&a);
                let y = num(&b);
                Ok(Value::Float(match op {
                    BinOp::Add => x + y,
                    BinOp::Sub => x - y,
                    BinOp::Mul => x * y,
                    _ => {
                        if y == 0.0 {
                            return err("division by zero", pos);
                        }
                        x / y
                    }
                }))
            }
            (Value::Int(_) | Value::Float(_), _) => err(
                format!(
                    "expected an integer but found {}: {}",
                    b.type_name(),
                    self.show_short(&b)
                ),
                pos,
            ),
            _ => {
                if op == BinOp::Add {
                    err(
                        format!("cannot add {} to {}", b.type_name(), a.type_name()),
                        pos,
                    )
                } else {
                    err(
                        format!(
                            "expected an integer but found {}: {}",
                            a.type_name(),
                            self.show_short(&a)
                        ),
                        pos,
                    )
                }
            }
        }
    }

    // ---------- coercion ----------

    /// Coerces a value to a string, appending to `out` and merging context.
    /// `copy` copies paths into the store; `more` is `toString`'s leniency.
    pub fn coerce_into(
        &self,
        v: &Value,
        out: &mut Vec<u8>,
        ctx: &mut Context,
        copy: bool,
        more: bool,
        pos: Pos,
    ) -> R<()> {
        let v = self.force(v)?;
        match &v {
            Value::Str(s) => {
                out.extend_from_slice(&s.s);
                merge_ctx(ctx, &s.ctx);
                Ok(())
            }
            Value::Path(p) => {
                if copy {
                    let sp = crate::builtins::store::copy_path_to_store(self, p, pos)?;
                    out.extend_from_slice(sp.as_bytes());
                    ctx.insert(Rc::from(sp.as_str()));
                } else {
                    out.extend_from_slice(p.as_bytes());
                }
                Ok(())
            }
            Value::Attrs(a) => {
                if let Some(f) = a.get("__toString") {
                    let r = self.apply(f, v.clone(), pos)?;
                    return self.coerce_into(&r, out, ctx, copy, more, pos);
                }
                if let Some(o) = a.get("outPath") {
                    return self.coerce_into(o, out, ctx, copy, more, pos);
                }
                err(
                    format!(
                        "cannot coerce {} to a string: {}",
                        v.type_name(),
                        self.show_short(&v)
                    ),
                    pos,
                )
            }
            Value::Int(i) if more => {
                out.extend_from_slice(i.to_string().as_bytes());
                Ok(())
            }
            Value::Float(f) if more => {
                out.extend_from_slice(crate::print::fmt_float_tostring(*f).as_bytes());
                Ok(())
            }
            Value::Bool(b) if more => {
                if *b {
                    out.push(b'1');
                }
                Ok(())
            }
            Value::Null if more => Ok(()),
            Value::List(l) if more => {
                let n = l.len();
                for (i, x) in l.iter().enumerate() {
                    self.coerce_into(x, out, ctx, copy, more, pos)?;
                    if i + 1 < n {
                        let xv = self.force(x)?;
                        let empty = matches!(&xv, Value::List(e) if e.is_empty());
                        if !empty {
                            out.push(b' ');
                        }
                    }
                }
                Ok(())
            }
            _ => err(
                format!(
                    "cannot coerce {} to a string: {}",
                    v.type_name(),
                    self.show_short(&v)
                ),
                pos,
            ),
        }
    }

    pub fn coerce_to_string(
        &self,
        v: &Value,
        copy: bool,
        more: bool,
        pos: Pos,
    ) -> R<(Vec<u8>, Context)> {
        let mut s = Vec::new();
        let mut c = Context::new();
        self.coerce_into(v, &mut s, &mut c, copy, more, pos)?;
        Ok((s, c))
    }

    /// Coerces to an absolute filesystem path (paths, or strings starting with '/').
    pub fn coerce_to_path(&self, v: &Value, pos: Pos) -> R<String> {
        let v = self.force(v)?;
        if let Value::Path(p) = &v {
            return Ok(p.to_string());
        }
        let (s, _) = self.coerce_to_string(&v, false, false, pos)?;
        let s = String::from_utf8_lossy(&s).into_owned();
        if !s.starts_with('/') {
            return err(
                format!("string '{s}' doesn't represent an absolute path"),
                pos,
            );
        }
        Ok(s)
    }

    // ---------- equality and ordering ----------

    #[allow(clippy::only_used_in_recursion)]
    pub fn eq_values(&self, a: &Value, b: &Value, pos: Pos, nested: bool) -> R<bool> {
        if nested && identical(a, b) {
            return Ok(true);
        }
        let a = self.force(a)?;
        let b = self.force(b)?;
        if nested && identical(&a, &b) {
            return Ok(true);
        }
        Ok(match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => x == y,
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                num(&a) == num(&b)
            }
            (Value::Str(x), Value::Str(y)) => x.s == y.s,
            (Value::Path(x), Value::Path(y)) => x == y,
            (Value::Null, Value::Null) => true,
            (Value::Bool(x), Value::Bool(y)) => x == y,
            (Value::List(x), Value::List(y)) => {
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (p, q) in x.iter().zip(y.iter()) {
                    if !self.eq_values(p, q, pos, true)? {
                        return Ok(false);
                    }
                }
                true
            }
            (Value::Attrs(x), Value::Attrs(y)) => {
                if Rc::ptr_eq(x, y) {
                    return Ok(true);
                }
                if self.is_derivation(x)? && self.is_derivation(y)? {
                    if let (Some(p), Some(q)) = (x.get("outPath"), y.get("outPath")) {
                        return self.eq_values(p, q, pos, true);
                    }
                }
                if x.len() != y.len() {
                    return Ok(false);
                }
                for (p, q) in x.iter().zip(y.iter()) {
                    if p.0 != q.0 || !self.eq_values(&p.1, &q.1, pos, true)? {
                        return Ok(false);
                    }
                }
                true
            }
            _ => false,
        })
    }

    pub fn is_derivation(&self, a: &Attrs) -> R<bool> {
        match a.get("type") {
            Some(t) => match self.force(t)? {
                Value::Str(s) => Ok(s.s == b"derivation"),
                _ => Ok(false),
            },
            None => Ok(false),
        }
    }

    pub fn less_than(&self, a: &Value, b: &Value, pos: Pos) -> R<bool> {
        let a = self.force(a)?;
        let b = self.force(b)?;
        match (&a, &b) {
            (Value::Int(x), Value::Int(y)) => Ok(x < y),
            (Value::Int(_) | Value::Float(_), Value::Int(_) | Value::Float(_)) => {
                Ok(num(&a) < num(&b))
            }
            (Value::Str(x), Value::Str(y)) => Ok(x.s < y.s),
            (Value::Path(x), Value::Path(y)) => Ok(x.as_bytes() < y.as_bytes()),
            (Value::List(x), Value::List(y)) => {
                for (p, q) in x.iter().zip(y.iter()) {
                    if !self.eq_values(p, q, pos, false)? {
                        return self.less_than(p, q, pos);
                    }
                }
                Ok(x.len() < y.len())
            }
            _ => err(
                format!("cannot compare {} with {}", a.type_name(), b.type_name()),
                pos,
            ),
        }
    }

    // ---------- deep forcing ----------

    pub fn deep_force(&self, v: &Value, pos: Pos) -> R<()> {
        let mut seen = rustc_hash::FxHashSet::default();
        self.deep_force_inner(v, pos, &mut seen)
    }

    #[allow(clippy::only_used_in_recursion)]
    fn deep_force_inner(
        &self,
        v: &Value,
        pos: Pos,
        seen: &mut rustc_hash::FxHashSet<usize>,
    ) -> R<()> {
        let v = self.force(v)?;
        match &v {
            Value::Attrs(a) => {
                if !seen.insert(Rc::as_ptr(a) as usize) {
                    return Ok(());
                }
                for (k, x, p) in a.iter() {
                    self.deep_force_inner(x, pos, seen).map_err(|e| {
                        let p = if p.is_none() { pos } else { *p };
                        self.frame(e, p, || format!("while evaluating the attribute '{k}'"))
                    })?;
                }
            }
            Value::List(l) => {
                if !seen.insert(Rc::as_ptr(l) as usize) {
                    return Ok(());
                }
                for (i, x) in l.iter().enumerate() {
                    self.deep_force_inner(x, pos, seen).map_err(|e| {
                        self.frame(e, pos, || {
                            format!("while evaluating list element at index {i}")
                        })
                    })?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The integer `e` stands for when it is an integer literal or a variable
/// whose slot already holds an integer (see [`Env::peek_int`]). `building`
/// is [`Ev::mk_thunk`]'s: slots of a frame being built are not read.
#[inline(always)]
fn peek_int(e: &Expr, env: &Env, building: bool) -> Option<i64> {
    match e {
        Expr::Lit(Value::Int(i)) => Some(*i),
        Expr::Var(d, i) if !building || *d > 0 => env.peek_int(*d, *i),
        _ => None,
    }
}

/// The integer in `v`, dropping `v` out of line only when it is something
/// else (an integer owns nothing, and `drop_in_place::<Value>` is a call).
#[inline(always)]
fn take_int(v: Value) -> Option<i64> {
    if let Value::Int(x) = v {
        std::mem::forget(v);
        Some(x)
    } else {
        drop(v);
        None
    }
}

/// Integer arithmetic and comparison, or `None` when the operator is not one
/// of those or the result would be an error (overflow, division by zero).
#[inline(always)]
fn int_binop(op: BinOp, x: i64, y: i64) -> Option<Value> {
    Some(match op {
        BinOp::Add => Value::Int(x.checked_add(y)?),
        BinOp::Sub => Value::Int(x.checked_sub(y)?),
        BinOp::Mul => Value::Int(x.checked_mul(y)?),
        BinOp::Div if y != 0 => Value::Int(x.checked_div(y)?),
        BinOp::Lt => Value::Bool(x < y),
        BinOp::Le => Value::Bool(x <= y),
        BinOp::Gt => Value::Bool(x > y),
        BinOp::Ge => Value::Bool(x >= y),
        BinOp::Eq => Value::Bool(x == y),
        BinOp::Neq => Value::Bool(x != y),
        _ => return None,
    })
}

pub fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => 0.0,
    }
}

fn identical(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Thunk(x), Value::Thunk(y)) => Rc::ptr_eq(x, y),
        (Value::Lambda(x), Value::Lambda(y)) => Rc::ptr_eq(x, y),
        (Value::PrimOp(x), Value::PrimOp(y)) => Rc::ptr_eq(x, y),
        (Value::PrimOpApp(x), Value::PrimOpApp(y)) => Rc::ptr_eq(x, y),
        (Value::Attrs(x), Value::Attrs(y)) => Rc::ptr_eq(x, y),
        (Value::List(x), Value::List(y)) => Rc::ptr_eq(x, y) && !x.is_empty(),
        _ => false,
    }
}

pub fn update(x: &Rc<Attrs>, y: &Rc<Attrs>) -> Rc<Attrs> {
    Attrs::update(x, y)
}

pub fn show_pos(p: Pos) -> String {
    match p.resolve() {
        Some(r) => format!("{}:{}:{}", r.file.name, r.line, r.col),
        None => "«unknown»".into(),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut cur = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let c = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j] + 1).min(cur[j - 1] + 1).min(prev[j - 1] + c);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn suggest_from(key: &str, cands: &[&str]) -> Option<String> {
    let mut best: Vec<(usize, &str)> = cands
        .iter()
        .map(|c| (levenshtein(key, c), *c))
        .filter(|(d, _)| *d <= 2)
        .collect();
    best.sort();
    let names: Vec<String> = best.iter().take(3).map(|(_, c)| format!("'{c}'")).collect();
    match names.len() {
        0 => None,
        1 => Some(names[0].clone()),
        _ => {
            let last = names.last().cloned().unwrap_or_default();
            Some(format!(
                "one of {} or {}",
                names[..names.len() - 1].join(", "),
                last
            ))
        }
    }
}

fn suggest(key: &str, a: &Attrs) -> Option<String> {
    let cands: Vec<&str> = a.iter().map(|e| &*e.0).collect();
    suggest_from(key, &cands)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::{with_big_stack, OutputMode};

    fn eval(expr: &str) -> Result<String, String> {
        let expr = expr.to_string();
        with_big_stack(move || {
            let ev = Ev::new(Options::default());
            ev.eval_expr_str(&expr, "«string»")
                .and_then(|v| ev.render(&v, OutputMode::Nix, true))
                .map_err(|e| e.msg().to_string())
        })
    }

    fn set(names: &[&str], base: i64) -> Rc<Attrs> {
        Rc::new(Attrs::from_unsorted(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (Sym::from(*n), Value::Int(base + i as i64), Pos::none()))
                .collect(),
        ))
    }

    fn ints(a: &Attrs) -> Vec<(String, i64)> {
        a.iter()
            .map(|(k, v, _)| match v {
                Value::Int(i) => (k.to_string(), *i),
                _ => (k.to_string(), -1),
            })
            .collect()
    }

    #[test]
    fn names_given_as_strings_find_and_make_the_same_attributes() {
        let e = |x: &str| eval(x).unwrap_or_else(|m| panic!("{x}: {m}"));
        assert_eq!(e(r#"builtins.getAttr "b" { a = 1; b = 2; }"#), "2");
        assert_eq!(e(r#"builtins.hasAttr "c" { a = 1; b = 2; }"#), "false");
        assert_eq!(e(r#"builtins.hasAttr ("a" + "b") { ab = 1; }"#), "true");
        assert_eq!(
            e(
                r#"builtins.attrNames (builtins.listToAttrs [ { name = "z"; value = 1; } { name = "y" + "x"; value = 2; } { name = "z"; value = 3; } ])"#
            ),
            r#"[ "yx" "z" ]"#
        );
        assert_eq!(
            e(
                r#"(builtins.listToAttrs [ { name = "z"; value = 1; } { name = "z"; value = 3; } ]).z"#
            ),
            "1"
        );
        assert_eq!(e(r#"let k = "dyn"; in { ${k} = 1; s = 2; }.${k}"#), "1");
        assert_eq!(e(r#"{ a.${"b" + "c"} = 5; }.a ? bc"#), "true");
        let missing = eval(r#"builtins.getAttr "nope" { a = 1; }"#).unwrap_err();
        assert!(missing.contains("attribute 'nope' missing"), "{missing}");
    }

    #[test]
    fn update_with_few_overrides_into_a_big_set_matches_the_merge() {
        let names: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let big = set(&refs, 0);
        // one existing name, one before all, one between, one after all
        let small = set(&["a", "k05", "k10x", "z"], 100);
        let got = ints(&update(&big, &small));
        let mut want: Vec<(String, i64)> =
            ints(&big).into_iter().filter(|(k, _)| k != "k05").collect();
        want.extend(ints(&small));
        want.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn chains_of_updates_on_a_big_set_see_every_layer_in_order() {
        let names: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
        let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let big = set(&refs, 0);
        let one = update(&big, &set(&["k01", "m"], 100));
        let two = update(&one, &set(&["a", "k01", "k02"], 200));
        // a layered set on the right is merged, not layered
        let three = update(&set(&["k03", "zz"], 300), &two);
        let mut want: Vec<(String, i64)> = ints(&big)
            .into_iter()
            .filter(|(k, _)| k != "k01" && k != "k02")
            .collect();
        want.extend([
            ("m".to_string(), 101),
            ("a".to_string(), 200),
            ("k01".to_string(), 201),
            ("k02".to_string(), 202),
        ]);
        want.sort();
        assert_eq!(ints(&two), want);
        assert_eq!(two.len(), 42);
        assert!(matches!(two.get("k01"), Some(Value::Int(201))));
        assert!(matches!(two.get("k05"), Some(Value::Int(5))));
        assert!(two.get("k0").is_none());
        want.push(("zz".to_string(), 301));
        want.sort();
        assert_eq!(ints(&three), want);
        assert_eq!(three.len(), 43);
    }

    #[test]
    fn layered_sets_behave_as_sets_in_the_language() {
        let big: String = (0..40).map(|i| format!("k{i} = {i}; ")).collect();
        let e = format!(
            "let b = {{ {big} }}; l = b // {{ k3 = 30; x = 1; }} // {{ k4 = 40; }}; in \
             [ (builtins.length (builtins.attrNames l)) l.k3 l.k4 l.k5 (l ? x) (l == (b // {{ x = 1; k3 = 30; k4 = 40; }})) \
               (builtins.head (builtins.attrNames l)) (builtins.elemAt (builtins.attrValues l) 23) \
               (builtins.attrNames (builtins.removeAttrs l (builtins.attrNames b))) \
               (builtins.length (builtins.attrNames (builtins.intersectAttrs {{ k3 = 0; x = 0; y = 0; }} l))) ]"
        );
        assert_eq!(
            eval(&e).as_deref(),
            Ok("[ 41 30 40 5 true true \"k0\" 30 [ \"x\" ] 2 ]")
        );
    }

    #[test]
    fn tail_shares_the_list_and_recursion_over_it_sees_every_suffix() {
        assert_eq!(
            eval("let l = [1 2 3 4]; t = builtins.tail l; in [ t (builtins.tail t) (builtins.tail (builtins.tail (builtins.tail t))) (builtins.length t) (builtins.elemAt t 2) (t == [2 3 4]) (builtins.head (builtins.tail t)) ]")
                .as_deref(),
            Ok("[ [ 2 3 4 ] [ 3 4 ] [ ] 3 4 true 3 ]")
        );
        assert_eq!(
            eval("let go = xs: if xs == [] then 0 else builtins.head xs + go (builtins.tail xs); in go (builtins.genList (i: i) 2000)")
                .as_deref(),
            Ok("1999000")
        );
        let e = eval("builtins.tail (builtins.tail [1])").unwrap_err();
        assert!(e.contains("empty list"), "{e}");
    }

    #[test]
    fn speculated_arithmetic_keeps_overflow_and_division_errors_lazy() {
        let max = i64::MAX;
        assert_eq!(
            eval(&format!("let f = x: 1; n = {max}; in f (n + 1)")).as_deref(),
            Ok("1")
        );
        assert_eq!(
            eval("let f = x: 2; n = 0; in f (1 / n)").as_deref(),
            Ok("2")
        );
        let e = eval(&format!("let f = x: x; n = {max}; in f (n + 1)")).unwrap_err();
        assert!(e.contains("integer overflow"), "{e}");
    }

    #[test]
    fn speculated_selection_of_a_missing_attribute_stays_lazy() {
        assert_eq!(
            eval("let f = x: 3; s = { a = 1; }; in builtins.seq s (f s.b)").as_deref(),
            Ok("3")
        );
        assert_eq!(
            eval("let s = { a = { b = 5; }; }; in builtins.seq s.a [ s.a.b (s.a.c or 6) ]")
                .as_deref(),
            Ok("[ 5 6 ]")
        );
    }

    #[test]
    fn speculated_calls_keep_errors_lazy_and_report_them_when_forced() {
        // genList/map elements of a pure lambda are computed eagerly only
        // when they cannot fail
        assert_eq!(
            eval("builtins.length (builtins.genList (i: 10 / (i - i)) 3)").as_deref(),
            Ok("3")
        );
        assert_eq!(
            eval("builtins.genList (i: if i < 2 then i * 3 else 0 - i) 4").as_deref(),
            Ok("[ 0 3 -2 -3 ]")
        );
        let e = eval("builtins.elemAt (builtins.genList (i: 10 / i) 3) 0").unwrap_err();
        assert!(e.contains("division by zero"), "{e}");
        assert_eq!(
            eval("builtins.elemAt (builtins.genList (i: 10 / i) 3) 2").as_deref(),
            Ok("5")
        );
        assert_eq!(
            eval("[ (builtins.length (map (x: x.a) [ {} { a = 1; } ])) (builtins.elemAt (map (x: x.a) [ {} { a = 1; } ]) 1) ]")
                .as_deref(),
            Ok("[ 2 1 ]")
        );
        let e = eval("builtins.head (map (x: x.a) [ {} ])").unwrap_err();
        assert!(e.contains("attribute 'a' missing"), "{e}");
        // curried callbacks (foldl') without frames, and their errors
        assert_eq!(
            eval("builtins.foldl' (a: b: a + b) 0 (builtins.genList (i: i) 100)").as_deref(),
            Ok("4950")
        );
        let e = eval("builtins.foldl' (a: b: a * b) 9223372036854775807 [ 2 ]").unwrap_err();
        assert!(e.contains("integer overflow"), "{e}");
        let e = eval("builtins.foldl' (a: b: a + b) 0 [ 1 \"x\" ]").unwrap_err();
        assert!(
            e.contains("cannot add") || e.contains("expected an integer"),
            "{e}"
        );
        // a selected attribute that is still a thunk is evaluated the
        // ordinary way
        assert_eq!(
            eval("let s = { a = 1 + 1; }; f = x: s.a; in [ (f 0) (map (x: s.a) [ 1 ]) ]")
                .as_deref(),
            Ok("[ 2 [ 2 ] ]")
        );
    }

    #[test]
    fn string_fast_paths_keep_values_contexts_and_error_order() {
        assert_eq!(
            eval("let s = \"a${toString 42}\"; in [ s (toString s) (builtins.stringLength s) (s + \"-\" + toString 7) (builtins.concatStringsSep \", \" [ s \"b\" ]) ]")
                .as_deref(),
            Ok("[ \"a42\" \"a42\" 3 \"a42-7\" \"a42, b\" ]")
        );
        assert_eq!(
            eval("let s = toString (builtins.toFile \"x\" \"y\"); in builtins.hasContext (toString s)")
                .as_deref(),
            Ok("true")
        );
        // the first element that is not a string fails before later ones
        // are forced
        let e = eval("builtins.concatStringsSep \",\" [ \"a\" 1 (throw \"boom\") ]").unwrap_err();
        assert!(e.contains("cannot coerce an integer"), "{e}");
        let e = eval("builtins.concatStringsSep \",\" [ \"a\" (throw \"boom\") 1 ]").unwrap_err();
        assert!(e.contains("boom"), "{e}");
    }

    #[test]
    fn sort_by_less_than_orders_integers_and_mixed_numbers() {
        assert_eq!(
            eval("builtins.sort builtins.lessThan [ 3 1 2 1 (0 - 5) ]").as_deref(),
            Ok("[ -5 1 1 2 3 ]")
        );
        assert_eq!(
            eval("builtins.sort builtins.lessThan [ 2 1.5 1 ]").as_deref(),
            Ok("[ 1 1.5 2 ]")
        );
        assert_eq!(
            eval("builtins.sort builtins.lessThan [ \"b\" \"a\" ]").as_deref(),
            Ok("[ \"a\" \"b\" ]")
        );
    }

    #[test]
    fn integers_read_in_place_see_overrides_forced_thunks_and_fall_back_on_other_values() {
        // a rec set's slots are not read while it is being built, so an
        // override replaces `a` before `b` sees it
        assert_eq!(
            eval("(rec { __overrides = { a = 5; }; a = 1; b = a + 1; }).b").as_deref(),
            Ok("6")
        );
        // a variable bound to an already-forced thunk of an integer
        assert_eq!(
            eval("let a = 1 + 1; f = x: x * 10; in builtins.seq a [ (a - 1) (f (a + 1)) (if a < 3 then \"y\" else \"n\") ]")
                .as_deref(),
            Ok("[ 1 30 \"y\" ]")
        );
        // strings, floats and unforced thunks take the ordinary path
        assert_eq!(
            eval("let s = \"a\"; x = 1.5; t = 2 * 3; f = y: y; in [ (s + \"b\") (f (s + \"c\")) (if x < 2 then x - 1 else 0) (f (t - 1)) ]")
                .as_deref(),
            Ok("[ \"ab\" \"ac\" 0.5 5 ]")
        );
        let e = eval("let f = x: if x then 1 else 2; in f 3").unwrap_err();
        assert!(e.contains("expected a Boolean but found an integer"), "{e}");
    }

    #[test]
    fn tail_calls_still_count_towards_the_call_depth_limit() {
        let e = eval("let f = x: f x; in f 1").unwrap_err();
        assert!(e.contains("max-call-depth exceeded"), "{e}");
        assert_eq!(
            eval("let f = n: if n == 0 then 7 else f (n - 1); in f 150000").as_deref(),
            Ok("7")
        );
    }

    #[test]
    fn forced_variables_keep_their_value_after_the_slot_is_short_circuited() {
        assert_eq!(
            eval("let fib = n: if n < 2 then n else fib (n - 1) + fib (n - 2); in fib 15")
                .as_deref(),
            Ok("610")
        );
    }
}
