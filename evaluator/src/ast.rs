//! b3's own compact AST, lowered once per file from rnix's CST. Variables are
//! resolved to (depth, slot) pairs here; only names under a `with` stay
//! dynamic. Nested attribute paths are merged the way Nix's parser merges them.

use rnix::ast::{self, AstToken, HasEntry, InterpolPart};
use rowan::ast::AstNode;
use rustc_hash::FxHashMap;

use crate::error::{ErrorKind, EvalError};
use crate::pos::Pos;
use crate::value::{Sym, Value};

#[derive(Debug)]
pub enum Expr {
    Lit(Value),
    Var(u32, u32),
    WithVar {
        name: Sym,
        withs: Vec<u32>,
        pos: Pos,
    },
    /// String interpolation: every part coerced to a string and concatenated.
    Interp(Vec<Expr>, Pos),
    /// Path with interpolation: parts concatenated, then canonicalised.
    PathInterp(Vec<Expr>, Pos),
    Attrs(Box<AttrsExpr>),
    List(Vec<Expr>),
    Select {
        e: Box<Expr>,
        path: Vec<AttrName>,
        default: Option<Box<Expr>>,
        pos: Pos,
    },
    HasAttr {
        e: Box<Expr>,
        path: Vec<AttrName>,
    },
    App {
        f: Box<Expr>,
        args: Vec<Expr>,
        pos: Pos,
    },
    Lambda(Box<Lambda>),
    Let(Box<AttrsExpr>, Box<Expr>),
    With {
        ns: Box<Expr>,
        body: Box<Expr>,
    },
    If {
        c: Box<Expr>,
        t: Box<Expr>,
        e: Box<Expr>,
        pos: Pos,
    },
    Assert {
        c: Box<Expr>,
        body: Box<Expr>,
        pos: Pos,
        text: String,
    },
    Not(Box<Expr>, Pos),
    Neg(Box<Expr>, Pos),
    Bin(BinOp, Box<Expr>, Box<Expr>, Pos),
    CurPos(Pos),
    /// A home path `~/x`, resolved at evaluation time.
    HomePath(String, Pos),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Concat,
    Update,
    And,
    Or,
    Impl,
    Eq,
    Neq,
    Lt,
    Le,
    Gt,
    Ge,
    PipeRight,
    PipeLeft,
}

#[derive(Debug)]
pub enum AttrName {
    Static(Sym),
    Dynamic(Expr),
}

#[derive(Debug)]
pub struct AttrsExpr {
    /// Whether values live in a new frame (rec sets and let).
    pub frame: bool,
    pub rec: bool,
    /// Sorted by name (see `Lowerer::lower_builder`); a frame's slots follow
    /// this order.
    pub statics: Vec<(Sym, Expr, Pos)>,
    pub dynamics: Vec<(Expr, Expr, Pos)>,
}

#[derive(Debug)]
pub struct Lambda {
    pub param: Param,
    pub body: Expr,
    pub pos: Pos,
    pub name: Option<Sym>,
    /// The parameter is a plain name and the body has only the forms
    /// [`Ev::pure`](crate::eval::Ev::pure) can evaluate speculatively, so
    /// that a call with an already-forced argument is worth trying without
    /// a frame.
    pub pure: bool,
}

/// Whether `e` is made only of the forms [`Ev::pure`](crate::eval::Ev::pure)
/// evaluates: literals, variables, integer arithmetic and comparisons,
/// `!`, `if` and static attribute selection.
pub fn pure_shape(e: &Expr) -> bool {
    match e {
        Expr::Lit(_) | Expr::Var(..) => true,
        Expr::Bin(op, l, r, _) => pure_op(*op) && pure_shape(l) && pure_shape(r),
        Expr::If { c, t, e, .. } => pure_shape(c) && pure_shape(t) && pure_shape(e),
        Expr::Not(x, _) => pure_shape(x),
        Expr::Select { e, path, .. } => {
            path.iter().all(|n| matches!(n, AttrName::Static(_))) && pure_shape(e)
        }
        _ => false,
    }
}

/// The operators [`Ev::pure`](crate::eval::Ev::pure) evaluates (on integers).
pub fn pure_op(op: BinOp) -> bool {
    matches!(
        op,
        BinOp::Add
            | BinOp::Sub
            | BinOp::Mul
            | BinOp::Div
            | BinOp::Lt
            | BinOp::Le
            | BinOp::Gt
            | BinOp::Ge
            | BinOp::Eq
            | BinOp::Neq
    )
}

