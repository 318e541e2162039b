//! List builtins.

use std::rc::Rc;

use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

use super::mk_attrs;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("length", 1, |ev, a, p| {
        Ok(Value::Int(ev.force_list(&a[0], p)?.len() as i64))
    }));
    t.push(("head", 1, head));
    t.push(("tail", 1, tail));
    t.push(("elemAt", 2, elem_at));
    t.push(("elem", 2, elem));
    t.push(("map", 2, map));
    t.push(("filter", 2, filter));
    t.push(("foldl'", 3, foldl));
    t.push(("genList", 2, gen_list));
    t.push(("concatLists", 1, concat_lists));
    t.push(("concatMap", 2, concat_map));
    t.push(("any", 2, |ev, a, p| any_all(ev, a, p, true)));
    t.push(("all", 2, |ev, a, p| any_all(ev, a, p, false)));
    t.push(("sort", 2, sort));
    t.push(("partition", 2, partition));
    t.push(("groupBy", 2, group_by));
}

fn head(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[0], p)?;
    match l.first() {
        Some(v) => ev.force(v),
        None => err("'builtins.head' called on an empty list", p),
    }
}

fn tail(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[0], p)?;
    if l.is_empty() {
        return err("'builtins.tail' called on an empty list", p);
    }
    Ok(Value::List(Rc::new(l.tail())))
}

fn elem_at(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[0], p)?;
    let i = ev.force_int(&a[1], p)?;
    if i < 0 || i as usize >= l.len() {
        return err(
            format!(
                "'builtins.elemAt' called with index {i} on a list of size {}",
                l.len()
            ),
            p,
        );
    }
    ev.force(&l[i as usize])
}

fn elem(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[1], p)?;
    for x in l.iter() {
        if ev.eq_values(&a[0], x, p, false)? {
            return Ok(Value::Bool(true));
        }
    }
    Ok(Value::Bool(false))
}

/// A lazy application `f x`.
pub fn lazy_app(f: &Rc<LazyFn>, x: Value) -> Value {
    Value::Thunk(Rc::new(Thunk::new(ThunkState::Apply(f.clone(), x))))
}

/// `f x` for an element of `map`/`genList`: its value when `f` is a plain
/// lambda whose body [`Ev::pure_call`] can evaluate on `x` without failing
/// (`i: i * 2`), else a lazy application. No thunk is allocated then, and
/// laziness is unobservable: the value could not have failed or looped.
#[inline]
fn lazy_app_or_value(ev: &Ev, f: &Rc<LazyFn>, x: Value) -> Value {
    if let Value::Lambda(c) = &f.f {
        if c.lambda.pure {
            if let Some(v) = ev.pure_call(&c.lambda.body, std::slice::from_ref(&x), &c.env) {
                return v;
            }
        }
    }
    lazy_app(f, x)
}

fn map(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[1], p)?;
    let f = Rc::new(LazyFn {
        f: a[0].clone(),
        pos: p,
    });
    Ok(Value::list(
        l.iter()
            .map(|x| lazy_app_or_value(ev, &f, x.clone()))
            .collect(),
    ))
}

fn filter(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[1], p)?;
    let f = ev.force_fn(&a[0], p)?;
    let mut out = Vec::new();
    let mut same = true;
    for x in l.iter() {
        let r = ev.apply(&f, x.clone(), p)?;
        if ev.force_bool(&r, p)? {
            out.push(x.clone());
        } else {
            same = false;
        }
    }
    if same {
        return Ok(Value::List(l));
    }
    Ok(Value::list(out))
}

fn foldl(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let f = ev.force_fn(&a[0], p)?;
    let l = ev.force_list(&a[2], p)?;
    if l.is_empty() {
        return ev.force(&a[1]);
    }
    let mut acc = a[1].clone();
    for x in l.iter() {
        acc = ev.call2(&f, acc, x.clone(), p)?;
    }
    ev.force(&acc)
}

fn gen_list(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let n = ev.force_int(&a[1], p)?;
    if n < 0 {
        return err(format!("cannot create list of size {n}"), p);
    }
    let lf = Rc::new(LazyFn {
        f: ev.force_fn(&a[0], p)?,
        pos: p,
    });
    Ok(Value::list(
        (0..n)
            .map(|i| lazy_app_or_value(ev, &lf, Value::Int(i)))
            .collect(),
    ))
}

fn concat_lists(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[0], p)?;
    let mut out = Vec::new();
    for x in l.iter() {
        out.extend(ev.force_list(x, p)?.iter().cloned());
    }
    Ok(Value::list(out))
}

fn concat_map(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let f = ev.force_fn(&a[0], p)?;
    let l = ev.force_list(&a[1], p)?;
    let mut out = Vec::new();
    for x in l.iter() {
        let r = ev.apply(&f, x.clone(), p)?;
        out.extend(ev.force_list(&r, p)?.iter().cloned());
    }
    Ok(Value::list(out))
}

