//! `builtins.toJSON` (nlohmann layout) and `builtins.fromJSON` (serde_json).

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("toJSON", 1, to_json));
    t.push(("fromJSON", 1, from_json));
}

fn to_json(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let mut out = Vec::new();
    let mut ctx = Context::new();
    write_json(ev, &a[0], &mut out, &mut ctx, p, true)?;
    Ok(Value::str_ctx(out, ctx))
}

pub fn json_string(s: &[u8], out: &mut Vec<u8>, p: Pos) -> R<()> {
    let text = match std::str::from_utf8(s) {
        Ok(t) => t,
        Err(e) => {
            let b = s.get(e.valid_up_to()).copied().unwrap_or(0);
            return err(
                format!(
                    "[json.exception.type_error.316] invalid UTF-8 byte at index {}: 0x{:02X}",
                    e.valid_up_to(),
                    b
                ),
                p,
            );
        }
    };
    out.push(b'"');
    for c in text.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            c if (c as u32) < 0x20 => {
                out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes())
            }
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
    Ok(())
}

pub fn write_json(
    ev: &Ev,
    v: &Value,
    out: &mut Vec<u8>,
    ctx: &mut Context,
    p: Pos,
    copy: bool,
) -> R<()> {
    let d = ev.depth.get() + 1;
    if d > ev.opts.max_call_depth.min(10_000) + ev.depth_base.get() {
        return Err(crate::error::EvalError::new(
            crate::error::ErrorKind::StackOverflow,
            "stack overflow; max-call-depth exceeded",
            p,
        ));
    }
    ev.depth.set(d);
    let r = write_json_inner(ev, v, out, ctx, p, copy);
    ev.depth.set(d - 1);
    r
}

fn write_json_inner(
    ev: &Ev,
    v: &Value,
    out: &mut Vec<u8>,
    ctx: &mut Context,
    p: Pos,
    copy: bool,
) -> R<()> {
    let v = ev.force(v)?;
    match &v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Int(i) => out.extend_from_slice(i.to_string().as_bytes()),
        Value::Float(f) => out.extend_from_slice(crate::float_fmt::fmt_json(*f).as_bytes()),
        Value::Str(s) => {
            merge_ctx(ctx, &s.ctx);
            json_string(&s.s, out, p)?;
        }
        Value::Path(_) => {
            let (s, c) = ev.coerce_to_string(&v, copy, false, p)?;
            ctx.extend(c);
            json_string(&s, out, p)?;
        }
        Value::List(l) => {
            out.push(b'[');
            for (i, x) in l.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(ev, x, out, ctx, p, copy)?;
            }
            out.push(b']');
        }
        Value::Attrs(a) => {
            if a.get("__toString").is_some() {
                let (s, c) = ev.coerce_to_string(&v, copy, false, p)?;
                ctx.extend(c);
                return json_string(&s, out, p);
            }
            if let Some(o) = a.get("outPath") {
                return write_json(ev, o, out, ctx, p, copy);
            }
            out.push(b'{');
            for (i, (k, x, _)) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                json_string(k.as_bytes(), out, p)?;
                out.push(b':');
                write_json(ev, x, out, ctx, p, copy)
                    .map_err(|e| ev.frame(e, p, || format!("while evaluating attribute '{k}'")))?;
            }
            out.push(b'}');
        }
        v => return err(format!("cannot convert {} to JSON", v.type_name()), p),
    }
    Ok(())
}

fn from_json(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_str(&a[0], p)?;
    let j: serde_json::Value = serde_json::from_slice(&s.s).map_err(|e| {
        crate::error::EvalError::other(
            format!("[json.exception.parse_error.101] parse error: {e}"),
            p,
        )
    })?;
    conv(ev, &j, p)
}

fn no_nul(s: &str, p: Pos) -> R<()> {
    if s.contains('\0') {
        return err(format!("input string '{}' cannot be represented as Nix string because it contains null bytes", s.replace('\0', "␀")), p);
    }
    Ok(())
}

#[allow(clippy::only_used_in_recursion)]
fn conv(ev: &Ev, j: &serde_json::Value, p: Pos) -> R<Value> {
    Ok(match j {
        serde_json::Value::Null => Value::Null,
        serde_json::Value::Bool(b) => Value::Bool(*b),
        serde_json::Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Int(i)
            } else if let Some(u) = n.as_u64() {
                return err(
                    format!("unsigned json number {u} outside of Nix integer range"),
                    p,
                );
            } else {
                Value::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        serde_json::Value::String(s) => {
            no_nul(s, p)?;
            Value::str(s.as_bytes().to_vec())
        }
        serde_json::Value::Array(a) => {
            let mut v = Vec::with_capacity(a.len());
            for x in a {
                v.push(conv(ev, x, p)?);
            }
            Value::list(v)
        }
        serde_json::Value::Object(o) => {
            let mut v = Vec::with_capacity(o.len());
            for (k, x) in o {
                no_nul(k, p)?;
                v.push((Sym::from(k.as_str()), conv(ev, x, p)?, Pos::none()));
            }
            Value::attrs(Attrs::from_unsorted(v))
        }
    })
}
