//! Turns a [`SandboxSpec`] into the ordered list of set-up steps the cloned
//! child executes ([`Op`]), and describes steps for error messages.
//!
//! The layout mirrors what Nix gives a builder: a root of its own (a tmpfs
//! here, mode 0750), `/nix/store` (mode 1775) holding only the input paths
//! (read-only binds) and whatever the builder writes (its outputs), `/build`
//! (0700), `/tmp` (1777), `/etc/{passwd,group,hosts}`, a minimal `/dev`
//! (host device nodes, a new devpts, a tmpfs `/dev/shm`), a new `/proc`, and
//! the extra sandbox paths. Everything the child needs is computed here, in
//! the parent, because the child may not allocate.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::child::{self, InputBind, Op};
use crate::platform::{OsError, OsErrorKind};
use crate::sandbox::{MadePoint, SandboxError, SandboxPath, SandboxSpec, SANDBOX_BUILD_DIR};

pub(super) struct Prepared {
    /// Set-up shared by every build with the same template (see [`prepare`]).
    pub early: Vec<Op>,
    /// Set-up of this build.
    pub late: Vec<Op>,
    pub builder: CString,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
}

const PASSWD: &str = "root:x:0:0:Nix build user:/build:/noshell\n\
nixbld:x:1000:100:Nix build user:/build:/noshell\n\
nobody:x:65534:65534:Nobody:/:/noshell\n";
const GROUP: &str = "root:x:0:\nnixbld:!:100:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";
const NSSWITCH: &str = "hosts: files dns\nservices: files\n";
/// Where the physical store is mounted read-only while the inputs are
/// bound from it (a directory of the root tmpfs, removed before the build).
const STAGE: &str = "/.b3-stage";
const DEVICES: &[&str] = &["full", "null", "random", "tty", "urandom", "zero"];
/// Host files a fixed-output build sees so it can resolve names.
const FOD_ETC: &[&str] = &["resolv.conf", "services", "hosts"];

fn invalid(msg: String) -> SandboxError {
    SandboxError::InvalidSpec(msg)
}

fn cstr_bytes(b: &[u8], what: &str) -> Result<CString, SandboxError> {
    CString::new(b).map_err(|_| invalid(format!("{what} contains a NUL byte")))
}

fn cpath(p: &Path) -> Result<CString, SandboxError> {
    // The description is made only for the error: a plan converts a few
    // paths per input, on each build's critical path.
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| invalid(format!("path {} contains a NUL byte", p.display())))
}

/// A path under the (not yet pivoted) sandbox root.
fn under(root: &Path, inside: &str) -> PathBuf {
    root.join(inside.trim_start_matches('/'))
}

/// Kind of a host path, for choosing a mount point (dir or file) or a copy
/// (symlinks cannot be bind-mounted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
}

fn kind_of(p: &Path) -> Result<Option<Kind>, SandboxError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => {
            let t = std::fs::read_link(p).map_err(|e| {
                SandboxError::Setup(OsError::from_io(
                    format!("reading link {}", p.display()),
                    &e,
                ))
            })?;
            Ok(Some(Kind::Symlink(t)))
        }
        Ok(m) if m.is_dir() => Ok(Some(Kind::Dir)),
        Ok(_) => Ok(Some(Kind::File)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(SandboxError::Setup(OsError::from_io(
            format!("inspecting {}", p.display()),
            &e,
        ))),
    }
}

/// The kinds of the store paths a realisation's pre-made sandboxes have
/// exposed. A valid store path never changes, and a build's inputs are
/// rooted while it runs, so each is inspected once, not at every build
/// that needs it (a chain's step needs every path before it).
#[derive(Debug, Default)]
pub(super) struct KindCache(std::sync::Mutex<std::collections::HashMap<PathBuf, Kind>>);

impl KindCache {
    /// As [`kind_of`], answered from memory for a path seen before.
    fn kind_of(&self, p: &Path) -> Result<Option<Kind>, SandboxError> {
        let lock = || self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = lock().get(p) {
            return Ok(Some(k.clone()));
        }
        let k = kind_of(p)?;
        if let Some(k) = &k {
            lock().insert(p.to_path_buf(), k.clone());
        }
        Ok(k)
    }
}

/// `mkdir -p` of every ancestor of `inside` below the root (not `inside`).
fn mkdir_parents(ops: &mut Vec<Op>, root: &Path, inside: &str) -> Result<(), SandboxError> {
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = inside.split('/').filter(|c| !c.is_empty()).collect();
    for c in comps.iter().take(comps.len().saturating_sub(1)) {
        cur.push(c);
        ops.push(Op::Mkdir {
            path: cpath(&cur)?,
            mode: 0o755,
        });
    }
    Ok(())
}

/// Exposes host `source` at `target` (a path under the root), read-only.
fn expose(ops: &mut Vec<Op>, kind: Kind, source: &Path, target: &Path) -> Result<(), SandboxError> {
    let mut points = Vec::new();
    let mut mounts = Vec::new();
    expose_split(&mut points, &mut mounts, kind, source, target)?;
    ops.extend(points);
    ops.extend(mounts);
    Ok(())
}

/// Like [`expose`], but the mount point (or the symlink that stands for a
/// symlink) goes to `points` and the mount to `ops`.
fn expose_split(
    points: &mut Vec<Op>,
    ops: &mut Vec<Op>,
    kind: Kind,
    source: &Path,
    target: &Path,
) -> Result<(), SandboxError> {
    match kind {
        Kind::Dir => {
            points.push(Op::Mkdir {
                path: cpath(target)?,
                mode: 0o555,
            });
            ops.push(Op::BindReadOnly {
                source: cpath(source)?,
                target: cpath(target)?,
                recursive: true,
            });
        }
        Kind::File => {
            points.push(Op::Touch {
                path: cpath(target)?,
            });
            ops.push(Op::BindReadOnly {
                source: cpath(source)?,
                target: cpath(target)?,
                recursive: false,
            });
        }
        Kind::Symlink(to) => points.push(Op::Symlink {
            target: cpath(&to)?,
            link: cpath(target)?,
        }),
    }
    Ok(())
}

