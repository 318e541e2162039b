//! Runtime values: the lazy `Value` enum, thunks, environments, strings with
//! context and sorted attribute sets.

use std::collections::BTreeSet;
use std::rc::Rc;

use crate::ast::{Expr, Lambda};
use crate::error::EvalError;
use crate::pos::Pos;

/// An attribute or variable name, interned: a 4-byte index into a
/// process-wide table of leaked names, so that an attribute entry (name,
/// value, position) is 24 bytes; attribute sets are the evaluator's biggest
/// store of memory. Equality is index equality; ordering is byte order of
/// the text, which is the order Nix prints and iterates attributes in.
#[derive(Clone, PartialEq, Eq)]
pub struct Sym(u32);

/// The names: bucket `k` holds `FIRST << k` of them and is allocated when
/// the first of them is interned, so a name's text never moves and can be
/// read without a lock. Each name keeps its [`order_key`] next to its text,
/// so most comparisons of two names read neither text.
mod names {
    use std::sync::atomic::{AtomicPtr, Ordering};
    use std::sync::Mutex;

    const FIRST_BITS: u32 = 10;
    const BUCKETS: usize = 22;

    pub struct Name {
        pub key: u64,
        pub text: &'static str,
    }

    static BUCKETS_PTR: [AtomicPtr<Name>; BUCKETS] =
        [const { AtomicPtr::new(std::ptr::null_mut()) }; BUCKETS];

    struct Interner {
        map: rustc_hash::FxHashMap<&'static str, u32>,
        len: u32,
    }

    static INTERNER: Mutex<Option<Interner>> = Mutex::new(None);

    #[inline]
    fn slot(i: u32) -> (usize, usize) {
        let j = i as u64 + (1u64 << FIRST_BITS);
        let k = 63 - j.leading_zeros() - FIRST_BITS;
        (k as usize, (j - (1u64 << (k + FIRST_BITS))) as usize)
    }

    pub fn intern(s: &str) -> u32 {
        let mut g = INTERNER.lock().unwrap_or_else(|p| p.into_inner());
        let t = g.get_or_insert_with(|| Interner {
            map: Default::default(),
            len: 0,
        });
        if let Some(&i) = t.map.get(s) {
            return i;
        }
        let i = t.len;
        let (k, off) = slot(i);
        assert!(k < BUCKETS, "too many distinct names");
        let mut bucket = BUCKETS_PTR[k].load(Ordering::Acquire);
        if bucket.is_null() {
            let b: Box<[Name]> = (0..(1usize << FIRST_BITS) << k)
                .map(|_| Name { key: 0, text: "" })
                .collect();
            bucket = Box::leak(b).as_mut_ptr();
            BUCKETS_PTR[k].store(bucket, Ordering::Release);
        }
        let text: &'static str = Box::leak(s.to_owned().into_boxed_str());
        let name = Name {
            key: super::order_key(text.as_bytes()),
            text,
        };
        // SAFETY: `off` is inside bucket `k` (sized for it above); the slot
        // is written once, under the lock, before its index is handed out,
        // and an index reaches a reader only after this write (through the
        // lock, or through whatever gave the reader the `Sym`).
        unsafe { bucket.add(off).write(name) };
        t.len = i + 1;
        t.map.insert(text, i);
        i
    }

    #[inline]
    pub fn get(i: u32) -> &'static Name {
        let (k, off) = slot(i);
        let bucket = BUCKETS_PTR[k].load(Ordering::Acquire);
        // SAFETY: `i` came from `intern`, which allocated bucket `k` and
        // wrote slot `off` before returning `i` (see above); buckets are
        // leaked, so the reference lives as long as the process.
        unsafe { &*bucket.add(off) }
    }
}

/// The first 8 bytes of a name as a big-endian number, zero-padded: names
/// whose keys differ compare as their keys do; equal keys (a common prefix
/// of 8 bytes, or a name with NUL bytes) need the texts compared.
#[inline]
pub(crate) fn order_key(b: &[u8]) -> u64 {
    let mut k = [0u8; 8];
    let n = b.len().min(8);
    k[..n].copy_from_slice(&b[..n]);
    u64::from_be_bytes(k)
}

