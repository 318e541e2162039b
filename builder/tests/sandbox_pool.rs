//! Pre-made sandboxes (`SandboxPool`) must isolate a build exactly as a
//! fresh sandbox does: a probe prints what a builder can see and do, and
//! the pooled run must print the same as the fresh one; consecutive pooled
//! builds must not see each other's `/tmp`, `/build`, `/dev/shm`, processes
//! or inputs. Whether a build was served from the pool is counted, and the
//! tests wait for a ready sandbox before each pooled build, so they do not
//! depend on timing.

// The sandbox (and its pool) is Linux only.
#![cfg(target_os = "linux")]

mod common;

use b3_builder::job::BuildJob;
use b3_builder::sandbox::{SandboxPool, SandboxSpec};
use common::{job, run, tempdir, BB};

/// What a builder sees: ids, names, the root, devices, mounts (targets and
/// ro/rw only: sources name host paths), network interfaces, processes,
/// privileges, the store, `/tmp` and `/build`. Processes are judged by the
/// PID of the builder's first child: counting the live ones would race with
/// the probe's own pipelines, whose members are briefly named otherwise.
const PROBE: &str = r#"
first=$(sh -c 'echo $$')
echo "ids $(id -u) $(id -g) $(id -G)"
echo "host $(hostname) $(cat /proc/sys/kernel/domainname)"
echo "root $(ls -A / | tr '\n' ' ')"
echo "dev $(ls -A /dev | tr '\n' ' ')"
echo "etc $(ls -A /etc | tr '\n' ' ')"
echo "mounts $(cut -d' ' -f2,4 /proc/self/mounts | sed 's/,.*//' | sort | tr '\n' ';')"
echo "net $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ' ')"
echo "init $(cat /proc/1/comm), first child $first"
grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status | tr '\t\n' '  '; echo
echo "store $(ls -A /nix/store | tr '\n' ' ')"
echo "tmp $(ls -A /tmp | tr '\n' ' ')"
echo "build $(ls -A /build | tr '\n' ' ')"
echo "shm $(ls -A /dev/shm | tr '\n' ' ')"
if echo x > /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb/evil 2>/dev/null; then echo LEAK input writable; fi
if touch /suid 2>/dev/null && chmod u+s /suid 2>/dev/null && [ -u /suid ]; then echo LEAK setuid; fi
touch $out
"#;

fn pooled(script: &str, work: &std::path::Path, pool: &SandboxPool) -> BuildJob {
    let mut j = job(script, work);
    j.pool = Some(pool.clone());
    j
}

/// Runs `j` and returns its log, failing on a failed build.
fn log_of(j: &BuildJob) -> String {
    let (res, log) = run(j);
    assert!(res.outcome.status.success(), "{log}");
    log
}

#[test]
fn a_pooled_sandbox_shows_the_builder_exactly_what_a_fresh_one_does() {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    // The first build of a pool runs fresh (nothing is ready yet) and makes
    // its spec the pool's template.
    let fresh = log_of(&pooled(PROBE, work.path(), &pool));
    assert_eq!(pool.served(), 0);
    pool.wait_ready().expect("a sandbox is made");
    let warm = log_of(&pooled(PROBE, work.path(), &pool));
    assert_eq!(pool.served(), 1, "the second build ran in the pool");
    // A pre-made sandbox reaches the host through layers stacked under its
    // store layer (the physical store read-only, the work directories
    // writable; see `plan::HostLayers`): its mount table lists them, and
    // that is the only difference.
    let with_layers = fresh.replace(
        "/nix/store rw;/nix/store/",
        "/nix/store ro;/nix/store rw;/nix/store rw;/nix/store/",
    );
    assert_ne!(with_layers, fresh, "the fresh mount table: {fresh}");
    assert_eq!(with_layers, warm, "pooled and fresh sandboxes differ");
    assert!(!warm.contains("LEAK"), "{warm}");
    // The shape a fresh sandbox has (checked in detail elsewhere).
    assert!(warm.contains("ids 1000 100 100"), "{warm}");
    assert!(warm.contains("host localhost (none)"), "{warm}");
    assert!(warm.contains("net lo \n"), "{warm}");
    // Nothing but the builder ran in the PID namespace before it.
    assert!(warm.contains("init sh, first child 2\n"), "{warm}");
    assert!(warm.contains("NoNewPrivs: 1"), "{warm}");
    assert!(warm.contains("Seccomp: 2"), "{warm}");
    assert!(
        !warm.contains(".b3-stage"),
        "the staged store is gone: {warm}"
    );
    let store_line = warm.lines().find(|l| l.starts_with("store ")).unwrap();
    assert_eq!(
        store_line.trim_end(),
        format!("store {}", BB.trim_start_matches("/nix/store/")),
        "only the input is in the store"
    );
}

