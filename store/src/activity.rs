//! Activity logging, Nix's model: long-running work is an *activity* (started
//! with a type, a verbosity level, a text and typed fields, optionally under a
//! parent), reports *results* while it runs (a build log line, progress,
//! a phase change...) and is *stopped* (on drop). Plain messages go through
//! the same [`Logger`]. Where the records go is a pluggable, thread-safe
//! [`LogSink`]: nothing by default ([`NoopSink`]), `--log-format
//! internal-json` lines for nix-output-monitor ([`JsonSink`]), or plain
//! lines for pipes ([`PlainSink`]).
//!
//! The numbers of [`ActivityType`], [`ResultType`] and [`Verbosity`] are
//! Nix's (`logging.hh`), since they appear on the wire.

mod json;
mod plain;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

pub use json::{parse_json_line, JsonDialect, JsonMessage, JsonParseError, JsonSink};
pub use plain::PlainSink;

/// Activity identifiers: unique within a process and, like Nix's, across
/// processes (the pid is in the high 32 bits). 0 means "no parent".
pub type ActivityId = u64;

/// Nix's `ActivityType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum ActivityType {
    Unknown = 0,
    CopyPath = 100,
    FileTransfer = 101,
    Realise = 102,
    CopyPaths = 103,
    Builds = 104,
    Build = 105,
    OptimiseStore = 106,
    VerifyPaths = 107,
    Substitute = 108,
    QueryPathInfo = 109,
    PostBuildHook = 110,
    BuildWaiting = 111,
}

impl ActivityType {
    pub fn code(self) -> u64 {
        self as u64
    }
    pub fn from_code(code: u64) -> Option<ActivityType> {
        use ActivityType::*;
        Some(match code {
            0 => Unknown,
            100 => CopyPath,
            101 => FileTransfer,
            102 => Realise,
            103 => CopyPaths,
            104 => Builds,
            105 => Build,
            106 => OptimiseStore,
            107 => VerifyPaths,
            108 => Substitute,
            109 => QueryPathInfo,
            110 => PostBuildHook,
            111 => BuildWaiting,
            _ => return None,
        })
    }
}

/// Nix's `ResultType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum ResultType {
    FileLinked = 100,
    BuildLogLine = 101,
    UntrustedPath = 102,
    CorruptedPath = 103,
    SetPhase = 104,
    Progress = 105,
    SetExpected = 106,
    PostBuildLogLine = 107,
}

impl ResultType {
    pub fn code(self) -> u64 {
        self as u64
    }
    pub fn from_code(code: u64) -> Option<ResultType> {
        use ResultType::*;
        Some(match code {
            100 => FileLinked,
            101 => BuildLogLine,
            102 => UntrustedPath,
            103 => CorruptedPath,
            104 => SetPhase,
            105 => Progress,
            106 => SetExpected,
            107 => PostBuildLogLine,
            _ => return None,
        })
    }
}

/// Nix's `Verbosity`: 0 = errors only ... 7 = everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Verbosity {
    Error = 0,
    Warn = 1,
    Notice = 2,
    Info = 3,
    Talkative = 4,
    Chatty = 5,
    Debug = 6,
    Vomit = 7,
}

impl Verbosity {
    pub fn code(self) -> u8 {
        self as u8
    }
    /// Clamps like Nix does for levels read from the wire.
    pub fn from_code_clamped(code: u64) -> Verbosity {
        use Verbosity::*;
        match code {
            0 => Error,
            1 => Warn,
            2 => Notice,
            3 => Info,
            4 => Talkative,
            5 => Chatty,
            6 => Debug,
            _ => Vomit,
        }
    }
    /// The level after `-v` given `n` times from Nix's default (`Info`);
    /// `quiet` steps down instead.
    pub fn from_flags(verbose: u8, quiet: u8) -> Verbosity {
        let base = i32::from(Verbosity::Info.code()) + i32::from(verbose) - i32::from(quiet);
        Verbosity::from_code_clamped(base.clamp(0, 7) as u64)
    }
}

/// One field of a start or result record: Nix fields are unsigned integers
/// or strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    Int(u64),
    Str(String),
}

impl From<u64> for Field {
    fn from(v: u64) -> Field {
        Field::Int(v)
    }
}
impl From<&str> for Field {
    fn from(v: &str) -> Field {
        Field::Str(v.to_owned())
    }
}
impl From<String> for Field {
    fn from(v: String) -> Field {
        Field::Str(v)
    }
}

