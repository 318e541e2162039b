//! `nix-instantiate --parse`: prints the parsed expression with Nix's AST
//! printer conventions (fully parenthesised, desugared operators, sorted
//! formals and attributes, merged attribute paths).

use rnix::ast::{self, AstToken, InterpolPart};
use rowan::ast::AstNode;

use crate::ast::{BEntry, Builder, Lowerer};
use crate::eval::{Ev, R};
use crate::print::{escape_str, print_attr_name};

pub fn parse_and_print(ev: &Ev, text: &str, origin: &str, base: &str) -> R<String> {
    // Full lowering first: it reports parse errors and undefined variables.
    let _ = ev.parse_source(text, origin, false, base, None)?;
    let text = text.replace("\r\n", "\n").replace('\r', "\n");
    let parsed = rnix::Root::parse(&text);
    let root = parsed.tree();
    let mut l = Lowerer::new(0, base, &[], None);
    let mut out = String::new();
    if let Some(e) = root.expr() {
        show(&mut l, &e, base, &mut out);
    }
    Ok(out)
}

fn show_str_parts(l: &mut Lowerer, s: &ast::Str, base: &str, out: &mut String) {
    let parts = s.normalized_parts();
    let all_lit = parts.iter().all(|p| matches!(p, InterpolPart::Literal(_)));
    if all_lit {
        let mut t = String::new();
        for p in parts {
            if let InterpolPart::Literal(x) = p {
                t.push_str(&x);
            }
        }
        escape_str(t.as_bytes(), out);
        return;
    }
    out.push('(');
    let mut first = true;
    for p in parts {
        if p_is_empty(&p) {
            continue;
        }
        if !first {
            out.push_str(" + ");
        }
        first = false;
        match p {
            InterpolPart::Literal(x) => escape_str(x.as_bytes(), out),
            InterpolPart::Interpolation(i) => {
                if let Some(e) = i.expr() {
                    show(l, &e, base, out);
                }
            }
        }
    }
    out.push(')');
}

fn p_is_empty(p: &InterpolPart<String>) -> bool {
    matches!(p, InterpolPart::Literal(x) if x.is_empty())
}

fn show_path(
    parts: Vec<InterpolPart<ast::PathContent>>,
    base: &str,
    home: bool,
    l: &mut Lowerer,
    out: &mut String,
) {
    let n = parts.len();
    let mut pieces = Vec::new();
    for (i, p) in parts.into_iter().enumerate() {
        match p {
            InterpolPart::Literal(c) => {
                let mut t = c.text().to_string();
                if i == 0 {
                    if home {
                        let h = std::env::var("HOME").unwrap_or_default();
                        t = format!("{h}{}", t.trim_start_matches('~'));
                    } else if !t.starts_with('/') {
                        t = format!("{base}/{t}");
                    }
                    let trailing = t.ends_with('/');
                    t = crate::ast::canon_path(&t);
                    if trailing && n > 1 && t != "/" {
                        t.push('/');
                    }
                    if n == 1 {
                        out.push_str(&t);
                        return;
                    }
                }
                let mut s = String::new();
                escape_str(t.as_bytes(), &mut s);
                pieces.push(s);
            }
            InterpolPart::Interpolation(x) => {
                let mut s = String::new();
                if let Some(e) = x.expr() {
                    show(l, &e, base, &mut s);
                }
                pieces.push(s);
            }
        }
    }
    out.push('(');
    out.push_str(&pieces.join(" + "));
    out.push(')');
}

fn attr_text(l: &Lowerer, a: &ast::Attr, base: &str, out: &mut String) {
    match l.static_name(a) {
        Some(n) => print_attr_name(&n, out),
        None => {
            let mut s = String::new();
            let mut l2 = Lowerer::new(0, base, &[], None);
            match a {
                ast::Attr::Dynamic(d) => {
                    if let Some(e) = d.expr() {
                        show(&mut l2, &e, base, &mut s);
                    }
                }
                ast::Attr::Str(st) => show_str_parts(&mut l2, st, base, &mut s),
                ast::Attr::Ident(i) => s.push_str(&i.syntax().text().to_string()),
            }
            out.push_str("\"${");
            out.push_str(&s);
            out.push_str("}\"");
        }
    }
}

fn show_attrpath(l: &Lowerer, p: Option<ast::Attrpath>, base: &str, out: &mut String) {
    if let Some(p) = p {
        for (i, a) in p.attrs().enumerate() {
            if i > 0 {
                out.push('.');
            }
            attr_text(l, &a, base, out);
        }
    }
}

