//! Break-out attempts from inside the Linux sandbox that must fail: reading
//! host files outside the input closure, writing outside `$out` and the build
//! directory, reaching a TCP listener on the host's 127.0.0.1, seeing host
//! processes, creating setuid/setgid files, and leaving processes running
//! after the build. Each test runs a real busybox builder in real namespaces.

// The sandbox is Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{job, run, tempdir, BB, OUT};

#[test]
fn host_files_outside_the_closure_are_invisible() {
    only_the_closure_is_visible(true);
}

/// The same with the store bound instead of overlaid (the layout used
/// when the kernel refuses the overlay, forced here).
#[test]
fn host_files_outside_the_closure_are_invisible_without_the_overlay() {
    only_the_closure_is_visible(false);
}

fn only_the_closure_is_visible(overlay: bool) {
    let host = tempdir();
    let secret = host.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    // A store path that exists on the host but is not an input.
    let other = std::fs::read_dir("/nix/store")
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".drv"))
        .expect("some other store path exists");
    let work = tempdir();
    let script = format!(
        "for f in {secret} {other} /etc/shadow /root /work /usr/bin/env; do \
           if cat $f >/dev/null 2>&1 || ls $f >/dev/null 2>&1; then echo LEAK $f; fi; \
         done; echo ROOT: $(ls -A /); \
         if echo x > {bb}/evil 2>/dev/null; then echo LEAK writable input; fi; \
         echo STORE: $(ls -A /nix/store); touch $out",
        bb = BB,
        secret = secret.display(),
        other = other.display()
    );
    let mut j = job(&script, work.path());
    j.overlay = overlay.then_some(0);
    let (res, log) = run(&j);
    assert!(res.outcome.status.success(), "{log}");
    assert!(
        !log.contains("LEAK"),
        "host file visible in the sandbox: {log}"
    );
    // Nothing but the sandbox's own directories at its root (no staging
    // mount of the whole store left behind).
    let root_line = log.lines().find(|l| l.starts_with("ROOT:")).unwrap();
    assert_eq!(root_line, "ROOT: bin build dev etc nix proc tmp", "{log}");
    let store_line = log.lines().find(|l| l.starts_with("STORE:")).unwrap();
    assert_eq!(
        store_line,
        format!("STORE: {}", BB.trim_start_matches("/nix/store/")),
        "the store shows only the inputs"
    );
}

#[test]
fn writes_outside_out_and_the_build_dir_do_not_reach_the_host() {
    let work = tempdir();
    let before_sh = std::fs::read("/bin/busybox").unwrap();
    let null_mode = std::fs::metadata("/dev/null").unwrap().permissions().mode();
    let script = format!(
        "try() {{ if \"$@\" 2>/dev/null; then echo ESCAPED: \"$@\"; fi; }}; \
         try sh -c 'echo x > {BB}/evil'; \
         try mkdir {BB}/evil-dir; \
         try chmod 777 {BB}/bin/busybox; \
         try sh -c 'echo x >> /bin/sh'; \
         try chmod 777 /dev/null; \
         try rm {BB}/bin/sh; \
         echo hi > /tmp/in-sandbox-tmp-$$; \
         echo built > /build/in-build-dir; \
         echo junk > /nix/store/not-an-output; \
         echo ok > $out"
    );
    let (res, log) = run(&job(&script, work.path()));
    assert!(res.outcome.status.success(), "{log}");
    assert!(!log.contains("ESCAPED"), "{log}");
    assert!(!std::path::Path::new(BB).join("evil").exists());
    assert!(!std::path::Path::new(BB).join("evil-dir").exists());
    assert!(std::path::Path::new(BB).join("bin/sh").exists());
    assert_eq!(std::fs::read("/bin/busybox").unwrap(), before_sh);
    assert_eq!(
        std::fs::metadata("/dev/null").unwrap().permissions().mode(),
        null_mode
    );
    assert!(!std::path::Path::new("/nix/store/not-an-output").exists());
    // What the builder wrote is where the API says, and nowhere else.
    let out = &res.outputs["out"];
    assert_eq!(std::fs::read_to_string(out).unwrap(), "ok\n");
    assert!(out.starts_with(res.work_dir.path()));
    assert_eq!(
        std::fs::read_to_string(res.work_dir.build().join("in-build-dir")).unwrap(),
        "built\n"
    );
}