/// Where activity records go. Implementations must be cheap and must not
/// fail (logging never aborts work); they are called from many threads.
pub trait LogSink: Send + Sync {
    fn start(
        &self,
        id: ActivityId,
        level: Verbosity,
        ty: ActivityType,
        text: &str,
        fields: &[Field],
        parent: ActivityId,
    );
    fn stop(&self, id: ActivityId);
    fn result(&self, id: ActivityId, ty: ResultType, fields: &[Field]);
    /// A message that passed the logger's verbosity filter.
    fn log(&self, level: Verbosity, msg: &str);
    /// An error report: `msg` is the rendered text, `raw_msg` the bare one.
    fn error(&self, level: Verbosity, msg: &str, raw_msg: &str) {
        let _ = raw_msg;
        self.log(level, msg);
    }
}

/// Discards everything (the default sink).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopSink;

impl LogSink for NoopSink {
    fn start(
        &self,
        _: ActivityId,
        _: Verbosity,
        _: ActivityType,
        _: &str,
        _: &[Field],
        _: ActivityId,
    ) {
    }
    fn stop(&self, _: ActivityId) {}
    fn result(&self, _: ActivityId, _: ResultType, _: &[Field]) {}
    fn log(&self, _: Verbosity, _: &str) {}
}

fn next_id() -> ActivityId {
    static BASE: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| u64::from(std::process::id()) << 32);
    base + COUNTER.fetch_add(1, Ordering::Relaxed)
}

struct LoggerInner {
    sink: Arc<dyn LogSink>,
    verbosity: AtomicU8,
}

/// A handle on a sink plus the message verbosity; cheap to clone.
#[derive(Clone)]
pub struct Logger {
    inner: Arc<LoggerInner>,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Logger")
            .field("verbosity", &self.verbosity())
            .finish_non_exhaustive()
    }
}

impl Logger {
    pub fn new(sink: Arc<dyn LogSink>, verbosity: Verbosity) -> Logger {
        Logger {
            inner: Arc::new(LoggerInner {
                sink,
                verbosity: AtomicU8::new(verbosity.code()),
            }),
        }
    }

    pub fn noop() -> Logger {
        Logger::new(Arc::new(NoopSink), Verbosity::Info)
    }

    pub fn verbosity(&self) -> Verbosity {
        Verbosity::from_code_clamped(u64::from(self.inner.verbosity.load(Ordering::Relaxed)))
    }

    pub fn set_verbosity(&self, v: Verbosity) {
        self.inner.verbosity.store(v.code(), Ordering::Relaxed);
    }

    /// A message, dropped if above the verbosity (as Nix's `printMsg`).
    /// Activities are not filtered: sinks decide what to show of them.
    pub fn log(&self, level: Verbosity, msg: &str) {
        if level <= self.verbosity() {
            self.inner.sink.log(level, msg);
        }
    }

    pub fn warn(&self, msg: &str) {
        self.log(Verbosity::Warn, &format!("warning: {msg}"));
    }

    /// Reports an error (always shown).
    pub fn error(&self, msg: &str) {
        self.inner
            .sink
            .error(Verbosity::Error, &format!("error: {msg}"), msg);
    }

    /// Starts an activity; it stops when the returned value is dropped.
    pub fn start(
        &self,
        level: Verbosity,
        ty: ActivityType,
        text: impl Into<String>,
        fields: Vec<Field>,
        parent: ActivityId,
    ) -> Activity {
        let id = next_id();
        let text = text.into();
        self.inner.sink.start(id, level, ty, &text, &fields, parent);
        Activity {
            logger: self.clone(),
            id,
        }
    }

    /// Nix's `building '<drv>'` activity: fields `[drv, machine, round, rounds]`.
    pub fn start_build(&self, drv_path: &str, machine: &str, parent: ActivityId) -> Activity {
        let text = if machine.is_empty() {
            format!("building '{drv_path}'")
        } else {
            format!("building '{drv_path}' on '{machine}'")
        };
        self.start(
            Verbosity::Info,
            ActivityType::Build,
            text,
            vec![drv_path.into(), machine.into(), 1.into(), 1.into()],
            parent,
        )
    }

