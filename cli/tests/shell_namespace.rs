//! The namespace `b3 shell` enters (`b3 __b3-shell-enter`): a store whose
//! logical directory does not exist on the host is still visible there,
//! both under `/` (through a rebuilt root) and under an existing directory.

mod shell_common;
use shell_common::*;

fn enter(physical: &std::path::Path, logical: &str, script: &str) -> std::process::Output {
    let staging = tempfile::tempdir().unwrap();
    std::process::Command::new(b3())
        .arg("__b3-shell-enter")
        .arg(physical)
        .arg(logical)
        .arg(staging.path())
        .arg(std::env::current_dir().unwrap())
        .arg("--")
        .args(["/bin/sh", "-c", script])
        .output()
        .unwrap()
}

#[test]
fn shell_namespace_creates_a_missing_store_directory_under_root() {
    let phys = tempfile::tempdir().unwrap();
    std::fs::write(phys.path().join("marker"), "from the physical store\n").unwrap();
    let logical = format!("/b3-ns-test-{}/store", std::process::id());
    let out = enter(
        phys.path(),
        &logical,
        &format!("cat {logical}/marker; test -d /usr && echo host-usr; pwd; touch {logical}/x 2>/dev/null || echo read-only"),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(s.contains("from the physical store"), "{s}");
    assert!(
        s.contains("host-usr"),
        "the host file system stays visible: {s}"
    );
    assert!(
        s.contains(&std::env::current_dir().unwrap().display().to_string()),
        "{s}"
    );
    assert!(s.contains("read-only"), "{s}");
    assert!(
        !std::path::Path::new(&logical).exists(),
        "the host is untouched"
    );
}

#[test]
fn shell_namespace_creates_a_missing_store_directory_under_an_existing_one() {
    let phys = tempfile::tempdir().unwrap();
    std::fs::write(phys.path().join("marker"), "phys\n").unwrap();
    let host = tempfile::tempdir().unwrap();
    std::fs::write(host.path().join("sibling"), "kept\n").unwrap();
    let logical = host.path().join("nix/store");
    let out = enter(
        phys.path(),
        logical.to_str().unwrap(),
        &format!(
            "cat {0}/marker {1}/sibling",
            logical.display(),
            host.path().display()
        ),
    );
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s, "phys\nkept\n");
    assert!(!logical.exists());
}

#[test]
fn shell_namespace_exit_status_passes_through() {
    let phys = tempfile::tempdir().unwrap();
    let out = enter(phys.path(), "/b3-ns-status-test/store", "exit 42");
    assert_eq!(out.status.code(), Some(42));
}

#[test]
fn shell_namespace_works_for_an_unprivileged_user() {
    // As root, drop to `nobody` to take the user-namespace path; as an
    // ordinary user the tests above already take it.
    use std::os::unix::fs::MetadataExt;
    if std::fs::metadata("/proc/self").unwrap().uid() != 0 {
        return;
    }
    let phys = tempfile::tempdir().unwrap();
    std::fs::write(phys.path().join("marker"), "unprivileged\n").unwrap();
    let staging = tempfile::tempdir().unwrap();
    for d in [phys.path(), staging.path()] {
        let mut perm = std::fs::metadata(d).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o777);
        std::fs::set_permissions(d, perm).unwrap();
    }
    // The test binary's directory may not be reachable by nobody: copy b3.
    let exe_dir = tempfile::tempdir().unwrap();
    let exe = exe_dir.path().join("b3");
    std::fs::copy(b3(), &exe).unwrap();
    let mut perm = std::fs::metadata(exe_dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(exe_dir.path(), perm).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(&exe)
        .arg("__b3-shell-enter")
        .arg(phys.path())
        .arg("/b3-ns-unprivileged-test/store")
        .arg(staging.path())
        .arg("/")
        .args([
            "--",
            "/bin/sh",
            "-c",
            "id -u; cat /b3-ns-unprivileged-test/store/marker",
        ])
        .output()
        .expect("setpriv (util-linux)");
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{s}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(s, "65534\nunprivileged\n");
}
