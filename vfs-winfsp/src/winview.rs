//! The WinFSP file system: read-only, served from the object database.
//! Directory listings go through WinFSP's directory buffer; file reads
//! `seek_read` the blob file opened at `open`.

use std::ffi::{c_void, OsStr};
use std::fs::File;
use std::os::windows::fs::FileExt;

use b3_vfs::odb::{Node, Odb};
use windows::Win32::Foundation::{
    STATUS_END_OF_FILE, STATUS_FILE_IS_A_DIRECTORY, STATUS_IO_DEVICE_ERROR, STATUS_NOT_A_DIRECTORY,
    STATUS_OBJECT_NAME_NOT_FOUND,
};
use winfsp::filesystem::{
    DirBuffer, DirInfo, DirMarker, FileInfo, FileSecurity, FileSystemContext, OpenFileInfo,
    VolumeInfo, WideNameInfo,
};
use winfsp::host::{FileSystemHost, FineGuard, VolumeParams};
use winfsp::{FspError, U16CStr};

use crate::resolve::{Closure, ResolveError, Resolved};

const FILE_ATTRIBUTE_READONLY: u32 = 0x0000_0001;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x0000_0010;
const FILE_DIRECTORY_FILE: u32 = 0x0000_0001;
/// 1970-01-01T00:00:01Z (Nix's canonical mtime) in 100 ns units since 1601.
const STORE_TIME: u64 = 116_444_736_000_000_000 + 10_000_000;

/// One open file or directory.
pub struct Handle {
    resolved: Resolved,
    file: Option<File>,
    dir: DirBuffer,
}

/// The file system context of one mount.
pub struct WinView {
    closure: Closure,
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
    fn resolve(&self, name: &U16CStr) -> winfsp::Result<Resolved> {
        let path = name.to_string_lossy();
        match self.closure.resolve(&path).map_err(status)? {
            Resolved::Node(Node::Symlink { .. }) => Err(STATUS_OBJECT_NAME_NOT_FOUND.into()),
            r => Ok(r),
        }
    }
}

impl FileSystemContext for WinView {
    type FileContext = Handle;

    fn get_security_by_name(
        &self,
        file_name: &U16CStr,
        _security_descriptor: Option<&mut [c_void]>,
        _reparse_point_resolver: impl FnOnce(&U16CStr) -> Option<FileSecurity>,
    ) -> winfsp::Result<FileSecurity> {
        let r = self.resolve(file_name)?;
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
        let r = self.resolve(file_name)?;
        let file = match &r {
            Resolved::Node(Node::File { blob, .. }) => {
                if create_options & FILE_DIRECTORY_FILE != 0 {
                    return Err(STATUS_NOT_A_DIRECTORY.into());
                }
                Some(
                    self.closure
                        .odb
                        .open_blob(blob)
                        .map_err(|_| FspError::from(STATUS_IO_DEVICE_ERROR))?,
                )
            }
            _ => None,
        };
        fill(file_info.as_mut(), &r);
        Ok(Handle {
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
            let entries = self.closure.list(&context.resolved).map_err(status)?;
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

/// A mounted Windows view; unmounted and stopped on drop.
pub struct WinMount {
    host: FileSystemHost<WinView>,
}

impl Drop for WinMount {
    fn drop(&mut self) {
        self.host.stop();
        self.host.unmount();
    }
}

/// Mounts the closure `names` of `odb` at `mount_point` (a drive such as
/// `X:` or an empty directory).
pub fn mount<I, S>(odb: Odb, names: I, mount_point: &OsStr) -> winfsp::Result<WinMount>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
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
    let ctx = WinView {
        closure: Closure::new(odb, names),
    };
    let mut host = FileSystemHost::<WinView, FineGuard>::new(params, ctx)?;
    host.start()?;
    host.mount(mount_point)?;
    Ok(WinMount { host })
}
