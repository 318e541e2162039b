//! Cleaning a finished build's work directory so that the next build of
//! the same realisation can run in it (see
//! [`crate::job::WorkDirStock::recycle`]), instead of removing it and
//! making a new one: on the store's file system every directory made and
//! removed costs inode and block work (and, mounted with `discard`, a block
//! discard), on the CPU the builds need.
//!
//! The next build must find nothing of the last one: the contents of
//! `build/`, `store/`, `scratch/` (the overlay's `work` tree, which it
//! refuses to mount again while `work/incompat/volatile` is there) and
//! `root/` are removed, whatever their permissions, without following
//! symbolic links; each directory gets back the owner, mode and extended
//! attributes of a fresh one (those of the work directory itself, made the
//! same way and never shown to a build). Anything else found there, or a
//! step that fails, makes the directory unfit, and it is removed as before.
//!
//! In the bind layout (no overlay), the mount points the last build made
//! in `store/` for its inputs stay when they are still what the sandbox
//! made (empty, with its modes and owner): a build's inputs are mostly the
//! last one's, and each point kept is one fewer to make, on the store's
//! file system, on the next build's critical path. The builder could not
//! touch them: each was covered by a read-only bind for its whole run. The
//! next build removes those it does not need before its builder starts
//! (`SandboxSpec::made_points`).
//!
//! After an overlay, `store/` and `scratch/` come back as new directories,
//! not emptied ones. An overlay marks the directories it uses as layers,
//! and the last build's
//! overlay can outlive the release of its sandbox's namespaces for a while
//! (the kernel frees unmounted trees after an RCU grace period). An overlay
//! mounted on the same directories meanwhile makes the kernel warn that
//! they are "in-use" by two mounts; new directories are never in use.
//! (Every overlay leaves its `work` directory in `scratch/`; without one,
//! the directories are emptied in place: each new inode costs.)

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use crate::job::{make_owner_writable, remove_tree};
use crate::sandbox::MadePoint;

/// The directories a work directory may hold, and whether each must be
/// there (see [`crate::job::WorkDir`]).
const PARTS: [(&str, bool); 4] = [
    ("build", true),
    ("store", true),
    ("scratch", false),
    ("root", false),
];

/// A directory whose own size grew past this (a build made many entries in
/// it) is not recycled: file systems rarely shrink a directory, and the
/// builds after would list the big one.
const MAX_DIR_SIZE: u64 = 64 * 1024;

/// The parts an overlay may have used as its layers (see the module docs).
const LAYERS: [&str; 2] = ["store", "scratch"];

/// Empties the work directory `work` and resets its parts as described in
/// the module docs, keeping in `store/` the points of `point_names` (the
/// last build's inputs, when its points were made there), which it
/// returns. An error leaves it unfit for another build.
pub(crate) fn clean(
    work: &Path,
    point_names: &[String],
) -> io::Result<BTreeMap<String, MadePoint>> {
    if !cfg!(unix) {
        // Only Unix owners, modes and attributes are reset here.
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "work directories are recycled on Unix only",
        ));
    }
    let top = std::fs::symlink_metadata(work)?;
    let overlaid = std::fs::symlink_metadata(work.join("scratch/work")).is_ok();
    let mut kept = BTreeMap::new();
    let mut required = 0;
    for entry in std::fs::read_dir(work)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        let Some((_, must)) = PARTS.iter().find(|(n, _)| name == *n) else {
            return Err(unfit(&path, "is not part of a work directory"));
        };
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_dir() {
            return Err(unfit(&path, "is not a directory"));
        }
        if meta.len() > MAX_DIR_SIZE {
            return Err(unfit(&path, "has grown too large"));
        }
        make_owner_writable(&path, &meta)?;
        for e in std::fs::read_dir(&path)? {
            let e = e?;
            if name == "store" && !overlaid {
                let n = e.file_name();
                let wanted = n
                    .to_str()
                    .is_some_and(|n| point_names.iter().any(|p| p == n));
                if let Some(kind) = wanted.then(|| point_kind(&e.path(), &top)).flatten() {
                    kept.insert(n.to_string_lossy().into_owned(), kind);
                    continue;
                }
            }
            remove_tree(&e.path())?;
        }
        if overlaid && LAYERS.iter().any(|l| name == *l) {
            renew(work, &path)?;
        }
        reset(&path, work, &top)?;
        required += usize::from(*must);
    }
    if required != PARTS.iter().filter(|(_, must)| *must).count() {
        return Err(unfit(work, "lacks its build or store directory"));
    }
    Ok(kept)
}