/// The overlay's mount options when the store can be an overlay (its lower
/// layer the tmpfs holding the inputs' mount points, its upper layer the
/// host directory that receives the outputs): then the mount points cost no
/// inodes on the host's file system, nor their removal afterwards. `None`
/// (bind the host directory and make the mount points in it) without a
/// scratch directory (`work`) or when a path cannot be written in overlay
/// options.
fn overlay_options(
    lower: &Path,
    upper: &Path,
    work: Option<&Path>,
) -> Result<Option<CString>, SandboxError> {
    let Some(work) = work else {
        return Ok(None);
    };
    let paths = [lower, upper, work];
    let plain = |p: &&Path| {
        !p.as_os_str()
            .as_bytes()
            .iter()
            .any(|b| matches!(b, b',' | b':' | b'\\' | b'=') || b.is_ascii_whitespace())
    };
    if !paths.iter().all(plain) {
        return Ok(None);
    }
    let mut o = b"lowerdir=".to_vec();
    o.extend_from_slice(lower.as_os_str().as_bytes());
    o.extend_from_slice(b",upperdir=");
    o.extend_from_slice(upper.as_os_str().as_bytes());
    o.extend_from_slice(b",workdir=");
    o.extend_from_slice(work.as_os_str().as_bytes());
    // `volatile`: no syncs of the upper layer, at unmount least of all (a
    // syncfs of the host's file system per build); b3 copies the outputs
    // into the store, which makes them durable itself.
    o.extend_from_slice(b",userxattr,volatile");
    cstr_bytes(&o, "overlay options").map(Some)
}

fn check_spec(spec: &SandboxSpec, root: &Path) -> Result<(), SandboxError> {
    if !spec.logical_store_dir.starts_with('/') || spec.logical_store_dir.len() < 2 {
        return Err(invalid(format!(
            "store directory '{}' is not an absolute path",
            spec.logical_store_dir
        )));
    }
    if !spec.builder.starts_with('/') {
        return Err(invalid(format!(
            "builder '{}' is not an absolute path",
            spec.builder
        )));
    }
    for input in &spec.inputs {
        if input.is_empty() || input.contains('/') || input == "." || input == ".." {
            return Err(invalid(format!(
                "input '{input}' is not a store path base name"
            )));
        }
    }
    if !root.is_dir() {
        return Err(invalid(format!(
            "root mount point {} is not a directory",
            root.display()
        )));
    }
    if spec.scratch_dir.is_some() && !spec.made_points.is_empty() {
        return Err(invalid(
            "the store directory of an overlay must hold no mount points".into(),
        ));
    }
    Ok(())
}

/// Gives what the set-up creates to the build user, as Nix's chroot does.
/// Mount points hidden under binds are left alone.
fn chown_created(ops: Vec<Op>, to: (u32, u32)) -> Result<Vec<Op>, SandboxError> {
    Ok(chown_made(ops, to, |op| match op {
        Op::Mkdir { path, .. } | Op::WriteFile { path, .. } => Some(path.clone()),
        Op::Symlink { link, .. } => Some(link.clone()),
        // A fresh tmpfs's root belongs to whoever mounted it.
        Op::Mount {
            target,
            fstype: Some(fs),
            ..
        } if fs.as_bytes() == b"tmpfs" => Some(target.clone()),
        Op::Devpts { ptmx, .. } => Some(ptmx.clone()),
        _ => None,
    }))
}

/// [`chown_created`] for the inputs' mount points: only their symlinks.
fn chown_symlinks(points: Vec<Op>, to: (u32, u32)) -> Vec<Op> {
    chown_made(points, to, |op| match op {
        Op::Symlink { link, .. } => Some(link.clone()),
        _ => None,
    })
}

/// Follows each step after which `made` names a path with a chown of that
/// path to `to`.
fn chown_made(ops: Vec<Op>, to: (u32, u32), made: impl Fn(&Op) -> Option<CString>) -> Vec<Op> {
    let mut out = Vec::with_capacity(ops.len() * 2);
    for op in ops {
        let path = made(&op);
        out.push(op);
        if let Some(path) = path {
            out.push(Op::Chown {
                path,
                uid: to.0,
                gid: to.1,
            });
        }
    }
    out
}

/// Descriptors through which a pre-made sandbox, already pivoted into its
/// root, reaches the host for its late steps (see [`prepare_pooled`]):
/// numbers in the sandbox process's descriptor table, chosen by the pool.
#[derive(Debug, Clone)]
pub(super) struct HostLayers {
    /// The root tmpfs's store directory, the overlay's lower layer.
    pub lower: i32,
    /// The physical store, read-only: where the inputs are bound from.
    pub stage: i32,
    /// `work_parent`, writable: the builds' work directories.
    pub work: i32,
    /// The host directory holding the work directories.
    pub work_parent: PathBuf,
}

impl HostLayers {
    /// The sandbox process's path of `rel` under descriptor `fd`.
    fn path(fd: i32, rel: &Path) -> PathBuf {
        let base = PathBuf::from(format!("/proc/self/fd/{fd}"));
        if rel.as_os_str().is_empty() {
            base
        } else {
            base.join(rel)
        }
    }

    /// `host` (a directory of a build's work directory) as the sandbox
    /// process reaches it.
    fn work_path(&self, host: &Path, what: &str) -> Result<PathBuf, SandboxError> {
        let rel = host.strip_prefix(&self.work_parent).map_err(|_| {
            invalid(format!(
                "{what} {} is not under {}",
                host.display(),
                self.work_parent.display()
            ))
        })?;
        Ok(Self::path(self.work, rel))
    }
}

