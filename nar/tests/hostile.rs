//! Hostile and malformed NARs: each must be rejected with the byte offset
//! and reason, by both the sync and the async reader, and a failed restore
//! must leave nothing behind.

mod common;

use b3_nar::{restore, AsyncEvent, AsyncNarReader, Error, Event, NarReader, Reason, Tree};
use common::Toks;
use tokio::io::AsyncReadExt;

/// Reads a whole NAR (contents included) with the sync reader.
fn read_all(nar: &[u8]) -> Result<(), Error> {
    let mut r = NarReader::new(nar);
    while let Some(ev) = r.next()? {
        if let Event::File { mut contents, .. } = ev {
            let mut buf = [0u8; 7];
            while contents.read_nar(&mut buf)? > 0 {}
        }
    }
    Ok(())
}

fn read_all_async(nar: &[u8]) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut r = AsyncNarReader::new(nar);
        while let Some(ev) = r.next().await? {
            if let AsyncEvent::File { mut contents, .. } = ev {
                let mut v = Vec::new();
                contents.read_to_end(&mut v).await.map_err(|e| {
                    match e.into_inner().map(|i| i.downcast::<Error>()) {
                        Some(Ok(b)) => *b,
                        _ => panic!("foreign io error"),
                    }
                })?;
            }
        }
        Ok(())
    })
}

/// Asserts both readers reject `nar` at `offset` with a reason matching `pred`.
#[track_caller]
fn rejects(nar: &Toks, offset: u64, pred: impl Fn(&Reason) -> bool) {
    for (which, res) in [
        ("sync", read_all(&nar.0)),
        ("async", read_all_async(&nar.0)),
    ] {
        match res {
            Err(Error::Invalid { offset: o, reason }) => {
                assert!(pred(&reason), "{which}: unexpected reason {reason:?}");
                assert_eq!(o, offset, "{which}: offset for {reason:?}");
            }
            other => panic!("{which}: expected rejection at {offset}, got {other:?}"),
        }
    }
    // A restore of it must fail and leave the parent directory empty.
    let tmp = tempfile::tempdir().unwrap();
    let err = restore(&nar.0[..], &tmp.path().join("out")).unwrap_err();
    assert_eq!(err.offset(), Some(offset), "restore: {err}");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "restore left files"
    );
}

fn dir_with(entries: &[(&[u8], &[u8])]) -> Toks {
    let mut t = Toks::new().magic().ss(&[b"(", b"type", b"directory"]);
    for (name, contents) in entries {
        t = t.entry(name).file(contents).s(b")");
    }
    t.s(b")")
}

#[test]
fn rejects_wrong_magic() {
    rejects(&Toks::new().s(b"nix-archive-2"), 0, |r| {
        *r == Reason::BadMagic
    });
    rejects(&Toks::new().s(b"tar"), 0, |r| *r == Reason::BadMagic);
    // A huge first length is also "not a NAR", not an allocation.
    rejects(&Toks::new().raw(&u64::MAX.to_le_bytes()), 0, |r| {
        *r == Reason::BadMagic
    });
}

#[test]
fn rejects_unknown_node_type_at_its_token() {
    let head = Toks::new().magic().ss(&[b"(", b"type"]);
    let at = head.len();
    rejects(
        &head.s(b"fifo").s(b")"),
        at,
        |r| matches!(r, Reason::UnknownType(t) if t == "\"fifo\""),
    );
}

#[test]
fn rejects_unknown_tags() {
    let head = Toks::new().magic();
    let at = head.len();
    rejects(&head.s(b"[").s(b"type"), at, |r| {
        matches!(r, Reason::UnexpectedToken { .. })
    });

    let head = Toks::new().magic().ss(&[b"(", b"type", b"regular"]);
    let at = head.len();
    rejects(&head.s(b"mode").s(b"x"), at, |r| {
        matches!(r, Reason::UnexpectedToken { .. })
    });

    // `executable` must carry the empty string.
    let head = Toks::new()
        .magic()
        .ss(&[b"(", b"type", b"regular", b"executable"]);
    let at = head.len();
    rejects(&head.s(b"yes"), at, |r| {
        matches!(r, Reason::UnexpectedToken { .. })
    });

    // Anything after contents but `)`: non-canonical, rejected.
    let head = Toks::new()
        .magic()
        .ss(&[b"(", b"type", b"regular", b"contents", b"x"]);
    let at = head.len();
    rejects(&head.ss(&[b"executable", b"", b")"]), at, |r| {
        matches!(r, Reason::UnexpectedToken { .. })
    });

    let head = Toks::new().magic().ss(&[b"(", b"type", b"directory"]);
    let at = head.len();
    rejects(&head.s(b"entri"), at, |r| {
        matches!(r, Reason::UnexpectedToken { .. })
    });
}

