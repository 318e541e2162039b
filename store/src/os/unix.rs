//! Unix side of [`crate::os`]: mode bits, `utimensat`, `syncfs`,
//! `renameat2(RENAME_EXCHANGE)`, inode identity.

use std::fs::{File, Metadata, OpenOptions, Permissions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, Timespec, Timestamps, CWD};

use crate::canonicalise::CANONICAL_MTIME;

fn canonical_times() -> Timestamps {
    let t = Timespec {
        tv_sec: CANONICAL_MTIME,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The permission bits of `meta` (`0o7777` part of the mode).
pub fn mode(meta: &Metadata) -> u32 {
    meta.permissions().mode() & 0o7777
}

/// Whether the owner may execute the file.
pub fn is_executable(meta: &Metadata) -> bool {
    meta.permissions().mode() & 0o100 != 0
}

/// Sets the permission bits of `path` (follows nothing: callers pass files
/// and directories only).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(mode))
}

/// Sets access and modification time to [`CANONICAL_MTIME`] without
/// following a symlink at `path`.
pub fn set_canonical_mtime(path: &Path) -> io::Result<()> {
    rustix::fs::utimensat(CWD, path, &canonical_times(), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(io::Error::from)
}

/// Creates a new file (never an existing one) with `mode`.
pub fn create_new_file(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Gives an open, fully written file `mode` and the canonical timestamp.
pub fn finish_file(f: &File, mode: u32) -> io::Result<()> {
    rustix::fs::fchmod(f, Mode::from_raw_mode(mode))?;
    rustix::fs::futimens(f, &canonical_times())?;
    Ok(())
}

/// Creates a symlink at `link` pointing to `target`.
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

/// Flushes everything written to the filesystem holding `f`.
pub fn sync_filesystem(f: &File) -> io::Result<()> {
    rustix::fs::syncfs(f).map_err(io::Error::from)
}

/// Opens a file or directory for reading (to sync it).
pub fn open_node(path: &Path) -> io::Result<File> {
    File::open(path)
}

/// Makes a file's data and metadata, or a directory's entries, durable
/// (whatever access the handle was opened with).
pub fn flush_node(f: &File) -> io::Result<()> {
    f.sync_all()
}

/// Makes a directory's entries durable.
pub fn sync_dir(dir: &File) -> io::Result<()> {
    dir.sync_all()
}

/// Atomically swaps the paths `a` and `b` (both must exist).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    rustix::fs::renameat_with(CWD, a, CWD, b, rustix::fs::RenameFlags::EXCHANGE)
        .map_err(io::Error::from)
}

/// Whether `path` still names the file `held` is open on.
pub fn same_file(held: &File, path: &Path) -> io::Result<bool> {
    let held = held.metadata()?;
    let now = std::fs::metadata(path)?;
    Ok(now.ino() == held.ino() && now.dev() == held.dev())
}

/// Bytes allocated on disk for the node of `meta`.
pub fn allocated_bytes(meta: &Metadata) -> u64 {
    meta.blocks() * 512
}

/// Whether `meta` is a FIFO, socket or device (what a NAR cannot hold).
pub fn is_special(meta: &Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let ft = meta.file_type();
    ft.is_fifo() || ft.is_socket() || ft.is_block_device() || ft.is_char_device()
}

/// Whether a process with this pid exists (one we may not signal exists).
pub fn process_exists(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Lowers the calling thread's priority (see [`super::Background`]).
/// Background chores at the builds' priority delayed the thread that starts
/// the next build of a chain by 0.2–0.3 ms per wake-up on two cores; a
/// chain waits on every one of them. Linux only: elsewhere the calls set
/// the whole process. Best effort: a thread left as it was still works.
pub fn yield_to_foreground(how: super::Background) {
    #[cfg(target_os = "linux")]
    match how {
        super::Background::Idle => {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: pid 0 is the calling thread; `param` outlives the call.
            unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
        }
        super::Background::Low => {
            let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 19);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = how;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::super::Background;
    use super::yield_to_foreground;

    fn in_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        match std::thread::spawn(f).join() {
            Ok(v) => v,
            Err(_) => panic!("the test thread panicked"),
        }
    }

    #[test]
    fn an_idle_thread_is_scheduled_as_idle_and_the_others_are_not() {
        // SAFETY: sched_getscheduler only reads.
        let (before, after) = in_thread(|| {
            let before = unsafe { libc::sched_getscheduler(0) };
            yield_to_foreground(Background::Idle);
            (before, unsafe { libc::sched_getscheduler(0) })
        });
        assert_eq!(before, libc::SCHED_OTHER);
        assert_eq!(after, libc::SCHED_IDLE);
        assert_eq!(unsafe { libc::sched_getscheduler(0) }, libc::SCHED_OTHER);
    }

    #[test]
    fn a_low_thread_has_nice_19_and_the_others_keep_theirs() {
        let tid = || Some(rustix::thread::gettid());
        let own = rustix::process::getpriority_process(tid()).ok();
        let low = in_thread(move || {
            yield_to_foreground(Background::Low);
            rustix::process::getpriority_process(tid()).ok()
        });
        assert_eq!(low, Some(19));
        assert_eq!(rustix::process::getpriority_process(tid()).ok(), own);
    }
}
