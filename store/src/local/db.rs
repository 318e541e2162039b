//! The local store's metadata database (SQLite).
//!
//! One row per valid path, its references in both directions (indexed),
//! derivation outputs, signatures, content address and registration time.
//! The schema version lives in `PRAGMA user_version`; `open` upgrades older
//! databases one step at a time inside an immediate transaction, so
//! concurrent openers cannot both migrate. Registration is the commit point
//! of an add: a path is valid iff it has a row here.
//!
//! Paths are stored as full (logical) store path strings; the store
//! directory is recorded in the `meta` table and checked on open.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The schema version this code writes.
pub const SCHEMA_VERSION: i64 = 1;

/// Errors from the metadata database.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error(
        "database schema version {found} is newer than this b3 understands ({SCHEMA_VERSION})"
    )]
    TooNew { found: i64 },
    #[error("database belongs to store directory {found}, not {expected}")]
    WrongStoreDir { found: String, expected: String },
    #[error("cannot register {path}: its reference {reference} is not valid")]
    MissingReference { path: String, reference: String },
    #[error("cannot unregister {path}: it is still referenced by {referrer}")]
    StillReferenced { path: String, referrer: String },
}

/// One registered path's metadata, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRow {
    /// Full store path.
    pub path: String,
    /// NAR hash as `sha256:<nix-base32>`.
    pub nar_hash: String,
    pub nar_size: u64,
    /// Seconds since the Unix epoch.
    pub registration_time: i64,
    pub deriver: Option<String>,
    /// Built locally (trusted without signatures).
    pub ultimate: bool,
    pub sigs: BTreeSet<String>,
    /// Content address in Nix's textual form, e.g. `fixed:r:sha256:…`.
    pub ca: Option<String>,
}

/// Migrations from version `i` to `i + 1` (index 0 creates the schema).
const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );
    CREATE TABLE valid_paths (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        path              TEXT UNIQUE NOT NULL,
        nar_hash          TEXT NOT NULL,
        nar_size          INTEGER NOT NULL,
        registration_time INTEGER NOT NULL,
        deriver           TEXT,
        ultimate          INTEGER NOT NULL DEFAULT 0,
        sigs              TEXT NOT NULL DEFAULT '',
        ca                TEXT
    );
    CREATE TABLE refs (
        referrer  INTEGER NOT NULL REFERENCES valid_paths(id) ON DELETE CASCADE,
        reference INTEGER NOT NULL REFERENCES valid_paths(id) ON DELETE RESTRICT,
        PRIMARY KEY (referrer, reference)
    ) WITHOUT ROWID;
    CREATE INDEX refs_by_reference ON refs(reference);
    -- A path may refer to itself; that must not block its own deletion.
    CREATE TRIGGER drop_self_refs BEFORE DELETE ON valid_paths
    BEGIN
        DELETE FROM refs WHERE referrer = OLD.id AND reference = OLD.id;
    END;
    CREATE TABLE derivation_outputs (
        drv    INTEGER NOT NULL REFERENCES valid_paths(id) ON DELETE CASCADE,
        output TEXT NOT NULL,
        path   TEXT NOT NULL,
        PRIMARY KEY (drv, output)
    );
    CREATE INDEX derivation_outputs_by_path ON derivation_outputs(path);
    ",
];

