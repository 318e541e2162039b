//! String-context builtins. Elements are stored encoded: `path` (opaque),
//! `=drv` (the drv and all its outputs), `!out!drv` (one built output).

use std::collections::BTreeMap;
use std::rc::Rc;

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("getContext", 1, get_context));
    t.push(("hasContext", 1, |ev, a, p| {
        Ok(Value::Bool(ev.force_str(&a[0], p)?.has_ctx()))
    }));
    t.push(("appendContext", 2, append_context));
    t.push(("unsafeDiscardStringContext", 1, discard));
    t.push(("unsafeDiscardOutputDependency", 1, discard_output_dep));
    t.push(("addDrvOutputDependencies", 1, add_drv_output_deps));
}

fn discard(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let (s, _) = ev.coerce_to_string(&a[0], true, false, p)?;
    Ok(Value::str(s))
}

fn get_context(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_str(&a[0], p)?;
    #[derive(Default)]
    struct Info {
        path: bool,
        all: bool,
        outs: Vec<String>,
    }
    let mut m: BTreeMap<String, Info> = BTreeMap::new();
    if let Some(c) = &s.ctx {
        for e in c.iter() {
            if let Some(d) = e.strip_prefix('=') {
                m.entry(d.to_string()).or_default().all = true;
            } else if let Some(rest) = e.strip_prefix('!') {
                if let Some((out, drv)) = rest.split_once('!') {
                    m.entry(drv.to_string())
                        .or_default()
                        .outs
                        .push(out.to_string());
                }
            } else {
                m.entry(e.to_string()).or_default().path = true;
            }
        }
    }
    let mut entries = Vec::new();
    for (k, mut i) in m {
        let mut fields = Vec::new();
        if i.all {
            fields.push(("allOutputs", Value::Bool(true)));
        }
        if !i.outs.is_empty() {
            i.outs.sort();
            fields.push((
                "outputs",
                Value::list(i.outs.into_iter().map(Value::str).collect()),
            ));
        }
        if i.path {
            fields.push(("path", Value::Bool(true)));
        }
        entries.push((
            Sym::from(k.as_str()),
            super::mk_attrs(ev, fields),
            Pos::none(),
        ));
    }
    Ok(Value::attrs(Attrs::from_sorted(entries)))
}

fn append_context(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_str(&a[0], p)?;
    let attrs = ev.force_attrs(&a[1], p)?;
    let mut ctx = Context::new();
    merge_ctx(&mut ctx, &s.ctx);
    let store = format!("{}/", ev.opts.store_dir);
    for (k, v, _) in attrs.iter() {
        if !k.starts_with(&store) {
            return err(format!("context key '{k}' is not a store path"), p);
        }
        let info = ev.force_attrs(v, p)?;
        if let Some(x) = info.get("path") {
            if ev.force_bool(x, p)? {
                ctx.insert(Rc::from(k.as_str()));
            }
        }
        if let Some(x) = info.get("allOutputs") {
            if ev.force_bool(x, p)? {
                if !k.ends_with(".drv") {
                    return err(format!("tried to add all-outputs context of {k}, which is not a derivation, to a string"), p);
                }
                ctx.insert(Rc::from(format!("={k}").as_str()));
            }
        }
        if let Some(x) = info.get("outputs") {
            let l = ev.force_list(x, p)?;
            if !l.is_empty() && !k.ends_with(".drv") {
                return err(format!("tried to add derivation output context of {k}, which is not a derivation, to a string"), p);
            }
            for o in l.iter() {
                let o = ev.force_string(o, p)?;
                ctx.insert(Rc::from(format!("!{o}!{k}").as_str()));
            }
        }
    }
    Ok(Value::str_ctx(s.s.clone(), ctx))
}

fn discard_output_dep(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_str(&a[0], p)?;
    let mut ctx = Context::new();
    if let Some(c) = &s.ctx {
        for e in c.iter() {
            match e.strip_prefix('=') {
                Some(d) => ctx.insert(Rc::from(d)),
                None => ctx.insert(e.clone()),
            };
        }
    }
    Ok(Value::str_ctx(s.s.clone(), ctx))
}

fn add_drv_output_deps(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_str(&a[0], p)?;
    let c: Vec<Rc<str>> = s
        .ctx
        .as_ref()
        .map(|c| c.iter().cloned().collect())
        .unwrap_or_default();
    if c.len() != 1 {
        return err(
            format!(
                "context of string '{}' must have exactly one element, but has {}",
                s.lossy(),
                c.len()
            ),
            p,
        );
    }
    let e = &c[0];
    let mut ctx = Context::new();
    if e.starts_with('=') {
        ctx.insert(e.clone());
    } else if let Some(rest) = e.strip_prefix('!') {
        let drv = rest.split_once('!').map(|x| x.1).unwrap_or("");
        return err(
            format!("`addDrvOutputDependencies` can only act on derivations, not on a derivation output such as '{}'", drv),
            p,
        );
    } else {
        if !e.ends_with(".drv") {
            return err(format!("path '{e}' is not a derivation"), p);
        }
        ctx.insert(Rc::from(format!("={e}").as_str()));
    }
    Ok(Value::str_ctx(s.s.clone(), ctx))
}
