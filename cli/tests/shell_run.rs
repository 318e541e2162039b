//! `b3 shell` end to end: a real store in a temporary directory, the
//! example package set built in the sandbox, and the shell started in a
//! mount namespace where that store appears at /nix/store.

mod shell_common;
use shell_common::*;

fn shell(args: &[&str]) -> std::process::Command {
    let ex = examples();
    let mut c = b3_cmd(&["shell"]);
    c.arg(&ex).args(args);
    c
}

#[test]
fn shell_with_stdenv_runs_the_built_programs_and_the_shell_hook() {
    prebuilt();
    let out = ok(shell(&[
        "-A",
        "shell",
        "--run",
        "greet tests; echo \"IN=$IN_NIX_SHELL\"",
    ]));
    assert!(
        out.contains("b3 example shell: greet and hello are on PATH"),
        "{out}"
    );
    assert!(out.contains("greet: calling /nix/store/"), "{out}");
    assert!(
        out.contains("Hello, tests! (a C program built by b3 in its sandbox)"),
        "{out}"
    );
    assert!(out.contains("IN=impure"), "{out}");
}

#[test]
fn shell_sees_the_b3_store_at_nix_store_not_the_host_one() {
    prebuilt();
    // The store lives in a temporary directory; inside the shell its paths
    // are at /nix/store, and the host's /nix/store (Nix's, if any) is hidden.
    let out = ok(shell(&[
        "-A",
        "shell",
        "--run",
        "ls /nix/store; echo \"out=$out\"",
    ]));
    let listed: Vec<&str> = out
        .lines()
        .take_while(|l| !l.starts_with("out="))
        .filter(|l| !l.starts_with("b3 example shell"))
        .collect();
    assert!(listed.iter().any(|l| l.ends_with("-greet-1.0")), "{out}");
    let physical = store().join("nix/store");
    for name in &listed {
        assert!(physical.join(name).exists(), "{name} is in the b3 store");
    }
    // A path only the host's /nix/store has (Nix's, on machines with Nix) is hidden.
    if let Ok(rd) = std::fs::read_dir("/nix/store") {
        let host_only: Vec<String> = rd
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.') && !physical.join(n).exists())
            .take(5)
            .collect();
        for n in &host_only {
            assert!(
                !listed.contains(&n.as_str()),
                "host path {n} visible in the shell"
            );
        }
    }
    assert!(out.contains("out=/nix/store/"), "outputs are set: {out}");
}

