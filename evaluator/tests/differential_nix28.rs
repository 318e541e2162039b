//! Differential tests: hand-written expressions evaluated by b3 and by the
//! Nix 2.8 oracle (`nix-instantiate --eval --strict`) must print the same.
//! Float/toJSON-float cases are excluded (2.8 differs from current Nix).

use std::process::Command;

const CASES: &[&str] = &[
    "1 + 2 * 3 - 4 / 2",
    "[ (1 < 2) (2 <= 2) (\"a\" < \"b\") ([ 1 2 ] < [ 1 3 ]) ]",
    "let x = { a.b.c = 1; a.d = 2; }; in x",
    "rec { a = b + 1; b = 2; c = { inherit a; }; }",
    "let f = { a, b ? a + 1, ... }@args: [ a b (builtins.attrNames args) ]; in f { a = 1; z = 3; }",
    "with { x = 1; }; with { y = 2; }; x + y",
    "let x = 1; in with { x = 2; }; x",
    "builtins.map (x: x * x) (builtins.genList (i: i) 10)",
    "builtins.foldl' (a: b: a + b) 0 (builtins.genList (i: i) 1000)",
    "builtins.sort (a: b: a > b) [ 3 1 2 5 4 ]",
    "builtins.attrNames { b = 1; a = 2; \"c d\" = 3; }",
    "{ \"a b\" = 1; \"if\" = 2; x-y = 3; }",
    "builtins.toJSON { a = [ 1 \"x\" null true ]; b.c = \"q\\\"\\n\"; }",
    "builtins.fromJSON ''{\"a\": [1, 2, {\"b\": null}], \"c\": \"\\u00e9\"}''",
    "builtins.concatStringsSep \"-\" [ \"a\" \"b\" \"c\" ]",
    "builtins.replaceStrings [ \"a\" \"b\" ] [ \"x\" \"yy\" ] \"abcab\"",
    "builtins.match \"([a-z]+)-([0-9]+)\" \"foo-123\"",
    "builtins.split \"(,)\" \"a,b,c\"",
    "[ (builtins.compareVersions \"1.2.3\" \"1.2.10\") (builtins.parseDrvName \"hello-2.10-pre1\") (builtins.splitVersion \"1.2pre3\") ]",
    "builtins.substring 2 3 \"abcdefg\"",
    "builtins.hashString \"sha256\" \"hello\"",
    "builtins.toFile \"foo\" \"bar\"",
    "(derivation { name = \"x\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"echo\" ]; }).drvPath",
    "let d = derivation { name = \"a\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; outputs = [ \"out\" \"dev\" ]; }; in [ d.outPath d.dev.outPath d.drvPath ]",
    "let a = derivation { name = \"a\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; }; b = derivation { name = \"b\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; dep = a; }; in b.drvPath",
    "(derivation { name = \"fod\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; outputHashMode = \"recursive\"; outputHashAlgo = \"sha256\"; outputHash = \"0000000000000000000000000000000000000000000000000000\"; }).outPath",
    "builtins.tryEval (throw \"x\")",
    "builtins.tryEval (assert false; 1)",
    "builtins.catAttrs \"a\" [ { a = 1; } { b = 2; } { a = 3; } ]",
    "builtins.zipAttrsWith (n: v: v) [ { a = 1; } { a = 2; b = 3; } ]",
    "builtins.groupBy (x: if x > 2 then \"big\" else \"small\") [ 1 2 3 4 ]",
    "builtins.partition (x: x > 2) [ 1 2 3 4 ]",
    "builtins.listToAttrs [ { name = \"a\"; value = 1; } { name = \"a\"; value = 2; } ]",
    "builtins.intersectAttrs { a = 1; } { a = 2; b = 3; }",
    "builtins.removeAttrs { a = 1; b = 2; } [ \"a\" ]",
    "builtins.functionArgs ({ a, b ? 1 }: a)",
    "builtins.genericClosure { startSet = [ { key = 1; } ]; operator = x: if x.key < 5 then [ { key = x.key + 1; } ] else [ ]; }",
    "''\n  a\n    b ${\"c\"}\n  d''",
    "\"a\\${b}\"",
    "builtins.bitAnd 12 10 + builtins.bitOr 12 10 + builtins.bitXor 12 10",
    "let x = [ 1 ]; in [ x x ]",
    "builtins.toXML { a = [ 1 \"s\" ]; f = x: x; }",
    "builtins.getContext \"${builtins.toFile \"a\" \"b\"}\"",
    "builtins.unsafeDiscardStringContext \"${builtins.toFile \"a\" \"b\"}\"",
    "builtins.elem 2 [ 1 2 3 ] && !(builtins.elem 5 [ 1 2 ])",
    "builtins.seq (builtins.deepSeq [ 1 2 ] 1) \"ok\"",
    "let s = { __toString = self: \"S\"; }; in \"${s}!\"",
    "builtins.typeOf (x: x) + builtins.typeOf null + builtins.typeOf ./.",
    "({ a = 1; } // { b = 2; }) // { a = 3; }",
    "[ 1 2 ] ++ [ 3 ]",
    "builtins.any (x: x == 2) [ 1 2 ] && builtins.all (x: x > 0) [ 1 2 ]",
    "builtins.concatMap (x: [ x x ]) [ 1 2 ]",
    "builtins.placeholder \"out\"",
    "builtins.fromTOML ''\n a = 1\n [b]\n c = \"d\"\n''",
];

fn run(cmd: &mut Command) -> (bool, String, String) {
    let o = cmd.output().expect("spawn");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn b3_eval(expr: &str) -> (bool, String, String) {
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn({
            let expr = expr.to_string();
            move || {
                let ev = b3_evaluator::Ev::new(b3_evaluator::Options::default());
                let r = ev
                    .eval_expr_str(&expr, "«string»")
                    .and_then(|v| ev.render(&v, b3_evaluator::driver::OutputMode::Nix, true));
                match r {
                    Ok(s) => (true, s + "\n", String::new()),
                    Err(e) => (false, String::new(), e.render(false)),
                }
            }
        })
        .expect("thread")
        .join()
        .expect("join")
}

#[test]
fn expressions_print_like_nix_2_8() {
    let nix = Command::new("nix-instantiate").arg("--version").output();
    assert!(
        nix.is_ok(),
        "nix-instantiate (Nix 2.8 oracle) not found: run scripts/setup-test-deps.sh"
    );
    let mut failures = Vec::new();
    for case in CASES {
        let (nok, nout, nerr) = run(Command::new("nix-instantiate")
            .args(["--eval", "--strict", "-E", case])
            .current_dir("/"));
        let (bok, bout, berr) = b3_eval(case);
        if nok != bok || nout != bout {
            failures.push(format!(
                "{case}\n  nix ({nok}): {nout}{nerr}\n  b3  ({bok}): {bout}{berr}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
