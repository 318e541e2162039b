//! The sandbox as the builder sees it must match what Nix 2.8 gives: the same
//! derivation (a busybox script that dumps its environment, identity, host
//! name, file system layout, `/etc` files, id maps, process count, seccomp
//! and no-new-privs status, network and limits) is built by real `nix-build`
//! (sandbox on) and by b3, and the two logs are compared line by line. A
//! fixed-output derivation is compared too (host network, host
//! `/etc/{hosts,resolv.conf,services}`, generated `nsswitch.conf`,
//! `NIX_OUTPUT_CHECKED`, `impureEnvVars` from the caller).

// The sandbox is Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use b3_builder::job::BuildJob;
use b3_builder::sandbox::SandboxPath;
use common::{require_busybox, tempdir, BB};

const SCRIPT: &str = r#"exec 2>&1
echo "== env"; env | sort
echo "== id"; id
echo "== hostname"; hostname; cat /proc/sys/kernel/domainname
echo "== ls /"; ls -A / | cat
echo "== ls /dev"; ls -A /dev | cat; ls -A /dev/pts | cat
echo "== modes"; stat -c '%A %U %G %n' / /build /tmp /nix /nix/store /etc /etc/passwd /etc/group /etc/hosts /dev /dev/shm /dev/pts /dev/pts/ptmx /dev/ptmx /dev/null /dev/fd /proc /bin/sh
echo "== store"; ls -A /nix/store | cat
echo "== etc"; ls -A /etc | cat; cat /etc/passwd /etc/group /etc/hosts
echo "== ids"; cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups
echo "== proc"; set -- /proc/[0-9]*; echo "$#"; set --
echo "== status"; grep -E 'NoNewPrivs|Seccomp:|CapEff|CapPrm' /proc/self/status
echo "== net"; ip -o addr | awk '{print $2, $3, $4}'; ip -o link | awk '{print $2}'
echo "== limits"; ulimit -c; umask; pwd
echo "== argv"; tr '\0' '\n' < /proc/1/cmdline | head -2
echo "== build"; ls -A /build | cat; cat "$bigPath"; echo
echo "== setuid"; touch /build/f; chmod u+s /build/f; echo "rc=$?"
echo "== end"
touch $out
"#;

const FOD_SCRIPT: &str = r#"exec 2>&1
echo "== env"; env | sort
echo "== etc"; ls -A /etc | cat; cat /etc/nsswitch.conf /etc/hosts /etc/resolv.conf
echo "== net"; ip -o link | awk '{print $2}'
echo "== who"; id; hostname
echo "== end"
echo hello > $out
"#;

/// sha256 of "hello\n".
const HELLO_SHA256: &str = "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03";

fn nix_expr(name: &str, nonce: &str, script: &str, fixed_output: bool) -> String {
    let extra = if fixed_output {
        format!(
            r#"outputHashMode = "flat"; outputHashAlgo = "sha256"; outputHash = "{HELLO_SHA256}";
  impureEnvVars = [ "B3_TEST_IMPURE" "B3_TEST_UNSET" ];"#
        )
    } else {
        r#"nonce = "NONCE"; passAsFile = [ "big" ]; big = "passed as a file";"#
            .replace("NONCE", nonce)
    };
    format!(
        r#"let bb = builtins.storePath {BB}; in
derivation {{
  name = "{name}"; system = "x86_64-linux"; builder = "${{bb}}/bin/sh";
  PATH = "${{bb}}/bin";
  {extra}
  args = [ "-c" {script} ];
}}"#,
        script = serde_json::to_string(script).unwrap()
    )
}

fn require_nix() {
    let ok = Command::new("nix-build")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "nix-build (Nix 2.8, the test oracle) is not available: run scripts/setup-test-deps.sh"
    );
}