#[test]
fn rejects_bad_entry_names() {
    let cases: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b".", "is . or .."),
        (b"..", "is . or .."),
        (b"a/b", "contains '/'"),
        (b"/", "contains '/'"),
        (b"a\0b", "contains a NUL byte"),
    ];
    for (name, why) in cases {
        let head = Toks::new()
            .magic()
            .ss(&[b"(", b"type", b"directory", b"entry", b"(", b"name"]);
        let at = head.len();
        let nar = head.s(name).s(b"node").file(b"x").ss(&[b")", b")"]);
        rejects(
            &nar,
            at,
            |r| matches!(r, Reason::BadName { why: w, .. } if w == why),
        );
    }
}

#[test]
fn rejects_overlong_names_and_targets_without_allocating() {
    let head = Toks::new()
        .magic()
        .ss(&[b"(", b"type", b"directory", b"entry", b"(", b"name"]);
    let at = head.len();
    rejects(&head.clone().s(&[b'n'; 256]), at, |r| {
        matches!(
            r,
            Reason::TooLong {
                len: 256,
                max: 255,
                ..
            }
        )
    });
    rejects(&head.raw(&(1u64 << 60).to_le_bytes()), at, |r| {
        matches!(r, Reason::TooLong { max: 255, .. })
    });

    let head = Toks::new()
        .magic()
        .ss(&[b"(", b"type", b"symlink", b"target"]);
    let at = head.len();
    rejects(&head.s(&[b't'; 4096]).s(b")"), at, |r| {
        matches!(
            r,
            Reason::TooLong {
                len: 4096,
                max: 4095,
                ..
            }
        )
    });
    // Structural tokens are short; a long one is refused before reading it.
    let head = Toks::new().magic();
    let at = head.len();
    rejects(&head.raw(&u64::MAX.to_le_bytes()), at, |r| {
        matches!(r, Reason::TooLong { .. })
    });
}

#[test]
fn rejects_bad_symlink_targets() {
    for (target, why) in [(&b""[..], "empty"), (&b"a\0b"[..], "contains a NUL byte")] {
        let head = Toks::new()
            .magic()
            .ss(&[b"(", b"type", b"symlink", b"target"]);
        let at = head.len();
        rejects(
            &head.s(target).s(b")"),
            at,
            |r| matches!(r, Reason::BadTarget { why: w, .. } if *w == why),
        );
    }
}

#[test]
fn rejects_unsorted_and_duplicate_entries() {
    // Offset of the second entry's name token.
    let second_name_at = |first: &[u8]| {
        Toks::new()
            .magic()
            .ss(&[b"(", b"type", b"directory"])
            .entry(first)
            .file(b"1")
            .s(b")")
            .ss(&[b"entry", b"(", b"name"])
            .len()
    };
    rejects(
        &dir_with(&[(b"b", b"1"), (b"a", b"2")]),
        second_name_at(b"b"),
        |r| matches!(r, Reason::NotSorted { .. }),
    );
    rejects(
        &dir_with(&[(b"a", b"1"), (b"a", b"2")]),
        second_name_at(b"a"),
        |r| matches!(r, Reason::Duplicate(_)),
    );
    // Byte order, not locale: "B" (0x42) sorts before "a" (0x61).
    rejects(
        &dir_with(&[(b"a", b"1"), (b"B", b"2")]),
        second_name_at(b"a"),
        |r| matches!(r, Reason::NotSorted { .. }),
    );
    // A prefix sorts first.
    rejects(
        &dir_with(&[(b"ab", b"1"), (b"a", b"2")]),
        second_name_at(b"ab"),
        |r| matches!(r, Reason::NotSorted { .. }),
    );
    assert!(read_all(&dir_with(&[(b"B", b"1"), (b"a", b"2"), (b"ab", b"3")]).0).is_ok());
}

#[test]
fn rejects_non_zero_padding_at_the_bad_byte() {
    // Padding of a token: "regular" (7 bytes) has one padding byte.
    let mut nar = Toks::new().magic().ss(&[b"(", b"type", b"regular"]);
    let pad_at = nar.len() - 1;
    nar.0[pad_at as usize] = 1;
    rejects(&nar.ss(&[b"contents", b"", b")"]), pad_at, |r| {
        *r == Reason::NonZeroPadding
    });

    // Padding after file contents (3 bytes of data, 5 of padding).
    let mut nar = Toks::new().magic().file(b"abc");
    let pad_at = nar.len() - 16 - 2;
    nar.0[pad_at as usize] = 0xff;
    rejects(&nar, pad_at, |r| *r == Reason::NonZeroPadding);
}

