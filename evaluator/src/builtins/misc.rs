//! Control, type, arithmetic and tracing builtins, plus `import`.

use crate::ast::BinOp;
use crate::error::{ErrorKind, EvalError};
use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::value::*;

use super::mk_attrs;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("abort", 1, abort));
    t.push(("throw", 1, throw));
    t.push(("seq", 2, seq));
    t.push(("deepSeq", 2, deep_seq));
    t.push(("trace", 2, trace));
    t.push(("traceVerbose", 2, trace_verbose));
    t.push(("warn", 2, warn));
    t.push(("break", 1, brk));
    t.push(("tryEval", 1, try_eval));
    t.push(("addErrorContext", 2, add_error_context));
    t.push(("unsafeGetAttrPos", 2, unsafe_get_attr_pos));
    t.push(("getEnv", 1, get_env));
    t.push(("import", 1, import));
    t.push(("scopedImport", 2, scoped_import));
    t.push(("typeOf", 1, type_of));
    t.push(("isNull", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::Null)))
    }));
    t.push(("isFunction", 1, |ev, a, _| {
        Ok(Value::Bool(ev.force(&a[0])?.is_function()))
    }));
    t.push(("isString", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::Str(_))))
    }));
    t.push(("isInt", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::Int(_))))
    }));
    t.push(("isFloat", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::Float(_))))
    }));
    t.push(("isBool", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::Bool(_))))
    }));
    t.push(("isPath", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::Path(_))))
    }));
    t.push(("isAttrs", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::Attrs(_))))
    }));
    t.push(("isList", 1, |ev, a, _| {
        Ok(Value::Bool(matches!(ev.force(&a[0])?, Value::List(_))))
    }));
    t.push(("add", 2, |ev, a, p| arith(ev, BinOp::Add, a, p)));
    t.push(("sub", 2, |ev, a, p| arith(ev, BinOp::Sub, a, p)));
    t.push(("mul", 2, |ev, a, p| arith(ev, BinOp::Mul, a, p)));
    t.push(("div", 2, |ev, a, p| arith(ev, BinOp::Div, a, p)));
    t.push(("lessThan", 2, |ev, a, p| {
        Ok(Value::Bool(ev.less_than(&a[0], &a[1], p)?))
    }));
    t.push(("bitAnd", 2, |ev, a, p| {
        Ok(Value::Int(
            ev.force_int(&a[0], p)? & ev.force_int(&a[1], p)?,
        ))
    }));
    t.push(("bitOr", 2, |ev, a, p| {
        Ok(Value::Int(
            ev.force_int(&a[0], p)? | ev.force_int(&a[1], p)?,
        ))
    }));
    t.push(("bitXor", 2, |ev, a, p| {
        Ok(Value::Int(
            ev.force_int(&a[0], p)? ^ ev.force_int(&a[1], p)?,
        ))
    }));
    t.push(("ceil", 1, |ev, a, p| round(ev, a, p, f64::ceil)));
    t.push(("floor", 1, |ev, a, p| round(ev, a, p, f64::floor)));
    t.push(("toString", 1, to_string));
    t.push(("functionArgs", 1, function_args));
    t.push(("genericClosure", 1, generic_closure));
    t.push(("findFile", 2, find_file));
    t.push(("fetchurl", 1, no_fetch));
    t.push(("fetchTarball", 1, no_fetch));
    t.push(("fetchGit", 1, no_fetch));
    t.push(("fetchMercurial", 1, no_fetch));
    t.push(("fetchTree", 1, no_fetch));
    t.push(("fetchClosure", 1, no_fetch));
    t.push(("getFlake", 1, no_fetch));
}

fn abort(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let (s, _) = ev.coerce_to_string(&a[0], false, true, p)?;
    Err(EvalError::new(
        ErrorKind::Abort,
        format!(
            "evaluation aborted with the following error message: '{}'",
            String::from_utf8_lossy(&s)
        ),
        p,
    ))
}

