//! The scheduler on real sandboxed builds: derivations instantiated by Nix
//! 2.8, copied into a fresh b3 store and realised with `realise_goals`.
//! Parallelism and ordering are read off the `building '…'` activities the
//! builder reports (start and stop times), as nix-output-monitor would.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use b3_builder::realise::{RealiseError, RealiseSettings};
use b3_builder::sandbox::SandboxPath;
use b3_builder::schedule::{realise_goals, Goal, RealiseReport};
use b3_store::activity::{ActivityId, ActivityType, Field, LogSink, Logger, ResultType, Verbosity};
use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use b3_store::substitute::{Substitute, SubstituteError, Substituted};
use common::{copy_drv, goal, nix_instantiate, open_store, tempdir};

const GRAPH: &str = r#"
let
  bb = builtins.storePath /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb;
  mk = name: script: deps: derivation {
    inherit name deps; system = "x86_64-linux"; builder = "${bb}/bin/sh";
    PATH = "${bb}/bin"; args = [ "-c" script ];
  };
  leaf = i: mk "leaf-${toString i}" "sleep 2; echo ${toString i} > $out" [];
  leaves = map leaf [ 1 2 3 4 ];
  bad = mk "bad" "echo failing now; exit 3" [];
  bad2 = mk "bad2" "echo failing too; exit 4" [];
  gate = mk "gate" "echo > $out" [];
  quick = i: mk "quick-${toString i}" "echo ${toString i} > $out" [ gate ];
  dep = mk "dep" "echo dep > $out" [];
  # A build with a background child (a process tree), and one that fails
  # once the other surely runs.
  slow = mk "slow" "echo slow started; sleep 987 & sleep 987; echo > $out" [];
  badLater = mk "bad-later" "sleep 1; echo failing later; exit 5" [];
  # Each step reads the one before it, which may be placed and not yet
  # registered when it starts.
  c1 = mk "c1" "echo c1 > $out" [];
  c2 = mk "c2" "{ cat ${c1}; echo ${c1}; } > $out" [ c1 ];
  c3 = mk "c3" "{ cat ${c2}; echo ${c2}; } > $out" [ c2 ];
in {
  chain = c3;
  one = c1;
  slowAndBad = mk "slow-and-bad" "echo > $out" [ slow badLater ];
  fan = mk "fan" "cat $deps > $out" leaves;
  withBad = mk "with-bad" "echo > $out" ([ bad ] ++ map quick [ 1 2 3 4 5 6 ]);
  twoBad = mk "two-bad" "echo > $out" [ bad bad2 ];
  top = mk "top" "echo built from dep > $out" [ dep ];
  inherit bad;
}
"#;

#[derive(Debug, Clone)]
enum Ev {
    Start(ActivityId, String),
    Stop(ActivityId),
    Line(String),
    Msg(String),
}

#[derive(Default)]
struct Rec(Mutex<Vec<(Instant, Ev)>>);

impl LogSink for Rec {
    fn start(
        &self,
        id: ActivityId,
        _: Verbosity,
        ty: ActivityType,
        text: &str,
        _: &[Field],
        _: ActivityId,
    ) {
        if ty == ActivityType::Build {
            self.0
                .lock()
                .unwrap()
                .push((Instant::now(), Ev::Start(id, text.to_string())));
        }
    }
    fn stop(&self, id: ActivityId) {
        self.0.lock().unwrap().push((Instant::now(), Ev::Stop(id)));
    }
    fn result(&self, _: ActivityId, ty: ResultType, fields: &[Field]) {
        if let (ResultType::BuildLogLine, Some(Field::Str(s))) = (ty, fields.first()) {
            self.0
                .lock()
                .unwrap()
                .push((Instant::now(), Ev::Line(s.clone())));
        }
    }
    fn log(&self, _: Verbosity, msg: &str) {
        self.0
            .lock()
            .unwrap()
            .push((Instant::now(), Ev::Msg(msg.to_string())));
    }
}

