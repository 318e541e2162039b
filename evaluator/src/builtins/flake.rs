//! `parseFlakeRef` and `flakeRefToString` for the common flake-reference
//! schemes (github/gitlab/sourcehut, path, git, tarball URLs, indirect).

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("parseFlakeRef", 1, parse_flake_ref));
    t.push(("flakeRefToString", 1, flake_ref_to_string));
}

fn is_rev(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|c| c.is_ascii_hexdigit())
}

fn parse_query(q: &str, out: &mut Vec<(String, Value)>) {
    for kv in q.split('&').filter(|x| !x.is_empty()) {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        let val = match k {
            "revCount" | "lastModified" | "narHash_" => v
                .parse::<i64>()
                .map(Value::Int)
                .unwrap_or_else(|_| Value::str(v)),
            "shallow" | "submodules" | "lfs" | "exportIgnore" => {
                Value::Bool(v == "1" || v == "true")
            }
            _ => Value::str(v),
        };
        out.push((k.to_string(), val));
    }
}

fn parse_flake_ref(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_string(&a[0], p)?;
    let (main, query) = s.split_once('?').unwrap_or((&s, ""));
    let mut out: Vec<(String, Value)> = Vec::new();
    if let Some((scheme, rest)) = main
        .split_once(':')
        .filter(|(sc, _)| matches!(*sc, "github" | "gitlab" | "sourcehut"))
    {
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() < 2 {
            return err(format!("'{s}' is not a valid flake reference"), p);
        }
        out.push(("type".into(), Value::str(scheme)));
        out.push(("owner".into(), Value::str(parts[0])));
        out.push(("repo".into(), Value::str(parts[1])));
        if parts.len() > 2 {
            let r = parts[2..].join("/");
            if is_rev(&r) {
                out.push(("rev".into(), Value::str(r)));
            } else {
                out.push(("ref".into(), Value::str(r)));
            }
        }
    } else if let Some(path) = main.strip_prefix("path:") {
        out.push(("type".into(), Value::str("path")));
        out.push(("path".into(), Value::str(path)));
    } else if main.starts_with('/') || main.starts_with('.') {
        out.push(("type".into(), Value::str("path")));
        out.push(("path".into(), Value::str(main)));
    } else if let Some(url) = main.strip_prefix("git+") {
        out.push(("type".into(), Value::str("git")));
        out.push(("url".into(), Value::str(url)));
    } else if let Some(id) =
        main.strip_prefix("flake:")
            .or(if main.contains(':') { None } else { Some(main) })
    {
        let mut it = id.splitn(3, '/');
        out.push(("type".into(), Value::str("indirect")));
        out.push(("id".into(), Value::str(it.next().unwrap_or(""))));
        if let Some(r) = it.next() {
            out.push((if is_rev(r) { "rev" } else { "ref" }.into(), Value::str(r)));
        }
        if let Some(r) = it.next() {
            out.push(("rev".into(), Value::str(r)));
        }
    } else if main.starts_with("http://")
        || main.starts_with("https://")
        || main.starts_with("file://")
    {
        out.push(("type".into(), Value::str("tarball")));
        out.push(("url".into(), Value::str(main)));
    } else {
        return err(format!("'{s}' is not a valid flake reference"), p);
    }
    parse_query(query, &mut out);
    Ok(Value::attrs(Attrs::from_unsorted(
        out.into_iter()
            .map(|(k, v)| (Sym::from(k.as_str()), v, Pos::none()))
            .collect(),
    )))
}

fn flake_ref_to_string(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let attrs = ev.force_attrs(&a[0], p)?;
    let mut fields: Vec<(String, String)> = Vec::new();
    for (k, v, _) in attrs.iter() {
        let s = match ev.force(v)? {
            Value::Str(s) => s.lossy(),
            Value::Int(i) => {
                if i < 0 {
                    return err(format!("negative value given for flake ref attr {k}: {i}"), p);
                }
                i.to_string()
            }
            Value::Bool(b) => if b { "1" } else { "0" }.to_string(),
            other => return err(format!("flake reference attribute sets may only contain integers, Booleans, and strings, but attribute '{k}' is {}", other.type_name()), p),
        };
        fields.push((k.to_string(), s));
    }
    let get = |n: &str| fields.iter().find(|f| f.0 == n).map(|f| f.1.clone());
    let ty = match get("type") {
        Some(t) => t,
        None => return err("attribute 'type' missing in call to 'fetchTree'", p),
    };
    let (mut base, used): (String, Vec<&str>) = match ty.as_str() {
        "github" | "gitlab" | "sourcehut" => {
            let mut b = format!(
                "{ty}:{}/{}",
                get("owner").unwrap_or_default(),
                get("repo").unwrap_or_default()
            );
            if let Some(r) = get("ref").or(get("rev")) {
                b.push('/');
                b.push_str(&r);
            }
            (b, vec!["type", "owner", "repo", "ref", "rev"])
        }
        "path" => (
            format!("path:{}", get("path").unwrap_or_default()),
            vec!["type", "path"],
        ),
        "git" => (
            format!("git+{}", get("url").unwrap_or_default()),
            vec!["type", "url"],
        ),
        "tarball" | "file" => (get("url").unwrap_or_default(), vec!["type", "url"]),
        "indirect" => {
            let mut b = format!("flake:{}", get("id").unwrap_or_default());
            for k in ["ref", "rev"] {
                if let Some(r) = get(k) {
                    b.push('/');
                    b.push_str(&r);
                }
            }
            (b, vec!["type", "id", "ref", "rev"])
        }
        t => return err(format!("unsupported flake reference type '{t}'"), p),
    };
    let q: Vec<String> = fields
        .iter()
        .filter(|f| !used.contains(&f.0.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if !q.is_empty() {
        base.push('?');
        base.push_str(&q.join("&"));
    }
    Ok(Value::str(base))
}
