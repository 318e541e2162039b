//! The backtracking executor. It walks the NFA depth-first in the same
//! order as libstdc++'s DFS executor in POSIX mode, with the same global
//! "has a solution" flag (which prunes the exit branch of a loop once a
//! solution was found below it), the same rule for which solution's
//! captures are kept (the first one reaching the longest end), and the
//! same limit on entering a loop body twice at one position.
//!
//! Two differences that do not change results:
//! - The walk uses an explicit stack instead of recursion, so long inputs
//!   cannot overflow the native stack.
//! - Re-entering a branch state at the same position with the same
//!   relevant loop counters is answered from a memo table. Every subtree
//!   is entered with the flag clear, its outcome depends only on that key,
//!   and a repeated walk can never record new captures (it cannot reach a
//!   longer end than the first walk did), so skipping it is exact. This
//!   keeps matching polynomial where libstdc++ is exponential.

use super::compile::{Op, Program, NONE};
use super::{ErrorKind, RegexError};
use rustc_hash::FxHashMap;

#[derive(Clone, Copy, Default)]
pub(crate) struct Flags {
    /// `^` does not match at the start of the searched range.
    pub(crate) prev_avail: bool,
    /// An empty match at the start of the range does not count.
    pub(crate) not_null: bool,
    /// Only try the first position.
    pub(crate) continuous: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Whole range (`regex_match`).
    Exact,
    /// Any end (`regex_search` at one start position).
    Prefix,
}

pub(crate) type Caps = Vec<Option<(usize, usize)>>;

/// A capture slot while walking: start and end are tracked separately
/// because a group's start is set before its end is known.
#[derive(Clone, Copy, Default)]
struct Slot {
    start: usize,
    end: usize,
    matched: bool,
}

enum Frame {
    Explore(u32),
    /// Continue a greedy loop after trying its body once more.
    AfterLoopBody(u32),
    RestoreLoop(u32, usize, u8),
    AfterLeft(u32),
    AfterRight(bool),
    RestoreStart(usize, usize),
    RestoreSlot(usize, Slot),
    RestorePos(usize),
    Memo(MemoKey),
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct MemoKey {
    state: u32,
    pos: usize,
    loops: Vec<(u32, u8)>,
}

pub(crate) struct Exec<'a> {
    prog: &'a Program,
    input: &'a [u8],
    begin: usize,
    flags: Flags,
    steps: u64,
    step_limit: u64,
    // Walk state, reset per start position.
    cur: usize,
    has_sol: bool,
    sol_end: Option<usize>,
    slots: Vec<Slot>,
    results: Option<Vec<Slot>>,
    loop_count: Vec<(usize, u8)>,
    loop_log: Vec<(u32, usize)>,
    memo: Memo,
}

/// Largest dense memo table (entries of 4 bytes) before falling back to
/// a hash map only.
const DENSE_LIMIT: usize = 1 << 24;

/// Memo of subtree outcomes. Keys without active loop counters (the vast
/// majority) live in a dense table indexed by branch state and position,
/// stamped with a generation so that starting a new attempt is O(1); the
/// rest go to a hash map.
struct Memo {
    dense: Vec<u32>,
    width: usize,
    generation: u32,
    sparse: FxHashMap<MemoKey, bool>,
}

impl Memo {
    fn new(prog: &Program, input_len: usize) -> Memo {
        let width = input_len + 1;
        let dense = match prog.branch_count.checked_mul(width) {
            Some(n) if n <= DENSE_LIMIT => vec![0; n],
            _ => Vec::new(),
        };
        Memo {
            dense,
            width,
            generation: 0,
            sparse: FxHashMap::default(),
        }
    }

    /// Forget everything (a new start position).
    fn reset(&mut self) {
        if self.generation >= (u32::MAX >> 1) - 1 {
            self.dense.iter_mut().for_each(|e| *e = 0);
            self.generation = 0;
        }
        self.generation += 1;
        // Clearing costs O(capacity); after a big walk start afresh.
        if self.sparse.capacity() > 4096 {
            self.sparse = FxHashMap::default();
        } else {
            self.sparse.clear();
        }
    }

