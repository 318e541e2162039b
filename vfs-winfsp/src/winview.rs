//! The WinFSP file system: read-only, served from the object database.
//! One mount serves every runtime: each `open` (and security query) asks
//! WinFSP for the calling process id, walks that process's parent chain
//! ([`crate::router`]) and resolves the path in that runtime's closure, or
//! in the empty view. The open handle keeps the closure it was resolved in,
//! so reads and listings need no further routing. Directory listings go
//! through WinFSP's directory buffer; file reads `seek_read` the blob file
//! opened at `open`. A reaper thread drops runtimes whose processes have
//! all exited.
//!
//! Type-checked only (x86_64-pc-windows-gnu with the docsrs bindings);
//! never run: there is no Windows host or WinFSP driver here.

use std::ffi::{c_void, OsStr};
use std::fs::File;
use std::os::windows::fs::FileExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use b3_vfs::odb::{Node, Odb};
use windows::Win32::Foundation::{
    CloseHandle, FILETIME, STATUS_END_OF_FILE, STATUS_FILE_IS_A_DIRECTORY, STATUS_IO_DEVICE_ERROR, STATUS_NOT_A_DIRECTORY,
    STATUS_OBJECT_NAME_NOT_FOUND,
};
use winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext, OpenFileInfo,
    VolumeInfo, WideNameInfo,
};
use winfsp::host::{FileSystemHost, FineGuard, VolumeParams};
use winfsp::{FspError, U16CStr};

use windows::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, Process32FirstW, Process32NextW, PROCESSENTRY32W,
    TH32CS_SNAPPROCESS,
};
use windows::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, PROCESS_QUERY_LIMITED_INFORMATION,
};

use crate::resolve::{Closure, ResolveError, Resolved};
use crate::router::{ProcessInfo, ProcessTable, Router};

const FILE_ATTRIBUTE_READONLY: u32 = 0x0000_0001;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x0000_0010;
const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;
/// 1970-01-01T00:00:01Z (Nix's canonical mtime) in 100 ns units since 1601.
const STORE_TIME: u64 = 116_444_736_000_000_000 + 10_000_000;

/// One open file or directory, in the closure it was resolved in.
pub struct Handle {
    closure: Arc<Closure>,
    resolved: Resolved,
    file: Option<File>,
    dir: DirBuffer,
}

/// The file system context of the one mount shared by all runtimes.
pub struct WinView {
    router: Arc<RwLock<Router>>,
}

fn status(e: ResolveError) -> FspError {
    match e {
        ResolveError::NotFound => STATUS_OBJECT_NAME_NOT_FOUND.into(),
        ResolveError::NotADirectory => STATUS_NOT_A_DIRECTORY.into(),
        ResolveError::Odb(_) => STATUS_IO_DEVICE_ERROR.into(),
    }
}

fn fill(info: &mut FileInfo, r: &Resolved) {
    let (attrs, size) = match r {
        Resolved::Root => (FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_READONLY, 0),
        Resolved::Node(Node::Directory { .. }) => {
            (FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_READONLY, 0)
        }
        Resolved::Node(Node::File { size, .. }) => (FILE_ATTRIBUTE_READONLY, *size),
        Resolved::Node(Node::Symlink { target }) => (FILE_ATTRIBUTE_READONLY, target.len() as u64),
    };
    info.file_attributes = attrs;
    info.reparse_tag = 0;
    info.file_size = size;
    info.allocation_size = size.div_ceil(4096) * 4096;
    info.creation_time = STORE_TIME;
    info.last_access_time = STORE_TIME;
    info.last_write_time = STORE_TIME;
    info.change_time = STORE_TIME;
    info.index_number = 0;
    info.hard_links = 0;
    info.ea_size = 0;
}

impl WinView {
    /// The closure of the process making the current request (valid only
    /// inside a WinFSP operation, where the calling process is known).
    fn caller_closure(&self) -> Arc<Closure> {
        // SAFETY: called from within a file system operation callback.
        let pid = unsafe { winfsp_sys::FspFileSystemOperationProcessIdF() };
        let table = ancestry_table(pid);
        match self.router.read() {
            Ok(r) => r.route(&table, pid),
            Err(poisoned) => poisoned.into_inner().route(&table, pid),
        }
    }

