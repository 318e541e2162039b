//! b3's POSIX extended regular expressions, reproducing libstdc++'s
//! `std::regex` with `std::regex::extended`, which is what Nix uses for
//! `builtins.match` (`std::regex_match` on the whole string) and
//! `builtins.split` (`std::cregex_iterator`).
//!
//! Patterns and subjects are bytes: Nix strings need not be UTF-8, and `.`
//! matches exactly one byte (any byte but NUL, newline included).
//! A [`Regex`] is compiled once and is cheap to clone and share.
//!
//! Checked against libstdc++ (GCC 12, strict `-std=c++17`, "C" locale) by
//! `tests/regex_differential.rs`. Known, deliberate differences:
//! - more than 1000 nested parentheses are rejected (libstdc++ recurses);
//! - matching is polynomial (memoised) and bounded by a step budget, where
//!   libstdc++ may take exponential time or overflow its stack; running
//!   out of budget is an [`ErrorKind::Complexity`] error.

mod bracket;
mod compile;
mod exec;
mod scan;

use std::collections::HashMap;
use std::sync::Arc;

use exec::{Exec, Flags, Mode};

/// Which of libstdc++'s `regex_constants::error_type` codes a failure
/// corresponds to. Nix reports [`ErrorKind::Space`] as "memory limit
/// exceeded by regular expression" and everything else as "invalid
/// regular expression".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Collate,
    Ctype,
    Escape,
    Brack,
    Paren,
    Brace,
    BadBrace,
    Range,
    Space,
    BadRepeat,
    /// Matching gave up (step budget) or nesting is too deep; libstdc++
    /// would run out of time or stack instead.
    Complexity,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RegexError {
    pub kind: ErrorKind,
    pub message: String,
}

impl RegexError {
    /// The message Nix's `builtins.match`/`split` report for this failure
    /// (`pattern` as the user wrote it).
    pub fn nix_message(&self, pattern: &str) -> String {
        match self.kind {
            ErrorKind::Space => {
                format!("memory limit exceeded by regular expression '{pattern}'")
            }
            _ => format!("invalid regular expression '{pattern}'"),
        }
    }

    fn new(kind: ErrorKind, message: &str) -> Self {
        RegexError {
            kind,
            message: message.to_owned(),
        }
    }
}

/// Default bound on executor steps for one `regex_match` or one
/// `regex_search` (one step of `search_iter`); far above anything a real
/// pattern needs, it only stops pathological cases.
pub const DEFAULT_STEP_LIMIT: u64 = 400_000_000;

/// A compiled regular expression.
#[derive(Clone, Debug)]
pub struct Regex {
    prog: Arc<compile::Program>,
    step_limit: u64,
}

/// Capture ranges of groups 1..=n (`None`: the group did not take part).
pub type Captures = Vec<Option<(usize, usize)>>;

/// One result of [`Regex::search_iter`], with byte offsets into the subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// End of the previous match (0 for the first): `prefix()` of the
    /// iterator's match is `prefix_start..start`.
    pub prefix_start: usize,
    pub start: usize,
    pub end: usize,
    /// Groups 1..=n; `None` for a group that did not participate.
    pub groups: Captures,
}

/// One element of `builtins.split`'s result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SplitItem<'s> {
    /// Text between matches.
    Text(&'s [u8]),
    /// The capture groups of one match.
    Groups(Vec<Option<&'s [u8]>>),
}

impl Regex {
    pub fn new(pattern: &[u8]) -> Result<Regex, RegexError> {
        let toks = scan::tokenize(pattern)?;
        let prog = compile::compile(&toks)?;
        Ok(Regex {
            prog: Arc::new(prog),
            step_limit: DEFAULT_STEP_LIMIT,
        })
    }

    /// Changes the executor step budget (see [`DEFAULT_STEP_LIMIT`]).
    pub fn with_step_limit(mut self, limit: u64) -> Regex {
        self.step_limit = limit;
        self
    }

    /// Number of capture groups, not counting the whole match.
    pub fn group_count(&self) -> usize {
        self.prog.groups - 1
    }

    /// `std::regex_match`: the whole of `s` must match. Returns the
    /// captures of groups 1..=n.
    pub fn match_full(&self, s: &[u8]) -> Option<Captures> {
        self.try_match_full(s).ok().flatten()
    }

    /// Like [`Regex::match_full`], but reports an exhausted step budget.
    pub fn try_match_full(&self, s: &[u8]) -> Result<Option<Captures>, RegexError> {
        let mut ex = Exec::new(&self.prog, s, self.step_limit);
        let caps = ex.run(0, Flags::default(), Mode::Exact)?;
        Ok(caps.map(|mut c| {
            c.remove(0);
            c
        }))
    }

    /// The matches `std::cregex_iterator` visits. Iteration stops early
    /// (silently) if the step budget runs out; use [`Regex::try_search_all`]
    /// to see that.
    pub fn search_iter<'a>(&'a self, s: &'a [u8]) -> SearchIter<'a> {
        SearchIter {
            exec: Exec::new(&self.prog, s, self.step_limit),
            len: s.len(),
            state: IterState::Start,
            prev_avail: false,
            error: None,
        }
    }

    /// All matches of [`Regex::search_iter`], or the budget error.
    pub fn try_search_all(&self, s: &[u8]) -> Result<Vec<Match>, RegexError> {
        let mut it = self.search_iter(s);
        let v: Vec<Match> = it.by_ref().collect();
        match it.error {
            Some(e) => Err(e),
            None => Ok(v),
        }
    }

    /// `builtins.match`: `None` for no match, else the groups as slices.
    pub fn nix_match<'s>(&self, s: &'s [u8]) -> Result<Option<Vec<Option<&'s [u8]>>>, RegexError> {
        Ok(self
            .try_match_full(s)?
            .map(|g| g.into_iter().map(|r| r.map(|(a, b)| &s[a..b])).collect()))
    }

    /// `builtins.split`: text, groups, text, …, text.
    pub fn nix_split<'s>(&self, s: &'s [u8]) -> Result<Vec<SplitItem<'s>>, RegexError> {
        let matches = self.try_search_all(s)?;
        let mut out = Vec::with_capacity(matches.len() * 2 + 1);
        let mut tail = 0;
        for m in &matches {
            out.push(SplitItem::Text(&s[m.prefix_start..m.start]));
            out.push(SplitItem::Groups(
                m.groups.iter().map(|r| r.map(|(a, b)| &s[a..b])).collect(),
            ));
            tail = m.end;
        }
        out.push(SplitItem::Text(&s[tail..]));
        Ok(out)
    }
}

