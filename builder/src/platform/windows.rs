//! Windows implementation of the platform interface: Win32 error codes
//! mapped to [`OsErrorKind`], whole-file locks with `LockFileEx`, process
//! control with `TerminateProcess`/`WaitForSingleObject`, and process trees
//! (Windows has no process groups) found through a Toolhelp snapshot.
//! Sandboxed builds are not supported on Windows yet and say so.
//!
//! Built for x86_64-pc-windows-gnu and its tests run under wine by
//! `scripts/test-windows.sh`; never run on a real Windows host.

use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, HANDLE, WAIT_OBJECT_0};
use windows_sys::Win32::Storage::FileSystem::{
    LockFileEx, LOCKFILE_EXCLUSIVE_LOCK, LOCKFILE_FAIL_IMMEDIATELY,
};
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, OpenProcess, TerminateProcess, WaitForSingleObject, INFINITE,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE, PROCESS_TERMINATE,
};
use windows_sys::Win32::System::IO::OVERLAPPED;

use super::{ExitStatus, LockMode, OsError, OsErrorKind, Pid};
use crate::sandbox::{RunOutcome, SandboxError, SandboxSpec};

/// Host id builders would run as under root (see the Linux sandbox); unused
/// on Windows, kept so the interface is the same.
pub const ROOT_MODE_BUILD_ID: u32 = 872_415_232;

/// The exit code a process killed by [`kill`] reports (128 + SIGKILL, the
/// code a Unix shell shows for a killed child).
pub const KILLED_EXIT_CODE: u32 = 137;

/// Win32 error codes b3 tells apart (winerror.h).
mod code {
    pub const FILE_NOT_FOUND: i32 = 2;
    pub const PATH_NOT_FOUND: i32 = 3;
    pub const TOO_MANY_OPEN_FILES: i32 = 4;
    pub const ACCESS_DENIED: i32 = 5;
    pub const INVALID_HANDLE: i32 = 6;
    pub const NOT_SAME_DEVICE: i32 = 17;
    pub const WRITE_PROTECT: i32 = 19;
    pub const SHARING_VIOLATION: i32 = 32;
    pub const LOCK_VIOLATION: i32 = 33;
    pub const HANDLE_DISK_FULL: i32 = 39;
    pub const NOT_SUPPORTED: i32 = 50;
    pub const FILE_EXISTS: i32 = 80;
    pub const INVALID_PARAMETER: i32 = 87;
    pub const DISK_FULL: i32 = 112;
    pub const CALL_NOT_IMPLEMENTED: i32 = 120;
    pub const INVALID_NAME: i32 = 123;
    pub const DIR_NOT_EMPTY: i32 = 145;
    pub const BUSY: i32 = 170;
    pub const ALREADY_EXISTS: i32 = 183;
    pub const DIRECTORY: i32 = 267;
    pub const OPERATION_ABORTED: i32 = 995;
    pub const IO_PENDING: i32 = 997;
    pub const PRIVILEGE_NOT_HELD: i32 = 1314;
}

pub(super) fn error_kind(c: i32) -> OsErrorKind {
    use code::*;
    match c {
        FILE_NOT_FOUND | PATH_NOT_FOUND => OsErrorKind::NotFound,
        ACCESS_DENIED | PRIVILEGE_NOT_HELD => OsErrorKind::PermissionDenied,
        FILE_EXISTS | ALREADY_EXISTS => OsErrorKind::AlreadyExists,
        DIRECTORY => OsErrorKind::NotADirectory,
        DIR_NOT_EMPTY => OsErrorKind::DirectoryNotEmpty,
        SHARING_VIOLATION | BUSY => OsErrorKind::Busy,
        LOCK_VIOLATION | IO_PENDING => OsErrorKind::WouldBlock,
        OPERATION_ABORTED => OsErrorKind::Interrupted,
        INVALID_PARAMETER | INVALID_NAME | INVALID_HANDLE => OsErrorKind::InvalidInput,
        HANDLE_DISK_FULL | DISK_FULL => OsErrorKind::NoSpace,
        WRITE_PROTECT => OsErrorKind::ReadOnlyFilesystem,
        NOT_SAME_DEVICE => OsErrorKind::CrossDevice,
        TOO_MANY_OPEN_FILES => OsErrorKind::TooManyOpenFiles,
        NOT_SUPPORTED | CALL_NOT_IMPLEMENTED => OsErrorKind::Unsupported,
        _ => OsErrorKind::Other,
    }
}

