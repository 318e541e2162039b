//! `b3 build` as an ordinary user: the sandboxes made ahead of time (their
//! namespaces, host layers and early pivot) need no root either. Run as
//! root, the test drops to `nobody` with `setpriv`; as an ordinary user the
//! other build tests already take this path.

#![cfg(target_os = "linux")]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const CHAIN: &str = r#"
let
  step = prev: i: derivation {
    name = "unpriv-chain-${toString i}"; system = "x86_64-linux";
    builder = "/bin/sh"; args = [ "-c" "echo ${prev} > $out" ];
  };
in builtins.foldl' step "start" (builtins.genList (i: i + 1) 8)
"#;

fn open_to_all(p: &Path) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777)).unwrap();
}

/// `b3 ARGS` as `nobody`, with a home of its own under `dir`.
fn as_nobody(exe: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(exe)
        .args(args)
        .env("HOME", dir)
        .env("XDG_CACHE_HOME", dir.join("cache"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env_remove("B3_STORE")
        .env_remove("NIX_STORE_DIR")
        .env_remove("B3_SANDBOX_POOL")
        .output()
        .expect("setpriv runs (util-linux)")
}

#[test]
fn an_unprivileged_user_builds_a_chain_in_sandboxes_made_ahead_of_time() {
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return;
    }
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox is missing: run scripts/setup-test-deps.sh"
    );
    let dir = tempfile::tempdir().unwrap();
    open_to_all(dir.path());
    // The test binary's directory may not be reachable by nobody.
    let exe = dir.path().join("b3");
    std::fs::copy(env!("CARGO_BIN_EXE_b3"), &exe).unwrap();
    let file = dir.path().join("chain.nix");
    std::fs::write(&file, CHAIN).unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();

    let out = as_nobody(
        &exe,
        dir.path(),
        &["--store", store, "instantiate", file.to_str().unwrap()],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "instantiate: {stderr}");
    let drv = String::from_utf8(out.stdout).unwrap();
    let out = as_nobody(
        &exe,
        dir.path(),
        &[
            "--store",
            store,
            "build",
            "--stats",
            "--no-out-link",
            "-j",
            "2",
            "--option",
            "extra-sandbox-paths",
            "/bin/sh=/bin/busybox",
            drv.trim(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build: {stderr}");
    let last = String::from_utf8(out.stdout).unwrap();
    assert!(last.trim().ends_with("-unpriv-chain-8"), "{last}\n{stderr}");

    // The last step names the one before it, built in the same run.
    let text = std::fs::read_to_string(
        Path::new(store)
            .join("nix/store")
            .join(last.trim().trim_start_matches("/nix/store/")),
    )
    .unwrap();
    assert!(text.trim().ends_with("-unpriv-chain-7"), "{text}");

    // "N sandboxes made ahead of time (M made in all, in K network
    // namespaces made and J taken again)": at least one sandbox was made
    // without root (its early steps ran) and the builds succeeded; the
    // keeper made its network namespaces (builder/src/platform/linux/keeper.rs).
    let made = number_before(&stderr, " made in all", '(');
    assert!(made >= 1, "no sandbox was made ahead of time: {stderr}");
    let namespaces = number_before(&stderr, " network namespaces made", ' ');
    assert!(namespaces >= 1, "{stderr}");
}

/// The number in `stats` that ends right before `marker`, after the last
/// `start` before it.
fn number_before(stats: &str, marker: &str, start: char) -> u64 {
    stats
        .split(marker)
        .next()
        .and_then(|s| s.rsplit(start).next())
        .and_then(|n| n.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no \"{marker}\" in the statistics: {stats}"))
}
