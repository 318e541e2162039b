//! Shared by the evaluator's fetch and path tests: evaluating with b3 (with
//! a private b3 store) and with Nix 2.8 (`nix-instantiate --eval`), and the
//! 127.0.0.1 HTTP server of b3-store's fetch tests.
#![allow(dead_code)]

#[path = "../../../store/tests/fetch_common/mod.rs"]
pub mod http;

use std::path::Path;
use std::process::Command;

use b3_evaluator::driver::{with_big_stack, OutputMode};
use b3_evaluator::storepath::StoreOptions;
use b3_evaluator::{Ev, Options};

/// Options writing into a b3 store rooted at `root` (or read-only).
pub fn opts(root: Option<&Path>) -> Options {
    Options {
        store: StoreOptions {
            write: root.is_some(),
            root: root.map(Path::to_path_buf),
            realise: None,
        },
        ..Options::default()
    }
}

/// b3's JSON rendering of `expr`, or its error message.
pub fn b3_eval_with(expr: &str, o: Options) -> Result<String, String> {
    let expr = expr.to_string();
    with_big_stack(move || {
        let ev = Ev::new(o);
        ev.eval_expr_str(&expr, "«string»")
            .and_then(|v| ev.render(&v, OutputMode::Json, true))
            .map_err(|e| e.msg().to_string())
    })
}

pub fn b3_eval(expr: &str, root: Option<&Path>) -> Result<String, String> {
    b3_eval_with(expr, opts(root))
}

/// Nix 2.8's JSON rendering of `expr` (strict), or its stderr.
pub fn nix_eval(expr: &str) -> Result<String, String> {
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", expr])
        .output()
        .expect("nix-instantiate (Nix 2.8) is needed: run scripts/setup-test-deps.sh");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A Nix string literal of `s`.
pub fn lit(s: &str) -> String {
    format!(
        "\"{}\"",
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('$', "\\$")
    )
}

/// Where the b3 store rooted at `root` keeps the logical path `p`.
pub fn physical(root: &Path, p: &str) -> std::path::PathBuf {
    root.join(p.trim_start_matches('/'))
}

/// The store path inside a JSON string result.
pub fn unquote(json: &str) -> String {
    serde_json::from_str::<String>(json).unwrap_or_else(|_| json.to_string())
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TmpDir(pub std::path::PathBuf);

impl TmpDir {
    pub fn new(tag: &str) -> TmpDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "b3-evtest-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        // The store makes its paths read-only.
        let _ = Command::new("chmod")
            .arg("-R")
            .arg("u+w")
            .arg(&self.0)
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
