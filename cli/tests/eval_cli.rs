//! `b3 eval` and `b3 instantiate` command lines, run as a user would.

use std::process::Command;

fn b3(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(args)
        .current_dir("/")
        .output()
        .expect("run b3");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn eval_expr_strict_prints_nix_value() {
    let (code, out, _) = b3(&["eval", "--strict", "-E", "{ b = [ 1 \"x\" ]; a = null; }"]);
    assert_eq!(code, 0);
    assert_eq!(out, "{ a = null; b = [ 1 \"x\" ]; }\n");
}

#[test]
fn eval_json_and_raw_output() {
    let (_, out, _) = b3(&["eval", "--json", "-E", "{ a = [ 1 true ]; }"]);
    assert_eq!(out, "{\"a\":[1,true]}\n");
    let (_, out, _) = b3(&["eval", "--raw", "-E", "\"a\\tb\""]);
    assert_eq!(out, "a\tb");
}

#[test]
fn arg_and_argstr_take_two_values() {
    let (code, out, err) = b3(&[
        "eval",
        "--arg",
        "a",
        "40 + 1",
        "--argstr",
        "b",
        "x",
        "-E",
        "{ a, b }: \"${toString a}${b}\"",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "\"41x\"\n");
}

#[test]
fn attr_path_selects_into_result() {
    let (_, out, _) = b3(&["eval", "-A", "x.y", "-E", "{ x.y = 3; }"]);
    assert_eq!(out, "3\n");
}

#[test]
fn evaluation_errors_exit_1_with_location() {
    let (code, _, err) = b3(&["instantiate", "--eval", "-E", "1 + throw \"boom\""]);
    assert_eq!(code, 1);
    assert!(err.contains("boom"), "{err}");
    assert!(err.contains("«string»:1:5"), "{err}");
}

#[test]
fn instantiate_parse_prints_nix_ast() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_b3"))
        .args(["instantiate", "--parse", "-E", "{x, y}: x - y"])
        .output()
        .expect("run");
    assert!(child.status.success());
    child.stdout.retain(|c| *c != b'\n');
    assert_eq!(
        String::from_utf8_lossy(&child.stdout),
        "({ x, y }: (__sub x y))"
    );
}

#[test]
fn instantiate_without_eval_prints_drv_path_like_nix() {
    let (code, out, err) = b3(&[
        "instantiate",
        "-E",
        "derivation { name = \"x\"; system = \"x86_64-linux\"; builder = \"/bin/sh\"; }",
    ]);
    assert_eq!(code, 0, "{err}");
    // Same drv path as `nix-instantiate` (Nix 2.8) computes for this expression.
    assert_eq!(out, "/nix/store/97qlv6h78lxlm9zc8849ahsbcklhsi2y-x.drv\n");
}
