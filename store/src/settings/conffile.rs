//! nix.conf syntax: one directive per line; `#` starts a comment anywhere;
//! tokens are separated by blanks; `NAME = VALUE...` (the value's tokens are
//! re-joined with single spaces, as Nix does) or `include PATH` /
//! `!include PATH`. Anything else is an illegal line.

/// One meaningful line of a configuration text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Directive {
    Assign {
        line: usize,
        name: String,
        value: String,
    },
    Include {
        line: usize,
        path: String,
        optional: bool,
    },
}

/// A line that is neither an assignment nor an include.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IllegalLine {
    pub line: usize,
    pub text: String,
}

/// Splits configuration text into directives (1-based line numbers).
pub fn parse(text: &str) -> Result<Vec<Directive>, IllegalLine> {
    let mut out = Vec::new();
    for (idx, raw) in text.split('\n').enumerate() {
        let line = idx + 1;
        let body = raw.split('#').next().unwrap_or("");
        let tokens: Vec<&str> = body
            .split([' ', '\t', '\r', '\n'])
            .filter(|t| !t.is_empty())
            .collect();
        if tokens.is_empty() {
            continue;
        }
        let illegal = || IllegalLine {
            line,
            text: raw.trim_end_matches('\r').to_owned(),
        };
        if tokens.len() < 2 {
            return Err(illegal());
        }
        if tokens[0] == "include" || tokens[0] == "!include" {
            if tokens.len() != 2 {
                return Err(illegal());
            }
            out.push(Directive::Include {
                line,
                path: tokens[1].to_owned(),
                optional: tokens[0] == "!include",
            });
            continue;
        }
        if tokens[1] != "=" {
            return Err(illegal());
        }
        out.push(Directive::Assign {
            line,
            name: tokens[0].to_owned(),
            value: tokens[2..].join(" "),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_and_token_joining() {
        let d = parse("# top\n\nsubstituters =   a \t b # c\nempty =\n!include x.conf\n").unwrap();
        assert_eq!(
            d,
            vec![
                Directive::Assign {
                    line: 3,
                    name: "substituters".into(),
                    value: "a b".into()
                },
                Directive::Assign {
                    line: 4,
                    name: "empty".into(),
                    value: String::new()
                },
                Directive::Include {
                    line: 5,
                    path: "x.conf".into(),
                    optional: true
                },
            ]
        );
    }

    #[test]
    fn missing_equals_is_illegal() {
        assert_eq!(parse("a = 1\nlog-lines=2\n").unwrap_err().line, 2);
        assert_eq!(parse("justaword\n").unwrap_err().line, 1);
        assert_eq!(parse("include a b\n").unwrap_err().line, 1);
    }
}
