//! A persistent, content-addressed cache of lowered files, like Python's
//! `.pyc`: parsing with rnix and lowering to `ast::Expr` is most of the cost
//! of instantiating one nixpkgs attribute, and the files rarely change.
//!
//! An entry's key is a SHA-256 of the file's text and of everything else the
//! lowering depends on (base directory, the names in scope, pipe operators,
//! lint levels, raw-byte mode, `$HOME`), plus the format version and the
//! identity of the running b3 binary, so a rebuilt b3 never reads trees a
//! different lowering wrote. The value is [`codec`]'s encoding of the tree,
//! behind a header holding the key again and a checksum.
//!
//! Entries live in one SQLite database, `$XDG_CACHE_HOME/b3/parse-v2.sqlite`
//! (default `~/.cache/b3`), read one prepared query per file and written in
//! one transaction per process ([`db`]). An entry that is truncated, damaged
//! or written for another key is ignored and the file parsed again; a
//! database that cannot be opened or written means no cache (or no new
//! entries). `B3_PARSE_CACHE=0` turns the cache off. Once a day one process
//! deletes entries nobody used for a month, and the directory of one file
//! per entry that earlier b3 versions wrote is swept until empty
//! ([`sweep`]). Only
//! files that lowered without error and without lint checks are cached, so a
//! hit never has a warning to replay and parse errors always come from a real
//! parse.

pub mod codec;
pub mod db;
pub mod sweep;
// The tests evaluate files by their Unix paths as Nix path literals, and
// read the language tests and nixpkgs at Unix paths; the Windows build's
// suites (under wine) skip them.
#[cfg(all(test, unix))]
mod tests;

use std::cell::RefCell;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use sha2::{Digest, Sha256};

use crate::ast::{self, Expr};
use crate::error::EvalError;
use crate::eval::Lint;
use crate::value::Sym;

/// Bumped whenever the entry layout or the codec's encoding changes.
pub const FORMAT_VERSION: u32 = 2;
const MAGIC: &[u8; 4] = b"B3PC";
/// magic, version, key, payload length, checksum.
const HEADER: usize = 4 + 4 + 32 + 8 + 8;

/// What lowering a file depends on besides its text.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    pub base_dir: &'a str,
    pub globals: &'a [Sym],
    pub extra: Option<&'a [Sym]>,
    pub pipe_ops: bool,
    pub lints: [Lint; 3],
    pub raw_bytes: bool,
}

pub type Key = [u8; 32];

/// The key of `text` lowered with `inputs`.
pub fn key(text: &str, inputs: &Inputs<'_>) -> Key {
    let mut h = Sha256::new();
    h.update(b"b3 parse cache\0");
    h.update(FORMAT_VERSION.to_le_bytes());
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    h.update([0]);
    h.update(binary_identity());
    let mut field = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(inputs.base_dir.as_bytes());
    field(&(inputs.globals.len() as u64).to_le_bytes());
    for g in inputs.globals {
        field(g.as_bytes());
    }
    match inputs.extra {
        None => field(b"no extra scope"),
        Some(names) => {
            field(&(names.len() as u64).to_le_bytes());
            for n in names {
                field(n.as_bytes());
            }
        }
    }
    let lint = |l: Lint| match l {
        Lint::Off => 0u8,
        Lint::Warn => 1,
        Lint::Fatal => 2,
    };
    field(&[
        u8::from(inputs.pipe_ops),
        u8::from(inputs.raw_bytes),
        lint(inputs.lints[0]),
        lint(inputs.lints[1]),
        lint(inputs.lints[2]),
    ]);
    // The lowering resolves `~/${x}` paths against $HOME when it runs.
    match std::env::var_os("HOME") {
        Some(home) => field(home.as_encoded_bytes()),
        None => field(b"\0no home"),
    }
    field(text.as_bytes());
    h.finalize().into()
}

/// The running binary's path, size, inode and modification time: a rebuilt
/// b3 (whose lowering may differ) gets keys of its own. Read once.
fn binary_identity() -> &'static [u8] {
    static ID: OnceLock<Vec<u8>> = OnceLock::new();
    ID.get_or_init(|| {
        let mut id = Vec::new();
        if let Ok(exe) = std::env::current_exe() {
            id.extend_from_slice(exe.as_os_str().as_encoded_bytes());
            if let Ok(m) = fs::metadata(&exe) {
                id.extend_from_slice(&m.len().to_le_bytes());
                #[cfg(unix)]
                {
                    use std::os::unix::fs::MetadataExt;
                    id.extend_from_slice(&m.ino().to_le_bytes());
                    id.extend_from_slice(&m.dev().to_le_bytes());
                    id.extend_from_slice(&m.mtime().to_le_bytes());
                    id.extend_from_slice(&m.mtime_nsec().to_le_bytes());
                }
                #[cfg(not(unix))]
                if let Ok(t) = m.modified() {
                    if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
                        id.extend_from_slice(&d.as_nanos().to_le_bytes());
                    }
                }
            }
        }
        id
    })
}