/// Byte order of a name and a text whose [`order_key`] is `key`.
#[inline]
fn cmp_name_text(n: &names::Name, key: u64, text: &[u8]) -> std::cmp::Ordering {
    match n.key.cmp(&key) {
        std::cmp::Ordering::Equal => n.text.as_bytes().cmp(text),
        c => c,
    }
}

impl Sym {
    pub fn new(s: &str) -> Sym {
        Sym(names::intern(s))
    }
    #[inline]
    pub fn as_str(&self) -> &'static str {
        names::get(self.0).text
    }
}

impl std::ops::Deref for Sym {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

// Sound for hashed lookups: `Hash` hashes the text, and interning makes
// pointer equality coincide with text equality.
impl std::borrow::Borrow<str> for Sym {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Sym {
    #[inline]
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl PartialOrd for Sym {
    #[inline]
    fn partial_cmp(&self, o: &Sym) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Sym {
    #[inline]
    fn cmp(&self, o: &Sym) -> std::cmp::Ordering {
        if self.0 == o.0 {
            return std::cmp::Ordering::Equal;
        }
        let (a, b) = (names::get(self.0), names::get(o.0));
        cmp_name_text(a, b.key, b.text.as_bytes())
    }
}

impl std::hash::Hash for Sym {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.as_str().hash(h)
    }
}

impl std::fmt::Display for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
impl std::fmt::Debug for Sym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
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
    /// [`NixStr::lossy`] without a copy when the bytes are UTF-8 (an
    /// attribute name being looked up or interned needs none).
    #[inline]
    pub fn lossy_ref(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.s)
    }
}

pub fn merge_ctx(into: &mut Context, from: &Option<Box<Context>>) {
    if let Some(c) = from {
        for e in c.iter() {
            into.insert(e.clone());
        }
    }
}

/// One attribute: name, value and (for `unsafeGetAttrPos`) its position.
pub type Entry = (Sym, Value, Pos);

/// A sorted attribute set with optional source positions for
/// `unsafeGetAttrPos`.
///
/// `big // small` (nixpkgs' `drv // { outPath = …; }`, `commonAttrs //
/// passthru`) makes a *layered* set: the few names of the right side over a
/// shared, flat `base`, instead of a copy of every entry of the left side.
/// Results of `//` were most of the memory of a nixpkgs evaluation. A base is
/// always flat, so a lookup is at most two binary searches; iteration merges
/// the two sorted layers.
#[derive(Debug, Default, Clone)]
pub struct Attrs {
    /// Sorted by name. In a layered set: the names set on top of `base`
    /// (replacing or adding).
    entries: Vec<Entry>,
    base: Option<Rc<Attrs>>,
    /// The number of distinct names (entries of a flat set).
    len: usize,
}

/// An overlay holds at most 1/`LAYER_RATIO` as many names as its base, so
/// the entries it hides in the base (kept alive by it) stay few.
const LAYER_RATIO: usize = 4;
/// Sets smaller than this are always copied: layering them saves little.
const LAYER_MIN_BASE: usize = 16;

impl Attrs {
    /// A flat set from entries sorted by name, without duplicates.
    pub fn from_sorted(entries: Vec<Entry>) -> Attrs {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        let len = entries.len();
        Attrs {
            entries,
            base: None,
            len,
        }
    }
    #[inline]
    pub fn get(&self, k: &str) -> Option<&Value> {
        self.get_entry(k).map(|e| &e.1)
    }
    #[inline]
    pub fn get_entry(&self, k: &str) -> Option<&Entry> {
        let key = order_key(k.as_bytes());
        self.find(|e| cmp_name_text(names::get(e.0 .0), key, k.as_bytes()))
    }
    /// [`Attrs::get`] by an interned name: no text is read unless the name
    /// shares its first 8 bytes with a name of the set.
    #[inline]
    pub fn get_sym(&self, k: &Sym) -> Option<&Value> {
        self.get_sym_entry(k).map(|e| &e.1)
    }
    #[inline]
    pub fn get_sym_entry(&self, k: &Sym) -> Option<&Entry> {
        let n = names::get(k.0);
        self.find(|e| {
            if e.0 .0 == k.0 {
                std::cmp::Ordering::Equal
            } else {
                cmp_name_text(names::get(e.0 .0), n.key, n.text.as_bytes())
            }
        })
    }
    #[inline]
    fn find(&self, f: impl Fn(&Entry) -> std::cmp::Ordering + Copy) -> Option<&Entry> {
        match self.entries.binary_search_by(f) {
            Ok(i) => Some(&self.entries[i]),
            Err(_) => self.base.as_ref()?.find(f),
        }
    }
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The `i`th entry in name order: O(1) on a flat set (see
    /// [`Attrs::flattened`]), a walk on a layered one.
    pub fn entry_at(&self, i: usize) -> Option<&Entry> {
        match self.base {
            None => self.entries.get(i),
            Some(_) => self.iter().nth(i),
        }
    }
    /// The same set with a single layer (itself when it already is).
    pub fn flattened(self: &Rc<Self>) -> Rc<Attrs> {
        match self.base {
            None => self.clone(),
            Some(_) => Rc::new(Attrs::from_sorted(self.iter().cloned().collect())),
        }
    }
    /// The entries in name order.
    #[inline]
    pub fn iter(&self) -> AttrsIter<'_> {
        AttrsIter {
            top: &self.entries,
            base: self.base.as_deref().map_or(&[][..], |b| &b.entries[..]),
        }
    }
    /// `builtins.intersectAttrs self other`: the entries of `other` whose
    /// names `self` has. Walks the smaller set and looks names up in the
    /// bigger one, so `intersectAttrs (functionArgs f) pkgs` costs a few
    /// lookups rather than one per package.
    pub fn intersect(&self, other: &Attrs) -> Attrs {
        let entries = if self.len() < other.len() {
            self.iter()
                .filter_map(|e| other.get_sym_entry(&e.0).cloned())
                .collect()
        } else {
            other
                .iter()
                .filter(|e| self.get_sym(&e.0).is_some())
                .cloned()
                .collect()
        };
        Attrs::from_sorted(entries)
    }
    /// Builds from unsorted entries; later duplicates win.
    pub fn from_unsorted(mut v: Vec<Entry>) -> Self {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        // keep last of equal keys: stable sort keeps order; dedup keeping last
        let mut out: Vec<Entry> = Vec::with_capacity(v.len());
        for e in v {
            if let Some(last) = out.last_mut() {
                if last.0 == e.0 {
                    *last = e;
                    continue;
                }
            }
            out.push(e);
        }
        Attrs::from_sorted(out)
    }
    /// Builds from unsorted entries; first duplicate wins.
    pub fn from_unsorted_first(mut v: Vec<Entry>) -> Self {
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.dedup_by(|b, a| a.0 == b.0);
        Attrs::from_sorted(v)
    }

