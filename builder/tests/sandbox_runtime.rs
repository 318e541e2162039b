//! How the sandbox behaves as a component: it can be started from a
//! multi-threaded tokio runtime, by an unprivileged user, it streams the log
//! in order, reports exec failures precisely, hands passAsFile and
//! structured-attrs files to the builder, and its set-up time is measured.

// The sandbox is Linux only.
#![cfg(target_os = "linux")]

mod common;

use std::time::Duration;

use b3_builder::job::JobError;
use b3_builder::platform::OsErrorKind;
use b3_builder::sandbox::SandboxError;
use common::{job, run, tempdir};

#[test]
fn setup_time_is_measured() {
    let work = tempdir();
    let mut times = Vec::new();
    for _ in 0..10 {
        let (res, log) = run(&job("touch $out", work.path()));
        assert!(res.outcome.status.success(), "{log}");
        assert!(res.outcome.setup_time > Duration::ZERO);
        assert!(res.outcome.setup_time <= res.outcome.total_time);
        times.push(res.outcome.setup_time);
    }
    times.sort();
    println!(
        "sandbox set-up time over {} runs: min {:?}, median {:?}, max {:?}",
        times.len(),
        times[0],
        times[times.len() / 2],
        times[times.len() - 1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn runs_from_a_multi_threaded_tokio_runtime() {
    let work = tempdir();
    let mut handles = Vec::new();
    // Several builds at once, each from a blocking-pool thread, while the
    // runtime's worker threads are alive.
    for i in 0..4 {
        let j = job(&format!("echo build {i}; echo {i} > $out"), work.path());
        handles.push(tokio::task::spawn_blocking(move || run(&j)));
    }
    for (i, h) in handles.into_iter().enumerate() {
        let (res, log) = h.await.unwrap();
        assert!(res.outcome.status.success(), "{log}");
        assert_eq!(log, format!("build {i}\n"));
        assert_eq!(
            std::fs::read_to_string(&res.outputs["out"]).unwrap(),
            format!("{i}\n")
        );
    }
}

#[test]
fn log_interleaves_stdout_and_stderr_in_order() {
    let work = tempdir();
    let (res, log) = run(&job(
        "echo one; echo two >&2; echo three; echo four >&2; touch $out",
        work.path(),
    ));
    assert!(res.outcome.status.success());
    assert_eq!(log, "one\ntwo\nthree\nfour\n");
}

#[test]
fn failing_builder_reports_its_exit_code() {
    let work = tempdir();
    let (res, log) = run(&job("echo failing; exit 3", work.path()));
    assert_eq!(
        res.outcome.status,
        b3_builder::platform::ExitStatus::Code(3)
    );
    assert_eq!(log, "failing\n");
    assert_eq!(res.missing_outputs, vec!["out".to_string()]);
}

#[test]
fn missing_builder_is_an_exec_error() {
    let work = tempdir();
    let mut j = job("true", work.path());
    j.builder = "/nix/store/00000000000000000000000000000000-nope/bin/sh".into();
    let err = j.run(&mut Vec::new()).unwrap_err();
    match err {
        JobError::Sandbox(SandboxError::Exec { builder, source }) => {
            assert_eq!(builder, j.builder);
            assert_eq!(source.kind, OsErrorKind::NotFound);
            assert!(source.to_string().contains("executing the builder"));
        }
        other => panic!("unexpected error {other}"),
    }
}

#[test]
fn missing_input_path_is_reported_before_anything_runs() {
    let work = tempdir();
    let mut j = job("true", work.path());
    j.inputs
        .push("/nix/store/00000000000000000000000000000000-absent".into());
    let err = j.run(&mut Vec::new()).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
}

#[test]
fn pass_as_file_and_structured_attrs_reach_the_builder() {
    let work = tempdir();
    let mut j = job("cat \"$bigPath\"; echo; touch $out", work.path());
    j.drv_env.insert("passAsFile".into(), "big".into());
    j.drv_env.insert("big".into(), "a value\nwith lines".into());
    let (res, log) = run(&j);
    assert!(res.outcome.status.success(), "{log}");
    assert_eq!(log, "a value\nwith lines\n");

    // busybox sh cannot source bash arrays, so read the files instead.
    let mut j = job(
        "grep -v '^declare -' \"$NIX_ATTRS_SH_FILE\"; cat \"$NIX_ATTRS_JSON_FILE\"; echo; \
         echo \"$name|$PATH\"; touch /nix/store/00000000000000000000000000000000-t",
        work.path(),
    );
    j.drv_env = [(
        "__json".to_string(),
        r#"{"greeting":"hi","list":["a","b"],"name":"t","outputs":["out"]}"#.to_string(),
    )]
    .into_iter()
    .collect();
    let (res, log) = run(&j);
    assert!(res.outcome.status.success(), "{log}");
    assert_eq!(
        log,
        format!(
            "declare greeting='hi'\ndeclare name='t'\n\
             {{\"greeting\":\"hi\",\"list\":[\"a\",\"b\"],\"name\":\"t\",\"outputs\":{{\"out\":\"{out}\"}}}}\n\
             |/path-not-set\n",
            out = common::OUT
        )
    );
}

/// Runs `inner_unprivileged_build` (below) as user `nobody`.
#[test]
fn unprivileged_user_can_run_the_sandbox() {
    // SAFETY: plain getter.
    if unsafe { libc_geteuid() } != 0 {
        // Already unprivileged: the other tests prove it directly.
        return;
    }
    let text = common::run_as_nobody(
        &["inner_unprivileged_build"],
        &[("B3_INNER_UNPRIVILEGED", std::ffi::OsStr::new("1"))],
    );
    assert!(text.contains("inner ok uid=65534"), "{text}");
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
#[ignore = "run by unprivileged_user_can_run_the_sandbox as nobody"]
fn inner_unprivileged_build() {
    if std::env::var_os("B3_INNER_UNPRIVILEGED").is_none() {
        return;
    }
    let work = tempdir();
    let (res, log) = run(&job(
        "id; cat /proc/self/uid_map; ls -A /nix/store; chmod u+s /build 2>/dev/null && echo SETUID; \
         echo x > $out",
        work.path(),
    ));
    assert!(res.outcome.status.success(), "{log}");
    assert!(log.contains("uid=1000(nixbld) gid=100(nixbld)"), "{log}");
    assert!(log.contains("1000      65534          1"), "{log}");
    assert!(!log.contains("SETUID"), "{log}");
    // SAFETY: plain getter.
    println!("inner ok uid={}", unsafe { libc_geteuid() });
}
