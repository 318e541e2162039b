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
//! Once the "these N derivations will be built:" message names the plan, and
//! given a way to read a derivation's inputs ([`ProgressSink::set_inputs_of`]),
//! the running builds are drawn as the dependency tree of what is being
//! built, as nix-output-monitor does: the requested derivations at the top,
//! each running build under the nearest derivation waiting for it, chains
//! of waiting derivations folded into a count.
//!
//! It only consumes what the builder reports through `b3_store::activity`
//! (the same records `--log-format internal-json` writes), so anything that
//! reports activities shows up here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A running build in the tree: name, phase, timer, last log line.
fn running_label(a: &Shown) -> String {
    let mut s = format!("⏵ {}", a.name);
    if let Some(p) = &a.phase {
        s.push_str(&format!(" ({p})"));
    }
    s.push_str(&format!(" [{}s]", a.started.elapsed().as_secs()));
    if !a.last_line.is_empty() {
        s.push_str(": ");
        s.push_str(&a.last_line);
    }
    s
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
    /// The derivation of a build.
    drv: Option<String>,
    started: Instant,
    phase: Option<String>,
    last_line: String,
    bar: ProgressBar,
}

/// Reads the input derivations of a derivation (store path → store paths).
pub type InputsOf = Box<dyn Fn(&str) -> Vec<String> + Send + Sync>;