    /// Nix's substitution activity: fields `[store path, substituter URI]`.
    pub fn start_substitute(
        &self,
        store_path: &str,
        substituter: &str,
        parent: ActivityId,
    ) -> Activity {
        self.start(
            Verbosity::Info,
            ActivityType::Substitute,
            format!("copying path '{store_path}' from '{substituter}'"),
            vec![store_path.into(), substituter.into()],
            parent,
        )
    }

    /// Nix's copy activity: fields `[store path, from URI, to URI]`.
    pub fn start_copy_path(
        &self,
        store_path: &str,
        from: &str,
        to: &str,
        parent: ActivityId,
    ) -> Activity {
        self.start(
            Verbosity::Info,
            ActivityType::CopyPath,
            format!("copying path '{store_path}' from '{from}' to '{to}'"),
            vec![store_path.into(), from.into(), to.into()],
            parent,
        )
    }

    /// Nix's download activity: field `[uri]`.
    pub fn start_file_transfer(&self, uri: &str, upload: bool, parent: ActivityId) -> Activity {
        let verb = if upload { "uploading" } else { "downloading" };
        self.start(
            Verbosity::Talkative,
            ActivityType::FileTransfer,
            format!("{verb} '{uri}'"),
            vec![uri.into()],
            parent,
        )
    }
}

fn global_slot() -> &'static RwLock<Logger> {
    static GLOBAL: OnceLock<RwLock<Logger>> = OnceLock::new();
    GLOBAL.get_or_init(|| RwLock::new(Logger::noop()))
}