fn show_bindings(l: &mut Lowerer, b: Builder, base: &str, out: &mut String) {
    let mut plain: Vec<String> = Vec::new();
    let mut froms: Vec<Vec<String>> = vec![Vec::new(); b.froms.len()];
    let mut rest: Vec<(String, BEntry)> = Vec::new();
    for (name, e, _) in b.statics {
        match e {
            BEntry::Inherit => plain.push(name.to_string()),
            BEntry::InheritFrom(i) => froms[i].push(name.to_string()),
            e => rest.push((name.to_string(), e)),
        }
    }
    plain.sort();
    if !plain.is_empty() {
        out.push_str("inherit");
        for n in &plain {
            out.push(' ');
            print_attr_name(n, out);
        }
        out.push_str("; ");
    }
    for (i, names) in froms.iter_mut().enumerate() {
        names.sort();
        out.push_str("inherit (");
        show(l, &b.froms[i], base, out);
        out.push(')');
        for n in names.iter() {
            out.push(' ');
            print_attr_name(n, out);
        }
        out.push_str("; ");
    }
    rest.sort_by(|x, y| x.0.cmp(&y.0));
    for (n, e) in rest {
        print_attr_name(&n, out);
        out.push_str(" = ");
        show_entry(l, e, base, out);
        out.push_str("; ");
    }
    for (k, e, _) in b.dynamics {
        attr_text(l, &k, base, out);
        out.push_str(" = ");
        show_entry(l, e, base, out);
        out.push_str("; ");
    }
}

fn show_entry(l: &mut Lowerer, e: BEntry, base: &str, out: &mut String) {
    match e {
        BEntry::Value(v) => show(l, &v, base, out),
        BEntry::Nested(nb) => show_attrs(l, nb, base, out),
        _ => {}
    }
}

fn show_attrs(l: &mut Lowerer, b: Builder, base: &str, out: &mut String) {
    if b.rec {
        out.push_str("rec ");
    }
    if b.statics.is_empty() && b.dynamics.is_empty() {
        out.push_str("{ }");
        return;
    }
    out.push_str("{ ");
    show_bindings(l, b, base, out);
    out.push('}');
}

fn call(out: &mut String, f: &str, args: &[String]) {
    out.push('(');
    out.push_str(f);
    for a in args {
        out.push(' ');
        out.push_str(a);
    }
    out.push(')');
}

fn sub(l: &mut Lowerer, e: Option<ast::Expr>, base: &str) -> String {
    let mut s = String::new();
    if let Some(e) = e {
        show(l, &e, base, &mut s);
    }
    s
}