fn cmd(c: &mut Command) -> String {
    let out = c.output().expect("runs");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn normalise(log: &str) -> Vec<String> {
    log.replace('\r', "")
        .lines()
        .map(|l| l.trim_end().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// The oracle runs Nix as root without build users, which maps host root to
/// the build user: its builders see root-owned host files as their own and
/// can write root-owned `/proc/sys` entries. b3 as root deliberately runs
/// the builder as an unprivileged host id and shows host root as `nobody`
/// (as Nix does with build users), so those lines differ by design; this
/// rewrites the oracle's lines to what b3 must print instead.
fn as_root_mode(nix: Vec<String>) -> Vec<String> {
    // SAFETY: plain getter.
    if unsafe { geteuid() } != 0 {
        return nix;
    }
    let id_line = |a: u32, b: u32| format!("{a:>10} {b:>10} {:>10}", 1);
    let host = b3_builder::platform::ROOT_MODE_BUILD_ID;
    let mut out = Vec::new();
    let mut in_ids = false;
    for line in nix {
        if in_ids {
            if line.starts_with("== ") {
                in_ids = false;
            } else {
                continue;
            }
        }
        if line == "== ids" {
            in_ids = true;
            out.push(line);
            out.push(id_line(1000, host));
            out.push(id_line(65534, 0));
            out.push(id_line(100, host));
            out.push(id_line(65534, 0));
            out.push("allow".to_string());
            continue;
        }
        let host_owned = ["/dev/pts/ptmx", "/dev/null", "/proc", "/bin/sh"];
        match line.split_once(" nixbld nixbld ") {
            Some((mode, path)) if host_owned.contains(&path) => {
                out.push(format!("{mode} nobody nogroup {path}"))
            }
            _ => out.push(line),
        }
    }
    out
}

extern "C" {
    fn geteuid() -> u32;
}

/// Builds the same derivation with real Nix and with b3 and compares the
/// builders' logs line by line.
fn compare_with_nix(script: &str, fixed_output: bool) {
    require_busybox();
    require_nix();
    let dir = tempdir();
    let nonce = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    // A fresh name each run: fixed outputs are otherwise never rebuilt.
    let name = if fixed_output {
        format!("b3-fod-oracle-{nonce}")
    } else {
        "b3-sandbox-oracle".to_string()
    };
    let nix_file = dir.path().join("oracle.nix");
    std::fs::write(&nix_file, nix_expr(&name, &nonce, script, fixed_output)).unwrap();
    let drv_path = cmd(Command::new("nix-instantiate").arg(&nix_file))
        .trim()
        .to_string();
    let show = cmd(Command::new("nix").args(["show-derivation", &drv_path]));
    let json: serde_json::Value = serde_json::from_str(&show).unwrap();
    let drv = &json[&drv_path];

    // Real Nix builds it; its log is the reference.
    let impure: BTreeMap<String, String> =
        [("B3_TEST_IMPURE".to_string(), "from the caller".to_string())].into();
    cmd(Command::new("nix-build")
        .args(["--no-out-link", &drv_path])
        .envs(&impure)
        .env_remove("B3_TEST_UNSET"));
    let nix_log = cmd(Command::new("nix-store").args(["-l", &drv_path]));

    // b3 builds the same derivation.
    let env: BTreeMap<String, String> = drv["env"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let outputs: BTreeMap<String, String> = drv["outputs"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["path"].as_str().unwrap().to_string()))
        .collect();
    let job = BuildJob {
        name,
        builder: drv["builder"].as_str().unwrap().into(),
        args: drv["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect(),
        drv_env: env,
        drv_env_bytes: BTreeMap::new(),
        outputs,
        inputs: vec![BB.to_string()],
        logical_store_dir: "/nix/store".into(),
        physical_store_dir: "/nix/store".into(),
        work_parent: dir.path().to_path_buf(),
        work_prefix: b3_builder::job::DEFAULT_WORK_PREFIX.to_string(),
        fixed_output,
        // As in the oracle's /etc/nix/nix.conf.
        extra_paths: vec![SandboxPath::parse("/bin/sh=/bin/busybox").unwrap()],
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        timeout: None,
        max_silent: None,
        kvm: Path::new("/dev/kvm").exists(),
        impure_env: Some(impure),
        cancel: None,
        overlay: Some(0),
        pool: None,
        work_dirs: None,
    };
    let mut log = Vec::new();
    let res = job.run(&mut log).expect("sandbox runs");
    let b3_log = String::from_utf8_lossy(&log).into_owned();
    assert!(res.outcome.status.success(), "{b3_log}");
    assert!(res.outputs.contains_key("out"));

    let want = as_root_mode(normalise(&nix_log));
    let got = normalise(&b3_log);
    assert!(
        want.iter().any(|l| l == "== end"),
        "oracle log incomplete: {nix_log}"
    );
    let diff: Vec<String> = want
        .iter()
        .zip(got.iter().chain(std::iter::repeat(&String::new())))
        .filter(|(w, g)| w != g)
        .map(|(w, g)| format!("nix: {w:?}\nb3:  {g:?}"))
        .collect();
    assert!(
        diff.is_empty() && want.len() == got.len(),
        "sandbox differs from Nix 2.8:\n{}\n--- full b3 log:\n{b3_log}",
        diff.join("\n")
    );
}

#[test]
fn sandbox_matches_nix_2_8_as_seen_by_the_builder() {
    compare_with_nix(SCRIPT, false);
}

#[test]
fn fixed_output_sandbox_matches_nix_2_8() {
    compare_with_nix(FOD_SCRIPT, true);
}
