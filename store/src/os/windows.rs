//! Windows side of [`crate::os`]. Mode bits map onto the read-only
//! attribute (any write bit clear for the owner → read-only); nothing is
//! executable; file identity is the volume serial number and file index.
//! Typed against `windows-sys`; built for x86_64-pc-windows-gnu and run
//! under wine by `scripts/test-windows.sh`, never on a real Windows host.

use std::fs::{File, FileTimes, Metadata, OpenOptions};
use std::io;
use std::os::windows::fs::{FileTimesExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::time::{Duration, SystemTime};

use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, MoveFileExW, BY_HANDLE_FILE_INFORMATION,
    FILE_FLAG_BACKUP_SEMANTICS, FILE_FLAG_OPEN_REPARSE_POINT, FILE_WRITE_ATTRIBUTES,
};

use crate::canonicalise::CANONICAL_MTIME;

fn canonical_times() -> FileTimes {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(CANONICAL_MTIME as u64);
    FileTimes::new()
        .set_accessed(t)
        .set_modified(t)
        .set_created(t)
}

/// Unix-style bits for `meta`: 0o555/0o444 when read-only, 0o755/0o644
/// otherwise (directories count as "executable").
pub fn mode(meta: &Metadata) -> u32 {
    match (meta.permissions().readonly(), meta.is_dir()) {
        (true, true) => 0o555,
        (true, false) => 0o444,
        (false, true) => 0o755,
        (false, false) => 0o644,
    }
}

/// Windows has no executable bit.
pub fn is_executable(_meta: &Metadata) -> bool {
    false
}

/// Sets the read-only attribute when the owner-write bit of `mode` is clear.
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    let mut p = std::fs::symlink_metadata(path)?.permissions();
    p.set_readonly(mode & 0o200 == 0);
    std::fs::set_permissions(path, p)
}

/// Sets the times of the node at `path` (a symlink itself, not its target)
/// to [`CANONICAL_MTIME`].
pub fn set_canonical_mtime(path: &Path) -> io::Result<()> {
    let f = OpenOptions::new()
        .access_mode(FILE_WRITE_ATTRIBUTES)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)?;
    f.set_times(canonical_times())
}

/// Creates a new file (never an existing one); `mode` is applied by
/// [`finish_file`] once the contents are written.
pub fn create_new_file(path: &Path, _mode: u32) -> io::Result<File> {
    OpenOptions::new().write(true).create_new(true).open(path)
}

/// Gives an open, fully written file the canonical timestamp and, when
/// `mode` has no owner-write bit, the read-only attribute.
pub fn finish_file(f: &File, mode: u32) -> io::Result<()> {
    f.set_times(canonical_times())?;
    let mut p = f.metadata()?.permissions();
    p.set_readonly(mode & 0o200 == 0);
    f.set_permissions(p)
}

/// Creates a symlink at `link`: a directory symlink when `target`
/// (relative to the link's directory) is an existing directory now.
/// Fails when the system reports success without making the link (wine
/// 8's `CreateSymbolicLinkW` is such a stub) rather than leaving a tree
/// without it.
pub fn symlink(target: &Path, link: &Path) -> io::Result<()> {
    let base = link.parent().unwrap_or(Path::new("."));
    if base.join(target).is_dir() {
        std::os::windows::fs::symlink_dir(target, link)?;
    } else {
        std::os::windows::fs::symlink_file(target, link)?;
    }
    match std::fs::symlink_metadata(link) {
        Ok(m) if m.file_type().is_symlink() => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!(
                "creating the symlink {} reported success but made nothing \
                 (this system cannot create symlinks)",
                link.display()
            ),
        )),
    }
}

/// No `syncfs` on Windows (flushing a volume needs administrator rights):
/// flushes `f` only.
pub fn sync_filesystem(f: &File) -> io::Result<()> {
    match f.sync_all() {
        // Directories opened read-only cannot be flushed; nothing to do.
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        r => r,
    }
}