#[derive(Debug)]
pub enum Param {
    Ident(Sym),
    Pattern {
        formals: Vec<Formal>,
        ellipsis: bool,
        at: Option<Sym>,
    },
}

#[derive(Debug)]
pub struct Formal {
    pub name: Sym,
    pub default: Option<Expr>,
    pub pos: Pos,
}

enum Scope {
    Names(FxHashMap<Sym, u32>),
    With,
}

pub struct Lowerer<'a> {
    file: u32,
    base_dir: &'a str,
    home: Option<String>,
    scopes: Vec<Scope>,
    pub pipe_ops: bool,
    /// (absolute/home, short, url) path-literal lints.
    pub lints: [crate::eval::Lint; 3],
    /// Set when the source had invalid UTF-8 (escaped as U+F700+byte).
    pub raw_bytes: bool,
}

fn perr(msg: impl Into<String>, pos: Pos) -> EvalError {
    EvalError::new(ErrorKind::Parse, msg, pos)
}

/// Canonicalises an absolute path textually (no symlink resolution).
pub fn canon_path(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    if out.is_empty() {
        "/".to_string()
    } else {
        let mut s = String::new();
        for c in out {
            s.push('/');
            s.push_str(c);
        }
        s
    }
}

pub(crate) enum BEntry {
    Value(ast::Expr),
    Nested(Builder),
    Inherit,
    InheritFrom(usize),
}

pub(crate) struct Builder {
    pub(crate) rec: bool,
    pub(crate) statics: Vec<(Sym, BEntry, Pos)>,
    index: FxHashMap<Sym, usize>,
    pub(crate) dynamics: Vec<(ast::Attr, BEntry, Pos)>,
    pub(crate) froms: Vec<ast::Expr>,
}

impl Builder {
    pub(crate) fn new(rec: bool) -> Self {
        Builder {
            rec,
            statics: Vec::new(),
            index: FxHashMap::default(),
            dynamics: Vec::new(),
            froms: Vec::new(),
        }
    }
}

impl<'a> Lowerer<'a> {
    pub fn new(file: u32, base_dir: &'a str, globals: &[Sym], extra: Option<&[Sym]>) -> Self {
        let mut scopes = Vec::new();
        let mut g = FxHashMap::default();
        for (i, n) in globals.iter().enumerate() {
            g.insert(n.clone(), i as u32);
        }
        scopes.push(Scope::Names(g));
        if let Some(extra) = extra {
            let mut m = FxHashMap::default();
            for (i, n) in extra.iter().enumerate() {
                m.insert(n.clone(), i as u32);
            }
            scopes.push(Scope::Names(m));
        }
        Lowerer {
            file,
            base_dir,
            home: std::env::var("HOME").ok(),
            scopes,
            pipe_ops: false,
            lints: [crate::eval::Lint::Off; 3],
            raw_bytes: false,
        }
    }

    fn lint(&self, which: usize, msg: String, pos: Pos) -> Result<(), EvalError> {
        match self.lints[which] {
            crate::eval::Lint::Off => Ok(()),
            crate::eval::Lint::Warn => {
                eprintln!("warning: {msg}");
                Ok(())
            }
            crate::eval::Lint::Fatal => Err(EvalError::other(msg, pos)),
        }
    }

    fn lit_str(&self, s: &str, pos: Pos) -> Result<Value, EvalError> {
        let bytes = if self.raw_bytes {
            unescape_raw(s)
        } else {
            s.as_bytes().to_vec()
        };
        if bytes.contains(&0) {
            let shown = String::from_utf8_lossy(&bytes).replace('\0', "\u{2400}");
            return Err(EvalError::other(
                format!("input string '{shown}' cannot be represented as Nix string because it contains null bytes"),
                pos,
            ));
        }
        Ok(Value::str(bytes))
    }

    fn pos(&self, n: &rnix::SyntaxNode) -> Pos {
        Pos::new(self.file, u32::from(n.text_range().start()))
    }
    fn tpos(&self, t: &rnix::SyntaxToken) -> Pos {
        Pos::new(self.file, u32::from(t.text_range().start()))
    }