#[test]
fn a_pool_warmed_up_before_any_build_serves_the_first_one() {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    let j = pooled("echo hi; echo done > $out", work.path(), &pool);
    // What a realisation knows before its first build: the store, the
    // settings and where work directories go; no build's own fields.
    let w = work.path().join("template");
    pool.warm_up(&SandboxSpec {
        builder: "/bin/sh".into(),
        args: Vec::new(),
        env: Vec::new(),
        env_bytes: Vec::new(),
        logical_store_dir: j.logical_store_dir.clone(),
        physical_store_dir: j.physical_store_dir.clone(),
        inputs: Vec::new(),
        store_dir_host: w.join("store"),
        build_dir: w.join("build"),
        root_dir: w.join("root"),
        scratch_dir: None,
        made_points: Default::default(),
        network: false,
        extra_paths: j.extra_paths.clone(),
        kvm: j.kvm,
        timeout: None,
        max_silent: None,
        cancel: None,
        pool: None,
    });
    pool.wait_ready()
        .expect("a sandbox is made before any build");
    assert_eq!(pool.made(), 1);
    assert_eq!(log_of(&j), "hi\n");
    assert_eq!(pool.served(), 1, "the first build ran in the pool");
}

#[test]
fn a_pooled_build_whose_builder_cannot_be_executed_fails_with_the_step_and_the_next_one_runs() {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    log_of(&pooled("echo first > $out", work.path(), &pool));
    pool.wait_ready().expect("a sandbox is made");
    let mut bad = pooled("true", work.path(), &pool);
    bad.builder = "/nonexistent/sh".into();
    let mut log = Vec::new();
    let err = bad.run(&mut log).expect_err("no such builder");
    let msg = err.to_string();
    assert!(
        msg.contains("executing builder '/nonexistent/sh'") && msg.contains("(os error 2)"),
        "{msg}"
    );
    // A good build after it: the report of one sandbox is not another's.
    pool.wait_ready().expect("a sandbox is made");
    // A pool of one makes another only once its sandbox is taken: the
    // failed build took it.
    assert_eq!(pool.made(), 2);
    let (res, log) = run(&pooled("echo again; echo > $out", work.path(), &pool));
    assert!(res.outcome.status.success(), "{log}");
    assert_eq!(log, "again\n");
    assert_eq!(pool.served(), 1, "the good build ran in the pool");
    assert!(res.outcome.setup_time > std::time::Duration::ZERO);
    assert!(res.outcome.setup_time <= res.outcome.total_time);
}

