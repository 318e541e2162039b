//! Where the parse cache's entries live: one SQLite database per user
//! (`$XDG_CACHE_HOME/b3/parse-v2.sqlite`), so a process costs a handful of
//! file-system operations however many files it lowers. Creating one file
//! per entry cost 0.08-0.12 s of kernel time for nixpkgs hello's 92 files
//! on this machine's ext4, and seconds for `-qa`'s 10,000.
//!
//! - Reads are one prepared `SELECT` each; the blob is checked and decoded
//!   where SQLite holds it, without a copy.
//! - Misses are queued and written in one transaction when the process is
//!   done (or every [`BATCH_ENTRIES`] entries / [`BATCH_BYTES`] bytes).
//!   Another writer holding the lock past [`BUSY_TIMEOUT`] makes this
//!   process drop its batch: a later run parses those files again.
//! - It is a cache, so nothing is synced (`synchronous=OFF`) and the
//!   rollback journal is in memory: a write torn by a crash shows up as an
//!   entry whose header or checksum is wrong (a miss) or as a damaged
//!   database, which is removed and made again.
//! - `last_used` (a day number) is written at most once a day per entry,
//!   in the same transaction as the writes; once a day one process deletes
//!   rows unused for [`KEEP_UNUSED_DAYS`].
//! - A forked child (`b3 env -qa -j N`) must not touch the connection it
//!   inherited: the state remembers the process id that opened it, and a
//!   child opens its own and writes only the entries it lowered itself.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rusqlite::{ffi::ErrorCode, params, Connection, OpenFlags, OptionalExtension};

use super::Key;

/// Bumped when the schema changes (the entry format has its own version,
/// inside every key and entry header).
pub const SCHEMA_VERSION: u32 = 2;
/// Queued entries written as soon as this many are waiting.
pub const BATCH_ENTRIES: usize = 256;
/// Queued entries written as soon as they hold this many bytes.
pub const BATCH_BYTES: usize = 16 << 20;
/// How long a writer waits for another process's write lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_millis(200);
/// Rows unused for this many days are deleted by the daily sweep.
pub const KEEP_UNUSED_DAYS: i64 = 30;

/// Today's day number (days since the Unix epoch).
pub fn day(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| (d.as_secs() / 86_400) as i64)
}

/// An entry read from the database, handed to a reader while the row is
/// held (so it is never copied).
pub type Reader<'a, T> = &'a mut dyn FnMut(&[u8]) -> Option<T>;

/// This process's connection and its queued writes.
#[derive(Default)]
struct State {
    /// The process that opened `conn`; another id means this is a forked
    /// child, which must neither use nor close its parent's connection.
    pid: u32,
    conn: Option<Connection>,
    /// Opening failed (or the database could not be made again after
    /// damage): no cache for the rest of this process.
    broken: bool,
    /// Writing failed for a reason other than a busy lock (a read-only
    /// directory or file): stop queueing.
    read_only: bool,
    pending: Vec<(Key, Vec<u8>)>,
    pending_bytes: usize,
    /// Entries read today for the first time: their `last_used` is moved on.
    touched: Vec<Key>,
    /// The day of the last sweep is before today (read when opening).
    sweep_due: bool,
}

/// The database file and this process's use of it.
pub struct Db {
    path: PathBuf,
    today: i64,
    state: Mutex<State>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").field("path", &self.path).finish()
    }
}

/// What one [`Db::flush`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub written: u64,
    pub swept: u64,
}

fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase)
    )
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS entries (
        key BLOB PRIMARY KEY NOT NULL,
        entry BLOB NOT NULL,
        last_used INTEGER NOT NULL
    );
    CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL);
";

impl Db {
    pub fn at(path: impl Into<PathBuf>) -> Db {
        Db::at_day(path, day(SystemTime::now()))
    }