    fn resolve(&self, name: &str, skip: usize, pos: Pos) -> Result<Expr, EvalError> {
        let mut withs = Vec::new();
        let n = self.scopes.len();
        for (depth, s) in self.scopes[..n - skip].iter().rev().enumerate() {
            let depth = (depth + skip) as u32;
            match s {
                Scope::Names(m) => {
                    if let Some(i) = m.get(name) {
                        return Ok(Expr::Var(depth, *i));
                    }
                }
                Scope::With => withs.push(depth),
            }
        }
        if withs.is_empty() {
            return Err(EvalError::other(
                format!("undefined variable '{name}'"),
                pos,
            ));
        }
        Ok(Expr::WithVar {
            name: name.into(),
            withs,
            pos,
        })
    }

    pub fn lower_root(&mut self, root: &ast::Root) -> Result<Expr, EvalError> {
        match root.expr() {
            Some(e) => self.lower(&e),
            None => Err(perr(
                "syntax error, unexpected end of file",
                Pos::new(self.file, 0),
            )),
        }
    }

    fn sub(&mut self, e: Option<ast::Expr>, parent: &rnix::SyntaxNode) -> Result<Expr, EvalError> {
        match e {
            Some(e) => self.lower(&e),
            None => Err(perr("syntax error", self.pos(parent))),
        }
    }