impl Rec {
    /// `(text, start, stop)` of every build activity.
    fn builds(&self) -> Vec<(String, Instant, Instant)> {
        let evs = self.0.lock().unwrap().clone();
        let mut out = Vec::new();
        for (t, e) in &evs {
            if let Ev::Start(id, text) = e {
                let stop = evs
                    .iter()
                    .find_map(|(t2, e2)| matches!(e2, Ev::Stop(i) if i == id).then_some(*t2))
                    .expect("every build activity stops");
                out.push((text.clone(), *t, stop));
            }
        }
        out
    }

    fn max_overlap(&self) -> usize {
        let b = self.builds();
        b.iter()
            .map(|(_, s, _)| b.iter().filter(|(_, s2, e2)| s2 <= s && s < e2).count())
            .max()
            .unwrap_or(0)
    }

    fn messages(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                Ev::Msg(m) => Some(m.clone()),
                _ => None,
            })
            .collect()
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: LocalStore,
    drvs: BTreeMap<String, StorePath>,
}

fn fixture(attrs: &[&str]) -> Fixture {
    let dir = tempdir();
    let store = open_store(&dir.path().join("b3"));
    let mut drvs = BTreeMap::new();
    for a in attrs {
        let drv = nix_instantiate(dir.path(), "graph.nix", GRAPH, Some(a));
        drvs.insert(a.to_string(), copy_drv(&store, &drv));
    }
    Fixture {
        _dir: dir,
        store,
        drvs,
    }
}

fn settings(rec: &Arc<Rec>, jobs: usize) -> RealiseSettings {
    RealiseSettings {
        extra_paths: vec![SandboxPath::parse("/bin/sh=/bin/busybox").unwrap()],
        max_jobs: jobs,
        logger: Some(Logger::new(rec.clone(), Verbosity::Info)),
        ..RealiseSettings::default()
    }
}

fn realise(f: &Fixture, s: &RealiseSettings, attr: &str) -> RealiseReport {
    realise_goals(&f.store, s, &[goal(&f.drvs[attr])], None)
}

#[test]
fn builds_run_in_parallel_up_to_max_jobs_and_inputs_first() {
    for jobs in [2, 4] {
        let f = fixture(&["fan"]);
        let rec = Arc::new(Rec::default());
        let report = realise(&f, &settings(&rec, jobs), "fan");
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.built.len(), 5);
        // Leaves start while others could: on worker threads. The fan
        // (and at most the last leaf, if the others ended first) has
        // nothing beside it and runs on the scheduling thread.
        assert!(
            (1..=2).contains(&report.builds_in_line),
            "{} builds in line",
            report.builds_in_line
        );
        let outs = report.into_result().unwrap();
        let fan_out = std::fs::read_to_string(f.store.real_path(&outs[0]["out"])).unwrap();
        assert_eq!(fan_out, "1\n2\n3\n4\n");
        assert_eq!(rec.max_overlap(), jobs, "{:?}", rec.builds());
        // The fan starts only after every leaf stopped.
        let builds = rec.builds();
        let fan = builds.iter().find(|b| b.0.contains("-fan.drv")).unwrap();
        for leaf in builds.iter().filter(|b| b.0.contains("-leaf-")) {
            assert!(leaf.2 <= fan.1, "{} ended after the fan started", leaf.0);
        }
        // Nix's announcement, dependencies first.
        let msgs = rec.messages();
        let plan = msgs
            .iter()
            .find(|m| m.starts_with("these 5 derivations will be built:"))
            .expect("plan announced");
        assert!(plan.trim_end().ends_with("-fan.drv"), "{plan}");
    }
}

#[test]
fn a_chain_reads_inputs_registered_after_it_started_and_registers_every_reference() {
    let f = fixture(&["chain"]);
    let rec = Arc::new(Rec::default());
    let report = realise(&f, &settings(&rec, 2), "chain");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.built.len(), 3);
    assert_eq!(report.registrations.len(), 3);
    // Each step is the only build that can run: none is handed to a
    // worker thread.
    assert_eq!(report.builds_in_line, 3);
    let top = report.into_result().unwrap()[0]["out"].clone();
    let closure = f
        .store
        .query_closure_sync(&BTreeSet::from([top.clone()]))
        .unwrap();
    assert_eq!(closure.len(), 3, "{closure:?}");
    let text = std::fs::read_to_string(f.store.real_path(&top)).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], "c1");
    let c2: StorePath = f.store.store_dir().parse(lines[2]).unwrap();
    let c1: StorePath = f.store.store_dir().parse(lines[1]).unwrap();
    let info = f.store.query_path_info_sync(&top).unwrap().unwrap();
    assert_eq!(info.references, BTreeSet::from([c1.clone(), c2.clone()]));
    let info2 = f.store.query_path_info_sync(&c2).unwrap().unwrap();
    assert_eq!(info2.references, BTreeSet::from([c1.clone()]));
    assert!(f.store.is_valid_sync(&c1).unwrap());
    // Built again: nothing to do, every output is valid.
    assert!(realise(&f, &settings(&rec, 2), "chain").built.is_empty());
}