/// Opens a file or directory for reading (directories need backup
/// semantics to be opened at all).
pub fn open_node(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
}

/// Flushes a file or directory. Windows refuses to flush a handle opened
/// for reading (directories, and files reopened by path after writing):
/// those are left to NTFS, whose journal makes their metadata durable;
/// files written by b3 are flushed through the handle that wrote them.
pub fn flush_node(f: &File) -> io::Result<()> {
    sync_filesystem(f)
}

/// Windows cannot flush a directory opened for reading, and NTFS journals
/// its metadata: flushing is attempted and "access denied" accepted.
pub fn sync_dir(dir: &File) -> io::Result<()> {
    sync_filesystem(dir)
}

/// Swaps `a` and `b` in three renames (Windows has no atomic exchange).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let mut aside = b.as_os_str().to_owned();
    aside.push(format!(".b3-exchange-{}", std::process::id()));
    let aside = Path::new(&aside);
    move_no_replace(b, aside)?;
    if let Err(e) = move_no_replace(a, b) {
        let _ = move_no_replace(aside, b);
        return Err(e);
    }
    move_no_replace(aside, a)
}

/// `MoveFileExW` without `MOVEFILE_REPLACE_EXISTING`.
pub fn move_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (wide(from), wide(to));
    // SAFETY: NUL-terminated UTF-16 strings that outlive the call.
    if unsafe { MoveFileExW(f.as_ptr(), t.as_ptr(), 0) } != 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn wide(p: &Path) -> Vec<u16> {
    use std::os::windows::ffi::OsStrExt;
    p.as_os_str().encode_wide().chain([0]).collect()
}

fn file_id(f: &File) -> io::Result<(u32, u32, u32)> {
    // SAFETY: an all-zero BY_HANDLE_FILE_INFORMATION is valid; the handle
    // is open for the duration of the call.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    if unsafe { GetFileInformationByHandle(f.as_raw_handle(), &mut info) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((
        info.dwVolumeSerialNumber,
        info.nFileIndexHigh,
        info.nFileIndexLow,
    ))
}

/// Whether `path` still names the file `held` is open on (volume serial
/// number and file index, Windows' inode).
pub fn same_file(held: &File, path: &Path) -> io::Result<bool> {
    let now = File::open(path)?;
    Ok(file_id(held)? == file_id(&now)?)
}

/// Windows' metadata has no allocated size: the logical size stands in.
pub fn allocated_bytes(meta: &Metadata) -> u64 {
    meta.len()
}

/// Std reports only files, directories and symlinks on Windows.
pub fn is_special(meta: &Metadata) -> bool {
    let ft = meta.file_type();
    !(ft.is_file() || ft.is_dir() || ft.is_symlink())
}

/// Lowers the calling thread's priority (see [`super::Background`]):
/// Windows sets one thread's priority directly.
pub fn yield_to_foreground(how: super::Background) {
    use windows_sys::Win32::System::Threading::{
        GetCurrentThread, SetThreadPriority, THREAD_PRIORITY_IDLE, THREAD_PRIORITY_LOWEST,
    };
    let priority = match how {
        super::Background::Idle => THREAD_PRIORITY_IDLE,
        super::Background::Low => THREAD_PRIORITY_LOWEST,
    };
    // SAFETY: the pseudo-handle of the calling thread is always valid.
    unsafe { SetThreadPriority(GetCurrentThread(), priority) };
}

/// Whether a process with this pid exists and has not exited.
pub fn process_exists(pid: u32) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, ERROR_ACCESS_DENIED};
    use windows_sys::Win32::System::Threading::{
        GetExitCodeProcess, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
    };
    const STILL_ACTIVE: u32 = 259;
    // SAFETY: plain calls on a handle this function owns and closes.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if h.is_null() {
            // A process we may not open exists.
            return GetLastError() == ERROR_ACCESS_DENIED;
        }
        let mut code = 0u32;
        let ok = GetExitCodeProcess(h, &mut code);
        CloseHandle(h);
        ok == 0 || code == STILL_ACTIVE
    }
}
