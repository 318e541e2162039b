//! Tokeniser for POSIX extended regular expressions, following the token
//! rules of libstdc++'s `std::regex` scanner in `extended` mode as compiled
//! with a strict `-std=c++NN` (which is how Nix is built): escaping an
//! ordinary character is an error, a backslash inside brackets is literal.
//!
//! The scanner's state changes (`[` enters bracket mode, `{` enters brace
//! mode) do not depend on the parser, so the whole pattern is tokenised up
//! front and the parser works on the token list.

use super::{ErrorKind, RegexError};

/// Characters that are special outside brackets in the extended grammar;
/// only these may follow a backslash.
const SPECIAL: &[u8] = b".[\\()*+?{|^$";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tok {
    Char(u8),
    Any,
    LineBegin,
    LineEnd,
    Star,
    Plus,
    Opt,
    Or,
    GroupOpen,
    GroupClose,
    IntervalBegin,
    DupCount(Vec<u8>),
    Comma,
    IntervalEnd,
    BracketBegin,
    BracketNegBegin,
    BracketEnd,
    BracketDash,
    CollSymbol(Vec<u8>),
    EquivClass(Vec<u8>),
    CharClass(Vec<u8>),
    Eof,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    Bracket,
    Brace,
}

pub(crate) fn tokenize(pat: &[u8]) -> Result<Vec<Tok>, RegexError> {
    let mut toks = Vec::new();
    let mut i = 0;
    let mut mode = Mode::Normal;
    let mut at_bracket_start = false;
    let err = |kind, msg: &str| Err(RegexError::new(kind, msg));
    while i < pat.len() {
        let c = pat[i];
        i += 1;
        match mode {
            Mode::Normal => {
                if c != 0 && !SPECIAL.contains(&c) {
                    toks.push(Tok::Char(c));
                    continue;
                }
                let tok = match c {
                    0 => return err(ErrorKind::Other, "NUL character in regular expression"),
                    b'\\' => {
                        let Some(&n) = pat.get(i) else {
                            return err(
                                ErrorKind::Escape,
                                "Invalid escape at end of regular expression",
                            );
                        };
                        if n == 0 || !SPECIAL.contains(&n) {
                            return err(ErrorKind::Escape, "invalid escaped character");
                        }
                        i += 1;
                        Tok::Char(n)
                    }
                    b'(' => Tok::GroupOpen,
                    b')' => Tok::GroupClose,
                    b'[' => {
                        mode = Mode::Bracket;
                        at_bracket_start = true;
                        if pat.get(i) == Some(&b'^') {
                            i += 1;
                            Tok::BracketNegBegin
                        } else {
                            Tok::BracketBegin
                        }
                    }
                    b'{' => {
                        mode = Mode::Brace;
                        Tok::IntervalBegin
                    }
                    b'^' => Tok::LineBegin,
                    b'$' => Tok::LineEnd,
                    b'.' => Tok::Any,
                    b'*' => Tok::Star,
                    b'+' => Tok::Plus,
                    b'?' => Tok::Opt,
                    b'|' => Tok::Or,
                    _ => Tok::Char(c),
                };
                toks.push(tok);
            }
            Mode::Bracket => {
                let tok = match c {
                    b'-' => Tok::BracketDash,
                    b'[' => match pat.get(i) {
                        None => {
                            return err(
                                ErrorKind::Brack,
                                "Incomplete '[[' character class in regular expression",
                            )
                        }
                        Some(&d @ (b'.' | b':' | b'=')) => {
                            i += 1;
                            let name = eat_class(pat, &mut i, d)?;
                            match d {
                                b'.' => Tok::CollSymbol(name),
                                b':' => Tok::CharClass(name),
                                _ => Tok::EquivClass(name),
                            }
                        }
                        Some(_) => Tok::Char(b'['),
                    },
                    b']' if !at_bracket_start => {
                        mode = Mode::Normal;
                        Tok::BracketEnd
                    }
                    _ => Tok::Char(c),
                };
                at_bracket_start = false;
                toks.push(tok);
            }
            Mode::Brace => {
                let tok = if c.is_ascii_digit() {
                    let mut v = vec![c];
                    while let Some(&d) = pat.get(i) {
                        if !d.is_ascii_digit() {
                            break;
                        }
                        v.push(d);
                        i += 1;
                    }
                    Tok::DupCount(v)
                } else if c == b',' {
                    Tok::Comma
                } else if c == b'}' {
                    mode = Mode::Normal;
                    Tok::IntervalEnd
                } else {
                    return err(
                        ErrorKind::BadBrace,
                        "Unexpected character in brace expression",
                    );
                };
                toks.push(tok);
            }
        }
    }
    toks.push(Tok::Eof);
    Ok(toks)
}

/// Reads the name of `[:name:]`, `[.name.]` or `[=name=]` after the opening
/// delimiter; the closing delimiter must be followed by `]`.
fn eat_class(pat: &[u8], i: &mut usize, delim: u8) -> Result<Vec<u8>, RegexError> {
    let start = *i;
    while *i < pat.len() && pat[*i] != delim {
        *i += 1;
    }
    let name = pat[start..*i].to_vec();
    if *i + 1 < pat.len() && pat[*i + 1] == b']' {
        *i += 2;
        Ok(name)
    } else {
        let kind = if delim == b':' {
            ErrorKind::Ctype
        } else {
            ErrorKind::Collate
        };
        Err(RegexError::new(kind, "Unexpected end of character class"))
    }
}