fn throw(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let (s, _) = ev.coerce_to_string(&a[0], false, true, p)?;
    Err(EvalError::new(
        ErrorKind::Throw,
        String::from_utf8_lossy(&s).into_owned(),
        p,
    ))
}

fn seq(ev: &Ev, a: &[Value], _p: Pos) -> R<Value> {
    ev.force(&a[0])?;
    ev.force(&a[1])
}

fn deep_seq(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    ev.deep_force(&a[0], p)?;
    ev.force(&a[1])
}

fn trace(ev: &Ev, a: &[Value], _p: Pos) -> R<Value> {
    let v = ev.force(&a[0])?;
    let text = match &v {
        Value::Str(s) => s.lossy(),
        v => crate::print::print_value(v),
    };
    eprintln!("trace: {text}");
    ev.force(&a[1])
}

fn trace_verbose(ev: &Ev, a: &[Value], _p: Pos) -> R<Value> {
    ev.force(&a[1])
}

fn warn(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let s = ev.force_str(&a[0], p)?;
    let text = s.lossy();
    eprintln!(
        "evaluation warning: {}",
        text.replace('\n', "\n                    ")
    );
    if ev.opts.abort_on_warn {
        return Err(EvalError::other(
            "aborting to reveal stack trace of warning, as abort-on-warn is set",
            p,
        ));
    }
    ev.force(&a[1])
}

fn brk(ev: &Ev, a: &[Value], _p: Pos) -> R<Value> {
    ev.force(&a[0])
}

fn try_eval(ev: &Ev, a: &[Value], _p: Pos) -> R<Value> {
    match ev.force(&a[0]) {
        Ok(v) => Ok(mk_attrs(
            ev,
            vec![("success", Value::Bool(true)), ("value", v)],
        )),
        Err(e) if e.is_catchable() => Ok(mk_attrs(
            ev,
            vec![
                ("success", Value::Bool(false)),
                ("value", Value::Bool(false)),
            ],
        )),
        Err(e) => Err(e),
    }
}

fn add_error_context(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    match ev.force(&a[1]) {
        Ok(v) => Ok(v),
        Err(e) => {
            if ev.opts.show_trace {
                if let Ok((s, _)) = ev.coerce_to_string(&a[0], false, false, p) {
                    return Err(e.with_frame(Pos::none(), String::from_utf8_lossy(&s).into_owned()));
                }
            }
            Err(e)
        }
    }
}

fn unsafe_get_attr_pos(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let name = ev.force_string(&a[0], p)?;
    let attrs = ev.force_attrs(&a[1], p)?;
    match attrs.get_entry(&name) {
        Some((_, _, pos)) => Ok(ev.pos_value(*pos)),
        None => Ok(Value::Null),
    }
}

fn get_env(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let name = ev.force_string(&a[0], p)?;
    Ok(Value::str(
        std::env::var_os(&name)
            .map(|v| v.into_encoded_bytes())
            .unwrap_or_default(),
    ))
}

fn import(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let path = ev.coerce_to_path(&a[0], p)?;
    ev.import_file(&path, p)
}

fn scoped_import(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let scope = ev.force_attrs(&a[0], p)?;
    let path = ev.coerce_to_path(&a[1], p)?;
    let names: Vec<Sym> = scope.iter().map(|e| e.0.clone()).collect();
    let vals: Vec<Value> = scope.iter().map(|e| e.1.clone()).collect();
    let e = ev.parse_file(&path, p, Some(&names))?;
    let env = Env::new(Some(ev.globals_env.clone()), Slots::from_vec(vals));
    ev.eval(e, &env)
}

fn type_of(ev: &Ev, a: &[Value], _p: Pos) -> R<Value> {
    Ok(Value::str(ev.force(&a[0])?.type_of()))
}

fn arith(ev: &Ev, op: BinOp, a: &[Value], p: Pos) -> R<Value> {
    let x = ev.force(&a[0])?;
    let y = ev.force(&a[1])?;
    for v in [&x, &y] {
        if !matches!(v, Value::Int(_) | Value::Float(_)) {
            return err(
                format!(
                    "expected an integer but found {}: {}",
                    v.type_name(),
                    ev.show_short(v)
                ),
                p,
            );
        }
    }
    ev.arith(op, x, y, p)
}

