//! Work directories handed from one build to the next (see
//! `WorkDirStock::recycle`): through the scheduler, each build of a chain
//! leaves files behind in `/build`, `/tmp` and the store directory (nested,
//! read-only, symbolic links out of the build) and records what it found
//! there; the builds after it must find what a build in a fresh directory
//! finds, with the same owners and modes.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use b3_builder::realise::RealiseSettings;
use b3_builder::sandbox::SandboxPath;
use b3_builder::schedule::{realise_goals, RealiseReport};
use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use common::{copy_drv, goal, nix_instantiate, open_store, tempdir};

/// What a step records (`found` lines) before it leaves its litter.
const LOOK: &str = r#"
  look() { echo "$1: $(ls -A "$2" | grep -v -e '-bb$' -e '-step-' | tr '\n' ' ')"; }
  {
    look build /build
    look tmp /tmp
    look store "$NIX_STORE"
    echo "build mode: $(stat -c '%a %u %g' /build)"
    echo "store mode: $(stat -c '%a %u %g' "$NIX_STORE")"
  } > $out
"#;

/// Litter in every place a later build could see it.
const LITTER: &str = r#"
  mkdir -p /build/a/b/c /tmp/t/u "$NIX_STORE/stray-dir/x"
  echo x > /build/a/b/c/f; echo x > /build/top; echo x > /tmp/t/u/f
  echo x > "$NIX_STORE/stray-file"; echo x > "$NIX_STORE/stray-dir/x/f"
  ln -s / /build/to-root; ln -s /build/a /build/a/b/loop; ln -s "$prev" /build/to-input
  chmod 400 /build/a/b/c/f /build/top; chmod 500 /build/a/b/c; chmod 0 /build/a/b
  chmod 500 "$NIX_STORE/stray-dir/x"; chmod 700 /build
"#;

fn expr(nonce: &str) -> String {
    format!(
        r#"
let
  bb = builtins.storePath /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb;
  mk = name: script: prev: derivation {{
    inherit name prev; system = "x86_64-linux"; builder = "${{bb}}/bin/sh";
    PATH = "${{bb}}/bin"; args = [ "-c" script ];
  }};
  step = i: prev: mk "step-{nonce}-${{toString i}}"
    ''{LOOK}echo "index: ${{toString i}}" >> $out; echo "prev: $prev" >> $out{LITTER}'' prev;
  chain = builtins.foldl' (prev: i: step i prev) "" (builtins.genList (i: i + 1) 6);
  bad = mk "bad-{nonce}" ''echo kept > /build/marker; chmod 400 /build/marker; exit 1'' "";
in {{ inherit chain bad; }}
"#
    )
}

fn settings(jobs: usize) -> RealiseSettings {
    RealiseSettings {
        extra_paths: vec![SandboxPath::parse("/bin/sh=/bin/busybox").unwrap()],
        max_jobs: jobs,
        ..RealiseSettings::default()
    }
}

/// Every step's record, first step first.
fn records(store: &LocalStore, top: &StorePath) -> Vec<BTreeMap<String, String>> {
    let closure = store
        .query_closure_sync(&BTreeSet::from([top.clone()]))
        .unwrap();
    let mut steps: Vec<(usize, BTreeMap<String, String>)> = closure
        .iter()
        .filter(|p| p.base_name().contains("-step-"))
        .map(|p| {
            let text = std::fs::read_to_string(store.real_path(p)).unwrap();
            let fields: BTreeMap<String, String> = text
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                .collect();
            let n = fields["index"].parse().unwrap();
            (n, fields)
        })
        .collect();
    steps.sort_by_key(|(n, _)| *n);
    steps.into_iter().map(|(_, f)| f).collect()
}

/// Realises the chain (and, with `bad`, a failing build kept for the
/// user) in a fresh store.
fn realise(dir: &Path, nonce: &str, bad: bool) -> (LocalStore, RealiseReport, StorePath) {
    let store = open_store(&dir.join(format!("b3-{nonce}")));
    let text = expr(nonce);
    let chain = copy_drv(
        &store,
        &nix_instantiate(dir, &format!("{nonce}.nix"), &text, Some("chain")),
    );
    let mut goals = vec![goal(&chain)];
    let mut s = settings(2);
    if bad {
        let b = copy_drv(
            &store,
            &nix_instantiate(dir, &format!("{nonce}.nix"), &text, Some("bad")),
        );
        goals.insert(0, goal(&b));
        s.keep_going = true;
        s.keep_failed = true;
    }
    let report = realise_goals(&store, &s, &goals, None);
    (store, report, chain)
}

