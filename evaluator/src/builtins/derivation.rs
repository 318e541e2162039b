//! `derivationStrict`: turns an attribute set into a store derivation,
//! computing output and `.drv` paths exactly as Nix does (read-only: the
//! ATerm text is kept in memory, not written to a store).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::storepath::{hex, make_fixed_output_path, make_store_path, make_text_path, sha256};
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("derivationStrict", 1, derivation_strict));
}

#[derive(Default, Clone)]
pub struct Drv {
    pub outputs: BTreeMap<String, (String, String, String)>,
    pub input_drvs: BTreeMap<String, BTreeSet<String>>,
    pub input_srcs: BTreeSet<String>,
    pub platform: String,
    pub builder: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
}

fn esc(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Drv {
    /// ATerm text; `input_override` replaces the inputDrvs list (for hashing modulo).
    pub fn aterm(&self, input_override: Option<&BTreeMap<String, BTreeSet<String>>>) -> String {
        let mut o = String::from("Derive([");
        for (i, (name, (path, algo, hash))) in self.outputs.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push('(');
            esc(name, &mut o);
            o.push(',');
            esc(path, &mut o);
            o.push(',');
            esc(algo, &mut o);
            o.push(',');
            esc(hash, &mut o);
            o.push(')');
        }
        o.push_str("],[");
        let inputs = input_override.unwrap_or(&self.input_drvs);
        for (i, (p, outs)) in inputs.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push('(');
            esc(p, &mut o);
            o.push_str(",[");
            for (j, out) in outs.iter().enumerate() {
                if j > 0 {
                    o.push(',');
                }
                esc(out, &mut o);
            }
            o.push_str("])");
        }
        o.push_str("],[");
        for (i, s) in self.input_srcs.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            esc(s, &mut o);
        }
        o.push_str("],");
        esc(&self.platform, &mut o);
        o.push(',');
        esc(&self.builder, &mut o);
        o.push_str(",[");
        for (i, a) in self.args.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            esc(a, &mut o);
        }
        o.push_str("],[");
        for (i, (k, v)) in self.env.iter().enumerate() {
            if i > 0 {
                o.push(',');
            }
            o.push('(');
            esc(k, &mut o);
            o.push(',');
            esc(v, &mut o);
            o.push(')');
        }
        o.push_str("])");
        o
    }
}