    fn slot(&self, prog: &Program, key: &MemoKey) -> Option<usize> {
        if !key.loops.is_empty() || self.dense.is_empty() {
            return None;
        }
        let b = prog.branch_index[key.state as usize] as usize;
        Some(b * self.width + key.pos)
    }

    fn get(&self, prog: &Program, key: &MemoKey) -> Option<bool> {
        match self.slot(prog, key) {
            Some(i) => {
                let e = self.dense[i];
                (e >> 1 == self.generation).then_some(e & 1 == 1)
            }
            None => self.sparse.get(key).copied(),
        }
    }

    fn put(&mut self, prog: &Program, key: MemoKey, sol: bool) {
        match self.slot(prog, &key) {
            Some(i) => self.dense[i] = self.generation << 1 | u32::from(sol),
            None => {
                self.sparse.insert(key, sol);
            }
        }
    }
}

impl<'a> Exec<'a> {
    pub(crate) fn new(prog: &'a Program, input: &'a [u8], step_limit: u64) -> Self {
        Exec {
            prog,
            input,
            begin: 0,
            flags: Flags::default(),
            steps: 0,
            step_limit,
            cur: 0,
            has_sol: false,
            sol_end: None,
            slots: vec![Slot::default(); prog.groups],
            results: None,
            loop_count: vec![(0, 0); prog.states.len()],
            loop_log: Vec::new(),
            memo: Memo::new(prog, input.len()),
        }
    }