/// An open metadata database.
pub struct Db {
    conn: Connection,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

fn join_sigs(sigs: &BTreeSet<String>) -> String {
    sigs.iter().cloned().collect::<Vec<_>>().join(" ")
}

fn split_sigs(s: &str) -> BTreeSet<String> {
    s.split(' ')
        .filter(|x| !x.is_empty())
        .map(String::from)
        .collect()
}

const ROW_COLUMNS: &str =
    "path, nar_hash, nar_size, registration_time, deriver, ultimate, sigs, ca";

fn row_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<PathRow> {
    Ok(PathRow {
        path: r.get(0)?,
        nar_hash: r.get(1)?,
        nar_size: r.get::<_, i64>(2)? as u64,
        registration_time: r.get(3)?,
        deriver: r.get(4)?,
        ultimate: r.get::<_, i64>(5)? != 0,
        sigs: split_sigs(&r.get::<_, String>(6)?),
        ca: r.get(7)?,
    })
}

/// Keeps the WAL and its index (`-wal`, `-shm`) when the last connection
/// closes (SQLite's persistent-WAL mode): otherwise every b3 process creates
/// both files and deletes them again when it ends, four inode operations
/// that cost milliseconds on some file systems (ext4 mounted with
/// `discard`) and made up a good part of a short command's time. The last
/// close still checkpoints the WAL into the database; the files left are
/// SQLite's own and are reused by the next opener. Best effort: a refusal
/// only keeps the default.
/// Runs `f` again while the database is busy, for up to the busy timeout.
/// SQLite answers "busy" at once, without its busy handler, where waiting
/// could deadlock: several processes switching a new database to WAL at the
/// same moment meet that (eight concurrent first opens failed with
/// "database is locked" about one time in five).
fn when_not_busy<T>(mut f: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    let mut pause = Duration::from_millis(1);
    loop {
        match f() {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

/// How long a statement waits for a busy database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(600);

fn keep_wal_files(conn: &Connection) {
    let mut on: std::ffi::c_int = 1;
    // SAFETY: a file-control call on the live handle of `conn`, with a
    // pointer to an int as SQLITE_FCNTL_PERSIST_WAL expects; nothing is
    // kept.
    unsafe {
        rusqlite::ffi::sqlite3_file_control(
            conn.handle(),
            c"main".as_ptr(),
            rusqlite::ffi::SQLITE_FCNTL_PERSIST_WAL,
            (&mut on as *mut std::ffi::c_int).cast(),
        );
    }
}

/// A second connection to a store's database that only copies the WAL's
/// committed pages into the database file (a passive checkpoint), so that
/// a writer's WAL stays short: the last connection to close checkpoints
/// whatever is left, syncing the WAL first, which for the 400 pages fifty
/// builds leave took 2 to 3 ms at the end of every `b3 build`. Run on a
/// thread no build waits for, the syncs overlap the builds; a passive
/// checkpoint never waits for the database's writers or readers.
pub struct Checkpointer {
    conn: Connection,
}

impl std::fmt::Debug for Checkpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpointer").finish_non_exhaustive()
    }
}

impl Checkpointer {
    /// Opens `file`, a database [`Db::open`] has opened before.
    pub fn open(file: &Path) -> Result<Checkpointer, DbError> {
        let conn = Connection::open(file)?;
        conn.pragma_update(None, "synchronous", "normal")?;
        // As `Db::open`'s: this connection may be the last to close.
        conn.pragma_update(None, "journal_size_limit", 4 << 20)?;
        keep_wal_files(&conn);
        Ok(Checkpointer { conn })
    }

    /// Copies what it can of the WAL into the database file; returns the
    /// frames in the WAL and how many of them are now in the database
    /// (both -1 if the database is not in WAL mode).
    pub fn run(&mut self) -> Result<(i32, i32), DbError> {
        Ok(self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
                Ok((r.get(1)?, r.get(2)?))
            })?)
    }
}

