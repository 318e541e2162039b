//! Builtins touching the filesystem or the store in read-only mode: store
//! paths are computed (NAR hash, fingerprint) but nothing is written.

use std::rc::Rc;

use crate::error::EvalError;
use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::storepath::{self, make_fixed_output_path, make_text_path, nar_hash, nixbase32, sha256};
use crate::value::*;

/// How a source store path computed during evaluation is made.
#[derive(Debug, Clone)]
pub enum Source {
    /// `builtins.toFile`: name, contents, references.
    Text(String, Vec<u8>, Vec<String>),
    /// A filesystem path added whole (recursive, sha256) under a name.
    Path(String, String),
}

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("toFile", 2, to_file));
    t.push(("storePath", 1, store_path));
    t.push(("path", 1, path));
    t.push(("filterSource", 2, filter_source));
    t.push(("placeholder", 1, placeholder));
    t.push(("pathExists", 1, path_exists));
    t.push(("readFile", 1, read_file));
    t.push(("readDir", 1, read_dir));
    t.push(("readFileType", 1, read_file_type));
}

pub fn check_name(name: &str, p: Pos) -> R<()> {
    let ok = !name.is_empty()
        && name.len() <= 211
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c));
    if !ok {
        return err(format!("invalid store path name '{name}'"), p);
    }
    Ok(())
}

fn base_name(p: &str) -> &str {
    p.trim_end_matches('/').rsplit('/').next().unwrap_or("")
}

/// Computes the store path `path` would get when copied (as `"${path}"`).
pub fn copy_path_to_store(ev: &Ev, path: &str, pos: Pos) -> R<String> {
    if path.starts_with(&format!("{}/", ev.opts.store_dir)) {
        // already in the store: Nix copies it again under its own name
    }
    let name = base_name(path).to_string();
    add_path(ev, path, &name, None, pos)
}

fn add_path(ev: &Ev, path: &str, name: &str, filter: Option<&Value>, pos: Pos) -> R<String> {
    check_name(name, pos)?;
    if std::fs::symlink_metadata(path).is_err() {
        return err(format!("path '{path}' does not exist"), pos);
    }
    let mut ferr: Option<EvalError> = None;
    let mut f = |p: &str, ty: &str| -> Result<bool, String> {
        match filter {
            None => Ok(true),
            Some(fv) => {
                let r = ev
                    .call2(fv, Value::str(p.as_bytes().to_vec()), Value::str(ty), pos)
                    .and_then(|r| ev.force_bool(&r, pos));
                match r {
                    Ok(b) => Ok(b),
                    Err(e) => {
                        ferr = Some(e);
                        Err("filter failed".into())
                    }
                }
            }
        }
    };
    let h = if filter.is_some() {
        nar_hash(path, Some(&mut f))
    } else {
        nar_hash(path, None)
    };
    if let Some(e) = ferr {
        return Err(e);
    }
    let h = h.map_err(|e| EvalError::other(e, pos))?;
    let sp = make_fixed_output_path(&ev.opts.store_dir, true, "sha256", &h, name, &[])
        .map_err(|e| EvalError::other(e, pos))?;
    if filter.is_none() {
        ev.sources
            .borrow_mut()
            .insert(sp.clone(), Source::Path(path.to_string(), name.to_string()));
    }
    Ok(sp)
}

fn to_file(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let name = ev.force_string(&a[0], p)?;
    let s = ev.force_str(&a[1], p)?;
    check_name(&name, p)?;
    let mut refs = Vec::new();
    if let Some(c) = &s.ctx {
        for e in c.iter() {
            if e.starts_with('=') || e.starts_with('!') {
                return err(
                    format!("files created by builtins.toFile may not reference derivations, but {name} references {e}"),
                    p,
                );
            }
            refs.push(e.to_string());
        }
    }
    let path = make_text_path(&ev.opts.store_dir, &name, &s.s, &refs)
        .map_err(|e| EvalError::other(e, p))?;
    ev.sources.borrow_mut().insert(
        path.clone(),
        Source::Text(name.clone(), s.s.to_vec(), refs.clone()),
    );
    let mut ctx = Context::new();
    ctx.insert(Rc::from(path.as_str()));
    Ok(Value::str_ctx(path.into_bytes(), ctx))
}