    /// `regex_match` / `regex_search` on `input[begin..]`; returns the
    /// captures (group 0 included) of the chosen solution.
    pub(crate) fn run(
        &mut self,
        begin: usize,
        flags: Flags,
        mode: Mode,
    ) -> Result<Option<Caps>, RegexError> {
        self.begin = begin;
        self.flags = flags;
        // The budget is per regex_match / regex_search call, so splitting
        // a long string into many pieces never trips it.
        self.steps = 0;
        if mode == Mode::Exact {
            return self.main(Mode::Exact);
        }
        if let Some(c) = self.main(Mode::Prefix)? {
            return Ok(Some(c));
        }
        if self.flags.continuous {
            return Ok(None);
        }
        self.flags.prev_avail = true;
        while self.begin < self.input.len() {
            self.begin += 1;
            if let Some(c) = self.main(Mode::Prefix)? {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    fn main(&mut self, mode: Mode) -> Result<Option<Caps>, RegexError> {
        self.cur = self.begin;
        self.has_sol = false;
        self.sol_end = None;
        self.results = None;
        self.memo.reset();
        for s in &mut self.slots {
            *s = Slot::default();
        }
        self.walk(mode)?;
        if !self.has_sol {
            return Ok(None);
        }
        Ok(self.results.as_ref().map(|r| {
            r.iter()
                .map(|s| s.matched.then_some((s.start, s.end)))
                .collect()
        }))
    }

    fn at_begin(&self) -> bool {
        self.cur == self.begin && !self.flags.prev_avail
    }

    fn walk(&mut self, mode: Mode) -> Result<(), RegexError> {
        let prog = self.prog;
        let mut stack = vec![Frame::Explore(prog.start)];
        while let Some(frame) = stack.pop() {
            match frame {
                Frame::Explore(id) => {
                    if id == NONE {
                        continue;
                    }
                    self.steps += 1;
                    if self.steps > self.step_limit {
                        return Err(RegexError::new(
                            ErrorKind::Complexity,
                            "regular expression matching exceeded its step budget",
                        ));
                    }
                    let st = &prog.states[id as usize];
                    match &st.op {
                        Op::Repeat | Op::Alternative => {
                            let key = self.memo_key(id);
                            if let Some(sol) = self.memo.get(prog, &key) {
                                self.has_sol = sol;
                                continue;
                            }
                            stack.push(Frame::Memo(key));
                            if matches!(st.op, Op::Repeat) {
                                stack.push(Frame::AfterLoopBody(id));
                                self.loop_once_more(id, &mut stack);
                            } else {
                                stack.push(Frame::AfterLeft(id));
                                stack.push(Frame::Explore(st.alt));
                            }
                        }
                        Op::Match(m) => {
                            if let Some(&b) = self.input.get(self.cur) {
                                if m.matches(b) {
                                    stack.push(Frame::RestorePos(self.cur));
                                    self.cur += 1;
                                    stack.push(Frame::Explore(st.next));
                                }
                            }
                        }
                        Op::GroupBegin(k) => {
                            let k = *k;
                            stack.push(Frame::RestoreStart(k, self.slots[k].start));
                            self.slots[k].start = self.cur;
                            stack.push(Frame::Explore(st.next));
                        }
                        Op::GroupEnd(k) => {
                            let k = *k;
                            stack.push(Frame::RestoreSlot(k, self.slots[k]));
                            self.slots[k].end = self.cur;
                            self.slots[k].matched = true;
                            stack.push(Frame::Explore(st.next));
                        }
                        Op::LineBegin => {
                            if self.at_begin() {
                                stack.push(Frame::Explore(st.next));
                            }
                        }
                        Op::LineEnd => {
                            if self.cur == self.input.len() {
                                stack.push(Frame::Explore(st.next));
                            }
                        }
                        Op::Accept => self.accept(mode),
                        Op::Dummy => stack.push(Frame::Explore(st.next)),
                    }
                }
                Frame::AfterLoopBody(id) => {
                    if !self.has_sol {
                        stack.push(Frame::Explore(prog.states[id as usize].next));
                    }
                }
                Frame::RestoreLoop(id, pos, count) => {
                    self.loop_count[id as usize] = (pos, count);
                    self.loop_log.pop();
                }
                Frame::AfterLeft(id) => {
                    let left = self.has_sol;
                    self.has_sol = false;
                    stack.push(Frame::AfterRight(left));
                    stack.push(Frame::Explore(prog.states[id as usize].next));
                }
                Frame::AfterRight(left) => self.has_sol |= left,
                Frame::RestoreStart(k, start) => self.slots[k].start = start,
                Frame::RestoreSlot(k, slot) => self.slots[k] = slot,
                Frame::RestorePos(p) => self.cur = p,
                Frame::Memo(key) => self.memo.put(prog, key, self.has_sol),
            }
        }
        Ok(())
    }

    /// Enter a loop body, unless it was already entered twice at this
    /// position (libstdc++'s guard against empty-loop recursion).
    fn loop_once_more(&mut self, id: u32, stack: &mut Vec<Frame>) {
        let (pos, count) = self.loop_count[id as usize];
        let new_count = if count == 0 || pos != self.cur {
            1
        } else if count < 2 {
            count + 1
        } else {
            return;
        };
        stack.push(Frame::RestoreLoop(id, pos, count));
        self.loop_count[id as usize] = (self.cur, new_count);
        self.loop_log.push((id, self.cur));
        stack.push(Frame::Explore(self.prog.states[id as usize].alt));
    }

    /// The loop counters that can still influence the walk below `state`:
    /// those set at the current position (positions only grow along a
    /// path) for loops reachable from `state` without consuming input.
    fn memo_key(&self, state: u32) -> MemoKey {
        let mut loops: Vec<(u32, u8)> = Vec::new();
        let reachable = self
            .prog
            .eps_loops
            .as_ref()
            .map(|e| &e[self.prog.branch_index[state as usize] as usize]);
        for &(id, pos) in self.loop_log.iter().rev() {
            if pos != self.cur {
                break;
            }
            if reachable.is_some_and(|r| r.binary_search(&id).is_err()) {
                continue;
            }
            let (p, c) = self.loop_count[id as usize];
            if p == self.cur && c > 0 && !loops.iter().any(|&(i, _)| i == id) {
                loops.push((id, c));
            }
        }
        loops.sort_unstable();
        MemoKey {
            state,
            pos: self.cur,
            loops,
        }
    }

    fn accept(&mut self, mode: Mode) {
        self.has_sol = match mode {
            Mode::Exact => self.cur == self.input.len(),
            Mode::Prefix => true,
        };
        if self.cur == self.begin && self.flags.not_null {
            self.has_sol = false;
        }
        if self.has_sol && self.sol_end.is_none_or(|e| e < self.cur) {
            self.sol_end = Some(self.cur);
            self.results = Some(self.slots.clone());
        }
    }
}