/// `chown_to`: give the created files and directories to this (sandbox)
/// uid/gid (needed when the set-up runs as a different id than the build).
///
/// A fresh sandbox runs [`Prepared::early`] and then [`Prepared::late`] in
/// one go: the root tmpfs, `/dev`, `/proc`, `/etc`, `/tmp`, the extra
/// sandbox paths, host and domain name, loopback and a read-only stage of
/// the physical store; then the build's own part: the inputs (bound from
/// the stage, which then goes), the outputs' directory, `/build`, extra
/// paths inside the store, and the pivot into the root. `root` is
/// `spec.root_dir`.
pub(super) fn prepare(
    spec: &SandboxSpec,
    root: &Path,
    chown_to: Option<(u32, u32)>,
) -> Result<Prepared, SandboxError> {
    check_spec(spec, root)?;
    check_dirs(spec)?;
    let store = under(root, &spec.logical_store_dir);
    let stage = under(root, STAGE);
    let layers = Op::Stage {
        physical: cpath(&spec.physical_store_dir)?,
        stage: cpath(&stage)?,
    };
    let early = early_ops(spec, root, layers, chown_to, NetSetup::Own)?;

    let mut late = vec![Op::Chmod {
        path: cpath(&spec.store_dir_host)?,
        mode: 0o1775,
    }];
    let ((_, points), binds) = input_points(spec, chown_to, &store, None, &stage, None)?;
    let lower = store.clone();
    late.push(Op::StoreLayer {
        target: cpath(&store)?,
        upper: cpath(&spec.store_dir_host)?,
        overlay: overlay_options(&lower, &spec.store_dir_host, spec.scratch_dir.as_deref())?,
        lower_points: None,
        points,
    });
    late.push(Op::BindInputs {
        stage: cpath(&stage)?,
        binds,
        in_root: true,
    });
    late.push(Op::Chmod {
        path: cpath(&spec.build_dir)?,
        mode: 0o700,
    });
    late.push(Op::Mount {
        source: Some(cpath(&spec.build_dir)?),
        target: cpath(&under(root, SANDBOX_BUILD_DIR))?,
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    });
    let mut in_store = Vec::new();
    for p in spec.extra_paths.iter().filter(|p| in_store_dir(spec, p)) {
        extra_path(&mut in_store, root, p)?;
    }
    if let Some(to) = chown_to {
        in_store = chown_created(in_store, to)?;
    }
    late.extend(in_store);
    late.push(Op::PivotRoot {
        new_root: cpath(root)?,
    });
    late.push(Op::Chdir(cstr_bytes(
        SANDBOX_BUILD_DIR.as_bytes(),
        "build dir",
    )?));
    exec_parts(spec, early, late)
}

/// Whether a sandbox without network access sets up the network namespace
/// it runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NetSetup {
    /// A new one, made with the sandbox: its loopback is brought up.
    Own,
    /// One kept for sandboxes ([`super::netns`]), set up already.
    Kept,
}

/// The early steps of a pre-made sandbox, run ahead of time: those of a
/// fresh sandbox, except that instead of a stage of the store it stacks
/// its [`HostLayers`] on the store directory (the tmpfs directory itself,
/// then a read-only bind of the physical store, then a writable bind of the
/// work directories' parent, each kept open as a descriptor), and it ends
/// with the pivot into the root. The old root (the host's mounts) thus
/// leaves the sandbox before any build is handed to it, and the build's
/// late steps ([`prepare_pooled_late`]) unmount nothing: an unmount waits
/// for an RCU grace period (measured at 0.1 to 3 ms under load), which here
/// no build waits for. What the layers show is covered by the store layer
/// the late steps mount on top, and stays out of the builder's reach: it
/// has no capabilities, and the mounts a nested user namespace copies are
/// locked to their covers. `template`'s per-build fields play no role.
pub(super) fn prepare_pooled(
    template: &SandboxSpec,
    root: &Path,
    host: &HostLayers,
    chown_to: Option<(u32, u32)>,
    network: NetSetup,
) -> Result<Vec<Op>, SandboxError> {
    if !root.is_dir() {
        return Err(invalid(format!(
            "root mount point {} is not a directory",
            root.display()
        )));
    }
    let layers = Op::HostLayers {
        store: cpath(&under(root, &template.logical_store_dir))?,
        physical: cpath(&template.physical_store_dir)?,
        work: cpath(&host.work_parent)?,
        fds: [host.lower, host.stage, host.work],
    };
    let mut early = early_ops(template, root, layers, chown_to, network)?;
    early.push(Op::PivotRoot {
        new_root: cpath(root)?,
    });
    Ok(early)
}

/// Mount points a pre-made sandbox made ahead of time in its store's lower
/// layer: the base names of a recent build's inputs, with their kinds. A
/// chain's next build needs the last one's inputs and one more, and most
/// builds of a package set share most of their inputs; each point made
/// ahead is one fewer on a build's critical path (7 µs each on tmpfs, with
/// up to a few hundred inputs per build). The late steps remove those the
/// build does not need before its store is mounted, so it sees its closure
/// and nothing else.
pub(super) type Premade = BTreeMap<String, Kind>;

/// At most this many points are made ahead of time.
const MAX_PREMADE: usize = 4096;

/// The kinds of `inputs` (base names in `physical`) for [`premade_points`];
/// paths that are gone (collected meanwhile) are left out.
pub(super) fn premade_kinds(physical: &Path, inputs: &[String]) -> Premade {
    inputs
        .iter()
        .take(MAX_PREMADE)
        .filter(|i| is_base_name(i))
        .filter_map(|i| match kind_of(&physical.join(i)) {
            Ok(Some(k)) => Some((i.clone(), k)),
            _ => None,
        })
        .collect()
}

/// The kind of input a point left in the store directory stands for.
fn made_as(made: MadePoint) -> Kind {
    match made {
        MadePoint::Dir => Kind::Dir,
        MadePoint::File => Kind::File,
    }
}

fn is_base_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/')
}

/// Early steps of a pre-made sandbox, after its pivot: `premade`'s points
/// in the store's lower layer (descriptor `lower`).
pub(super) fn premade_points(
    premade: &Premade,
    lower: i32,
    chown_to: Option<(u32, u32)>,
) -> Result<Vec<Op>, SandboxError> {
    if premade.is_empty() {
        return Ok(Vec::new());
    }
    let mut points = Vec::with_capacity(premade.len());
    for (name, kind) in premade {
        points.push(point_op(kind, cpath(Path::new(name))?)?);
    }
    if let Some(to) = chown_to {
        points = chown_symlinks(points, to);
    }
    let mut ops = vec![Op::Chdir(cpath(&HostLayers::path(lower, Path::new("")))?)];
    ops.extend(points);
    ops.push(Op::Chdir(CString::from(c"/")));
    Ok(ops)
}

/// The point standing for an input of `kind` at `path`.
fn point_op(kind: &Kind, path: CString) -> Result<Op, SandboxError> {
    Ok(match kind {
        Kind::Dir => Op::Mkdir { path, mode: 0o555 },
        Kind::File => Op::Touch { path },
        Kind::Symlink(to) => Op::Symlink {
            target: cpath(to)?,
            link: path,
        },
    })
}

