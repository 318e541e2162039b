//! `builtins.toXML` and `--xml` output: Nix's XML writer, byte for byte.

use rustc_hash::FxHashSet;

use crate::eval::{Ev, R};
use crate::pos::Pos;
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    t.push(("toXML", 1, to_xml));
}

fn to_xml(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let mut ctx = Context::new();
    let s = value_to_xml(ev, &a[0], p, &mut ctx)?;
    Ok(Value::str_ctx(s.into_bytes(), ctx))
}

fn esc(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("&quot;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' => out.push_str("&#xA;"),
            '\r' => out.push_str("&#xD;"),
            '\t' => out.push_str("&#x9;"),
            c => out.push(c),
        }
    }
}

struct W<'a> {
    out: String,
    ev: &'a Ev,
    pos: Pos,
    drvs: FxHashSet<String>,
    ctx: &'a mut Context,
}

impl W<'_> {
    fn open(&mut self, ind: usize, tag: &str, attrs: &[(&str, String)], empty: bool) {
        for _ in 0..ind {
            self.out.push_str("  ");
        }
        self.out.push('<');
        self.out.push_str(tag);
        for (k, v) in attrs {
            self.out.push(' ');
            self.out.push_str(k);
            self.out.push_str("=\"");
            esc(v, &mut self.out);
            self.out.push('"');
        }
        self.out.push_str(if empty { " />\n" } else { ">\n" });
    }
    fn close(&mut self, ind: usize, tag: &str) {
        for _ in 0..ind {
            self.out.push_str("  ");
        }
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push_str(">\n");
    }

    fn attrs_body(&mut self, a: &Attrs, ind: usize) -> R<()> {
        for (k, v, _) in a.iter() {
            self.open(ind, "attr", &[("name", k.to_string())], false);
            self.value(v, ind + 1)?;
            self.close(ind, "attr");
        }
        Ok(())
    }

    fn value(&mut self, v: &Value, ind: usize) -> R<()> {
        let v = self.ev.force(v)?;
        match &v {
            Value::Str(s) => {
                crate::value::merge_ctx(self.ctx, &s.ctx);
                self.open(ind, "string", &[("value", s.lossy())], true)
            }
            Value::Int(i) => self.open(ind, "int", &[("value", i.to_string())], true),
            Value::Bool(b) => self.open(ind, "bool", &[("value", b.to_string())], true),
            Value::Null => self.open(ind, "null", &[], true),
            Value::Float(f) => self.open(
                ind,
                "float",
                &[("value", crate::print::fmt_float(*f))],
                true,
            ),
            Value::Path(p) => self.open(ind, "path", &[("value", p.to_string())], true),
            Value::List(l) => {
                self.open(ind, "list", &[], false);
                for x in l.iter() {
                    self.value(x, ind + 1)?;
                }
                self.close(ind, "list");
            }
            Value::Attrs(a) => {
                if self.ev.is_derivation(a)? {
                    let mut attrs = Vec::new();
                    let mut drv_path = None;
                    if let Some(dp) = a.get("drvPath") {
                        let dp = self.ev.force(dp)?;
                        if let Value::Str(s) = dp {
                            attrs.push(("drvPath", s.lossy()));
                            drv_path = Some(s.lossy());
                        }
                    }
                    if let Some(op) = a.get("outPath") {
                        let op = self.ev.force(op)?;
                        if let Value::Str(s) = op {
                            attrs.push(("outPath", s.lossy()));
                        }
                    }
                    self.open(ind, "derivation", &attrs, false);
                    let seen = match &drv_path {
                        Some(d) => !self.drvs.insert(d.clone()),
                        None => false,
                    };
                    if seen {
                        self.open(ind + 1, "repeated", &[], true);
                    } else {
                        self.attrs_body(a, ind + 1)?;
                    }
                    self.close(ind, "derivation");
                } else {
                    self.open(ind, "attrs", &[], false);
                    self.attrs_body(a, ind + 1)?;
                    self.close(ind, "attrs");
                }
            }
            Value::Lambda(c) => {
                self.open(ind, "function", &[], false);
                match &c.lambda.param {
                    crate::ast::Param::Ident(n) => {
                        self.open(ind + 1, "varpat", &[("name", n.to_string())], true)
                    }
                    crate::ast::Param::Pattern {
                        formals,
                        ellipsis,
                        at,
                    } => {
                        let mut attrs = Vec::new();
                        if *ellipsis {
                            attrs.push(("ellipsis", "1".to_string()));
                        }
                        if let Some(a) = at {
                            attrs.push(("name", a.to_string()));
                        }
                        self.open(ind + 1, "attrspat", &attrs, false);
                        let mut names: Vec<&Sym> = formals.iter().map(|f| &f.name).collect();
                        names.sort();
                        for n in names {
                            self.open(ind + 2, "attr", &[("name", n.to_string())], true);
                        }
                        self.close(ind + 1, "attrspat");
                    }
                }
                self.close(ind, "function");
            }
            _ => self.open(ind, "unevaluated", &[], true),
        }
        let _ = self.pos;
        Ok(())
    }
}

pub fn value_to_xml(ev: &Ev, v: &Value, pos: Pos, ctx: &mut Context) -> R<String> {
    let mut w = W {
        out: String::new(),
        ev,
        pos,
        drvs: FxHashSet::default(),
        ctx,
    };
    w.out
        .push_str("<?xml version='1.0' encoding='utf-8'?>\n<expr>\n");
    w.value(v, 1)?;
    w.out.push_str("</expr>\n");
    Ok(w.out)
}