#[test]
fn shell_run_returns_the_command_exit_status() {
    prebuilt();
    let out = run(shell(&["-A", "shell", "--run", "exit 7"]));
    assert_eq!(out.status.code(), Some(7));
    let out = run(shell(&["-A", "shell", "--command", "false"]));
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn shell_pure_drops_the_callers_environment() {
    prebuilt();
    let mut c = shell(&[
        "-A",
        "shell",
        "--run",
        "echo \"v=${B3_TEST_HOST_VAR-unset} in=$IN_NIX_SHELL\"",
    ]);
    c.env("B3_TEST_HOST_VAR", "here");
    assert!(ok(c).contains("v=here in=impure"));
    let mut c = shell(&[
        "-A",
        "shell",
        "--pure",
        "--run",
        "echo \"v=${B3_TEST_HOST_VAR-unset} in=$IN_NIX_SHELL\"",
    ]);
    c.env("B3_TEST_HOST_VAR", "here");
    assert!(ok(c).contains("v=unset in=pure"));
    let mut c = shell(&[
        "-A",
        "shell",
        "--pure",
        "--keep",
        "B3_TEST_HOST_VAR",
        "--run",
        "echo \"v=$B3_TEST_HOST_VAR\"",
    ]);
    c.env("B3_TEST_HOST_VAR", "kept");
    assert!(ok(c).contains("v=kept"));
}

#[test]
fn shell_without_stdenv_gets_the_derivation_env_and_inputs_on_path() {
    prebuilt();
    let expr = format!(
        "with import {} {{}}; derivation {{ name = \"plain\"; system = \"x86_64-linux\"; \
         builder = \"${{busybox}}/bin/sh\"; args = [ \"-c\" \"echo > $out\" ]; \
         buildInputs = [ hello ]; FOO = \"two words 'quoted'\"; passAsFile = [ \"big\" ]; big = \"in a file\"; }}",
        examples().display()
    );
    let out = ok(b3_cmd(&[
        "shell",
        "-E",
        &expr,
        "--run",
        "hello plain; echo \"FOO=$FOO\"; cat \"$bigPath\"; echo; echo \"top=$NIX_BUILD_TOP tmp=$TMPDIR\"; test -d \"$NIX_BUILD_TOP\" && echo top-exists",
    ]));
    assert!(out.contains("Hello, plain!"), "{out}");
    assert!(out.contains("FOO=two words 'quoted'"), "{out}");
    assert!(out.contains("in a file"), "{out}");
    assert!(out.contains("top-exists"), "{out}");
    let top = out
        .lines()
        .find_map(|l| l.strip_prefix("top="))
        .and_then(|l| l.split(' ').next())
        .unwrap()
        .to_string();
    assert!(out.contains(&format!("tmp={top}")), "{out}");
    assert!(
        !std::path::Path::new(&top).exists(),
        "the build directory {top} is removed after the shell exits"
    );
}

#[test]
fn shell_packages_flag_uses_nixpkgs_from_the_search_path() {
    prebuilt();
    let inc = format!("nixpkgs={}", examples().display());
    let out = ok(b3_cmd(&[
        "shell",
        "-I",
        &inc,
        "-p",
        "hello",
        "greet",
        "--run",
        "hello p; greet q",
    ]));
    assert!(out.contains("Hello, p!"), "{out}");
    assert!(out.contains("Hello, q!"), "{out}");
}

#[test]
fn shell_of_a_drv_path_and_of_an_output_path() {
    prebuilt();
    let ex = examples();
    let drv = ok(b3_cmd(&[
        "instantiate",
        ex.to_str().unwrap(),
        "-A",
        "shell",
    ]));
    let out = ok(b3_cmd(&["shell", drv.trim(), "--run", "greet drv"]));
    assert!(out.contains("Hello, drv!"), "{out}");
    // An output path (not a derivation) puts its bin/ on PATH.
    let hello_drv = ok(b3_cmd(&[
        "instantiate",
        ex.to_str().unwrap(),
        "-A",
        "hello",
    ]));
    let hello = ok(b3_cmd(&["build", hello_drv.trim()]));
    let out = ok(b3_cmd(&["shell", hello.trim(), "--run", "hello out"]));
    assert!(out.contains("Hello, out!"), "{out}");
}

#[test]
fn shell_with_structured_attrs_sources_attrs_sh() {
    prebuilt();
    let expr = format!(
        "with import {} {{}}; derivation {{ name = \"structured\"; system = \"x86_64-linux\"; \
         builder = \"${{busybox}}/bin/sh\"; args = [ \"-c\" \"echo > $out\" ]; \
         __structuredAttrs = true; greeting = \"from .attrs.sh\"; }}",
        examples().display()
    );
    let out = ok(b3_cmd(&[
        "shell",
        "-E",
        &expr,
        "--run",
        "echo \"greeting=$greeting\"; test -f \"$NIX_ATTRS_JSON_FILE\" && echo json-ok; \
         case \"$NIX_ATTRS_SH_FILE\" in \"$NIX_BUILD_TOP\"/*) echo sh-in-top;; esac",
    ]));
    assert!(out.contains("greeting=from .attrs.sh"), "{out}");
    assert!(out.contains("json-ok"), "{out}");
    assert!(out.contains("sh-in-top"), "{out}");
}

#[test]
fn shell_installable_forms_and_their_errors() {
    prebuilt();
    let ex = examples();
    let drv = ok(b3_cmd(&[
        "instantiate",
        ex.to_str().unwrap(),
        "-A",
        "shell",
    ]));
    let with_outputs = format!("{}!out", drv.trim());
    let out = ok(b3_cmd(&["shell", &with_outputs, "--run", "greet bang"]));
    assert!(out.contains("Hello, bang!"), "{out}");

    let hello_drv = ok(b3_cmd(&[
        "instantiate",
        ex.to_str().unwrap(),
        "-A",
        "hello",
    ]));
    let hello = ok(b3_cmd(&["build", hello_drv.trim()]));
    let bad = run(b3_cmd(&[
        "shell",
        &format!("{}!out", hello.trim()),
        "--run",
        "true",
    ]));
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("is not a derivation"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let bad = run(b3_cmd(&[
        "shell",
        ex.to_str().unwrap(),
        "-p",
        "hello",
        "--run",
        "true",
    ]));
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("'-p' cannot be combined"));

    // Two derivations: nix-shell's rule, one environment at a time.
    let bad = run(b3_cmd(&[
        "shell",
        ex.to_str().unwrap(),
        "-A",
        "hello",
        "-A",
        "greet",
        "--run",
        "true",
    ]));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("single derivation"));

    // An evaluation error is reported as the evaluator renders it.
    let bad = run(b3_cmd(&[
        "shell",
        ex.to_str().unwrap(),
        "-A",
        "nope",
        "--run",
        "true",
    ]));
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("attribute 'nope' in selection path 'nope' not found"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn shell_without_items_prefers_shell_nix_then_default_nix() {
    prebuilt();
    let dir = tempfile::tempdir().unwrap();
    let ex = examples();
    std::fs::write(
        dir.path().join("default.nix"),
        format!(
            "(import {} {{}}).mkShell {{ name = \"from-default\"; }}",
            ex.display()
        ),
    )
    .unwrap();
    let mut c = b3_cmd(&["shell", "--run", "echo \"name=$name\""]);
    c.current_dir(dir.path());
    assert!(ok(c).contains("name=from-default"));
    std::fs::write(
        dir.path().join("shell.nix"),
        format!(
            "(import {} {{}}).mkShell {{ name = \"from-shell\"; }}",
            ex.display()
        ),
    )
    .unwrap();
    let mut c = b3_cmd(&["shell", "--run", "echo \"name=$name\""]);
    c.current_dir(dir.path());
    assert!(ok(c).contains("name=from-shell"));
}
