//! Emptying the directory of one file per entry (`~/.cache/b3/parse`) that
//! b3 wrote before its entries moved into a database ([`super::db`], which
//! sweeps its own rows). Its entries are only read by the b3 binaries that
//! wrote them (the binary's identity is part of every key), so entries
//! nobody has read for a month go, and so do the temporary files of writers
//! that were killed between creating and renaming them. Once no entry is
//! left, the stamp and the directory go too.
//!
//! A sweep reads the directory once and stats each file, so it runs at most
//! once a day: the modification time of a stamp file in the directory says
//! when the last one ran (a process that finds no directory pays one stat).
//! "Last read" is the later of a file's access and modification times.

use std::fs;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// Entries not read for this long are removed.
pub const KEEP_UNREAD: Duration = Duration::from_secs(30 * 24 * 3600);
/// A temporary file this old belongs to a writer that died.
pub const TMP_GRACE: Duration = Duration::from_secs(3600);
/// How often a cache is swept.
pub const SWEEP_EVERY: Duration = Duration::from_secs(24 * 3600);
/// The file whose modification time records the last sweep.
pub const STAMP: &str = ".last-sweep";

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Swept {
    pub entries: u64,
    pub temporaries: u64,
}

/// Whether `name` is an entry's (64 lowercase hex digits): nothing else in
/// the directory is ever removed as an entry.
fn is_entry_name(name: &str) -> bool {
    name.len() == 64
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn last_read(md: &fs::Metadata) -> Option<SystemTime> {
    let m = md.modified().ok()?;
    Some(md.accessed().map_or(m, |a| a.max(m)))
}

fn older_than(md: &fs::Metadata, now: SystemTime, age: Duration) -> bool {
    last_read(md)
        .and_then(|t| now.duration_since(t).ok())
        .is_some_and(|d| d > age)
}

/// Sweeps `dir` if the last sweep is at least [`SWEEP_EVERY`] old (or
/// never happened). Best effort: a failure only means no sweep.
pub fn sweep_if_due(dir: &Path, now: SystemTime) -> Option<Swept> {
    let stamp = dir.join(STAMP);
    let due = match fs::metadata(&stamp) {
        Ok(md) => md
            .modified()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_none_or(|d| d >= SWEEP_EVERY),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => dir.is_dir(),
        Err(_) => false,
    };
    if !due {
        return None;
    }
    // Claim the sweep first, so concurrent processes mostly skip it.
    let f = fs::File::create(&stamp).ok()?;
    f.set_modified(now).ok()?;
    Some(sweep(dir, now))
}

/// Removes entries unread for [`KEEP_UNREAD`] and temporary files older
/// than [`TMP_GRACE`]; leaves every other file alone. A directory left with
/// no entry or temporary file loses its stamp and, if then empty, goes.
pub fn sweep(dir: &Path, now: SystemTime) -> Swept {
    let mut swept = Swept::default();
    let Ok(rd) = fs::read_dir(dir) else {
        return swept;
    };
    let mut kept = 0u64;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let (is_entry, age) = if is_entry_name(name) {
            (true, KEEP_UNREAD)
        } else if name.starts_with(".tmp-") {
            (false, TMP_GRACE)
        } else {
            continue;
        };
        let Ok(md) = e.metadata() else { continue };
        if md.is_file() && older_than(&md, now, age) && remove(&e.path()) {
            if is_entry {
                swept.entries += 1;
            } else {
                swept.temporaries += 1;
            }
        } else {
            kept += 1;
        }
    }
    if kept == 0 {
        let _ = fs::remove_file(dir.join(STAMP));
        // Fails, as it should, when files of someone else's are left.
        let _ = fs::remove_dir(dir);
    }
    if swept != Swept::default() {
        tracing::debug!(dir = %dir.display(), ?swept, "old parse cache directory swept");
    }
    swept
}

fn remove(p: &Path) -> bool {
    fs::remove_file(p).is_ok()
}