    pub fn lower(&mut self, e: &ast::Expr) -> Result<Expr, EvalError> {
        let pos = self.pos(e.syntax());
        Ok(match e {
            ast::Expr::Apply(a) => {
                let mut args = vec![self.sub(a.argument(), a.syntax())?];
                let mut f = a.lambda();
                let mut fpos = pos;
                while let Some(ast::Expr::Apply(inner)) = &f {
                    args.push(self.sub(inner.argument(), inner.syntax())?);
                    fpos = self.pos(inner.syntax());
                    f = inner.lambda();
                }
                args.reverse();
                let _ = fpos;
                Expr::App {
                    f: Box::new(self.sub(f, a.syntax())?),
                    args,
                    pos,
                }
            }
            ast::Expr::Assert(a) => {
                let text = a
                    .condition()
                    .map(|c| c.syntax().to_string())
                    .unwrap_or_default();
                Expr::Assert {
                    c: Box::new(self.sub(a.condition(), a.syntax())?),
                    body: Box::new(self.sub(a.body(), a.syntax())?),
                    pos,
                    text,
                }
            }
            ast::Expr::Error(_) => return Err(perr("syntax error", pos)),
            ast::Expr::IfElse(i) => Expr::If {
                c: Box::new(self.sub(i.condition(), i.syntax())?),
                t: Box::new(self.sub(i.body(), i.syntax())?),
                e: Box::new(self.sub(i.else_body(), i.syntax())?),
                pos,
            },
            ast::Expr::Select(s) => {
                let path = self.lower_attrpath(s.attrpath(), s.syntax())?;
                let default = match s.default_expr() {
                    Some(d) => Some(Box::new(self.lower(&d)?)),
                    None => None,
                };
                let pos = s.attrpath().map(|p| self.pos(p.syntax())).unwrap_or(pos);
                Expr::Select {
                    e: Box::new(self.sub(s.expr(), s.syntax())?),
                    path,
                    default,
                    pos,
                }
            }
            ast::Expr::Str(s) => self.lower_str(s)?,
            ast::Expr::PathAbs(p) => {
                let t = p.syntax().text().to_string();
                self.lint(0, format!("absolute path literals are not portable. Consider replacing path literal '{t}' by a string, relative path, or parameter (lint-absolute-path-literals)"), pos)?;
                self.lower_path(p.parts(), pos, false)?
            }
            ast::Expr::PathRel(p) => {
                let t = p.syntax().text().to_string();
                if !t.starts_with("./") && !t.starts_with("../") {
                    self.lint(1, format!("relative path literal '{t}' should be prefixed with '.' for clarity: './{t}' (lint-short-path-literals)"), pos)?;
                }
                self.lower_path(p.parts(), pos, false)?
            }
            ast::Expr::PathHome(p) => {
                let t = p.syntax().text().to_string();
                self.lint(0, format!("home path literals are not portable. Consider replacing path literal '{t}' by a string, relative path, or parameter (lint-absolute-path-literals)"), pos)?;
                self.lower_path(p.parts(), pos, true)?
            }
            ast::Expr::PathSearch(p) => {
                let text = p
                    .content()
                    .map(|c| c.text().to_string())
                    .unwrap_or_default();
                let inner = text
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string();
                let ff = self.resolve("__findFile", 0, pos)?;
                let np = self.resolve("__nixPath", 0, pos)?;
                Expr::App {
                    f: Box::new(ff),
                    args: vec![np, Expr::Lit(Value::str(inner))],
                    pos,
                }
            }
            ast::Expr::Literal(l) => match l.kind() {
                ast::LiteralKind::Integer(i) => match i.value() {
                    Ok(v) => Expr::Lit(Value::Int(v)),
                    Err(_) => {
                        return Err(perr(
                            format!("invalid integer '{}'", i.syntax().text()),
                            pos,
                        ))
                    }
                },
                ast::LiteralKind::Float(f) => match f.value() {
                    Ok(v) => Expr::Lit(Value::Float(v)),
                    Err(_) => {
                        return Err(perr(format!("invalid float '{}'", f.syntax().text()), pos))
                    }
                },
                ast::LiteralKind::Uri(u) => {
                    let t = u.syntax().text();
                    self.lint(2, format!("URL literals are disallowed. Consider using a string literal \"{t}\" instead (lint-url-literals)"), pos)?;
                    Expr::Lit(Value::str(t))
                }
            },
            ast::Expr::Lambda(l) => Expr::Lambda(Box::new(self.lower_lambda(l)?)),
            ast::Expr::LegacyLet(l) => {
                let mut b = Builder::new(true);
                self.ingest(&mut b, l)?;
                let attrs = self.lower_builder(b, true, None)?;
                Expr::Select {
                    e: Box::new(Expr::Attrs(Box::new(attrs))),
                    path: vec![AttrName::Static("body".into())],
                    default: None,
                    pos,
                }
            }
            ast::Expr::LetIn(l) => {
                let mut b = Builder::new(true);
                self.ingest(&mut b, l)?;
                if !b.dynamics.is_empty() {
                    return Err(perr("dynamic attributes not allowed in let", pos));
                }
                let mut body = None;
                let attrs = self.lower_builder(b, true, Some((&mut body, l.body(), l.syntax())))?;
                Expr::Let(
                    Box::new(attrs),
                    Box::new(body.ok_or_else(|| perr("syntax error", pos))?),
                )
            }
            ast::Expr::List(l) => {
                let mut items = Vec::new();
                for i in l.items() {
                    items.push(self.lower(&i)?);
                }
                Expr::List(items)
            }
            ast::Expr::BinOp(b) => {
                let op = match b.operator() {
                    Some(o) => o,
                    None => return Err(perr("syntax error", pos)),
                };
                use rnix::ast::BinOpKind as K;
                let op = match op {
                    K::Concat => BinOp::Concat,
                    K::Update => BinOp::Update,
                    K::Add => BinOp::Add,
                    K::Sub => BinOp::Sub,
                    K::Mul => BinOp::Mul,
                    K::Div => BinOp::Div,
                    K::And => BinOp::And,
                    K::Equal => BinOp::Eq,
                    K::Implication => BinOp::Impl,
                    K::Less => BinOp::Lt,
                    K::LessOrEq => BinOp::Le,
                    K::More => BinOp::Gt,
                    K::MoreOrEq => BinOp::Ge,
                    K::NotEqual => BinOp::Neq,
                    K::Or => BinOp::Or,
                    K::PipeRight | K::PipeLeft if !self.pipe_ops => {
                        return Err(perr(
                            "experimental Nix feature 'pipe-operators' is disabled",
                            pos,
                        ))
                    }
                    K::PipeRight => BinOp::PipeRight,
                    K::PipeLeft => BinOp::PipeLeft,
                };
                let opos = b
                    .syntax()
                    .children_with_tokens()
                    .filter_map(|t| t.into_token())
                    .find(|t| rnix::ast::BinOpKind::from_kind(t.kind()).is_some())
                    .map(|t| self.tpos(&t))
                    .unwrap_or(pos);
                Expr::Bin(
                    op,
                    Box::new(self.sub(b.lhs(), b.syntax())?),
                    Box::new(self.sub(b.rhs(), b.syntax())?),
                    opos,
                )
            }
            ast::Expr::Paren(p) => self.sub(p.expr(), p.syntax())?,
            ast::Expr::Root(r) => self.sub(r.expr(), r.syntax())?,
            ast::Expr::AttrSet(a) => {
                let mut b = Builder::new(a.rec_token().is_some());
                self.ingest(&mut b, a)?;
                Expr::Attrs(Box::new(self.lower_builder(b, false, None)?))
            }
            ast::Expr::UnaryOp(u) => {
                let inner = Box::new(self.sub(u.expr(), u.syntax())?);
                match u.operator() {
                    Some(ast::UnaryOpKind::Invert) => Expr::Not(inner, pos),
                    Some(ast::UnaryOpKind::Negate) => Expr::Neg(inner, pos),
                    None => return Err(perr("syntax error", pos)),
                }
            }
            ast::Expr::Ident(i) => {
                let name = i.syntax().text().to_string();
                self.resolve(&name, 0, pos)?
            }
            ast::Expr::With(w) => {
                let ns = self.sub(w.namespace(), w.syntax())?;
                self.scopes.push(Scope::With);
                let body = self.sub(w.body(), w.syntax());
                self.scopes.pop();
                Expr::With {
                    ns: Box::new(ns),
                    body: Box::new(body?),
                }
            }
            ast::Expr::HasAttr(h) => Expr::HasAttr {
                e: Box::new(self.sub(h.expr(), h.syntax())?),
                path: self.lower_attrpath(h.attrpath(), h.syntax())?,
            },
            ast::Expr::CurPos(_) => Expr::CurPos(pos),
        })
    }

