//! Runtimes: a process tree that sees exactly one closure at the logical
//! store directory (usually `/nix/store`), through a view mounted in its own
//! user + mount namespace.
//!
//! Shape of a runtime:
//! - [`launch`] prepares a *server* process (any executable that ends up in
//!   [`serve_main`], such as `b3 runtime serve` or the `b3-vfs-runtime`
//!   binary), started with `posix_spawn`: nothing runs between fork and
//!   exec, so no thread of the caller is involved and a large caller is
//!   not copied. The server enters new user and mount namespaces itself,
//!   first thing, while it has one thread.
//! - The closure travels on an inherited memfd (NUL-terminated names), not
//!   in the argument vector, which holds only a few MiB (about 40,000 store
//!   paths); the server uses that buffer as the view's name set as is.
//! - The server makes its mounts private, mounts the view over the store
//!   directory (the mount costs the same whatever the closure's size: names
//!   resolve on first lookup), registers itself in a registry directory and
//!   runs the command.
//! - [`enter`] joins a running runtime's namespaces and execs a command
//!   there; [`list`] and [`stop`] read and act on the registry.
//! - The runtime ends when the last process in its mount namespace other
//!   than the server has exited (polled through `/proc`, as netlink process
//!   events need privileges), and the namespace goes with the server.

use std::ffi::OsString;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::time::Duration;

use crate::odb::Odb;
use crate::view::trace::Tracer;
use crate::view::{mount_closure, ClosureSet, ViewOptions};

/// Errors of runtime management.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("runtime arguments: {0}")]
    Usage(String),
    #[error("no running runtime {0}")]
    NotFound(String),
    #[error(transparent)]
    Odb(#[from] crate::odb::Error),
    #[error(transparent)]
    Mount(#[from] crate::view::MountError),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// What a runtime serves and runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeSpec {
    /// Object database directory.
    pub odb: PathBuf,
    /// Where the closure appears inside the runtime.
    pub store_dir: PathBuf,
    /// Registry of running runtimes (see [`default_registry`]).
    pub registry: PathBuf,
    /// Append an access trace here (see [`crate::view::trace`]).
    pub trace_log: Option<PathBuf>,
    /// Store path base names visible in the runtime.
    pub closure: Vec<String>,
    /// The command to run (required).
    pub command: Vec<OsString>,
}

impl RuntimeSpec {
    /// The argument vector [`serve_main`] parses back into this spec, with
    /// the closure as `--path` arguments (see [`RuntimeSpec::to_args_with_fd`]
    /// for closures of any size).
    pub fn to_args(&self) -> Vec<OsString> {
        self.args(None)
    }

    /// The argument vector with the closure left out: the server reads it
    /// from inherited descriptor `closure_fd` (NUL-terminated names).
    pub fn to_args_with_fd(&self, closure_fd: RawFd) -> Vec<OsString> {
        self.args(Some(closure_fd))
    }

    fn args(&self, closure_fd: Option<RawFd>) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--odb".into(),
            self.odb.clone().into(),
            "--store-dir".into(),
            self.store_dir.clone().into(),
            "--registry".into(),
            self.registry.clone().into(),
        ];
        if let Some(t) = &self.trace_log {
            a.push("--trace".into());
            a.push(t.clone().into());
        }
        match closure_fd {
            Some(fd) => {
                a.push("--closure-fd".into());
                a.push(fd.to_string().into());
            }
            None => {
                for p in &self.closure {
                    a.push("--path".into());
                    a.push(p.into());
                }
            }
        }
        a.push("--".into());
        a.extend(self.command.iter().cloned());
        a
    }

    /// Parses what [`RuntimeSpec::to_args`] wrote.
    pub fn from_args(args: &[OsString]) -> Result<Self, Error> {
        let (spec, fd) = Self::from_args_with_fd(args)?;
        match fd {
            None => Ok(spec),
            Some(_) => Err(Error::Usage(
                "--closure-fd is for the runtime server only".into(),
            )),
        }
    }

    /// Parses what [`RuntimeSpec::to_args`] or
    /// [`RuntimeSpec::to_args_with_fd`] wrote; the descriptor, if any, is
    /// returned unread.
    pub fn from_args_with_fd(args: &[OsString]) -> Result<(Self, Option<RawFd>), Error> {
        let mut spec = RuntimeSpec {
            odb: PathBuf::new(),
            store_dir: PathBuf::from("/nix/store"),
            registry: default_registry(),
            trace_log: None,
            closure: Vec::new(),
            command: Vec::new(),
        };
        let mut closure_fd = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut val = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| Error::Usage(format!("{name} needs a value")))
            };
            match a.to_str() {
                Some("--odb") => spec.odb = val("--odb")?.into(),
                Some("--store-dir") => spec.store_dir = val("--store-dir")?.into(),
                Some("--registry") => spec.registry = val("--registry")?.into(),
                Some("--trace") => spec.trace_log = Some(val("--trace")?.into()),
                Some("--path") => spec.closure.push(
                    val("--path")?
                        .into_string()
                        .map_err(|_| Error::Usage("store path names are UTF-8".into()))?,
                ),
                Some("--closure-fd") => {
                    let v = val("--closure-fd")?;
                    let fd = v
                        .to_str()
                        .and_then(|v| v.parse::<RawFd>().ok())
                        .filter(|&fd| fd > 2)
                        .ok_or_else(|| Error::Usage(format!("bad --closure-fd {v:?}")))?;
                    closure_fd = Some(fd);
                }
                Some("--") => {
                    spec.command = it.cloned().collect();
                    break;
                }
                _ => return Err(Error::Usage(format!("unexpected argument {a:?}"))),
            }
        }
        if spec.odb.as_os_str().is_empty() {
            return Err(Error::Usage("--odb is required".into()));
        }
        if spec.command.is_empty() {
            return Err(Error::Usage("a command is required after --".into()));
        }
        Ok((spec, closure_fd))
    }
}

