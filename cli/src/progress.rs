//! b3's own build display: a [`LogSink`] that renders activity records.
//!
//! On a terminal ([`ProgressSink`], indicatif): a header with the state
//! counts (builds done/total, running, failed; substitutions), one line per
//! running build or download with its timer, phase and last log line, and
//! messages printed above it; `-L` also streams every log line, prefixed
//! with the derivation's name as Nix does (`hello> ...`). When stderr is
//! not a terminal, plain lines ([`PlainSink`]): what starts, messages, and
//! with `-L` the logs.
//!
//! It only consumes what the builder reports through `b3_store::activity`
//! (the same records `--log-format internal-json` writes), so anything that
//! reports activities shows up here.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use b3_store::activity::{
    ActivityId, ActivityType, Field, LogSink, PlainSink, ResultType, Verbosity,
};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// `drv` or store path → the name part (`/nix/store/abc-hello-1.0.drv` →
/// `hello-1.0`).
fn short_name(path: &str) -> String {
    let base = path.rsplit('/').next().unwrap_or(path);
    let name = base.split_once('-').map_or(base, |(_, n)| n);
    name.strip_suffix(".drv").unwrap_or(name).to_string()
}

fn str_field(fields: &[Field], i: usize) -> Option<&str> {
    match fields.get(i) {
        Some(Field::Str(s)) => Some(s),
        _ => None,
    }
}

fn int_field(fields: &[Field], i: usize) -> u64 {
    match fields.get(i) {
        Some(Field::Int(n)) => *n,
        _ => 0,
    }
}

/// `[done, expected, running, failed]` of Nix's progress results.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    done: u64,
    expected: u64,
    running: u64,
    failed: u64,
}

struct Shown {
    ty: ActivityType,
    name: String,
    phase: Option<String>,
    last_line: String,
    bar: ProgressBar,
}

#[derive(Default)]
struct State {
    acts: HashMap<ActivityId, Shown>,
    order: Vec<ActivityId>,
    /// The scheduler's counter activities (`Builds`, `CopyPaths`).
    counters: HashMap<ActivityId, ActivityType>,
    builds: Counts,
    substs: Counts,
}

/// The live terminal display; see the module docs.
pub struct ProgressSink {
    multi: MultiProgress,
    header: ProgressBar,
    state: Mutex<State>,
    print_build_logs: bool,
    verbosity: Verbosity,
}