pub fn show(l: &mut Lowerer, e: &ast::Expr, base: &str, out: &mut String) {
    match e {
        ast::Expr::Apply(a) => {
            let mut args = vec![sub(l, a.argument(), base)];
            let mut f = a.lambda();
            while let Some(ast::Expr::Apply(inner)) = &f {
                args.push(sub(l, inner.argument(), base));
                f = inner.lambda();
            }
            args.reverse();
            let fs = sub(l, f, base);
            call(out, &fs, &args);
        }
        ast::Expr::Assert(a) => {
            out.push_str("assert ");
            out.push_str(&sub(l, a.condition(), base));
            out.push_str("; ");
            out.push_str(&sub(l, a.body(), base));
        }
        ast::Expr::Error(_) => {}
        ast::Expr::IfElse(i) => {
            out.push_str("(if ");
            out.push_str(&sub(l, i.condition(), base));
            out.push_str(" then ");
            out.push_str(&sub(l, i.body(), base));
            out.push_str(" else ");
            out.push_str(&sub(l, i.else_body(), base));
            out.push(')');
        }
        ast::Expr::Select(s) => {
            if s.default_expr().is_some() {
                out.push('(');
            }
            out.push('(');
            out.push_str(&sub(l, s.expr(), base));
            out.push_str(").");
            show_attrpath(l, s.attrpath(), base, out);
            if let Some(d) = s.default_expr() {
                out.push_str(" or ");
                show(l, &d, base, out);
                out.push(')');
            }
        }
        ast::Expr::Str(s) => show_str_parts(l, s, base, out),
        ast::Expr::PathAbs(p) => show_path(p.parts(), base, false, l, out),
        ast::Expr::PathRel(p) => show_path(p.parts(), base, false, l, out),
        ast::Expr::PathHome(p) => show_path(p.parts(), base, true, l, out),
        ast::Expr::PathSearch(p) => {
            let text = p
                .content()
                .map(|c| c.text().to_string())
                .unwrap_or_default();
            let inner = text.trim_start_matches('<').trim_end_matches('>');
            let mut s = String::new();
            escape_str(inner.as_bytes(), &mut s);
            call(out, "__findFile", &["__nixPath".into(), s]);
        }
        ast::Expr::Literal(lit) => match lit.kind() {
            ast::LiteralKind::Integer(i) => {
                out.push_str(&i.value().map(|v| v.to_string()).unwrap_or_default())
            }
            ast::LiteralKind::Float(f) => {
                out.push_str(&crate::print::fmt_float(f.value().unwrap_or(0.0)))
            }
            ast::LiteralKind::Uri(u) => escape_str(u.syntax().text().as_bytes(), out),
        },
        ast::Expr::Lambda(lam) => {
            out.push('(');
            match lam.param() {
                Some(ast::Param::IdentParam(i)) => {
                    out.push_str(
                        &i.ident()
                            .map(|x| x.syntax().text().to_string())
                            .unwrap_or_default(),
                    );
                }
                Some(ast::Param::Pattern(p)) => {
                    let mut formals: Vec<(String, Option<ast::Expr>)> = p
                        .pat_entries()
                        .map(|e| {
                            (
                                e.ident()
                                    .map(|x| x.syntax().text().to_string())
                                    .unwrap_or_default(),
                                e.default(),
                            )
                        })
                        .collect();
                    formals.sort_by(|a, b| a.0.cmp(&b.0));
                    out.push_str("{ ");
                    let mut first = true;
                    for (n, d) in formals {
                        if !first {
                            out.push_str(", ");
                        }
                        first = false;
                        out.push_str(&n);
                        if let Some(d) = d {
                            out.push_str(" ? ");
                            show(l, &d, base, out);
                        }
                    }
                    if p.ellipsis_token().is_some() {
                        if !first {
                            out.push_str(", ");
                        }
                        out.push_str("...");
                    }
                    out.push_str(" }");
                    if let Some(b) = p.pat_bind().and_then(|b| b.ident()) {
                        out.push_str(" @ ");
                        out.push_str(&b.syntax().text().to_string());
                    }
                }
                None => {}
            }
            out.push_str(": ");
            out.push_str(&sub(l, lam.body(), base));
            out.push(')');
        }
        ast::Expr::LegacyLet(lt) => {
            let mut b = Builder::new(true);
            if l.ingest(&mut b, lt).is_ok() {
                out.push('(');
                show_attrs(l, b, base, out);
                out.push_str(").body");
            }
        }
        ast::Expr::LetIn(lt) => {
            let mut b = Builder::new(true);
            if l.ingest(&mut b, lt).is_ok() {
                out.push_str("(let ");
                show_bindings(l, b, base, out);
                out.push_str("in ");
                out.push_str(&sub(l, lt.body(), base));
                out.push(')');
            }
        }
        ast::Expr::List(list) => {
            let items: Vec<ast::Expr> = list.items().collect();
            if items.is_empty() {
                out.push_str("[ ]");
                return;
            }
            out.push_str("[ ");
            for i in items {
                out.push('(');
                show(l, &i, base, out);
                out.push_str(") ");
            }
            out.push(']');
        }
        ast::Expr::BinOp(b) => {
            use rnix::ast::BinOpKind as K;
            let x = sub(l, b.lhs(), base);
            let y = sub(l, b.rhs(), base);
            let sym = match b.operator() {
                Some(K::Concat) => "++",
                Some(K::Update) => "//",
                Some(K::Add) => "+",
                Some(K::And) => "&&",
                Some(K::Or) => "||",
                Some(K::Equal) => "==",
                Some(K::NotEqual) => "!=",
                Some(K::Implication) => "->",
                Some(K::Sub) => return call(out, "__sub", &[x, y]),
                Some(K::Mul) => return call(out, "__mul", &[x, y]),
                Some(K::Div) => return call(out, "__div", &[x, y]),
                Some(K::Less) => return call(out, "__lessThan", &[x, y]),
                Some(K::More) => return call(out, "__lessThan", &[y, x]),
                Some(K::LessOrEq) => {
                    out.push_str("(! ");
                    call(out, "__lessThan", &[y, x]);
                    out.push(')');
                    return;
                }
                Some(K::MoreOrEq) => {
                    out.push_str("(! ");
                    call(out, "__lessThan", &[x, y]);
                    out.push(')');
                    return;
                }
                Some(K::PipeRight) => return call(out, &y, &[x]),
                Some(K::PipeLeft) => return call(out, &x, &[y]),
                None => "?",
            };
            out.push('(');
            out.push_str(&x);
            out.push(' ');
            out.push_str(sym);
            out.push(' ');
            out.push_str(&y);
            out.push(')');
        }
        ast::Expr::Paren(p) => out.push_str(&sub(l, p.expr(), base)),
        ast::Expr::Root(r) => out.push_str(&sub(l, r.expr(), base)),
        ast::Expr::AttrSet(a) => {
            let mut b = Builder::new(a.rec_token().is_some());
            if l.ingest(&mut b, a).is_ok() {
                show_attrs(l, b, base, out);
            }
        }
        ast::Expr::UnaryOp(u) => {
            let x = sub(l, u.expr(), base);
            match u.operator() {
                Some(ast::UnaryOpKind::Invert) => {
                    out.push_str("(! ");
                    out.push_str(&x);
                    out.push(')');
                }
                _ => call(out, "__sub", &["0".into(), x]),
            }
        }
        ast::Expr::Ident(i) => out.push_str(&i.syntax().text().to_string()),
        ast::Expr::With(w) => {
            out.push_str("(with ");
            out.push_str(&sub(l, w.namespace(), base));
            out.push_str("; ");
            out.push_str(&sub(l, w.body(), base));
            out.push(')');
        }
        ast::Expr::HasAttr(h) => {
            out.push_str("((");
            out.push_str(&sub(l, h.expr(), base));
            out.push_str(") ? ");
            show_attrpath(l, h.attrpath(), base, out);
            out.push(')');
        }
        ast::Expr::CurPos(_) => out.push_str("__curPos"),
    }
}