/// A checksum of an entry's payload, to catch damage (not tampering: the
/// cache directory is the user's own).
pub fn checksum(b: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h: u64 = (b.len() as u64).wrapping_mul(K);
    let mut chunks = b.chunks_exact(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        h = (h ^ u64::from_le_bytes(w)).wrapping_mul(K).rotate_left(31);
    }
    for &x in chunks.remainder() {
        h = (h ^ u64::from(x)).wrapping_mul(K).rotate_left(31);
    }
    h ^ (h >> 29)
}

/// One cache: a database of entries (see [`db`]).
#[derive(Debug)]
pub struct Cache {
    db: db::Db,
    /// The directory of one file per entry that b3 used before the
    /// database, swept once a day until it is empty ([`sweep`]).
    legacy: Option<PathBuf>,
}

/// The database's file name in the cache directory.
pub const DB_NAME: &str = "parse-v2.sqlite";

impl Cache {
    /// The cache whose database is `DB_NAME` in directory `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Cache {
        Cache {
            db: db::Db::at(dir.into().join(DB_NAME)),
            legacy: None,
        }
    }

    /// The cache the environment asks for: none under `B3_PARSE_CACHE=0`,
    /// else in `$XDG_CACHE_HOME/b3` or `$HOME/.cache/b3`.
    pub fn from_env() -> Option<Cache> {
        let dir = cache_dir(
            std::env::var_os("B3_PARSE_CACHE").as_deref(),
            std::env::var_os("XDG_CACHE_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        );
        if dir.is_none() {
            tracing::debug!("parse cache off");
        }
        dir.map(|d| {
            let legacy = d.join("parse");
            Cache {
                legacy: Some(legacy),
                ..Cache::at(d)
            }
        })
    }

    pub fn db(&self) -> &db::Db {
        &self.db
    }

    /// The stored tree for `key`, re-based onto file `fid`; `None` when
    /// there is none or it cannot be trusted.
    pub fn load(&self, key: &Key, fid: u32) -> Option<Expr> {
        self.db
            .get(key, &mut |bytes| self.load_from(bytes, key, fid))
    }

    fn load_from(&self, bytes: &[u8], key: &Key, fid: u32) -> Option<Expr> {
        let payload = match check_entry(bytes, key) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!("parse cache entry ignored: {why}");
                return None;
            }
        };
        match codec::decode(payload, fid) {
            Ok(e) => Some(e),
            Err(why) => {
                tracing::debug!("parse cache entry ignored: {why}");
                None
            }
        }
    }

    /// Queues `e` (lowered as file `fid` of `len` bytes) to be stored under
    /// `key`. Best effort: failures only mean a later run parses again.
    pub fn store(&self, key: &Key, e: &Expr, fid: u32, len: u32) {
        let mut entry = match codec::encode_after(e, fid, len, HEADER) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!("file not cached: {why}");
                return;
            }
        };
        write_header(&mut entry, key);
        let n = self.db.put(key, entry);
        count(|s| s.stored += n);
    }

    /// Writes this process's queued entries now.
    pub fn flush(&self) {
        let n = self.db.flush().written;
        count(|s| s.stored += n);
    }
}

/// An entry: the header (magic, format, key, payload length, checksum)
/// and the payload.
pub fn entry_bytes(key: &Key, payload: &[u8]) -> Vec<u8> {
    let mut entry = vec![0; HEADER];
    entry.extend_from_slice(payload);
    write_header(&mut entry, key);
    entry
}

/// Fills in the header of `entry`, whose payload follows [`HEADER`] bytes
/// of room.
fn write_header(entry: &mut [u8], key: &Key) {
    let (head, payload) = entry.split_at_mut(HEADER);
    let sum = checksum(payload);
    head[..4].copy_from_slice(MAGIC);
    head[4..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    head[8..40].copy_from_slice(key);
    head[40..48].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    head[48..56].copy_from_slice(&sum.to_le_bytes());
}

/// The cache directory for these values of `B3_PARSE_CACHE`,
/// `XDG_CACHE_HOME` and `HOME`. A relative `XDG_CACHE_HOME` is ignored, as
/// the XDG base directory specification asks.
pub fn cache_dir(
    switch: Option<&std::ffi::OsStr>,
    xdg_cache_home: Option<&std::ffi::OsStr>,
    home: Option<&std::ffi::OsStr>,
) -> Option<PathBuf> {
    if switch.is_some_and(|v| v == "0") {
        return None;
    }
    let base = match xdg_cache_home {
        Some(x) if Path::new(x).is_absolute() => PathBuf::from(x),
        _ => PathBuf::from(home.filter(|h| !h.is_empty())?).join(".cache"),
    };
    Some(base.join("b3"))
}

/// What the cache did on this thread so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Files whose tree came from an entry.
    pub hits: u64,
    /// Cacheable files that were parsed (no entry, or an unusable one).
    pub misses: u64,
    /// Entries written.
    pub stored: u64,
}

thread_local! {
    static STATS: std::cell::Cell<Stats> = const { std::cell::Cell::new(Stats { hits: 0, misses: 0, stored: 0 }) };
}