/// The late steps of a build in a pre-made sandbox (see [`prepare_pooled`]),
/// which has pivoted already: every host path is reached through `host`'s
/// descriptors, every sandbox path is absolute in the new root.
/// [`Prepared::early`] is left empty.
pub(super) fn prepare_pooled_late(
    spec: &SandboxSpec,
    host: &HostLayers,
    premade: &Premade,
    kinds: &KindCache,
    chown_to: Option<(u32, u32)>,
) -> Result<Prepared, SandboxError> {
    check_spec(spec, Path::new("/"))?;
    check_dirs(spec)?;
    if spec.extra_paths.iter().any(|p| in_store_dir(spec, p)) {
        return Err(invalid(
            "a pre-made sandbox cannot show extra paths inside the store".into(),
        ));
    }
    let store = PathBuf::from(&spec.logical_store_dir);
    let upper = host.work_path(&spec.store_dir_host, "the store output directory")?;
    let build = host.work_path(&spec.build_dir, "the build directory")?;
    let scratch = match &spec.scratch_dir {
        Some(d) => Some(host.work_path(d, "the scratch directory")?),
        None => None,
    };
    let lower = HostLayers::path(host.lower, Path::new(""));
    let stage = HostLayers::path(host.stage, Path::new(""));

    let mut late = vec![Op::Chmod {
        path: cpath(&upper)?,
        mode: 0o1775,
    }];
    let overlay = overlay_options(&lower, &upper, scratch.as_deref())?;
    // The lower layer's points and the binds' sources are named relative
    // to the working directory, set to the lower layer, then the stage: a
    // path through /proc/self/fd/N costs a walk through procfs each time.
    let here = Path::new("");
    let (points, binds) = input_points(
        spec,
        chown_to,
        &store,
        Some((here, premade)),
        here,
        Some(kinds),
    )?;
    let (lower_points, points) = match overlay {
        Some(_) => points,
        None => (Vec::new(), points.1),
    };
    late.push(Op::Chdir(cpath(&lower)?));
    late.push(Op::StoreLayer {
        target: cpath(&store)?,
        upper: cpath(&upper)?,
        overlay,
        lower_points: Some(lower_points),
        points,
    });
    late.push(Op::Chdir(cpath(&stage)?));
    late.push(Op::BindInputs {
        stage: cpath(&stage)?,
        binds,
        in_root: false,
    });
    late.push(Op::Chmod {
        path: cpath(&build)?,
        mode: 0o700,
    });
    late.push(Op::Mount {
        source: Some(cpath(&build)?),
        target: cstr_bytes(SANDBOX_BUILD_DIR.as_bytes(), "build dir")?,
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    });
    late.push(Op::Chdir(cstr_bytes(
        SANDBOX_BUILD_DIR.as_bytes(),
        "build dir",
    )?));
    exec_parts(spec, Vec::new(), late)
}

fn check_dirs(spec: &SandboxSpec) -> Result<(), SandboxError> {
    for (what, p) in [
        ("store output directory", spec.store_dir_host.as_path()),
        ("build directory", spec.build_dir.as_path()),
    ] {
        if !p.is_dir() {
            return Err(invalid(format!(
                "{what} {} is not a directory",
                p.display()
            )));
        }
    }
    Ok(())
}