#[test]
fn pure_build_cannot_reach_a_host_tcp_listener() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let work = tempdir();
    let script = format!(
        "if echo ping | nc -w 2 127.0.0.1 {port}; then echo CONNECTED; fi; \
         if wget -q -T 2 -O - http://127.0.0.1:{port}/ ; then echo CONNECTED; fi; \
         ip -o link | wc -l; touch $out"
    );
    let (res, log) = run(&job(&script, work.path()));
    assert!(res.outcome.status.success(), "{log}");
    assert!(!log.contains("CONNECTED"), "{log}");
    assert!(
        listener.accept().is_err(),
        "the listener saw a connection from the sandbox"
    );
    // Only `lo` exists in the sandbox's network namespace.
    assert!(log.lines().any(|l| l.trim() == "1"), "{log}");
}

#[test]
fn fixed_output_build_shares_the_host_network() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let work = tempdir();
    let script = format!("echo ping | nc -w 2 127.0.0.1 {port}; touch $out");
    let mut j = job(&script, work.path());
    j.fixed_output = true;
    let accepter = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut got = String::new();
        s.read_to_string(&mut got).unwrap();
        got
    });
    let (res, log) = run(&j);
    assert!(res.outcome.status.success(), "{log}");
    assert_eq!(accepter.join().unwrap(), "ping\n");
}

#[test]
fn host_processes_are_invisible() {
    let work = tempdir();
    let me = std::process::id();
    let script = "echo PIDS $(ls /proc | grep -c '^[0-9]'); \
                  cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; ps -o pid,comm; touch $out";
    let (res, log) = run(&job(script, work.path()));
    assert!(res.outcome.status.success(), "{log}");
    let pids: usize = log
        .lines()
        .find_map(|l| l.strip_prefix("PIDS "))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The shell (PID 1), ls and grep; nothing of the host.
    assert!(pids <= 4, "saw {pids} processes: {log}");
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_string_lossy();
    assert!(
        !log.contains(&*exe_name),
        "host test process visible: {log}"
    );
    assert!(!log.contains(&format!(" {me} ")));
}

#[test]
fn setuid_and_setgid_files_cannot_be_created() {
    let work = tempdir();
    let script = "set +e; touch $out; mkdir /build/d; \
                  chmod u+s $out && echo SETUID; chmod g+s $out && echo SETGID; \
                  chmod 4755 $out && echo SETUID2; chmod g+s /build/d && echo SETGID_DIR; \
                  chmod 755 $out && echo PLAIN_OK; exit 0";
    let (res, log) = run(&job(script, work.path()));
    assert!(res.outcome.status.success(), "{log}");
    for bad in ["SETUID", "SETGID", "SETUID2", "SETGID_DIR"] {
        assert!(!log.lines().any(|l| l == bad), "{bad} succeeded: {log}");
    }
    assert!(log.contains("PLAIN_OK"), "ordinary chmod must work: {log}");
    assert!(log.contains("Operation not permitted"), "{log}");
    let mode = std::fs::metadata(&res.outputs["out"])
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o6000, 0, "setid bits on the host: {mode:o}");
    assert_eq!(mode & 0o777, 0o755);
}

fn processes_with_arg(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn no_process_survives_the_build() {
    let work = tempdir();
    let marker = format!("{}", 100_000 + std::process::id() % 800_000);
    // Background, detached (new session) and double-forked sleepers, each
    // with their stdio closed so they do not hold the log pipe open.
    let script = format!(
        "sleep {marker} & \
         setsid sleep {marker} </dev/null >/dev/null 2>&1 & \
         (sh -c 'sleep {marker} </dev/null >/dev/null 2>&1 &') ; \
         sleep 0.2; echo started; touch $out"
    );
    let t = Instant::now();
    let (res, log) = run(&job(&script, work.path()));
    assert!(res.outcome.status.success(), "{log}");
    assert!(log.contains("started"));
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "the build waited for sleep"
    );
    let left = processes_with_arg(&format!("sleep {marker}"));
    assert!(left.is_empty(), "processes left running: {left:?}");
}

