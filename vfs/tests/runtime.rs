//! Runtimes: a command in its own user + mount namespace that sees exactly
//! its closure at /nix/store, served by a view (needs user namespaces and
//! FUSE; both work as root here and on CI).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use b3_vfs::odb::Odb;
use b3_vfs::runtime::{self, RuntimeSpec};
use b3_vfs::view::trace::report_from_log;
use common::*;

const BB: &str = "b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";
const DATA: &str = "3dat0000000000000000000000000000-data";
const OTHER: &str = "4oth0000000000000000000000000000-other";

fn server() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_b3-vfs-runtime"))
}

struct Fx {
    tmp: tempfile::TempDir,
}

impl Fx {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let odb = Odb::open(tmp.path().join("odb")).unwrap();
        odb.import_nar(BB, &nix_dump(&busybox())[..]).unwrap();
        for (name, text) in [(DATA, "data file\n"), (OTHER, "other\n")] {
            let d = tmp.path().join(name);
            fs::create_dir(&d).unwrap();
            fs::write(d.join("file"), text).unwrap();
            odb.import_nar(name, &nix_dump(&d)[..]).unwrap();
        }
        Fx { tmp }
    }

    fn spec(&self, closure: &[&str], script: &str) -> RuntimeSpec {
        RuntimeSpec {
            odb: self.tmp.path().join("odb"),
            store_dir: "/nix/store".into(),
            registry: self.registry(),
            trace_log: Some(self.tmp.path().join("trace.log")),
            closure: closure.iter().map(|s| s.to_string()).collect(),
            command: vec![
                format!("/nix/store/{BB}/bin/sh").into(),
                "-c".into(),
                script.into(),
            ],
        }
    }

    fn registry(&self) -> PathBuf {
        self.tmp.path().join("registry")
    }
}

fn sh(script: &str) -> Vec<std::ffi::OsString> {
    vec![
        format!("/nix/store/{BB}/bin/sh").into(),
        "-c".into(),
        script.into(),
    ]
}

#[test]
fn a_runtime_sees_exactly_its_closure_at_the_store_dir() {
    let fx = Fx::new();
    let spec = fx.spec(
        &[BB, DATA],
        &format!(
            "ls /nix/store; /nix/store/{BB}/bin/busybox echo hi; \
             cat /nix/store/{DATA}/file; cat /nix/store/{OTHER}/file || echo hidden"
        ),
    );
    let out = runtime::launch(&server(), &["serve"], &spec)
        .unwrap()
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text,
        format!("{DATA}\n{BB}\nhi\ndata file\nhidden\n"),
        "listing shows only the closure, files outside it are absent"
    );
    // The host's /nix/store is untouched outside the runtime.
    assert!(Path::new("/nix/store").join(BB).exists());
    assert!(!Path::new("/nix/store").join(DATA).exists());
    // Tracing: the data path was read, OTHER was not declared, BB's binary ran.
    let rep = report_from_log(&fx.tmp.path().join("trace.log"), &[BB, DATA]).unwrap();
    assert!(rep.used[DATA].contains("file"), "{rep:?}");
    assert!(rep.used[BB].contains("bin/busybox"), "{rep:?}");
    assert!(rep.unused.is_empty());
    // The registry is cleaned up when the runtime ends.
    assert!(runtime::list(&fx.registry()).unwrap().is_empty());
}

#[test]
fn a_runtime_can_be_listed_entered_and_stopped() {
    let fx = Fx::new();
    let spec = fx.spec(
        &[BB, DATA],
        &format!("/nix/store/{BB}/bin/busybox sleep 60"),
    );
    let mut server = runtime::launch(&server(), &["serve"], &spec)
        .unwrap()
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let info = loop {
        if let Some(i) = runtime::list(&fx.registry()).unwrap().pop() {
            break i;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "runtime never registered"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(info.pid, server.id());
    assert_eq!(info.closure, vec![BB.to_string(), DATA.to_string()]);

    let out = runtime::enter(
        &fx.registry(),
        &info.id,
        &sh("ls /nix/store; cat /nix/store/*/file"),
    )
    .unwrap()
    .output()
    .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{DATA}\n{BB}\ndata file\n")
    );

    runtime::stop(&fx.registry(), &info.id, Duration::from_secs(5)).unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = server.try_wait().unwrap() {
            // The command was killed by SIGTERM: 128 + 15.
            assert_eq!(st.code(), Some(143));
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "runtime did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(runtime::list(&fx.registry()).unwrap().is_empty());
    assert!(matches!(
        runtime::enter(&fx.registry(), &info.id, &sh("true")),
        Err(runtime::Error::NotFound(_))
    ));
}

#[test]
fn a_runtime_lives_until_its_last_process_exits() {
    let fx = Fx::new();
    // The command exits at once but leaves a background process behind.
    let marker = fx.tmp.path().join("marker");
    let spec = fx.spec(
        &[BB],
        &format!(
            "(/nix/store/{BB}/bin/busybox sleep 1; /nix/store/{BB}/bin/busybox touch {}) &",
            marker.display()
        ),
    );
    let t0 = Instant::now();
    let st = runtime::launch(&server(), &["serve"], &spec)
        .unwrap()
        .status()
        .unwrap();
    assert!(st.success());
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "waited for the background process"
    );
    assert!(
        marker.exists(),
        "the background process could still run from the view"
    );
}

#[test]
fn a_runtime_declaring_100001_paths_starts_and_shows_only_those_present() {
    // 100,000 declared paths that are not even in the database: more names
    // than an argument vector holds (the closure travels on a memfd), and
    // the view resolves names on lookup, so the absent ones simply do not
    // appear. The registry lists every name. (Start-up time is measured by
    // examples/vfs_bench.rs; the view's tests check that mounting does no
    // per-path work.)
    let fx = Fx::new();
    let run = |n: usize| {
        let mut closure: Vec<String> = (0..n).map(|i| format!("{i:032}-decl")).collect();
        closure.push(BB.into());
        let refs: Vec<&str> = closure.iter().map(String::as_str).collect();
        let marker = fx.tmp.path().join(format!("listed-{n}"));
        let spec = fx.spec(
            &refs,
            &format!(
                "ls /nix/store; while [ ! -e {} ]; do /nix/store/{BB}/bin/busybox sleep 0.05; done",
                marker.display()
            ),
        );
        let t = Instant::now();
        let server = runtime::launch(&server(), &["serve"], &spec)
            .unwrap()
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let info = loop {
            if let Some(i) = runtime::list(&fx.registry()).unwrap().pop() {
                break i;
            }
            assert!(
                t.elapsed() < Duration::from_secs(120),
                "runtime never registered"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(info.closure, closure, "the registry lists every name");
        fs::write(&marker, b"").unwrap();
        let out = server.wait_with_output().unwrap();
        eprintln!("runtime start+stop, {} paths: {:?}", n + 1, t.elapsed());
        assert!(out.status.success(), "{:?}", out.status);
        assert!(runtime::list(&fx.registry()).unwrap().is_empty());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(run(1), format!("{BB}\n"));
    assert_eq!(run(100_000), format!("{BB}\n"));
}