    fn lower_attrpath(
        &mut self,
        p: Option<ast::Attrpath>,
        parent: &rnix::SyntaxNode,
    ) -> Result<Vec<AttrName>, EvalError> {
        let p = p.ok_or_else(|| perr("syntax error", self.pos(parent)))?;
        let mut out = Vec::new();
        for a in p.attrs() {
            out.push(match self.static_name(&a) {
                Some(n) => AttrName::Static(n.into()),
                None => AttrName::Dynamic(self.lower_dyn_key(&a)?),
            });
        }
        Ok(out)
    }

    fn lower_dyn_key(&mut self, a: &ast::Attr) -> Result<Expr, EvalError> {
        match a {
            ast::Attr::Dynamic(d) => self.sub(d.expr(), d.syntax()),
            ast::Attr::Str(s) => self.lower_str(s),
            ast::Attr::Ident(i) => Ok(Expr::Lit(Value::str(i.syntax().text().to_string()))),
        }
    }

    pub(crate) fn static_name(&self, a: &ast::Attr) -> Option<String> {
        fn str_static(s: &ast::Str) -> Option<String> {
            let mut out = String::new();
            for p in s.normalized_parts() {
                match p {
                    InterpolPart::Literal(l) => out.push_str(&l),
                    InterpolPart::Interpolation(_) => return None,
                }
            }
            Some(out)
        }
        match a {
            ast::Attr::Ident(i) => Some(i.syntax().text().to_string()),
            ast::Attr::Str(s) => str_static(s),
            ast::Attr::Dynamic(d) => match d.expr() {
                Some(ast::Expr::Str(s)) => str_static(&s),
                _ => None,
            },
        }
    }

    fn lower_str(&mut self, s: &ast::Str) -> Result<Expr, EvalError> {
        let pos = self.pos(s.syntax());
        let parts = s.normalized_parts();
        let mut out = Vec::new();
        let mut all_lit = true;
        for p in parts {
            match p {
                InterpolPart::Literal(l) => out.push(Expr::Lit(self.lit_str(&l, pos)?)),
                InterpolPart::Interpolation(i) => {
                    all_lit = false;
                    out.push(self.sub(i.expr(), i.syntax())?);
                }
            }
        }
        if all_lit {
            let mut s = Vec::new();
            for p in &out {
                if let Expr::Lit(Value::Str(x)) = p {
                    s.extend_from_slice(&x.s);
                }
            }
            return Ok(Expr::Lit(Value::str(s)));
        }
        Ok(Expr::Interp(out, pos))
    }

    fn lower_path(
        &mut self,
        parts: Vec<InterpolPart<ast::PathContent>>,
        pos: Pos,
        home: bool,
    ) -> Result<Expr, EvalError> {
        let mut out = Vec::new();
        let mut first = true;
        let n = parts.len();
        for p in parts {
            match p {
                InterpolPart::Literal(l) => {
                    let mut t = l.text().to_string();
                    if first {
                        if home {
                            let rest = t.strip_prefix('~').unwrap_or(&t).to_string();
                            if n == 1 {
                                return Ok(Expr::HomePath(rest, pos));
                            }
                            let h = self.home.clone().unwrap_or_default();
                            t = format!("{h}{rest}");
                        } else if !t.starts_with('/') {
                            t = format!("{}/{}", self.base_dir, t);
                        }
                        let trailing = t.ends_with('/');
                        t = canon_path(&t);
                        if trailing && n > 1 && t != "/" {
                            t.push('/');
                        }
                        if n == 1 {
                            return Ok(Expr::Lit(Value::Path(t.into())));
                        }
                    }
                    out.push(Expr::Lit(Value::str(t)));
                }
                InterpolPart::Interpolation(i) => out.push(self.sub(i.expr(), i.syntax())?),
            }
            first = false;
        }
        Ok(Expr::PathInterp(out, pos))
    }

