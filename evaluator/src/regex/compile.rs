//! Builds the NFA exactly the way libstdc++'s regex compiler lays it out:
//! the same state kinds, the same `next`/`alt` wiring (alternation tries
//! the left branch through `alt`, loops enter their body through `alt`),
//! the same copies for `{m,n}` bounds and the same state budget. The
//! executor's visiting order, and therefore which captures win, depends
//! on this layout, so it is deliberately mirrored rather than optimised.

use super::bracket::{lookup_collate, BracketBuilder, ByteSet};
use super::scan::Tok;
use super::{ErrorKind, RegexError};
use std::collections::BTreeMap;

/// libstdc++'s `_GLIBCXX_REGEX_STATE_LIMIT`.
const STATE_LIMIT: usize = 100_000;
/// Bound on parenthesis nesting, so parsing cannot exhaust the stack.
const MAX_NESTING: usize = 1000;

pub(crate) const NONE: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `.`: any byte except NUL.
    Any,
    Byte(u8),
    Set(Box<ByteSet>),
}

impl Matcher {
    pub(crate) fn matches(&self, b: u8) -> bool {
        match self {
            Matcher::Any => b != 0,
            Matcher::Byte(c) => *c == b,
            Matcher::Set(s) => s.contains(b),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Op {
    Dummy,
    Match(Matcher),
    /// Greedy loop or option: `alt` is "one more", `next` is "leave".
    Repeat,
    /// `alt` is the left branch, `next` the right one.
    Alternative,
    GroupBegin(usize),
    GroupEnd(usize),
    LineBegin,
    LineEnd,
    Accept,
}

#[derive(Debug, Clone)]
pub(crate) struct State {
    pub(crate) op: Op,
    pub(crate) next: u32,
    pub(crate) alt: u32,
}

impl State {
    fn has_alt(&self) -> bool {
        matches!(self.op, Op::Repeat | Op::Alternative)
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Program {
    pub(crate) states: Vec<State>,
    pub(crate) start: u32,
    /// Number of groups including group 0 (the whole match).
    pub(crate) groups: usize,
    /// For each state, its index among the branching states (loops and
    /// alternatives), which are the ones the executor memoises.
    pub(crate) branch_index: Vec<u32>,
    pub(crate) branch_count: usize,
    /// Per branching state (by branch index): the loop states reachable
    /// from it without consuming input, sorted. Only their counters can
    /// affect what happens below that state at the same position. `None`
    /// when the pattern is too large to precompute this.
    pub(crate) eps_loops: Option<Vec<Vec<u32>>>,
}

/// Work bound (states × branching states) for computing `eps_loops`.
const EPS_WORK_LIMIT: usize = 20_000_000;

fn eps_loops(states: &[State], branch_index: &[u32], branch_count: usize) -> Option<Vec<Vec<u32>>> {
    if branch_count.checked_mul(states.len())? > EPS_WORK_LIMIT {
        return None;
    }
    let mut out = vec![Vec::new(); branch_count];
    let mut seen = vec![u32::MAX; states.len()];
    let mut todo = Vec::new();
    for (id, &b) in branch_index.iter().enumerate() {
        if b == NONE {
            continue;
        }
        let mut found = Vec::new();
        todo.push(id as u32);
        while let Some(s) = todo.pop() {
            if s == NONE || seen[s as usize] == b {
                continue;
            }
            seen[s as usize] = b;
            let st = &states[s as usize];
            match st.op {
                Op::Match(_) | Op::Accept => {}
                Op::Repeat => {
                    found.push(s);
                    todo.push(st.next);
                    todo.push(st.alt);
                }
                Op::Alternative => {
                    todo.push(st.next);
                    todo.push(st.alt);
                }
                _ => todo.push(st.next),
            }
        }
        found.sort_unstable();
        out[b as usize] = found;
    }
    Some(out)
}

#[derive(Clone, Copy)]
struct Seq {
    start: u32,
    end: u32,
}

struct Compiler<'t> {
    toks: &'t [Tok],
    pos: usize,
    states: Vec<State>,
    stack: Vec<Seq>,
    group_count: usize,
    open_groups: Vec<usize>,
    depth: usize,
}

fn err<T>(kind: ErrorKind, msg: &str) -> Result<T, RegexError> {
    Err(RegexError::new(kind, msg))
}

pub(crate) fn compile(toks: &[Tok]) -> Result<Program, RegexError> {
    let mut c = Compiler {
        toks,
        pos: 0,
        states: Vec::new(),
        stack: Vec::new(),
        group_count: 0,
        open_groups: Vec::new(),
        depth: 0,
    };
    let g0 = c.group_begin()?;
    let mut whole = Seq { start: g0, end: g0 };
    c.disjunction()?;
    if !c.eat(&Tok::Eof) {
        return err(ErrorKind::Paren, "Unexpected token in regular expression");
    }
    let body = c.pop()?;
    c.append(&mut whole, body);
    let end = c.group_end()?;
    c.append_state(&mut whole, end);
    let acc = c.insert(Op::Accept)?;
    c.append_state(&mut whole, acc);
    c.eliminate_dummies();
    let mut branch_count = 0usize;
    let branch_index: Vec<u32> = c
        .states
        .iter()
        .map(|s| {
            if s.has_alt() {
                branch_count += 1;
                (branch_count - 1) as u32
            } else {
                NONE
            }
        })
        .collect();
    let eps_loops = eps_loops(&c.states, &branch_index, branch_count);
    Ok(Program {
        states: c.states,
        start: whole.start,
        groups: c.group_count,
        branch_index,
        branch_count,
        eps_loops,
    })
}

impl Compiler<'_> {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).unwrap_or(&Tok::Eof)
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn eat_char(&mut self) -> Option<u8> {
        if let Tok::Char(c) = *self.peek() {
            self.pos += 1;
            Some(c)
        } else {
            None
        }
    }

    fn eat_count(&mut self) -> Option<i64> {
        if let Tok::DupCount(digits) = self.peek() {
            // libstdc++ accumulates in a `long` and returns an `int`.
            let mut v: i64 = 0;
            for d in digits {
                v = v.wrapping_mul(10).wrapping_add(i64::from(d - b'0'));
            }
            self.pos += 1;
            Some(i64::from(v as i32))
        } else {
            None
        }
    }

    fn insert_state(&mut self, s: State) -> Result<u32, RegexError> {
        self.states.push(s);
        if self.states.len() > STATE_LIMIT {
            return err(
                ErrorKind::Space,
                "Number of NFA states exceeds limit. Please use shorter regex string, or use smaller brace expression, or make _GLIBCXX_REGEX_STATE_LIMIT larger.",
            );
        }
        // STATE_LIMIT < u32::MAX, so this cannot truncate.
        Ok((self.states.len() - 1) as u32)
    }

    fn insert(&mut self, op: Op) -> Result<u32, RegexError> {
        self.insert_state(State {
            op,
            next: NONE,
            alt: NONE,
        })
    }

    fn insert_repeat(&mut self, next: u32, alt: u32) -> Result<u32, RegexError> {
        self.insert_state(State {
            op: Op::Repeat,
            next,
            alt,
        })
    }

    fn group_begin(&mut self) -> Result<u32, RegexError> {
        let id = self.group_count;
        self.group_count += 1;
        self.open_groups.push(id);
        self.insert(Op::GroupBegin(id))
    }

    fn group_end(&mut self) -> Result<u32, RegexError> {
        let Some(id) = self.open_groups.pop() else {
            return err(ErrorKind::Paren, "unbalanced parenthesis");
        };
        self.insert(Op::GroupEnd(id))
    }

    fn pop(&mut self) -> Result<Seq, RegexError> {
        match self.stack.pop() {
            Some(s) => Ok(s),
            None => err(ErrorKind::Other, "internal: empty compiler stack"),
        }
    }

    fn set_next(&mut self, id: u32, next: u32) {
        self.states[id as usize].next = next;
    }

    fn append_state(&mut self, seq: &mut Seq, id: u32) {
        self.set_next(seq.end, id);
        seq.end = id;
    }

    fn append(&mut self, seq: &mut Seq, other: Seq) {
        self.set_next(seq.end, other.start);
        seq.end = other.end;
    }

    fn disjunction(&mut self) -> Result<(), RegexError> {
        self.alternative()?;
        while self.eat(&Tok::Or) {
            let mut left = self.pop()?;
            self.alternative()?;
            let mut right = self.pop()?;
            let end = self.insert(Op::Dummy)?;
            self.append_state(&mut left, end);
            self.append_state(&mut right, end);
            let alt = self.insert_state(State {
                op: Op::Alternative,
                next: right.start,
                alt: left.start,
            })?;
            self.stack.push(Seq { start: alt, end });
        }
        Ok(())
    }

    /// A concatenation of terms, closed by an empty (dummy) state.
    fn alternative(&mut self) -> Result<(), RegexError> {
        let mut terms = Vec::new();
        while self.term()? {
            terms.push(self.pop()?);
        }
        let tail = self.insert(Op::Dummy)?;
        let mut acc = Seq {
            start: tail,
            end: tail,
        };
        for t in terms.into_iter().rev() {
            let mut t = t;
            self.append(&mut t, acc);
            acc = t;
        }
        self.stack.push(acc);
        Ok(())
    }

    fn term(&mut self) -> Result<bool, RegexError> {
        if self.eat(&Tok::LineBegin) {
            let s = self.insert(Op::LineBegin)?;
            self.stack.push(Seq { start: s, end: s });
            return Ok(true);
        }
        if self.eat(&Tok::LineEnd) {
            let s = self.insert(Op::LineEnd)?;
            self.stack.push(Seq { start: s, end: s });
            return Ok(true);
        }
        if !self.atom()? {
            return Ok(false);
        }
        while self.quantifier()? {}
        Ok(true)
    }

    fn quantifier(&mut self) -> Result<bool, RegexError> {
        if self.eat(&Tok::Star) {
            let mut e = self.pop()?;
            let r = self.insert_repeat(NONE, e.start)?;
            self.append_state(&mut e, r);
            self.stack.push(Seq { start: r, end: r });
        } else if self.eat(&Tok::Plus) {
            let mut e = self.pop()?;
            let r = self.insert_repeat(NONE, e.start)?;
            self.append_state(&mut e, r);
            self.stack.push(e);
        } else if self.eat(&Tok::Opt) {
            let mut e = self.pop()?;
            let end = self.insert(Op::Dummy)?;
            let r = self.insert_repeat(NONE, e.start)?;
            let mut rs = Seq { start: r, end: r };
            self.append_state(&mut e, end);
            self.append_state(&mut rs, end);
            self.stack.push(rs);
        } else if self.eat(&Tok::IntervalBegin) {
            self.interval()?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn interval(&mut self) -> Result<(), RegexError> {
        let Some(min) = self.eat_count() else {
            return err(ErrorKind::BadBrace, "Unexpected token in brace expression");
        };
        let r = self.pop()?;
        let d = self.insert(Op::Dummy)?;
        let mut e = Seq { start: d, end: d };
        let mut infinite = false;
        let mut extra: i64 = 0;
        if self.eat(&Tok::Comma) {
            match self.eat_count() {
                Some(max) => extra = max - min,
                None => infinite = true,
            }
        }
        if !self.eat(&Tok::IntervalEnd) {
            return err(ErrorKind::Brace, "Unexpected end of brace expression");
        }
        let mut i = 0;
        while i < min {
            let c = self.clone_seq(r)?;
            self.append(&mut e, c);
            i += 1;
        }
        if infinite {
            let mut tmp = self.clone_seq(r)?;
            let s = self.insert_repeat(NONE, tmp.start)?;
            self.append_state(&mut tmp, s);
            self.append_state(&mut e, s);
        } else {
            if extra < 0 {
                return err(ErrorKind::BadBrace, "Invalid range in brace expression");
            }
            let end = self.insert(Op::Dummy)?;
            let mut loops = Vec::new();
            for _ in 0..extra {
                let tmp = self.clone_seq(r)?;
                let alt = self.insert_repeat(tmp.start, end)?;
                loops.push(alt);
                self.append(
                    &mut e,
                    Seq {
                        start: alt,
                        end: tmp.end,
                    },
                );
            }
            self.append_state(&mut e, end);
            for id in loops {
                let st = &mut self.states[id as usize];
                std::mem::swap(&mut st.next, &mut st.alt);
            }
        }
        self.stack.push(e);
        Ok(())
    }

    /// Copies the states of `seq`, in libstdc++'s order (a depth-first walk
    /// that checks "already copied" when pushing, not when popping).
    fn clone_seq(&mut self, seq: Seq) -> Result<Seq, RegexError> {
        let mut map: BTreeMap<u32, u32> = BTreeMap::new();
        let mut todo = vec![seq.start];
        while let Some(u) = todo.pop() {
            let dup = self.states[u as usize].clone();
            let id = self.insert_state(dup.clone())?;
            map.insert(u, id);
            if dup.has_alt() && dup.alt != NONE && !map.contains_key(&dup.alt) {
                todo.push(dup.alt);
            }
            if u == seq.end {
                continue;
            }
            if dup.next != NONE && !map.contains_key(&dup.next) {
                todo.push(dup.next);
            }
        }
        for &v in map.values() {
            let st = &self.states[v as usize];
            let (next, alt, has_alt) = (st.next, st.alt, st.has_alt());
            let new_next = if next != NONE {
                map.get(&next).copied().unwrap_or(next)
            } else {
                NONE
            };
            let new_alt = if has_alt && alt != NONE {
                map.get(&alt).copied().unwrap_or(alt)
            } else {
                alt
            };
            let st = &mut self.states[v as usize];
            st.next = new_next;
            st.alt = new_alt;
        }
        let start = map.get(&seq.start).copied().unwrap_or(seq.start);
        let end = map.get(&seq.end).copied().unwrap_or(seq.end);
        Ok(Seq { start, end })
    }

    fn atom(&mut self) -> Result<bool, RegexError> {
        if self.eat(&Tok::Any) {
            self.push_matcher(Matcher::Any)?;
        } else if let Some(c) = self.eat_char() {
            self.push_matcher(Matcher::Byte(c))?;
        } else if self.eat(&Tok::GroupOpen) {
            self.depth += 1;
            if self.depth > MAX_NESTING {
                return err(ErrorKind::Complexity, "parentheses nested too deeply");
            }
            let b = self.group_begin()?;
            let mut r = Seq { start: b, end: b };
            self.disjunction()?;
            if !self.eat(&Tok::GroupClose) {
                return err(ErrorKind::Paren, "Parenthesis is not closed.");
            }
            let inner = self.pop()?;
            self.append(&mut r, inner);
            let e = self.group_end()?;
            self.append_state(&mut r, e);
            self.stack.push(r);
            self.depth -= 1;
        } else if self.eat(&Tok::BracketNegBegin) {
            self.bracket(true)?;
        } else if self.eat(&Tok::BracketBegin) {
            self.bracket(false)?;
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    fn push_matcher(&mut self, m: Matcher) -> Result<(), RegexError> {
        let s = self.insert(Op::Match(m))?;
        self.stack.push(Seq { start: s, end: s });
        Ok(())
    }

    fn bracket(&mut self, negate: bool) -> Result<(), RegexError> {
        let mut b = BracketBuilder::default();
        let mut last = Last::None;
        if let Some(c) = self.eat_char() {
            last = Last::Char(c);
        } else if self.eat(&Tok::BracketDash) {
            last = Last::Char(b'-');
        }
        while self.bracket_term(&mut last, &mut b)? {}
        if let Last::Char(c) = last {
            b.add_char(c);
        }
        self.push_matcher(Matcher::Set(Box::new(b.build(negate))))
    }

    fn bracket_term(
        &mut self,
        last: &mut Last,
        b: &mut BracketBuilder,
    ) -> Result<bool, RegexError> {
        if self.eat(&Tok::BracketEnd) {
            return Ok(false);
        }
        let push_char = |last: &mut Last, b: &mut BracketBuilder, c: u8| {
            if let Last::Char(p) = *last {
                b.add_char(p);
            }
            *last = Last::Char(c);
        };
        let push_class = |last: &mut Last, b: &mut BracketBuilder| {
            if let Last::Char(p) = *last {
                b.add_char(p);
            }
            *last = Last::Class;
        };
        match self.peek().clone() {
            Tok::CollSymbol(name) => {
                self.pos += 1;
                let Some(c) = lookup_collate(&name) else {
                    return err(ErrorKind::Collate, "Invalid collate element.");
                };
                b.add_char(c);
                push_char(last, b, c);
            }
            Tok::EquivClass(name) => {
                self.pos += 1;
                push_class(last, b);
                b.add_equiv(&name)?;
            }
            Tok::CharClass(name) => {
                self.pos += 1;
                push_class(last, b);
                b.add_class(&name)?;
            }
            Tok::Char(c) => {
                self.pos += 1;
                push_char(last, b, c);
            }
            Tok::BracketDash => {
                self.pos += 1;
                if self.eat(&Tok::BracketEnd) {
                    push_char(last, b, b'-');
                    return Ok(false);
                }
                match *last {
                    Last::Class => {
                        return err(
                            ErrorKind::Range,
                            "Invalid start of '[x-x]' range in regular expression",
                        )
                    }
                    Last::Char(lo) => {
                        if let Some(hi) = self.eat_char() {
                            b.add_range(lo, hi)?;
                        } else if self.eat(&Tok::BracketDash) {
                            b.add_range(lo, b'-')?;
                        } else {
                            return err(
                                ErrorKind::Range,
                                "Invalid end of '[x-x]' range in regular expression",
                            );
                        }
                        *last = Last::None;
                    }
                    Last::None => {
                        return err(
                            ErrorKind::Range,
                            "Invalid location of '-' within '[...]' in POSIX regular expression",
                        )
                    }
                }
            }
            _ => {
                return err(
                    ErrorKind::Brack,
                    "Unexpected character within '[...]' in regular expression",
                )
            }
        }
        Ok(true)
    }

    /// Redirects every `next`/`alt` that points at an empty state to the
    /// first non-empty state after it.
    fn eliminate_dummies(&mut self) {
        let n = self.states.len();
        let skip = |states: &Vec<State>, mut t: u32| {
            let mut guard = 0;
            while t != NONE && matches!(states[t as usize].op, Op::Dummy) && guard <= n {
                t = states[t as usize].next;
                guard += 1;
            }
            t
        };
        for i in 0..n {
            let next = skip(&self.states, self.states[i].next);
            self.states[i].next = next;
            if self.states[i].has_alt() {
                let alt = skip(&self.states, self.states[i].alt);
                self.states[i].alt = alt;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Last {
    None,
    Char(u8),
    Class,
}
