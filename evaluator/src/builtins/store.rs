//! Builtins touching the filesystem or the store: source paths are computed
//! (NAR hash, fingerprint) and recorded for `b3 instantiate` to add;
//! filtered and flat `builtins.path` results go into the store at once in
//! write mode (see `storepath::StoreOptions`). Reads go through
//! `storepath::realise_path`, which also triggers import from derivation.

use std::rc::Rc;

use crate::error::EvalError;
use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::storepath::{self, make_fixed_output_path, make_text_path, nar_hash, nixbase32, sha256};
use crate::value::*;
use b3_store::hash::{Hash, HashAlgo};

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
/// Each path is hashed once per evaluation (Nix's `srcToStore` cache);
/// later coercions of the same path reuse the first result, as Nix's do,
/// even if the file changed in between.
pub fn copy_path_to_store(ev: &Ev, path: &str, pos: Pos) -> R<String> {
    if let Some(sp) = ev.store_io.copied_source(path) {
        return Ok(sp);
    }
    // A path already in the store is copied again under its own name, as
    // Nix does.
    let name = base_name(path).to_string();
    let sp = add_path(ev, path, &name, None, pos)?;
    ev.store_io.record_copied_source(path, &sp);
    Ok(sp)
}

fn add_path(ev: &Ev, logical: &str, name: &str, filter: Option<&Value>, pos: Pos) -> R<String> {
    check_name(name, pos)?;
    // Read from where the contents are; the filter sees logical paths.
    let real = storepath::realise_path(ev, logical).map_err(|e| EvalError::other(e, pos))?;
    let path = real.as_str();
    if std::fs::symlink_metadata(path).is_err() {
        return err(format!("path '{logical}' does not exist"), pos);
    }
    let ferr: std::cell::RefCell<Option<EvalError>> = std::cell::RefCell::new(None);
    let mut f = |p: &str, ty: &str| -> Result<bool, String> {
        match filter {
            None => Ok(true),
            Some(fv) => {
                let shown = match p.strip_prefix(path) {
                    Some(rest) if path != logical => format!("{logical}{rest}"),
                    _ => p.to_string(),
                };
                let r = ev
                    .call2(fv, Value::str(shown.into_bytes()), Value::str(ty), pos)
                    .and_then(|r| ev.force_bool(&r, pos));
                match r {
                    Ok(b) => Ok(b),
                    Err(e) => {
                        *ferr.borrow_mut() = Some(e);
                        Err("filter failed".into())
                    }
                }
            }
        }
    };
    // A filtered tree going into the store is copied once (the filter runs
    // once per entry) and hashed as copied; otherwise it is hashed in place.
    let copy = if filter.is_some() && ev.opts.store.write {
        let dst = ev
            .store_io
            .scratch_path(name)
            .map_err(|e| EvalError::other(e, pos))?;
        let r = storepath::copy_filtered(path, &dst, &mut f);
        if let Some(e) = ferr.borrow_mut().take() {
            return Err(e);
        }
        r.map_err(|e| EvalError::other(e, pos))?;
        Some(dst)
    } else {
        None
    };
    let h = match (&copy, filter) {
        (Some(dst), _) => nar_hash(&dst.to_string_lossy(), None),
        (None, Some(_)) => nar_hash(path, Some(&mut f)),
        (None, None) => nar_hash(path, None),
    };
    if let Some(e) = ferr.borrow_mut().take() {
        return Err(e);
    }
    let h = h.map_err(|e| EvalError::other(e, pos))?;
    let sp = make_fixed_output_path(&ev.opts.store_dir, true, "sha256", &h, name, &[])
        .map_err(|e| EvalError::other(e, pos))?;
    match copy {
        Some(dst) => {
            storepath::add_computed(ev, &dst, name, true, &sp)
                .map_err(|e| EvalError::other(e, pos))?;
            let _ = std::fs::remove_dir_all(&dst);
        }
        None if filter.is_none() => {
            ev.sources
                .borrow_mut()
                .insert(sp.clone(), Source::Path(path.to_string(), name.to_string()));
        }
        // Read-only mode: reads of the filtered path see the unfiltered tree.
        None => ev
            .store_io
            .record_local(&sp, std::path::PathBuf::from(path)),
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
    let mut path = None;
    let mut name = None;
    let mut filter = None;
    let mut recursive = true;
    let mut expected = None;
    for (k, v, _) in args.iter() {
        match &**k {
            "path" => path = Some(ev.coerce_to_path(v, p)?),
            "name" => name = Some(ev.force_string(v, p)?),
            "filter" => filter = Some(ev.force_fn(v, p)?),
            "recursive" => recursive = ev.force_bool(v, p)?,
            "sha256" => {
                let h = ev.force_string(v, p)?;
                if !h.is_empty() {
                    let h = Hash::parse_any(&h, Some(HashAlgo::Sha256))
                        .map_err(|e| EvalError::other(format!("invalid hash '{h}': {e}"), p))?;
                    expected = Some(h);
                }
            }
            other => return err(format!("unsupported argument '{other}' to 'addPath'"), p),
        }
    }
    let Some(path) = path else {
        return err(
            "missing required 'path' attribute in the first argument to builtins.path",
            p,
        );
    };
    let name = name.unwrap_or_else(|| base_name(&path).to_string());
    let sp = if recursive {
        add_path(ev, &path, &name, filter.as_ref(), p)?
    } else {
        check_name(&name, p)?;
        let path = storepath::realise_path(ev, &path).map_err(|e| EvalError::other(e, p))?;
        let data = std::fs::read(&path)
            .map_err(|e| EvalError::other(format!("reading '{path}': {e}"), p))?;
        let sp = make_fixed_output_path(
            &ev.opts.store_dir,
            false,
            "sha256",
            &sha256(&data),
            &name,
            &[],
        )
        .map_err(|e| EvalError::other(e, p))?;
        if ev.opts.store.write {
            storepath::add_computed(ev, std::path::Path::new(&path), &name, false, &sp)
                .map_err(|e| EvalError::other(e, p))?;
        } else {
            ev.store_io
                .record_local(&sp, std::path::PathBuf::from(&path));
        }
        sp
    };
    if let Some(h) = expected {
        let want = make_fixed_output_path(
            &ev.opts.store_dir,
            recursive,
            "sha256",
            h.as_bytes(),
            &name,
            &[],
        )
        .map_err(|e| EvalError::other(e, p))?;
        if want != sp {
            return err(
                format!("store path mismatch in (possibly filtered) path added from '{path}'"),
                p,
            );
        }
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

/// The on-disk location of a path argument (store paths may live in the b3
/// store or a scratch directory, or need building first).
fn real_path(ev: &Ev, v: &Value, p: Pos) -> R<String> {
    let path = ev.coerce_to_path(v, p)?;
    storepath::realise_path(ev, &path).map_err(|e| EvalError::other(e, p))
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
        entries.push((Sym::from(name.as_str()), Value::str(ty), Pos::none()));
    }
    Ok(Value::attrs(Attrs::from_unsorted(entries)))
}

fn read_file_type(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let path = real_path(ev, &a[0], p)?;
    let md = std::fs::symlink_metadata(&path)
        .map_err(|e| EvalError::other(format!("getting status of '{path}': {e}"), p))?;
    Ok(Value::str(storepath::file_type_name(&md.file_type())))
}