    fn lower_lambda(&mut self, l: &ast::Lambda) -> Result<Lambda, EvalError> {
        let pos = self.pos(l.syntax());
        let param = l.param().ok_or_else(|| perr("syntax error", pos))?;
        match param {
            ast::Param::IdentParam(i) => {
                let name: Sym = i
                    .ident()
                    .map(|i| i.syntax().text().to_string())
                    .unwrap_or_default()
                    .into();
                let mut m = FxHashMap::default();
                m.insert(name.clone(), 0);
                self.scopes.push(Scope::Names(m));
                let body = self.sub(l.body(), l.syntax());
                self.scopes.pop();
                let body = body?;
                Ok(Lambda {
                    param: Param::Ident(name),
                    pure: pure_shape(&body),
                    body,
                    pos,
                    name: None,
                })
            }
            ast::Param::Pattern(p) => {
                let mut names: Vec<(Sym, Option<ast::Expr>, Pos)> = Vec::new();
                let mut m = FxHashMap::default();
                for e in p.pat_entries() {
                    let id = e.ident().ok_or_else(|| perr("syntax error", pos))?;
                    let name: Sym = id.syntax().text().to_string().into();
                    let epos = self.pos(id.syntax());
                    if m.contains_key(&name) {
                        return Err(perr(
                            format!("duplicate formal function argument '{name}'"),
                            epos,
                        ));
                    }
                    m.insert(name.clone(), names.len() as u32);
                    names.push((name, e.default(), epos));
                }
                let at: Option<Sym> = p
                    .pat_bind()
                    .and_then(|b| b.ident())
                    .map(|i| i.syntax().text().to_string().into());
                if let Some(a) = &at {
                    if m.contains_key(a) {
                        return Err(perr(
                            format!("duplicate formal function argument '{a}'"),
                            pos,
                        ));
                    }
                    m.insert(a.clone(), names.len() as u32);
                }
                self.scopes.push(Scope::Names(m));
                let res = (|| {
                    let mut formals = Vec::new();
                    for (name, d, fpos) in names {
                        let default = match d {
                            Some(d) => Some(self.lower(&d)?),
                            None => None,
                        };
                        formals.push(Formal {
                            name,
                            default,
                            pos: fpos,
                        });
                    }
                    let body = self.sub(l.body(), l.syntax())?;
                    Ok((formals, body))
                })();
                self.scopes.pop();
                let (formals, body) = res?;
                Ok(Lambda {
                    param: Param::Pattern {
                        formals,
                        ellipsis: p.ellipsis_token().is_some(),
                        at,
                    },
                    body,
                    pos,
                    name: None,
                    pure: false,
                })
            }
        }
    }

    pub(crate) fn ingest(
        &mut self,
        b: &mut Builder,
        node: &impl HasEntry,
    ) -> Result<(), EvalError> {
        for entry in node.entries() {
            match entry {
                ast::Entry::AttrpathValue(av) => {
                    let path: Vec<ast::Attr> = av
                        .attrpath()
                        .ok_or_else(|| perr("syntax error", self.pos(av.syntax())))?
                        .attrs()
                        .collect();
                    let value = av
                        .value()
                        .ok_or_else(|| perr("syntax error", self.pos(av.syntax())))?;
                    self.add(b, &path, value)?;
                }
                ast::Entry::Inherit(inh) => {
                    let from = match inh.from() {
                        Some(f) => {
                            let e = f
                                .expr()
                                .ok_or_else(|| perr("syntax error", self.pos(f.syntax())))?;
                            b.froms.push(e);
                            Some(b.froms.len() - 1)
                        }
                        None => None,
                    };
                    for a in inh.attrs() {
                        let apos = self.pos(a.syntax());
                        let name: Sym = match self.static_name(&a) {
                            Some(n) => n.into(),
                            None => {
                                return Err(perr("dynamic attributes not allowed in inherit", apos))
                            }
                        };
                        if b.index.contains_key(&name) {
                            return Err(perr(format!("attribute '{name}' already defined"), apos));
                        }
                        b.index.insert(name.clone(), b.statics.len());
                        let ent = match from {
                            Some(i) => BEntry::InheritFrom(i),
                            None => BEntry::Inherit,
                        };
                        b.statics.push((name, ent, apos));
                    }
                }
            }
        }
        Ok(())
    }

