//! The parse cache's binary form of a lowered file: b3's own `ast::Expr`
//! tree written as a byte stream and read back in one pass.
//!
//! Layout: a table of the names the tree uses (each written once, interned
//! once on load), then the tree in prefix order. Every node is a one-byte tag
//! followed by its fields; integers are LEB128 varints. Positions are stored
//! relative to the file (0 = no position, else offset + 1), so a decoded tree
//! is re-based onto whatever file id the current process gave the file.
//! Literal values are stored by kind; a value that cannot appear in a lowered
//! file (a closure, a set, a string with context) makes the tree unencodable,
//! and the file is simply not cached.
//!
//! The matches over the AST types are exhaustive on purpose: a new `Expr`
//! variant or field cannot compile until this codec writes and reads it.

use std::rc::Rc;

use rustc_hash::FxHashMap;

use crate::ast::{AttrName, AttrsExpr, BinOp, Expr, Formal, Lambda, Param};
use crate::pos::Pos;
use crate::value::{Sym, Value};

/// Why a tree could not be encoded (the file then goes uncached).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("a literal of kind {0} cannot be cached")]
    Literal(&'static str),
    #[error("a position outside the file being cached")]
    ForeignPos,
}

/// Why stored bytes could not be decoded (the file is then parsed again).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("entry ends early")]
    Truncated,
    #[error("unknown tag {0} for {1}")]
    BadTag(u8, &'static str),
    #[error("name index {0} out of range")]
    BadSym(u64),
    #[error("a name or path that is not UTF-8")]
    Utf8,
    #[error("varint too long")]
    BadVarint,
    #[error("nesting deeper than {MAX_DEPTH}")]
    TooDeep,
    #[error("{0} bytes after the tree")]
    Trailing(usize),
}

/// Deeper trees are not read back (the file is parsed instead); bounds the
/// decoder's stack use on a damaged entry.
pub const MAX_DEPTH: u32 = 20_000;

// Node tags. Changing any of them, or a node's field order, needs a new
// `FORMAT_VERSION` in the parent module.
const E_LIT: u8 = 0;
const E_VAR: u8 = 1;
const E_WITHVAR: u8 = 2;
const E_INTERP: u8 = 3;
const E_PATHINTERP: u8 = 4;
const E_ATTRS: u8 = 5;
const E_LIST: u8 = 6;
const E_SELECT: u8 = 7;
const E_HASATTR: u8 = 8;
const E_APP: u8 = 9;
const E_LAMBDA: u8 = 10;
const E_LET: u8 = 11;
const E_WITH: u8 = 12;
const E_IF: u8 = 13;
const E_ASSERT: u8 = 14;
const E_NOT: u8 = 15;
const E_NEG: u8 = 16;
const E_BIN: u8 = 17;
const E_CURPOS: u8 = 18;
const E_HOMEPATH: u8 = 19;

const V_NULL: u8 = 0;
const V_FALSE: u8 = 1;
const V_TRUE: u8 = 2;
const V_INT: u8 = 3;
const V_FLOAT: u8 = 4;
const V_STR: u8 = 5;
const V_PATH: u8 = 6;

const A_STATIC: u8 = 0;
const A_DYNAMIC: u8 = 1;

const P_IDENT: u8 = 0;
const P_PATTERN: u8 = 1;

fn binop_tag(op: BinOp) -> u8 {
    match op {
        BinOp::Add => 0,
        BinOp::Sub => 1,
        BinOp::Mul => 2,
        BinOp::Div => 3,
        BinOp::Concat => 4,
        BinOp::Update => 5,
        BinOp::And => 6,
        BinOp::Or => 7,
        BinOp::Impl => 8,
        BinOp::Eq => 9,
        BinOp::Neq => 10,
        BinOp::Lt => 11,
        BinOp::Le => 12,
        BinOp::Gt => 13,
        BinOp::Ge => 14,
        BinOp::PipeRight => 15,
        BinOp::PipeLeft => 16,
    }
}

