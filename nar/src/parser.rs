//! The NAR grammar as an I/O-free state machine. The sync and async readers
//! read tokens and feed them here, so both validate exactly the same way.
//!
//! Only the canonical form that `nix-store --dump` writes is accepted: within
//! a regular node `executable ""` (optional) comes before `contents`, which
//! is mandatory. One byte sequence per tree keeps NAR hashes meaningful.

use crate::error::{show, Reason};
use crate::wire::{MAGIC, MAX_NAME_LEN, MAX_TAG_LEN, MAX_TARGET_LEN};

/// What the reader must supply next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    /// One string token of at most `max` bytes; `what` names it in errors.
    Token { max: u64, what: &'static str },
    /// A file-contents string, streamed rather than buffered.
    Contents,
    /// Nothing: the archive is complete.
    Done,
}

/// Structural events the grammar produces (file contents are announced by
/// the reader, which owns the bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Token accepted, nothing to report.
    More,
    DirectoryStart,
    /// An entry name (the token just fed).
    Entry,
    /// A symlink target (the token just fed).
    Symlink,
    DirectoryEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum St {
    Magic,
    Open,
    TypeTag,
    TypeVal,
    /// After `type regular`: `executable` or `contents`.
    RegularAttr,
    ExecEmpty,
    ContentsTag,
    Contents,
    /// `)` closing a regular or symlink node.
    Close,
    TargetTag,
    TargetVal,
    /// In a directory: `entry` or `)`.
    DirItem,
    EntryOpen,
    NameTag,
    NameVal,
    NodeTag,
    EntryClose,
    Done,
}

pub(crate) struct Parser {
    st: St,
    /// One frame per open directory: the last entry name seen in it.
    dirs: Vec<Option<Vec<u8>>>,
    max_depth: usize,
    executable: bool,
}

fn tag(expected: &'static str, found: &[u8]) -> Reason {
    Reason::UnexpectedToken {
        expected,
        found: show(found),
    }
}

/// Checks that `name` can be one path component on any Unix filesystem.
pub(crate) fn check_name(name: &[u8]) -> Result<(), Reason> {
    let why = if name.is_empty() {
        "empty"
    } else if name == b"." || name == b".." {
        "is . or .."
    } else if name.contains(&b'/') {
        "contains '/'"
    } else if name.contains(&0) {
        "contains a NUL byte"
    } else if name.len() as u64 > MAX_NAME_LEN {
        "longer than 255 bytes"
    } else {
        return Ok(());
    };
    Err(Reason::BadName {
        name: show(name),
        why,
    })
}

/// Checks that `target` can be stored as a symlink.
pub(crate) fn check_target(target: &[u8]) -> Result<(), Reason> {
    let why = if target.is_empty() {
        "empty"
    } else if target.contains(&0) {
        "contains a NUL byte"
    } else if target.len() as u64 > MAX_TARGET_LEN {
        "longer than 4095 bytes"
    } else {
        return Ok(());
    };
    Err(Reason::BadTarget {
        target: show(target),
        why,
    })
}

impl Parser {
    pub(crate) fn new(max_depth: usize) -> Self {
        Parser {
            st: St::Magic,
            dirs: Vec::new(),
            max_depth,
            executable: false,
        }
    }

    pub(crate) fn want(&self) -> Want {
        let (max, what) = match self.st {
            St::Contents => return Want::Contents,
            St::Done => return Want::Done,
            St::Magic => (MAGIC.len() as u64, "magic"),
            St::NameVal => (MAX_NAME_LEN, "entry name"),
            St::TargetVal => (MAX_TARGET_LEN, "symlink target"),
            _ => (MAX_TAG_LEN, "token"),
        };
        Want::Token { max, what }
    }

    /// Whether the regular file whose contents come next is executable.
    pub(crate) fn executable(&self) -> bool {
        self.executable
    }

    /// Current directory nesting.
    pub(crate) fn depth(&self) -> usize {
        self.dirs.len()
    }

