//! String builtins: substrings, replacement, versions, paths as strings, regexes.

use std::rc::Rc;

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

use super::mk_attrs;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("substring", 3, substring));
    t.push(("stringLength", 1, string_length));
    t.push(("replaceStrings", 3, replace_strings));
    t.push(("concatStringsSep", 2, concat_strings_sep));
    t.push(("splitVersion", 1, split_version));
    t.push(("compareVersions", 2, compare_versions));
    t.push(("parseDrvName", 1, parse_drv_name));
    t.push(("baseNameOf", 1, base_name_of));
    t.push(("dirOf", 1, dir_of));
    t.push(("toPath", 1, to_path));
    t.push(("match", 2, rmatch));
    t.push(("split", 2, rsplit));
}

fn substring(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let start = ev.force_int(&a[0], p)?;
    let len = ev.force_int(&a[1], p)?;
    let (s, ctx) = ev.coerce_to_string(&a[2], true, false, p)?;
    if start < 0 {
        return err("negative start position in substring", p);
    }
    let start = (start as usize).min(s.len());
    let end = if len < 0 {
        s.len()
    } else {
        start.saturating_add(len as usize).min(s.len())
    };
    if start == 0 && end == s.len() {
        return Ok(Value::str_ctx(s, ctx));
    }
    Ok(Value::str_ctx(s[start..end].to_vec(), ctx))
}

fn string_length(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    // A string's length needs no copy of it.
    let v = ev.force(&a[0])?;
    if let Value::Str(s) = &v {
        return Ok(Value::Int(s.s.len() as i64));
    }
    let (s, _) = ev.coerce_to_string(&v, true, false, p)?;
    Ok(Value::Int(s.len() as i64))
}

fn replace_strings(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let from = ev.force_list(&a[0], p)?;
    let to = ev.force_list(&a[1], p)?;
    if from.len() != to.len() {
        return err(
            "'from' and 'to' arguments passed to builtins.replaceStrings have different lengths",
            p,
        );
    }
    let (s, mut ctx) = ev.coerce_to_string(&a[2], true, false, p)?;
    let mut froms = Vec::new();
    for f in from.iter() {
        froms.push(ev.force_str(f, p)?);
    }
    let mut cache: Vec<Option<Rc<NixStr>>> = vec![None; to.len()];
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    loop {
        let mut matched = false;
        for (j, f) in froms.iter().enumerate() {
            if s[i..].starts_with(&f.s) {
                if cache[j].is_none() {
                    cache[j] = Some(ev.force_str(&to[j], p)?);
                }
                let t = cache[j].as_ref().map(|x| x.clone()).unwrap_or_default();
                out.extend_from_slice(&t.s);
                merge_ctx(&mut ctx, &t.ctx);
                if f.s.is_empty() {
                    if i < s.len() {
                        out.push(s[i]);
                    }
                    i += 1;
                } else {
                    i += f.s.len();
                }
                matched = true;
                break;
            }
        }
        if !matched {
            if i < s.len() {
                out.push(s[i]);
            }
            i += 1;
        }
        if i > s.len() {
            break;
        }
    }
    Ok(Value::str_ctx(out, ctx))
}

fn concat_strings_sep(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let sep = ev.force_str(&a[0], p)?;
    let l = ev.force_list(&a[1], p)?;
    // Size the result by forcing the leading run of strings first: their
    // coercion cannot fail, so forcing them ahead raises the same first
    // error the coercion in order would.
    let mut size = sep.s.len() * l.len().saturating_sub(1);
    for x in l.iter() {
        match ev.force(x)? {
            Value::Str(s) => size += s.s.len(),
            _ => break,
        }
    }
    let mut out = Vec::with_capacity(size);
    let mut ctx = Context::new();
    merge_ctx(&mut ctx, &sep.ctx);
    for (i, x) in l.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(&sep.s);
        }
        ev.coerce_into(x, &mut out, &mut ctx, true, false, p)?;
    }
    Ok(Value::str_ctx(out, ctx))
}

/// Splits a version string into components the way Nix does.
pub fn version_components(s: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c.is_ascii_digit() {
            let st = i;
            while i < s.len() && s[i].is_ascii_digit() {
                i += 1;
            }
            out.push(s[st..i].to_vec());
        } else if c == b'.' || c == b'-' {
            i += 1;
        } else {
            let st = i;
            while i < s.len() && !s[i].is_ascii_digit() && s[i] != b'.' && s[i] != b'-' {
                i += 1;
            }
            out.push(s[st..i].to_vec());
        }
    }
    out
}

fn split_version(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let (s, _) = ev.coerce_to_string(&a[0], false, false, p)?;
    Ok(Value::list(
        version_components(&s).into_iter().map(Value::str).collect(),
    ))
}

fn comp_less(a: &[u8], b: &[u8]) -> bool {
    let num = |x: &[u8]| -> Option<u64> {
        if !x.is_empty() && x.iter().all(|c| c.is_ascii_digit()) {
            std::str::from_utf8(x).ok()?.parse().ok()
        } else {
            None
        }
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x < y,
        _ => {
            if (a.is_empty() && num(b).is_some()) || (a == b"pre" && b != b"pre") {
                true
            } else if b == b"pre" {
                false
            } else if num(b).is_some() {
                true
            } else if num(a).is_some() {
                false
            } else {
                a < b
            }
        }
    }
}