    /// A database used as if today were day `today` (the sweep's tests).
    pub fn at_day(path: impl Into<PathBuf>, today: i64) -> Db {
        Db {
            path: path.into(),
            today,
            state: Mutex::new(State::default()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves a state that is still
        // consistent (at worst a lost batch).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The connection of this process, opened on first use.
    fn conn<'s>(&self, st: &'s mut State) -> Option<&'s Connection> {
        let pid = std::process::id();
        if st.pid != pid {
            // Forked: the inherited connection belongs to the parent. It is
            // leaked, not closed (closing could checkpoint or unlock files
            // the parent is using), and so is the parent's queue, which the
            // parent writes itself.
            if let Some(c) = st.conn.take() {
                std::mem::forget(c);
            }
            std::mem::forget(std::mem::take(&mut st.pending));
            *st = State {
                pid,
                ..State::default()
            };
        }
        if st.broken {
            return None;
        }
        if st.conn.is_none() {
            match self.open().or_else(|e| {
                if is_damage(&e) {
                    tracing::debug!(db = %self.path.display(), "parse cache damaged, made again: {e}");
                    self.remove_files();
                    self.open()
                } else {
                    Err(e)
                }
            }) {
                Ok((c, sweep_due)) => {
                    st.conn = Some(c);
                    st.sweep_due = sweep_due;
                }
                Err(e) => {
                    tracing::debug!(db = %self.path.display(), "parse cache off: {e}");
                    st.broken = true;
                    return None;
                }
            }
        }
        st.conn.as_ref()
    }

    fn remove_files(&self) {
        for suffix in ["", "-journal", "-wal", "-shm"] {
            let mut p = self.path.clone().into_os_string();
            p.push(suffix);
            let _ = std::fs::remove_file(p);
        }
    }

    /// Opens (creating if need be) the database; also says whether a sweep
    /// is due.
    fn open(&self) -> rusqlite::Result<(Connection, bool)> {
        if let Some(dir) = self.path.parent() {
            // An unmakeable directory fails the open just below.
            let _ = std::fs::create_dir_all(dir);
        }
        let c = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(BUSY_TIMEOUT)?;
        // Large pages keep a big file's entry in few overflow pages; mmap
        // reads them without a read call each. The rollback journal is kept
        // in memory: a journal file costs a create and unlink per write, or
        // (kept) an open and read per lookup to see whether it is hot. The
        // price is that a process killed halfway through a commit can leave
        // a damaged database, which is then removed and made again (and
        // any damaged entry fails its header's key or checksum check).
        // WAL was not chosen because its shared-memory index is process
        // state a forked child (`-qa -j N`) would inherit.
        c.execute_batch(
            "PRAGMA page_size = 65536;
             PRAGMA synchronous = OFF;
             PRAGMA journal_mode = MEMORY;
             PRAGMA mmap_size = 268435456;",
        )?;
        let version: u32 = c.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version != SCHEMA_VERSION {
            c.execute_batch(SCHEMA)?;
            c.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        }
        let last: Option<i64> = c
            .query_row(
                "SELECT value FROM meta WHERE name = 'last_sweep'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        Ok((c, last.is_none_or(|d| d < self.today)))
    }

    /// Runs `read` on the entry stored under `key`, if there is one.
    pub fn get<T>(&self, key: &Key, read: Reader<'_, T>) -> Option<T> {
        let mut st = self.lock();
        let today = self.today;
        let conn = self.conn(&mut st)?;
        let res = conn
            .prepare_cached("SELECT entry, last_used FROM entries WHERE key = ?1")
            .and_then(|mut s| {
                s.query_row([&key[..]], |r| {
                    let last: i64 = r.get(1)?;
                    let got = read(r.get_ref(0)?.as_blob()?);
                    Ok((got, last))
                })
                .optional()
            });
        match res {
            Ok(Some((got, last))) => {
                if got.is_some() && last < today {
                    st.touched.push(*key);
                }
                got
            }
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(db = %self.path.display(), "parse cache read failed: {e}");
                if is_damage(&e) {
                    self.reset(&mut st);
                }
                None
            }
        }
    }

    /// Drops a damaged database: removed, and made again on next use.
    fn reset(&self, st: &mut State) {
        st.conn = None;
        self.remove_files();
    }

    /// Queues `entry` under `key`; writes the queue when it is full.
    /// Returns the number of entries written now.
    pub fn put(&self, key: &Key, entry: Vec<u8>) -> u64 {
        let mut st = self.lock();
        if st.pid != std::process::id() {
            // A forked child's first use: start from a state of its own.
            let _ = self.conn(&mut st);
        }
        if st.broken || st.read_only {
            return 0;
        }
        st.pending_bytes += entry.len();
        st.pending.push((*key, entry));
        if st.pending.len() >= BATCH_ENTRIES || st.pending_bytes >= BATCH_BYTES {
            self.write(&mut st).written
        } else {
            0
        }
    }

    /// Writes what this process queued (and the day's `last_used` moves and
    /// sweep) in one transaction. Best effort: on failure the batch is lost.
    pub fn flush(&self) -> Flushed {
        let mut st = self.lock();
        if st.pid != std::process::id() {
            // Forked and never used here: nothing of this process's to write.
            return Flushed::default();
        }
        self.write(&mut st)
    }

    fn write(&self, st: &mut State) -> Flushed {
        let pending = std::mem::take(&mut st.pending);
        st.pending_bytes = 0;
        let touched = std::mem::take(&mut st.touched);
        if pending.is_empty() && touched.is_empty() && !st.sweep_due {
            return Flushed::default();
        }
        // Nothing was read or written yet: a sweep alone does not open the
        // database.
        if st.conn.is_none() && pending.is_empty() && touched.is_empty() {
            return Flushed::default();
        }
        let today = self.today;
        let sweep = st.sweep_due;
        let Some(conn) = self.conn(st) else {
            return Flushed::default();
        };
        let res = (|| -> rusqlite::Result<Flushed> {
            let tx = conn.unchecked_transaction()?;
            // Take the write lock now, so a busy database fails here
            // rather than halfway.
            tx.execute_batch("DELETE FROM meta WHERE 0")?;
            let mut done = Flushed::default();
            {
                let mut ins = tx.prepare_cached(
                    "INSERT OR REPLACE INTO entries (key, entry, last_used) VALUES (?1, ?2, ?3)",
                )?;
                for (k, e) in &pending {
                    ins.execute(params![&k[..], e, today])?;
                    done.written += 1;
                }
                let mut touch = tx.prepare_cached(
                    "UPDATE entries SET last_used = ?1 WHERE key = ?2 AND last_used < ?1",
                )?;
                for k in &touched {
                    touch.execute(params![today, &k[..]])?;
                }
            }
            if sweep {
                done.swept = tx.execute(
                    "DELETE FROM entries WHERE last_used < ?1",
                    [today - KEEP_UNUSED_DAYS],
                )? as u64;
                tx.execute(
                    "INSERT OR REPLACE INTO meta (name, value) VALUES ('last_sweep', ?1)",
                    [today],
                )?;
            }
            tx.commit()?;
            Ok(done)
        })();
        match res {
            Ok(done) => {
                st.sweep_due = false;
                if done.swept > 0 {
                    tracing::debug!(db = %self.path.display(), swept = done.swept, "parse cache swept");
                }
                done
            }
            Err(e) => {
                tracing::debug!(db = %self.path.display(), "parse cache batch of {} dropped: {e}", pending.len());
                if is_damage(&e) {
                    self.reset(st);
                } else if !is_busy(&e) {
                    st.read_only = true;
                }
                Flushed::default()
            }
        }
    }

    /// How many entries the database holds (tests, `--debug`).
    pub fn count(&self) -> Option<u64> {
        let mut st = self.lock();
        let conn = self.conn(&mut st)?;
        conn.query_row("SELECT count(*) FROM entries", [], |r| r.get::<_, i64>(0))
            .ok()
            .map(|n| n as u64)
    }

    /// Every (key, entry, last_used) row (tests).
    pub fn rows(&self) -> Vec<(Key, Vec<u8>, i64)> {
        let mut st = self.lock();
        let Some(conn) = self.conn(&mut st) else {
            return Vec::new();
        };
        let Ok(mut s) = conn.prepare("SELECT key, entry, last_used FROM entries ORDER BY key")
        else {
            return Vec::new();
        };
        let Ok(rows) = s.query_map([], |r| {
            let k: Vec<u8> = r.get(0)?;
            let mut key = [0u8; 32];
            if k.len() == 32 {
                key.copy_from_slice(&k);
            }
            Ok((key, r.get(1)?, r.get(2)?))
        }) else {
            return Vec::new();
        };
        rows.flatten().collect()
    }

    /// Writes a row as given, at once (tests: damaged entries, old rows).
    pub fn put_row(&self, key: &Key, entry: &[u8], last_used: i64) -> rusqlite::Result<()> {
        let mut st = self.lock();
        let Some(conn) = self.conn(&mut st) else {
            return Err(rusqlite::Error::InvalidQuery);
        };
        conn.execute(
            "INSERT OR REPLACE INTO entries (key, entry, last_used) VALUES (?1, ?2, ?3)",
            params![&key[..], entry, last_used],
        )
        .map(|_| ())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if st.pid != std::process::id() {
            // A forked child's copy of its parent's connection and queue.
            if let Some(c) = st.conn.take() {
                std::mem::forget(c);
            }
            std::mem::forget(std::mem::take(&mut st.pending));
            return;
        }
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fresh(tag: &str) -> PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "b3-parse-db-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn key(n: u8) -> Key {
        [n; 32]
    }

    /// Opens `db` without reading any entry (a miss moves no `last_used`).
    fn open(db: &Db) {
        assert_eq!(db.get(&key(0xff), &mut |b| Some(b.to_vec())), None);
    }

    fn used(db: &Db) -> Vec<(u8, i64)> {
        db.rows().into_iter().map(|(k, _, u)| (k[0], u)).collect()
    }

    const T: i64 = 20_000;

    #[test]
    fn the_daily_sweep_deletes_only_rows_unused_for_a_month() {
        let d = fresh("sweep");
        let path = d.join("c.sqlite");
        {
            // Written by a process of long ago (whose own sweep then finds
            // nothing that old).
            let db = Db::at_day(&path, T - 100);
            db.put_row(&key(1), b"old", T - KEEP_UNUSED_DAYS - 1)
                .unwrap();
            db.put_row(&key(2), b"month", T - KEEP_UNUSED_DAYS + 1)
                .unwrap();
            db.put_row(&key(3), b"today", T).unwrap();
        }
        let db = Db::at_day(&path, T);
        open(&db);
        assert_eq!(
            db.flush(),
            Flushed {
                written: 0,
                swept: 1
            }
        );
        assert_eq!(used(&db), vec![(2, T - KEEP_UNUSED_DAYS + 1), (3, T)]);
        drop(db);
        // The same day: no second sweep, even of a row that is now old.
        let db = Db::at_day(&path, T);
        db.put_row(&key(4), b"old too", T - 100).unwrap();
        assert_eq!(db.flush(), Flushed::default());
        assert_eq!(db.rows().len(), 3);
        drop(db);
        // Two days later the row unused for 31 days goes.
        let db = Db::at_day(&path, T + 2);
        open(&db);
        assert_eq!(
            db.flush(),
            Flushed {
                written: 0,
                swept: 2
            }
        );
        assert_eq!(used(&db), vec![(3, T)]);
        drop(db);
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn last_used_moves_on_a_hit_at_most_once_a_day() {
        let d = fresh("touch");
        let path = d.join("c.sqlite");
        Db::at_day(&path, T).put_row(&key(1), b"e", T - 5).unwrap();
        let db = Db::at_day(&path, T);
        assert_eq!(
            db.get(&key(1), &mut |b| Some(b.to_vec())),
            Some(b"e".to_vec())
        );
        db.flush();
        assert_eq!(used(&db), vec![(1, T)]);
        // Read again the same day: nothing queued to write.
        let db2 = Db::at_day(&path, T);
        assert_eq!(db2.get(&key(1), &mut |b| Some(b.len())), Some(1));
        assert!(db2.lock().touched.is_empty());
        // An entry the reader rejects (damaged) is not kept alive.
        let db3 = Db::at_day(&path, T + 1);
        assert_eq!(db3.get(&key(1), &mut |_| None::<()>), None);
        assert!(db3.lock().touched.is_empty());
        drop((db, db2, db3));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn queued_entries_are_written_in_batches_and_on_flush() {
        let d = fresh("batch");
        let path = d.join("c.sqlite");
        let db = Db::at_day(&path, T);
        let mut written = 0;
        for i in 0..BATCH_ENTRIES + 3 {
            let mut k = key(0);
            k[..8].copy_from_slice(&(i as u64).to_le_bytes());
            written += db.put(&k, vec![1, 2, 3]);
        }
        assert_eq!(
            written, BATCH_ENTRIES as u64,
            "a full batch is written at once"
        );
        assert_eq!(Db::at_day(&path, T).count(), Some(BATCH_ENTRIES as u64));
        assert_eq!(db.flush().written, 3);
        assert_eq!(Db::at_day(&path, T).count(), Some(BATCH_ENTRIES as u64 + 3));
        drop(db);
        std::fs::remove_dir_all(&d).unwrap();
    }
}