/// What the sandbox made at `path` as a mount point, if it is still just
/// that: an empty directory (0555) or an empty file (0444) owned as the
/// fresh directory `top` is.
#[cfg(unix)]
fn point_kind(path: &Path, top: &std::fs::Metadata) -> Option<MadePoint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    if (m.uid(), m.gid()) != (top.uid(), top.gid()) {
        return None;
    }
    let mode = m.mode() & 0o7777;
    if m.is_dir() && mode == 0o555 {
        let empty = std::fs::read_dir(path).ok()?.next().is_none();
        return empty.then_some(MadePoint::Dir);
    }
    if m.file_type().is_file() && mode == 0o444 && m.len() == 0 && m.nlink() == 1 {
        return Some(MadePoint::File);
    }
    None
}

#[cfg(not(unix))]
fn point_kind(_: &Path, _: &std::fs::Metadata) -> Option<MadePoint> {
    None
}

/// Replaces the empty directory `part` of `work` with a new one.
fn renew(work: &Path, part: &Path) -> io::Result<()> {
    // A name that `clean` does not accept: one left by a crash here makes
    // the work directory unfit.
    let new = work.join(".renewed");
    std::fs::create_dir(&new)?;
    // Renaming a directory over an empty one replaces it.
    std::fs::rename(&new, part).inspect_err(|_| {
        let _ = std::fs::remove_dir(&new);
    })
}

fn unfit(path: &Path, why: &str) -> io::Error {
    io::Error::other(format!("{} {why}", path.display()))
}

/// Gives `dir` the owner, mode and extended attributes of the fresh
/// directory `top` (metadata `top_meta`).
#[cfg(unix)]
fn reset(dir: &Path, top: &Path, top_meta: &std::fs::Metadata) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::symlink_metadata(dir)?;
    if (meta.uid(), meta.gid()) != (top_meta.uid(), top_meta.gid()) {
        std::os::unix::fs::lchown(dir, Some(top_meta.uid()), Some(top_meta.gid()))?;
    }
    // After the owner: changing it may clear set-id bits.
    let mode = top_meta.mode() & 0o7777;
    if meta.mode() & 0o7777 != mode || (meta.uid(), meta.gid()) != (top_meta.uid(), top_meta.gid())
    {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    }
    xattrs::drop_added(dir, top)
}

#[cfg(not(unix))]
fn reset(_: &Path, _: &Path, _: &std::fs::Metadata) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Extended attributes (user attributes, ACLs) a build may set on
/// `/build` or on the store directory, which the next build could read.
#[cfg(target_os = "linux")]
mod xattrs {
    use std::ffi::CString;
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    fn cpath(p: &Path) -> io::Result<CString> {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
    }

    /// The attribute names of `p` (not following a symbolic link).
    fn names(p: &CString) -> io::Result<Vec<Vec<u8>>> {
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: `buf` is writable for its length; `p` is NUL-terminated.
            let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n >= 0 {
                buf.truncate(n as usize);
                return Ok(buf
                    .split(|b| *b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect());
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
                Some(libc::ENOTSUP) => return Ok(Vec::new()),
                _ => return Err(e),
            }
        }
    }