fn hash_modulo(ev: &Ev, d: &Drv, p: Pos) -> R<[u8; 32]> {
    if d.outputs.len() == 1 {
        if let Some((path, algo, hash)) = d.outputs.get("out") {
            if !hash.is_empty() {
                return Ok(sha256(format!("fixed:out:{algo}:{hash}:{path}").as_bytes()));
            }
        }
    }
    let mut replaced: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (drv, outs) in &d.input_drvs {
        let h = match ev.drv_hashes.borrow().get(drv) {
            Some(h) => *h,
            None => {
                return err(
                    format!("don't know how to hash derivation '{drv}' (not evaluated here)"),
                    p,
                )
            }
        };
        replaced
            .entry(hex(&h))
            .or_default()
            .extend(outs.iter().cloned());
    }
    Ok(sha256(d.aterm(Some(&replaced)).as_bytes()))
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
    let mut drv = Drv::default();
    let mut ctx = Context::new();
    let mut outputs: Vec<String> = vec!["out".into()];
    let mut output_hash: Option<String> = None;
    let mut output_hash_algo: Option<String> = None;
    let mut output_hash_mode = "flat".to_string();
    let mut json_entries: Vec<(Sym, Value, Pos)> = Vec::new();
    for (k, v, _) in &attrs.entries {
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
                String::from_utf8_lossy(&s).split_whitespace().map(String::from).collect()
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
                "system" => drv.platform = ev.force_string(&fv, p)?,
                "outputHash" => output_hash = Some(ev.force_string(&fv, p)?),
                "outputHashAlgo" => output_hash_algo = Some(ev.force_string(&fv, p)?),
                "outputHashMode" => output_hash_mode = ev.force_string(&fv, p)?,
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
            "system" => drv.platform = s.clone(),
            "outputHash" => output_hash = Some(s.clone()),
            "outputHashAlgo" => output_hash_algo = Some(s.clone()),
            "outputHashMode" => output_hash_mode = s.clone(),
            _ => {}
        }
        drv.env.insert(key.to_string(), s);
    }
    if structured {
        let mut out = Vec::new();
        let v = Value::attrs(Attrs {
            entries: json_entries,
        });
        super::json::write_json(ev, &v, &mut out, &mut ctx, p, true)?;
        drv.env
            .insert("__json".into(), String::from_utf8_lossy(&out).into_owned());
    }
    // inputs from context
    for e in ctx.iter() {
        if let Some(d) = e.strip_prefix('=') {
            let outs = ev.drv_outputs.borrow().get(d).cloned().unwrap_or_default();
            drv.input_drvs
                .entry(d.to_string())
                .or_default()
                .extend(outs);
            drv.input_srcs.insert(d.to_string());
        } else if let Some(rest) = e.strip_prefix('!') {
            if let Some((out, d)) = rest.split_once('!') {
                drv.input_drvs
                    .entry(d.to_string())
                    .or_default()
                    .insert(out.to_string());
            }
        } else {
            drv.input_srcs.insert(e.to_string());
        }
    }
    if drv.builder.is_empty() && attrs.get("builder").is_none() {
        return err("required attribute 'builder' missing", p);
    }
    if attrs.get("system").is_none() {
        return err("required attribute 'system' missing", p);
    }
    let store = ev.opts.store_dir.clone();
    if let Some(h) = &output_hash {
        if outputs.len() != 1 || outputs[0] != "out" {
            return err(
                "multiple outputs are not supported in fixed-output derivations",
                p,
            );
        }
        let algo = output_hash_algo.clone().filter(|a| !a.is_empty());
        let (algo, bytes) = super::hash::parse_hash(h, algo.as_deref())
            .map_err(|e| crate::error::EvalError::other(e, p))?;
        let recursive = match output_hash_mode.as_str() {
            "recursive" | "nar" => true,
            "flat" => false,
            m => {
                return err(
                    format!("invalid value '{m}' for 'outputHashMode' attribute"),
                    p,
                )
            }
        };
        let out_path = make_fixed_output_path(&store, recursive, &algo, &bytes, &name, &[]);
        drv.env.insert("out".into(), out_path.clone());
        drv.outputs.insert(
            "out".into(),
            (
                out_path,
                format!("{}{algo}", if recursive { "r:" } else { "" }),
                hex(&bytes),
            ),
        );
    } else {
        for o in &outputs {
            drv.env.insert(o.clone(), String::new());
            drv.outputs
                .insert(o.clone(), (String::new(), String::new(), String::new()));
        }
        let h = hash_modulo(ev, &drv, p)?;
        for o in &outputs {
            let pname = if o == "out" {
                name.clone()
            } else {
                format!("{name}-{o}")
            };
            let path = make_store_path(&store, &format!("output:{o}"), &h, &pname);
            drv.env.insert(o.clone(), path.clone());
            if let Some(x) = drv.outputs.get_mut(o) {
                x.0 = path;
            }
        }
    }
    let aterm = drv.aterm(None);
    let mut refs: Vec<String> = drv.input_srcs.iter().cloned().collect();
    refs.extend(drv.input_drvs.keys().cloned());
    refs.sort();
    refs.dedup();
    let drv_path = make_text_path(&store, &format!("{name}.drv"), aterm.as_bytes(), &refs);
    let hm = hash_modulo(ev, &drv, p)?;
    ev.drv_hashes.borrow_mut().insert(drv_path.clone(), hm);
    ev.drv_outputs
        .borrow_mut()
        .insert(drv_path.clone(), outputs.to_vec());
    ev.drvs
        .borrow_mut()
        .insert(drv_path.clone(), Rc::new(drv.clone()));
    let mut entries = Vec::new();
    let mut c = Context::new();
    c.insert(Rc::from(format!("={drv_path}").as_str()));
    entries.push((
        Rc::from("drvPath"),
        Value::str_ctx(drv_path.clone().into_bytes(), c),
        Pos::none(),
    ));
    for (o, (path, _, _)) in &drv.outputs {
        let mut c = Context::new();
        c.insert(Rc::from(format!("!{o}!{drv_path}").as_str()));
        entries.push((
            Rc::from(o.as_str()),
            Value::str_ctx(path.clone().into_bytes(), c),
            Pos::none(),
        ));
    }
    Ok(Value::attrs(Attrs::from_unsorted(entries)))
}