fn last_error() -> i32 {
    // SAFETY: reads the calling thread's last-error value.
    unsafe { GetLastError() as i32 }
}

/// An owned process handle, closed on drop.
struct Process(HANDLE);

impl Process {
    /// Opens `pid`; a pid that names no process is `NoSuchProcess` (Windows
    /// reports it as an invalid parameter).
    fn open(pid: Pid, access: u32, op: &str) -> Result<Process, OsError> {
        // SAFETY: plain Win32 call; the result is checked.
        let h = unsafe { OpenProcess(access, 0, pid.0 as u32) };
        if h.is_null() {
            let c = last_error();
            let mut e = OsError::from_raw(op, c);
            if c == code::INVALID_PARAMETER {
                e.kind = OsErrorKind::NoSuchProcess;
            }
            return Err(e);
        }
        Ok(Process(h))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // SAFETY: the handle is owned and open.
        unsafe { CloseHandle(self.0) };
    }
}

pub(super) fn kill(pid: Pid) -> Result<(), OsError> {
    let op = format!("killing process {}", pid.0);
    let p = Process::open(pid, PROCESS_TERMINATE, &op)?;
    // SAFETY: the handle is open with PROCESS_TERMINATE.
    if unsafe { TerminateProcess(p.0, KILLED_EXIT_CODE) } == 0 {
        return Err(OsError::from_raw(op, last_error()));
    }
    Ok(())
}