// Unix only, as the rest of the cache's tests: file times under wine (where
// the Windows suites run) are not what these tests need.
#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::fs::FileTimes;

    fn dir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "b3-parse-sweep-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    /// Writes `name` in `d`, last read and written `age` before `now`.
    fn file(d: &Path, name: &str, now: SystemTime, age: Duration) {
        let p = d.join(name);
        fs::write(&p, b"x").unwrap();
        let t = now - age;
        let f = fs::File::options().write(true).open(&p).unwrap();
        f.set_times(FileTimes::new().set_accessed(t).set_modified(t))
            .unwrap();
    }

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn a_sweep_removes_month_old_entries_and_dead_writers_files_only() {
        let d = dir("only");
        let now = SystemTime::now();
        let old = "a".repeat(64);
        let fresh = "b".repeat(64);
        file(&d, &old, now, 31 * DAY);
        file(&d, &fresh, now, 29 * DAY);
        file(&d, ".tmp-1-1", now, 2 * TMP_GRACE);
        file(&d, ".tmp-2-2", now, Duration::from_secs(60));
        // Look-alikes that are not entries stay, however old.
        file(&d, &"A".repeat(64), now, 365 * DAY);
        file(&d, "notes.txt", now, 365 * DAY);
        let swept = sweep(&d, now);
        assert_eq!(
            swept,
            Swept {
                entries: 1,
                temporaries: 1
            }
        );
        let mut left: Vec<String> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        let mut want = vec![
            ".tmp-2-2".to_string(),
            "A".repeat(64),
            fresh,
            "notes.txt".to_string(),
        ];
        want.sort();
        assert_eq!(left, want);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn an_entry_read_recently_is_kept_even_if_written_long_ago() {
        let d = dir("read");
        let now = SystemTime::now();
        let name = "c".repeat(64);
        file(&d, &name, now, 90 * DAY);
        let f = fs::File::options().write(true).open(d.join(&name)).unwrap();
        f.set_times(FileTimes::new().set_accessed(now - DAY))
            .unwrap();
        assert_eq!(sweep(&d, now), Swept::default());
        assert!(d.join(&name).exists());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn sweeps_run_at_most_once_a_day() {
        let d = dir("daily");
        let now = SystemTime::now();
        let old = "d".repeat(64);
        let young = "e".repeat(64);
        file(&d, &young, now, Duration::ZERO);
        // No stamp yet: the first use sweeps and leaves one.
        assert_eq!(sweep_if_due(&d, now), Some(Swept::default()));
        assert!(d.join(STAMP).exists());
        file(&d, &old, now, 40 * DAY);
        // Within the day: no sweep, the old entry stays.
        assert_eq!(sweep_if_due(&d, now + DAY / 2), None);
        assert!(d.join(&old).exists());
        // A day later it goes; the young entry stays.
        assert_eq!(
            sweep_if_due(&d, now + DAY + Duration::from_secs(1)),
            Some(Swept {
                entries: 1,
                temporaries: 0
            })
        );
        assert!(!d.join(&old).exists());
        assert!(d.join(&young).exists());
        fs::remove_dir_all(&d).unwrap();
        // A directory that does not exist is left so.
        assert_eq!(sweep_if_due(&d, now), None);
        assert!(!d.exists());
    }

    #[test]
    fn a_directory_left_without_entries_is_removed() {
        let d = dir("gone");
        let now = SystemTime::now();
        file(&d, &"f".repeat(64), now, 40 * DAY);
        assert_eq!(
            sweep_if_due(&d, now),
            Some(Swept {
                entries: 1,
                temporaries: 0
            })
        );
        assert!(!d.exists(), "stamp and directory removed");
        // Someone else's file keeps the directory (not the stamp).
        let d = dir("kept");
        file(&d, "notes.txt", now, 40 * DAY);
        assert_eq!(sweep_if_due(&d, now), Some(Swept::default()));
        assert!(d.join("notes.txt").exists());
        assert!(!d.join(STAMP).exists());
        fs::remove_dir_all(&d).unwrap();
    }
}
