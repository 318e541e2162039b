//! Attribute-set builtins.

use std::rc::Rc;

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("attrNames", 1, attr_names));
    t.push(("attrValues", 1, attr_values));
    t.push(("getAttr", 2, get_attr));
    t.push(("hasAttr", 2, has_attr));
    t.push(("removeAttrs", 2, remove_attrs));
    t.push(("intersectAttrs", 2, intersect_attrs));
    t.push(("catAttrs", 2, cat_attrs));
    t.push(("mapAttrs", 2, map_attrs));
    t.push(("zipAttrsWith", 2, zip_attrs_with));
    t.push(("listToAttrs", 1, list_to_attrs));
}

fn attr_names(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_attrs(&a[0], p)?;
    Ok(Value::list(
        s.iter()
            .map(|e| Value::str(e.0.as_bytes().to_vec()))
            .collect(),
    ))
}

fn attr_values(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_attrs(&a[0], p)?;
    Ok(Value::list(s.iter().map(|e| e.1.clone()).collect()))
}

fn get_attr(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let k = ev.force_str(&a[0], p)?;
    let k = k.lossy_ref();
    let s = ev.force_attrs(&a[1], p)?;
    match s.get(&k) {
        Some(v) => ev.force(v),
        None => err(format!("attribute '{k}' missing"), p),
    }
}

fn has_attr(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let k = ev.force_str(&a[0], p)?;
    let k = k.lossy_ref();
    let s = ev.force_attrs(&a[1], p)?;
    Ok(Value::Bool(s.get(&k).is_some()))
}

fn remove_attrs(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_attrs(&a[0], p)?;
    let l = ev.force_list(&a[1], p)?;
    let mut names = Vec::new();
    for x in l.iter() {
        names.push(ev.force_string(x, p)?);
    }
    Ok(Value::attrs(Attrs::from_sorted(
        s.iter()
            .filter(|e| !names.iter().any(|n| n.as_str() == &*e.0))
            .cloned()
            .collect(),
    )))
}

fn intersect_attrs(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let x = ev.force_attrs(&a[0], p)?;
    let y = ev.force_attrs(&a[1], p)?;
    Ok(Value::attrs(x.intersect(&y)))
}

fn cat_attrs(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let k = ev.force_string(&a[0], p)?;
    let l = ev.force_list(&a[1], p)?;
    let mut out = Vec::new();
    for x in l.iter() {
        let s = ev.force_attrs(x, p)?;
        if let Some(v) = s.get(&k) {
            out.push(v.clone());
        }
    }
    Ok(Value::list(out))
}

fn map_attrs(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_attrs(&a[1], p)?;
    let f = a[0].clone();
    Ok(Value::attrs(Attrs::from_sorted(
        s.iter()
            .map(|(k, v, pos)| {
                let f = f.clone();
                let k2 = k.clone();
                let v = v.clone();
                let t = Value::native(Rc::new(move |ev: &Ev| {
                    ev.call2(&f, Value::str(k2.as_bytes().to_vec()), v.clone(), p)
                }));
                (k.clone(), t, *pos)
            })
            .collect(),
    )))
}

fn zip_attrs_with(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[1], p)?;
    let mut groups: std::collections::BTreeMap<Sym, Vec<Value>> = Default::default();
    for x in l.iter() {
        let s = ev.force_attrs(x, p)?;
        for (k, v, _) in s.iter() {
            groups.entry(k.clone()).or_default().push(v.clone());
        }
    }
    let f = a[0].clone();
    Ok(Value::attrs(Attrs::from_sorted(
        groups
            .into_iter()
            .map(|(k, vs)| {
                let f = f.clone();
                let k2 = k.clone();
                let vs = Value::list(vs);
                let t = Value::native(Rc::new(move |ev: &Ev| {
                    ev.call2(&f, Value::str(k2.as_bytes().to_vec()), vs.clone(), p)
                }));
                (k, t, Pos::none())
            })
            .collect(),
    )))
}

fn list_to_attrs(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[0], p)?;
    let mut v = Vec::with_capacity(l.len());
    for x in l.iter() {
        let s = ev.force_attrs(x, p)?;
        let name = match s.get("name") {
            Some(n) => ev.force_str(n, p)?,
            None => return err("attribute 'name' missing", p),
        };
        let value = match s.get_entry("value") {
            Some(e) => e.clone(),
            None => return err("attribute 'value' missing", p),
        };
        v.push((Sym::from(&*name.lossy_ref()), value.1, value.2));
    }
    Ok(Value::attrs(Attrs::from_unsorted_first(v)))
}