impl Db {
    /// Open (creating and migrating as needed) the database at `file` for the
    /// logical store directory `store_dir`.
    pub fn open(file: &Path, store_dir: &str) -> Result<Db, DbError> {
        let mut conn = Connection::open(file)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL is persistent; setting it again is a no-op. It cannot run inside
        // a transaction, and may itself meet a busy database.
        when_not_busy(|| conn.pragma_update(None, "journal_mode", "wal"))?;
        conn.pragma_update(None, "synchronous", "normal")?;
        conn.pragma_update(None, "foreign_keys", "on")?;
        conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
        // With a limit set, the last close truncates the checkpointed WAL
        // to nothing (the file stays, see `keep_wal_files`); without one,
        // the next process to open the database reads every stale frame
        // to rebuild the WAL's index (1.7 ms for 1 MB, at every start).
        conn.pragma_update(None, "journal_size_limit", 4 << 20)?;
        keep_wal_files(&conn);

        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(DbError::TooNew { found: version });
        }
        if version < SCHEMA_VERSION {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Re-read under the write lock: another opener may have migrated.
            let mut v: i64 = tx.pragma_query_value(None, "user_version", |r| r.get(0))?;
            while v < SCHEMA_VERSION {
                tx.execute_batch(MIGRATIONS[v as usize])?;
                v += 1;
                tx.pragma_update(None, "user_version", v)?;
            }
            tx.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('store_dir', ?1)",
                params![store_dir],
            )?;
            tx.commit()?;
        }
        let found: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'store_dir'", [], |r| {
                r.get(0)
            })
            .optional()?;
        if let Some(found) = found {
            if found != store_dir {
                return Err(DbError::WrongStoreDir {
                    found,
                    expected: store_dir.to_string(),
                });
            }
        }
        Ok(Db { conn })
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, DbError> {
        Ok(self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?)
    }

    /// The row id of `path`, if registered. The statement is kept
    /// prepared: the most frequent query of all (every validity check), and
    /// parsing it again cost more than running it.
    fn id_of(conn: &Connection, path: &str) -> Result<Option<i64>, DbError> {
        Ok(conn
            .prepare_cached("SELECT id FROM valid_paths WHERE path = ?1")?
            .query_row(params![path], |r| r.get(0))
            .optional()?)
    }

    /// Whether `path` is registered.
    pub fn is_valid(&self, path: &str) -> Result<bool, DbError> {
        Ok(Self::id_of(&self.conn, path)?.is_some())
    }

    /// Register paths with their references in one transaction. References
    /// must be valid already or among the paths being registered; a path
    /// already registered keeps its row (its metadata is not replaced).
    pub fn register(&mut self, items: &[(PathRow, BTreeSet<String>)]) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::insert_paths(&tx, items)?;
        tx.commit()?;
        Ok(())
    }

    /// Registers a build's outputs (as [`Self::register`]) and records
    /// them as the outputs of the registered derivation `drv`, in one
    /// transaction: either all of it is registered or none, so a failure
    /// never leaves some outputs valid and others, or the mapping, not.
    pub fn register_built(
        &mut self,
        items: &[(PathRow, BTreeSet<String>)],
        drv: &str,
        outputs: &[(String, String)],
    ) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::insert_paths(&tx, items)?;
        Self::insert_derivation_outputs(&tx, drv, outputs)?;
        tx.commit()?;
        Ok(())
    }

    fn insert_paths(
        tx: &rusqlite::Transaction<'_>,
        items: &[(PathRow, BTreeSet<String>)],
    ) -> Result<(), DbError> {
        let mut fresh = Vec::new();
        {
            let mut ins = tx.prepare_cached(
                "INSERT INTO valid_paths (path, nar_hash, nar_size, registration_time, deriver, ultimate, sigs, ca)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(path) DO NOTHING",
            )?;
            for (row, refs) in items {
                let n = ins.execute(params![
                    row.path,
                    row.nar_hash,
                    row.nar_size as i64,
                    row.registration_time,
                    row.deriver,
                    row.ultimate as i64,
                    join_sigs(&row.sigs),
                    row.ca,
                ])?;
                if n == 1 {
                    fresh.push((row.path.as_str(), refs, tx.last_insert_rowid()));
                }
            }
        }
        {
            let mut ins_ref = tx.prepare_cached(
                "INSERT OR IGNORE INTO refs (referrer, reference) VALUES (?1, ?2)",
            )?;
            for (path, refs, id) in fresh {
                for r in refs {
                    let rid = Self::id_of(tx, r)?.ok_or_else(|| DbError::MissingReference {
                        path: path.to_string(),
                        reference: r.clone(),
                    })?;
                    ins_ref.execute(params![id, rid])?;
                }
            }
        }
        Ok(())
    }

    /// The metadata and references of `path`, if registered.
    pub fn query(&self, path: &str) -> Result<Option<(PathRow, BTreeSet<String>)>, DbError> {
        let row = self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS}, id FROM valid_paths WHERE path = ?1"
            ))?
            .query_row(params![path], |r| Ok((row_from(r)?, r.get::<_, i64>(8)?)))
            .optional()?;
        let Some((row, id)) = row else {
            return Ok(None);
        };
        let refs = self
            .conn
            .prepare_cached(
                "SELECT p.path FROM refs r JOIN valid_paths p ON p.id = r.reference WHERE r.referrer = ?1",
            )?
            .query_map(params![id], |r| r.get(0))?
            .collect::<Result<BTreeSet<String>, _>>()?;
        Ok(Some((row, refs)))
    }

    /// The closure of `roots` under references, read in one transaction:
    /// one snapshot, and one round of the database's file locks instead of
    /// one per statement (a chain's 50th build has 49 paths in its closure).
    /// `Ok(Err(path))` names a path that is not registered.
    pub fn closure(&self, roots: &[String]) -> Result<Result<BTreeSet<String>, String>, DbError> {
        let tx = self.conn.unchecked_transaction()?;
        let mut seen = BTreeSet::new();
        let mut todo: Vec<String> = roots.to_vec();
        {
            let mut refs = tx.prepare_cached(
                "SELECT p.path FROM valid_paths q
                 JOIN refs r ON r.referrer = q.id
                 JOIN valid_paths p ON p.id = r.reference
                 WHERE q.path = ?1",
            )?;
            while let Some(path) = todo.pop() {
                if seen.contains(&path) {
                    continue;
                }
                if Self::id_of(&tx, &path)?.is_none() {
                    return Ok(Err(path));
                }
                for r in refs.query_map(params![path], |r| r.get::<_, String>(0))? {
                    let r = r?;
                    if !seen.contains(&r) {
                        todo.push(r);
                    }
                }
                seen.insert(path);
            }
        }
        tx.commit()?;
        Ok(Ok(seen))
    }

    /// Paths that refer to `path` (excluding itself).
    pub fn referrers(&self, path: &str) -> Result<BTreeSet<String>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT p.path FROM refs r
                 JOIN valid_paths p ON p.id = r.referrer
                 JOIN valid_paths q ON q.id = r.reference
                 WHERE q.path = ?1 AND r.referrer != r.reference",
            )?
            .query_map(params![path], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    /// Every registered path.
    pub fn all_paths(&self) -> Result<BTreeSet<String>, DbError> {
        Ok(self
            .conn
            .prepare_cached("SELECT path FROM valid_paths")?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    /// Every registered path with its row.
    pub fn all_rows(&self) -> Result<Vec<PathRow>, DbError> {
        Ok(self
            .conn
            .prepare_cached(&format!(
                "SELECT {ROW_COLUMNS} FROM valid_paths ORDER BY path"
            ))?
            .query_map([], row_from)?
            .collect::<Result<_, _>>()?)
    }

    /// All reference edges as (referrer, reference) pairs.
    pub fn all_edges(&self) -> Result<Vec<(String, String)>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT a.path, b.path FROM refs r
                 JOIN valid_paths a ON a.id = r.referrer
                 JOIN valid_paths b ON b.id = r.reference",
            )?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
    }

    /// Unregister paths in one transaction. Fails (changing nothing) if a path
    /// would stay referenced by a path that remains registered.
    pub fn unregister(&mut self, paths: &BTreeSet<String>) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut referrers = tx.prepare_cached(
                "SELECT p.path FROM refs r
                 JOIN valid_paths p ON p.id = r.referrer
                 JOIN valid_paths q ON q.id = r.reference
                 WHERE q.path = ?1 AND r.referrer != r.reference",
            )?;
            for p in paths {
                let rs: Vec<String> = referrers
                    .query_map(params![p], |r| r.get(0))?
                    .collect::<Result<_, _>>()?;
                if let Some(referrer) = rs.into_iter().find(|r| !paths.contains(r)) {
                    return Err(DbError::StillReferenced {
                        path: p.clone(),
                        referrer,
                    });
                }
            }
            // Drop edges among the doomed set first, so RESTRICT only guards
            // edges from paths that stay.
            let mut del_refs = tx.prepare_cached(
                "DELETE FROM refs WHERE referrer = (SELECT id FROM valid_paths WHERE path = ?1)",
            )?;
            for p in paths {
                del_refs.execute(params![p])?;
            }
            let mut del = tx.prepare_cached("DELETE FROM valid_paths WHERE path = ?1")?;
            for p in paths {
                del.execute(params![p])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Record a derivation's outputs (the derivation must be registered).
    pub fn add_derivation_outputs(
        &mut self,
        drv: &str,
        outputs: &[(String, String)],
    ) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        Self::insert_derivation_outputs(&tx, drv, outputs)?;
        tx.commit()?;
        Ok(())
    }

    fn insert_derivation_outputs(
        tx: &rusqlite::Transaction<'_>,
        drv: &str,
        outputs: &[(String, String)],
    ) -> Result<(), DbError> {
        let id = Self::id_of(tx, drv)?.ok_or_else(|| DbError::MissingReference {
            path: drv.to_string(),
            reference: drv.to_string(),
        })?;
        let mut ins = tx.prepare_cached(
            "INSERT OR REPLACE INTO derivation_outputs (drv, output, path) VALUES (?1, ?2, ?3)",
        )?;
        for (name, path) in outputs {
            ins.execute(params![id, name, path])?;
        }
        Ok(())
    }

    /// A derivation's recorded outputs, by output name.
    pub fn derivation_outputs(&self, drv: &str) -> Result<Vec<(String, String)>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT o.output, o.path FROM derivation_outputs o
                 JOIN valid_paths p ON p.id = o.drv WHERE p.path = ?1 ORDER BY o.output",
            )?
            .query_map(params![drv], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?)
    }

    /// Registered derivations that list `output` among their outputs.
    pub fn valid_derivers(&self, output: &str) -> Result<BTreeSet<String>, DbError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT p.path FROM derivation_outputs o JOIN valid_paths p ON p.id = o.drv WHERE o.path = ?1",
            )?
            .query_map(params![output], |r| r.get(0))?
            .collect::<Result<_, _>>()?)
    }

    /// Add signatures to a registered path.
    pub fn add_signatures(&mut self, path: &str, sigs: &BTreeSet<String>) -> Result<(), DbError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let cur: Option<String> = tx
            .query_row(
                "SELECT sigs FROM valid_paths WHERE path = ?1",
                params![path],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(cur) = cur {
            let mut all = split_sigs(&cur);
            all.extend(sigs.iter().cloned());
            tx.execute(
                "UPDATE valid_paths SET sigs = ?2 WHERE path = ?1",
                params![path, join_sigs(&all)],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Check SQLite's own integrity and foreign keys; returns problems found.
    pub fn integrity_problems(&self) -> Result<Vec<String>, DbError> {
        let mut out: Vec<String> = self
            .conn
            .prepare("PRAGMA integrity_check")?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|s| s != "ok")
            .collect();
        let fk: Vec<String> = self
            .conn
            .prepare("PRAGMA foreign_key_check")?
            .query_map([], |r| {
                Ok(format!(
                    "foreign key violation in {}",
                    r.get::<_, String>(0)?
                ))
            })?
            .collect::<Result<_, _>>()?;
        out.extend(fk);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(p: &str) -> PathRow {
        PathRow {
            path: p.to_string(),
            nar_hash: "sha256:0m54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x".into(),
            nar_size: 128,
            registration_time: 1,
            deriver: None,
            ultimate: false,
            sigs: BTreeSet::from(["k:abc".to_string()]),
            ca: None,
        }
    }

    fn refs(r: &[&str]) -> BTreeSet<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";
    const C: &str = "/nix/store/cccccccccccccccccccccccccccccccc-c";

    #[test]
    fn fresh_database_is_at_current_schema_and_reopens() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("db.sqlite");
        let db = Db::open(&f, "/nix/store").unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        drop(db);
        let db = Db::open(&f, "/nix/store").unwrap();
        assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(matches!(
            Db::open(&f, "/other/store"),
            Err(DbError::WrongStoreDir { .. })
        ));
    }

    #[test]
    fn newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("db.sqlite");
        drop(Db::open(&f, "/nix/store").unwrap());
        let c = Connection::open(&f).unwrap();
        c.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(c);
        assert!(matches!(
            Db::open(&f, "/nix/store"),
            Err(DbError::TooNew { .. })
        ));
    }

    #[test]
    fn register_query_and_reference_directions() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db"), "/nix/store").unwrap();
        db.register(&[(row(A), refs(&[]))]).unwrap();
        // B refers to A and to itself; C refers to B; registered together.
        db.register(&[(row(B), refs(&[A, B])), (row(C), refs(&[B]))])
            .unwrap();
        let (r, rs) = db.query(B).unwrap().unwrap();
        assert_eq!(r, row(B));
        assert_eq!(rs, refs(&[A, B]));
        assert_eq!(db.referrers(A).unwrap(), refs(&[B]));
        assert_eq!(db.referrers(B).unwrap(), refs(&[C]));
        assert!(db.query("/nix/store/x").unwrap().is_none());
        assert!(db.integrity_problems().unwrap().is_empty());
    }

    #[test]
    fn the_wal_files_outlive_a_connection_and_the_data_is_in_the_database() {
        let d = tempfile::tempdir().unwrap();
        let file = d.path().join("db");
        {
            let mut db = Db::open(&file, "/nix/store").unwrap();
            db.register(&[(row(A), refs(&[]))]).unwrap();
        }
        let wal = d.path().join("db-wal");
        assert!(wal.exists() && d.path().join("db-shm").exists());
        // Left empty: the next opener has no stale frames to read.
        assert_eq!(std::fs::metadata(&wal).unwrap().len(), 0);
        // The close checkpointed: the database alone has the row.
        std::fs::remove_file(&wal).unwrap();
        std::fs::remove_file(d.path().join("db-shm")).unwrap();
        let db = Db::open(&file, "/nix/store").unwrap();
        assert!(db.is_valid(A).unwrap());
    }

    #[test]
    fn closure_follows_references_and_names_an_unregistered_root() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db"), "/nix/store").unwrap();
        db.register(&[(row(A), refs(&[]))]).unwrap();
        db.register(&[(row(B), refs(&[A, B])), (row(C), refs(&[B]))])
            .unwrap();
        assert_eq!(db.closure(&[C.into()]).unwrap(), Ok(refs(&[A, B, C])));
        assert_eq!(
            db.closure(&[A.into(), B.into()]).unwrap(),
            Ok(refs(&[A, B]))
        );
        assert_eq!(db.closure(&[]).unwrap(), Ok(refs(&[])));
        let missing = "/nix/store/dddddddddddddddddddddddddddddddd-d";
        assert_eq!(
            db.closure(&[A.into(), missing.into()]).unwrap(),
            Err(missing.to_string())
        );
        // The read transaction is over: writes go on.
        db.unregister(&refs(&[C])).unwrap();
        assert_eq!(db.closure(&[B.into()]).unwrap(), Ok(refs(&[A, B])));
    }

    #[test]
    fn missing_reference_rolls_back_everything() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db"), "/nix/store").unwrap();
        let e = db
            .register(&[(row(A), refs(&[])), (row(B), refs(&[C]))])
            .unwrap_err();
        assert!(matches!(e, DbError::MissingReference { .. }));
        assert!(!db.is_valid(A).unwrap());
    }

    #[test]
    fn unregister_refuses_to_orphan_referrers() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db"), "/nix/store").unwrap();
        db.register(&[(row(A), refs(&[])), (row(B), refs(&[A, B]))])
            .unwrap();
        assert!(matches!(
            db.unregister(&refs(&[A])),
            Err(DbError::StillReferenced { .. })
        ));
        assert!(db.is_valid(A).unwrap());
        db.unregister(&refs(&[A, B])).unwrap();
        assert!(db.all_paths().unwrap().is_empty());
        assert!(db.integrity_problems().unwrap().is_empty());
    }

    #[test]
    fn derivation_outputs_and_signatures() {
        let d = tempfile::tempdir().unwrap();
        let mut db = Db::open(&d.path().join("db"), "/nix/store").unwrap();
        db.register(&[(row(A), refs(&[]))]).unwrap();
        db.add_derivation_outputs(A, &[("out".into(), B.into())])
            .unwrap();
        assert_eq!(
            db.derivation_outputs(A).unwrap(),
            vec![("out".to_string(), B.to_string())]
        );
        assert_eq!(db.valid_derivers(B).unwrap(), refs(&[A]));
        db.add_signatures(A, &refs(&["k2:def"])).unwrap();
        let (r, _) = db.query(A).unwrap().unwrap();
        assert_eq!(r.sigs, refs(&["k:abc", "k2:def"]));
    }
}