#[test]
fn consecutive_pooled_builds_do_not_see_each_others_files_processes_or_inputs() {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    // A store path on the host that only the first build declares.
    let other = common::other_store_path();
    let leave_traces = "echo a > /tmp/from-a; echo a > /build/from-a; \
         echo a > /dev/shm/from-a; (sleep 1000 &) ; sleep 1000 & \
         echo A-STORE $(ls -A /nix/store); touch $out";
    let look = "echo B-TMP $(ls -A /tmp); echo B-BUILD $(ls -A /build); \
         echo B-SHM $(ls -A /dev/shm); echo B-SLEEPERS $(cat /proc/[0-9]*/comm | grep -c sleep); \
         echo B-STORE $(ls -A /nix/store); touch $out";
    for round in 0..2 {
        let mut a = pooled(leave_traces, work.path(), &pool);
        a.inputs.push(format!("/nix/store/{other}"));
        if round > 0 {
            pool.wait_ready().expect("a sandbox is made");
        }
        let log_a = log_of(&a);
        assert!(log_a.contains(&other), "A sees its own input: {log_a}");
        pool.wait_ready().expect("a sandbox is made");
        let served = pool.served();
        let log_b = log_of(&pooled(look, work.path(), &pool));
        assert_eq!(pool.served(), served + 1, "B ran in the pool");
        let line = |tag: &str| {
            log_b
                .lines()
                .find(|l| l.starts_with(tag))
                .unwrap_or_else(|| panic!("no {tag} in {log_b}"))
                .trim_end()
                .to_string()
        };
        assert_eq!(line("B-TMP"), "B-TMP", "{log_b}");
        assert_eq!(line("B-BUILD"), "B-BUILD", "{log_b}");
        assert_eq!(line("B-SHM"), "B-SHM", "{log_b}");
        assert_eq!(line("B-SLEEPERS"), "B-SLEEPERS 0", "A's processes: {log_b}");
        assert_eq!(
            line("B-STORE"),
            format!("B-STORE {}", BB.trim_start_matches("/nix/store/")),
            "B sees A's input: {log_b}"
        );
    }
}

/// As root, pooled sandboxes take network namespaces in turn
/// (`platform/linux/netns.rs`): one that a build left a connection in is
/// not handed out again, so no build sees another's sockets, and a clean
/// one is. Without root every sandbox makes its own, and the same holds.
#[test]
fn a_pooled_build_never_sees_the_sockets_an_earlier_build_left() {
    let (made, reused) = builds_leaving_and_looking_for_sockets();
    if made > 0 {
        // Five pooled builds, one at a time: from the third sandbox on,
        // the namespace of a finished build was free.
        assert!(reused > 0, "made {made}, reused {reused}");
        assert!(made + reused >= 5, "made {made}, reused {reused}");
    }
}

/// Runs six builds in a new pool (the third leaves a connection behind)
/// and checks that none sees a socket it did not make; returns the
/// pool's [`SandboxPool::network_namespaces`].
fn builds_leaving_and_looking_for_sockets() -> (u64, u64) {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    let look =
        "echo TCP $(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -vc local_address); \
         touch $out";
    // A connection over the loopback: the side that closes first keeps
    // its socket (TIME_WAIT) after both processes are gone.
    let connect = format!(
        "{BB}/bin/busybox nc -l -p 5000 >/dev/null & sleep 0.3; \
         echo hi | {BB}/bin/busybox nc -w 1 127.0.0.1 5000; wait; \
         echo LEFT $(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -vc local_address); \
         touch $out"
    );
    let tcp = |log: &str, tag: &str| -> usize {
        log.lines()
            .find_map(|l| l.strip_prefix(tag))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {tag} in {log}"))
    };
    // The first build makes its own sandbox; the others are pooled.
    for round in 0..6 {
        if round > 0 {
            pool.wait_ready().expect("a sandbox is made");
        }
        let served = pool.served();
        if round == 2 {
            let log = log_of(&pooled(&connect, work.path(), &pool));
            assert!(
                tcp(&log, "LEFT ") > 0,
                "the connection left a socket: {log}"
            );
        } else {
            let log = log_of(&pooled(look, work.path(), &pool));
            assert_eq!(tcp(&log, "TCP "), 0, "round {round}: {log}");
        }
        assert_eq!(pool.served(), served + u64::from(round > 0));
    }
    pool.network_namespaces()
}