fn in_store_dir(spec: &SandboxSpec, p: &SandboxPath) -> bool {
    p.target
        .strip_prefix(spec.logical_store_dir.as_str())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Set-up every build of a realisation shares; `layers` is how the store
/// is staged for the inputs ([`Op::Stage`] or [`Op::HostLayers`]).
fn early_ops(
    spec: &SandboxSpec,
    root: &Path,
    layers: Op,
    chown_to: Option<(u32, u32)>,
    network: NetSetup,
) -> Result<Vec<Op>, SandboxError> {
    let mut ops = Vec::new();

    // Our mounts must not propagate back to the host.
    ops.push(Op::Mount {
        source: None,
        target: CString::from(c"/"),
        fstype: None,
        flags: libc::MS_REC | libc::MS_PRIVATE,
        data: None,
    });
    ops.push(Op::Mount {
        source: Some(CString::from(c"tmpfs")),
        target: cpath(root)?,
        fstype: Some(CString::from(c"tmpfs")),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some(CString::from(c"mode=0750")),
    });

    // The store directory (filled late) and what the inputs are bound from.
    let store = under(root, &spec.logical_store_dir);
    mkdir_parents(&mut ops, root, &spec.logical_store_dir)?;
    ops.push(Op::Mkdir {
        path: cpath(&store)?,
        mode: 0o755,
    });
    ops.push(layers);

    // /build (bound late) and /tmp.
    let build = under(root, SANDBOX_BUILD_DIR);
    ops.push(Op::Mkdir {
        path: cpath(&build)?,
        mode: 0o700,
    });
    let tmp = under(root, "/tmp");
    ops.push(Op::Mkdir {
        path: cpath(&tmp)?,
        mode: 0o1777,
    });
    ops.push(Op::Chmod {
        path: cpath(&tmp)?,
        mode: 0o1777,
    });

    // /etc.
    let etc = under(root, "/etc");
    ops.push(Op::Mkdir {
        path: cpath(&etc)?,
        mode: 0o755,
    });
    for (name, text) in [("passwd", PASSWD), ("group", GROUP), ("hosts", HOSTS)] {
        ops.push(Op::WriteFile {
            path: cpath(&etc.join(name))?,
            data: text.as_bytes().to_vec(),
            mode: 0o644,
        });
    }
    if spec.network {
        ops.push(Op::WriteFile {
            path: cpath(&etc.join("nsswitch.conf"))?,
            data: NSSWITCH.as_bytes().to_vec(),
            mode: 0o644,
        });
        for name in FOD_ETC {
            let host = Path::new("/etc").join(name);
            if let Some(Kind::File) = kind_of(&host)? {
                expose(&mut ops, Kind::File, &host, &etc.join(name))?;
            }
        }
    }

    // /dev.
    let dev = under(root, "/dev");
    ops.push(Op::Mkdir {
        path: cpath(&dev)?,
        mode: 0o755,
    });
    let mut devices: Vec<&str> = DEVICES.to_vec();
    if spec.kvm && Path::new("/dev/kvm").exists() {
        devices.push("kvm");
    }
    for d in devices {
        // Read-only binds still allow reading and writing the device, but
        // not chmod/chown of the host's node (which the builder owns when
        // the caller is root, root being mapped to the build user).
        expose(
            &mut ops,
            Kind::File,
            &Path::new("/dev").join(d),
            &dev.join(d),
        )?;
    }
    for (name, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ops.push(Op::Symlink {
            target: cstr_bytes(to.as_bytes(), "link")?,
            link: cpath(&dev.join(name))?,
        });
    }
    ops.push(Op::Mkdir {
        path: cpath(&dev.join("pts"))?,
        mode: 0o755,
    });
    ops.push(Op::Devpts {
        pts: cpath(&dev.join("pts"))?,
        ptmx: cpath(&dev.join("ptmx"))?,
    });
    ops.push(Op::Mkdir {
        path: cpath(&dev.join("shm"))?,
        mode: 0o1777,
    });
    ops.push(Op::Mount {
        source: Some(CString::from(c"none")),
        target: cpath(&dev.join("shm"))?,
        fstype: Some(CString::from(c"tmpfs")),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some(CString::from(c"size=50%,mode=1777")),
    });

    // /proc of the new PID namespace.
    let proc_dir = under(root, "/proc");
    ops.push(Op::Mkdir {
        path: cpath(&proc_dir)?,
        mode: 0o555,
    });
    ops.push(Op::Mount {
        source: Some(CString::from(c"none")),
        target: cpath(&proc_dir)?,
        fstype: Some(CString::from(c"proc")),
        flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        data: None,
    });

    // Extra sandbox paths (e.g. /bin/sh). Those inside the store directory
    // go on top of the store layer, which is laid out late.
    for p in spec.extra_paths.iter().filter(|p| !in_store_dir(spec, p)) {
        extra_path(&mut ops, root, p)?;
    }

    ops.push(Op::SetHostname(CString::from(c"localhost")));
    ops.push(Op::SetDomainname(CString::from(c"(none)")));
    if !spec.network && network == NetSetup::Own {
        ops.push(Op::LoopbackUp);
    }
    match chown_to {
        Some(to) => chown_created(ops, to),
        None => Ok(ops),
    }
}

/// The inputs' mount points and binds: `(lower points, points)` (the same
/// points made at `lower/<input>` and at `store/<input>`; see
/// [`Op::StoreLayer`]; the first list is empty without `lower`) and the
/// binds from `stage/<input>` to `store/<input>`.
type Points = (Vec<Op>, Vec<Op>);

fn input_points(
    spec: &SandboxSpec,
    chown_to: Option<(u32, u32)>,
    store: &Path,
    lower: Option<(&Path, &Premade)>,
    stage: &Path,
    known: Option<&KindCache>,
) -> Result<(Points, Vec<InputBind>), SandboxError> {
    let mut kinds = Vec::with_capacity(spec.inputs.len());
    for input in &spec.inputs {
        let source = spec.physical_store_dir.join(input);
        let kind = match known {
            Some(k) => k.kind_of(&source)?,
            None => kind_of(&source)?,
        };
        let kind = kind.ok_or_else(|| {
            SandboxError::Setup(OsError::new(
                format!("input path {} does not exist", source.display()),
                OsErrorKind::NotFound,
            ))
        })?;
        kinds.push((input.as_str(), kind));
    }
    let mut made = Premade::new();
    for (name, point) in &spec.made_points {
        if !is_base_name(name) {
            return Err(invalid(format!("mount point name {name:?}")));
        }
        made.insert(name.clone(), made_as(*point));
    }
    let mut points = points_for(store, &made, &kinds)?;
    let mut lower_points = match lower {
        Some((lower, premade)) => points_for(lower, premade, &kinds)?,
        None => Vec::new(),
    };
    let mut binds = Vec::with_capacity(spec.inputs.len());
    for (input, kind) in &kinds {
        let recursive = match kind {
            Kind::Dir => true,
            Kind::File => false,
            Kind::Symlink(_) => continue,
        };
        binds.push(InputBind {
            staged: cpath(&stage.join(input))?,
            source: cpath(&spec.physical_store_dir.join(input))?,
            target: cpath(&store.join(input))?,
            recursive,
        });
    }
    if let Some(to) = chown_to {
        // Only a symlink standing for an input is seen: the other points
        // are hidden under their binds, so their owner does not matter.
        points = chown_symlinks(points, to);
        lower_points = chown_symlinks(lower_points, to);
    }
    Ok(((lower_points, points), binds))
}

/// The steps that leave in `dir`, which holds the points `existing`,
/// exactly one point per input of `inputs`: those of paths the build does
/// not have go first, then each input's is kept, replaced (another kind)
/// or made.
fn points_for(
    dir: &Path,
    existing: &Premade,
    inputs: &[(&str, Kind)],
) -> Result<Vec<Op>, SandboxError> {
    let mut ops = Vec::with_capacity(inputs.len());
    let wanted: std::collections::HashSet<&str> = inputs.iter().map(|(i, _)| *i).collect();
    for (name, kind) in existing {
        if !wanted.contains(name.as_str()) {
            ops.push(Op::Remove {
                path: cpath(&dir.join(name))?,
                dir: *kind == Kind::Dir,
            });
        }
    }
    for (input, kind) in inputs {
        let path = cpath(&dir.join(input))?;
        match existing.get(*input) {
            Some(k) if k == kind => {}
            Some(k) => {
                ops.push(Op::Remove {
                    path: path.clone(),
                    dir: *k == Kind::Dir,
                });
                ops.push(point_op(kind, path)?);
            }
            None => ops.push(point_op(kind, path)?),
        }
    }
    Ok(ops)
}

/// The builder, its arguments and environment, with the steps.
fn exec_parts(spec: &SandboxSpec, early: Vec<Op>, late: Vec<Op>) -> Result<Prepared, SandboxError> {
    let builder = cstr_bytes(spec.builder.as_bytes(), "builder")?;
    // argv[0] is the builder's base name, as Nix passes it.
    let base = spec.builder.rsplit('/').next().unwrap_or(&spec.builder);
    let mut argv = vec![cstr_bytes(base.as_bytes(), "builder")?];
    for a in &spec.args {
        argv.push(cstr_bytes(a.as_bytes(), "builder argument")?);
    }
    let mut envp = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') {
            return Err(invalid(format!(
                "environment variable name '{k}' is invalid"
            )));
        }
        envp.push(cstr_bytes(format!("{k}={v}").as_bytes(), "environment")?);
    }
    for (k, v) in &spec.env_bytes {
        if k.is_empty() || k.contains(&b'=') {
            return Err(invalid(format!(
                "environment variable name '{}' is invalid",
                String::from_utf8_lossy(k)
            )));
        }
        let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
        kv.extend_from_slice(k);
        kv.push(b'=');
        kv.extend_from_slice(v);
        envp.push(cstr_bytes(&kv, "environment")?);
    }
    Ok(Prepared {
        early,
        late,
        builder,
        argv,
        envp,
    })
}