    /// Removes the attributes of `dir` that `top` does not have.
    pub(super) fn drop_added(dir: &Path, top: &Path) -> io::Result<()> {
        let d = cpath(dir)?;
        let added = names(&d)?;
        if added.is_empty() {
            return Ok(());
        }
        let fresh = names(&cpath(top)?)?;
        for name in added.iter().filter(|n| !fresh.contains(n)) {
            let n = CString::new(name.as_slice()).map_err(|_| io::ErrorKind::InvalidData)?;
            // SAFETY: both are NUL-terminated strings.
            if unsafe { libc::lremovexattr(d.as_ptr(), n.as_ptr()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

#[cfg(all(unix, not(target_os = "linux")))]
mod xattrs {
    pub(super) fn drop_added(_: &std::path::Path, _: &std::path::Path) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::job::WorkDir;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    fn entries(p: &Path) -> usize {
        std::fs::read_dir(p).unwrap().count()
    }

    fn work_dir(parent: &Path) -> WorkDir {
        let w = WorkDir::create(parent, ".b3-test-", "t").unwrap();
        std::fs::create_dir(w.scratch()).unwrap();
        w
    }

    #[test]
    fn an_overlays_layers_come_back_as_new_directories_and_the_rest_is_emptied_in_place() {
        let parent = tempfile::tempdir().unwrap();
        let w = work_dir(parent.path());
        let ino = |p: &Path| std::fs::symlink_metadata(p).unwrap().ino();
        let before = [ino(&w.build()), ino(&w.store()), ino(&w.scratch())];
        // Without an overlay (no `work` in scratch/), emptied in place.
        std::fs::write(w.store().join("abc-out"), "x").unwrap();
        clean(w.path(), &[]).unwrap();
        let plain = [ino(&w.build()), ino(&w.store()), ino(&w.scratch())];
        assert_eq!(plain, before);
        // After one, renewed.
        std::fs::create_dir_all(w.scratch().join("work/incompat/volatile")).unwrap();
        std::fs::write(w.store().join("abc-out"), "x").unwrap();
        clean(w.path(), &[]).unwrap();
        let after = [ino(&w.build()), ino(&w.store()), ino(&w.scratch())];
        assert_eq!(after[0], before[0]);
        assert_ne!(after[1], before[1]);
        assert_ne!(after[2], before[2]);
        for d in [w.store(), w.scratch()] {
            assert_eq!(entries(&d), 0, "{}", d.display());
            assert_eq!(mode(&d), mode(w.path()), "{}", d.display());
        }
        // Nothing else is left in the work directory.
        assert_eq!(entries(w.path()), 3);
        clean(w.path(), &[]).unwrap();
    }

    #[test]
    fn the_last_builds_untouched_mount_points_stay_and_everything_else_goes() {
        let parent = tempfile::tempdir().unwrap();
        let w = work_dir(parent.path());
        let s = w.store();
        let point = |name: &str, dir: bool, mode: u32| {
            let p = s.join(name);
            if dir {
                std::fs::create_dir(&p).unwrap();
            } else {
                std::fs::write(&p, "").unwrap();
            }
            std::fs::set_permissions(&p, PermissionsExt::from_mode(mode)).unwrap();
        };
        point("a-dir", true, 0o555);
        point("b-file", false, 0o444);
        // Not what the sandbox made: wrong modes, contents, a symlink.
        point("c-writable", true, 0o755);
        point("d-full", true, 0o755);
        std::fs::write(s.join("d-full/x"), "x").unwrap();
        std::fs::set_permissions(s.join("d-full"), PermissionsExt::from_mode(0o555)).unwrap();
        std::fs::write(s.join("e-data"), "x").unwrap();
        std::fs::set_permissions(s.join("e-data"), PermissionsExt::from_mode(0o444)).unwrap();
        std::os::unix::fs::symlink("a-dir", s.join("f-link")).unwrap();
        // A point of an input the last build did not have, and an output.
        point("g-other", true, 0o555);
        point("h-out", false, 0o444);
        let names: Vec<String> = [
            "a-dir",
            "b-file",
            "c-writable",
            "d-full",
            "e-data",
            "f-link",
        ]
        .map(String::from)
        .to_vec();
        let kept = clean(w.path(), &names).unwrap();
        assert_eq!(
            kept,
            BTreeMap::from([
                ("a-dir".to_string(), MadePoint::Dir),
                ("b-file".to_string(), MadePoint::File),
            ])
        );
        let mut left: Vec<String> = std::fs::read_dir(&s)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a-dir", "b-file"]);
        // Without names, or after an overlay, nothing stays.
        assert!(clean(w.path(), &[]).unwrap().is_empty());
        assert_eq!(entries(&s), 0);
        point("a-dir", true, 0o555);
        std::fs::create_dir_all(w.scratch().join("work")).unwrap();
        assert!(clean(w.path(), &names).unwrap().is_empty());
        assert_eq!(entries(&w.store()), 0);
    }

    #[test]
    fn read_only_leftovers_and_nested_dirs_are_removed_and_modes_reset() {
        let parent = tempfile::tempdir().unwrap();
        let w = work_dir(parent.path());
        let fresh = mode(w.path());
        let deep = w.build().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("f"), "x").unwrap();
        std::fs::write(w.build().join(".attrs.json"), "{}").unwrap();
        let locked = w.build().join("a/b");
        std::fs::set_permissions(deep.join("f"), PermissionsExt::from_mode(0o400)).unwrap();
        std::fs::set_permissions(&deep, PermissionsExt::from_mode(0o500)).unwrap();
        std::fs::set_permissions(&locked, PermissionsExt::from_mode(0o000)).unwrap();
        // An output left behind, read-only, and an input's mount point.
        let out = w.store().join("abc-out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(out.join("g"), "y").unwrap();
        std::fs::set_permissions(&out, PermissionsExt::from_mode(0o555)).unwrap();
        std::fs::create_dir(w.store().join("def-input")).unwrap();
        // What the overlay leaves in its work directory.
        let volatile = w.scratch().join("work/incompat/volatile");
        std::fs::create_dir_all(&volatile).unwrap();
        std::fs::set_permissions(w.scratch().join("work"), PermissionsExt::from_mode(0o000))
            .unwrap();
        // What the sandbox does to the directories it shows.
        std::fs::set_permissions(w.store(), PermissionsExt::from_mode(0o1775)).unwrap();
        std::fs::set_permissions(w.build(), PermissionsExt::from_mode(0o500)).unwrap();

        clean(w.path(), &[]).unwrap();
        for d in [w.build(), w.store(), w.scratch()] {
            assert_eq!(entries(&d), 0, "{}", d.display());
            assert_eq!(mode(&d), fresh, "{}", d.display());
        }
        assert_eq!(entries(w.path()), 3);
    }

    #[test]
    fn symlinks_pointing_outside_are_removed_and_never_followed() {
        let parent = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let victim_dir = outside.path().join("dir");
        std::fs::create_dir(&victim_dir).unwrap();
        std::fs::write(victim_dir.join("keep"), "k").unwrap();
        std::fs::set_permissions(&victim_dir, PermissionsExt::from_mode(0o500)).unwrap();
        let victim_file = outside.path().join("file");
        std::fs::write(&victim_file, "k").unwrap();
        std::fs::set_permissions(&victim_file, PermissionsExt::from_mode(0o400)).unwrap();
        let w = work_dir(parent.path());
        let sub = w.build().join("sub");
        std::fs::create_dir(&sub).unwrap();
        for (dir, n) in [(w.build(), "l"), (sub.clone(), "l2"), (w.store(), "l3")] {
            std::os::unix::fs::symlink(&victim_dir, dir.join(format!("{n}-dir"))).unwrap();
            std::os::unix::fs::symlink(&victim_file, dir.join(format!("{n}-file"))).unwrap();
        }
        std::os::unix::fs::symlink("/", w.build().join("root")).unwrap();

        clean(w.path(), &[]).unwrap();
        assert_eq!(entries(&w.build()), 0);
        assert_eq!(entries(&w.store()), 0);
        assert_eq!(
            std::fs::read_to_string(victim_dir.join("keep")).unwrap(),
            "k"
        );
        assert_eq!(mode(&victim_dir), 0o500);
        assert_eq!(mode(&victim_file), 0o400);
        assert_eq!(std::fs::read_to_string(&victim_file).unwrap(), "k");
        std::fs::set_permissions(&victim_dir, PermissionsExt::from_mode(0o700)).unwrap();
    }

    #[test]
    fn a_work_dir_with_something_unexpected_is_unfit() {
        let parent = tempfile::tempdir().unwrap();
        let w = work_dir(parent.path());
        std::fs::write(w.path().join("stray"), "").unwrap();
        assert!(clean(w.path(), &[]).is_err());

        let w = work_dir(parent.path());
        std::fs::remove_dir(w.build()).unwrap();
        std::os::unix::fs::symlink(parent.path(), w.build()).unwrap();
        assert!(clean(w.path(), &[]).is_err());
        // The symlink's target was not touched.
        assert!(parent.path().is_dir());

        let w = work_dir(parent.path());
        std::fs::remove_dir(w.store()).unwrap();
        assert!(clean(w.path(), &[]).is_err());
    }

    #[test]
    fn a_directory_grown_large_is_unfit() {
        let parent = tempfile::tempdir().unwrap();
        let w = work_dir(parent.path());
        let big = "x".repeat(200);
        for i in 0..2000 {
            std::fs::write(w.build().join(format!("{big}{i}")), "").unwrap();
        }
        if std::fs::metadata(w.build()).unwrap().len() <= MAX_DIR_SIZE {
            // A file system that reports no size for directories (tmpfs).
            return;
        }
        assert!(clean(w.path(), &[]).is_err());
    }

    #[test]
    fn owners_and_added_attributes_are_reset() {
        let parent = tempfile::tempdir().unwrap();
        let w = work_dir(parent.path());
        let top = std::fs::symlink_metadata(w.path()).unwrap();
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::lchown(w.build(), Some(872_415_232), Some(872_415_232)).unwrap();
            std::os::unix::fs::lchown(w.store(), Some(65534), Some(65534)).unwrap();
        }
        #[cfg(target_os = "linux")]
        let set = {
            let p = std::ffi::CString::new(w.build().as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: NUL-terminated strings and a readable value.
            unsafe {
                libc::lsetxattr(
                    p.as_ptr(),
                    c"user.b3-test".as_ptr(),
                    b"left".as_ptr().cast(),
                    4,
                    0,
                ) == 0
            }
        };
        clean(w.path(), &[]).unwrap();
        for d in [w.build(), w.store()] {
            let m = std::fs::symlink_metadata(&d).unwrap();
            assert_eq!((m.uid(), m.gid()), (top.uid(), top.gid()));
        }
        #[cfg(target_os = "linux")]
        if set {
            let p = std::ffi::CString::new(w.build().as_os_str().as_encoded_bytes()).unwrap();
            let mut buf = [0u8; 16];
            // SAFETY: `buf` is writable for its length.
            let n = unsafe {
                libc::lgetxattr(
                    p.as_ptr(),
                    c"user.b3-test".as_ptr(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            assert_eq!(n, -1, "the attribute is still there");
        }
    }
}