/// Without root, a keeper process in a user namespace of its own makes the
/// network namespaces and clones the sandboxes into them
/// (`platform/linux/keeper.rs`). As root, this runs the tests below and
/// two of the isolation tests above as `nobody`.
#[test]
fn without_root_pooled_sandboxes_isolate_as_fresh_ones_and_take_namespaces_in_turn() {
    // SAFETY: plain getter.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    common::run_as_nobody(
        &[
            "inner_unprivileged_pool_takes_network_namespaces_from_the_keeper",
            "a_pooled_sandbox_shows_the_builder_exactly_what_a_fresh_one_does",
            "consecutive_pooled_builds_do_not_see_each_others_files_processes_or_inputs",
        ],
        &[],
    );
}

#[test]
#[ignore = "run as nobody by without_root_pooled_sandboxes_isolate_as_fresh_ones_and_take_namespaces_in_turn"]
fn inner_unprivileged_pool_takes_network_namespaces_from_the_keeper() {
    // SAFETY: plain getter.
    assert_ne!(unsafe { libc::geteuid() }, 0, "run as nobody");
    let (made, reused) = builds_leaving_and_looking_for_sockets();
    assert!(made > 0, "the keeper made none");
    assert!(reused > 0, "made {made}, reused {reused}");
    assert!(made + reused >= 5, "made {made}, reused {reused}");
}

/// A sandbox makes its store's mount points ahead of time for the inputs
/// of the last build taken from its pool (`plan::Premade`). The next build
/// must see exactly its own inputs: points it lacks removed, the ones it
/// has bound as always.
#[test]
fn points_made_ahead_for_an_earlier_build_neither_show_nor_stand_in_for_inputs() {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    let other = common::other_store_path();
    let bb = BB.trim_start_matches("/nix/store/");
    let list = format!(
        "echo STORE $(ls -A /nix/store); \
         [ -e /nix/store/{other} ] && echo SIZE $(wc -c < /nix/store/{other}); touch $out"
    );
    let list = list.as_str();
    let store_of = |log: &str| {
        log.lines()
            .find(|l| l.starts_with("STORE"))
            .unwrap_or_else(|| panic!("no STORE in {log}"))
            .trim_end()
            .to_string()
    };
    let with_other = |script: &str| {
        let mut j = pooled(script, work.path(), &pool);
        j.inputs.push(format!("/nix/store/{other}"));
        j
    };
    // The template (fresh), then a build with two inputs in the pool.
    log_of(&with_other(list));
    for round in 0..2 {
        pool.wait_ready().expect("a sandbox is made");
        let served = pool.served();
        let two = log_of(&with_other(list));
        assert_eq!(pool.served(), served + 1);
        let mut both = [bb.to_string(), other.clone()];
        both.sort();
        assert_eq!(store_of(&two), format!("STORE {}", both.join(" ")), "{two}");
        // The input is there with its contents, not an empty point.
        let size = std::fs::metadata(format!("/nix/store/{other}"))
            .unwrap()
            .len();
        assert!(
            two.contains(&format!("SIZE {size}")),
            "round {round}: {two}"
        );
        // Its sandbox was made after the build above was taken: it has a
        // point for `other`, which this build must not see.
        pool.wait_ready().expect("a sandbox is made");
        let one = log_of(&pooled(list, work.path(), &pool));
        assert_eq!(pool.served(), served + 2);
        assert_eq!(
            store_of(&one),
            format!("STORE {bb}"),
            "round {round}: {one}"
        );
    }
}

#[test]
fn a_pool_is_not_used_for_builds_with_network_access() {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    let mut j = pooled("touch $out", work.path(), &pool);
    j.fixed_output = true;
    j.drv_env.insert("outputHash".into(), "x".into());
    let (res, log) = run(&j);
    assert!(res.outcome.status.success(), "{log}");
    assert_eq!(pool.served(), 0);
    assert!(
        pool.wait_ready().is_err(),
        "no template was offered by a build with network access"
    );
}

