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

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::child::{self, InputBind, Op};
use crate::platform::{OsError, OsErrorKind};
use crate::sandbox::{SandboxError, SandboxPath, SandboxSpec, SANDBOX_BUILD_DIR};

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
    cstr_bytes(p.as_os_str().as_bytes(), &format!("path {}", p.display()))
}

/// A path under the (not yet pivoted) sandbox root.
fn under(root: &Path, inside: &str) -> PathBuf {
    root.join(inside.trim_start_matches('/'))
}

/// Kind of a host path, for choosing a mount point (dir or file) or a copy
/// (symlinks cannot be bind-mounted).
enum Kind {
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
/// scratch directory or when a path cannot be written in overlay options.
fn overlay_options(spec: &SandboxSpec, root: &Path) -> Result<Option<CString>, SandboxError> {
    let Some(work) = &spec.scratch_dir else {
        return Ok(None);
    };
    let lower = under(root, &spec.logical_store_dir);
    let paths = [&lower, &spec.store_dir_host, work];
    let plain = |p: &&PathBuf| {
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
    o.extend_from_slice(spec.store_dir_host.as_os_str().as_bytes());
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
    for (what, p) in [
        ("store output directory", spec.store_dir_host.as_path()),
        ("build directory", spec.build_dir.as_path()),
        ("root mount point", root),
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

/// Gives what the set-up creates to the build user, as Nix's chroot does.
/// Mount points hidden under binds are left alone.
fn chown_created(ops: Vec<Op>, to: (u32, u32)) -> Result<Vec<Op>, SandboxError> {
    let mut out = Vec::with_capacity(ops.len() * 2);
    for op in ops {
        let created = match &op {
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
        };
        out.push(op);
        if let Some(path) = created {
            out.push(Op::Chown {
                path,
                uid: to.0,
                gid: to.1,
            });
        }
    }
    Ok(out)
}

/// [`chown_created`] for the inputs' mount points: only their symlinks.
fn chown_symlinks(points: Vec<Op>, to: (u32, u32)) -> Vec<Op> {
    let mut out = Vec::with_capacity(points.len());
    for op in points {
        let link = match &op {
            Op::Symlink { link, .. } => Some(link.clone()),
            _ => None,
        };
        out.push(op);
        if let Some(path) = link {
            out.push(Op::Chown {
                path,
                uid: to.0,
                gid: to.1,
            });
        }
    }
    out
}

/// `chown_to`: give the created files and directories to this (sandbox)
/// uid/gid (needed when the set-up runs as a different id than the build).
///
/// The steps come in two parts. [`Prepared::early`] depends only on what
/// every build of a realisation shares ([`Prepared::early`] of two specs
/// that differ only in their per-build fields is the same): the root
/// tmpfs, `/dev`, `/proc`, `/etc`, `/tmp`, the extra sandbox paths outside
/// the store, host and domain name, loopback, and a read-only stage of the
/// physical store. [`Prepared::late`] is the build's own: the inputs (bound
/// from the stage, which then goes), the outputs' directory, `/build`,
/// extra paths inside the store, and the pivot into the root. A fresh
/// sandbox runs both in one go; a pre-made one (see `pool.rs`) runs the
/// early part ahead of time and the late part when the build starts.
/// `root` is where the root tmpfs is mounted: `spec.root_dir` for a fresh
/// sandbox, the pool's directory for a pre-made one. `stage` is an empty
/// host directory outside `root` for the stage of the store (see
/// [`Op::Stage`]); without one, the stage is a directory of the root.
pub(super) fn prepare(
    spec: &SandboxSpec,
    root: &Path,
    stage: Option<&Path>,
    chown_to: Option<(u32, u32)>,
) -> Result<Prepared, SandboxError> {
    prepare_parts(spec, root, stage, chown_to, true)
}

/// [`prepare`] without [`Prepared::early`] (left empty), for a pre-made
/// sandbox that has run its early steps already: none of the early part's
/// host lookups (devices, extra paths) on the build's critical path.
pub(super) fn prepare_late(
    spec: &SandboxSpec,
    root: &Path,
    stage: Option<&Path>,
    chown_to: Option<(u32, u32)>,
) -> Result<Prepared, SandboxError> {
    prepare_parts(spec, root, stage, chown_to, false)
}

fn prepare_parts(
    spec: &SandboxSpec,
    root: &Path,
    stage: Option<&Path>,
    chown_to: Option<(u32, u32)>,
    with_early: bool,
) -> Result<Prepared, SandboxError> {
    check_spec(spec, root)?;
    let root = root.to_path_buf();
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
        target: cpath(&root)?,
        fstype: Some(CString::from(c"tmpfs")),
        flags: libc::MS_NOSUID | libc::MS_NODEV,
        data: Some(CString::from(c"mode=0750")),
    });

    // The store directory (filled late) and the stage the inputs are bound
    // from.
    let store = under(&root, &spec.logical_store_dir);
    mkdir_parents(&mut ops, &root, &spec.logical_store_dir)?;
    ops.push(Op::Mkdir {
        path: cpath(&store)?,
        mode: 0o755,
    });
    let in_root = stage.is_none();
    let stage = stage.map_or_else(|| under(&root, STAGE), Path::to_path_buf);
    ops.push(Op::Stage {
        physical: cpath(&spec.physical_store_dir)?,
        stage: cpath(&stage)?,
        in_root,
    });

    // /build (bound late) and /tmp.
    let build = under(&root, SANDBOX_BUILD_DIR);
    if with_early {
        ops.push(Op::Mkdir {
            path: cpath(&build)?,
            mode: 0o700,
        });
        let tmp = under(&root, "/tmp");
        ops.push(Op::Mkdir {
            path: cpath(&tmp)?,
            mode: 0o1777,
        });
        ops.push(Op::Chmod {
            path: cpath(&tmp)?,
            mode: 0o1777,
        });

        // /etc.
        let etc = under(&root, "/etc");
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
        let dev = under(&root, "/dev");
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
        let proc_dir = under(&root, "/proc");
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
    }

    // Extra sandbox paths (e.g. /bin/sh). Those inside the store directory
    // go on top of the store layer, which is laid out late.
    let mut in_store = Vec::new();
    for p in &spec.extra_paths {
        let inside = p
            .target
            .strip_prefix(spec.logical_store_dir.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if inside {
            extra_path(&mut in_store, &root, p)?;
        } else if with_early {
            extra_path(&mut ops, &root, p)?;
        }
    }

    ops.push(Op::SetHostname(CString::from(c"localhost")));
    ops.push(Op::SetDomainname(CString::from(c"(none)")));
    if !spec.network {
        ops.push(Op::LoopbackUp);
    }
    if let Some(to) = chown_to {
        ops = chown_created(ops, to)?;
    }
    let early = if with_early { ops } else { Vec::new() };

    // The build's own part.
    let mut late = Vec::new();
    late.push(Op::Chmod {
        path: cpath(&spec.store_dir_host)?,
        mode: 0o1775,
    });
    let mut points = Vec::with_capacity(spec.inputs.len());
    let mut binds = Vec::with_capacity(spec.inputs.len());
    for input in &spec.inputs {
        let source = spec.physical_store_dir.join(input);
        let kind = kind_of(&source)?.ok_or_else(|| {
            SandboxError::Setup(OsError::new(
                format!("input path {} does not exist", source.display()),
                OsErrorKind::NotFound,
            ))
        })?;
        let target = store.join(input);
        let recursive = match kind {
            Kind::Dir => {
                points.push(Op::Mkdir {
                    path: cpath(&target)?,
                    mode: 0o555,
                });
                true
            }
            Kind::File => {
                points.push(Op::Touch {
                    path: cpath(&target)?,
                });
                false
            }
            Kind::Symlink(to) => {
                points.push(Op::Symlink {
                    target: cpath(&to)?,
                    link: cpath(&target)?,
                });
                continue;
            }
        };
        binds.push(InputBind {
            staged: cpath(&stage.join(input))?,
            source: cpath(&source)?,
            target: cpath(&target)?,
            recursive,
        });
    }
    if let Some(to) = chown_to {
        // Only a symlink standing for an input is seen: the other points
        // are hidden under their binds, so their owner does not matter.
        points = chown_symlinks(points, to);
    }
    late.push(Op::StoreLayer {
        target: cpath(&store)?,
        upper: cpath(&spec.store_dir_host)?,
        overlay: overlay_options(spec, &root)?,
        points,
    });
    late.push(Op::BindInputs {
        stage: cpath(&stage)?,
        binds,
        in_root,
    });
    late.push(Op::Chmod {
        path: cpath(&spec.build_dir)?,
        mode: 0o700,
    });
    late.push(Op::Mount {
        source: Some(cpath(&spec.build_dir)?),
        target: cpath(&build)?,
        fstype: None,
        flags: libc::MS_BIND,
        data: None,
    });
    if let Some(to) = chown_to {
        in_store = chown_created(in_store, to)?;
    }
    late.extend(in_store);
    late.push(Op::PivotRoot {
        new_root: cpath(&root)?,
    });
    late.push(Op::Chdir(cstr_bytes(
        SANDBOX_BUILD_DIR.as_bytes(),
        "build dir",
    )?));

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

    #[test]
    fn the_late_plan_alone_is_the_full_plans_late_part() {
        let d = tempfile::tempdir().unwrap();
        let s = spec(d.path());
        let root = d.path().join("root");
        let stage = d.path().join("stage");
        for chown in [None, Some((1000, 100))] {
            let full = prepare(&s, &root, Some(&stage), chown).unwrap();
            let late = prepare_late(&s, &root, Some(&stage), chown).unwrap();
            assert!(late.early.is_empty());
            assert!(!full.early.is_empty());
            assert_eq!(format!("{:?}", late.late), format!("{:?}", full.late));
            assert_eq!(late.argv, full.argv);
            assert_eq!(late.envp, full.envp);
            assert_eq!(late.builder, full.builder);
            // The extra path inside the store is the build's own (late).
            assert!(format!("{:?}", late.late).contains("/nix/store/extra"));
        }
    }
}