fn store_path(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let path = ev.coerce_to_path(&a[0], p)?;
    let prefix = format!("{}/", ev.opts.store_dir);
    let Some(rest) = path.strip_prefix(&prefix) else {
        return err(format!("path '{path}' is not in the Nix store"), p);
    };
    let top = rest.split('/').next().unwrap_or("");
    let sp = format!("{prefix}{top}");
    let mut ctx = Context::new();
    ctx.insert(Rc::from(sp.as_str()));
    Ok(Value::str_ctx(path.into_bytes(), ctx))
}

fn path(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let args = ev.force_attrs(&a[0], p)?;
    let path = match args.get("path") {
        Some(x) => ev.coerce_to_path(x, p)?,
        None => {
            return err(
                "missing required 'path' attribute in the first argument to builtins.path",
                p,
            )
        }
    };
    let name = match args.get("name") {
        Some(x) => ev.force_string(x, p)?,
        None => base_name(&path).to_string(),
    };
    let filter = match args.get("filter") {
        Some(f) => Some(ev.force_fn(f, p)?),
        None => None,
    };
    let recursive = match args.get("recursive") {
        Some(r) => ev.force_bool(r, p)?,
        None => true,
    };
    let sp = if recursive {
        add_path(ev, &path, &name, filter.as_ref(), p)?
    } else {
        check_name(&name, p)?;
        let data = std::fs::read(&path)
            .map_err(|e| EvalError::other(format!("reading '{path}': {e}"), p))?;
        make_fixed_output_path(
            &ev.opts.store_dir,
            false,
            "sha256",
            &sha256(&data),
            &name,
            &[],
        )
        .map_err(|e| EvalError::other(e, p))?
    };
    if let Some(h) = args.get("sha256") {
        let h = ev.force_string(h, p)?;
        let _ = h;
    }
    let mut ctx = Context::new();
    ctx.insert(Rc::from(sp.as_str()));
    Ok(Value::str_ctx(sp.into_bytes(), ctx))
}

fn filter_source(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let path = ev.coerce_to_path(&a[1], p)?;
    let f = ev.force_fn(&a[0], p)?;
    let name = base_name(&path).to_string();
    let sp = add_path(ev, &path, &name, Some(&f), p)?;
    let mut ctx = Context::new();
    ctx.insert(Rc::from(sp.as_str()));
    Ok(Value::str_ctx(sp.into_bytes(), ctx))
}

fn placeholder(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let out = ev.force_string(&a[0], p)?;
    Ok(Value::str(format!(
        "/{}",
        nixbase32(&sha256(format!("nix-output:{out}").as_bytes()))
    )))
}

fn real_path(ev: &Ev, v: &Value, p: Pos) -> R<String> {
    ev.coerce_to_path(v, p)
}

fn path_exists(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let v = ev.force(&a[0])?;
    let must_dir = match &v {
        Value::Str(s) => s.s.ends_with(b"/") || s.s.ends_with(b"/."),
        _ => false,
    };
    let path = real_path(ev, &v, p)?;
    Ok(Value::Bool(if must_dir {
        std::fs::metadata(&path).is_ok_and(|m| m.is_dir())
    } else {
        std::fs::symlink_metadata(&path).is_ok()
    }))
}

fn read_file(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let path = real_path(ev, &a[0], p)?;
    let data = std::fs::read(&path)
        .map_err(|e| EvalError::other(format!("opening file '{path}': {e}"), p))?;
    if data.contains(&0) {
        return err(
            format!("the contents of the file '{path}' cannot be represented as a Nix string"),
            p,
        );
    }
    Ok(Value::str(data))
}

fn read_dir(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let path = real_path(ev, &a[0], p)?;
    let rd = std::fs::read_dir(&path)
        .map_err(|e| EvalError::other(format!("reading directory '{path}': {e}"), p))?;
    let mut entries = Vec::new();
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ty = match e.file_type() {
            Ok(t) => storepath::file_type_name(&t),
            Err(_) => "unknown",
        };
        entries.push((Rc::from(name.as_str()), Value::str(ty), Pos::none()));
    }
    Ok(Value::attrs(Attrs::from_unsorted(entries)))
}

fn read_file_type(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let path = real_path(ev, &a[0], p)?;
    let md = std::fs::symlink_metadata(&path)
        .map_err(|e| EvalError::other(format!("getting status of '{path}': {e}"), p))?;
    Ok(Value::str(storepath::file_type_name(&md.file_type())))
}