impl ProgressSink {
    /// A display drawing to `target` (stderr on a terminal; hidden in tests).
    pub fn new(target: ProgressDrawTarget, verbosity: Verbosity, print_build_logs: bool) -> Self {
        let multi = MultiProgress::with_draw_target(target);
        let header = multi.add(ProgressBar::new_spinner());
        header.set_style(
            ProgressStyle::with_template("{spinner:.cyan} [{elapsed}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        header.enable_steady_tick(Duration::from_millis(120));
        ProgressSink {
            multi,
            header,
            state: Mutex::new(State::default()),
            print_build_logs,
            verbosity,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn header_text(st: &State) -> String {
        let b = st.builds;
        let mut s = format!("{}/{} built", b.done, b.expected.max(b.done));
        if b.running > 0 {
            s.push_str(&format!(", {} running", b.running));
        }
        if b.failed > 0 {
            s.push_str(&format!(", {} failed", b.failed));
        }
        let c = st.substs;
        if c.expected > 0 || c.done > 0 {
            s.push_str(&format!(", {}/{} fetched", c.done, c.expected.max(c.done)));
        }
        s
    }

    fn line_text(a: &Shown) -> String {
        let verb = match a.ty {
            ActivityType::Build => "building",
            ActivityType::Substitute | ActivityType::CopyPath => "copying",
            ActivityType::FileTransfer => "downloading",
            _ => "",
        };
        let mut s = format!("{verb} {}", a.name);
        if let Some(p) = &a.phase {
            s.push_str(&format!(" ({p})"));
        }
        if !a.last_line.is_empty() {
            s.push_str(": ");
            s.push_str(&a.last_line);
        }
        s
    }

    fn print(&self, msg: &str) {
        // A hidden target drops it; on a terminal it goes above the bars.
        let _ = self.multi.println(msg);
    }

    /// What the display shows now, as text (header, then one line per
    /// running activity with its seconds).
    #[cfg(test)]
    pub fn snapshot(&self) -> String {
        let st = self.state();
        let mut out = Self::header_text(&st);
        for id in &st.order {
            if let Some(a) = st.acts.get(id) {
                out.push_str(&format!(
                    "\n[{}s] {}",
                    a.bar.elapsed().as_secs(),
                    Self::line_text(a)
                ));
            }
        }
        out
    }

    /// Removes the display (before printing results).
    pub fn finish(&self) {
        let st = self.state();
        for a in st.acts.values() {
            a.bar.finish_and_clear();
        }
        self.header.finish_and_clear();
        let _ = self.multi.clear();
    }
}

impl LogSink for ProgressSink {
    fn start(
        &self,
        id: ActivityId,
        level: Verbosity,
        ty: ActivityType,
        text: &str,
        fields: &[Field],
        _parent: ActivityId,
    ) {
        let name = match ty {
            ActivityType::Builds | ActivityType::CopyPaths => {
                self.state().counters.insert(id, ty);
                return;
            }
            ActivityType::Build | ActivityType::Substitute | ActivityType::CopyPath => {
                short_name(str_field(fields, 0).unwrap_or(text))
            }
            ActivityType::FileTransfer => str_field(fields, 0).unwrap_or(text).to_string(),
            _ => {
                if level <= self.verbosity && !text.is_empty() && level <= Verbosity::Info {
                    self.print(text);
                }
                return;
            }
        };
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {spinner} [{elapsed:>4}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(120));
        let shown = Shown {
            ty,
            name,
            phase: None,
            last_line: String::new(),
            bar,
        };
        shown.bar.set_message(Self::line_text(&shown));
        let mut st = self.state();
        st.order.push(id);
        st.acts.insert(id, shown);
    }

    fn stop(&self, id: ActivityId) {
        let mut st = self.state();
        st.counters.remove(&id);
        if let Some(a) = st.acts.remove(&id) {
            a.bar.finish_and_clear();
            self.multi.remove(&a.bar);
        }
        st.order.retain(|x| *x != id);
    }

    fn result(&self, id: ActivityId, ty: ResultType, fields: &[Field]) {
        let mut st = self.state();
        match ty {
            ResultType::BuildLogLine | ResultType::PostBuildLogLine => {
                let Some(line) = str_field(fields, 0) else {
                    return;
                };
                let Some(a) = st.acts.get_mut(&id) else {
                    return;
                };
                if self.print_build_logs {
                    self.print(&format!("{}> {line}", a.name));
                }
                a.last_line = line.trim_end().chars().take(200).collect();
                a.bar.set_message(Self::line_text(a));
            }
            ResultType::SetPhase => {
                if let Some(a) = st.acts.get_mut(&id) {
                    a.phase = str_field(fields, 0).map(str::to_string);
                    a.bar.set_message(Self::line_text(a));
                }
            }
            ResultType::Progress => {
                let c = Counts {
                    done: int_field(fields, 0),
                    expected: int_field(fields, 1),
                    running: int_field(fields, 2),
                    failed: int_field(fields, 3),
                };
                if let Some(a) = st.acts.get_mut(&id) {
                    // Bytes of a download or copy.
                    if c.expected > 0 {
                        a.last_line = format!(
                            "{:.1}/{:.1} MiB",
                            c.done as f64 / 1048576.0,
                            c.expected as f64 / 1048576.0
                        );
                        a.bar.set_message(Self::line_text(a));
                    }
                    return;
                }
                let kind = st.counters.get(&id).copied();
                match kind {
                    Some(ActivityType::Builds) => st.builds = c,
                    Some(ActivityType::CopyPaths) => st.substs = c,
                    _ => return,
                }
            }
            _ => return,
        }
        let h = Self::header_text(&st);
        self.header.set_message(h);
    }

    fn log(&self, level: Verbosity, msg: &str) {
        if level <= self.verbosity {
            self.print(msg);
        }
    }
}

/// The sink `b3 build` uses for the human formats: the live display on a
/// terminal, plain lines otherwise. Returns the display to finish, if any.
pub fn human_sink(
    verbosity: Verbosity,
    print_build_logs: bool,
) -> (Arc<dyn LogSink>, Option<Arc<ProgressSink>>) {
    if std::io::stderr().is_terminal() && std::env::var("TERM").is_ok_and(|t| t != "dumb") {
        let p = Arc::new(ProgressSink::new(
            ProgressDrawTarget::stderr(),
            verbosity,
            print_build_logs,
        ));
        let sink: Arc<dyn LogSink> = p.clone();
        (sink, Some(p))
    } else {
        (
            Arc::new(PlainSink::new(
                std::io::stderr(),
                verbosity,
                print_build_logs,
            )),
            None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3_store::activity::Logger;

    #[test]
    fn display_tracks_counts_running_builds_and_last_lines() {
        let sink = Arc::new(ProgressSink::new(
            ProgressDrawTarget::hidden(),
            Verbosity::Info,
            false,
        ));
        let logger = Logger::new(sink.clone(), Verbosity::Info);
        let builds = logger.start(Verbosity::Error, ActivityType::Builds, "", vec![], 0);
        let substs = logger.start(Verbosity::Error, ActivityType::CopyPaths, "", vec![], 0);
        builds.progress(1, 3, 1, 0);
        substs.progress(0, 2, 1, 0);
        let b = logger.start_build("/nix/store/aaaa-hello-2.10.drv", "", 0);
        b.set_phase("buildPhase");
        b.log_line("compiling hello.c");
        b.log_line("linking hello");
        let snap = sink.snapshot();
        let mut lines = snap.lines();
        assert_eq!(lines.next(), Some("1/3 built, 1 running, 0/2 fetched"));
        assert_eq!(
            lines.next(),
            Some("[0s] building hello-2.10 (buildPhase): linking hello")
        );
        assert_eq!(lines.next(), None);
        drop(b);
        builds.progress(2, 3, 0, 1);
        assert_eq!(sink.snapshot(), "2/3 built, 1 failed, 0/2 fetched");
        sink.finish();
    }

    #[test]
    fn downloads_show_bytes() {
        let sink = Arc::new(ProgressSink::new(
            ProgressDrawTarget::hidden(),
            Verbosity::Info,
            true,
        ));
        let logger = Logger::new(sink.clone(), Verbosity::Info);
        let d = logger.start_file_transfer("https://cache.example/nar/x.nar.xz", false, 0);
        d.progress(1048576, 4 * 1048576, 0, 0);
        assert!(sink
            .snapshot()
            .ends_with("downloading https://cache.example/nar/x.nar.xz: 1.0/4.0 MiB"));
    }

    #[test]
    fn names_are_shortened_like_nom() {
        assert_eq!(short_name("/nix/store/abc-hello-2.10.drv"), "hello-2.10");
        assert_eq!(short_name("/nix/store/abc-bb"), "bb");
    }
}
