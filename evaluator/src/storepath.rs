//! Store access during evaluation, as a thin string-typed layer over
//! b3-store (`nixbase32`, `StoreDir::make_*_path`, the local store) and
//! b3-nar (NAR hashing). The evaluator handles paths as strings; this module
//! does the conversions, and owns:
//! - the *filtered* NAR hash and copy (`builtins.path` with a `filter`,
//!   `filterSource`), because b3-nar serialises whole trees and the filter
//!   is an evaluator callback deciding entry by entry;
//! - [`StoreOptions`] / [`StoreIo`]: whether paths made during evaluation
//!   (fetches, filtered sources) go into the local b3 store or only into a
//!   per-evaluation scratch directory (read-only mode), and where the
//!   contents of a logical store path are on disk ([`realise_path`]),
//!   building it through the import-from-derivation hook when it is the
//!   missing output of a derivation the evaluator computed.

use std::cell::{OnceCell, RefCell};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustc_hash::FxHashMap;

use b3_store::hash::{Hash, HashAlgo, Hasher};
use b3_store::path::{FileIngestionMethod, StoreDir, StorePath};

pub fn nixbase32(h: &[u8]) -> String {
    b3_store::nixbase32::encode(h)
}

pub fn nixbase32_decode(s: &str) -> Option<Vec<u8>> {
    b3_store::nixbase32::decode(s).ok()
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(Hash::digest(HashAlgo::Sha256, data).as_bytes());
    out
}

pub fn hex(h: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(h)
}

pub fn store_dir(dir: &str) -> Result<StoreDir, String> {
    StoreDir::new(dir).map_err(|e| e.to_string())
}

fn parse_refs(sd: &StoreDir, refs: &[String]) -> Result<BTreeSet<StorePath>, String> {
    refs.iter()
        .map(|r| {
            sd.parse(r)
                .map_err(|e| format!("invalid reference '{r}': {e}"))
        })
        .collect()
}

/// `builtins.toFile`: the text path of `content` with `refs`.
pub fn make_text_path(
    dir: &str,
    name: &str,
    content: &[u8],
    refs: &[String],
) -> Result<String, String> {
    let sd = store_dir(dir)?;
    let refs = parse_refs(&sd, refs)?;
    let p = sd
        .compute_text_path(name, content, &refs)
        .map_err(|e| e.to_string())?;
    Ok(sd.display(&p))
}

/// A fixed-output path; `recursive` is NAR (as opposed to flat) hashing.
pub fn make_fixed_output_path(
    dir: &str,
    recursive: bool,
    algo: &str,
    hash: &[u8],
    name: &str,
    refs: &[String],
) -> Result<String, String> {
    let sd = store_dir(dir)?;
    let algo =
        HashAlgo::from_name(algo).ok_or_else(|| format!("unknown hash algorithm '{algo}'"))?;
    let hash = Hash::from_bytes(algo, hash).map_err(|e| e.to_string())?;
    let method = if recursive {
        FileIngestionMethod::Recursive
    } else {
        FileIngestionMethod::Flat
    };
    let p = sd
        .make_fixed_output_path(method, &hash, name, &parse_refs(&sd, refs)?, false)
        .map_err(|e| e.to_string())?;
    Ok(sd.display(&p))
}

/// Decides (full path, file type) whether an entry goes into a NAR.
pub type EntryFilter<'a> = dyn FnMut(&str, &str) -> Result<bool, String> + 'a;

/// NAR sha256 of `path`; `filter` decides (full path, type) whether an entry
/// below the root is included. Without a filter this is b3-nar's hash.
pub fn nar_hash(path: &str, filter: Option<&mut EntryFilter<'_>>) -> Result<[u8; 32], String> {
    match filter {
        None => b3_nar::hash_path(std::path::Path::new(path))
            .map(|h| h.sha256)
            .map_err(|e| format!("hashing '{path}': {e}")),
        Some(filter) => {
            let mut w = NarHashWriter {
                h: Hasher::new(HashAlgo::Sha256),
            };
            w.s("nix-archive-1");
            dump_filtered(&mut w, path, filter)?;
            let mut out = [0u8; 32];
            out.copy_from_slice(w.h.finish().as_bytes());
            Ok(out)
        }
    }
}