#[test]
fn dropping_a_pool_ends_its_sandboxes_and_removes_its_directory() {
    let work = tempdir();
    let dir = work.path().join("pool");
    let pool = SandboxPool::new(2, dir.clone());
    log_of(&pooled("touch $out", work.path(), &pool));
    pool.wait_ready().expect("a sandbox is made");
    assert!(dir.is_dir());
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the roots are mounted in the sandboxes' own namespaces only"
    );
    drop(pool);
    assert!(!dir.exists(), "the pool's directory is removed");
}

#[test]
fn pools_sharing_a_root_directory_serve_builds_side_by_side_and_leave_it_in_place() {
    let work = tempdir();
    let root = work.path().join("shared-root");
    let a = SandboxPool::with_shared_root(1, root.clone());
    let b = SandboxPool::with_shared_root(1, root.clone());
    // The first build of each runs fresh and gives it its template.
    log_of(&pooled("touch $out", work.path(), &a));
    log_of(&pooled("touch $out", work.path(), &b));
    a.wait_ready().expect("a sandbox is made");
    b.wait_ready().expect("a sandbox is made");
    // Both wait with their roots mounted on the one directory, each in its
    // own mount namespace: both serve a build, each showing only its own.
    let from_a = log_of(&pooled(PROBE, work.path(), &a));
    let from_b = log_of(&pooled(PROBE, work.path(), &b));
    assert_eq!((a.served(), b.served()), (1, 1));
    assert_eq!(from_a, from_b);
    assert!(!from_a.contains("LEAK"), "{from_a}");
    drop(a);
    assert!(root.is_dir(), "a shared directory outlives its pools");
    b.wait_ready()
        .expect("the other pool still makes sandboxes");
    assert_eq!(log_of(&pooled(PROBE, work.path(), &b)), from_b);
    assert_eq!(b.served(), 2);
    drop(b);
    assert!(root.is_dir());
    assert_eq!(
        std::fs::read_dir(&root).unwrap().count(),
        0,
        "nothing of the sandboxes shows on the host"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(root.to_str().unwrap()),
        "nothing is mounted on it in the host's namespace: {mounts}"
    );
}

/// The host's root, which the pivot stacks on the sandbox's root, leaves
/// the build's mount namespace before the builder starts, in a fresh
/// sandbox and in a pre-made one alike.
#[test]
fn the_old_root_has_left_the_sandbox_before_the_builder_starts() {
    common::old_root_leaves_before_the_builder_starts();
}

/// What lies under a pre-made sandbox's store layer (its host layers: the
/// whole physical store, the work directories) stays covered even in a
/// user namespace the builder makes itself, where it holds every
/// capability over its copy of the mounts: the kernel locks the copied
/// mounts to what covers them.
#[test]
fn the_host_layers_under_a_pooled_store_stay_covered_from_a_nested_user_namespace() {
    let work = tempdir();
    let pool = SandboxPool::new(1, work.path().join("pool"));
    let script = "unshare -Urm sh -c 'umount /nix/store; umount -l /nix/store; \
                    mount --move /nix/store /tmp; echo NESTED $(ls -A /nix/store)'; \
                  touch $out";
    log_of(&pooled("touch $out", work.path(), &pool));
    pool.wait_ready().expect("a sandbox is made");
    let log = log_of(&pooled(script, work.path(), &pool));
    assert_eq!(pool.served(), 1, "the build ran in the pool");
    let nested = log
        .lines()
        .find(|l| l.starts_with("NESTED"))
        .unwrap_or_else(|| panic!("the builder made no user namespace: {log}"));
    assert_eq!(
        nested.trim_end(),
        format!("NESTED {}", BB.trim_start_matches("/nix/store/")),
        "{log}"
    );
}