fn binop_of(t: u8) -> Result<BinOp, DecodeError> {
    Ok(match t {
        0 => BinOp::Add,
        1 => BinOp::Sub,
        2 => BinOp::Mul,
        3 => BinOp::Div,
        4 => BinOp::Concat,
        5 => BinOp::Update,
        6 => BinOp::And,
        7 => BinOp::Or,
        8 => BinOp::Impl,
        9 => BinOp::Eq,
        10 => BinOp::Neq,
        11 => BinOp::Lt,
        12 => BinOp::Le,
        13 => BinOp::Gt,
        14 => BinOp::Ge,
        15 => BinOp::PipeRight,
        16 => BinOp::PipeLeft,
        t => return Err(DecodeError::BadTag(t, "operator")),
    })
}

/// Encodes `e`, lowered as file `fid` of `len` bytes, into bytes.
pub fn encode(e: &Expr, fid: u32, len: u32) -> Result<Vec<u8>, EncodeError> {
    encode_after(e, fid, len, 0)
}

/// As [`encode`], with `room` zero bytes in front of the encoding (where
/// the cache puts an entry's header): the tree is written once, into the
/// buffer that becomes the entry, not copied behind the header and the
/// name table. Layout after `room`: the tree's length (8 bytes, little
/// endian), the tree, then the name table it refers to.
pub fn encode_after(e: &Expr, fid: u32, len: u32, room: usize) -> Result<Vec<u8>, EncodeError> {
    // Entries come out at about 0.8 times their source's size: sized to
    // the source, the buffer is never grown (and copied) on the way.
    let mut tree = Vec::with_capacity(room + 8 + len as usize + 4096);
    tree.resize(room + 8, 0);
    let mut enc = Encoder {
        fid,
        len,
        tree,
        syms: FxHashMap::with_capacity_and_hasher(1024, Default::default()),
        sym_list: Vec::new(),
    };
    enc.expr(e)?;
    let mut out = enc.tree;
    let tree_len = (out.len() - room - 8) as u64;
    out[room..room + 8].copy_from_slice(&tree_len.to_le_bytes());
    put_uv(&mut out, enc.sym_list.len() as u64);
    for s in &enc.sym_list {
        put_bytes(&mut out, s.as_bytes());
    }
    Ok(out)
}

fn put_uv(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_uv(out, b.len() as u64);
    out.extend_from_slice(b);
}

struct Encoder {
    fid: u32,
    len: u32,
    tree: Vec<u8>,
    /// Index in `sym_list` by the address and length of the name's text:
    /// equal keys mean equal texts (so the same name once decoded), and
    /// hashing two words is cheaper than hashing the text (`Sym`'s `Hash`).
    syms: FxHashMap<(usize, usize), u32>,
    sym_list: Vec<Sym>,
}

impl Encoder {
    fn tag(&mut self, t: u8) {
        self.tree.push(t);
    }
    fn uv(&mut self, v: u64) {
        put_uv(&mut self.tree, v);
    }
    fn bool(&mut self, b: bool) {
        self.tree.push(u8::from(b));
    }
    fn bytes(&mut self, b: &[u8]) {
        put_bytes(&mut self.tree, b);
    }
    fn sym_index(&mut self, s: &Sym) -> u32 {
        let next = self.sym_list.len() as u32;
        let i = *self
            .syms
            .entry((s.as_str().as_ptr() as usize, s.len()))
            .or_insert(next);
        if i == next {
            self.sym_list.push(s.clone());
        }
        i
    }
    fn sym(&mut self, s: &Sym) {
        let i = self.sym_index(s);
        self.uv(u64::from(i));
    }
    fn opt_sym(&mut self, s: &Option<Sym>) {
        match s {
            None => self.uv(0),
            Some(s) => {
                // Index + 1, so that 0 can mean "none".
                let i = self.sym_index(s);
                self.uv(u64::from(i) + 1);
            }
        }
    }
    fn pos(&mut self, p: Pos) -> Result<(), EncodeError> {
        if p.is_none() {
            self.uv(0);
            return Ok(());
        }
        // Offsets run to the file's length inclusive (end-of-file errors).
        match p.0.checked_sub(self.fid) {
            Some(off) if off <= self.len => {
                self.uv(u64::from(off) + 1);
                Ok(())
            }
            _ => Err(EncodeError::ForeignPos),
        }
    }
    fn exprs(&mut self, v: &[Expr]) -> Result<(), EncodeError> {
        self.uv(v.len() as u64);
        for e in v {
            self.expr(e)?;
        }
        Ok(())
    }
    fn opt_expr(&mut self, e: &Option<Box<Expr>>) -> Result<(), EncodeError> {
        match e {
            None => self.bool(false),
            Some(e) => {
                self.bool(true);
                self.expr(e)?;
            }
        }
        Ok(())
    }

