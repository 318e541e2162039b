//! `--log-format`: picks where activity records and messages go, and
//! installs that as the process-wide logger (`b3_store::activity::global`).
//!
//! - `internal-json`: Nix's `@nix {...}` lines on stderr, so
//!   nix-output-monitor (`b3 ... --log-format internal-json -v |& nom --json`)
//!   works unchanged. `B3_LOG_JSON_DIALECT=nix28` drops the `parent` key as
//!   Nix 2.8 does; the default matches current Nix.
//! - `raw`: plain lines (what Nix's `raw` prints), the default when stderr is
//!   not a terminal.
//! - `bar` / `bar-with-logs`: accepted for compatibility; until b3 has its
//!   own progress UI they print plain lines (`bar` without build logs).

use std::io::IsTerminal;
use std::sync::Arc;

use b3_store::activity::{self, JsonDialect, JsonSink, LogSink, Logger, PlainSink, Verbosity};

/// The formats Nix accepts for `--log-format`.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Raw,
    InternalJson,
    Bar,
    BarWithLogs,
}

impl LogFormat {
    /// Nix's choice when no `--log-format` is given: a bar on a terminal,
    /// raw lines otherwise.
    pub fn default_for_stderr() -> LogFormat {
        if std::io::stderr().is_terminal() {
            LogFormat::Bar
        } else {
            LogFormat::Raw
        }
    }
}

fn dialect_from_env() -> JsonDialect {
    match std::env::var("B3_LOG_JSON_DIALECT").as_deref() {
        Ok("nix28") | Ok("nix-2.8") => JsonDialect::Nix28,
        _ => JsonDialect::Current,
    }
}

/// The sink for a format, writing to `out`.
pub fn sink_for<W: std::io::Write + Send + 'static>(
    format: LogFormat,
    verbosity: Verbosity,
    out: W,
    dialect: JsonDialect,
) -> Arc<dyn LogSink> {
    match format {
        LogFormat::InternalJson => Arc::new(JsonSink::new(out, dialect)),
        LogFormat::Raw | LogFormat::BarWithLogs => Arc::new(PlainSink::new(out, verbosity, true)),
        LogFormat::Bar => Arc::new(PlainSink::new(out, verbosity, false)),
    }
}

/// Installs the process-wide logger for `format` on stderr and returns it.
/// `verbose`/`quiet` are the counts of `-v` and `--quiet`.
pub fn install(format: Option<LogFormat>, verbose: u8, quiet: u8) -> Logger {
    let format = format.unwrap_or_else(LogFormat::default_for_stderr);
    let verbosity = Verbosity::from_flags(verbose, quiet);
    let logger = Logger::new(
        sink_for(format, verbosity, std::io::stderr(), dialect_from_env()),
        verbosity,
    );
    activity::set_global(logger.clone());
    logger
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn internal_json_lines_for_a_build() {
        let buf = Shared::default();
        let logger = Logger::new(
            sink_for(
                LogFormat::InternalJson,
                Verbosity::Info,
                buf.clone(),
                JsonDialect::Current,
            ),
            Verbosity::Info,
        );
        {
            let b = logger.start_build("/nix/store/x-a.drv", "", 0);
            b.log_line("hi");
        }
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with(
            "@nix {\"action\":\"start\",\"fields\":[\"/nix/store/x-a.drv\",\"\",1,1],\"id\":"
        ));
        assert!(lines[0].ends_with(
            ",\"level\":3,\"parent\":0,\"text\":\"building '/nix/store/x-a.drv'\",\"type\":105}"
        ));
        assert!(lines[1].starts_with("@nix {\"action\":\"result\",\"fields\":[\"hi\"],\"id\":"));
        assert!(lines[2].starts_with("@nix {\"action\":\"stop\",\"id\":"));
    }

    #[test]
    fn bar_without_logs_hides_build_output() {
        let buf = Shared::default();
        let logger = Logger::new(
            sink_for(
                LogFormat::Bar,
                Verbosity::Info,
                buf.clone(),
                JsonDialect::Current,
            ),
            Verbosity::Info,
        );
        logger
            .start_build("/nix/store/x-a.drv", "", 0)
            .log_line("hidden");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "building '/nix/store/x-a.drv'...\n");
    }
}