fn assert_isolated(store: &LocalStore, report: RealiseReport, chain: &StorePath) {
    let outs = report.into_result();
    let top = match outs {
        Ok(o) => o[0]["out"].clone(),
        Err(_) => panic!("the chain failed"),
    };
    let steps = records(store, &top);
    assert_eq!(steps.len(), 6, "{steps:?}");
    let first = &steps[0];
    // A fresh directory: nothing in /build, /tmp or the store directory
    // but the inputs.
    assert_eq!(first["build"], "", "{first:?}");
    assert_eq!(first["tmp"], "", "{first:?}");
    assert_eq!(first["store"], "", "{first:?}");
    for (i, s) in steps.iter().enumerate() {
        for k in ["build", "tmp", "store", "build mode", "store mode"] {
            assert_eq!(s[k], first[k], "step {} found {k} '{}'", i + 1, s[k]);
        }
    }
    assert!(store.is_valid_sync(chain).unwrap());
    // No work directory is left, nor any litter.
    let left: Vec<String> = std::fs::read_dir(store.real_store_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-build-") || n.contains("stray"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_build_in_a_recycled_work_dir_finds_nothing_earlier_builds_left() {
    let dir = tempdir();
    let mut reused = 0;
    // Whether a later build gets an emptied directory or a new one depends
    // on which is ready first; either way it must find nothing. A few
    // realisations make sure the emptied ones were among them.
    for attempt in 0..5 {
        let nonce = format!("r{attempt}-{}", std::process::id());
        let (store, report, chain) = realise(dir.path(), &nonce, false);
        reused += report.reused_work_dirs;
        assert_isolated(&store, report, &chain);
        if reused > 0 {
            break;
        }
    }
    assert!(reused > 0, "no build ran in an emptied work directory");
}

#[test]
fn a_kept_failed_build_dir_is_not_recycled() {
    let dir = tempdir();
    let nonce = format!("k-{}", std::process::id());
    let (store, report, chain) = realise(dir.path(), &nonce, true);
    assert_ne!(report.exit_code(), 0);
    assert!(matches!(report.goals[0], Err(Some(_))));
    let kept: Vec<_> = std::fs::read_dir(store.state_dir().join("failed-builds"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let kept = &kept[0];
    assert_eq!(
        std::fs::read_to_string(kept.join("build/marker")).unwrap(),
        "kept\n"
    );
    let RealiseReport { goals, .. } = report;
    let top = goals[1].as_ref().map(|o| o["out"].clone()).unwrap();
    let steps = records(&store, &top);
    assert_eq!(steps.len(), 6);
    for s in &steps {
        assert_eq!(s["build"], "", "{s:?}");
    }
    assert!(store.is_valid_sync(&chain).unwrap());
}

/// In the bind layout a recycled work directory keeps the last build's
/// mount points for the next (see `recycle`): a build must still see
/// exactly its own inputs, with their contents, whichever points it finds.
#[cfg(target_os = "linux")]
#[test]
fn points_kept_in_a_recycled_work_dir_neither_show_nor_stand_in_for_inputs() {
    points_kept_serve_only_their_inputs(false);
}

/// The same through pre-made sandboxes, whose late steps name the store
/// directory differently.
#[cfg(target_os = "linux")]
#[test]
fn points_kept_in_a_recycled_work_dir_serve_only_their_inputs_in_pre_made_sandboxes() {
    points_kept_serve_only_their_inputs(true);
}

#[cfg(target_os = "linux")]
fn points_kept_serve_only_their_inputs(pooled: bool) {
    use b3_builder::job::{Trash, WorkDirStock};
    use b3_builder::sandbox::SandboxPool;
    let work = tempdir();
    let pool = pooled.then(|| SandboxPool::new(1, work.path().join("pool")));
    let stock = WorkDirStock::new(work.path(), ".b3-test-");
    stock.set_demand(2);
    let other = common::other_store_path();
    let size = std::fs::metadata(format!("/nix/store/{other}"))
        .unwrap()
        .len();
    let script = format!(
        "echo STORE $(ls -A /nix/store); \
         [ -e /nix/store/{other} ] && echo SIZE $(wc -c < /nix/store/{other}); touch $out"
    );
    let build = |with_other: bool| {
        let mut j = common::job(&script, work.path());
        j.overlay = None;
        j.work_dirs = Some(stock.clone());
        j.pool = pool.clone();
        if let Some(p) = &pool {
            // The first build makes the template (an error says none is
            // set yet); the others wait for a sandbox made from it.
            let _ = p.wait_ready();
        }
        if with_other {
            j.inputs.push(format!("/nix/store/{other}"));
        }
        let (res, log) = common::run(&j);
        assert!(res.outcome.status.success(), "{log}");
        let reused = res.work_dir.reused();
        let trash = Trash::new();
        stock.recycle(res.work_dir, &trash);
        trash.finish();
        let store = log
            .lines()
            .find(|l| l.starts_with("STORE"))
            .unwrap_or_else(|| panic!("no STORE in {log}"))
            .trim_end()
            .to_string();
        (store, log, reused)
    };
    let bb = common::BB.trim_start_matches("/nix/store/");
    let mut both = [bb.to_string(), other.clone()];
    both.sort();
    let both = format!("STORE {}", both.join(" "));
    let (store, log, _) = build(true);
    assert_eq!(store, both, "{log}");
    if let Some(p) = &pool {
        assert_eq!(p.served(), 0, "the first build made the template");
    }
    for round in 0..2 {
        // The directory kept points for both inputs: this build has one.
        let (store, log, reused) = build(false);
        assert!(reused, "round {round}: the work directory was recycled");
        assert_eq!(store, format!("STORE {bb}"), "round {round}: {log}");
        // It kept one: this build needs both, with their contents.
        let (store, log, reused) = build(true);
        assert!(reused);
        assert_eq!(store, both, "round {round}: {log}");
        assert!(
            log.contains(&format!("SIZE {size}")),
            "round {round}: {log}"
        );
    }
    if let Some(p) = &pool {
        assert_eq!(p.served(), 4, "the later builds ran in pre-made sandboxes");
    }
}