/// This thread's counts (tests and `--debug` use them).
pub fn stats() -> Stats {
    STATS.with(|s| s.get())
}

fn count(f: impl FnOnce(&mut Stats)) {
    // `try_with`: the last flush may run while this thread's locals go.
    let _ = STATS.try_with(|s| {
        let mut v = s.get();
        f(&mut v);
        s.set(v);
    });
}

/// Why an entry's bytes were not used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EntryError {
    #[error("shorter than its header")]
    Short,
    #[error("not a b3 parse cache entry of format {FORMAT_VERSION}")]
    Foreign,
    #[error("written for another key")]
    OtherKey,
    #[error("payload length {0} does not match the file")]
    Length(u64),
    #[error("checksum mismatch")]
    Checksum,
}

/// The payload of `bytes` if it is a sound entry for `key`.
pub fn check_entry<'a>(bytes: &'a [u8], key: &Key) -> Result<&'a [u8], EntryError> {
    if bytes.len() < HEADER {
        return Err(EntryError::Short);
    }
    let (head, payload) = bytes.split_at(HEADER);
    if &head[..4] != MAGIC || head[4..8] != FORMAT_VERSION.to_le_bytes() {
        return Err(EntryError::Foreign);
    }
    if &head[8..40] != key {
        return Err(EntryError::OtherKey);
    }
    let mut n = [0u8; 8];
    n.copy_from_slice(&head[40..48]);
    let len = u64::from_le_bytes(n);
    if len != payload.len() as u64 {
        return Err(EntryError::Length(len));
    }
    n.copy_from_slice(&head[48..56]);
    if u64::from_le_bytes(n) != checksum(payload) {
        return Err(EntryError::Checksum);
    }
    Ok(payload)
}

thread_local! {
    /// A cache chosen for this thread (tests), over the environment's.
    static OVERRIDE: RefCell<Option<Option<std::rc::Rc<Cache>>>> = const { RefCell::new(None) };
}

fn env_cache() -> Option<&'static Cache> {
    static CACHE: OnceLock<Option<Cache>> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let c = Cache::from_env();
            if let Some(legacy) = c.as_ref().and_then(|c| c.legacy.as_deref()) {
                sweep::sweep_if_due(legacy, std::time::SystemTime::now());
            }
            c
        })
        .as_ref()
}

/// Writes the entries this process queued in the environment's cache.
/// Front ends call it when evaluation is done; a forked child calls it
/// before it `_exit`s. The thread that used the cache also does when it
/// ends.
pub fn flush() {
    if let Some(c) = env_cache() {
        c.flush();
    }
}

/// Flushes the environment's cache when the thread that used it ends (the
/// evaluation thread of every front end), so no caller can forget to.
struct FlushOnExit;
impl Drop for FlushOnExit {
    fn drop(&mut self) {
        flush();
    }
}

thread_local! {
    static FLUSH_ON_EXIT: FlushOnExit = const { FlushOnExit };
}

/// Runs `f` with `cache` (or no cache) in place of the environment's, on
/// this thread; `cache`'s queued entries are written when `f` returns.
pub fn with_cache<T>(cache: Option<Cache>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Option<std::rc::Rc<Cache>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let prev = self.0.take();
            let ours = OVERRIDE.with(|o| std::mem::replace(&mut *o.borrow_mut(), prev));
            if let Some(Some(c)) = ours {
                c.flush();
            }
        }
    }
    let prev = OVERRIDE.with(|o| o.borrow_mut().replace(cache.map(std::rc::Rc::new)));
    let _restore = Restore(prev);
    f()
}

/// Parses and lowers `text` (registered as file `fid`) as [`ast::parse`]
/// does, through the cache when `cacheable` (a real file) and the lowering
/// cannot warn.
pub fn parse(
    text: &str,
    fid: u32,
    inputs: &Inputs<'_>,
    cacheable: bool,
) -> Result<Expr, EvalError> {
    let lower = || {
        ast::parse(
            text,
            fid,
            inputs.base_dir,
            inputs.globals,
            inputs.extra,
            inputs.pipe_ops,
            inputs.lints,
            inputs.raw_bytes,
        )
    };
    // Lints print warnings while lowering; a hit could not repeat them.
    let quiet = inputs.lints.iter().all(|l| *l == Lint::Off);
    let len = u32::try_from(text.len()).ok();
    let (true, true, false, Some(len)) = (cacheable, quiet, fid == 0, len) else {
        return lower();
    };
    let over = OVERRIDE.with(|o| o.borrow().clone());
    let run = |cache: &Cache| {
        let k = key(text, inputs);
        if let Some(e) = cache.load(&k, fid) {
            count(|s| s.hits += 1);
            return Ok(e);
        }
        count(|s| s.misses += 1);
        let e = lower()?;
        cache.store(&k, &e, fid, len);
        Ok(e)
    };
    match over {
        Some(Some(c)) => run(&c),
        Some(None) => lower(),
        None => match env_cache() {
            Some(c) => {
                FLUSH_ON_EXIT.with(|_| ());
                run(c)
            }
            None => lower(),
        },
    }
}
