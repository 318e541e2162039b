//! Plain lines for pipes and logs, as Nix's `--log-format raw` prints them:
//! messages as they are, an activity's text (with `...`) when it starts and
//! its level is within the verbosity, builder output lines when build logs
//! are wanted; nothing for progress or stops.

use std::io::Write;
use std::sync::Mutex;

use super::{ActivityId, ActivityType, Field, LogSink, ResultType, Verbosity};

pub struct PlainSink<W: Write + Send> {
    out: Mutex<W>,
    verbosity: Verbosity,
    print_build_logs: bool,
}

impl<W: Write + Send> PlainSink<W> {
    pub fn new(out: W, verbosity: Verbosity, print_build_logs: bool) -> PlainSink<W> {
        PlainSink {
            out: Mutex::new(out),
            verbosity,
            print_build_logs,
        }
    }

    pub fn into_inner(self) -> W {
        match self.out.into_inner() {
            Ok(w) => w,
            Err(p) => p.into_inner(),
        }
    }

    fn line(&self, s: &str) {
        let mut g = match self.out.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let _ = g.write_all(format!("{s}\n").as_bytes());
        let _ = g.flush();
    }
}

impl<W: Write + Send> LogSink for PlainSink<W> {
    fn start(
        &self,
        _id: ActivityId,
        level: Verbosity,
        _ty: ActivityType,
        text: &str,
        _fields: &[Field],
        _parent: ActivityId,
    ) {
        if level <= self.verbosity && !text.is_empty() {
            self.line(&format!("{text}..."));
        }
    }
    fn stop(&self, _id: ActivityId) {}
    fn result(&self, _id: ActivityId, ty: ResultType, fields: &[Field]) {
        if !self.print_build_logs {
            return;
        }
        let Some(Field::Str(text)) = fields.first() else {
            return;
        };
        match ty {
            ResultType::BuildLogLine => self.line(text),
            ResultType::PostBuildLogLine => self.line(&format!("post-build-hook: {text}")),
            _ => {}
        }
    }
    fn log(&self, _level: Verbosity, msg: &str) {
        self.line(msg);
    }
}

#[cfg(test)]
mod tests {
    use super::super::Logger;
    use super::*;
    use std::sync::Arc;

    #[test]
    fn raw_format_lines() {
        let sink = Arc::new(PlainSink::new(Vec::new(), Verbosity::Info, true));
        let logger = Logger::new(sink.clone(), Verbosity::Info);
        {
            let q = logger.start(
                Verbosity::Debug,
                ActivityType::Unknown,
                "querying info",
                vec![],
                0,
            );
            drop(q);
            let b = logger.start_build("/nix/store/x.drv", "", 0);
            b.log_line("hello");
            b.progress(1, 2, 0, 0);
            b.post_build_log_line("uploaded");
            logger.log(Verbosity::Info, "done");
        }
        drop(logger);
        let sink = Arc::try_unwrap(sink).ok().unwrap();
        assert_eq!(
            String::from_utf8(sink.into_inner()).unwrap(),
            "building '/nix/store/x.drv'...\nhello\npost-build-hook: uploaded\ndone\n"
        );
    }
}