    fn resolve(&self, closure: &Closure, name: &U16CStr) -> winfsp::Result<Resolved> {
        let path = name.to_string_lossy();
        match closure.resolve(&path).map_err(status)? {
            Resolved::Node(Node::Symlink { .. }) => Err(STATUS_OBJECT_NAME_NOT_FOUND.into()),
            r => Ok(r),
        }
    }
}

/// A process's creation time (FILETIME as u64), if it can be opened.
fn start_time(pid: u32) -> Option<u64> {
    // SAFETY: plain Win32 calls; the handle is closed before returning.
    unsafe {
        let h = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, false, pid).ok()?;
        let (mut c, mut e, mut k, mut u) = (
            FILETIME::default(),
            FILETIME::default(),
            FILETIME::default(),
            FILETIME::default(),
        );
        let r = GetProcessTimes(h, &mut c, &mut e, &mut k, &mut u);
        let _ = CloseHandle(h);
        r.ok()?;
        Some(((c.dwHighDateTime as u64) << 32) | c.dwLowDateTime as u64)
    }
}

/// Every process as (pid, parent pid), from a Toolhelp snapshot.
fn parent_map() -> std::collections::HashMap<u32, u32> {
    let mut out = std::collections::HashMap::new();
    // SAFETY: plain Win32 calls; the entry is sized as required and the
    // snapshot handle is closed at the end.
    unsafe {
        let Ok(snap) = CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) else {
            return out;
        };
        let mut e = PROCESSENTRY32W {
            dwSize: std::mem::size_of::<PROCESSENTRY32W>() as u32,
            ..Default::default()
        };
        let mut ok = Process32FirstW(snap, &mut e).is_ok();
        while ok {
            out.insert(e.th32ProcessID, e.th32ParentProcessID);
            ok = Process32NextW(snap, &mut e).is_ok();
        }
        let _ = CloseHandle(snap);
    }
    out
}

/// The table [`Router::route`] needs for `pid`: its ancestry, with start
/// times (one snapshot, one `OpenProcess` per ancestor).
fn ancestry_table(pid: u32) -> ProcessTable {
    let parents = parent_map();
    let mut procs = Vec::new();
    let mut cur = pid;
    while let Some(&parent) = parents.get(&cur) {
        let Some(start) = start_time(cur) else { break };
        procs.push(ProcessInfo {
            pid: cur,
            parent,
            start,
        });
        if procs.len() > 4096 || procs.iter().any(|p| p.pid == parent) {
            break;
        }
        cur = parent;
    }
    ProcessTable::new(procs)
}

/// Every running process with its start time (for reaping runtimes).
pub fn snapshot_processes() -> ProcessTable {
    ProcessTable::new(parent_map().into_iter().filter_map(|(pid, parent)| {
        start_time(pid).map(|start| ProcessInfo { pid, parent, start })
    }))
}

