//! Runtime values: the lazy `Value` enum, thunks, environments, strings with
//! context and sorted attribute sets.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use crate::ast::{Expr, Lambda};
use crate::error::EvalError;
use crate::pos::Pos;

/// An attribute name. Plain reference-counted text; ordering is byte order,
/// which is the order Nix prints and iterates attributes in.
pub type Sym = Rc<str>;

/// A string-context element, in Nix's encoded form: `/nix/store/…` (plain
/// path), `=/nix/store/….drv` (all outputs of a drv), `!out!/nix/store/….drv`.
pub type Context = BTreeSet<Rc<str>>;

#[derive(Debug, Default)]
pub struct NixStr {
    pub s: Vec<u8>,
    pub ctx: Option<Box<Context>>,
}

impl NixStr {
    pub fn plain(s: impl Into<Vec<u8>>) -> Self {
        NixStr {
            s: s.into(),
            ctx: None,
        }
    }
    pub fn with_ctx(s: Vec<u8>, ctx: Context) -> Self {
        NixStr {
            s,
            ctx: if ctx.is_empty() {
                None
            } else {
                Some(Box::new(ctx))
            },
        }
    }
    pub fn has_ctx(&self) -> bool {
        self.ctx.as_ref().is_some_and(|c| !c.is_empty())
    }
    pub fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.s).into_owned()
    }
}

pub fn merge_ctx(into: &mut Context, from: &Option<Box<Context>>) {
    if let Some(c) = from {
        for e in c.iter() {
            into.insert(e.clone());
        }
    }
}

/// A sorted attribute set with optional source positions for
/// `unsafeGetAttrPos`.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    pub entries: Vec<(Sym, Value, Pos)>,
}

impl Attrs {
    #[inline]
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.entries
            .binary_search_by(|e| e.0.as_ref().cmp(k))
            .ok()
            .map(|i| &self.entries[i].1)
    }
    pub fn get_entry(&self, k: &str) -> Option<&(Sym, Value, Pos)> {
        self.entries
            .binary_search_by(|e| e.0.as_ref().cmp(k))
            .ok()
            .map(|i| &self.entries[i])
    }
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// `builtins.intersectAttrs self other`: the entries of `other` whose
    /// names `self` has. Walks the smaller set and binary-searches the
    /// bigger one, so `intersectAttrs (functionArgs f) pkgs` costs a few
    /// lookups rather than one per package.
    pub fn intersect(&self, other: &Attrs) -> Attrs {
        let entries = if self.len() < other.len() {
            self.entries
                .iter()
                .filter_map(|e| other.get_entry(&e.0).cloned())
                .collect()
        } else {
            other
                .entries
                .iter()
                .filter(|e| self.get(&e.0).is_some())
                .cloned()
                .collect()
        };
        Attrs { entries }
    }
    /// Builds from unsorted entries; later duplicates win.
    pub fn from_unsorted(mut v: Vec<(Sym, Value, Pos)>) -> Self {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // keep last of equal keys: stable sort keeps order; dedup keeping last
        let mut out: Vec<(Sym, Value, Pos)> = Vec::with_capacity(v.len());
        for e in v {
            if let Some(last) = out.last_mut() {
                if last.0 == e.0 {
                    *last = e;
                    continue;
                }
            }
            out.push(e);
        }
        Attrs { entries: out }
    }
    /// Builds from unsorted entries; first duplicate wins.
    pub fn from_unsorted_first(mut v: Vec<(Sym, Value, Pos)>) -> Self {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|b, a| a.0 == b.0);
        Attrs { entries: v }
    }
}

pub type NativeFn = Rc<dyn Fn(&crate::eval::Ev) -> Result<Value, EvalError>>;

pub enum ThunkState {
    Pending(&'static Expr, Rc<Env>),
    Native(NativeFn),
    /// A lazy application `f x` (from `map`, `genList`…).
    Apply(Value, Value, Pos),
    Blackhole,
    Done(Value),
    Failed(EvalError),
}

pub struct Thunk(pub RefCell<ThunkState>);

impl Thunk {
    /// The value of an already-forced thunk.
    #[inline]
    pub fn forced(&self) -> Option<Value> {
        match &*self.0.try_borrow().ok()? {
            ThunkState::Done(v) => Some(v.clone()),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Thunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<thunk>")
    }
}

/// Environment slots; most frames hold one or two values, kept inline.
pub type Slots = smallvec::SmallVec<[Value; 2]>;

pub struct Env {
    pub parent: Option<Rc<Env>>,
    pub slots: RefCell<Slots>,
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<env>")
    }
}

impl Env {
    pub fn new(parent: Option<Rc<Env>>, slots: Slots) -> Rc<Env> {
        Rc::new(Env {
            parent,
            slots: RefCell::new(slots),
        })
    }
    /// The value in slot `idx` of the frame `depth` levels up. A slot whose
    /// thunk has already been forced is replaced by the thunk's value, so the
    /// next lookup skips the indirection and the thunk can be freed.
    #[inline]
    pub fn lookup(self: &Rc<Env>, depth: u32, idx: u32) -> Value {
        let mut e: &Env = self;
        for _ in 0..depth {
            match &e.parent {
                Some(p) => e = p,
                None => return Value::Null,
            }
        }
        let forced = {
            let s = e.slots.borrow();
            match s.get(idx as usize) {
                Some(Value::Thunk(t)) => match t.forced() {
                    Some(v) => v,
                    None => return Value::Thunk(t.clone()),
                },
                Some(v) => return v.clone(),
                None => return Value::Null,
            }
        };
        if let Ok(mut s) = e.slots.try_borrow_mut() {
            s[idx as usize] = forced.clone();
        }
        forced
    }
}

#[derive(Debug)]
pub struct Closure {
    pub lambda: &'static Lambda,
    pub env: Rc<Env>,
}

pub type PrimFn = fn(&crate::eval::Ev, &[Value], Pos) -> Result<Value, EvalError>;

pub struct PrimOp {
    pub name: &'static str,
    pub arity: usize,
    pub f: PrimFn,
}

impl std::fmt::Debug for PrimOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<primop {}>", self.name)
    }
}