fn any_all(ev: &Ev, a: &[Value], p: Pos, any: bool) -> R<Value> {
    let f = ev.force_fn(&a[0], p)?;
    let l = ev.force_list(&a[1], p)?;
    for x in l.iter() {
        let r = ev.apply(&f, x.clone(), p)?;
        if ev.force_bool(&r, p)? == any {
            return Ok(Value::Bool(any));
        }
    }
    Ok(Value::Bool(!any))
}

fn sort(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[1], p)?;
    let f = ev.force_fn(&a[0], p)?;
    // Like Nix, every element is forced before the first comparison; the
    // sorted list then holds the values rather than their thunks.
    let v: Vec<Value> = l.iter().map(|x| ev.force(x)).collect::<R<_>>()?;
    if matches!(&f, Value::PrimOp(op) if op.name == "lessThan") {
        // `sort lessThan xs` (or `builtins.lessThan` passed through):
        // compare directly instead of calling the primop. Integers are a
        // total order and equal ones are indistinguishable, so any sort
        // gives Nix's result: sort the numbers themselves when every element
        // is one.
        if let Some(mut ints) = v
            .iter()
            .map(|x| match x {
                Value::Int(i) => Some(*i),
                _ => None,
            })
            .collect::<Option<Vec<i64>>>()
        {
            ints.sort_unstable();
            return Ok(Value::list(ints.into_iter().map(Value::Int).collect()));
        }
        let less = |x: &Value, y: &Value| -> R<bool> {
            match (x, y) {
                (Value::Int(i), Value::Int(j)) => Ok(i < j),
                _ => ev.less_than(x, y, p),
            }
        };
        return Ok(Value::list(merge_sort(v, &less)?));
    }
    let less = |x: &Value, y: &Value| -> R<bool> {
        let r = ev.call2(&f, x.clone(), y.clone(), p)?;
        ev.force_bool(&r, p)
    };
    Ok(Value::list(merge_sort(v, &less)?))
}

/// Stable merge sort that tolerates inconsistent comparators (as Nix's
/// `std::stable_sort` does) and propagates evaluation errors. Bottom-up:
/// insertion-sorted runs, then merges between two buffers.
pub fn merge_sort(mut v: Vec<Value>, less: &dyn Fn(&Value, &Value) -> R<bool>) -> R<Vec<Value>> {
    const RUN: usize = 8;
    let n = v.len();
    for start in (0..n).step_by(RUN) {
        let end = (start + RUN).min(n);
        for i in start + 1..end {
            let mut j = i;
            while j > start && less(&v[j], &v[j - 1])? {
                v.swap(j, j - 1);
                j -= 1;
            }
        }
    }
    if n <= RUN {
        return Ok(v);
    }
    let mut src = v;
    let mut dst: Vec<Value> = Vec::with_capacity(n);
    let mut width = RUN;
    while width < n {
        dst.clear();
        let mut lo = 0;
        while lo < n {
            let mid = (lo + width).min(n);
            let hi = (lo + 2 * width).min(n);
            let (left, right) = (&src[lo..mid], &src[mid..hi]);
            let (mut i, mut j) = (0, 0);
            while i < left.len() && j < right.len() {
                if less(&right[j], &left[i])? {
                    dst.push(right[j].clone());
                    j += 1;
                } else {
                    dst.push(left[i].clone());
                    i += 1;
                }
            }
            dst.extend_from_slice(&left[i..]);
            dst.extend_from_slice(&right[j..]);
            lo = hi;
        }
        std::mem::swap(&mut src, &mut dst);
        width *= 2;
    }
    Ok(src)
}

fn partition(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[1], p)?;
    let f = ev.force_fn(&a[0], p)?;
    let (mut r, mut w) = (Vec::new(), Vec::new());
    for x in l.iter() {
        let b = ev.apply(&f, x.clone(), p)?;
        if ev.force_bool(&b, p)? {
            r.push(x.clone());
        } else {
            w.push(x.clone());
        }
    }
    Ok(mk_attrs(
        ev,
        vec![("right", Value::list(r)), ("wrong", Value::list(w))],
    ))
}

fn group_by(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let l = ev.force_list(&a[1], p)?;
    let f = ev.force_fn(&a[0], p)?;
    let mut groups: std::collections::BTreeMap<Sym, Vec<Value>> = Default::default();
    for x in l.iter() {
        let k = ev.apply(&f, x.clone(), p)?;
        let k = ev.force_string(&k, p)?;
        groups
            .entry(Sym::from(k.as_str()))
            .or_default()
            .push(x.clone());
    }
    Ok(Value::attrs(Attrs::from_sorted(
        groups
            .into_iter()
            .map(|(k, v)| (k, Value::list(v), Pos::none()))
            .collect(),
    )))
}
