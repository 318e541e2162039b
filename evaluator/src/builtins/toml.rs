//! `builtins.fromTOML` on the `toml` 0.8 crate (TOML 1.0, as Nix's toml11).

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

use super::mk_attrs;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("fromTOML", 1, from_toml));
}

fn from_toml(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_str(&a[0], p)?;
    let text = String::from_utf8_lossy(&s.s);
    let v: toml::Table = match text.parse() {
        Ok(v) => v,
        Err(e) => return err(format!("while parsing TOML: {e}"), p),
    };
    conv(ev, &toml::Value::Table(v), p)
}

fn no_nul(s: &str, p: Pos) -> R<()> {
    if s.contains('\0') {
        return err(format!("input string '{}' cannot be represented as Nix string because it contains null bytes", s.replace('\0', "␀")), p);
    }
    Ok(())
}

fn fmt_time(t: &toml::value::Time) -> String {
    let mut s = format!("{:02}:{:02}:{:02}", t.hour, t.minute, t.second);
    let ns = t.nanosecond;
    if ns != 0 {
        if ns.is_multiple_of(1_000_000) {
            s.push_str(&format!(".{:03}", ns / 1_000_000));
        } else if ns.is_multiple_of(1000) {
            s.push_str(&format!(".{:06}", ns / 1000));
        } else {
            s.push_str(&format!(".{ns:09}"));
        }
    }
    s
}

fn fmt_datetime(d: &toml::value::Datetime) -> String {
    let mut s = String::new();
    if let Some(date) = &d.date {
        s.push_str(&format!(
            "{:04}-{:02}-{:02}",
            date.year, date.month, date.day
        ));
    }
    if let Some(t) = &d.time {
        if d.date.is_some() {
            s.push('T');
        }
        s.push_str(&fmt_time(t));
    }
    if let Some(o) = &d.offset {
        match o {
            toml::value::Offset::Z => s.push('Z'),
            toml::value::Offset::Custom { minutes } => {
                let sign = if *minutes < 0 { '-' } else { '+' };
                let m = minutes.unsigned_abs();
                s.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
            }
        }
    }
    s
}

fn conv(ev: &Ev, v: &toml::Value, p: Pos) -> R<Value> {
    Ok(match v {
        toml::Value::String(s) => {
            no_nul(s, p)?;
            Value::str(s.as_bytes().to_vec())
        }
        toml::Value::Integer(i) => Value::Int(*i),
        toml::Value::Float(f) => Value::Float(*f),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => {
            if !ev.has_feature("parse-toml-timestamps") {
                return err("while parsing TOML: Dates and times are not supported", p);
            }
            mk_attrs(
                ev,
                vec![
                    ("_type", Value::str("timestamp")),
                    ("value", Value::str(fmt_datetime(d))),
                ],
            )
        }
        toml::Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for x in a {
                out.push(conv(ev, x, p)?);
            }
            Value::list(out)
        }
        toml::Value::Table(t) => {
            let mut out = Vec::with_capacity(t.len());
            for (k, x) in t {
                no_nul(k, p)?;
                out.push((Sym::from(k.as_str()), conv(ev, x, p)?, Pos::none()));
            }
            Value::attrs(Attrs::from_unsorted(out))
        }
    })
}
