//! Known answers of Nix's regex behaviour (measured with libstdc++ and
//! Nix 2.8), checked without the C++ oracle.

use b3_evaluator::regex::{ErrorKind, Regex, SplitItem};

fn groups(pat: &str, s: &str) -> Option<Vec<Option<String>>> {
    let re = Regex::new(pat.as_bytes()).expect("valid pattern");
    re.nix_match(s.as_bytes()).expect("within budget").map(|g| {
        g.into_iter()
            .map(|x| x.map(|b| String::from_utf8_lossy(b).into_owned()))
            .collect()
    })
}

fn some(v: &[&str]) -> Option<Vec<Option<String>>> {
    Some(v.iter().map(|s| Some(s.to_string())).collect())
}

#[test]
fn captures_follow_the_first_path_to_the_longest_end() {
    assert_eq!(groups("(a|ab)(c|bc)", "abc"), some(&["a", "bc"]));
    assert_eq!(groups("(b|b*)b*", "bb"), some(&["b"]));
    assert_eq!(groups("(x*)*", "xx"), some(&[""]));
    assert_eq!(groups("\\.*(.*)", ".keep"), some(&["keep"]));
}

#[test]
fn match_must_cover_the_whole_string() {
    assert_eq!(groups("a|ab", "ab"), some(&[]));
    assert_eq!(groups("fo*", "foobar"), None);
}

#[test]
fn dot_matches_one_byte_including_newline() {
    assert_eq!(groups("(.)", "é"), None);
    assert_eq!(groups("(..)", "é"), some(&["é"]));
    assert_eq!(groups("a.b", "a\nb"), some(&[]));
}

#[test]
fn backslash_is_literal_inside_brackets() {
    assert_eq!(groups("[\\-]+", "\\"), some(&[]));
}

#[test]
fn lazy_looking_quantifier_is_an_optional_group() {
    assert_eq!(groups("a+?", "aaa"), some(&[]));
}

#[test]
fn perl_and_gnu_syntax_is_rejected() {
    for p in [
        "\\d", "\\w", "\\s", "(?:a)", "(a)\\1", "\\b", "a{1", "[a", "*a", "\\",
    ] {
        assert!(Regex::new(p.as_bytes()).is_err(), "{p} should be rejected");
    }
    for p in [
        "\\{",
        "\\.",
        "a{1,2}",
        "[[:alpha:]]",
        "()",
        "a||b",
        "]",
        "}",
    ] {
        assert!(Regex::new(p.as_bytes()).is_ok(), "{p} should be accepted");
    }
}

#[test]
fn too_many_states_is_a_space_error() {
    let e = Regex::new(b"(a{1000}){1000}").expect_err("state limit");
    assert_eq!(e.kind, ErrorKind::Space);
}

#[test]
fn split_prefers_the_longest_match() {
    let re = Regex::new(b"(a|ab)").expect("valid");
    let got = re.nix_split(b"xabx").expect("within budget");
    assert_eq!(
        got,
        vec![
            SplitItem::Text(b"x"),
            SplitItem::Groups(vec![Some(&b"ab"[..])]),
            SplitItem::Text(b"x"),
        ]
    );
}

#[test]
fn split_empty_matches_follow_regex_iterator() {
    // Nix 2.8: [ "" [ ] "b" [ ] "" [ ] "c" [ ] "" ]
    let re = Regex::new(b"a*").expect("valid");
    let got = re.nix_split(b"baaac").expect("within budget");
    let texts: Vec<&[u8]> = got
        .iter()
        .filter_map(|i| match i {
            SplitItem::Text(t) => Some(*t),
            SplitItem::Groups(_) => None,
        })
        .collect();
    assert_eq!(texts, vec![&b""[..], b"b", b"", b"c", b""]);
}