/// Feeds NAR framing (length-prefixed, 8-byte padded strings) to a hasher.
struct NarHashWriter {
    h: Hasher,
}

impl NarHashWriter {
    fn bytes(&mut self, b: &[u8]) {
        self.h.update(&(b.len() as u64).to_le_bytes());
        self.h.update(b);
        self.pad(b.len() as u64);
    }
    fn pad(&mut self, len: u64) {
        let pad = ((8 - len % 8) % 8) as usize;
        self.h.update(&[0u8; 8][..pad]);
    }
    fn s(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }
}

fn dump_filtered(
    w: &mut NarHashWriter,
    path: &str,
    filter: &mut EntryFilter<'_>,
) -> Result<(), String> {
    let md =
        std::fs::symlink_metadata(path).map_err(|e| format!("getting status of '{path}': {e}"))?;
    w.s("(");
    let ft = md.file_type();
    if ft.is_symlink() {
        let t = std::fs::read_link(path).map_err(|e| format!("reading link '{path}': {e}"))?;
        w.s("type");
        w.s("symlink");
        w.s("target");
        w.bytes(t.as_os_str().as_encoded_bytes());
    } else if ft.is_dir() {
        w.s("type");
        w.s("directory");
        let mut names = Vec::new();
        for e in std::fs::read_dir(path).map_err(|e| format!("reading directory '{path}': {e}"))? {
            let e = e.map_err(|e| format!("reading directory '{path}': {e}"))?;
            names.push(e.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        for n in names {
            let child = format!("{}/{}", path.trim_end_matches('/'), n);
            let cmd = std::fs::symlink_metadata(&child)
                .map_err(|e| format!("getting status of '{child}': {e}"))?;
            if !filter(&child, file_type_name(&cmd.file_type()))? {
                continue;
            }
            w.s("entry");
            w.s("(");
            w.s("name");
            w.s(&n);
            w.s("node");
            dump_filtered(w, &child, filter)?;
            w.s(")");
        }
    } else {
        w.s("type");
        w.s("regular");
        if b3_store::os::is_executable(&md) {
            w.s("executable");
            w.s("");
        }
        w.s("contents");
        w.h.update(&md.len().to_le_bytes());
        let mut f = std::fs::File::open(path).map_err(|e| format!("opening '{path}': {e}"))?;
        let mut buf = vec![0u8; 65536];
        let mut total = 0u64;
        loop {
            let n = f
                .read(&mut buf)
                .map_err(|e| format!("reading '{path}': {e}"))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            w.h.update(&buf[..n]);
        }
        if total != md.len() {
            return Err(format!("file '{path}' changed while it was being hashed"));
        }
        w.pad(total);
    }
    w.s(")");
    Ok(())
}

pub fn file_type_name(ft: &std::fs::FileType) -> &'static str {
    if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "directory"
    } else if ft.is_file() {
        "regular"
    } else {
        "unknown"
    }
}

// ---------- where store paths made during evaluation live ----------

/// Builds the derivation `drv` (a `.drv` path the evaluator computed) so
/// that its output `output` becomes valid; gets the evaluator so it can write
/// the `.drv` closure first. Set by the CLI to the builder.
pub type RealiseHook =
    Arc<dyn Fn(&crate::eval::Ev, &str, &str) -> Result<(), String> + Send + Sync>;

static DEFAULT_REALISE: std::sync::OnceLock<RealiseHook> = std::sync::OnceLock::new();

/// Sets the realise hook that command-line evaluations (`nix_cli`) use; the
/// CLI sets it once to the builder. Later calls are ignored.
pub fn set_default_realise_hook(hook: RealiseHook) {
    let _ = DEFAULT_REALISE.set(hook);
}

/// The hook set with [`set_default_realise_hook`], if any.
pub fn default_realise_hook() -> Option<RealiseHook> {
    DEFAULT_REALISE.get().cloned()
}

/// How evaluation reaches the store.
#[derive(Clone, Default)]
pub struct StoreOptions {
    /// Add fetched and filtered paths to the local b3 store as they are made
    /// (as Nix does). Off: they are only computed, their contents kept in a
    /// scratch directory for the rest of the evaluation (read-only mode).
    pub write: bool,
    /// Physical root of the local b3 store; `None`: `$B3_STORE` or the
    /// default data directory.
    pub root: Option<PathBuf>,
    /// Import from derivation: builds a missing derivation output.
    pub realise: Option<RealiseHook>,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("write", &self.write)
            .field("root", &self.root)
            .field("realise", &self.realise.is_some())
            .finish()
    }
}