impl FileSystemContext for WinView {
    type FileContext = Handle;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        _security_descriptor: Option<&mut [c_void]>,
        _reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let closure = self.caller_closure();
        let r = self.resolve(&closure, file_name)?;
        let mut info = FileInfo::default();
        fill(&mut info, &r);
        Ok(FileSecurity {
            reparse: false,
            sz_security_descriptor: 0,
            attributes: info.file_attributes,
        })
    }

    fn open(
        &self,
        file_name: &U16CStr,
        create_options: u32,
        _granted_access: winfsp_sys::FILE_ACCESS_RIGHTS,
        file_info: &mut OpenFileInfo,
    ) -> winfsp::Result<Handle> {
        let closure = self.caller_closure();
        let r = self.resolve(&closure, file_name)?;
        let file = match &r {
            Resolved::Node(Node::File { blob, .. }) => {
                if create_options & FILE_DIRECTORY_FILE != 0 {
                    return Err(STATUS_NOT_A_DIRECTORY.into());
                }
                Some(
                    closure
                        .odb
                        .open_blob(blob)
                        .map_err(|_| FspError::from(STATUS_IO_DEVICE_ERROR))?,
                )
            }
            _ => None,
        };
        fill(file_info.as_mut(), &r);
        Ok(Handle {
            closure,
            resolved: r,
            file,
            dir: DirBuffer::new(),
        })
    }

    fn close(&self, _context: Handle) {}

    fn get_file_info(&self, context: &Handle, file_info: &mut FileInfo) -> winfsp::Result<()> {
        fill(file_info, &context.resolved);
        Ok(())
    }

    fn read(&self, context: &Handle, buffer: &mut [u8], offset: u64) -> winfsp::Result<u32> {
        let Some(f) = &context.file else {
            return Err(STATUS_FILE_IS_A_DIRECTORY.into());
        };
        let n = f
            .seek_read(buffer, offset)
            .map_err(|_| FspError::from(STATUS_IO_DEVICE_ERROR))?;
        if n == 0 && !buffer.is_empty() {
            return Err(STATUS_END_OF_FILE.into());
        }
        Ok(n as u32)
    }

    fn read_directory(
        &self,
        context: &Handle,
        _pattern: Option<&U16CStr>,
        marker: DirMarker,
        buffer: &mut [u8],
    ) -> winfsp::Result<u32> {
        if matches!(context.resolved, Resolved::Node(Node::File { .. })) {
            return Err(STATUS_NOT_A_DIRECTORY.into());
        }
        if let Ok(lock) = context.dir.acquire(marker.is_none(), None) {
            let add = |name: &OsStr, r: &Resolved| -> winfsp::Result<()> {
                let mut di: DirInfo = DirInfo::new();
                fill(di.file_info_mut(), r);
                di.set_name(name)?;
                lock.write(&mut di)
            };
            if !matches!(context.resolved, Resolved::Root) {
                add(OsStr::new("."), &context.resolved)?;
                add(OsStr::new(".."), &Resolved::Root)?;
            }
            let entries = context.closure.list(&context.resolved).map_err(status)?;
            for e in entries {
                let name = String::from_utf8_lossy(&e.name).into_owned();
                add(OsStr::new(&name), &Resolved::Node(e.node))?;
            }
        }
        Ok(context.dir.read(marker, buffer))
    }

    fn get_volume_info(&self, out_volume_info: &mut VolumeInfo) -> winfsp::Result<()> {
        out_volume_info.total_size = 0;
        out_volume_info.free_size = 0;
        out_volume_info.set_volume_label("b3");
        Ok(())
    }
}

/// The mounted view of all runtimes; stopped and unmounted on drop.
pub struct WinMount {
    host: FileSystemHost<WinView>,
    router: Arc<RwLock<Router>>,
    stop_reaper: Arc<AtomicBool>,
}

impl WinMount {
    /// The runtimes this mount serves: add one when b3 starts its root
    /// process (with that process's pid and start time).
    pub fn router(&self) -> &Arc<RwLock<Router>> {
        &self.router
    }
}

impl Drop for WinMount {
    fn drop(&mut self) {
        self.stop_reaper.store(true, Ordering::Relaxed);
        self.host.stop();
        self.host.unmount();
    }
}

/// How often runtimes whose processes have all exited are dropped.
const REAP_EVERY: Duration = Duration::from_secs(2);

/// Mounts the view of every runtime over `odb` at `mount_point` (a drive
/// such as `X:` or an empty directory). It starts with no runtimes: every
/// process sees the empty view until one is added through
/// [`WinMount::router`].
pub fn mount(odb: Odb, mount_point: &OsStr) -> winfsp::Result<WinMount> {
    let _init = winfsp::winfsp_init()?;
    let mut params = VolumeParams::new();
    params
        .filesystem_name("b3-vfs")
        .case_sensitive_search(true)
        .case_preserved_names(true)
        .unicode_on_disk(true)
        .read_only_volume(true)
        .sector_size(4096)
        .sectors_per_allocation_unit(1)
        .max_component_length(255)
        // Objects never change: let the cache manager keep everything.
        .file_info_timeout(u32::MAX);
    let router = Arc::new(RwLock::new(Router::new(Closure::new(
        odb,
        Vec::<String>::new(),
    ))));
    let ctx = WinView {
        router: router.clone(),
    };
    let mut host = FileSystemHost::<WinView, FineGuard>::new(params, ctx)?;
    host.start()?;
    host.mount(mount_point)?;
    let stop_reaper = Arc::new(AtomicBool::new(false));
    {
        let (router, stop) = (router.clone(), stop_reaper.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(REAP_EVERY);
                let table = snapshot_processes();
                if let Ok(mut r) = router.write() {
                    r.reap(&table);
                }
            }
        });
    }
    Ok(WinMount {
        host,
        router,
        stop_reaper,
    })
}