/// The steps exposing one extra sandbox path under `root`.
fn extra_path(ops: &mut Vec<Op>, root: &Path, p: &SandboxPath) -> Result<(), SandboxError> {
    let kind = match kind_of(&p.source)? {
        None if p.optional => return Ok(()),
        None => {
            return Err(SandboxError::Setup(OsError::new(
                format!("sandbox path {} does not exist", p.source.display()),
                OsErrorKind::NotFound,
            )))
        }
        Some(kind) => kind,
    };
    mkdir_parents(ops, root, &p.target)?;
    // Follow a symlinked source (e.g. /bin/sh -> busybox) so the target
    // works without the link's own target inside.
    let kind = match kind {
        Kind::Symlink(_) => match std::fs::metadata(&p.source) {
            Ok(m) if m.is_dir() => Kind::Dir,
            Ok(_) => Kind::File,
            Err(_) if p.optional => return Ok(()),
            Err(e) => {
                return Err(SandboxError::Setup(OsError::from_io(
                    format!("sandbox path {}", p.source.display()),
                    &e,
                )))
            }
        },
        k => k,
    };
    expose(ops, kind, &p.source, &under(root, &p.target))
}

fn show(c: &CString) -> String {
    String::from_utf8_lossy(c.as_bytes()).into_owned()
}

/// What a step was doing, for error messages.
pub(super) fn describe(op: &Op) -> String {
    match op {
        Op::Mkdir { path, .. } => format!("creating directory {}", show(path)),
        Op::Chmod { path, .. } => format!("setting permissions of {}", show(path)),
        Op::WriteFile { path, .. } => format!("writing {}", show(path)),
        Op::Touch { path } => format!("creating mount point {}", show(path)),
        Op::Remove { path, .. } => format!("removing mount point {}", show(path)),
        Op::Symlink { link, .. } => format!("creating symlink {}", show(link)),
        Op::Chown { path, .. } => format!("changing the owner of {}", show(path)),
        Op::Mount {
            source,
            target,
            fstype,
            ..
        } => format!(
            "mounting {} on {} ({})",
            source.as_ref().map(show).unwrap_or_default(),
            show(target),
            fstype
                .as_ref()
                .map(show)
                .unwrap_or_else(|| "bind/flags".into())
        ),
        Op::BindReadOnly { source, target, .. } => {
            format!(
                "bind-mounting {} read-only on {}",
                show(source),
                show(target)
            )
        }
        Op::Stage { physical, .. } => {
            format!("bind-mounting {} read-only for the inputs", show(physical))
        }
        Op::BindInputs { .. } => "bind-mounting the inputs read-only".into(),
        Op::HostLayers { physical, work, .. } => format!(
            "stacking {} (read-only) and {} on the store directory",
            show(physical),
            show(work)
        ),
        Op::Devpts { pts, .. } => format!("mounting devpts on {}", show(pts)),
        Op::SetHostname(_) => "setting the host name".into(),
        Op::SetDomainname(_) => "setting the domain name".into(),
        Op::LoopbackUp => "bringing up the loopback interface".into(),
        Op::PivotRoot { new_root } => format!("pivoting into {}", show(new_root)),
        Op::Chdir(p) => format!("changing directory to {}", show(p)),
        Op::StoreLayer { target, .. } => {
            format!("laying out the store at {}", show(target))
        }
    }
}