pub fn compare_versions_bytes(a: &[u8], b: &[u8]) -> i64 {
    let ca = version_components(a);
    let cb = version_components(b);
    let n = ca.len().max(cb.len());
    let empty: Vec<u8> = Vec::new();
    for i in 0..n {
        let x = ca.get(i).unwrap_or(&empty);
        let y = cb.get(i).unwrap_or(&empty);
        if comp_less(x, y) {
            return -1;
        }
        if comp_less(y, x) {
            return 1;
        }
    }
    0
}

fn compare_versions(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let x = ev.force_str(&a[0], p)?;
    let y = ev.force_str(&a[1], p)?;
    Ok(Value::Int(compare_versions_bytes(&x.s, &y.s)))
}

fn parse_drv_name(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let (s, _) = ev.coerce_to_string(&a[0], false, false, p)?;
    let mut split = s.len();
    for i in 0..s.len() {
        if s[i] == b'-' && i + 1 < s.len() && !s[i + 1].is_ascii_alphabetic() {
            split = i;
            break;
        }
    }
    let (name, version) = if split < s.len() {
        (&s[..split], &s[split + 1..])
    } else {
        (&s[..], &b""[..])
    };
    Ok(mk_attrs(
        ev,
        vec![
            ("name", Value::str(name.to_vec())),
            ("version", Value::str(version.to_vec())),
        ],
    ))
}

fn base_name_of(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let v = ev.force(&a[0])?;
    let (s, ctx) = ev.coerce_to_string(&v, false, false, p)?;
    let mut end = s.len();
    if end > 0 && s[end - 1] == b'/' {
        end -= 1;
    }
    let start = s[..end]
        .iter()
        .rposition(|c| *c == b'/')
        .map(|i| i + 1)
        .unwrap_or(0);
    Ok(Value::str_ctx(s[start..end].to_vec(), ctx))
}

fn dir_of(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let v = ev.force(&a[0])?;
    if let Value::Path(path) = &v {
        let d = match path.rfind('/') {
            Some(0) | None => "/".to_string(),
            Some(i) => path[..i].to_string(),
        };
        return Ok(Value::Path(d.into()));
    }
    let (s, ctx) = ev.coerce_to_string(&v, false, false, p)?;
    let d: Vec<u8> = match s.iter().rposition(|c| *c == b'/') {
        None => b".".to_vec(),
        Some(0) => b"/".to_vec(),
        Some(i) => s[..i].to_vec(),
    };
    Ok(Value::str_ctx(d, ctx))
}

/// `toPath` keeps the string context of its argument (a derivation turned
/// into a path still depends on it), as Nix does.
fn to_path(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let v = ev.force(&a[0])?;
    if let Value::Path(path) = &v {
        return Ok(Value::str(crate::ast::canon_path(path)));
    }
    let (s, ctx) = ev.coerce_to_string(&v, false, false, p)?;
    let s = String::from_utf8_lossy(&s).into_owned();
    if !s.starts_with('/') {
        return err(
            format!("string '{s}' doesn't represent an absolute path"),
            p,
        );
    }
    Ok(Value::str_ctx(crate::ast::canon_path(&s).into_bytes(), ctx))
}

fn compile(ev: &Ev, re: &[u8], p: Pos) -> R<crate::regex::Regex> {
    ev.regex_cache.borrow_mut().get(re).map_err(|e| {
        let what = if e.kind == crate::regex::ErrorKind::Space {
            "memory limit exceeded by regular expression".to_string()
        } else {
            "invalid regular expression".to_string()
        };
        crate::error::EvalError::other(format!("{what} '{}'", String::from_utf8_lossy(re)), p)
    })
}

fn rmatch(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let re = ev.force_str(&a[0], p)?;
    let s = ev.force_str(&a[1], p)?;
    let re = compile(ev, &re.s, p)?;
    let m = re
        .nix_match(&s.s)
        .map_err(|e| crate::error::EvalError::other(e.to_string(), p))?;
    match m {
        None => Ok(Value::Null),
        Some(groups) => Ok(Value::list(
            groups
                .into_iter()
                .map(|g| g.map(|x| Value::str(x.to_vec())).unwrap_or(Value::Null))
                .collect(),
        )),
    }
}

fn rsplit(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let re = ev.force_str(&a[0], p)?;
    let s = ev.force_str(&a[1], p)?;
    let re = compile(ev, &re.s, p)?;
    let items = re
        .nix_split(&s.s)
        .map_err(|e| crate::error::EvalError::other(e.to_string(), p))?;
    Ok(Value::list(
        items
            .into_iter()
            .map(|it| match it {
                crate::regex::SplitItem::Text(t) => Value::str(t.to_vec()),
                crate::regex::SplitItem::Groups(g) => Value::list(
                    g.into_iter()
                        .map(|x| x.map(|x| Value::str(x.to_vec())).unwrap_or(Value::Null))
                        .collect(),
                ),
            })
            .collect(),
    ))
}