#[test]
fn a_single_build_makes_no_sandbox_it_does_not_use_and_nothing_to_build_makes_none() {
    let f = fixture(&["one"]);
    let rec = Arc::new(Rec::default());
    let report = realise(&f, &settings(&rec, 2), "one");
    assert_eq!(report.exit_code(), 0);
    assert_eq!(report.built.len(), 1);
    // At most one is made ahead (while the graph is read, if the build
    // has not started by then), and the build takes it.
    assert!(report.sandboxes_made <= 1);
    assert_eq!(report.premade_sandboxes, report.sandboxes_made);
    let again = realise(&f, &settings(&rec, 2), "one");
    assert!(again.built.is_empty());
    assert_eq!(again.sandboxes_made, 0);
}

#[test]
fn valid_outputs_are_not_rebuilt() {
    let f = fixture(&["fan"]);
    let rec = Arc::new(Rec::default());
    let s = settings(&rec, 4);
    assert_eq!(realise(&f, &s, "fan").built.len(), 5);
    let again = realise(&f, &s, "fan");
    assert!(again.built.is_empty());
    assert_eq!(again.exit_code(), 0);
    assert_eq!(rec.builds().len(), 5);
}

#[test]
fn first_failure_stops_new_builds_without_keep_going() {
    let f = fixture(&["withBad"]);
    let rec = Arc::new(Rec::default());
    let report = realise(&f, &settings(&rec, 1), "withBad");
    assert_eq!(report.exit_code(), 100);
    // `bad` and `gate` are ready first; the quick ones (which wait for
    // `gate`) are queued after `bad`, so once it failed none may start.
    let started = rec.builds();
    let bad = started.iter().find(|b| b.0.contains("-bad.drv")).unwrap();
    assert!(
        started.iter().all(|b| b.1 <= bad.2),
        "a build started after the failure: {started:?}"
    );
    assert!(
        started.iter().all(|b| !b.0.contains("-quick-")),
        "{started:?}"
    );
    let drv = f.store.print_path(&f.drvs["withBad"]);
    let err = report.into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("1 dependencies of derivation '{drv}' failed to build")
    );
}

/// Processes on this machine whose command line is `sleep 987`.
fn sleepers() -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            if cmd == b"sleep\0987\0" {
                found.push(pid);
            }
        }
    }
    found
}