    fn add(
        &mut self,
        b: &mut Builder,
        path: &[ast::Attr],
        value: ast::Expr,
    ) -> Result<(), EvalError> {
        let first = &path[0];
        let apos = self.pos(first.syntax());
        match self.static_name(first) {
            Some(name) => {
                let name: Sym = name.into();
                if let Some(&i) = b.index.get(&name) {
                    // Merge into an existing nested set or attrset literal.
                    let existing = &mut b.statics[i].1;
                    if let BEntry::Value(ast::Expr::AttrSet(lit)) = existing {
                        let lit = lit.clone();
                        let mut nb = Builder::new(lit.rec_token().is_some());
                        self.ingest(&mut nb, &lit)?;
                        *existing = BEntry::Nested(nb);
                    }
                    let existing = &mut b.statics[i].1;
                    if let BEntry::Nested(nb) = existing {
                        if path.len() > 1 {
                            return self.add(nb, &path[1..], value);
                        }
                        if let ast::Expr::AttrSet(lit) = &value {
                            return self.ingest(nb, lit);
                        }
                    }
                    return Err(perr(format!("attribute '{name}' already defined"), apos));
                }
                let ent = if path.len() > 1 {
                    let mut nb = Builder::new(false);
                    self.add(&mut nb, &path[1..], value)?;
                    BEntry::Nested(nb)
                } else {
                    BEntry::Value(value)
                };
                b.index.insert(name.clone(), b.statics.len());
                b.statics.push((name, ent, apos));
            }
            None => {
                let ent = if path.len() > 1 {
                    let mut nb = Builder::new(false);
                    self.add(&mut nb, &path[1..], value)?;
                    BEntry::Nested(nb)
                } else {
                    BEntry::Value(value)
                };
                b.dynamics.push((first.clone(), ent, apos));
            }
        }
        Ok(())
    }

    fn lower_entry(
        &mut self,
        e: BEntry,
        name: &Sym,
        pos: Pos,
        skip: usize,
        froms: &[ast::Expr],
    ) -> Result<Expr, EvalError> {
        Ok(match e {
            BEntry::Value(v) => {
                let mut x = self.lower(&v)?;
                if let Expr::Lambda(l) = &mut x {
                    l.name = Some(name.clone());
                }
                x
            }
            BEntry::Nested(nb) => Expr::Attrs(Box::new(self.lower_builder(nb, false, None)?)),
            BEntry::Inherit => self.resolve(name, skip, pos)?,
            // Nix 2.8 evaluates the source of `inherit (e) a b` once per
            // inherited name (`a = e.a; b = e.b;`), so a source that is a
            // call yields distinct values; nix-env -qa output depends on it.
            BEntry::InheritFrom(i) => Expr::Select {
                e: Box::new(self.lower(&froms[i])?),
                path: vec![AttrName::Static(name.clone())],
                default: None,
                pos,
            },
        })
    }

