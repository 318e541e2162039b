//! Printing values the way `nix-instantiate --eval` prints them, plus the
//! short forms used inside error messages and `trace`.

use std::fmt::Write;
use std::rc::Rc;

use rustc_hash::FxHashSet;

use crate::value::Value;

/// `%g` with precision 6, what Nix prints for floats.
pub fn fmt_float(f: f64) -> String {
    crate::float_fmt::fmt_g(f)
}

/// `%f`, what `toString` gives for floats.
pub fn fmt_float_tostring(f: f64) -> String {
    crate::float_fmt::fmt_f(f)
}

pub fn escape_str(s: &[u8], out: &mut String) {
    out.push('"');
    let text = String::from_utf8_lossy(s);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
}

const KEYWORDS: &[&str] = &[
    "if", "then", "else", "assert", "with", "let", "in", "rec", "inherit", "or",
];

pub fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '\'' || c == '-')
        && !KEYWORDS.contains(&s)
}

pub fn print_attr_name(s: &str, out: &mut String) {
    if is_ident(s) {
        out.push_str(s);
    } else {
        escape_str(s.as_bytes(), out);
    }
}

/// Prints an already (deeply or shallowly) evaluated value. Unevaluated
/// thunks print as `«thunk»`; sets and lists already printed print as
/// `«repeated»`.
pub fn print_value(v: &Value) -> String {
    let mut out = String::new();
    let mut seen = FxHashSet::default();
    pv(v, &mut out, &mut seen);
    out
}

fn pv(v: &Value, out: &mut String, seen: &mut FxHashSet<usize>) {
    pvk(v, out, seen, None)
}

/// `key` identifies the value's location (a thunk), as Nix tracks `Value*`
/// addresses for «repeated»; without one the set/list storage is used.
fn pvk(v: &Value, out: &mut String, seen: &mut FxHashSet<usize>, key: Option<usize>) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Float(f) => out.push_str(&fmt_float(*f)),
        Value::Str(s) => escape_str(&s.s, out),
        Value::Path(p) => out.push_str(p),
        Value::Attrs(a) => {
            if a.is_empty() {
                out.push_str("{ }");
                return;
            }
            if !seen.insert(key.unwrap_or(Rc::as_ptr(a) as usize)) {
                out.push_str("«repeated»");
                return;
            }
            out.push_str("{ ");
            for (k, v, _) in a.iter() {
                print_attr_name(k, out);
                out.push_str(" = ");
                pv(v, out, seen);
                out.push_str("; ");
            }
            out.push('}');
        }
        Value::List(l) => {
            if l.is_empty() {
                out.push_str("[ ]");
                return;
            }
            if !seen.insert(key.unwrap_or(Rc::as_ptr(l) as usize)) {
                out.push_str("«repeated»");
                return;
            }
            out.push_str("[ ");
            for v in l.iter() {
                pv(v, out, seen);
                out.push(' ');
            }
            out.push(']');
        }
        Value::Lambda(_) => out.push_str("<LAMBDA>"),
        Value::PrimOp(_) => out.push_str("<PRIMOP>"),
        Value::PrimOpApp(..) => out.push_str("<PRIMOP-APP>"),
        Value::Thunk(t) => match t.forced() {
            Some(v) => pvk(&v, out, seen, Some(Rc::as_ptr(t) as usize)),
            None => out.push_str("«thunk»"),
        },
    }
}

/// The abbreviated form used in error messages ("expected a set but found
/// an integer: 1").
pub fn print_short(v: &Value) -> String {
    let mut out = String::new();
    ps(v, &mut out, 0);
    out
}

fn ps(v: &Value, out: &mut String, depth: usize) {
    match v {
        Value::Attrs(a) => {
            if a.is_empty() {
                out.push_str("{ }");
                return;
            }
            if depth > 0 {
                out.push_str("{ ... }");
                return;
            }
            out.push_str("{ ");
            for (i, (k, v, _)) in a.iter().enumerate() {
                if i >= 10 {
                    let _ = write!(out, "«{} attributes elided»; ", a.len() - 10);
                    break;
                }
                print_attr_name(k, out);
                out.push_str(" = ");
                ps(v, out, depth + 1);
                out.push_str("; ");
            }
            out.push('}');
        }
        Value::List(l) => {
            if l.is_empty() {
                out.push_str("[ ]");
                return;
            }
            if depth > 0 {
                out.push_str("[ ... ]");
                return;
            }
            out.push_str("[ ");
            for (i, v) in l.iter().enumerate() {
                if i >= 10 {
                    let _ = write!(out, "«{} items elided» ", l.len() - 10);
                    break;
                }
                ps(v, out, depth + 1);
                out.push(' ');
            }
            out.push(']');
        }
        Value::Lambda(_) => out.push_str("«lambda»"),
        Value::PrimOp(p) => {
            let _ = write!(out, "«primop {}»", p.name);
        }
        Value::PrimOpApp(pa) => {
            let _ = write!(out, "«partially applied primop {}»", pa.op.name);
        }
        Value::Str(s) => {
            if s.s.len() > 1024 {
                let mut t = s.s[..1024].to_vec();
                t.extend_from_slice(b"");
                escape_str(&t, out);
                out.pop();
                let _ = write!(out, "\" «{} bytes elided»", s.s.len() - 1024);
            } else {
                escape_str(&s.s, out)
            }
        }
        Value::Thunk(t) => match t.forced() {
            Some(v) => ps(&v, out, depth),
            None => out.push_str("«thunk»"),
        },
        v => pv(v, out, &mut FxHashSet::default()),
    }
}