/// `/run/b3/runtimes` for root, else `$XDG_RUNTIME_DIR/b3/runtimes`, else
/// `/tmp/b3-<uid>/runtimes`.
pub fn default_registry() -> PathBuf {
    let uid = rustix::process::getuid().as_raw();
    if uid == 0 {
        return PathBuf::from("/run/b3/runtimes");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d).join("b3/runtimes"),
        _ => PathBuf::from(format!("/tmp/b3-{uid}/runtimes")),
    }
}

/// A server ready to start (see [`launch`]): the command, and the closure's
/// memfd, which must stay open until the command has been spawned. Derefs
/// to the command, so `launch(..)?.status()` works.
pub struct Launch {
    cmd: Command,
    closure: OwnedFd,
}

impl Launch {
    /// The command and the memfd to keep open until it is spawned.
    pub fn into_parts(self) -> (Command, OwnedFd) {
        (self.cmd, self.closure)
    }
}

impl std::ops::Deref for Launch {
    type Target = Command;
    fn deref(&self) -> &Command {
        &self.cmd
    }
}

impl std::ops::DerefMut for Launch {
    fn deref_mut(&mut self) -> &mut Command {
        &mut self.cmd
    }
}

/// Prepares the server `exe` with `prefix` arguments (e.g. `["runtime",
/// "serve"]`) followed by the spec; the server enters new user and mount
/// namespaces itself ([`serve_main`]). Stdio is inherited. The closure goes
/// to the server on a memfd it inherits.
///
/// No code runs between fork and exec, so the command is started with
/// `posix_spawn` (a vfork): the caller's memory is neither copied nor torn
/// down, which a fork and exec of a large caller (one holding a large
/// closure) would pay. The price: the memfd is inheritable until the
/// [`Launch`] is dropped, so a child another thread starts meanwhile
/// inherits it too.
pub fn launch(exe: &Path, prefix: &[&str], spec: &RuntimeSpec) -> Result<Launch, Error> {
    let closure = closure_memfd(&spec.closure)?;
    let mut cmd = Command::new(exe);
    cmd.args(prefix)
        .args(spec.to_args_with_fd(closure.as_raw_fd()));
    Ok(Launch { cmd, closure })
}

/// Makes this process the first of new user and mount namespaces, with
/// its own ids mapped to root: a process writing its own maps after
/// unshare has no capability in the parent namespace, so it can map only
/// its own ids (root too). Needs a single-threaded process.
fn enter_new_namespaces() -> Result<(), Error> {
    let uid = rustix::process::getuid().as_raw();
    let gid = rustix::process::getgid().as_raw();
    let what = "entering new user and mount namespaces";
    // SAFETY: unshare takes flags only.
    if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
        return Err(io_err(what)(io::Error::last_os_error()));
    }
    write_proc(c"/proc/self/setgroups", b"deny")
        .and_then(|_| write_proc(c"/proc/self/uid_map", format!("0 {uid} 1\n").as_bytes()))
        .and_then(|_| write_proc(c"/proc/self/gid_map", format!("0 {gid} 1\n").as_bytes()))
        .map_err(io_err(what))
}

