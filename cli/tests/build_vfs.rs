//! `b3 build --vfs` / `--trace`: the build's sandbox sees its input closure
//! through a FUSE view served from the object database; the trace says
//! which inputs the build read and which it never did; the output is the
//! same bytes as a build from bind-mounted inputs.

mod shell_common;
use shell_common::*;

use std::path::Path;

/// A derivation with two source inputs of which the builder reads one.
fn two_inputs(dir: &Path) -> std::path::PathBuf {
    std::fs::write(dir.join("used.txt"), "read by the builder\n").unwrap();
    std::fs::write(dir.join("unused.txt"), "never read\n").unwrap();
    let nix = dir.join("two.nix");
    std::fs::write(
        &nix,
        format!(
            r#"let pkgs = import {ex} {{}}; in
derivation {{
  name = "vfs-two-inputs"; system = "x86_64-linux";
  builder = "${{pkgs.busybox}}/bin/sh";
  PATH = "${{pkgs.busybox}}/bin";
  used = builtins.path {{ name = "vfs-used-input"; path = ./used.txt; }};
  unused = builtins.path {{ name = "vfs-unused-input"; path = ./unused.txt; }};
  args = [ "-c" "cat $used > $out" ];
}}
"#,
            ex = examples().canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    nix
}

fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: run scripts/setup-test-deps.sh (installs fuse3)"
    );
}

fn nar_hash(path: &str) -> String {
    let json = ok(b3_cmd(&["path-info", "--json", path]));
    let start = json.find("\"narHash\":\"").expect("narHash") + 11;
    json[start..start + json[start..].find('"').unwrap()].to_string()
}

#[test]
fn build_trace_names_the_read_input_and_reports_the_unused_one() {
    prebuilt();
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let nix = two_inputs(dir.path());
    let log = dir.path().join("trace.log");
    let out = run(b3_cmd(&[
        "build",
        "--no-out-link",
        "--trace",
        log.to_str().unwrap(),
        nix.to_str().unwrap(),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let built = stdout.trim();
    assert!(built.ends_with("-vfs-two-inputs"), "{stdout}");
    let line = |prefix: &str, suffix: &str| {
        stderr
            .lines()
            .any(|l| l.starts_with(prefix) && l.contains(suffix))
    };
    assert!(line("used /nix/store/", "-vfs-used-input ("), "{stderr}");
    assert!(line("used /nix/store/", "-busybox ("), "{stderr}");
    assert!(line("unused /nix/store/", "-vfs-unused-input"), "{stderr}");
    assert!(!line("used /nix/store/", "-vfs-unused-input"), "{stderr}");
    assert!(!stderr.contains("Not Implemented"), "{stderr}");
    // The log names the file the builder's `cat` opened, by its process.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines().any(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            f.len() == 8
                && f[1] == "open"
                && f[5].ends_with("-vfs-used-input")
                && f[7].starts_with("cat ")
        }),
        "{text}"
    );
    assert!(!text.contains("-vfs-unused-input"), "{text}");
    // What the build made is what it read.
    let content = ok(b3_cmd(&["store", "dump", built]));
    assert!(content.contains("read by the builder"), "{content}");
}

#[test]
fn build_output_is_identical_with_and_without_vfs() {
    prebuilt();
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let nix = two_inputs(dir.path());
    std::fs::write(
        dir.path().join("used.txt"),
        "another content for another output\n",
    )
    .unwrap();
    let plain = ok(b3_cmd(&["build", "--no-out-link", nix.to_str().unwrap()]));
    let plain = plain.trim();
    let before = nar_hash(plain);
    // Rebuilt through the view and compared byte for byte with the
    // registered output (`--check` fails unless they are identical).
    let checked = run(b3_cmd(&[
        "build",
        "--no-out-link",
        "--check",
        "--vfs",
        nix.to_str().unwrap(),
    ]));
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&checked.stdout).trim(), plain);
    assert_eq!(nar_hash(plain), before);
}

/// A derivation whose output says whether its inputs came from a view.
fn where_inputs_come_from(dir: &Path, mode: &str) -> std::path::PathBuf {
    let nix = dir.join(format!("{mode}.nix"));
    std::fs::write(
        &nix,
        format!(
            r#"let pkgs = import {ex} {{}}; in
derivation {{
  name = "vfs-conf-{mode}"; system = "x86_64-linux";
  builder = "${{pkgs.busybox}}/bin/sh";
  PATH = "${{pkgs.busybox}}/bin";
  args = [ "-c" "if grep -q ' - fuse.b3-vfs ' /proc/self/mountinfo; then echo view > $out; else echo bind > $out; fi" ];
}}
"#,
            ex = examples().canonicalize().unwrap().display()
        ),
    )
    .unwrap();
    nix
}

#[test]
fn nix_conf_b3_vfs_builds_makes_builds_use_views_and_real_nix_only_warns() {
    prebuilt();
    require_fuse();
    let dir = tempfile::tempdir().unwrap();
    let build = |mode: &str, conf: Option<&str>, opts: &[&str]| {
        let nix = where_inputs_come_from(dir.path(), mode);
        let mut args = vec!["build", "--no-out-link"];
        args.extend_from_slice(opts);
        args.push(nix.to_str().unwrap());
        let mut c = b3_cmd(&args);
        if let Some(conf) = conf {
            c.env("NIX_CONFIG", conf);
        }
        let out = run(c);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(!stderr.contains("unknown setting"), "{stderr}");
        let built = String::from_utf8_lossy(&out.stdout).trim().to_string();
        // The output is one small file: its NAR holds the word.
        let nar = ok(b3_cmd(&["store", "dump", &built]));
        match (nar.contains("view\n"), nar.contains("bind\n")) {
            (true, false) => "view",
            (false, true) => "bind",
            _ => panic!("unexpected output {nar:?}"),
        }
    };
    assert_eq!(build("on", Some("b3-vfs-builds = true"), &[]), "view");
    assert_eq!(build("default", None, &[]), "bind");
    assert_eq!(build("off", Some("b3-vfs-builds = false"), &[]), "bind");
    // --option beats nix.conf, both ways.
    let off = ["--option", "b3-vfs-builds", "false"];
    assert_eq!(build("opt-off", Some("b3-vfs-builds = true"), &off), "bind");
    let on = ["--option", "b3-vfs-builds", "true"];
    assert_eq!(build("opt-on", None, &on), "view");
    // Real Nix reads the same nix.conf: it warns and carries on.
    let out = std::process::Command::new("nix-instantiate")
        .args(["--eval", "-E", "1"])
        .env("NIX_CONFIG", "b3-vfs-builds = true")
        .output()
        .expect("nix-instantiate not runnable: run scripts/setup-test-deps.sh");
    assert!(out.status.success());
    assert_eq!(out.stdout, b"1\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown setting 'b3-vfs-builds'"));
}
