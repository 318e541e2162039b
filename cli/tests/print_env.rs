//! `b3 print-env` for bash, zsh, fish and PowerShell, and `b3 print-dev-env`
//! (bash and Nix's JSON schema), on the example package set.

mod shell_common;
use shell_common::*;
use std::process::Command;

fn print_env(shell: &str) -> String {
    let ex = examples();
    ok(b3_cmd(&[
        "print-env",
        ex.to_str().unwrap(),
        "-A",
        "shell",
        "--shell",
        shell,
    ]))
}

fn run_shell(program: &str, args: &[&str], script: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("script");
    std::fs::write(&f, script).unwrap();
    let out = Command::new(program)
        .args(args)
        .arg(&f)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}; run scripts/setup-test-deps.sh"));
    assert!(
        out.status.success(),
        "{program} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn print_env_bash_sets_what_the_shell_sets() {
    prebuilt();
    let s = print_env("bash");
    assert!(s.contains("export IN_NIX_SHELL='impure'"), "{s}");
    assert!(s.contains("export out='/nix/store/"), "{s}");
    assert!(
        !s.contains("NIX_BUILD_TOP"),
        "session variables are left out: {s}"
    );
    let out = run_shell(
        "bash",
        &[],
        &format!("{s}\necho \"name=$name in=$IN_NIX_SHELL\"\ncase \"$PATH\" in /nix/store/*-greet-1.0/bin:*) echo greet-first;; esac\n"),
    );
    assert!(out.contains("name=example-shell in=impure"), "{out}");
    assert!(
        out.contains("greet-first"),
        "PATH from the stdenv's setup: {out}"
    );
}

#[test]
fn print_env_zsh_output_runs_in_zsh() {
    prebuilt();
    let s = print_env("zsh");
    let out = run_shell("zsh", &["-f"], &format!("{s}\necho \"name=$name\"\n"));
    assert!(out.contains("name=example-shell"), "{out}");
}

#[test]
fn print_env_fish_output_runs_in_fish() {
    prebuilt();
    let s = print_env("fish");
    assert!(s.contains("set -gx PATH '/nix/store/"), "{s}");
    let out = run_shell(
        "fish",
        &["--no-config"],
        &format!("{s}\necho \"name=$name\"\nprintf '%s\\n' $PATH\n"),
    );
    assert!(out.contains("name=example-shell"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("/nix/store/") && l.ends_with("-greet-1.0/bin")),
        "{out}"
    );
}

#[test]
fn print_env_powershell_uses_env_drive_assignments() {
    prebuilt();
    let s = print_env("powershell");
    assert!(s.contains("${env:IN_NIX_SHELL} = 'impure'"), "{s}");
    assert!(s.contains("${env:out} = '/nix/store/"), "{s}");
    for line in s.lines() {
        assert!(
            line.starts_with("${env:") || line.starts_with("Remove-Item -LiteralPath 'Env:"),
            "{line}"
        );
    }
}

#[test]
fn print_env_pure_removes_host_variables() {
    prebuilt();
    let ex = examples();
    let mut c = b3_cmd(&["print-env", ex.to_str().unwrap(), "-A", "shell", "--pure"]);
    c.env("B3_TEST_REMOVED", "x");
    let s = ok(c);
    assert!(s.contains("unset B3_TEST_REMOVED"), "{s}");
    assert!(s.contains("export IN_NIX_SHELL='pure'"), "{s}");
}

#[test]
fn print_dev_env_json_follows_nix_schema() {
    prebuilt();
    let ex = examples();
    let s = ok(b3_cmd(&[
        "print-dev-env",
        ex.to_str().unwrap(),
        "-A",
        "shell",
        "--json",
    ]));
    let j: serde_json::Value = serde_json::from_str(&s).unwrap();
    let vars = j["variables"].as_object().unwrap();
    assert_eq!(vars["out"]["type"], "exported");
    assert!(vars["out"]["value"]
        .as_str()
        .unwrap()
        .starts_with("/nix/store/"));
    assert_eq!(vars["name"]["value"], "example-shell");
    // setup.sh's loop variable is a plain shell variable, not exported.
    assert_eq!(vars["p"]["type"], "var");
    assert!(vars["PATH"]["value"]
        .as_str()
        .unwrap()
        .contains("-greet-1.0/bin"));
    assert!(!vars.contains_key("NIX_BUILD_TOP") && !vars.contains_key("HOME"));
    let f = j["bashFunctions"].as_object().unwrap();
    assert!(
        f["genericBuild"]
            .as_str()
            .unwrap()
            .contains("eval \"$buildCommand\""),
        "{f:?}"
    );
    assert!(f.contains_key("runHook"));
}

#[test]
fn print_dev_env_bash_output_can_be_sourced() {
    prebuilt();
    let ex = examples();
    let s = ok(b3_cmd(&[
        "print-dev-env",
        ex.to_str().unwrap(),
        "-A",
        "shell",
    ]));
    assert!(s.contains("\nexport out\n"), "{s}");
    let out = run_shell(
        "bash",
        &[],
        &format!("{s}\ntype genericBuild >/dev/null && echo has-genericBuild\necho \"$name\"\n"),
    );
    assert!(out.contains("has-genericBuild"), "{out}");
    assert!(out.contains("example-shell"), "{out}");
}

#[test]
fn print_dev_env_keeps_arrays_and_associative_arrays() {
    prebuilt();
    // A stdenv whose setup declares an indexed and an associative array.
    let expr = format!(
        r#"with import {} {{}};
        let sh = "${{busybox}}/bin/sh";
            st = derivation {{ name = "array-stdenv"; system = "x86_64-linux"; builder = sh;
              args = [ "-c" "mkdir $out; echo \"declare -a hooks=(one 'two words'); declare -A assoc=([k]=v); greetFn() {{ echo hi; }}\" > $out/setup" ]; }};
        in derivation {{ name = "arrays"; system = "x86_64-linux"; builder = sh; args = [ "-c" "echo > $out" ]; stdenv = st; }}"#,
        examples().display()
    );
    let s = ok(b3_cmd(&["print-dev-env", "-E", &expr, "--json"]));
    let j: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(j["variables"]["hooks"]["type"], "array", "{s}");
    assert_eq!(
        j["variables"]["hooks"]["value"],
        serde_json::json!(["one", "two words"])
    );
    assert_eq!(j["variables"]["assoc"]["type"], "associative");
    assert_eq!(
        j["variables"]["assoc"]["value"],
        serde_json::json!({"k": "v"})
    );
    assert_eq!(j["variables"]["name"]["type"], "exported");
    assert!(j["bashFunctions"]["greetFn"]
        .as_str()
        .unwrap()
        .contains("echo hi"));
    // The bash form declares them again.
    let b = ok(b3_cmd(&["print-dev-env", "-E", &expr]));
    let out = run_shell(
        "bash",
        &[],
        &format!("{b}\necho \"${{hooks[1]}}|${{assoc[k]}}\"; greetFn\n"),
    );
    assert_eq!(out, "two words|v\nhi\n");
}