enum IterState {
    Start,
    /// The previous match was `start..end`.
    After {
        start: usize,
        end: usize,
    },
    Done,
}

/// Iterator behind [`Regex::search_iter`]; follows `std::regex_iterator`:
/// after an empty match it first retries at the same position requiring a
/// non-empty match anchored there, then searches from the next position.
pub struct SearchIter<'a> {
    exec: Exec<'a>,
    len: usize,
    state: IterState,
    /// `regex_iterator`'s sticky `match_prev_avail` flag: set by the first
    /// increment that searches past a match, it also applies to later
    /// same-position retries.
    prev_avail: bool,
    error: Option<RegexError>,
}

impl SearchIter<'_> {
    /// The step-budget error that ended iteration early, if any.
    pub fn error(&self) -> Option<&RegexError> {
        self.error.as_ref()
    }

    fn search(&mut self, from: usize, flags: Flags) -> Option<exec::Caps> {
        match self.exec.run(from, flags, Mode::Prefix) {
            Ok(c) => c,
            Err(e) => {
                self.error = Some(e);
                None
            }
        }
    }
}

fn to_match(prefix_start: usize, mut caps: exec::Caps) -> Option<Match> {
    let (start, end) = caps.first().copied().flatten()?;
    caps.remove(0);
    Some(Match {
        prefix_start,
        start,
        end,
        groups: caps,
    })
}

impl Iterator for SearchIter<'_> {
    type Item = Match;

    fn next(&mut self) -> Option<Match> {
        let found = match self.state {
            IterState::Done => return None,
            IterState::Start => self.search(0, Flags::default()).map(|c| (0, c)),
            IterState::After { start, end } => {
                let mut retry = None;
                let mut from = end;
                if start == end {
                    if end == self.len {
                        self.state = IterState::Done;
                        return None;
                    }
                    let flags = Flags {
                        prev_avail: self.prev_avail,
                        not_null: true,
                        continuous: true,
                    };
                    retry = self.search(end, flags).map(|c| (end, c));
                    if self.error.is_some() {
                        self.state = IterState::Done;
                        return None;
                    }
                    from += 1;
                }
                match retry {
                    Some(r) => Some(r),
                    None => {
                        self.prev_avail = true;
                        let flags = Flags {
                            prev_avail: true,
                            ..Flags::default()
                        };
                        self.search(from, flags).map(|c| (end, c))
                    }
                }
            }
        };
        let Some((prefix_start, caps)) = found else {
            self.state = IterState::Done;
            return None;
        };
        let m = to_match(prefix_start, caps)?;
        self.state = IterState::After {
            start: m.start,
            end: m.end,
        };
        Some(m)
    }
}

/// A map from pattern to compiled regex, as Nix keeps one per evaluator.
#[derive(Default)]
pub struct RegexCache {
    map: HashMap<Vec<u8>, Result<Regex, RegexError>>,
}

impl RegexCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&mut self, pattern: &[u8]) -> Result<Regex, RegexError> {
        if let Some(r) = self.map.get(pattern) {
            return r.clone();
        }
        let r = Regex::new(pattern);
        self.map.insert(pattern.to_vec(), r.clone());
        r
    }
}
