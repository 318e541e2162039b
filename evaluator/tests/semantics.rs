//! Behaviour checks that need no oracle: error kinds, recursion limits,
//! laziness and memoisation.

use b3_evaluator::driver::{with_big_stack, OutputMode};
use b3_evaluator::{ErrorKind, Ev, Options};

fn eval_with(expr: &str, opts: Options) -> Result<String, (ErrorKind, String)> {
    let expr = expr.to_string();
    with_big_stack(move || {
        let ev = Ev::new(opts);
        ev.eval_expr_str(&expr, "«string»")
            .and_then(|v| ev.render(&v, OutputMode::Nix, true))
            .map_err(|e| (e.kind(), e.msg().to_string()))
    })
}

fn eval(expr: &str) -> Result<String, (ErrorKind, String)> {
    eval_with(expr, Options::default())
}

#[test]
fn deep_non_tail_recursion_of_100000_levels_works() {
    let r = eval("let f = n: if n == 0 then 0 else 1 + f (n - 1); in f 100000");
    assert_eq!(r, Ok("100000".into()));
}

#[test]
fn max_call_depth_is_enforced() {
    let opts = Options {
        max_call_depth: 100,
        ..Options::default()
    };
    let r = eval_with("(x: x x) (x: x x)", opts);
    assert_eq!(r.map_err(|e| e.0), Err(ErrorKind::StackOverflow));
}

#[test]
fn self_reference_is_infinite_recursion() {
    let r = eval("let x = x + 1; in x");
    assert_eq!(
        r,
        Err((
            ErrorKind::InfiniteRecursion,
            "infinite recursion encountered".into()
        ))
    );
}

#[test]
fn integer_overflow_is_an_error() {
    let r = eval("9223372036854775807 + 1");
    assert_eq!(
        r,
        Err((
            ErrorKind::Other,
            "integer overflow in adding 9223372036854775807 + 1".into()
        ))
    );
}

#[test]
fn throw_is_catchable_but_abort_is_not() {
    assert_eq!(
        eval("(builtins.tryEval (throw \"x\")).success"),
        Ok("false".into())
    );
    assert_eq!(
        eval("builtins.tryEval (abort \"x\")").map_err(|e| e.0),
        Err(ErrorKind::Abort)
    );
}

#[test]
fn laziness_skips_unused_errors() {
    assert_eq!(eval("let x = throw \"no\"; in [ 1 ]"), Ok("[ 1 ]".into()));
    assert_eq!(
        eval("builtins.length [ (throw \"a\") (abort \"b\") ]"),
        Ok("2".into())
    );
}

#[test]
fn static_scope_beats_with() {
    assert_eq!(eval("let x = 1; in with { x = 2; }; x"), Ok("1".into()));
}

#[test]
fn undefined_variable_is_reported_before_evaluation() {
    let r = eval("if true then 1 else undefinedName");
    assert_eq!(
        r,
        Err((
            ErrorKind::Other,
            "undefined variable 'undefinedName'".into()
        ))
    );
}

#[test]
fn shared_values_print_as_repeated() {
    assert_eq!(
        eval("let x = { a = 1; }; in [ x x ]"),
        Ok("[ { a = 1; } «repeated» ]".into())
    );
}