    fn value(&mut self, v: &Value) -> Result<(), EncodeError> {
        match v {
            Value::Null => self.tag(V_NULL),
            Value::Bool(false) => self.tag(V_FALSE),
            Value::Bool(true) => self.tag(V_TRUE),
            Value::Int(i) => {
                self.tag(V_INT);
                self.tree.extend_from_slice(&i.to_le_bytes());
            }
            Value::Float(f) => {
                self.tag(V_FLOAT);
                self.tree.extend_from_slice(&f.to_bits().to_le_bytes());
            }
            Value::Str(s) => {
                if s.has_ctx() {
                    return Err(EncodeError::Literal("string with context"));
                }
                self.tag(V_STR);
                self.bytes(&s.s);
            }
            Value::Path(p) => {
                self.tag(V_PATH);
                self.bytes(p.as_bytes());
            }
            Value::Attrs(_) => return Err(EncodeError::Literal("set")),
            Value::List(_) => return Err(EncodeError::Literal("list")),
            Value::Lambda(_) => return Err(EncodeError::Literal("lambda")),
            Value::PrimOp(_) => return Err(EncodeError::Literal("primop")),
            Value::PrimOpApp(_) => return Err(EncodeError::Literal("primop application")),
            Value::Thunk(_) => return Err(EncodeError::Literal("thunk")),
        }
        Ok(())
    }

    fn path(&mut self, path: &[AttrName]) -> Result<(), EncodeError> {
        self.uv(path.len() as u64);
        for n in path {
            match n {
                AttrName::Static(s) => {
                    self.tag(A_STATIC);
                    self.sym(s);
                }
                AttrName::Dynamic(e) => {
                    self.tag(A_DYNAMIC);
                    self.expr(e)?;
                }
            }
        }
        Ok(())
    }

    fn attrs(&mut self, a: &AttrsExpr) -> Result<(), EncodeError> {
        let AttrsExpr {
            frame,
            rec,
            statics,
            dynamics,
        } = a;
        self.bool(*frame);
        self.bool(*rec);
        self.uv(statics.len() as u64);
        for (name, e, pos) in statics {
            self.sym(name);
            self.expr(e)?;
            self.pos(*pos)?;
        }
        self.uv(dynamics.len() as u64);
        for (k, e, pos) in dynamics {
            self.expr(k)?;
            self.expr(e)?;
            self.pos(*pos)?;
        }
        Ok(())
    }

    fn lambda(&mut self, l: &Lambda) -> Result<(), EncodeError> {
        let Lambda {
            param,
            body,
            pos,
            name,
            pure,
        } = l;
        match param {
            Param::Ident(s) => {
                self.tag(P_IDENT);
                self.sym(s);
            }
            Param::Pattern {
                formals,
                ellipsis,
                at,
            } => {
                self.tag(P_PATTERN);
                self.uv(formals.len() as u64);
                for f in formals {
                    let Formal { name, default, pos } = f;
                    self.sym(name);
                    match default {
                        None => self.bool(false),
                        Some(d) => {
                            self.bool(true);
                            self.expr(d)?;
                        }
                    }
                    self.pos(*pos)?;
                }
                self.bool(*ellipsis);
                self.opt_sym(at);
            }
        }
        self.expr(body)?;
        self.pos(*pos)?;
        self.opt_sym(name);
        self.bool(*pure);
        Ok(())
    }