fn round(ev: &Ev, a: &[Value], p: Pos, f: fn(f64) -> f64) -> R<Value> {
    match ev.force(&a[0])? {
        Value::Int(i) => Ok(Value::Int(i)),
        Value::Float(x) => {
            let r = f(x);
            if !(-9.223372036854776e18..9.223372036854776e18).contains(&r) {
                return err(
                    format!(
                        "float {} cannot be represented as an integer",
                        crate::print::fmt_float(x)
                    ),
                    p,
                );
            }
            Ok(Value::Int(r as i64))
        }
        v => err(
            format!(
                "expected a float but found {}: {}",
                v.type_name(),
                ev.show_short(&v)
            ),
            p,
        ),
    }
}

fn to_string(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    // A string is its own `toString` (context included): share it.
    let v = ev.force(&a[0])?;
    match &v {
        Value::Str(_) => return Ok(v),
        Value::Int(i) => return Ok(Value::str(i.to_string())),
        _ => {}
    }
    let (s, c) = ev.coerce_to_string(&v, false, true, p)?;
    Ok(Value::str_ctx(s, c))
}

fn function_args(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    match ev.force(&a[0])? {
        Value::Lambda(c) => match &c.lambda.param {
            crate::ast::Param::Ident(_) => Ok(Value::attrs(Attrs::default())),
            crate::ast::Param::Pattern { formals, .. } => Ok(Value::attrs(Attrs::from_unsorted(
                formals
                    .iter()
                    .map(|f| (f.name.clone(), Value::Bool(f.default.is_some()), f.pos))
                    .collect(),
            ))),
        },
        Value::PrimOp(_) | Value::PrimOpApp(..) => Ok(Value::attrs(Attrs::default())),
        v => err(
            format!(
                "expected a function but found {}: {}",
                v.type_name(),
                ev.show_short(&v)
            ),
            p,
        ),
    }
}

fn generic_closure(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let args = ev.force_attrs(&a[0], p)?;
    let start = match args.get("startSet") {
        Some(s) => ev.force_list(s, p)?,
        None => return err("attribute 'startSet' required", p),
    };
    let op = match args.get("operator") {
        Some(o) => o.clone(),
        None => return err("attribute 'operator' required", p),
    };
    let mut queue: std::collections::VecDeque<Value> = start.iter().cloned().collect();
    let mut seen: Vec<Value> = Vec::new();
    let mut result = Vec::new();
    while let Some(item) = queue.pop_front() {
        let attrs = ev.force_attrs(&item, p)?;
        let key = match attrs.get("key") {
            Some(k) => ev.force(k)?,
            None => return err("attribute 'key' required", p),
        };
        // `seen` stays sorted by Nix's `<`, which also rejects keys that
        // cannot be compared, as Nix's std::set does.
        let mut lo = 0;
        let mut hi = seen.len();
        let mut dup = false;
        while lo < hi {
            let mid = (lo + hi) / 2;
            if ev.less_than(&seen[mid], &key, p)? {
                lo = mid + 1;
            } else if ev.less_than(&key, &seen[mid], p)? {
                hi = mid;
            } else {
                dup = true;
                break;
            }
        }
        if dup {
            continue;
        }
        seen.insert(lo, key);
        result.push(item.clone());
        let next = ev.apply(&op, item, p)?;
        let next = ev.force_list(&next, p)?;
        queue.extend(next.iter().cloned());
    }
    Ok(Value::list(result))
}

fn find_file(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let name = ev.force_string(&a[1], p)?;
    ev.find_file(&a[0], &name, p)
}

fn no_fetch(_ev: &Ev, _a: &[Value], p: Pos) -> R<Value> {
    err("fetching is not supported by b3's evaluator yet", p)
}

pub fn sym(s: &str) -> Sym {
    Sym::from(s)
}