    /// `x // y`.
    pub fn update(x: &Rc<Attrs>, y: &Rc<Attrs>) -> Rc<Attrs> {
        if y.is_empty() {
            return x.clone();
        }
        if x.is_empty() {
            return y.clone();
        }
        let (base, over): (&Rc<Attrs>, &[Entry]) = match &x.base {
            Some(b) => (b, &x.entries),
            None => (x, &[]),
        };
        let y_flat;
        let ys: &[Entry] = match &y.base {
            None => &y.entries,
            Some(_) => {
                y_flat = y.iter().cloned().collect::<Vec<_>>();
                &y_flat
            }
        };
        let top = merge_sorted(over, ys);
        if base.len() >= LAYER_MIN_BASE && top.len() * LAYER_RATIO <= base.len() {
            let added = ys.iter().filter(|e| x.get_sym(&e.0).is_none()).count();
            return Rc::new(Attrs {
                len: x.len() + added,
                entries: top,
                base: Some(base.clone()),
            });
        }
        Rc::new(Attrs::from_sorted(merge_sorted(&base.entries, &top)))
    }
}

/// The merge of two sorted runs of entries (`b` winning on equal names), in
/// a vector of exactly its size: a result of `//` may be kept for the whole
/// evaluation, and room reserved for names that turned out to be replaced
/// would be wasted.
fn merge_sorted(a: &[Entry], b: &[Entry]) -> Vec<Entry> {
    if a.is_empty() || b.is_empty() {
        return if a.is_empty() { b.to_vec() } else { a.to_vec() };
    }
    if b.len() * 8 < a.len() {
        // Few names into many (`acc // { k = v; }`): find each by binary
        // search and copy the runs of `a` between them, instead of comparing
        // every name of `a`.
        let mut at = Vec::with_capacity(b.len());
        let mut i = 0;
        let mut same = 0;
        for e in b {
            let k = i + a[i..].partition_point(|x| x.0 < e.0);
            let hit = k < a.len() && a[k].0 == e.0;
            same += usize::from(hit);
            at.push((k, hit));
            i = if hit { k + 1 } else { k };
        }
        let mut out = Vec::with_capacity(a.len() + b.len() - same);
        let mut i = 0;
        for (e, &(k, hit)) in b.iter().zip(&at) {
            out.extend_from_slice(&a[i..k]);
            out.push(e.clone());
            i = if hit { k + 1 } else { k };
        }
        out.extend_from_slice(&a[i..]);
        return out;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i].clone());
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j].clone());
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(b[j].clone());
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    if out.len() == out.capacity() {
        return out;
    }
    let mut exact = Vec::with_capacity(out.len());
    exact.append(&mut out);
    exact
}