pub(super) fn describe_step(step: u32) -> String {
    match step {
        child::STEP_SYNC => "waiting for the parent to map user ids".into(),
        child::STEP_STDIO => "connecting the builder's stdin/stdout/stderr".into(),
        child::STEP_LIMITS => "setting resource limits".into(),
        child::STEP_NO_NEW_PRIVS => "setting no_new_privs".into(),
        child::STEP_SECCOMP => "installing the seccomp filter".into(),
        child::STEP_IDS => "switching to the build user".into(),
        child::STEP_EXEC => "executing the builder".into(),
        child::STEP_SIGNALS => "resetting signals".into(),
        other => format!("sandbox set-up step {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec a pre-made sandbox can serve: no extra path in the store.
    fn pooled_spec(dir: &Path) -> SandboxSpec {
        let mut s = spec(dir);
        s.extra_paths
            .retain(|p| !p.target.starts_with("/nix/store"));
        s
    }

    /// Host layers as a pre-made sandbox keeps them (descriptor numbers
    /// are not opened: the plans only name them).
    fn host_layers(dir: &Path) -> HostLayers {
        HostLayers {
            lower: 20,
            stage: 21,
            work: 22,
            work_parent: dir.to_path_buf(),
        }
    }

    fn spec(dir: &Path) -> SandboxSpec {
        for d in ["store", "build", "root"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("input-file"), "x").unwrap();
        SandboxSpec {
            builder: "/bin/sh".into(),
            args: vec!["-c".into(), "true".into()],
            env: vec![("out".into(), "/nix/store/x".into())],
            env_bytes: Vec::new(),
            logical_store_dir: "/nix/store".into(),
            physical_store_dir: dir.to_path_buf(),
            inputs: vec!["input-file".into()],
            store_dir_host: dir.join("store"),
            build_dir: dir.join("build"),
            root_dir: dir.join("root"),
            scratch_dir: None,
            made_points: BTreeMap::new(),
            network: false,
            extra_paths: vec![
                SandboxPath::parse("/bin/sh=/bin/busybox?").unwrap(),
                SandboxPath::parse(&format!("/nix/store/extra={}", dir.display())).unwrap(),
            ],
            kvm: false,
            timeout: None,
            max_silent: None,
            cancel: None,
            pool: None,
        }
    }

    /// Every path a step names, for checking where the steps reach.
    fn paths(ops: &[Op]) -> Vec<String> {
        let mut out = Vec::new();
        for op in ops {
            let mut add = |c: &CString| out.push(show(c));
            match op {
                Op::Mkdir { path, .. }
                | Op::Chmod { path, .. }
                | Op::WriteFile { path, .. }
                | Op::Touch { path }
                | Op::Remove { path, .. }
                | Op::Chown { path, .. } => add(path),
                Op::Symlink { link, .. } => add(link),
                Op::Mount { source, target, .. } => {
                    source.iter().for_each(&mut add);
                    add(target)
                }
                Op::BindReadOnly { source, target, .. } => {
                    add(source);
                    add(target)
                }
                Op::BindInputs { stage, binds, .. } => {
                    add(stage);
                    for b in binds {
                        add(&b.staged);
                        add(&b.target);
                    }
                }
                Op::StoreLayer {
                    target,
                    upper,
                    lower_points,
                    points,
                    ..
                } => {
                    add(target);
                    add(upper);
                    out.extend(paths(lower_points.as_deref().unwrap_or(&[])));
                    out.extend(paths(points));
                }
                Op::Chdir(p) => add(p),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn a_kind_is_inspected_once_and_a_missing_path_is_looked_for_again() {
        let d = tempfile::tempdir().unwrap();
        let cache = KindCache::default();
        let p = d.path().join("aaa-x");
        assert_eq!(cache.kind_of(&p).unwrap(), None);
        std::fs::create_dir(&p).unwrap();
        assert_eq!(cache.kind_of(&p).unwrap(), Some(Kind::Dir));
        // Answered from memory: a store path does not change while valid.
        std::fs::remove_dir(&p).unwrap();
        std::fs::write(&p, "").unwrap();
        assert_eq!(cache.kind_of(&p).unwrap(), Some(Kind::Dir));
        assert_eq!(kind_of(&p).unwrap(), Some(Kind::File));
        let l = d.path().join("bbb-y");
        std::os::unix::fs::symlink("aaa-x", &l).unwrap();
        assert_eq!(
            cache.kind_of(&l).unwrap(),
            Some(Kind::Symlink(PathBuf::from("aaa-x")))
        );
    }

    #[test]
    fn a_fresh_sandbox_pivots_after_binding_the_inputs_from_its_stage() {
        let d = tempfile::tempdir().unwrap();
        let mut s = spec(d.path());
        s.scratch_dir = Some(d.path().join("store"));
        let root = d.path().join("root");
        let p = prepare(&s, &root, Some((1000, 100))).unwrap();
        assert!(p.early.iter().any(|op| matches!(op, Op::Stage { .. })));
        assert!(!p.early.iter().any(|op| matches!(op, Op::PivotRoot { .. })));
        let pivot = p
            .late
            .iter()
            .position(|op| matches!(op, Op::PivotRoot { .. }))
            .expect("the late steps pivot");
        let binds = p
            .late
            .iter()
            .position(|op| matches!(op, Op::BindInputs { in_root: true, .. }))
            .expect("the inputs are bound from the stage, which then goes");
        assert!(binds < pivot);
        // The extra path inside the store is the build's own (late).
        assert!(format!("{:?}", p.late).contains("/nix/store/extra"));
        assert_eq!(show(&p.argv[0]), "sh");
    }

    #[test]
    fn a_pooled_sandbox_pivots_early_and_its_build_reaches_the_host_only_through_descriptors() {
        let d = tempfile::tempdir().unwrap();
        let mut s = pooled_spec(d.path());
        s.scratch_dir = Some(d.path().join("scratch"));
        std::fs::create_dir_all(d.path().join("scratch")).unwrap();
        let root = d.path().join("root");
        let host = host_layers(d.path());
        for chown in [None, Some((1000, 100))] {
            let early = prepare_pooled(&s, &root, &host, chown, NetSetup::Own).unwrap();
            assert!(matches!(early.last(), Some(Op::PivotRoot { .. })));
            assert!(early.iter().any(|op| matches!(op, Op::LoopbackUp)));
            // In a kept network namespace, the loopback is up already.
            let kept = prepare_pooled(&s, &root, &host, chown, NetSetup::Kept).unwrap();
            assert!(!kept.iter().any(|op| matches!(op, Op::LoopbackUp)));
            assert_eq!(kept.len(), early.len() - 1);
            assert!(early.iter().any(|op| matches!(
                op,
                Op::HostLayers {
                    fds: [20, 21, 22],
                    ..
                }
            )));
            let late =
                prepare_pooled_late(&s, &host, &Premade::new(), &KindCache::default(), chown)
                    .unwrap();
            assert!(late.early.is_empty());
            assert!(!late.late.iter().any(|op| matches!(
                op,
                Op::PivotRoot { .. } | Op::Stage { .. } | Op::BindInputs { in_root: true, .. }
            )));
            for p in paths(&late.late) {
                assert!(
                    p.starts_with("/proc/self/fd/2")
                        || p.starts_with("/nix/store/")
                        || p == "/nix/store"
                        || p == "/build"
                        || p == "input-file",
                    "a late step names host path {p}"
                );
            }
            let text = format!("{:?}", late.late);
            assert!(text.contains("lowerdir=/proc/self/fd/20,upperdir=/proc/self/fd/22/store,workdir=/proc/self/fd/22/scratch"), "{text}");
            // Points and sources are relative to the lower layer and the
            // stage, entered first.
            assert!(text.contains("Chdir(\"/proc/self/fd/20\")"), "{text}");
            assert!(text.contains("Chdir(\"/proc/self/fd/21\")"), "{text}");
            assert!(text.contains("staged: \"input-file\""), "{text}");
        }
        // A directory outside the work parent is refused, not reached.
        let mut outside = s.clone();
        outside.build_dir = std::env::temp_dir();
        assert!(prepare_pooled_late(
            &outside,
            &host,
            &Premade::new(),
            &KindCache::default(),
            None
        )
        .is_err());
    }

    /// The lower layer's steps of `late` (those before the store layer),
    /// as (what, path) pairs, and the store layer's own points.
    fn lower_steps(late: &[Op]) -> Vec<(String, String)> {
        let Some(Op::StoreLayer { lower_points, .. }) =
            late.iter().find(|op| matches!(op, Op::StoreLayer { .. }))
        else {
            panic!("no store layer in {late:?}");
        };
        lower_points
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|op| match op {
                Op::Remove { path, dir } => (format!("remove dir={dir}"), show(path)),
                Op::Mkdir { path, .. } => ("mkdir".into(), show(path)),
                Op::Touch { path } => ("touch".into(), show(path)),
                Op::Symlink { link, .. } => ("symlink".into(), show(link)),
                Op::Chown { path, .. } => ("chown".into(), show(path)),
                other => panic!("unexpected lower step {other:?}"),
            })
            .collect()
    }

    #[test]
    fn points_left_in_the_store_directory_serve_a_build_and_the_others_go_first() {
        let d = tempfile::tempdir().unwrap();
        let mut s = pooled_spec(d.path());
        std::fs::write(d.path().join("aaa-file"), "x").unwrap();
        std::fs::create_dir(d.path().join("ccc-now-dir")).unwrap();
        std::fs::write(d.path().join("ddd-new"), "x").unwrap();
        s.inputs = vec!["aaa-file".into(), "ccc-now-dir".into(), "ddd-new".into()];
        s.made_points = BTreeMap::from([
            ("aaa-file".to_string(), MadePoint::File),
            ("bbb-gone".to_string(), MadePoint::Dir),
            ("ccc-now-dir".to_string(), MadePoint::File),
        ]);
        let store_points = |late: &[Op]| -> Vec<String> {
            let Some(Op::StoreLayer { points, .. }) =
                late.iter().find(|op| matches!(op, Op::StoreLayer { .. }))
            else {
                panic!("no store layer");
            };
            points
                .iter()
                .map(|op| match op {
                    Op::Remove { path, dir } => format!("remove dir={dir} {}", show(path)),
                    Op::Mkdir { path, .. } => format!("mkdir {}", show(path)),
                    Op::Touch { path } => format!("touch {}", show(path)),
                    other => panic!("unexpected {other:?}"),
                })
                .collect()
        };
        let want = [
            "remove dir=true /nix/store/bbb-gone",
            "remove dir=false /nix/store/ccc-now-dir",
            "mkdir /nix/store/ccc-now-dir",
            "touch /nix/store/ddd-new",
        ];
        // A fresh sandbox: the store directory is bound at the root's
        // store, where the points are named.
        let root = d.path().join("root");
        let fresh = prepare(&s, &root, None).unwrap();
        let rooted: Vec<String> = want
            .iter()
            .map(|w| w.replace("/nix/store", &format!("{}/nix/store", root.display())))
            .collect();
        assert_eq!(store_points(&fresh.late), rooted);
        // A pre-made one, pivoted already.
        let host = host_layers(d.path());
        let pooled =
            prepare_pooled_late(&s, &host, &Premade::new(), &KindCache::default(), None).unwrap();
        assert_eq!(store_points(&pooled.late), want);
        // An overlay's upper layer would show them: refused.
        s.scratch_dir = Some(d.path().join("scratch"));
        assert!(prepare(&s, &root, None).is_err());
        assert!(
            prepare_pooled_late(&s, &host, &Premade::new(), &KindCache::default(), None).is_err()
        );
        // So is a name that is not a base name.
        s.scratch_dir = None;
        s.made_points.insert("../x".into(), MadePoint::File);
        assert!(prepare(&s, &root, None).is_err());
    }

    #[test]
    fn points_made_ahead_are_kept_when_they_fit_and_removed_when_a_build_lacks_them() {
        let d = tempfile::tempdir().unwrap();
        let mut s = pooled_spec(d.path());
        s.scratch_dir = Some(d.path().join("scratch"));
        std::fs::create_dir_all(d.path().join("scratch")).unwrap();
        // In the physical store: a file, a directory, a symlink.
        std::fs::write(d.path().join("aaa-file"), "x").unwrap();
        std::fs::create_dir(d.path().join("ccc-now-dir")).unwrap();
        std::fs::write(d.path().join("ddd-new"), "x").unwrap();
        std::os::unix::fs::symlink("aaa-file", d.path().join("eee-link")).unwrap();
        let premade = premade_kinds(
            d.path(),
            &[
                "aaa-file".into(),
                "ccc-now-dir".into(),
                "eee-link".into(),
                "gone".into(),
                "../escape".into(),
            ],
        );
        // What is gone or not a base name is not made ahead.
        assert_eq!(
            premade.keys().map(String::as_str).collect::<Vec<_>>(),
            ["aaa-file", "ccc-now-dir", "eee-link"]
        );
        // Made ahead, relative to the lower layer, between two changes of
        // directory; only the symlink is given to the sandbox's user.
        let early = premade_points(&premade, 20, Some((1000, 100))).unwrap();
        let text = format!("{early:?}");
        assert!(
            text.starts_with(r#"[Chdir("/proc/self/fd/20"), "#),
            "{text}"
        );
        assert!(text.ends_with(r#"Chdir("/")]"#), "{text}");
        assert_eq!(
            early
                .iter()
                .filter(|op| matches!(op, Op::Chown { .. }))
                .count(),
            1,
            "{text}"
        );
        assert!(premade_points(&Premade::new(), 20, None)
            .unwrap()
            .is_empty());

        // A build whose directory was a file when the points were made (as
        // if collected and made again since), which lacks the symlink and
        // has an input more.
        let mut stale = premade.clone();
        stale.insert("ccc-now-dir".into(), Kind::File);
        s.inputs = vec!["aaa-file".into(), "ccc-now-dir".into(), "ddd-new".into()];
        let host = host_layers(d.path());
        let late = prepare_pooled_late(&s, &host, &stale, &KindCache::default(), None).unwrap();
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(
            lower_steps(&late.late),
            [
                pair("remove dir=false", "eee-link"),
                pair("remove dir=false", "ccc-now-dir"),
                pair("mkdir", "ccc-now-dir"),
                pair("touch", "ddd-new"),
            ]
        );
        // Every input is still bound: points made ahead are only points.
        let Some(Op::BindInputs { binds, .. }) = late
            .late
            .iter()
            .find(|op| matches!(op, Op::BindInputs { .. }))
        else {
            panic!("no binds");
        };
        assert_eq!(binds.len(), 3);
        // Without an overlay the lower layer is covered whole: nothing to
        // remove there, and the points are made in the store layer.
        s.scratch_dir = None;
        let late = prepare_pooled_late(&s, &host, &stale, &KindCache::default(), None).unwrap();
        assert!(lower_steps(&late.late).is_empty());
    }
}