/// A close-on-exec memfd holding `bytes`.
fn closure_memfd_cloexec(bytes: &[u8]) -> Result<OwnedFd, Error> {
    let fd = rustix::fs::memfd_create("b3-runtime-closure", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| io_err("creating the closure's memfd")(e.into()))?;
    let mut f = fs::File::from(fd);
    f.write_all(bytes)
        .map_err(io_err("writing the closure's memfd"))?;
    Ok(f.into())
}

/// An inheritable memfd holding `names`, each followed by a NUL.
fn closure_memfd(names: &[String]) -> Result<OwnedFd, Error> {
    let fd = rustix::fs::memfd_create("b3-runtime-closure", rustix::fs::MemfdFlags::empty())
        .map_err(|e| io_err("creating the closure's memfd")(e.into()))?;
    let mut f = io::BufWriter::with_capacity(1 << 16, fs::File::from(fd));
    for n in names {
        f.write_all(n.as_bytes())
            .and_then(|_| f.write_all(b"\0"))
            .map_err(io_err("writing the closure's memfd"))?;
    }
    let f = f
        .into_inner()
        .map_err(|e| io_err("writing the closure's memfd")(e.into_error()))?;
    Ok(f.into())
}

/// Reads the closure handed over on descriptor `fd` (see [`launch`]);
/// returns it with the memfd, now close-on-exec, which the server keeps
/// open for the registry (see [`RuntimeInfo::render_with_fd`]).
fn read_closure_fd(fd: RawFd) -> Result<(Vec<u8>, fs::File), Error> {
    // SAFETY: fcntl only queries the descriptor; it fails on a closed one.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(io_err(format!("the closure descriptor {fd}"))(
            io::Error::last_os_error(),
        ));
    }
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process for it alone to read (`launch`), so owning it here is sound.
    let mut f = fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    // One exact allocation: the names can be several MiB.
    let len = f.metadata().map_err(io_err("reading the closure"))?.len();
    let mut buf = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    f.rewind()
        .and_then(|_| f.read_to_end(&mut buf))
        .map_err(io_err("reading the closure"))?;
    // SAFETY: fcntl on a descriptor this function owns.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
        return Err(io_err("keeping the closure")(io::Error::last_os_error()));
    }
    Ok((buf, f))
}

/// open + write + close of a /proc file with plain system calls.
fn write_proc(path: &std::ffi::CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: plain system calls on a NUL-terminated path and a live buffer.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = libc::write(fd, data.as_ptr().cast(), data.len());
        let err = io::Error::last_os_error();
        libc::close(fd);
        if n < 0 || n as usize != data.len() {
            return Err(err);
        }
    }
    Ok(())
}

/// One entry of the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    pub id: String,
    /// The server process.
    pub pid: u32,
    pub start_time: u64,
    pub store_dir: PathBuf,
    pub closure: Vec<String>,
    pub command: Vec<String>,
}

impl RuntimeInfo {
    /// The registry record: `key=value` lines, then a `paths=COUNT` line
    /// followed by the closure's names, each followed by a NUL.
    #[cfg(test)]
    fn render(&self) -> Vec<u8> {
        let mut names = Vec::new();
        for p in &self.closure {
            names.extend_from_slice(p.as_bytes());
            names.push(0);
        }
        self.render_with(&names, self.closure.len())
    }

    /// The record with `names` (NUL-terminated, `count` of them) as the
    /// closure, whatever `self.closure` holds: written as one block, with no
    /// work per name.
    #[cfg(test)]
    fn render_with(&self, names: &[u8], count: usize) -> Vec<u8> {
        let mut out = self.render_head().into_bytes();
        out.extend_from_slice(format!("paths={count}\n").as_bytes());
        out.extend_from_slice(names);
        out
    }

    /// The record a server writes: its closure stays in the memfd it was
    /// handed, open as descriptor `fd` of the server, which readers open
    /// through `/proc/PID/fd/FD` (see [`list`]). Nothing per name is
    /// written: a closure of 100,000 paths is some MiB, and writing those to
    /// a disk on a busy machine held up a runtime's start by tens of ms.
    fn render_with_fd(&self, fd: RawFd) -> Vec<u8> {
        let mut s = self.render_head();
        s.push_str(&format!("closure_fd={fd}\n"));
        s.into_bytes()
    }