    #[allow(clippy::type_complexity)]
    fn lower_builder(
        &mut self,
        b: Builder,
        is_let: bool,
        body: Option<(&mut Option<Expr>, Option<ast::Expr>, &rnix::SyntaxNode)>,
    ) -> Result<AttrsExpr, EvalError> {
        let rec = b.rec || is_let;
        let frame = rec;
        // The statics are stored sorted by name, the order of a set value, so
        // that building the set needs no sort (all-packages.nix' set has
        // ~15,000 names and is built on every evaluation). A rec set's or a
        // let's slots follow that order. `rank[i]` is the place of the `i`th
        // binding in source order; the bindings are still lowered in source
        // order, so the first error reported stays the first in the source.
        let mut order: Vec<usize> = (0..b.statics.len()).collect();
        order.sort_by(|&i, &j| b.statics[i].0.cmp(&b.statics[j].0));
        let mut rank = vec![0u32; order.len()];
        for (r, &i) in order.iter().enumerate() {
            rank[i] = r as u32;
        }
        if frame {
            let mut m = FxHashMap::default();
            if rec {
                for (i, (n, _, _)) in b.statics.iter().enumerate() {
                    m.insert(n.clone(), rank[i]);
                }
            }
            self.scopes.push(Scope::Names(m));
        }
        let res = (|| {
            let skip = usize::from(frame);
            let mut placed: Vec<Option<(Sym, Expr, Pos)>> = Vec::new();
            placed.resize_with(rank.len(), || None);
            for (i, (name, e, pos)) in b.statics.into_iter().enumerate() {
                let x = self.lower_entry(e, &name, pos, skip, &b.froms)?;
                placed[rank[i] as usize] = Some((name, x, pos));
            }
            let statics: Vec<(Sym, Expr, Pos)> = placed.into_iter().flatten().collect();
            let mut dynamics = Vec::new();
            for (k, e, pos) in b.dynamics {
                let key = self.lower_dyn_key(&k)?;
                let dummy: Sym = "".into();
                let x = self.lower_entry(e, &dummy, pos, skip, &b.froms)?;
                dynamics.push((key, x, pos));
            }
            if let Some((slot, e, parent)) = body {
                *slot = Some(self.sub(e, parent)?);
            }
            Ok(AttrsExpr {
                frame,
                rec,
                statics,
                dynamics,
            })
        })();
        if frame {
            self.scopes.pop();
        }
        res
    }
}

/// Parses and lowers source text. `base_dir` resolves relative paths.
/// Decodes source bytes: valid UTF-8 stays, each invalid byte `b` becomes
/// U+F700+b so that string literals can restore it (see `unescape_raw`).
pub fn decode_source(bytes: &[u8]) -> (String, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (s.to_string(), false),
        Err(_) => {
            let mut out = String::with_capacity(bytes.len());
            let mut rest = bytes;
            while !rest.is_empty() {
                match std::str::from_utf8(rest) {
                    Ok(s) => {
                        out.push_str(s);
                        break;
                    }
                    Err(e) => {
                        let (good, bad) = rest.split_at(e.valid_up_to());
                        out.push_str(std::str::from_utf8(good).unwrap_or_default());
                        let n = e.error_len().unwrap_or(bad.len()).max(1);
                        for b in &bad[..n] {
                            out.push(char::from_u32(0xF700 + *b as u32).unwrap_or('?'));
                        }
                        rest = &bad[n..];
                    }
                }
            }
            (out, true)
        }
    }
}

pub fn unescape_raw(s: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for c in s.chars() {
        let u = c as u32;
        if (0xF780..=0xF7FF).contains(&u) {
            out.push((u - 0xF700) as u8);
        } else {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
        }
    }
    out
}

#[allow(clippy::too_many_arguments)]
pub fn parse(
    text: &str,
    file: u32,
    base_dir: &str,
    globals: &[Sym],
    extra: Option<&[Sym]>,
    pipe_ops: bool,
    lints: [crate::eval::Lint; 3],
    raw_bytes: bool,
) -> Result<Expr, EvalError> {
    let parsed = rnix::Root::parse(text);
    if let Some(e) = parsed.errors().first() {
        let off = parse_error_offset(e).min(text.len() as u32);
        return Err(perr(
            format!("syntax error, {}", parse_error_text(e)),
            Pos::new(file, off),
        ));
    }
    let root = parsed.tree();
    let mut l = Lowerer::new(file, base_dir, globals, extra);
    l.pipe_ops = pipe_ops;
    l.lints = lints;
    l.raw_bytes = raw_bytes;
    l.lower_root(&root)
}

fn parse_error_offset(e: &rnix::ParseError) -> u32 {
    use rnix::ParseError as P;
    match e {
        P::Unexpected(r)
        | P::UnexpectedExtra(r)
        | P::UnexpectedWanted(_, r, _)
        | P::UnexpectedDoubleBind(r)
        | P::DuplicatedArgs(r, _) => u32::from(r.start()),
        P::UnexpectedEOF | P::UnexpectedEOFWanted(_) => u32::MAX,
        _ => 0,
    }
}

fn parse_error_text(e: &rnix::ParseError) -> String {
    e.to_string()
}

pub fn leak(e: Expr) -> &'static Expr {
    Box::leak(Box::new(e))
}

pub fn rc_sym(s: &str) -> Sym {
    Sym::from(s)
}