/// The planned builds and their dependencies among themselves.
#[derive(Default)]
struct Plan {
    /// Planned derivation → its planned input derivations.
    deps: BTreeMap<String, Vec<String>>,
    /// Planned derivations no planned derivation depends on.
    roots: Vec<String>,
    done: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    acts: HashMap<ActivityId, Shown>,
    plan: Option<Plan>,
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
    /// The dependency tree (empty until a plan is known).
    tree: ProgressBar,
    inputs_of: Mutex<Option<InputsOf>>,
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
        let tree = multi.add(ProgressBar::new_spinner());
        tree.set_style(
            ProgressStyle::with_template("{msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        ProgressSink {
            multi,
            header,
            tree,
            inputs_of: Mutex::new(None),
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

    /// How to read a derivation's inputs, which the dependency tree needs.
    pub fn set_inputs_of(&self, f: InputsOf) {
        *self.inputs_of.lock().unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Takes the plan from Nix's "… will be built:" message.
    fn learn_plan(&self, msg: &str) {
        let mut lines = msg.lines();
        let Some(first) = lines.next() else { return };
        if !(first == "this derivation will be built:"
            || (first.starts_with("these ") && first.ends_with(" derivations will be built:")))
        {
            return;
        }
        let planned: BTreeSet<String> = lines.map(|l| l.trim().to_string()).collect();
        let guard = self.inputs_of.lock().unwrap_or_else(|p| p.into_inner());
        let Some(inputs_of) = guard.as_ref() else {
            return;
        };
        let mut deps = BTreeMap::new();
        let mut wanted: BTreeSet<&String> = planned.iter().collect();
        for d in &planned {
            let ins: Vec<String> = inputs_of(d)
                .into_iter()
                .filter(|i| planned.contains(i))
                .collect();
            for i in &ins {
                wanted.remove(i);
            }
            deps.insert(d.clone(), ins);
        }
        let roots = wanted.into_iter().cloned().collect();
        drop(guard);
        let mut st = self.state();
        st.plan = Some(Plan {
            deps,
            roots,
            done: BTreeSet::new(),
        });
        // Builds that are already running move from their bars to the tree.
        for a in st.acts.values() {
            if a.ty == ActivityType::Build {
                a.bar.finish_and_clear();
                self.multi.remove(&a.bar);
            }
        }
        self.tree.set_message(Self::tree_text(&st));
    }

    /// The dependency tree of the running builds (see the module docs).
    fn tree_text(st: &State) -> String {
        let Some(plan) = &st.plan else {
            return String::new();
        };
        let running: HashMap<&str, &Shown> = st
            .acts
            .values()
            .filter(|a| a.ty == ActivityType::Build)
            .filter_map(|a| Some((a.drv.as_deref()?, a)))
            .collect();
        if running.is_empty() {
            return String::new();
        }
        // Which planned derivations lead to a running build (memoised).
        fn leads(
            d: &str,
            plan: &Plan,
            running: &HashMap<&str, &Shown>,
            memo: &mut HashMap<String, bool>,
        ) -> bool {
            if let Some(v) = memo.get(d) {
                return *v;
            }
            memo.insert(d.to_string(), false);
            let mut v = running.contains_key(d);
            if !v && !plan.done.contains(d) {
                for i in plan.deps.get(d).into_iter().flatten() {
                    if leads(i, plan, running, memo) {
                        v = true;
                        break;
                    }
                }
            }
            memo.insert(d.to_string(), v);
            v
        }
        let mut memo = HashMap::new();
        let mut lines: Vec<String> = Vec::new();
        let mut shown = BTreeSet::new();
        struct Ctx<'a> {
            plan: &'a Plan,
            running: &'a HashMap<&'a str, &'a Shown>,
        }
        fn label(cx: &Ctx<'_>, d: &str, folded: usize) -> String {
            let mut s = match cx.running.get(d) {
                Some(a) => running_label(a),
                None => format!("⏸ {}", short_name(d)),
            };
            if folded > 0 {
                s.push_str(&format!(" (via {folded} waiting)"));
            }
            s
        }
        // Draws `d` and, below it, the paths to running builds; a waiting
        // derivation with one such path is folded into its parent's count.
        #[allow(clippy::too_many_arguments)]
        fn draw(
            cx: &Ctx<'_>,
            d: &str,
            prefix: &str,
            last: bool,
            top: bool,
            memo: &mut HashMap<String, bool>,
            shown: &mut BTreeSet<String>,
            lines: &mut Vec<String>,
        ) {
            if !shown.insert(d.to_string()) {
                return;
            }
            // Follow single paths of waiting derivations.
            let mut node = d.to_string();
            let mut folded = 0;
            let children = loop {
                let kids: Vec<String> = cx
                    .plan
                    .deps
                    .get(&node)
                    .into_iter()
                    .flatten()
                    .filter(|i| !cx.plan.done.contains(*i))
                    .filter(|i| leads(i, cx.plan, cx.running, memo))
                    .cloned()
                    .collect();
                if !top && kids.len() == 1 && !cx.running.contains_key(node.as_str()) {
                    folded += 1;
                    node = kids[0].clone();
                    shown.insert(node.clone());
                    continue;
                }
                break kids;
            };
            let (branch, next) = match (top, last) {
                (true, _) => ("", String::new()),
                (false, true) => ("└─ ", format!("{prefix}   ")),
                (false, false) => ("├─ ", format!("{prefix}│  ")),
            };
            let name = if folded > 0 { &node } else { d };
            lines.push(format!("{prefix}{branch}{}", label(cx, name, folded)));
            let n = children.len();
            for (k, c) in children.iter().enumerate() {
                draw(cx, c, &next, k + 1 == n, false, memo, shown, lines);
            }
        }
        let cx = Ctx {
            plan,
            running: &running,
        };
        for r in &plan.roots {
            if leads(r, plan, &running, &mut memo) {
                draw(&cx, r, "", true, true, &mut memo, &mut shown, &mut lines);
            }
        }
        // Running builds outside the plan (or not reached) still show.
        let mut extra: Vec<&&Shown> = running
            .iter()
            .filter(|(d, _)| !shown.contains(**d))
            .map(|(_, a)| a)
            .collect();
        extra.sort_by_key(|a| a.name.clone());
        for a in extra {
            lines.push(running_label(a));
        }
        const MAX_LINES: usize = 20;
        if lines.len() > MAX_LINES {
            let more = lines.len() - MAX_LINES;
            lines.truncate(MAX_LINES);
            lines.push(format!("… {more} more"));
        }
        lines.join("\n")
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
        if st.plan.is_some() {
            let tree = Self::tree_text(&st);
            if !tree.is_empty() {
                out.push('\n');
                out.push_str(&tree);
            }
        }
        for id in &st.order {
            if st.plan.is_some() && st.acts.get(id).is_some_and(|a| a.ty == ActivityType::Build) {
                continue;
            }
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
        self.tree.finish_and_clear();
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
        let drv = (ty == ActivityType::Build)
            .then(|| str_field(fields, 0).map(str::to_string))
            .flatten();
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
        let in_tree = ty == ActivityType::Build && self.state().plan.is_some();
        let bar = if in_tree {
            ProgressBar::hidden()
        } else {
            self.multi.add(ProgressBar::new_spinner())
        };
        bar.set_style(
            ProgressStyle::with_template("  {spinner} [{elapsed:>4}] {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        if !in_tree {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        let shown = Shown {
            ty,
            name,
            drv,
            started: Instant::now(),
            phase: None,
            last_line: String::new(),
            bar,
        };
        shown.bar.set_message(Self::line_text(&shown));
        let mut st = self.state();
        st.order.push(id);
        st.acts.insert(id, shown);
        if in_tree {
            self.tree.set_message(Self::tree_text(&st));
        }
    }

    fn stop(&self, id: ActivityId) {
        let mut st = self.state();
        st.counters.remove(&id);
        if let Some(a) = st.acts.remove(&id) {
            a.bar.finish_and_clear();
            self.multi.remove(&a.bar);
            if let (Some(d), Some(plan)) = (a.drv, st.plan.as_mut()) {
                plan.done.insert(d);
                self.tree.set_message(Self::tree_text(&st));
            }
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
                if st.plan.is_some() {
                    self.tree.set_message(Self::tree_text(&st));
                }
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
        if level <= Verbosity::Info {
            self.learn_plan(msg);
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
    fn running_builds_show_as_a_dependency_tree() {
        let sink = Arc::new(ProgressSink::new(
            ProgressDrawTarget::hidden(),
            Verbosity::Info,
            false,
        ));
        // app -> lib -> {a, b}; a -> base; tool is independent.
        let deps: BTreeMap<&str, Vec<&str>> = [
            ("/s/1-app.drv", vec!["/s/2-lib.drv"]),
            ("/s/2-lib.drv", vec!["/s/3-a.drv", "/s/4-b.drv"]),
            ("/s/3-a.drv", vec!["/s/5-base.drv"]),
            ("/s/4-b.drv", vec![]),
            ("/s/5-base.drv", vec![]),
            ("/s/6-tool.drv", vec![]),
        ]
        .into_iter()
        .collect();
        let d2 = deps.clone();
        sink.set_inputs_of(Box::new(move |d| {
            d2.get(d)
                .map(|v| v.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        }));
        let logger = Logger::new(sink.clone(), Verbosity::Info);
        let mut msg = String::from("these 6 derivations will be built:");
        for d in deps.keys() {
            msg.push_str(&format!("\n  {d}"));
        }
        logger.log(Verbosity::Info, &msg);
        let base = logger.start_build("/s/5-base.drv", "", 0);
        let b = logger.start_build("/s/4-b.drv", "", 0);
        b.log_line("compiling b.c");
        let tool = logger.start_build("/s/6-tool.drv", "", 0);
        // Timers vary with the machine's load: compare without them.
        let untimed = |s: String| -> Vec<String> {
            s.lines()
                .skip(1)
                .map(|l| match (l.find(" ["), l.find("s]")) {
                    (Some(a), Some(b)) if a < b => format!("{}{}", &l[..a], &l[b + 2..]),
                    _ => l.to_string(),
                })
                .collect()
        };
        let snap = sink.snapshot();
        assert_eq!(
            untimed(snap.clone()),
            [
                "⏸ app",
                "└─ ⏸ lib",
                "   ├─ ⏵ base (via 1 waiting)",
                "   └─ ⏵ b: compiling b.c",
                "⏵ tool",
            ],
            "{snap}"
        );
        drop(base);
        drop(b);
        let snap = sink.snapshot();
        assert_eq!(untimed(snap.clone()), ["⏵ tool"], "{snap}");
        drop(tool);
        sink.finish();
    }

    #[test]
    fn names_are_shortened_like_nom() {
        assert_eq!(short_name("/nix/store/abc-hello-2.10.drv"), "hello-2.10");
        assert_eq!(short_name("/nix/store/abc-bb"), "bb");
    }
}
