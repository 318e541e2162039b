//! With `B3_SANDBOX_DETACH=1`, the sandbox process hands its old root to
//! the parent's detaching threads (`detach.rs`); the builder must still see
//! nothing of it. A test binary of its own: the setting is read once per
//! process.

// The sandbox is Linux only.
#![cfg(target_os = "linux")]

mod common;

#[test]
fn with_detaching_threads_the_old_root_has_left_before_the_builder_starts() {
    // Before any sandbox of this process is made (the only test here).
    std::env::set_var("B3_SANDBOX_DETACH", "1");
    common::old_root_leaves_before_the_builder_starts();
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } == 0 {
        let names: Vec<String> = std::fs::read_dir("/proc/self/task")
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("b3-sandbox-det")),
            "as root the detaching threads serve the builds: {names:?}"
        );
    }
}