#[test]
fn failure_without_keep_going_kills_running_builds_and_registers_nothing_of_theirs() {
    let f = fixture(&["slowAndBad"]);
    let rec = Arc::new(Rec::default());
    let started = Instant::now();
    let report = realise(&f, &settings(&rec, 2), "slowAndBad");
    let took = started.elapsed();
    assert_eq!(report.exit_code(), 100);
    assert!(
        took.as_secs() < 60,
        "the slow build was not stopped: {took:?}"
    );
    let builds = rec.builds();
    let slow = builds
        .iter()
        .find(|b| b.0.contains("-slow.drv"))
        .expect("the slow build ran");
    assert!(builds.iter().all(|b| !b.0.contains("-slow-and-bad.drv")));
    // It really ran (its first line came out) and was killed, tree and all.
    let lines: Vec<String> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(_, e)| match e {
            Ev::Line(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert!(lines.contains(&"slow started".to_string()), "{lines:?}");
    assert!(slow.2 - slow.1 < std::time::Duration::from_secs(60));
    assert!(sleepers().is_empty(), "left running: {:?}", sleepers());
    // Nothing of the killed build is registered; only the failure is
    // reported, in Nix's words.
    assert!(report.built.is_empty());
    let drv = f.store.print_path(&f.drvs["slowAndBad"]);
    let msgs = rec.messages();
    assert!(
        msgs.iter()
            .any(|m| m.contains("-bad-later.drv' failed with exit code 5")),
        "{msgs:?}"
    );
    assert!(msgs.iter().all(|m| !m.contains("cancelled")), "{msgs:?}");
    let err = report.into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("1 dependencies of derivation '{drv}' failed to build")
    );
    let top = b3_builder::realise::read_derivation(&f.store, &f.drvs["slowAndBad"]).unwrap();
    let slow_path = top
        .input_drvs
        .keys()
        .find(|p| p.name() == "slow.drv")
        .unwrap();
    let slow_drv = b3_builder::realise::read_derivation(&f.store, slow_path).unwrap();
    for out in slow_drv.outputs.values() {
        let p = out.path().unwrap();
        assert!(!f.store.is_valid_sync(p).unwrap());
        assert!(!f.store.real_path(p).exists());
    }
}

#[test]
fn keep_going_builds_everything_it_can() {
    let f = fixture(&["withBad"]);
    let rec = Arc::new(Rec::default());
    let s = RealiseSettings {
        keep_going: true,
        ..settings(&rec, 2)
    };
    let report = realise(&f, &s, "withBad");
    assert_eq!(report.exit_code(), 100);
    // The gate and all six good inputs were built, the failing one was
    // tried once, the top was not attempted.
    assert_eq!(report.built.len(), 7);
    assert_eq!(rec.builds().len(), 8);
    let drv = f.store.print_path(&f.drvs["withBad"]);
    let err = report.into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("1 dependencies of derivation '{drv}' failed to build")
    );
    // The builder's own error was logged as it happened, in Nix's words.
    let msgs = rec.messages();
    assert!(
        msgs.iter().any(|m| m.starts_with("error: builder for '")
            && m.contains("-bad.drv' failed with exit code 3")),
        "{msgs:?}"
    );
}

#[test]
fn failures_are_counted_and_several_goals_reported_like_nix() {
    let f = fixture(&["twoBad", "top"]);
    let rec = Arc::new(Rec::default());
    let s = RealiseSettings {
        keep_going: true,
        ..settings(&rec, 2)
    };
    let two = f.store.print_path(&f.drvs["twoBad"]);
    let top = f.store.print_path(&f.drvs["top"]);
    let report = realise_goals(
        &f.store,
        &s,
        &[goal(&f.drvs["twoBad"]), goal(&f.drvs["top"])],
        None,
    );
    assert_eq!(report.exit_code(), 100);
    assert!(report.goals[1].is_ok());
    // One goal failed: its own error is the result.
    let err = report.into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("2 dependencies of derivation '{two}' failed to build")
    );

    // Two failing goals: each is logged, then "build of … failed".
    let f = fixture(&["twoBad", "withBad"]);
    let rec = Arc::new(Rec::default());
    let s = RealiseSettings {
        keep_going: true,
        ..settings(&rec, 2)
    };
    let with_bad = f.store.print_path(&f.drvs["withBad"]);
    let two = f.store.print_path(&f.drvs["twoBad"]);
    let report = realise_goals(
        &f.store,
        &s,
        &[goal(&f.drvs["twoBad"]), goal(&f.drvs["withBad"])],
        None,
    );
    let err = report.into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("build of '{two}', '{with_bad}' failed")
    );
    let msgs = rec.messages();
    assert!(msgs.contains(&format!(
        "error: 2 dependencies of derivation '{two}' failed to build"
    )));
    let _ = top;
}

#[test]
fn failed_build_error_carries_the_log_tail_and_the_log_is_kept() {
    let f = fixture(&["bad"]);
    let rec = Arc::new(Rec::default());
    let s = RealiseSettings {
        keep_failed: true,
        ..settings(&rec, 1)
    };
    let drv = f.store.print_path(&f.drvs["bad"]);
    let err = realise(&f, &s, "bad").into_result().unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "builder for '{drv}' failed with exit code 3;\n       last 1 log lines:\n       > failing now\n       For full logs, run 'b3 log {drv}'."
        )
    );
    // The log is stored compressed and reads back whole.
    let mut log = Vec::new();
    assert!(
        b3_builder::buildlog::read_log(f.store.root(), &f.drvs["bad"].base_name(), &mut log)
            .unwrap()
    );
    assert_eq!(log, b"failing now\n");
    // --keep-failed kept the build directory and said where.
    let note = rec
        .messages()
        .into_iter()
        .find(|m| m.starts_with("note: keeping build directory '"))
        .expect("keep-failed note");
    let kept = note
        .trim_start_matches("note: keeping build directory '")
        .trim_end_matches('\'');
    assert!(Path::new(kept).is_dir(), "{kept}");
    assert!(kept.starts_with(f.store.state_dir().to_str().unwrap()));
}

