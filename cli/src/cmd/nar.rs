//! `b3 nar`: dump a path as a NAR, restore a NAR, list a NAR's contents.
//! Thin wrappers over b3-nar; errors name the file and the NAR byte offset.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use b3_nar::{Event, NarReader};

use super::Global;

#[derive(clap::Subcommand, Debug)]
pub enum Command {
    /// Write the NAR serialisation of PATH to stdout (like `nix-store --dump`).
    Dump {
        /// File, directory or symlink to archive (symlinks are not followed).
        path: PathBuf,
    },
    /// Read a NAR from stdin and restore it at DEST (like `nix-store --restore`).
    /// DEST must not exist; nothing is left behind on error.
    Restore {
        /// Where to create the restored tree.
        dest: PathBuf,
    },
    /// List the contents of a NAR (from FILE, or stdin) recursively, in the
    /// format of `nix nar ls -lR NAR /`: mode, size, path.
    Ls {
        /// NAR file to read; stdin when absent or `-`.
        file: Option<PathBuf>,
    },
}

pub fn run(_g: &Global, c: Command) -> anyhow::Result<ExitCode> {
    match c {
        Command::Dump { path } => {
            let out = raw_stdout()?;
            b3_nar::dump_path(&path, out)
                .with_context(|| format!("dumping '{}'", path.display()))?;
        }
        Command::Restore { dest } => {
            b3_nar::restore(raw_stdin()?, &dest)
                .with_context(|| format!("restoring NAR from <stdin> to '{}'", dest.display()))?;
        }
        Command::Ls { file } => {
            let (input, label): (Box<dyn Read>, String) = match &file {
                Some(f) if f.as_os_str() != "-" => (
                    Box::new(BufReader::with_capacity(
                        BUF,
                        File::open(f).with_context(|| format!("opening '{}'", f.display()))?,
                    )),
                    format!("'{}'", f.display()),
                ),
                _ => (Box::new(raw_stdin()?), "<stdin>".to_string()),
            };
            ls(input, &mut io::stdout().lock()).with_context(|| format!("listing NAR {label}"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

const BUF: usize = 256 * 1024;

/// stdout without Rust's line buffering (NARs are binary and large).
fn raw_stdout() -> anyhow::Result<File> {
    let f = dup_std(io::stdout()).context("duplicating stdout")?;
    widen_pipe(&f);
    Ok(f)
}

/// A 64 KiB pipe makes the dumper and its reader switch turns every few
/// file chunks; 1 MiB (the unprivileged maximum) lets both run
/// (`b3 nar dump | cat` measured 1.3–1.5× slower than nix-store without it).
/// Best effort: on anything but a pipe, or if refused, nothing changes.
#[cfg(target_os = "linux")]
fn widen_pipe(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl on a descriptor we own; F_SETPIPE_SZ only resizes a pipe
    // buffer and fails harmlessly (EBADF/EINVAL/EPERM) on anything else.
    unsafe {
        libc::fcntl(f.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20);
    }
}

#[cfg(not(target_os = "linux"))]
fn widen_pipe(_: &File) {}

/// A standard stream's descriptor (handle on Windows) as an unbuffered File.
#[cfg(unix)]
fn dup_std(s: impl std::os::fd::AsFd) -> io::Result<File> {
    Ok(File::from(s.as_fd().try_clone_to_owned()?))
}

#[cfg(windows)]
fn dup_std(s: impl std::os::windows::io::AsHandle) -> io::Result<File> {
    Ok(File::from(s.as_handle().try_clone_to_owned()?))
}

/// stdin with a large buffer.
pub(crate) fn raw_stdin() -> anyhow::Result<BufReader<File>> {
    let f = dup_std(io::stdin()).context("duplicating stdin")?;
    Ok(BufReader::with_capacity(BUF, f))
}

/// Writes one line per node in the format of `nix nar ls -lR NAR /`:
/// `MODE SIZE PATH` with MODE `-r--r--r--`, `-r-xr-xr-x`, `dr-xr-xr-x` or
/// `lrwxrwxrwx`, the size right-aligned in 20 columns, and paths relative
/// to the root as `./a/b` (a root file or symlink has an empty path; the
/// root directory itself is not listed). Symlinks end in ` -> TARGET`.
/// Names are written as raw bytes (they need not be UTF-8).
fn ls<R: Read>(input: R, out: &mut impl Write) -> Result<(), anyhow::Error> {
    let mut nar = NarReader::new(input);
    // Path of the innermost open directory ("." for the root directory).
    let mut dir: Vec<u8> = Vec::new();
    // Length of `dir` before each open directory was entered.
    let mut lens: Vec<usize> = Vec::new();
    let mut name: Option<Vec<u8>> = None;
    let mut line = Vec::with_capacity(256);
    while let Some(ev) = nar.next()? {
        // Path of the node this event describes ("" for the root).
        let full = match &name {
            Some(n) => {
                let mut p = dir.clone();
                p.push(b'/');
                p.extend_from_slice(n);
                p
            }
            None => Vec::new(),
        };
        line.clear();
        match ev {
            Event::Entry { name: n } => {
                name = Some(n.to_vec());
                continue;
            }
            Event::DirectoryEnd => {
                dir.truncate(lens.pop().unwrap_or(0));
                continue;
            }
            Event::DirectoryStart => {
                lens.push(dir.len());
                if name.is_none() {
                    dir = b".".to_vec();
                    continue;
                }
                write!(line, "dr-xr-xr-x {:>20} ", 0)?;
                line.extend_from_slice(&full);
                dir = full;
            }
            Event::File {
                executable, size, ..
            } => {
                let mode = if executable {
                    "-r-xr-xr-x"
                } else {
                    "-r--r--r--"
                };
                write!(line, "{mode} {size:>20} ")?;
                line.extend_from_slice(&full);
            }
            Event::Symlink { target } => {
                write!(line, "lrwxrwxrwx {:>20} ", 0)?;
                line.extend_from_slice(&full);
                line.extend_from_slice(b" -> ");
                line.extend_from_slice(target);
            }
        }
        name = None;
        line.push(b'\n');
        out.write_all(&line)?;
    }
    out.flush()?;
    Ok(())
}