    fn expr(&mut self, e: &Expr) -> Result<(), EncodeError> {
        match e {
            Expr::Lit(v) => {
                self.tag(E_LIT);
                self.value(v)?;
            }
            Expr::Var(d, i) => {
                self.tag(E_VAR);
                self.uv(u64::from(*d));
                self.uv(u64::from(*i));
            }
            Expr::WithVar { name, withs, pos } => {
                self.tag(E_WITHVAR);
                self.sym(name);
                self.uv(withs.len() as u64);
                for w in withs {
                    self.uv(u64::from(*w));
                }
                self.pos(*pos)?;
            }
            Expr::Interp(parts, pos) => {
                self.tag(E_INTERP);
                self.exprs(parts)?;
                self.pos(*pos)?;
            }
            Expr::PathInterp(parts, pos) => {
                self.tag(E_PATHINTERP);
                self.exprs(parts)?;
                self.pos(*pos)?;
            }
            Expr::Attrs(a) => {
                self.tag(E_ATTRS);
                self.attrs(a)?;
            }
            Expr::List(items) => {
                self.tag(E_LIST);
                self.exprs(items)?;
            }
            Expr::Select {
                e,
                path,
                default,
                pos,
            } => {
                self.tag(E_SELECT);
                self.expr(e)?;
                self.path(path)?;
                self.opt_expr(default)?;
                self.pos(*pos)?;
            }
            Expr::HasAttr { e, path } => {
                self.tag(E_HASATTR);
                self.expr(e)?;
                self.path(path)?;
            }
            Expr::App { f, args, pos } => {
                self.tag(E_APP);
                self.expr(f)?;
                self.exprs(args)?;
                self.pos(*pos)?;
            }
            Expr::Lambda(l) => {
                self.tag(E_LAMBDA);
                self.lambda(l)?;
            }
            Expr::Let(a, body) => {
                self.tag(E_LET);
                self.attrs(a)?;
                self.expr(body)?;
            }
            Expr::With { ns, body } => {
                self.tag(E_WITH);
                self.expr(ns)?;
                self.expr(body)?;
            }
            Expr::If { c, t, e, pos } => {
                self.tag(E_IF);
                self.expr(c)?;
                self.expr(t)?;
                self.expr(e)?;
                self.pos(*pos)?;
            }
            Expr::Assert { c, body, pos, text } => {
                self.tag(E_ASSERT);
                self.expr(c)?;
                self.expr(body)?;
                self.pos(*pos)?;
                self.bytes(text.as_bytes());
            }
            Expr::Not(x, pos) => {
                self.tag(E_NOT);
                self.expr(x)?;
                self.pos(*pos)?;
            }
            Expr::Neg(x, pos) => {
                self.tag(E_NEG);
                self.expr(x)?;
                self.pos(*pos)?;
            }
            Expr::Bin(op, l, r, pos) => {
                self.tag(E_BIN);
                self.tag(binop_tag(*op));
                self.expr(l)?;
                self.expr(r)?;
                self.pos(*pos)?;
            }
            Expr::CurPos(pos) => {
                self.tag(E_CURPOS);
                self.pos(*pos)?;
            }
            Expr::HomePath(s, pos) => {
                self.tag(E_HOMEPATH);
                self.bytes(s.as_bytes());
                self.pos(*pos)?;
            }
        }
        Ok(())
    }
}

/// Decodes bytes written by [`encode`], giving positions in file `fid`.
pub fn decode(buf: &[u8], fid: u32) -> Result<Expr, DecodeError> {
    let (head, rest) = buf.split_at_checked(8).ok_or(DecodeError::Truncated)?;
    let mut n = [0u8; 8];
    n.copy_from_slice(head);
    let tree_len = usize::try_from(u64::from_le_bytes(n)).map_err(|_| DecodeError::Truncated)?;
    let (tree, names) = rest
        .split_at_checked(tree_len)
        .ok_or(DecodeError::Truncated)?;
    let mut d = Decoder {
        buf: names,
        at: 0,
        fid,
        syms: Vec::new(),
        depth: 0,
    };
    let n = d.len()?;
    let mut syms = Vec::with_capacity(n);
    for _ in 0..n {
        let b = d.bytes()?;
        let s = std::str::from_utf8(b).map_err(|_| DecodeError::Utf8)?;
        syms.push(Sym::new(s));
    }
    if d.at != names.len() {
        return Err(DecodeError::Trailing(names.len() - d.at));
    }
    d.syms = syms;
    d.buf = tree;
    d.at = 0;
    let e = d.expr()?;
    match tree.len() - d.at {
        0 => Ok(e),
        n => Err(DecodeError::Trailing(n)),
    }
}

struct Decoder<'a> {
    buf: &'a [u8],
    at: usize,
    fid: u32,
    syms: Vec<Sym>,
    depth: u32,
}