#[test]
fn builder_output_streams_as_activity_log_lines() {
    let f = fixture(&["bad"]);
    let rec = Arc::new(Rec::default());
    let _ = realise(&f, &settings(&rec, 1), "bad");
    let evs = rec.0.lock().unwrap().clone();
    let lines: Vec<String> = evs
        .iter()
        .filter_map(|(_, e)| match e {
            Ev::Line(l) => Some(l.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["failing now"]);
}

/// A substituter that copies from another, real local store.
#[derive(Debug)]
struct CopyFrom {
    from: LocalStore,
    fail: bool,
    asked: Mutex<Vec<String>>,
}

impl Substitute for CopyFrom {
    fn substitute(
        &self,
        store: &LocalStore,
        path: &StorePath,
    ) -> Result<Substituted, SubstituteError> {
        self.asked.lock().unwrap().push(store.print_path(path));
        if self.fail {
            return Err(SubstituteError("cache.example: connection refused".into()));
        }
        let err = |e: b3_store::traits::StoreError| SubstituteError(e.to_string());
        let Some(info) = self.from.query_path_info_sync(path).map_err(err)? else {
            return Ok(Substituted::NotAvailable);
        };
        for r in &info.references {
            if r != path && !store.is_valid_sync(r).map_err(err)? {
                self.substitute(store, r)?;
            }
        }
        let mut nar = Vec::new();
        self.from.nar_from_path_sync(path, &mut nar).map_err(err)?;
        store.add_nar_sync(&info, &nar[..]).map_err(err)?;
        Ok(Substituted::Done)
    }

    fn has(&self, path: &StorePath) -> bool {
        self.from.is_valid_sync(path).unwrap_or(false)
    }

    /// As a cache would say: 1.5 MiB compressed, 4 MiB unpacked each.
    fn fetch_sizes(&self, path: &StorePath) -> Option<(u64, u64)> {
        self.has(path).then_some((3 << 19, 4 << 20))
    }
}

#[test]
fn substitutable_outputs_are_fetched_without_realising_inputs() {
    // A store that has built `top` (and so `dep`)...
    let cache = fixture(&["top"]);
    let rec = Arc::new(Rec::default());
    let built = realise(&cache, &settings(&rec, 2), "top");
    assert_eq!(built.built.len(), 2);
    let top_out = built.into_result().unwrap()[0]["out"].clone();

    // ...substitutes it into a fresh one: nothing is built, and `dep`
    // (an input, not a reference of top's output) is not realised.
    let f = fixture(&["top"]);
    let subst = Arc::new(CopyFrom {
        from: cache.store.clone(),
        fail: false,
        asked: Mutex::new(Vec::new()),
    });
    let rec2 = Arc::new(Rec::default());
    let s = RealiseSettings {
        substituter: Some(subst.clone()),
        ..settings(&rec2, 2)
    };
    let report = realise(&f, &s, "top");
    assert!(report.built.is_empty());
    assert_eq!(report.substituted, vec![f.drvs["top"].clone()]);
    assert!(rec2.builds().is_empty());
    // Nix's summary, with the sizes the substituter knows.
    assert!(
        rec2.messages()
            .iter()
            .any(|m| m
                .starts_with("this path will be fetched (1.50 MiB download, 4.00 MiB unpacked):")),
        "{:?}",
        rec2.messages()
    );
    let outs = report.into_result().unwrap();
    assert_eq!(outs[0]["out"], top_out);
    assert!(f.store.is_valid_sync(&top_out).unwrap());
    let dep_drv = b3_builder::realise::read_derivation(&f.store, &f.drvs["top"])
        .unwrap()
        .input_drvs
        .keys()
        .next()
        .unwrap()
        .clone();
    let dep = b3_builder::realise::read_derivation(&f.store, &dep_drv).unwrap();
    assert!(!f
        .store
        .is_valid_sync(dep.outputs["out"].path().unwrap())
        .unwrap());
    assert_eq!(
        *subst.asked.lock().unwrap(),
        vec![f.store.print_path(&top_out)]
    );
    // The substituted path keeps the cache's metadata.
    let info = f.store.query_path_info_sync(&top_out).unwrap().unwrap();
    assert_eq!(info.deriver.as_ref(), Some(&f.drvs["top"]));
}

#[test]
fn failing_substituter_falls_back_to_building() {
    let cache = fixture(&["top"]);
    let rec = Arc::new(Rec::default());
    realise(&cache, &settings(&rec, 2), "top")
        .into_result()
        .unwrap();

    let f = fixture(&["top"]);
    let subst = Arc::new(CopyFrom {
        from: cache.store.clone(),
        fail: true,
        asked: Mutex::new(Vec::new()),
    });
    let rec2 = Arc::new(Rec::default());
    let s = RealiseSettings {
        substituter: Some(subst.clone()),
        ..settings(&rec2, 2)
    };
    let report = realise(&f, &s, "top");
    assert_eq!(report.built.len(), 2, "dep and top were built");
    assert!(report.substituted.is_empty());
    report.into_result().unwrap();
    assert!(!subst.asked.lock().unwrap().is_empty());
    assert!(rec2
        .messages()
        .iter()
        .any(|m| m.starts_with("warning: ") && m.contains("connection refused")));
}

#[tokio::test(flavor = "multi_thread")]
async fn local_builder_realises_through_the_store_build_trait() {
    use b3_store::traits::StoreBuild;
    let f = fixture(&["top"]);
    let rec = Arc::new(Rec::default());
    let b = b3_builder::realise::LocalBuilder::new(f.store.clone(), settings(&rec, 2));
    let outs = b.realise(&f.drvs["top"], &BTreeSet::new()).await.unwrap();
    let text = std::fs::read_to_string(f.store.real_path(&outs["out"])).unwrap();
    assert_eq!(text, "built from dep\n");
    assert_eq!(rec.builds().len(), 2);
}

#[test]
fn unknown_output_is_an_error() {
    let f = fixture(&["top"]);
    let rec = Arc::new(Rec::default());
    let g = Goal {
        drv: f.drvs["top"].clone(),
        outputs: ["dev".to_string()].into(),
        check: false,
    };
    let err = realise_goals(&f.store, &settings(&rec, 1), &[g], None)
        .into_result()
        .unwrap_err();
    assert!(matches!(err, RealiseError::NoSuchOutput { .. }), "{err}");
}

#[test]
fn builtin_fetchurl_derivations_are_realised_and_checked() {
    let dir = tempdir();
    let src = dir.path().join("hello.txt");
    std::fs::write(&src, "hello\n").unwrap();
    let expr = |hash: &str| {
        format!(
            "import <nix/fetchurl.nix> {{ url = \"file://{}\"; sha256 = \"{hash}\"; }}",
            src.display()
        )
    };
    let store = open_store(&dir.path().join("b3"));
    let rec = Arc::new(Rec::default());
    let good = nix_instantiate(
        dir.path(),
        "f.nix",
        &expr("5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"),
        None,
    );
    let drv = copy_drv(&store, &good);
    let report = realise_goals(&store, &settings(&rec, 1), &[goal(&drv)], None);
    let out = report.into_result().unwrap()[0]["out"].clone();
    assert_eq!(
        std::fs::read_to_string(store.real_path(&out)).unwrap(),
        "hello\n"
    );
    let info = store.query_path_info_sync(&out).unwrap().unwrap();
    assert!(info.ca.is_some());

    // A wrong hash is Nix's hash-mismatch error; nothing is registered.
    let bad = nix_instantiate(dir.path(), "g.nix", &expr(&"0".repeat(64)), None);
    let drv = copy_drv(&store, &bad);
    let err = realise_goals(&store, &settings(&rec, 1), &[goal(&drv)], None)
        .into_result()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("hash mismatch in fixed-output derivation '{bad}'")),
        "{err}"
    );
}
