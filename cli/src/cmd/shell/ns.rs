//! The mount namespace of `b3 shell`: the host's file system as it is, plus
//! the store's physical directory mounted (read-only) at the logical store
//! directory, entered without root through a user namespace.
//!
//! `unshare(CLONE_NEWUSER)` needs a single-threaded process, and building
//! mount trees allocates, which is not allowed between fork and exec in a
//! threaded program; so `b3` re-executes itself as `b3 __b3-shell-enter …`
//! ([`command`]), a fresh single-threaded process that sets the namespace up
//! ([`enter_main`]) and then executes the shell.
//!
//! When the logical directory exists it is simply bind-mounted over. When it
//! does not (a machine without `/nix`), the deepest existing ancestor is
//! re-created on a tmpfs: each entry bind-mounted from the host, the missing
//! directories added, the store mounted in; the tmpfs then replaces the
//! ancestor (bind-mounted over it, or `chroot` when the ancestor is `/`).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, ExitCode};

/// The argv[1] that makes `b3` run [`enter_main`].
pub const ENTER_ARG: &str = "__b3-shell-enter";

/// `program args` run with `physical` visible at `logical`. `staging` is an
/// empty directory the caller owns and removes afterwards (used only when
/// `logical` does not exist). Without a namespace when they are the same.
pub fn command(
    physical: &Path,
    logical: &Path,
    staging: &Path,
    program: &OsStr,
    args: &[OsString],
) -> io::Result<Command> {
    let same = match (physical.canonicalize(), logical.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if same {
        let mut c = Command::new(program);
        c.args(args);
        return Ok(c);
    }
    let mut c = Command::new(std::env::current_exe()?);
    c.arg(ENTER_ARG)
        .arg(physical)
        .arg(logical)
        .arg(staging)
        .arg(std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")))
        .arg("--")
        .arg(program)
        .args(args);
    Ok(c)
}

/// Entry point of `b3 __b3-shell-enter PHYSICAL LOGICAL STAGING CWD -- PROGRAM ARGS…`.
/// Executes PROGRAM; returns only on failure.
pub fn enter_main(args: &[OsString]) -> ExitCode {
    match enter(args) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("error: b3 shell: {e}");
            ExitCode::from(127)
        }
    }
}

enum Never {}

fn enter(args: &[OsString]) -> io::Result<Never> {
    let [physical, logical, staging, cwd, dashdash, program, rest @ ..] = args else {
        return Err(io::Error::other(
            "usage: __b3-shell-enter PHYS LOGICAL STAGING CWD -- PROGRAM ARGS",
        ));
    };
    if dashdash != "--" {
        return Err(io::Error::other("expected '--' before the program"));
    }
    let (physical, logical, staging) =
        (Path::new(physical), Path::new(logical), Path::new(staging));
    unshare_mount_namespace()?;
    expose(physical, logical, staging)?;
    if std::env::set_current_dir(cwd).is_err() {
        std::env::set_current_dir("/")?;
    }
    // The parent ignores SIGINT/SIGQUIT while the shell runs; the shell must not.
    // SAFETY: resetting signal dispositions to their defaults.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    let err = std::os::unix::process::CommandExt::exec(Command::new(program).args(rest));
    Err(io::Error::new(
        err.kind(),
        format!("executing {}: {err}", Path::new(program).display()),
    ))
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(io::Error::other)
}

fn check(r: libc::c_int, what: impl FnOnce() -> String) -> io::Result<()> {
    if r == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{}: {e}", what())))
    }
}

/// A private mount namespace; for non-root users inside a user namespace
/// that maps their own uid/gid (so files keep their owners).
fn unshare_mount_namespace() -> io::Result<()> {
    // SAFETY: plain system calls; this process is single-threaded.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if uid == 0 {
        // SAFETY: as above.
        check(unsafe { libc::unshare(libc::CLONE_NEWNS) }, || {
            "unshare(CLONE_NEWNS)".into()
        })?;
    } else {
        // SAFETY: as above.
        check(
            unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) },
            || {
                "unshare(CLONE_NEWUSER|CLONE_NEWNS) (are unprivileged user namespaces enabled?)"
                    .into()
            },
        )?;
        std::fs::write("/proc/self/setgroups", "deny")?;
        std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1\n"))?;
        std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1\n"))?;
    }
    let root = cstr(Path::new("/"))?;
    // SAFETY: valid NUL-terminated strings; null fs type and data are allowed.
    check(
        unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        },
        || "making / private".into(),
    )
}

fn bind(src: &Path, dst: &Path, read_only: bool) -> io::Result<()> {
    let (s, d) = (cstr(src)?, cstr(dst)?);
    let what = || format!("bind-mounting {} on {}", src.display(), dst.display());
    // SAFETY: valid NUL-terminated strings.
    check(
        unsafe {
            libc::mount(
                s.as_ptr(),
                d.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            )
        },
        what,
    )?;
    if read_only {
        // SAFETY: as above.
        check(
            unsafe {
                libc::mount(
                    std::ptr::null(),
                    d.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    std::ptr::null(),
                )
            },
            || format!("making {} read-only", dst.display()),
        )?;
    }
    Ok(())
}

/// Makes `physical` visible at `logical` in this (private) namespace.
fn expose(physical: &Path, logical: &Path, staging: &Path) -> io::Result<()> {
    if logical.is_dir() {
        return bind(physical, logical, true);
    }
    // The deepest ancestor that exists, and the components missing below it.
    let mut anc = logical.to_path_buf();
    let mut missing: Vec<OsString> = Vec::new();
    while !anc.is_dir() {
        match anc.file_name() {
            Some(n) => missing.push(n.to_os_string()),
            None => {
                return Err(io::Error::other(format!(
                    "{}: no existing ancestor",
                    logical.display()
                )))
            }
        }
        if !anc.pop() {
            break;
        }
    }
    missing.reverse();
    if logical
        .components()
        .any(|c| matches!(c, Component::ParentDir))
    {
        return Err(io::Error::other(
            "the store directory must not contain '..'",
        ));
    }
    let tmpfs = cstr(Path::new("tmpfs"))?;
    let st = cstr(staging)?;
    // SAFETY: valid NUL-terminated strings.
    check(
        unsafe {
            libc::mount(
                tmpfs.as_ptr(),
                st.as_ptr(),
                tmpfs.as_ptr(),
                0,
                std::ptr::null(),
            )
        },
        || format!("mounting a tmpfs on {}", staging.display()),
    )?;
    let mut db = std::fs::DirBuilder::new();
    db.mode(0o755);
    for entry in std::fs::read_dir(&anc)? {
        let entry = entry?;
        let name = entry.file_name();
        let src = anc.join(&name);
        let dst = staging.join(&name);
        let ft = entry.file_type()?;
        if ft.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&src)?, &dst)?;
        } else if ft.is_dir() {
            db.create(&dst)?;
            // Unreadable or special directories are skipped, not fatal.
            let _ = bind(&src, &dst, false);
        } else {
            std::fs::write(&dst, b"")?;
            let _ = bind(&src, &dst, false);
        }
    }
    let mut target = staging.to_path_buf();
    for m in &missing {
        target.push(m);
        db.create(&target)?;
    }
    bind(physical, &target, true)?;
    if anc == Path::new("/") {
        let st = cstr(staging)?;
        // SAFETY: a valid NUL-terminated path.
        check(unsafe { libc::chroot(st.as_ptr()) }, || {
            format!("chroot {}", staging.display())
        })?;
        std::env::set_current_dir("/")?;
        Ok(())
    } else {
        bind(staging, &anc, false)
    }
}