#[derive(Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<NixStr>),
    Path(Rc<str>),
    Attrs(Rc<Attrs>),
    List(Rc<Vec<Value>>),
    Lambda(Rc<Closure>),
    PrimOp(Rc<PrimOp>),
    PrimOpApp(Rc<PrimOp>, Rc<Vec<Value>>),
    Thunk(Rc<Thunk>),
}

impl Clone for Value {
    // Written out so that it inlines into the evaluator's hot paths.
    #[inline]
    fn clone(&self) -> Self {
        match self {
            Value::Null => Value::Null,
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Float(f) => Value::Float(*f),
            Value::Str(s) => Value::Str(s.clone()),
            Value::Path(p) => Value::Path(p.clone()),
            Value::Attrs(a) => Value::Attrs(a.clone()),
            Value::List(l) => Value::List(l.clone()),
            Value::Lambda(c) => Value::Lambda(c.clone()),
            Value::PrimOp(p) => Value::PrimOp(p.clone()),
            Value::PrimOpApp(p, a) => Value::PrimOpApp(p.clone(), a.clone()),
            Value::Thunk(t) => Value::Thunk(t.clone()),
        }
    }
}

impl Value {
    pub fn str(s: impl Into<Vec<u8>>) -> Value {
        Value::Str(Rc::new(NixStr::plain(s)))
    }
    pub fn str_ctx(s: Vec<u8>, ctx: Context) -> Value {
        Value::Str(Rc::new(NixStr::with_ctx(s, ctx)))
    }
    #[inline]
    pub fn thunk(e: &'static Expr, env: &Rc<Env>) -> Value {
        Value::Thunk(Rc::new(Thunk(RefCell::new(ThunkState::Pending(
            e,
            env.clone(),
        )))))
    }
    pub fn native(f: NativeFn) -> Value {
        Value::Thunk(Rc::new(Thunk(RefCell::new(ThunkState::Native(f)))))
    }
    #[inline]
    pub fn attrs(a: Attrs) -> Value {
        Value::Attrs(Rc::new(a))
    }
    #[inline]
    pub fn list(v: Vec<Value>) -> Value {
        Value::List(Rc::new(v))
    }
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a Boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Path(_) => "a path",
            Value::Attrs(_) => "a set",
            Value::List(_) => "a list",
            Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(..) => "a function",
            Value::Thunk(_) => "a thunk",
        }
    }
    pub fn type_of(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::Path(_) => "path",
            Value::Attrs(_) => "set",
            Value::List(_) => "list",
            Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(..) => "lambda",
            Value::Thunk(_) => "thunk",
        }
    }
    pub fn is_function(&self) -> bool {
        matches!(
            self,
            Value::Lambda(_) | Value::PrimOp(_) | Value::PrimOpApp(..)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> Attrs {
        Attrs::from_unsorted(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (Rc::from(*n), Value::Int(i as i64), Pos::none()))
                .collect(),
        )
    }

    fn names(a: &Attrs) -> Vec<String> {
        a.entries.iter().map(|e| e.0.to_string()).collect()
    }

    #[test]
    fn intersect_takes_the_values_of_the_second_set_whichever_is_smaller() {
        let small = set(&["b", "zz", "d"]);
        let big = set(&["a", "b", "c", "d", "e"]);
        let r = small.intersect(&big);
        assert_eq!(names(&r), ["b", "d"]);
        // values come from `big` (b is its entry 1, d its entry 3)
        assert!(matches!(r.entries[0].1, Value::Int(1)));
        assert!(matches!(r.entries[1].1, Value::Int(3)));
        let r = big.intersect(&small);
        assert_eq!(names(&r), ["b", "d"]);
        assert!(matches!(r.entries[0].1, Value::Int(0)));
        assert!(matches!(r.entries[1].1, Value::Int(2)));
    }
}