/// Per-evaluation store state: the opened local store, the scratch
/// directory, paths made in read-only mode, and the fetch cache.
#[derive(Default)]
pub struct StoreIo {
    /// Reset in a forked child (see [`StoreIo::after_fork`]): a database
    /// connection must not be shared by two processes.
    store: RefCell<Option<Result<b3_store::local::LocalStore, String>>>,
    scratch: OnceCell<Result<Scratch, String>>,
    counter: std::cell::Cell<u64>,
    /// Logical store path -> where its contents are (read-only mode).
    local: RefCell<FxHashMap<String, PathBuf>>,
    /// Fetch results by request, so one evaluation fetches a URL once.
    pub fetch_cache: RefCell<FxHashMap<String, crate::value::Value>>,
    /// Source path -> the store path it was copied to (Nix's `srcToStore`):
    /// `"${./builder.sh}"` is hashed once per evaluation, not once per use.
    src_to_store: RefCell<FxHashMap<String, String>>,
}

/// A directory removed when the evaluation ends, by the process that made it.
struct Scratch(PathBuf, u32);

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.1 == std::process::id() {
            remove_scratch(&self.0);
        }
    }
}

fn remove_scratch(dir: &Path) {
    make_writable(dir);
    let _ = std::fs::remove_dir_all(dir);
}

fn make_writable(p: &Path) {
    if let Ok(md) = std::fs::symlink_metadata(p) {
        if md.is_dir() {
            let _ = b3_store::os::set_mode(p, 0o755);
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    make_writable(&e.path());
                }
            }
        }
    }
}

impl StoreIo {
    /// The local b3 store, opened on first use.
    pub fn store(
        &self,
        opts: &StoreOptions,
        dir: &str,
    ) -> Result<b3_store::local::LocalStore, String> {
        let mut slot = self.store.borrow_mut();
        slot.get_or_insert_with(|| {
            use b3_store::local::{LocalStore, LocalStoreConfig};
            let mut cfg =
                LocalStoreConfig::resolve(opts.root.clone()).map_err(|e| e.to_string())?;
            cfg.store_dir = store_dir(dir)?;
            LocalStore::open(cfg).map_err(|e| format!("opening the b3 store: {e}"))
        })
        .clone()
    }

    /// Called first thing in a child made by `fork()` that goes on
    /// evaluating: the parent's store handle (database connection, temporary
    /// roots) is abandoned without closing it, and the child opens its own on
    /// first use. Scratch paths stay apart because their names carry the pid.
    pub fn after_fork(&self) {
        if let Some(old) = self.store.borrow_mut().take() {
            std::mem::forget(old);
        }
    }

    /// Called by a forked child before it `_exit`s: removes the scratch
    /// directory if this child made it (the parent's is the parent's).
    pub fn finish_child(&self) {
        if let Some(Ok(s)) = self.scratch.get() {
            if s.1 == std::process::id() {
                remove_scratch(&s.0);
            }
        }
    }

    /// A fresh, empty path inside the scratch directory (not created).
    pub fn scratch_path(&self, what: &str) -> Result<PathBuf, String> {
        let dir = self
            .scratch
            .get_or_init(|| {
                let d = std::env::temp_dir().join(format!(
                    "b3-eval-{}-{:x}",
                    std::process::id(),
                    self as *const _ as usize
                ));
                std::fs::create_dir_all(&d)
                    .map_err(|e| format!("creating scratch directory '{}': {e}", d.display()))?;
                Ok(Scratch(d, std::process::id()))
            })
            .as_ref()
            .map_err(|e| e.clone())?;
        let n = self.counter.get() + 1;
        self.counter.set(n);
        Ok(dir.0.join(format!("{n}-{}-{what}", std::process::id())))
    }

    /// The store path `src` was copied to earlier in this evaluation.
    pub fn copied_source(&self, src: &str) -> Option<String> {
        self.src_to_store.borrow().get(src).cloned()
    }

    /// Remembers that `src` was copied to `store_path`.
    pub fn record_copied_source(&self, src: &str, store_path: &str) {
        self.src_to_store
            .borrow_mut()
            .insert(src.to_string(), store_path.to_string());
    }

