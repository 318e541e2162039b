//! Runtime values: the lazy `Value` enum, thunks, environments, strings with
//! context and sorted attribute sets.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use crate::ast::{Expr, Lambda};
use crate::error::EvalError;
use crate::pos::Pos;

/// An attribute or variable name, interned: one leaked copy per distinct
/// name, so a `Sym` is a thin 8-byte pointer (attribute-set entries are the
/// evaluator's biggest store of memory), equality is pointer equality and
/// cloning copies a pointer. Ordering is byte order of the text, which is the order
/// Nix prints and iterates attributes in.
/// The table is per thread (an evaluator lives on one thread), so `Sym` is
/// kept `!Send` by its marker: a name interned on one thread must not meet
/// the same name interned on another.
#[derive(Clone)]
pub struct Sym(&'static String, std::marker::PhantomData<Rc<()>>);

thread_local! {
    static SYMS: RefCell<rustc_hash::FxHashMap<&'static str, Sym>> = RefCell::default();
}

impl Sym {
    pub fn new(s: &str) -> Sym {
        SYMS.with(|t| {
            let mut t = t.borrow_mut();
            if let Some(sym) = t.get(s) {
                return sym.clone();
            }
            let text: &'static String = Box::leak(Box::new(s.to_owned()));
            let sym = Sym(text, std::marker::PhantomData);
            t.insert(text.as_str(), sym.clone());
            sym
        })
    }
    #[inline]
    pub fn as_str(&self) -> &'static str {
        self.0.as_str()
    }
}

impl std::ops::Deref for Sym {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.0.as_str()
    }
}

// Sound for hashed lookups: `Hash` hashes the text, and interning makes
// pointer equality coincide with text equality.
impl std::borrow::Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        self.0.as_str()
    }
}

impl AsRef<str> for Sym {
    fn as_ref(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Sym {
    #[inline]
    fn eq(&self, o: &Sym) -> bool {
        std::ptr::eq(self.0, o.0)
    }
}
impl Eq for Sym {}

impl PartialOrd for Sym {
    #[inline]
    fn partial_cmp(&self, o: &Sym) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sym {
    #[inline]
    fn cmp(&self, o: &Sym) -> std::cmp::Ordering {
        if std::ptr::eq(self.0, o.0) {
            return std::cmp::Ordering::Equal;
        }
        self.0.as_bytes().cmp(o.0.as_bytes())
    }
}

impl std::hash::Hash for Sym {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.0.as_str().hash(h)
    }
}

impl std::fmt::Display for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::fmt::Debug for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.0.as_str(), f)
    }
}

impl From<&str> for Sym {
    fn from(s: &str) -> Sym {
        Sym::new(s)
    }
}
impl From<String> for Sym {
    fn from(s: String) -> Sym {
        Sym::new(&s)
    }
}
impl From<&String> for Sym {
    fn from(s: &String) -> Sym {
        Sym::new(s)
    }
}

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
    /// A lazy application `f x` (from `map`, `genList`…); `f` and its call
    /// site are shared by all the elements of one call.
    Apply(Rc<LazyFn>, Value),
    Blackhole,
    Done(Value),
    Failed(EvalError),
}

/// The function of a batch of lazy applications.
pub struct LazyFn {
    pub f: Value,
    pub pos: Pos,
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

/// A list's elements. `tail` returns a `Suffix` of its argument's vector
/// rather than a copy, so recursions over `tail xs` (nixpkgs' `uniqList`,
/// `closePropagation`) cost O(1) per step instead of O(n) time and memory.
#[derive(Debug)]
pub enum NixList {
    Vec(Vec<Value>),
    /// The elements of a `Vec` list from `start` on.
    Suffix(Rc<NixList>, usize),
}

impl NixList {
    /// The list without its first element (the caller checks non-emptiness).
    pub fn tail(self: &Rc<NixList>) -> NixList {
        match &**self {
            NixList::Vec(_) => NixList::Suffix(self.clone(), 1),
            NixList::Suffix(base, start) => NixList::Suffix(base.clone(), start + 1),
        }
    }
}

impl std::ops::Deref for NixList {
    type Target = [Value];
    #[inline]
    fn deref(&self) -> &[Value] {
        match self {
            NixList::Vec(v) => v,
            NixList::Suffix(base, start) => base.get(*start..).unwrap_or(&[]),
        }
    }
}

/// A primop applied to fewer arguments than its arity.
#[derive(Debug)]
pub struct PartialApp {
    pub op: Rc<PrimOp>,
    pub args: Vec<Value>,
}

#[derive(Debug)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<NixStr>),
    /// Boxed twice so that `Value` stays 16 bytes (paths are rare).
    Path(Rc<String>),
    Attrs(Rc<Attrs>),
    List(Rc<NixList>),
    Lambda(Rc<Closure>),
    PrimOp(Rc<PrimOp>),
    PrimOpApp(Rc<PartialApp>),
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
            Value::PrimOpApp(p) => Value::PrimOpApp(p.clone()),
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
        Value::List(Rc::new(NixList::Vec(v)))
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

    #[test]
    fn values_and_lists_stay_small() {
        // Every thunk, frame slot, list element and attribute holds one.
        assert_eq!(std::mem::size_of::<Value>(), 16);
        assert!(std::mem::size_of::<NixList>() <= 24);
        assert!(std::mem::size_of::<ThunkState>() <= 32);
        assert_eq!(std::mem::size_of::<(Sym, Value, Pos)>(), 32);
    }

    fn set(names: &[&str]) -> Attrs {
        Attrs::from_unsorted(
            names
                .iter()
                .enumerate()
                .map(|(i, n)| (Sym::from(*n), Value::Int(i as i64), Pos::none()))
                .collect(),
        )
    }

    fn names(a: &Attrs) -> Vec<String> {
        a.entries.iter().map(|e| e.0.to_string()).collect()
    }

    #[test]
    fn symbols_are_interned_and_ordered_by_text() {
        let a = Sym::from("foo");
        let b = Sym::from(String::from("foo"));
        assert!(a == b && std::ptr::eq(a.as_str(), b.as_str()));
        let mut v = [
            Sym::from("b"),
            Sym::from("B"),
            Sym::from("a"),
            Sym::from("ab"),
        ];
        v.sort();
        let t: Vec<&str> = v.iter().map(|s| s.as_str()).collect();
        assert_eq!(t, ["B", "a", "ab", "b"]);
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
