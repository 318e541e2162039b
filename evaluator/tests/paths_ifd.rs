//! Import from derivation: reading a path under a derivation's output that
//! is not built calls the realise hook (the CLI's builder) once, then reads
//! the output from the b3 store; without a hook the error names the
//! derivation and the output.

mod fetch_common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use b3_evaluator::storepath::RealiseHook;
use fetch_common::*;

const EXPR: &str = r#"
let d = derivation { name = "gen"; system = "x86_64-linux"; builder = "/bin/sh"; outputs = [ "out" "dev" ]; };
in [ (import "${d.dev}/value.nix") (builtins.readFile "${d.dev}/value.nix") (builtins.pathExists "${d.dev}/value.nix") ]
"#;

#[test]
fn without_a_hook_the_error_names_the_derivation_and_output() {
    let e = b3_eval(EXPR, None).unwrap_err();
    assert!(
        e.contains("it is output 'dev' of derivation '/nix/store/"),
        "{e}"
    );
    assert!(e.contains("-gen.drv'"), "{e}");
    assert!(e.contains("which is not built"), "{e}");
}

#[test]
fn the_hook_builds_the_output_once_and_it_is_read_from_the_store() {
    let store = TmpDir::new("ifd");
    let root = store.path().to_path_buf();
    let calls = Arc::new(AtomicUsize::new(0));
    let c2 = calls.clone();
    let hook: RealiseHook = Arc::new(move |ev, drv, output| {
        c2.fetch_add(1, Ordering::SeqCst);
        // A stand-in builder: writes the output where the b3 store keeps it.
        let drvs = ev.drvs.borrow();
        let d = drvs.get(drv).ok_or("unknown drv")?;
        let out = d.drv.outputs[output].path().ok_or("no path")?;
        let logical = format!("/nix/store/{}", out.base_name());
        let at = physical(&root, &logical);
        std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
        std::fs::write(at.join("value.nix"), "42").map_err(|e| e.to_string())?;
        Ok(())
    });
    let mut o = opts(Some(store.path()));
    o.store.realise = Some(hook);
    assert_eq!(b3_eval_with(EXPR, o).unwrap(), "[42,\"42\",true]");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn a_failing_build_is_reported_with_the_derivation() {
    let hook: RealiseHook = Arc::new(|_, _, _| Err("builder failed".into()));
    let mut o = opts(None);
    o.store.realise = Some(hook);
    let e = b3_eval_with(EXPR, o).unwrap_err();
    assert!(e.starts_with("cannot build '/nix/store/"), "{e}");
    assert!(e.contains("(output 'dev')"), "{e}");
    assert!(e.ends_with(": builder failed"), "{e}");
}