    /// The contents string has been read (and its padding checked).
    pub(crate) fn contents_done(&mut self) {
        debug_assert_eq!(self.st, St::Contents);
        self.st = St::Close;
    }

    fn node_finished(&mut self) {
        self.st = if self.dirs.is_empty() {
            St::Done
        } else {
            St::EntryClose
        };
    }

    pub(crate) fn feed(&mut self, t: &[u8]) -> Result<Step, Reason> {
        let expect = |want: &'static [u8], name: &'static str| -> Result<(), Reason> {
            if t == want {
                Ok(())
            } else {
                Err(tag(name, t))
            }
        };
        match self.st {
            St::Magic => {
                if t != MAGIC {
                    return Err(Reason::BadMagic);
                }
                self.st = St::Open;
            }
            St::Open => {
                expect(b"(", "\"(\"")?;
                self.st = St::TypeTag;
            }
            St::TypeTag => {
                expect(b"type", "\"type\"")?;
                self.st = St::TypeVal;
            }
            St::TypeVal => match t {
                b"regular" => {
                    self.executable = false;
                    self.st = St::RegularAttr;
                }
                b"symlink" => self.st = St::TargetTag,
                b"directory" => {
                    if self.dirs.len() >= self.max_depth {
                        return Err(Reason::TooDeep(self.max_depth));
                    }
                    self.dirs.push(None);
                    self.st = St::DirItem;
                    return Ok(Step::DirectoryStart);
                }
                _ => return Err(Reason::UnknownType(show(t))),
            },
            St::RegularAttr => match t {
                b"executable" => self.st = St::ExecEmpty,
                b"contents" => self.st = St::Contents,
                _ => return Err(tag("\"executable\" or \"contents\"", t)),
            },
            St::ExecEmpty => {
                expect(b"", "\"\" after \"executable\"")?;
                self.executable = true;
                self.st = St::ContentsTag;
            }
            St::ContentsTag => {
                expect(b"contents", "\"contents\"")?;
                self.st = St::Contents;
            }
            St::Close => {
                expect(b")", "\")\"")?;
                self.node_finished();
            }
            St::TargetTag => {
                expect(b"target", "\"target\"")?;
                self.st = St::TargetVal;
            }
            St::TargetVal => {
                check_target(t)?;
                self.st = St::Close;
                return Ok(Step::Symlink);
            }
            St::DirItem => match t {
                b"entry" => self.st = St::EntryOpen,
                b")" => {
                    self.dirs.pop();
                    self.node_finished();
                    return Ok(Step::DirectoryEnd);
                }
                _ => return Err(tag("\"entry\" or \")\"", t)),
            },
            St::EntryOpen => {
                expect(b"(", "\"(\"")?;
                self.st = St::NameTag;
            }
            St::NameTag => {
                expect(b"name", "\"name\"")?;
                self.st = St::NameVal;
            }
            St::NameVal => {
                check_name(t)?;
                let last = self.dirs.last_mut().ok_or(Reason::Truncated)?;
                if let Some(prev) = last.as_deref() {
                    if t == prev {
                        return Err(Reason::Duplicate(show(t)));
                    }
                    if t < prev {
                        return Err(Reason::NotSorted {
                            prev: show(prev),
                            name: show(t),
                        });
                    }
                }
                match last {
                    Some(v) => {
                        v.clear();
                        v.extend_from_slice(t);
                    }
                    None => *last = Some(t.to_vec()),
                }
                self.st = St::NodeTag;
                return Ok(Step::Entry);
            }
            St::NodeTag => {
                expect(b"node", "\"node\"")?;
                self.st = St::Open;
            }
            St::EntryClose => {
                expect(b")", "\")\" closing the entry")?;
                self.st = St::DirItem;
            }
            St::Contents | St::Done => {
                return Err(tag("nothing (internal state error)", t));
            }
        }
        Ok(Step::More)
    }
}
