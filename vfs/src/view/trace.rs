//! Access tracing: which process opened which file of a view.
//!
//! FUSE tells the server the thread id of the caller. For each access the
//! tracer reads `/proc/<tid>/status` (thread group id, parent pid) and
//! `/proc/<tid>/stat` (start time, which with the pid identifies the process
//! across pid reuse) and `/proc/<pid>/cmdline`, keeps the record in memory
//! and, if asked, appends it to a log file, one line per access:
//!
//! ```text
//! <unix ns>\t<kind>\t<pid>\t<ppid>\t<start ticks>\t<store path>\t<file>\t<cmdline>
//! ```
//!
//! (file and cmdline with `\\`, `\t`, `\n` escaped; cmdline arguments joined
//! by spaces.) Information about processes that exited before the tracer saw
//! them is left empty rather than guessed.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// What kind of access was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum AccessKind {
    Open,
    OpenDir,
    ReadLink,
}

impl AccessKind {
    fn as_str(self) -> &'static str {
        match self {
            AccessKind::Open => "open",
            AccessKind::OpenDir => "opendir",
            AccessKind::ReadLink => "readlink",
        }
    }
}

/// Facts about the process behind one access.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Thread group id (the process id); the FUSE caller's tid if unknown.
    pub pid: u32,
    pub ppid: Option<u32>,
    /// Start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: Option<u64>,
    pub cmdline: Vec<String>,
}

/// One traced access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRecord {
    pub time: SystemTime,
    pub kind: AccessKind,
    /// FUSE caller thread id.
    pub tid: u32,
    pub process: ProcessInfo,
    /// Store path base name.
    pub store_path: String,
    /// Path inside the store path ("" for its root).
    pub file: String,
}

/// Which paths of a closure were used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceReport {
    /// Store path → files accessed in it.
    pub used: BTreeMap<String, BTreeSet<String>>,
    /// Declared inputs no traced access touched.
    pub unused: Vec<String>,
}

/// Collects access records; shared by a view's worker threads.
pub struct Tracer {
    records: Mutex<Vec<AccessRecord>>,
    log: Option<Mutex<io::BufWriter<fs::File>>>,
}

impl Default for Tracer {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracer {
    /// A tracer that keeps records in memory only.
    pub fn new() -> Self {
        Tracer {
            records: Mutex::new(Vec::new()),
            log: None,
        }
    }

    /// A tracer that also appends every record to `path`.
    pub fn with_log(path: &Path) -> io::Result<Self> {
        let f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Tracer {
            log: Some(Mutex::new(io::BufWriter::new(f))),
            ..Tracer::new()
        })
    }

    /// Records one access by FUSE caller `tid`.
    pub fn record(&self, kind: AccessKind, tid: u32, store_path: String, file: String) {
        let process = self.process_info(tid);
        let rec = AccessRecord {
            time: SystemTime::now(),
            kind,
            tid,
            process,
            store_path,
            file,
        };
        if let Some(log) = &self.log {
            let mut w = log.lock().unwrap_or_else(|p| p.into_inner());
            // A failing log must not fail the file system call it describes.
            let _ = writeln!(w, "{}", log_line(&rec)).and_then(|_| w.flush());
        }
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(rec);
    }

    /// Read afresh for every access: an `exec` keeps pid and start time but
    /// changes the command line, so nothing here can be cached safely.
    fn process_info(&self, tid: u32) -> ProcessInfo {
        let (pid, ppid) = status_ids(tid).unwrap_or((tid, None));
        ProcessInfo {
            pid,
            ppid,
            start_time: start_time(pid),
            cmdline: cmdline(pid),
        }
    }

    /// All records so far.
    pub fn records(&self) -> Vec<AccessRecord> {
        self.records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Which of the `declared` store paths were used, and how.
    pub fn report<S: AsRef<str>>(&self, declared: &[S]) -> TraceReport {
        let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for r in self
            .records
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            used.entry(r.store_path.clone())
                .or_default()
                .insert(r.file.clone());
        }
        let unused = declared
            .iter()
            .map(|d| d.as_ref().to_owned())
            .filter(|d| !used.contains_key(d))
            .collect();
        TraceReport { used, unused }
    }
}

/// Builds a [`TraceReport`] from a trace log written by [`Tracer::with_log`]
/// (for a runtime whose tracer lived in another process).
pub fn report_from_log<S: AsRef<str>>(log: &Path, declared: &[S]) -> io::Result<TraceReport> {
    let text = fs::read_to_string(log)?;
    let mut used: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        if f.len() == 8 {
            used.entry(unescape(f[5]))
                .or_default()
                .insert(unescape(f[6]));
        }
    }
    let unused = declared
        .iter()
        .map(|d| d.as_ref().to_owned())
        .filter(|d| !used.contains_key(d))
        .collect();
    Ok(TraceReport { used, unused })
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c == '\\' {
            match it.next() {
                Some('t') => out.push('\t'),
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields resume
    // after the last ')'. Field 22 (starttime) is the 20th after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn status_ids(tid: u32) -> Option<(u32, Option<u32>)> {
    let status = fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    Some((field("Tgid:")?, field("PPid:")))
}

fn cmdline(pid: u32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n")
}

fn log_line(r: &AccessRecord) -> String {
    let ns = r
        .time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let opt = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_else(|| "-".into());
    format!(
        "{ns}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
        r.kind.as_str(),
        r.process.pid,
        opt(r.process.ppid.map(u64::from)),
        opt(r.process.start_time),
        escape(&r.store_path),
        escape(&r.file),
        escape(&r.process.cmdline.join(" ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_info_is_read_from_proc() {
        let t = Tracer::new();
        let me = std::process::id();
        t.record(AccessKind::Open, me, "x-p".into(), "bin/a".into());
        let r = &t.records()[0];
        assert_eq!(r.process.pid, me);
        assert_eq!(
            r.process.ppid,
            Some(rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get() as u32))
        );
        assert!(r.process.start_time.is_some());
        assert!(!r.process.cmdline.is_empty());
    }

    #[test]
    fn report_lists_used_files_and_unused_inputs() {
        let t = Tracer::new();
        t.record(AccessKind::Open, 1, "a-one".into(), "bin/x".into());
        t.record(AccessKind::OpenDir, 1, "a-one".into(), "".into());
        let rep = t.report(&["a-one", "b-two"]);
        assert_eq!(rep.unused, vec!["b-two".to_string()]);
        assert_eq!(rep.used["a-one"].len(), 2);
    }

    #[test]
    fn log_lines_escape_separators() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("trace.log");
        let t = Tracer::with_log(&log).unwrap();
        t.record(
            AccessKind::Open,
            std::process::id(),
            "p".into(),
            "we\tird\nname".into(),
        );
        let text = fs::read_to_string(&log).unwrap();
        assert_eq!(text.lines().count(), 1);
        let fields: Vec<_> = text.trim_end().split('\t').collect();
        assert_eq!(fields.len(), 8);
        assert_eq!(fields[1], "open");
        assert_eq!(fields[6], "we\\tird\\nname");
        let rep = report_from_log(&log, &["p", "q"]).unwrap();
        assert!(rep.used["p"].contains("we\tird\nname"));
        assert_eq!(rep.unused, vec!["q".to_string()]);
    }
}
