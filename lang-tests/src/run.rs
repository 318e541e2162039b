//! Running one evaluator process with a time limit, with stdout and
//! stderr captured either separately or merged (same file, so the
//! interleaving is the process's own, as with `2>&1`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How to invoke the evaluator under test.
#[derive(Clone, Debug)]
pub struct Program {
    exe: PathBuf,
    /// Arguments put before the test's own (`instantiate` for b3).
    prefix: Vec<String>,
}

impl Program {
    /// A `nix-instantiate`-compatible binary, run as is.
    pub fn direct(exe: &Path) -> Program {
        Program {
            exe: exe.to_path_buf(),
            prefix: Vec::new(),
        }
    }

    /// `b3` (run as `b3 instantiate`), unless the file is called
    /// `nix-instantiate`.
    pub fn for_binary(exe: &Path) -> Program {
        if exe.file_name().is_some_and(|n| n == "nix-instantiate") {
            Program::direct(exe)
        } else {
            Program {
                exe: exe.to_path_buf(),
                prefix: vec!["instantiate".to_owned()],
            }
        }
    }

    /// Makes a relative program path absolute, since tests run in another
    /// directory.
    pub fn absolutize(&mut self) {
        if self.exe.components().count() > 1 && self.exe.is_relative() {
            if let Ok(abs) = std::path::absolute(&self.exe) {
                self.exe = abs;
            }
        }
    }
}

pub struct Invocation<'a> {
    pub program: &'a Program,
    pub args: Vec<String>,
    pub cwd: &'a Path,
    pub env: &'a [(String, String)],
    pub stdin: Option<PathBuf>,
    /// Where to put stdout; stderr goes to `stderr_file`, or into the same
    /// file when that is `None`.
    pub stdout_file: PathBuf,
    pub stderr_file: Option<PathBuf>,
    pub timeout: Duration,
}

pub enum Finished {
    Exited(Option<i32>),
    TimedOut,
}

pub fn run(inv: &Invocation) -> std::io::Result<Finished> {
    let out = File::create(&inv.stdout_file)?;
    let err = match &inv.stderr_file {
        Some(p) => File::create(p)?,
        None => out.try_clone()?,
    };
    let stdin = match &inv.stdin {
        Some(p) => Stdio::from(File::open(p)?),
        None => Stdio::null(),
    };
    let mut cmd = Command::new(&inv.program.exe);
    cmd.args(&inv.program.prefix)
        .args(&inv.args)
        .current_dir(inv.cwd)
        .env_clear()
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(stdin)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = cmd.spawn()?;
    let deadline = Instant::now() + inv.timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Finished::Exited(status.code()));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(Finished::TimedOut);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