/// The entries of a set in name order: the merge of its two layers, the top
/// one hiding equal names of the base.
#[derive(Clone)]
pub struct AttrsIter<'a> {
    top: &'a [Entry],
    base: &'a [Entry],
}

impl<'a> Iterator for AttrsIter<'a> {
    type Item = &'a Entry;
    #[inline]
    fn next(&mut self) -> Option<&'a Entry> {
        match (self.top.first(), self.base.first()) {
            (Some(t), Some(b)) => match t.0.cmp(&b.0) {
                std::cmp::Ordering::Less => {
                    self.top = &self.top[1..];
                    Some(t)
                }
                std::cmp::Ordering::Greater => {
                    self.base = &self.base[1..];
                    Some(b)
                }
                std::cmp::Ordering::Equal => {
                    self.top = &self.top[1..];
                    self.base = &self.base[1..];
                    Some(t)
                }
            },
            (Some(t), None) => {
                self.top = &self.top[1..];
                Some(t)
            }
            (None, Some(b)) => {
                self.base = &self.base[1..];
                Some(b)
            }
            (None, None) => None,
        }
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

/// A lazy value. The state lives in an `UnsafeCell` rather than a
/// `RefCell` (8 bytes less per thunk, and thunks are a large part of an
/// evaluation's memory): every access below is a short read or replacement
/// that never holds a reference into the state across evaluation, so no two
/// accesses overlap.
pub struct Thunk(std::cell::UnsafeCell<ThunkState>);

impl Thunk {
    #[inline]
    pub fn new(st: ThunkState) -> Thunk {
        Thunk(std::cell::UnsafeCell::new(st))
    }
    /// The value of an already-forced thunk.
    #[inline]
    pub fn forced(&self) -> Option<Value> {
        // SAFETY: a short read; see the type's comment.
        match unsafe { &*self.0.get() } {
            ThunkState::Done(v) => Some(v.clone()),
            _ => None,
        }
    }
    /// The integer of an already-forced thunk, read in place.
    #[inline]
    pub fn forced_int(&self) -> Option<i64> {
        // SAFETY: a short read; see the type's comment.
        match unsafe { &*self.0.get() } {
            ThunkState::Done(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
    /// Starts forcing: the state to evaluate (the thunk is left black-holed
    /// meanwhile), or, as `Err`, the outcome when there is nothing to
    /// evaluate (a value, an earlier failure, or infinite recursion).
    #[inline]
    pub fn start(&self) -> Result<ThunkState, Result<Value, EvalError>> {
        // SAFETY: a short read, then a replacement; see the type's comment.
        match unsafe { &*self.0.get() } {
            ThunkState::Done(v) => return Err(Ok(v.clone())),
            ThunkState::Failed(e) => return Err(Err(e.clone())),
            ThunkState::Blackhole => {
                return Err(Err(EvalError::new(
                    crate::error::ErrorKind::InfiniteRecursion,
                    "infinite recursion encountered",
                    Pos::none(),
                )))
            }
            _ => {}
        }
        Ok(std::mem::replace(
            unsafe { &mut *self.0.get() },
            ThunkState::Blackhole,
        ))
    }
    /// Replaces the state (the old one is dropped after the replacement).
    #[inline]
    pub fn set(&self, st: ThunkState) {
        // SAFETY: a replacement; see the type's comment.
        let old = std::mem::replace(unsafe { &mut *self.0.get() }, st);
        drop(old);
    }
}

impl std::fmt::Debug for Thunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<thunk>")
    }
}

/// Environment slots; most frames hold one or two values, kept inline.
pub type Slots = smallvec::SmallVec<[Value; 2]>;

/// A frame of variables. Slots live in an `UnsafeCell` rather than a
/// `RefCell`, which keeps a frame at 64 bytes (mimalloc's 64-byte class
/// rather than its 80-byte one): every access is a short read, write or
/// replacement through the methods below, none of which evaluates anything
/// while it holds a reference into the slots.
pub struct Env {
    pub parent: Option<Rc<Env>>,
    /// Dropped by hand (see the `Drop` impl).
    slots: std::cell::UnsafeCell<std::mem::ManuallyDrop<Slots>>,
}

impl Drop for Env {
    /// Most frames are a call's, with inline slots holding integers and
    /// the like, which own nothing: their drop (an out-of-line call per
    /// slot) is skipped. This is the per-call cost of `fib`-like code.
    #[inline]
    fn drop(&mut self) {
        let s = self.slots.get_mut();
        let owns = s.spilled()
            || s.iter().any(|v| {
                !matches!(
                    v,
                    Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_)
                )
            });
        if owns {
            // SAFETY: the slots are dropped only here, once, and never used
            // afterwards (the frame is being dropped).
            unsafe { std::mem::ManuallyDrop::drop(s) };
        }
    }
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
            slots: std::cell::UnsafeCell::new(std::mem::ManuallyDrop::new(slots)),
        })
    }
    /// A frame of one slot (a plain `x: …` lambda's).
    #[inline]
    pub fn new1(parent: Rc<Env>, v: Value) -> Rc<Env> {
        Rc::new(Env {
            parent: Some(parent),
            slots: std::cell::UnsafeCell::new(std::mem::ManuallyDrop::new(
                Slots::from_buf_and_len([v, Value::Null], 1),
            )),
        })
    }
    /// Slot `idx` of this frame (`Null` when the frame has no such slot yet).
    #[inline]
    pub fn get(&self, idx: usize) -> Value {
        // SAFETY: a short read; see the type's comment.
        unsafe { &*self.slots.get() }
            .get(idx)
            .cloned()
            .unwrap_or(Value::Null)
    }
    /// Sets slot `idx` (ignored when the frame has no such slot).
    #[inline]
    pub fn set(&self, idx: usize, v: Value) {
        // SAFETY: a short write; the old value is dropped after it.
        let old = unsafe { &mut *self.slots.get() }
            .get_mut(idx)
            .map(|s| std::mem::replace(s, v));
        drop(old);
    }
    /// Replaces all the slots (frames whose slots refer to the frame itself
    /// are made empty first and filled here).
    pub fn set_all(&self, slots: Slots) {
        // SAFETY: a replacement; see the type's comment.
        let old = std::mem::replace(unsafe { &mut **self.slots.get() }, slots);
        drop(old);
    }
    /// The integer in slot `idx` of the frame `depth` levels up, when the
    /// slot holds one (or an already-forced thunk of one): read in place,
    /// without the reference counting of a [`Env::lookup`].
    #[inline(always)]
    pub fn peek_int(&self, depth: u32, idx: u32) -> Option<i64> {
        let mut e: &Env = self;
        for _ in 0..depth {
            e = e.parent.as_deref()?;
        }
        // SAFETY: a short read; see the type's comment.
        match unsafe { &*e.slots.get() }.get(idx as usize)? {
            Value::Int(i) => Some(*i),
            Value::Thunk(t) => t.forced_int(),
            _ => None,
        }
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
        // SAFETY: the slot is read, and replaced only by a forced thunk's
        // value; the replaced thunk is dropped after the write, and dropping
        // it cannot free `e` (kept alive through `self`) nor touch its slots.
        let slot = match unsafe { &mut *e.slots.get() }.get_mut(idx as usize) {
            Some(s) => s,
            None => return Value::Null,
        };
        if let Value::Thunk(t) = slot {
            return match t.forced() {
                Some(v) => {
                    let old = std::mem::replace(slot, v.clone());
                    drop(old);
                    v
                }
                None => Value::Thunk(t.clone()),
            };
        }
        slot.clone()
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
        Value::Thunk(Rc::new(Thunk::new(ThunkState::Pending(e, env.clone()))))
    }
    pub fn native(f: NativeFn) -> Value {
        Value::Thunk(Rc::new(Thunk::new(ThunkState::Native(f))))
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
        assert_eq!(std::mem::size_of::<Entry>(), 24);
        // With Rc's two counts: mimalloc's 48- and 64-byte classes.
        assert!(std::mem::size_of::<Thunk>() <= 32);
        assert!(std::mem::size_of::<Env>() <= 48);
    }

    #[test]
    fn dropping_a_frame_releases_the_values_of_its_slots() {
        let s = Rc::new(NixStr::plain("x"));
        let root = Env::new(None, Slots::new());
        // one inline slot, two inline slots mixing integers, spilled slots
        drop(Env::new1(root.clone(), Value::Str(s.clone())));
        drop(Env::new(
            Some(root.clone()),
            smallvec::smallvec![Value::Int(1), Value::Str(s.clone())],
        ));
        drop(Env::new(
            Some(root.clone()),
            smallvec::smallvec![Value::Int(1), Value::Int(2), Value::Str(s.clone())],
        ));
        let e = Env::new1(root.clone(), Value::Int(3));
        e.set_all(smallvec::smallvec![Value::Str(s.clone())]);
        drop(e);
        assert_eq!(Rc::strong_count(&s), 1);
        assert_eq!(Rc::strong_count(&root), 1);
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
        assert!(a != Sym::from("fo"));
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
    fn names_order_by_bytes_past_their_first_eight_and_around_nul_bytes() {
        // Pairs whose first 8 bytes (zero-padded) are equal, where only the
        // texts decide; and bytes >= 0x80, which must sort after ASCII.
        let texts = [
            "buildInputs",
            "buildInputsX",
            "buildInput",
            "build",
            "build\0",
            "build\0\0",
            "build\0a",
            "",
            "\0",
            "nativeBuildInputs",
            "z\u{e9}",
            "zz",
            "aaaaaaaa",
            "aaaaaaaab",
        ];
        let mut syms: Vec<Sym> = texts.iter().map(|t| Sym::from(*t)).collect();
        syms.sort();
        let mut bytes: Vec<&[u8]> = texts.iter().map(|t| t.as_bytes()).collect();
        bytes.sort();
        let got: Vec<&[u8]> = syms.iter().map(|s| s.as_bytes()).collect();
        assert_eq!(got, bytes);
        for x in &syms {
            for y in &syms {
                assert_eq!(x.cmp(y), x.as_bytes().cmp(y.as_bytes()), "{x:?} {y:?}");
            }
        }
    }

    #[test]
    fn lookups_by_name_and_by_text_find_the_same_entries_in_flat_and_layered_sets() {
        let many: Vec<String> = (0..40).map(|i| format!("attribute{i:02}")).collect();
        let refs: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
        let base = Rc::new(set(&refs));
        let top = Rc::new(set(&["attribute07", "attribute99", "attr"]));
        let layered = Attrs::update(&base, &top);
        assert!(layered.base.is_some(), "a few names over 40 make a layer");
        for a in [&base, &layered] {
            for probe in refs
                .iter()
                .chain(&["attribute99", "attr", "attribute", "zzz", ""])
            {
                let by_text = a.get_entry(probe).map(|e| e.0.as_str());
                let by_sym = a.get_sym_entry(&Sym::from(*probe)).map(|e| e.0.as_str());
                assert_eq!(by_text, by_sym, "{probe}");
            }
        }
        assert!(matches!(
            layered.get_sym(&Sym::from("attribute07")),
            Some(Value::Int(0))
        ));
        assert!(matches!(
            layered.get_sym(&Sym::from("attribute08")),
            Some(Value::Int(8))
        ));
        assert!(matches!(layered.get("attribute99"), Some(Value::Int(1))));
        assert!(base.get_sym(&Sym::from("attribute99")).is_none());
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