/// The process-wide logger (a no-op until [`set_global`] is called).
pub fn global() -> Logger {
    match global_slot().read() {
        Ok(g) => g.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

/// Installs the process-wide logger (the CLI does this from `--log-format`).
pub fn set_global(logger: Logger) {
    match global_slot().write() {
        Ok(mut g) => *g = logger,
        Err(poisoned) => *poisoned.into_inner() = logger,
    }
}

/// A running activity. Dropping it sends the stop record.
#[derive(Debug)]
pub struct Activity {
    logger: Logger,
    id: ActivityId,
}

impl Activity {
    pub fn id(&self) -> ActivityId {
        self.id
    }

    pub fn logger(&self) -> &Logger {
        &self.logger
    }

    pub fn result(&self, ty: ResultType, fields: &[Field]) {
        self.logger.inner.sink.result(self.id, ty, fields);
    }

    /// One line of builder output (`resBuildLogLine`).
    pub fn log_line(&self, line: &str) {
        self.result(ResultType::BuildLogLine, &[line.into()]);
    }

    /// One line of post-build-hook output.
    pub fn post_build_log_line(&self, line: &str) {
        self.result(ResultType::PostBuildLogLine, &[line.into()]);
    }

    /// The builder entered a phase (`unpackPhase`...).
    pub fn set_phase(&self, phase: &str) {
        self.result(ResultType::SetPhase, &[phase.into()]);
    }

    /// `resProgress`: `[done, expected, running, failed]`.
    pub fn progress(&self, done: u64, expected: u64, running: u64, failed: u64) {
        self.result(
            ResultType::Progress,
            &[done.into(), expected.into(), running.into(), failed.into()],
        );
    }

    /// `resSetExpected`: how many child activities of type `ty` (or bytes,
    /// for `CopyPath`/`FileTransfer`) to expect.
    pub fn set_expected(&self, ty: ActivityType, expected: u64) {
        self.result(
            ResultType::SetExpected,
            &[ty.code().into(), expected.into()],
        );
    }

    /// `resFileLinked` from store optimisation: bytes and blocks saved.
    pub fn file_linked(&self, bytes: u64, blocks: u64) {
        self.result(ResultType::FileLinked, &[bytes.into(), blocks.into()]);
    }

    pub fn untrusted_path(&self, store_path: &str) {
        self.result(ResultType::UntrustedPath, &[store_path.into()]);
    }

    pub fn corrupted_path(&self, store_path: &str) {
        self.result(ResultType::CorruptedPath, &[store_path.into()]);
    }

    /// A child activity (its parent is this one).
    pub fn child(
        &self,
        level: Verbosity,
        ty: ActivityType,
        text: impl Into<String>,
        fields: Vec<Field>,
    ) -> Activity {
        self.logger.start(level, ty, text, fields, self.id)
    }

    /// Stops now (same as dropping).
    pub fn stop(self) {}
}

/// Relays a builder's stderr into its build activity, as Nix does: `@nix`
/// records are interpreted (a phase change, a message, file-transfer
/// activities the builder runs, their results and stops), anything else is
/// a build log line. Builders are untrusted: they may only start
/// `FileTransfer` activities, and only their own ids are honoured.
pub struct BuilderLog<'a> {
    build: &'a Activity,
    children: std::collections::HashMap<ActivityId, Activity>,
}

impl<'a> BuilderLog<'a> {
    pub fn new(build: &'a Activity) -> BuilderLog<'a> {
        BuilderLog {
            build,
            children: std::collections::HashMap::new(),
        }
    }

    /// Handles one line (without its newline).
    pub fn line(&mut self, line: &str) {
        let msg = match parse_json_line(line) {
            None => return self.build.log_line(line),
            Some(Err(e)) => {
                self.build.logger.log(
                    Verbosity::Error,
                    &format!("bad JSON log message from the derivation builder: {e}"),
                );
                return;
            }
            Some(Ok(m)) => m,
        };
        match msg {
            JsonMessage::SetPhase { phase } => self.build.set_phase(&phase),
            JsonMessage::Msg { level, msg } => self.build.logger.log(level, &msg),
            JsonMessage::Start {
                id,
                level,
                ty,
                text,
                fields,
                ..
            } => {
                if ty == ActivityType::FileTransfer {
                    let child = self.build.child(level, ty, text, fields);
                    self.children.insert(id, child);
                }
            }
            JsonMessage::Stop { id } => {
                self.children.remove(&id);
            }
            JsonMessage::Result { id, ty, fields } => {
                if let Some(child) = self.children.get(&id) {
                    child.result(ty, &fields);
                }
            }
        }
    }
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.logger.inner.sink.stop(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);
    impl LogSink for Recorder {
        fn start(
            &self,
            id: ActivityId,
            level: Verbosity,
            ty: ActivityType,
            text: &str,
            fields: &[Field],
            parent: ActivityId,
        ) {
            self.0.lock().unwrap().push(format!(
                "start {id} {} {} {text} {fields:?} {parent}",
                level.code(),
                ty.code()
            ));
        }
        fn stop(&self, id: ActivityId) {
            self.0.lock().unwrap().push(format!("stop {id}"));
        }
        fn result(&self, id: ActivityId, ty: ResultType, fields: &[Field]) {
            self.0
                .lock()
                .unwrap()
                .push(format!("result {id} {} {fields:?}", ty.code()));
        }
        fn log(&self, level: Verbosity, msg: &str) {
            self.0
                .lock()
                .unwrap()
                .push(format!("msg {} {msg}", level.code()));
        }
    }

    #[test]
    fn codes_match_nix_logging_hh() {
        assert_eq!(ActivityType::CopyPath.code(), 100);
        assert_eq!(ActivityType::Build.code(), 105);
        assert_eq!(ActivityType::BuildWaiting.code(), 111);
        assert_eq!(ResultType::FileLinked.code(), 100);
        assert_eq!(ResultType::Progress.code(), 105);
        assert_eq!(ResultType::PostBuildLogLine.code(), 107);
        for c in 0..200 {
            if let Some(t) = ActivityType::from_code(c) {
                assert_eq!(t.code(), c);
            }
            if let Some(t) = ResultType::from_code(c) {
                assert_eq!(t.code(), c);
            }
        }
    }

    #[test]
    fn activity_lifecycle_and_parenting() {
        let rec = Arc::new(Recorder::default());
        let logger = Logger::new(rec.clone(), Verbosity::Info);
        {
            let builds = logger.start(Verbosity::Error, ActivityType::Builds, "", vec![], 0);
            let b = builds.child(
                Verbosity::Info,
                ActivityType::Build,
                "building 'x'",
                vec!["x".into()],
            );
            b.log_line("hello");
            b.set_phase("buildPhase");
            builds.progress(0, 1, 1, 0);
            assert_ne!(b.id(), builds.id());
            assert_eq!(b.id() >> 32, u64::from(std::process::id()));
        }
        let got = rec.0.lock().unwrap().clone();
        assert_eq!(got.len(), 7, "{got:?}");
        assert!(got[0].starts_with("start ") && got[0].ends_with(" 0 104  [] 0"));
        let builds_id: u64 = got[0].split(' ').nth(1).unwrap().parse().unwrap();
        assert!(got[1].ends_with(&format!("building 'x' [Str(\"x\")] {builds_id}")));
        assert!(got[2].contains(" 101 [Str(\"hello\")]"));
        assert!(got[3].contains(" 104 [Str(\"buildPhase\")]"));
        assert!(got[4].contains(" 105 [Int(0), Int(1), Int(1), Int(0)]"));
        // Child stops before its parent (reverse drop order).
        assert!(got[5].starts_with("stop ") && !got[5].ends_with(&builds_id.to_string()));
        assert_eq!(got[6], format!("stop {builds_id}"));
    }

    #[test]
    fn messages_filtered_by_verbosity() {
        let rec = Arc::new(Recorder::default());
        let logger = Logger::new(rec.clone(), Verbosity::Info);
        logger.log(Verbosity::Info, "shown");
        logger.log(Verbosity::Debug, "hidden");
        logger.set_verbosity(Verbosity::Vomit);
        logger.log(Verbosity::Debug, "now shown");
        assert_eq!(
            *rec.0.lock().unwrap(),
            vec!["msg 3 shown", "msg 6 now shown"]
        );
        assert_eq!(Verbosity::from_flags(1, 0), Verbosity::Talkative);
        assert_eq!(Verbosity::from_flags(0, 5), Verbosity::Error);
        assert_eq!(Verbosity::from_flags(9, 0), Verbosity::Vomit);
    }

    #[test]
    fn builder_lines_are_relayed_like_nix() {
        let rec = Arc::new(Recorder::default());
        let logger = Logger::new(rec.clone(), Verbosity::Info);
        {
            let build = logger.start_build("/nix/store/x.drv", "", 0);
            let mut bl = BuilderLog::new(&build);
            bl.line("plain output");
            bl.line(r#"@nix {"action":"setPhase","phase":"unpackPhase"}"#);
            bl.line(r#"@nix {"action":"msg","level":3,"msg":"from builder"}"#);
            // Untrusted: a build activity from the builder is ignored...
            bl.line(r#"@nix {"action":"start","id":7,"level":3,"text":"x","type":105}"#);
            bl.line(r#"@nix {"action":"result","fields":[1,2,0,0],"id":7,"type":105}"#);
            // ...a file transfer becomes a child of the build.
            bl.line(r#"@nix {"action":"start","fields":["https://e/x"],"id":8,"level":4,"text":"downloading","type":101}"#);
            bl.line(r#"@nix {"action":"result","fields":[5,10,0,0],"id":8,"type":105}"#);
            bl.line(r#"@nix {"action":"stop","id":8}"#);
            bl.line("@nix {broken");
        }
        let got = rec.0.lock().unwrap().clone();
        let build_id: u64 = got[0].split(' ').nth(1).unwrap().parse().unwrap();
        assert!(got[1].ends_with(" 101 [Str(\"plain output\")]"), "{got:?}");
        assert!(got[2].ends_with(" 104 [Str(\"unpackPhase\")]"));
        assert_eq!(got[3], "msg 3 from builder");
        assert!(
            got[4].starts_with("start ")
                && got[4].ends_with(&format!(
                    " 4 101 downloading [Str(\"https://e/x\")] {build_id}"
                ))
        );
        assert!(got[5].contains(" 105 [Int(5), Int(10), Int(0), Int(0)]"));
        assert!(got[6].starts_with("stop "));
        assert!(got[7].starts_with("msg 0 bad JSON log message"));
        assert_eq!(got[8], format!("stop {build_id}"));
        assert_eq!(got.len(), 9);
    }

    #[test]
    fn sink_is_shared_across_threads() {
        let rec = Arc::new(Recorder::default());
        let logger = Logger::new(rec.clone(), Verbosity::Info);
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let l = logger.clone();
                std::thread::spawn(move || {
                    let a = l.start_build(&format!("/nix/store/{i}.drv"), "", 0);
                    a.log_line("x");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let got = rec.0.lock().unwrap();
        assert_eq!(got.len(), 24);
        let mut ids: Vec<&str> = got
            .iter()
            .filter(|l| l.starts_with("start"))
            .map(|l| l.split(' ').nth(1).unwrap())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 8);
    }
}