impl<'a> Decoder<'a> {
    #[inline]
    fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.at).ok_or(DecodeError::Truncated)?;
        self.at += 1;
        Ok(b)
    }
    #[inline]
    fn uv(&mut self) -> Result<u64, DecodeError> {
        let b = self.u8()?;
        if b < 0x80 {
            return Ok(u64::from(b));
        }
        let mut v = u64::from(b & 0x7f);
        let mut shift = 7;
        loop {
            let b = self.u8()?;
            if shift > 63 {
                return Err(DecodeError::BadVarint);
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
            shift += 7;
        }
    }
    #[inline]
    fn u32(&mut self) -> Result<u32, DecodeError> {
        u32::try_from(self.uv()?).map_err(|_| DecodeError::BadVarint)
    }
    /// A count of items that each take at least one byte: bounded by what is
    /// left, so a damaged count cannot ask for a huge allocation.
    #[inline]
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = self.uv()?;
        if n > (self.buf.len() - self.at) as u64 {
            return Err(DecodeError::Truncated);
        }
        Ok(n as usize)
    }
    #[inline]
    fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            t => Err(DecodeError::BadTag(t, "bool")),
        }
    }
    fn fixed8(&mut self) -> Result<[u8; 8], DecodeError> {
        let s = self
            .buf
            .get(self.at..self.at + 8)
            .ok_or(DecodeError::Truncated)?;
        self.at += 8;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(a)
    }
    #[inline]
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.len()?;
        let s = &self.buf[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| DecodeError::Utf8)
    }
    #[inline]
    fn sym(&mut self) -> Result<Sym, DecodeError> {
        let i = self.uv()?;
        self.syms
            .get(i as usize)
            .cloned()
            .ok_or(DecodeError::BadSym(i))
    }
    fn opt_sym(&mut self) -> Result<Option<Sym>, DecodeError> {
        match self.uv()? {
            0 => Ok(None),
            i => self
                .syms
                .get(i as usize - 1)
                .cloned()
                .map(Some)
                .ok_or(DecodeError::BadSym(i)),
        }
    }
    #[inline]
    fn pos(&mut self) -> Result<Pos, DecodeError> {
        Ok(match self.u32()? {
            0 => Pos::none(),
            off => Pos::new(self.fid, off - 1),
        })
    }
    fn boxed(&mut self) -> Result<Box<Expr>, DecodeError> {
        Ok(Box::new(self.expr()?))
    }
    fn exprs(&mut self) -> Result<Vec<Expr>, DecodeError> {
        let n = self.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(self.expr()?);
        }
        Ok(v)
    }
    fn opt_expr(&mut self) -> Result<Option<Box<Expr>>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.boxed()?)
        } else {
            None
        })
    }

    fn value(&mut self) -> Result<Value, DecodeError> {
        Ok(match self.u8()? {
            V_NULL => Value::Null,
            V_FALSE => Value::Bool(false),
            V_TRUE => Value::Bool(true),
            V_INT => Value::Int(i64::from_le_bytes(self.fixed8()?)),
            V_FLOAT => Value::Float(f64::from_bits(u64::from_le_bytes(self.fixed8()?))),
            V_STR => Value::str(self.bytes()?),
            V_PATH => Value::Path(Rc::new(self.string()?)),
            t => return Err(DecodeError::BadTag(t, "literal")),
        })
    }

    fn path(&mut self) -> Result<Vec<AttrName>, DecodeError> {
        let n = self.len()?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(match self.u8()? {
                A_STATIC => AttrName::Static(self.sym()?),
                A_DYNAMIC => AttrName::Dynamic(self.expr()?),
                t => return Err(DecodeError::BadTag(t, "attribute name")),
            });
        }
        Ok(v)
    }

    fn attrs(&mut self) -> Result<AttrsExpr, DecodeError> {
        let frame = self.bool()?;
        let rec = self.bool()?;
        let n = self.len()?;
        let mut statics = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.sym()?;
            let e = self.expr()?;
            let pos = self.pos()?;
            statics.push((name, e, pos));
        }
        let n = self.len()?;
        let mut dynamics = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.expr()?;
            let e = self.expr()?;
            let pos = self.pos()?;
            dynamics.push((k, e, pos));
        }
        Ok(AttrsExpr {
            frame,
            rec,
            statics,
            dynamics,
        })
    }

    fn lambda(&mut self) -> Result<Lambda, DecodeError> {
        let param = match self.u8()? {
            P_IDENT => Param::Ident(self.sym()?),
            P_PATTERN => {
                let n = self.len()?;
                let mut formals = Vec::with_capacity(n);
                for _ in 0..n {
                    let name = self.sym()?;
                    let default = if self.bool()? {
                        Some(self.expr()?)
                    } else {
                        None
                    };
                    let pos = self.pos()?;
                    formals.push(Formal { name, default, pos });
                }
                let ellipsis = self.bool()?;
                let at = self.opt_sym()?;
                Param::Pattern {
                    formals,
                    ellipsis,
                    at,
                }
            }
            t => return Err(DecodeError::BadTag(t, "parameter")),
        };
        let body = self.expr()?;
        let pos = self.pos()?;
        let name = self.opt_sym()?;
        let pure = self.bool()?;
        Ok(Lambda {
            param,
            body,
            pos,
            name,
            pure,
        })
    }

    fn expr(&mut self) -> Result<Expr, DecodeError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let e = self.expr_inner();
        self.depth -= 1;
        e
    }

    fn expr_inner(&mut self) -> Result<Expr, DecodeError> {
        Ok(match self.u8()? {
            E_LIT => Expr::Lit(self.value()?),
            E_VAR => {
                let d = self.u32()?;
                Expr::Var(d, self.u32()?)
            }
            E_WITHVAR => {
                let name = self.sym()?;
                let n = self.len()?;
                let mut withs = Vec::with_capacity(n);
                for _ in 0..n {
                    withs.push(self.u32()?);
                }
                let pos = self.pos()?;
                Expr::WithVar { name, withs, pos }
            }
            E_INTERP => {
                let parts = self.exprs()?;
                Expr::Interp(parts, self.pos()?)
            }
            E_PATHINTERP => {
                let parts = self.exprs()?;
                Expr::PathInterp(parts, self.pos()?)
            }
            E_ATTRS => Expr::Attrs(Box::new(self.attrs()?)),
            E_LIST => Expr::List(self.exprs()?),
            E_SELECT => {
                let e = self.boxed()?;
                let path = self.path()?;
                let default = self.opt_expr()?;
                let pos = self.pos()?;
                Expr::Select {
                    e,
                    path,
                    default,
                    pos,
                }
            }
            E_HASATTR => {
                let e = self.boxed()?;
                let path = self.path()?;
                Expr::HasAttr { e, path }
            }
            E_APP => {
                let f = self.boxed()?;
                let args = self.exprs()?;
                let pos = self.pos()?;
                Expr::App { f, args, pos }
            }
            E_LAMBDA => Expr::Lambda(Box::new(self.lambda()?)),
            E_LET => {
                let a = Box::new(self.attrs()?);
                Expr::Let(a, self.boxed()?)
            }
            E_WITH => {
                let ns = self.boxed()?;
                let body = self.boxed()?;
                Expr::With { ns, body }
            }
            E_IF => {
                let c = self.boxed()?;
                let t = self.boxed()?;
                let e = self.boxed()?;
                let pos = self.pos()?;
                Expr::If { c, t, e, pos }
            }
            E_ASSERT => {
                let c = self.boxed()?;
                let body = self.boxed()?;
                let pos = self.pos()?;
                let text = self.string()?;
                Expr::Assert { c, body, pos, text }
            }
            E_NOT => {
                let x = self.boxed()?;
                Expr::Not(x, self.pos()?)
            }
            E_NEG => {
                let x = self.boxed()?;
                Expr::Neg(x, self.pos()?)
            }
            E_BIN => {
                let op = binop_of(self.u8()?)?;
                let l = self.boxed()?;
                let r = self.boxed()?;
                Expr::Bin(op, l, r, self.pos()?)
            }
            E_CURPOS => Expr::CurPos(self.pos()?),
            E_HOMEPATH => {
                let s = self.string()?;
                Expr::HomePath(s, self.pos()?)
            }
            t => return Err(DecodeError::BadTag(t, "expression")),
        })
    }
}