#[test]
fn timeout_kills_the_whole_sandbox() {
    let work = tempdir();
    let mut j = job("sleep 1000 & sleep 1000", work.path());
    j.timeout = Some(Duration::from_millis(500));
    let t = Instant::now();
    let (res, _log) = run(&j);
    assert!(res.outcome.timed_out);
    assert_eq!(
        res.outcome.status,
        b3_builder::platform::ExitStatus::Signal(9)
    );
    assert!(t.elapsed() < Duration::from_secs(30));
    assert!(!res.outputs.contains_key("out"));
    assert_eq!(res.missing_outputs, vec!["out".to_string()]);
    let _ = OUT;
}

#[test]
fn timeout_applies_after_the_builder_closes_its_output() {
    let work = tempdir();
    let mut j = job("exec >/dev/null 2>&1; sleep 1000", work.path());
    j.timeout = Some(Duration::from_millis(500));
    let t = Instant::now();
    let (res, _log) = run(&j);
    assert!(res.outcome.timed_out);
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// As root, an id mapping that made the builder host root would let it
/// write host sysctls (this was a real bug: it changed the host's
/// `randomize_va_space`). The probe writes back the current values, so a
/// regression changes nothing on the host.
#[test]
fn builder_has_no_privileges_left() {
    let work = tempdir();
    let script = "try() { if \"$@\" 2>/dev/null; then echo PRIVILEGED: \"$@\"; fi; }; \
                  try mount -t tmpfs none /tmp; \
                  try umount /nix/store; \
                  try hostname evil; \
                  for f in /proc/sys/kernel/randomize_va_space /proc/sys/kernel/sysrq /proc/sys/vm/swappiness; do \
                    v=$(cat $f 2>/dev/null) && try sh -c \"echo $v > $f\"; done; \
                  grep -E '^(CapEff|CapPrm|NoNewPrivs)' /proc/self/status; touch $out";
    let (res, log) = run(&job(script, work.path()));
    assert!(res.outcome.status.success(), "{log}");
    assert!(!log.contains("PRIVILEGED"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000000"), "{log}");
    assert!(log.contains("NoNewPrivs:\t1"), "{log}");
}

#[test]
fn silent_builder_is_killed_after_max_silent_time() {
    let work = tempdir();
    let mut j = job("echo starting; sleep 1000", work.path());
    j.max_silent = Some(Duration::from_millis(500));
    let t = Instant::now();
    let (res, log) = run(&j);
    assert!(res.outcome.silent_too_long, "{log}");
    assert!(!res.outcome.timed_out);
    assert_eq!(log, "starting\n");
    assert!(t.elapsed() < Duration::from_secs(30));
}

/// Both store layouts: bound (the default: no overlay, no scratch
/// directory) or overlaid from a number of inputs on
/// (`B3_SANDBOX_OVERLAY`); either way the builder sees only its inputs in
/// the store, cannot write to them, and its output lands in the work
/// directory.
#[test]
fn the_store_layout_follows_the_number_of_inputs_and_shows_only_them() {
    for (threshold, overlaid) in [(None, false), (Some(2), false), (Some(1), true)] {
        let work = tempdir();
        let script = format!(
            "echo STORE: $(ls -A /nix/store); \
             if echo x > {BB}/evil 2>/dev/null; then echo LEAK writable input; fi; \
             echo ok > $out"
        );
        let mut j = job(&script, work.path());
        j.overlay = threshold;
        let (res, log) = run(&j);
        assert!(res.outcome.status.success(), "{log}");
        assert!(!log.contains("LEAK"), "{log}");
        let store_line = log.lines().find(|l| l.starts_with("STORE:")).unwrap();
        assert_eq!(
            store_line,
            format!("STORE: {}", BB.trim_start_matches("/nix/store/")),
            "the store shows only the inputs"
        );
        assert_eq!(
            std::fs::read_to_string(&res.outputs["out"]).unwrap(),
            "ok\n"
        );
        assert_eq!(
            res.work_dir.scratch().exists(),
            overlaid,
            "a scratch directory only for the overlay (threshold {threshold:?})"
        );
    }
}
