//! `derivationStrict`: turns an attribute set into a
//! `b3_store::derivation::Derivation` and lets `b3_store`'s `instantiate`
//! compute its output and `.drv` paths (inputs' modulo hashes from the
//! evaluator's `DrvHashCache`). Nothing is written here: the ATerm is kept
//! in `Ev::drvs` for `b3 instantiate` to write.

use std::collections::BTreeSet;
use std::rc::Rc;

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;
use b3_store::derivation::instantiate::{instantiate, OutputHashAttrs, OutputHashing};
use b3_store::derivation::{Derivation, DerivationError};
use b3_store::path::StoreDir;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("derivationStrict", 1, derivation_strict));
}

/// A derivation computed during evaluation, kept under its drv path so that
/// `b3 instantiate` can write the closure and later derivations can take it
/// as an input.
#[derive(Debug, Clone)]
pub struct Drv {
    pub name: String,
    pub drv: Derivation,
    /// The `.drv` file contents.
    pub aterm: String,
}

thread_local! {
    static KEEP_TEXT: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether derivations evaluated on this thread keep their `.drv` text and
/// environment (needed to write them, as `b3 instantiate` does). Queries
/// that only print paths (`b3 env -qa`) turn this off: of every derivation
/// only its outputs and inputs are kept, which is what later derivations
/// and reads of outputs need, at a fraction of the memory.
pub fn set_keep_drv_text(keep: bool) {
    KEEP_TEXT.with(|k| k.set(keep));
}

fn drv_err(e: impl std::fmt::Display, p: Pos) -> crate::error::EvalError {
    crate::error::EvalError::other(e.to_string(), p)
}

/// Nix adds, for a `=drv` (all outputs, deep) context, the whole closure
/// of the drv as input sources and every derivation in it as an input
/// derivation with all its outputs.
fn add_drv_closure(ev: &Ev, sd: &StoreDir, root: &str, d: &mut Derivation, p: Pos) -> R<()> {
    let mut todo = vec![root.to_string()];
    let mut seen = BTreeSet::new();
    while let Some(cur) = todo.pop() {
        if !seen.insert(cur.clone()) {
            continue;
        }
        let sp = sd.parse(&cur).map_err(|e| drv_err(e, p))?;
        if let Some(known) = ev.drvs.borrow().get(&cur) {
            let outs = ev
                .drv_outputs
                .borrow()
                .get(&cur)
                .cloned()
                .unwrap_or_default();
            d.input_drvs.entry(sp.clone()).or_default().extend(outs);
            for r in known.drv.references() {
                todo.push(sd.display(&r));
            }
        }
        d.input_srcs.insert(sp);
    }
    Ok(())
}

fn derivation_strict(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let attrs = ev.force_attrs(&a[0], p)?;
    let name = match attrs.get("name") {
        Some(n) => ev.force_string(n, p)?,
        None => return err("attribute 'name' missing", p),
    };
    super::store::check_name(&name, p).map_err(|_| {
        crate::error::EvalError::other(
            format!("invalid derivation name: name '{name}' contains illegal character '{}'. Please pass a different 'name'.",
                name.chars().find(|c| !(c.is_ascii_alphanumeric() || "+-._?=".contains(*c))).unwrap_or(' ')),
            p,
        )
    })?;
    let structured = match attrs.get("__structuredAttrs") {
        Some(v) => ev.force_bool(v, p)?,
        None => false,
    };
    let ignore_nulls = match attrs.get("__ignoreNulls") {
        Some(v) => ev.force_bool(v, p)?,
        None => false,
    };
    let mut drv = Derivation::default();
    let mut ctx = Context::new();
    let mut outputs: Vec<String> = vec!["out".into()];
    let mut output_hash: Option<String> = None;
    let mut output_hash_algo: Option<String> = None;
    let mut output_hash_mode: Option<String> = None;
    let mut json_entries: Vec<(Sym, Value, Pos)> = Vec::new();
    for (k, v, _) in attrs.iter() {
        let key: &str = k;
        if key == "__ignoreNulls" {
            continue;
        }
        let fv = ev.force(v)?;
        if ignore_nulls && matches!(fv, Value::Null) {
            continue;
        }
        let ctxerr = |e: crate::error::EvalError| {
            ev.frame(e, p, || {
                format!("while evaluating attribute '{key}' of derivation '{name}'")
            })
        };
        let as_string = |v: &Value, ctx: &mut Context| -> R<String> {
            let (s, c) = ev.coerce_to_string(v, true, true, p)?;
            ctx.extend(c);
            Ok(String::from_utf8_lossy(&s).into_owned())
        };
        if key == "args" && !structured {
            let l = ev.force_list(&fv, p).map_err(ctxerr)?;
            for x in l.iter() {
                drv.args.push(as_string(x, &mut ctx).map_err(ctxerr)?);
            }
            continue;
        }
        if matches!(key, "__contentAddressed" | "__impure") {
            ev.force_bool(&fv, p).map_err(ctxerr)?;
        }
        if key == "outputs" {
            let names: Vec<String> = if structured || matches!(fv, Value::List(_)) {
                let l = ev.force_list(&fv, p).map_err(ctxerr)?;
                let mut v = Vec::new();
                for x in l.iter() {
                    v.push(ev.force_string(x, p)?);
                }
                v
            } else {
                let (s, _) = ev.coerce_to_string(&fv, true, true, p).map_err(ctxerr)?;
                String::from_utf8_lossy(&s)
                    .split_whitespace()
                    .map(String::from)
                    .collect()
            };
            let mut outs = Vec::new();
            for o in names {
                if o == "drv" || o == "drvPath" {
                    return err(format!("invalid derivation output name '{o}'"), p);
                }
                if outs.contains(&o) {
                    return err(format!("duplicate derivation output '{o}'"), p);
                }
                outs.push(o);
            }
            if outs.is_empty() {
                return err("derivation cannot have an empty set of outputs", p);
            }
            outputs = outs;
        }
        if structured {
            if key == "__structuredAttrs" {
                continue;
            }
            json_entries.push((k.clone(), fv.clone(), Default::default()));
            match key {
                "builder" => drv.builder = ev.force_string(&fv, p)?,
                "system" => drv.system = ev.force_string(&fv, p)?,
                "outputHash" => output_hash = Some(ev.force_string(&fv, p)?),
                "outputHashAlgo" => output_hash_algo = Some(ev.force_string(&fv, p)?),
                "outputHashMode" => output_hash_mode = Some(ev.force_string(&fv, p)?),
                "args" => {
                    let l = ev.force_list(&fv, p)?;
                    for x in l.iter() {
                        drv.args.push(as_string(x, &mut ctx)?);
                    }
                }
                _ => {}
            }
            continue;
        }
        let s = as_string(&fv, &mut ctx).map_err(ctxerr)?;
        match key {
            "builder" => drv.builder = s.clone(),
            "system" => drv.system = s.clone(),
            "outputHash" => output_hash = Some(s.clone()),
            "outputHashAlgo" => output_hash_algo = Some(s.clone()),
            "outputHashMode" => output_hash_mode = Some(s.clone()),
            _ => {}
        }
        drv.env.insert(key.to_string(), s);
    }
    if structured {
        let mut out = Vec::new();
        let v = Value::attrs(Attrs::from_sorted(json_entries));
        super::json::write_json(ev, &v, &mut out, &mut ctx, p, true)?;
        drv.env
            .insert("__json".into(), String::from_utf8_lossy(&out).into_owned());
    }
    let sd = StoreDir::new(&ev.opts.store_dir).map_err(|e| drv_err(e, p))?;
    for e in ctx.iter() {
        if let Some(d) = e.strip_prefix('=') {
            add_drv_closure(ev, &sd, d, &mut drv, p)?;
        } else if let Some(rest) = e.strip_prefix('!') {
            if let Some((out, d)) = rest.split_once('!') {
                let dp = sd.parse(d).map_err(|e| drv_err(e, p))?;
                drv.input_drvs
                    .entry(dp)
                    .or_default()
                    .insert(out.to_string());
            }
        } else {
            drv.input_srcs
                .insert(sd.parse(e).map_err(|e| drv_err(e, p))?);
        }
    }
    if drv.builder.is_empty() && attrs.get("builder").is_none() {
        return err("required attribute 'builder' missing", p);
    }
    if attrs.get("system").is_none() {
        return err("required attribute 'system' missing", p);
    }
    // `__contentAddressed`/`__impure` need experimental features Nix 2.8
    // does not enable by default; they are treated as input-addressed.
    let hashing = OutputHashing::from_nix_attrs(OutputHashAttrs {
        output_hash: output_hash.as_deref(),
        output_hash_algo: output_hash_algo.as_deref(),
        output_hash_mode: output_hash_mode.as_deref(),
        content_addressed: false,
        impure: false,
    })
    .map_err(|e| drv_err(e, p))?;
    let output_names: BTreeSet<String> = outputs.iter().cloned().collect();
    let inst = {
        let cache = ev.drv_hashes.borrow();
        instantiate(drv, &name, &output_names, hashing, &sd, |ip| {
            cache
                .get(ip)
                .cloned()
                .ok_or_else(|| DerivationError::ReadInput {
                    path: sd.display(ip),
                    source: "don't know how to hash derivation (not evaluated here)".into(),
                })
        })
        .map_err(|e| drv_err(e, p))?
    };
    let drv_path = sd.display(&inst.drv_path);
    ev.drv_hashes
        .borrow_mut()
        .insert(inst.drv_path.clone(), inst.hash.clone());
    ev.drv_outputs
        .borrow_mut()
        .insert(drv_path.clone(), outputs.to_vec());
    let mut entries = Vec::new();
    let mut c = Context::new();
    c.insert(Rc::from(format!("={drv_path}").as_str()));
    entries.push((
        Sym::from("drvPath"),
        Value::str_ctx(drv_path.clone().into_bytes(), c),
        Pos::none(),
    ));
    for (o, out) in &inst.drv.outputs {
        let path = match out.path() {
            Some(sp) => sd.display(sp),
            None => inst.drv.env.get(o).cloned().unwrap_or_default(),
        };
        let mut c = Context::new();
        c.insert(Rc::from(format!("!{o}!{drv_path}").as_str()));
        entries.push((
            Sym::from(o.as_str()),
            Value::str_ctx(path.into_bytes(), c),
            Pos::none(),
        ));
    }
    let (mut kept, mut aterm) = (inst.drv, inst.aterm);
    if !KEEP_TEXT.with(|k| k.get()) {
        kept.env = Default::default();
        kept.args = Vec::new();
        aterm = String::new();
    }
    ev.drvs.borrow_mut().insert(
        drv_path,
        Rc::new(Drv {
            name,
            drv: kept,
            aterm,
        }),
    );
    Ok(Value::attrs(Attrs::from_unsorted(entries)))
}