/// Windows has no process groups: `pgid` is taken as the root of a process
/// tree, and the root and all its descendants (by parent pid, from one
/// snapshot) are terminated. A parent pid can have been reused by an
/// unrelated process; like spfs, b3 accepts that risk for processes whose
/// parent has already exited.
pub(super) fn kill_group(pgid: Pid) -> Result<(), OsError> {
    let tree = process_tree(pgid)?;
    if tree.is_empty() {
        return Err(OsError::new(
            format!("killing process tree {}", pgid.0),
            OsErrorKind::NoSuchProcess,
        ));
    }
    let mut first_err = None;
    for pid in tree {
        match kill(Pid(pid as i32)) {
            Ok(()) => {}
            // Exited in the meantime: that is what we wanted.
            Err(e) if e.kind == OsErrorKind::NoSuchProcess => {}
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

/// `root` and its descendants that are running now, root first.
pub fn process_tree(root: Pid) -> Result<Vec<u32>, OsError> {
    let procs = snapshot()?;
    let root = root.0 as u32;
    if !procs.iter().any(|&(pid, _)| pid == root) {
        return Ok(Vec::new());
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for &(pid, ppid) in &procs {
            if ppid == parent && pid != parent && !tree.contains(&pid) {
                tree.push(pid);
            }
        }
        i += 1;
    }
    Ok(tree)
}

/// Every running process as (pid, parent pid).
pub fn snapshot() -> Result<Vec<(u32, u32)>, OsError> {
    // SAFETY: plain Win32 call; the result is checked.
    let snap = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) };
    if snap as isize == -1 {
        return Err(OsError::from_raw("listing processes", last_error()));
    }
    let snap = Process(snap);
    // SAFETY: PROCESSENTRY32W is plain data; dwSize is set as required.
    let mut entry: PROCESSENTRY32W = unsafe { std::mem::zeroed() };
    entry.dwSize = std::mem::size_of::<PROCESSENTRY32W>() as u32;
    let mut out = Vec::new();
    // SAFETY: `snap` is a valid snapshot handle and `entry` is sized.
    let mut ok = unsafe { Process32FirstW(snap.0, &mut entry) };
    while ok != 0 {
        out.push((entry.th32ProcessID, entry.th32ParentProcessID));
        // SAFETY: as above.
        ok = unsafe { Process32NextW(snap.0, &mut entry) };
    }
    Ok(out)
}

pub(super) fn wait(pid: Pid) -> Result<ExitStatus, OsError> {
    let op = format!("waiting for process {}", pid.0);
    let p = Process::open(
        pid,
        PROCESS_SYNCHRONIZE | PROCESS_QUERY_LIMITED_INFORMATION,
        &op,
    )?;
    // SAFETY: the handle is open with SYNCHRONIZE.
    if unsafe { WaitForSingleObject(p.0, INFINITE) } != WAIT_OBJECT_0 {
        return Err(OsError::from_raw(op, last_error()));
    }
    let mut code = 0u32;
    // SAFETY: the handle is open with QUERY_LIMITED_INFORMATION.
    if unsafe { GetExitCodeProcess(p.0, &mut code) } == 0 {
        return Err(OsError::from_raw(op, last_error()));
    }
    Ok(ExitStatus::Code(code as i32))
}

/// Locks the whole of `file` (every byte offset) with `LockFileEx`.
pub(super) fn lock_file(file: &std::fs::File, mode: LockMode, block: bool) -> Result<(), i32> {
    let mut flags = 0;
    if mode == LockMode::Exclusive {
        flags |= LOCKFILE_EXCLUSIVE_LOCK;
    }
    if !block {
        flags |= LOCKFILE_FAIL_IMMEDIATELY;
    }
    // SAFETY: an all-zero OVERLAPPED asks for offset 0; the handle is open
    // for the whole call and the call is synchronous (no overlapped handle).
    let mut ov: OVERLAPPED = unsafe { std::mem::zeroed() };
    let ok = unsafe { LockFileEx(file.as_raw_handle(), flags, 0, u32::MAX, u32::MAX, &mut ov) };
    if ok == 0 {
        Err(last_error())
    } else {
        Ok(())
    }
}

fn not_yet() -> OsError {
    OsError::new(
        "sandboxed builds are not supported on Windows yet",
        OsErrorKind::Unsupported,
    )
}

pub(super) fn sandbox_support() -> Result<(), OsError> {
    Err(not_yet())
}

/// Never constructed on Windows.
#[derive(Debug)]
pub struct SandboxedChild {
    _private: (),
}

impl SandboxedChild {
    pub fn pid(&self) -> Pid {
        Pid(0)
    }

    pub fn setup_time(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }

    pub fn wait_with_log(self, _log: &mut dyn std::io::Write) -> Result<RunOutcome, SandboxError> {
        Err(SandboxError::Setup(not_yet()))
    }
}

/// Sandboxed builds are not implemented on Windows yet.
pub fn spawn_sandboxed(_spec: &SandboxSpec) -> Result<SandboxedChild, SandboxError> {
    Err(SandboxError::Setup(not_yet()))
}

/// Nothing outlives a reaped sandbox here (see the Linux version).
pub fn wait_released() {}

#[cfg(test)]
mod tests {
    use super::super::{FileLock, LockMode as Mode};
    use super::*;

    #[test]
    fn win32_codes_map_to_b3_kinds() {
        assert_eq!(error_kind(code::FILE_NOT_FOUND), OsErrorKind::NotFound);
        assert_eq!(
            error_kind(code::ACCESS_DENIED),
            OsErrorKind::PermissionDenied
        );
        assert_eq!(error_kind(code::LOCK_VIOLATION), OsErrorKind::WouldBlock);
        assert_eq!(error_kind(code::ALREADY_EXISTS), OsErrorKind::AlreadyExists);
        assert_eq!(error_kind(code::DISK_FULL), OsErrorKind::NoSpace);
        assert_eq!(error_kind(999_999), OsErrorKind::Other);
        let e = OsError::from_raw("opening C:\\x", code::PATH_NOT_FOUND);
        assert_eq!(e.to_string(), "opening C:\\x: not found (os error 3)");
    }

    #[test]
    fn lockfileex_lock_excludes_other_holders_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.lock");
        let held = FileLock::lock(&p, Mode::Exclusive).unwrap();
        assert!(FileLock::try_lock(&p, Mode::Shared).unwrap().is_none());
        assert!(FileLock::try_lock(&p, Mode::Exclusive).unwrap().is_none());
        drop(held);
        let _a = FileLock::try_lock(&p, Mode::Shared).unwrap().unwrap();
        assert!(FileLock::try_lock(&p, Mode::Shared).unwrap().is_some());
        assert!(FileLock::try_lock(&p, Mode::Exclusive).unwrap().is_none());
    }

    #[test]
    fn sandboxed_builds_say_they_are_not_supported_yet() {
        let e = sandbox_support().unwrap_err();
        assert_eq!(e.kind, OsErrorKind::Unsupported);
        assert!(e.to_string().contains("not supported on Windows yet"));
    }

    #[test]
    fn processes_are_killed_and_waited_for_by_pid() {
        // `cmd` exists on Windows and in wine's prefix.
        let child = std::process::Command::new("cmd")
            .args(["/c", "exit 7"])
            .spawn()
            .unwrap();
        let pid = Pid(child.id() as i32);
        assert_eq!(wait(pid).unwrap(), ExitStatus::Code(7));
        drop(child);
        let err = kill(Pid(0x7fff_fff0)).unwrap_err();
        assert_eq!(err.kind, OsErrorKind::NoSuchProcess);
    }
}