    fn render_head(&self) -> String {
        let mut s = format!(
            "pid={}\nstart_time={}\nstore_dir={}\n",
            self.pid,
            self.start_time,
            self.store_dir.display()
        );
        for c in &self.command {
            s.push_str(&format!("arg={}\n", c.replace('\n', " ")));
        }
        s
    }

    /// The record's fields, and the server's descriptor holding the
    /// closure if the record names one instead of listing the names.
    fn parse(id: &str, record: &[u8]) -> Option<(Self, Option<RawFd>)> {
        let mut info = RuntimeInfo {
            id: id.to_owned(),
            pid: 0,
            start_time: 0,
            store_dir: PathBuf::new(),
            closure: Vec::new(),
            command: Vec::new(),
        };
        let mut closure_fd = None;
        let mut rest = record;
        while !rest.is_empty() {
            let nl = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            let line = std::str::from_utf8(&rest[..nl]).ok()?;
            rest = rest.get(nl + 1..).unwrap_or_default();
            let (k, v) = line.split_once('=')?;
            match k {
                "pid" => info.pid = v.parse().ok()?,
                "start_time" => info.start_time = v.parse().ok()?,
                "store_dir" => info.store_dir = v.into(),
                "arg" => info.command.push(v.to_owned()),
                "closure_fd" => closure_fd = Some(v.parse().ok()?),
                "paths" => {
                    // The names end the record.
                    let names = std::str::from_utf8(rest).ok()?;
                    info.closure = names.split_terminator('\0').map(str::to_owned).collect();
                    break;
                }
                _ => {}
            }
        }
        (info.pid != 0).then_some((info, closure_fd))
    }

    /// Whether the server is still the process that registered.
    pub fn alive(&self) -> bool {
        proc_start_time(self.pid) == Some(self.start_time)
    }
}

fn proc_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn mnt_ns(pid: &str) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/mnt")).ok()
}

/// Processes (thread group ids) whose mount namespace is `ns`, except `but`.
fn processes_in(ns: &Path, but: u32) -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != but)
        .filter(|pid| mnt_ns(&pid.to_string()).as_deref() == Some(ns))
        .collect()
}