    /// Records that the contents of `store_path` are at `at` (read-only mode).
    pub fn record_local(&self, store_path: &str, at: PathBuf) {
        self.local.borrow_mut().insert(store_path.to_string(), at);
    }

    /// The physical directory of the b3 store's paths, without opening it.
    fn physical_store_dir(opts: &StoreOptions, dir: &str) -> Option<PathBuf> {
        let root = opts
            .root
            .clone()
            .or_else(|| std::env::var_os("B3_STORE").map(PathBuf::from))
            .or_else(b3_store::local::LocalStoreConfig::default_root)?;
        Some(root.join(dir.trim_start_matches('/')))
    }
}

/// Puts the tree (or file) at `src` into the store as `expected`, a path
/// already computed from its contents with `method`/sha256 under `name`:
/// into the local b3 store in write mode, else by recording `src` (which
/// must then stay put, i.e. live in the scratch directory) as its contents.
pub fn add_computed(
    ev: &crate::eval::Ev,
    src: &Path,
    name: &str,
    recursive: bool,
    expected: &str,
) -> Result<(), String> {
    let opts = &ev.opts.store;
    if !opts.write {
        ev.store_io.record_local(expected, src.to_path_buf());
        return Ok(());
    }
    let store = ev.store_io.store(opts, &ev.opts.store_dir)?;
    let method = if recursive {
        FileIngestionMethod::Recursive
    } else {
        FileIngestionMethod::Flat
    };
    let got = store
        .add_path_sync(name, src, method, HashAlgo::Sha256)
        .map_err(|e| format!("adding '{}' to the b3 store: {e}", src.display()))?;
    let got = store.print_path(&got);
    if got != expected {
        return Err(format!(
            "'{}' was added to the store as '{got}', not '{expected}'",
            src.display()
        ));
    }
    Ok(())
}

/// The top-level store path of `path` (`<store>/<hash>-<name>`) and the rest.
fn split_store_path<'a>(dir: &str, path: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = path.strip_prefix(dir)?.strip_prefix('/')?;
    let end = rest.find('/').unwrap_or(rest.len());
    if end == 0 {
        return None;
    }
    let top_len = dir.len() + 1 + end;
    Some((&path[..top_len], &path[top_len..]))
}

/// Where the contents of `path` are on disk, for reading it (`import`,
/// `readFile`, `pathExists`, ...). Paths outside the store are themselves.
/// A store path is looked up among the paths this evaluation made, then in
/// the local b3 store, then on the filesystem; a missing output of a
/// derivation the evaluator computed is built through the realise hook
/// (import from derivation), or is a clear error without one.
pub fn realise_path(ev: &crate::eval::Ev, path: &str) -> Result<String, String> {
    let dir = ev.opts.store_dir.as_str();
    let Some((top, rest)) = split_store_path(dir, path) else {
        return Ok(path.to_string());
    };
    if let Some(at) = ev.store_io.local.borrow().get(top) {
        return Ok(format!("{}{rest}", at.display()));
    }
    // Sources computed but not added yet are read where they come from.
    let src = ev.sources.borrow().get(top).cloned();
    match src {
        Some(crate::builtins::store::Source::Path(fs, _)) => return Ok(format!("{fs}{rest}")),
        Some(crate::builtins::store::Source::Text(name, text, _)) => {
            let at = ev.store_io.scratch_path(&name)?;
            std::fs::write(&at, &text).map_err(|e| format!("writing '{}': {e}", at.display()))?;
            ev.store_io.record_local(top, at.clone());
            return Ok(format!("{}{rest}", at.display()));
        }
        None => {}
    }
    let physical = StoreIo::physical_store_dir(&ev.opts.store, dir);
    let in_b3 = |physical: &Option<PathBuf>| -> Option<String> {
        let base = &top[dir.len() + 1..];
        let p = physical.as_ref()?.join(base);
        std::fs::symlink_metadata(&p)
            .is_ok()
            .then(|| format!("{}{rest}", p.display()))
    };
    if let Some(p) = in_b3(&physical) {
        return Ok(p);
    }
    if std::fs::symlink_metadata(top).is_ok() {
        return Ok(path.to_string());
    }
    let Some((drv, output)) = output_of(ev, top) else {
        return Ok(path.to_string());
    };
    match &ev.opts.store.realise {
        Some(hook) => {
            hook(ev, &drv, &output).map_err(|e| {
                format!("cannot build '{drv}' (output '{output}') to read '{path}': {e}")
            })?;
            in_b3(&physical)
                .ok_or_else(|| format!("building '{drv}' did not produce '{top}' in the b3 store"))
        }
        None => Err(format!(
            "cannot read '{path}': it is output '{output}' of derivation '{drv}', which is not \
             built, and this evaluation cannot build (import from derivation): build it first \
             (b3 build {drv})"
        )),
    }
}

