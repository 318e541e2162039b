//! The rules of upstream `lang.sh`: which tests exist, how each kind is
//! invoked, with which environment, and what counts as a pass — in
//! official mode (everything exact) and lenient mode (exit codes only for
//! `*-fail`, stderr ignored for `*-okay`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::fsutil::{copy_tree, restore_symlinks};
use crate::run::{self, Finished, Invocation, Program};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    ParseFail,
    ParseOkay,
    EvalFail,
    EvalOkay,
}

impl Kind {
    const ALL: [(Kind, &'static str); 4] = [
        (Kind::ParseFail, "parse-fail-"),
        (Kind::ParseOkay, "parse-okay-"),
        (Kind::EvalFail, "eval-fail-"),
        (Kind::EvalOkay, "eval-okay-"),
    ];
}

#[derive(Clone, Debug)]
pub struct Test {
    pub name: String,
    pub kind: Kind,
}

pub enum Outcome {
    Pass,
    Fail { reason: String, details: String },
    Skip(String),
}

pub struct Config {
    pub lenient: bool,
    pub timeout: Duration,
    pub verbose: bool,
}

/// The prepared scratch area: `<root>/pwd/lang` holds the copied tests,
/// `<root>/pwd` is the working directory of every run.
pub struct Setup {
    root: PathBuf,
    pwd: PathBuf,
    program: Program,
    base_env: Vec<(String, String)>,
}

const NIX_CONF: &str = "show-trace = true\nexperimental-features = nix-command flakes\n";

impl Setup {
    pub fn prepare(tests: &Path, root: &Path, mut program: Program) -> std::io::Result<Setup> {
        program.absolutize();
        let pwd = root.join("pwd");
        copy_tree(tests, &pwd.join("lang"))?;
        let fixed = restore_symlinks(&pwd.join("lang"))?;
        if !fixed.is_empty() {
            eprintln!(
                "b3-lang-tests: note: {} upstream symlinks were plain files in {} and were restored in the copy: {}",
                fixed.len(),
                tests.display(),
                fixed.join(", ")
            );
        }
        let conf = root.join("etc");
        std::fs::create_dir_all(&conf)?;
        std::fs::write(conf.join("nix.conf"), NIX_CONF)?;
        for d in ["test-home", "var/nix", "var/log/nix", "tmp"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let p = |s: &str| root.join(s).to_string_lossy().into_owned();
        let mut base_env: Vec<(String, String)> = vec![
            ("TEST_VAR".into(), "foo".into()),
            ("IMPURE_VAR1".into(), "foo".into()),
            ("IMPURE_VAR2".into(), "bar".into()),
            ("NIX_REMOTE".into(), "dummy://".into()),
            ("NIX_STORE_DIR".into(), "/nix/store".into()),
            ("NIX_CONF_DIR".into(), p("etc")),
            ("NIX_STATE_DIR".into(), p("var/nix")),
            ("NIX_LOG_DIR".into(), p("var/log/nix")),
            ("TMPDIR".into(), p("tmp")),
            ("HOME".into(), p("test-home")),
            ("TEST_ROOT".into(), root.to_string_lossy().into_owned()),
        ];
        // Everything else is dropped (NIX_PATH and XDG_* included), except
        // what is needed to find programs.
        if let Ok(path) = std::env::var("PATH") {
            base_env.push(("PATH".into(), path));
        }
        Ok(Setup {
            root: root.to_path_buf(),
            pwd,
            program,
            base_env,
        })
    }

    pub fn lang_dir(&self) -> PathBuf {
        self.pwd.join("lang")
    }

    fn env_with(&self, overrides: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = self
            .base_env
            .iter()
            .filter(|(k, _)| !overrides.iter().any(|(o, _)| o == k))
            .cloned()
            .collect();
        env.extend(
            overrides
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        env
    }
}

/// The tests in `lang_dir`, in lang.sh's loop order, sorted by name.
pub fn discover(lang_dir: &Path) -> std::io::Result<Vec<Test>> {
    let mut names: Vec<String> = std::fs::read_dir(lang_dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|n| n.strip_suffix(".nix").map(str::to_owned))
        .collect();
    names.sort();
    let mut tests = Vec::new();
    for (kind, prefix) in Kind::ALL {
        for n in &names {
            if n.starts_with(prefix) {
                tests.push(Test {
                    name: n.clone(),
                    kind,
                });
            }
        }
    }
    Ok(tests)
}

/// Runs `tests` on `jobs` threads; results come back in input order.
pub fn run_all(setup: &Setup, config: &Config, tests: &[Test], jobs: usize) -> Vec<Outcome> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new((0..tests.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(t) = tests.get(i) else { break };
                let outcome = run_one(setup, config, t);
                if let Ok(mut r) = results.lock() {
                    r[i] = Some(outcome);
                }
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_default()
        .into_iter()
        .map(|o| {
            o.unwrap_or(Outcome::Fail {
                reason: "harness error: no result".into(),
                details: String::new(),
            })
        })
        .collect()
}

/// Shell-style word splitting (what an unquoted `$(cat file)` does).
fn words(s: &str) -> Vec<String> {
    s.split_ascii_whitespace().map(str::to_owned).collect()
}

/// The `.flags` of an eval-fail test: all lines, `#` comments removed.
fn fail_flags(text: &str) -> Vec<String> {
    text.lines()
        .flat_map(|l| words(l.split('#').next().unwrap_or("")))
        .collect()
}

struct Captured {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

enum RunError {
    Timeout,
    Io(String),
}

impl Setup {
    fn read_opt(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.lang_dir().join(name)).ok()
    }

    fn exists(&self, name: &str) -> bool {
        self.lang_dir().join(name).exists()
    }

    /// Replaces every occurrence of the working directory with `/pwd`.
    fn rewrite_pwd(&self, text: &[u8]) -> Vec<u8> {
        let needle = self.pwd.to_string_lossy().into_owned().into_bytes();
        replace_all(text, &needle, b"/pwd")
    }

    fn run(
        &self,
        config: &Config,
        test: &Test,
        args: Vec<String>,
        env: Vec<(String, String)>,
        stdin: Option<PathBuf>,
        merged: bool,
    ) -> Result<Captured, RunError> {
        let out = self.root.join(format!("{}.out", test.name));
        let err = self.root.join(format!("{}.err", test.name));
        let inv = Invocation {
            program: &self.program,
            args,
            cwd: &self.pwd,
            env: &env,
            stdin,
            stdout_file: if merged { err.clone() } else { out.clone() },
            stderr_file: if merged { None } else { Some(err.clone()) },
            timeout: config.timeout,
        };
        match run::run(&inv) {
            Ok(Finished::TimedOut) => Err(RunError::Timeout),
            Ok(Finished::Exited(code)) => Ok(Captured {
                code,
                stdout: if merged {
                    Vec::new()
                } else {
                    std::fs::read(&out).unwrap_or_default()
                },
                stderr: std::fs::read(&err).unwrap_or_default(),
            }),
            Err(e) => Err(RunError::Io(format!("cannot run evaluator: {e}"))),
        }
    }

    /// Runs `bash lang/NAME.postprocess $TEST_ROOT/NAME` on the rewritten
    /// `$TEST_ROOT/NAME.err`, returning the edited text.
    fn postprocess(&self, test: &Test, text: Vec<u8>) -> Result<Vec<u8>, String> {
        let script = format!("lang/{}.postprocess", test.name);
        if !self.pwd.join(&script).exists() {
            return Ok(text);
        }
        let base = self.root.join(&test.name);
        let err_file = self.root.join(format!("{}.err", test.name));
        std::fs::write(&err_file, &text).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("bash")
            .arg(&script)
            .arg(&base)
            .current_dir(&self.pwd)
            .status()
            .map_err(|e| format!("running {script}: {e}"))?;
        if !status.success() {
            return Err(format!("{script} failed: {status}"));
        }
        std::fs::read(&err_file).map_err(|e| e.to_string())
    }
}

fn replace_all(hay: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    if needle.is_empty() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

fn fail(reason: impl Into<String>, details: String) -> Outcome {
    Outcome::Fail {
        reason: reason.into(),
        details,
    }
}

fn show(label: &str, bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut s = format!("--- {label} ({} bytes)\n", bytes.len());
    for line in text.lines().take(40) {
        s.push_str("  | ");
        s.push_str(line);
        s.push('\n');
    }
    s
}

fn mismatch(what: &str, expected: &[u8], actual: &[u8], verbose: bool) -> Outcome {
    let details = if verbose {
        format!("{}{}", show("expected", expected), show("actual", actual))
    } else {
        String::new()
    };
    fail(format!("{what} differs"), details)
}

fn code_text(code: Option<i32>) -> String {
    match code {
        Some(c) => format!("exit code {c}"),
        None => "killed by a signal".to_owned(),
    }
}

fn run_one(setup: &Setup, config: &Config, test: &Test) -> Outcome {
    let name = &test.name;
    let file = format!("lang/{name}.nix");
    let expected = |suffix: &str| {
        setup
            .read_opt(&format!("{name}{suffix}"))
            .unwrap_or_default()
    };
    let result = match test.kind {
        Kind::ParseFail | Kind::ParseOkay => {
            let merged = test.kind == Kind::ParseFail;
            setup.run(
                config,
                test,
                vec!["--parse".into(), "-".into()],
                setup.env_with(&[]),
                Some(setup.pwd.join(&file)),
                merged,
            )
        }
        Kind::EvalFail => {
            let args = match setup.read_opt(&format!("{name}.flags")) {
                Some(f) => fail_flags(&String::from_utf8_lossy(&f)),
                None => words("--eval --strict --show-trace"),
            };
            let mut args = args;
            args.push(file.clone());
            setup.run(config, test, args, setup.env_with(&[]), None, true)
        }
        Kind::EvalOkay => {
            if setup.exists(&format!("{name}.exp.xml")) {
                let mut args = words("--eval --xml --no-location --strict");
                args.push(file.clone());
                setup.run(config, test, args, setup.env_with(&[]), None, false)
            } else if setup.exists(&format!("{name}.exp-disabled")) {
                return Outcome::Skip(".exp-disabled".into());
            } else {
                let mut args = match setup.read_opt(&format!("{name}.flags")) {
                    Some(f) => words(String::from_utf8_lossy(&f).lines().next().unwrap_or("")),
                    None => Vec::new(),
                };
                args.extend(words("--eval --strict"));
                args.push(file.clone());
                let env =
                    setup.env_with(&[("NIX_PATH", "lang/dir3:lang/dir4"), ("HOME", "/fake-home")]);
                setup.run(config, test, args, env, None, false)
            }
        }
    };
    let cap = match result {
        Ok(c) => c,
        Err(RunError::Timeout) => {
            return fail(
                format!("timed out after {}s", config.timeout.as_secs()),
                String::new(),
            )
        }
        Err(RunError::Io(e)) => return fail(e, String::new()),
    };
    let verbose = config.verbose;
    match test.kind {
        Kind::ParseFail | Kind::EvalFail => {
            if cap.code != Some(1) {
                let details = if verbose {
                    show("output", &cap.stderr)
                } else {
                    String::new()
                };
                return fail(format!("{}, expected 1", code_text(cap.code)), details);
            }
            if config.lenient {
                return Outcome::Pass;
            }
            let mut actual = cap.stderr;
            if test.kind == Kind::EvalFail {
                actual = setup.rewrite_pwd(&actual);
                actual = match setup.postprocess(test, actual) {
                    Ok(a) => a,
                    Err(e) => return fail(e, String::new()),
                };
            }
            let want = expected(".err.exp");
            if actual != want {
                return mismatch("output", &want, &actual, verbose);
            }
            Outcome::Pass
        }
        Kind::ParseOkay | Kind::EvalOkay => {
            if cap.code != Some(0) {
                let details = if verbose {
                    show("stderr", &cap.stderr)
                } else {
                    String::new()
                };
                return fail(format!("{}, expected 0", code_text(cap.code)), details);
            }
            let xml = setup.exists(&format!("{name}.exp.xml"));
            let (stdout, stderr) = if test.kind == Kind::EvalOkay && !xml {
                (
                    setup.rewrite_pwd(&cap.stdout),
                    setup.rewrite_pwd(&cap.stderr),
                )
            } else {
                (cap.stdout, cap.stderr)
            };
            let want_out = if xml {
                expected(".exp.xml")
            } else {
                expected(".exp")
            };
            if stdout != want_out {
                return mismatch("stdout", &want_out, &stdout, verbose);
            }
            if !config.lenient && !xml {
                let want_err = expected(".err.exp");
                if stderr != want_err {
                    return mismatch("stderr", &want_err, &stderr, verbose);
                }
            }
            Outcome::Pass
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fail_flags_strip_comments_and_join_lines() {
        let f = "--eval --strict # why\n# only a comment\n--no-show-trace\n";
        assert_eq!(fail_flags(f), ["--eval", "--strict", "--no-show-trace"]);
    }

    #[test]
    fn pwd_rewrite_replaces_every_occurrence() {
        assert_eq!(
            replace_all(b"at /x/pwd/lang/a.nix and /x/pwd/b", b"/x/pwd", b"/pwd"),
            b"at /pwd/lang/a.nix and /pwd/b".to_vec()
        );
    }
}