/// Running runtimes in `registry`; stale records are removed.
pub fn list(registry: &Path) -> Result<Vec<RuntimeInfo>, Error> {
    let rd = match fs::read_dir(registry) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(format!("listing {}", registry.display()))(e)),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io_err("listing runtimes"))?;
        let Some(id) = e.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if id.starts_with('.') {
            continue;
        }
        let record = fs::read(e.path()).unwrap_or_default();
        match RuntimeInfo::parse(&id, &record) {
            Some((mut info, fd)) if info.alive() => {
                if let Some(fd) = fd {
                    // Left empty if the server has just ended.
                    let names = fs::read(format!("/proc/{}/fd/{fd}", info.pid)).unwrap_or_default();
                    info.closure = String::from_utf8_lossy(&names)
                        .split_terminator('\0')
                        .map(str::to_owned)
                        .collect();
                }
                out.push(info)
            }
            _ => {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// Finds runtime `id` in `registry`.
pub fn find(registry: &Path, id: &str) -> Result<RuntimeInfo, Error> {
    list(registry)?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or_else(|| Error::NotFound(id.to_owned()))
}

/// Ends runtime `id`: SIGTERM to every process in it, SIGKILL after `grace`.
pub fn stop(registry: &Path, id: &str, grace: Duration) -> Result<(), Error> {
    let info = find(registry, id)?;
    let ns = mnt_ns(&info.pid.to_string()).ok_or_else(|| Error::NotFound(id.to_owned()))?;
    let signal_all = |sig| {
        for pid in processes_in(&ns, info.pid) {
            // SAFETY: kill(2) with a pid read from /proc.
            unsafe { libc::kill(pid as i32, sig) };
        }
    };
    signal_all(libc::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline && !processes_in(&ns, info.pid).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    signal_all(libc::SIGKILL);
    Ok(())
}

/// Builds a command that runs `command` inside runtime `id` (joining its
/// user and mount namespaces between fork and exec).
pub fn enter(registry: &Path, id: &str, command: &[OsString]) -> Result<Command, Error> {
    let info = find(registry, id)?;
    let (prog, args) = command
        .split_first()
        .ok_or_else(|| Error::Usage("a command is required".into()))?;
    let open = |kind: &str| {
        let p = format!("/proc/{}/ns/{kind}", info.pid);
        fs::File::open(&p).map_err(io_err(format!("opening {p}")))
    };
    let user = open("user")?;
    let mnt = open("mnt")?;
    let same_user = fs::read_link(format!("/proc/{}/ns/user", info.pid)).ok()
        == fs::read_link("/proc/self/ns/user").ok();
    let mut cmd = Command::new(prog);
    cmd.args(args);
    use std::os::fd::AsRawFd;
    let (ufd, mfd) = (user.as_raw_fd(), mnt.as_raw_fd());
    // SAFETY: only setns/chdir system calls on descriptors kept open by the
    // closure (it owns `user` and `mnt`).
    unsafe {
        cmd.pre_exec(move || {
            let _keep = (&user, &mnt);
            if !same_user && libc::setns(ufd, libc::CLONE_NEWUSER) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::setns(mfd, libc::CLONE_NEWNS) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::chdir(c"/".as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// The server side: call in the process [`launch`] started. Returns the
/// command's exit code once the last process of the runtime has exited.
pub fn serve_main(args: &[OsString]) -> Result<i32, Error> {
    // First, while this process has a single thread.
    enter_new_namespaces()?;
    let (spec, closure_fd) = RuntimeSpec::from_args_with_fd(args)?;
    // The names as one buffer (those from a descriptor, then any `--path`).
    let (mut names, closure_file) = match closure_fd {
        Some(fd) => {
            let (names, file) = read_closure_fd(fd)?;
            (names, Some(file))
        }
        None => (Vec::new(), None),
    };
    for p in &spec.closure {
        names.extend_from_slice(p.as_bytes());
        names.push(0);
    }
    let closure = Arc::new(ClosureSet::from_nul_terminated(names)?);
    // Mount events must not leak back to the parent namespace.
    rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| io_err("making mounts private")(e.into()))?;
    let odb = Odb::open(&spec.odb)?;
    let tracer = match &spec.trace_log {
        Some(p) => Some(Arc::new(
            Tracer::with_log(p).map_err(io_err(format!("opening {}", p.display())))?,
        )),
        None => None,
    };
    let opts = ViewOptions {
        tracer,
        // The runtime's processes may run under any mapped id.
        allow_other: true,
        ..ViewOptions::default()
    };
    let guard = mount_closure(&odb, closure.clone(), &spec.store_dir, opts)?;

    let me = std::process::id();
    let info = RuntimeInfo {
        id: format!("{me}-{}", proc_start_time(me).unwrap_or(0)),
        pid: me,
        start_time: proc_start_time(me).unwrap_or(0),
        store_dir: spec.store_dir.clone(),
        // Recorded from the name buffer below.
        closure: Vec::new(),
        command: spec
            .command
            .iter()
            .map(|c| c.to_string_lossy().into_owned())
            .collect(),
    };
    fs::create_dir_all(&spec.registry)
        .map_err(io_err(format!("creating {}", spec.registry.display())))?;
    let record = spec.registry.join(&info.id);
    let tmp = spec.registry.join(format!(".{}", info.id));
    // The names are read from the memfd (see `render_with_fd`), or, for a
    // closure given as arguments, from a memfd made here.
    let closure_file = match closure_file.filter(|_| spec.closure.is_empty()) {
        Some(f) => f,
        None => fs::File::from(closure_memfd_cloexec(closure.as_bytes())?),
    };
    fs::write(&tmp, info.render_with_fd(closure_file.as_raw_fd()))
        .and_then(|_| fs::rename(&tmp, &record))
        .map_err(io_err(format!(
            "registering in {}",
            spec.registry.display()
        )))?;

    let status = Command::new(&spec.command[0])
        .args(&spec.command[1..])
        .env("B3_RUNTIME", &info.id)
        .status();
    // Processes started by `enter` (or left behind) keep the runtime alive.
    if let Some(ns) = mnt_ns("self") {
        while !processes_in(&ns, me).is_empty() {
            reap_children();
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let _ = fs::remove_file(&record);
    drop(closure_file);
    guard.unmount()?;
    let status: ExitStatus = status.map_err(io_err(format!(
        "running {}",
        spec.command[0].to_string_lossy()
    )))?;
    Ok(exit_code(status))
}

fn reap_children() {
    // SAFETY: non-blocking waitpid on any child; no memory is involved.
    unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
}

fn exit_code(s: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        s.into()
    }

    #[test]
    fn spec_survives_its_argument_form() {
        let spec = RuntimeSpec {
            odb: "/o".into(),
            store_dir: "/nix/store".into(),
            registry: "/r".into(),
            trace_log: Some("/t.log".into()),
            closure: vec!["a-x".into(), "b-y".into()],
            command: vec!["sh".into(), "-c".into(), "echo --path".into()],
        };
        assert_eq!(RuntimeSpec::from_args(&spec.to_args()).unwrap(), spec);
    }

    #[test]
    fn a_spec_with_its_closure_on_a_descriptor_survives_its_argument_form() {
        let spec = RuntimeSpec {
            odb: "/o".into(),
            store_dir: "/nix/store".into(),
            registry: "/r".into(),
            trace_log: None,
            closure: vec!["a-x".into(), "b-y".into()],
            command: vec!["sh".into()],
        };
        let args = spec.to_args_with_fd(7);
        assert!(!args.iter().any(|a| a == "a-x"), "names stay out of argv");
        let (back, fd) = RuntimeSpec::from_args_with_fd(&args).unwrap();
        assert_eq!(fd, Some(7));
        assert_eq!(
            back,
            RuntimeSpec {
                closure: Vec::new(),
                ..spec
            }
        );
        assert!(RuntimeSpec::from_args(&args).is_err());
        for bad in ["x", "1", "-4"] {
            let args = [
                os("--odb"),
                os("/o"),
                os("--closure-fd"),
                os(bad),
                os("--"),
                os("sh"),
            ];
            assert!(RuntimeSpec::from_args_with_fd(&args).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_closure_memfd_holds_the_names_for_the_server() {
        let names: Vec<String> = (0..1000).map(|i| format!("{i:032}-decl")).collect();
        let fd = closure_memfd(&names).unwrap();
        // What the server does with the descriptor it inherits.
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        let (bytes, kept) = read_closure_fd(raw).unwrap();
        let set = ClosureSet::from_nul_terminated(bytes).unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), names);
        // Kept for the registry, but not for the server's command.
        // SAFETY: fcntl queries a descriptor `kept` owns.
        let flags = unsafe { libc::fcntl(kept.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        drop(kept);
        assert!(read_closure_fd(raw).is_err(), "closed with the file");
    }

    #[test]
    fn a_record_naming_the_servers_closure_descriptor_lists_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let names: Vec<String> = vec!["a-x".into(), "b-y".into()];
        let fd = closure_memfd_cloexec(b"a-x\0b-y\0").unwrap();
        let info = RuntimeInfo {
            id: "r".into(),
            pid: me,
            start_time: proc_start_time(me).unwrap(),
            store_dir: "/nix/store".into(),
            closure: Vec::new(),
            command: vec!["sh".into()],
        };
        fs::write(dir.path().join("r"), info.render_with_fd(fd.as_raw_fd())).unwrap();
        let listed = list(dir.path()).unwrap();
        assert_eq!(
            listed,
            vec![RuntimeInfo {
                closure: names,
                ..info
            }]
        );
    }

    #[test]
    fn spec_needs_odb_and_command() {
        assert!(RuntimeSpec::from_args(&[os("--"), os("sh")]).is_err());
        assert!(RuntimeSpec::from_args(&[os("--odb"), os("/o")]).is_err());
        assert!(RuntimeSpec::from_args(&[os("--bogus")]).is_err());
    }

    #[test]
    fn registry_records_round_trip_and_dead_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let live = RuntimeInfo {
            id: "live".into(),
            pid: me,
            start_time: proc_start_time(me).unwrap(),
            store_dir: "/nix/store".into(),
            closure: vec!["a-x".into()],
            command: vec!["sh".into()],
        };
        fs::write(dir.path().join("live"), live.render()).unwrap();
        let dead = RuntimeInfo {
            id: "dead".into(),
            start_time: 1,
            ..live.clone()
        };
        fs::write(dir.path().join("dead"), dead.render()).unwrap();
        assert_eq!(list(dir.path()).unwrap(), vec![live]);
        assert!(!dir.path().join("dead").exists());
        assert!(matches!(find(dir.path(), "dead"), Err(Error::NotFound(_))));
    }
}