/// The derivation (drv path, output name) among those evaluated so far
/// whose output is `store_path`.
fn output_of(ev: &crate::eval::Ev, store_path: &str) -> Option<(String, String)> {
    let sd = ev.drv_hashes.borrow().store_dir().clone();
    let sp = sd.parse(store_path).ok()?;
    for (drv_path, d) in ev.drvs.borrow().iter() {
        for (name, out) in &d.drv.outputs {
            if out.path() == Some(&sp) {
                return Some((drv_path.clone(), name.clone()));
            }
        }
    }
    None
}

/// Copies the tree at `src` to `dst` (which must not exist), keeping only
/// the entries `filter` accepts; symlinks are copied, not followed.
pub fn copy_filtered(src: &str, dst: &Path, filter: &mut EntryFilter<'_>) -> Result<(), String> {
    let md =
        std::fs::symlink_metadata(src).map_err(|e| format!("getting status of '{src}': {e}"))?;
    let ft = md.file_type();
    let werr = |e: std::io::Error| format!("writing '{}': {e}", dst.display());
    if ft.is_symlink() {
        let t = std::fs::read_link(src).map_err(|e| format!("reading link '{src}': {e}"))?;
        b3_store::os::symlink(&t, dst).map_err(werr)?;
    } else if ft.is_dir() {
        std::fs::create_dir(dst).map_err(werr)?;
        let mut names = Vec::new();
        for e in std::fs::read_dir(src).map_err(|e| format!("reading directory '{src}': {e}"))? {
            names.push(
                e.map_err(|e| format!("reading directory '{src}': {e}"))?
                    .file_name(),
            );
        }
        names.sort();
        for n in names {
            let child = format!("{}/{}", src.trim_end_matches('/'), n.to_string_lossy());
            let cmd = std::fs::symlink_metadata(&child)
                .map_err(|e| format!("getting status of '{child}': {e}"))?;
            if !filter(&child, file_type_name(&cmd.file_type()))? {
                continue;
            }
            copy_filtered(&child, &dst.join(&n), filter)?;
        }
    } else {
        std::fs::copy(src, dst).map_err(|e| format!("copying '{src}': {e}"))?;
        let mode = if b3_store::os::is_executable(&md) {
            0o755
        } else {
            0o644
        };
        b3_store::os::set_mode(dst, mode).map_err(werr)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nixbase32_roundtrip() {
        let h = sha256(b"hello");
        let e = nixbase32(&h);
        assert_eq!(e.len(), 52);
        assert_eq!(nixbase32_decode(&e).unwrap(), h.to_vec());
    }

    #[test]
    fn text_path_matches_nix() {
        // nix-instantiate --eval -E 'builtins.toFile "foo" "bar"' (Nix 2.8)
        let p = make_text_path("/nix/store", "foo", b"bar", &[]).unwrap();
        assert_eq!(p, "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo");
    }

    // Builds a tree with a symlink.
    #[cfg(unix)]
    #[test]
    fn filtered_nar_hash_accepting_everything_equals_b3_nar() {
        let d = std::env::temp_dir().join(format!("b3-eval-narhash-{}", std::process::id()));
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("a"), b"hello").unwrap();
        std::fs::write(d.join("sub/b"), b"0123456789").unwrap();
        std::os::unix::fs::symlink("a", d.join("l")).unwrap();
        let p = d.to_str().unwrap();
        let mut all = |_: &str, _: &str| Ok(true);
        let filtered = nar_hash(p, Some(&mut all)).unwrap();
        let whole = nar_hash(p, None).unwrap();
        std::fs::remove_dir_all(&d).unwrap();
        assert_eq!(filtered, whole);
    }
}