#[test]
fn rejects_every_truncation_at_the_end_of_input() {
    let tree = Tree::dir([
        ("a", Tree::file("hello")),
        ("b", Tree::executable(vec![7u8; 1000])),
        ("c", Tree::symlink("a")),
        ("d", Tree::dir([("e", Tree::file(""))])),
    ]);
    let nar = tree.to_nar().unwrap();
    assert!(read_all(&nar).is_ok());
    for cut in 0..nar.len() {
        rejects(&Toks(nar[..cut].to_vec()), cut as u64, |r| {
            *r == Reason::Truncated
        });
    }
}

#[test]
fn rejects_nesting_past_the_depth_limit() {
    let limits = b3_nar::Limits { max_depth: 3 };
    let t = Tree::dir([(
        "a",
        Tree::dir([("b", Tree::dir([("c", Tree::dir::<&str>([]))]))]),
    )]);
    let nar = t.to_nar().unwrap();
    let mut r = NarReader::with_limits(&nar[..], limits);
    let err = loop {
        match r.next() {
            Ok(Some(_)) => {}
            Ok(None) => panic!("accepted"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.reason(), Some(&Reason::TooDeep(3)));
    let ok = b3_nar::Limits { max_depth: 4 };
    let mut r = NarReader::with_limits(&nar[..], ok);
    r.skip_all().unwrap();
}

#[test]
fn reader_stops_at_the_end_of_the_archive() {
    // Trailing data stays in the underlying reader for the caller.
    let mut bytes = Tree::file("x").to_nar().unwrap();
    let len = bytes.len();
    bytes.extend_from_slice(b"TRAILER");
    let mut r = NarReader::new(&bytes[..]);
    r.skip_all().unwrap();
    assert_eq!(r.offset(), len as u64);
    assert_eq!(r.into_inner(), b"TRAILER");
}

#[test]
fn restore_refuses_an_existing_destination() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("there");
    std::fs::create_dir(&dest).unwrap();
    let nar = Tree::file("x").to_nar().unwrap();
    let err = restore(&nar[..], &dest).unwrap_err();
    assert!(matches!(err, Error::DestinationExists(_)), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    // A dangling symlink counts as existing too: never written through.
    #[cfg(unix)]
    {
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path().join("target"), &link).unwrap();
        assert!(matches!(
            restore(&nar[..], &link),
            Err(Error::DestinationExists(_))
        ));
        assert!(!tmp.path().join("target").exists());
    }
}

#[test]
fn restore_error_midway_leaves_nothing_behind() {
    // A valid start with files and subdirectories, then garbage.
    let tree = Tree::dir([
        ("a", Tree::file("hello")),
        ("bin", Tree::dir([("x", Tree::executable("#!"))])),
        ("z", Tree::file("last")),
    ]);
    let nar = tree.to_nar().unwrap();
    let cut = nar.len() - 40;
    let mut bad = nar[..cut].to_vec();
    bad.extend_from_slice(&[0xAA; 64]);
    let tmp = tempfile::tempdir().unwrap();
    let err = restore(&bad[..], &tmp.path().join("out")).unwrap_err();
    assert!(err.offset().is_some(), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let err = rt
        .block_on(b3_nar::restore_async(&bad[..], &tmp.path().join("out")))
        .unwrap_err();
    assert!(err.offset().is_some(), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}

#[test]
fn restore_with_symlink_then_same_name_dir_is_rejected_not_followed() {
    // "a" -> /tmp-outside as symlink, then "a" again as a directory with a
    // file: the duplicate is rejected before anything is written through it.
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().to_str().unwrap().as_bytes().to_vec();
    let nar = Toks::new()
        .magic()
        .ss(&[b"(", b"type", b"directory"])
        .entry(b"a")
        .ss(&[b"(", b"type", b"symlink", b"target", &target, b")"])
        .s(b")")
        .entry(b"a")
        .ss(&[b"(", b"type", b"directory"])
        .entry(b"evil")
        .file(b"pwned")
        .ss(&[b")", b")", b")", b")"]);
    let tmp = tempfile::tempdir().unwrap();
    let err = restore(&nar.0[..], &tmp.path().join("out")).unwrap_err();
    assert!(matches!(err.reason(), Some(Reason::Duplicate(_))), "{err}");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
