//! What restoring and dumping do on Windows (run under wine by
//! scripts/test-windows.sh): trees without executables round-trip to the
//! same NAR bytes; names Windows cannot hold are refused with nothing left
//! behind; the executable bit is dropped (Windows has none).
#![cfg(windows)]

use b3_nar::*;

#[test]
fn tree_without_executables_round_trips_byte_for_byte() {
    let tree = Tree::dir([
        ("a.txt", Tree::file("hello\n")),
        ("empty", Tree::file("")),
        (
            "sub",
            Tree::dir([
                ("big", Tree::file(vec![7u8; 300_000])),
                ("nested", Tree::dir([("x", Tree::file("x"))])),
            ]),
        ),
        ("z\u{e9}", Tree::file("unicode name")),
    ]);
    let nar = tree.to_nar().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let mut hr = HashingReader::new(&nar[..]);
    restore(&mut hr, &dest).unwrap();
    let (_, h) = hr.finish_nar();
    assert_eq!(hash_path(&dest).unwrap(), h);
    let (again, _) = dump_path(&dest, Vec::new()).unwrap();
    assert_eq!(again, nar);
}

#[test]
fn names_windows_cannot_hold_are_refused_and_nothing_is_left() {
    for bad in ["a:b", "CON", "trailing.", "q?"] {
        let nar = Tree::dir([(bad, Tree::file("x"))]).to_nar().unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let err = restore(&nar[..], &tmp.path().join("out")).unwrap_err();
        assert!(err.to_string().contains("Windows"), "{bad}: {err}");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "{bad}");
    }
}

#[test]
fn executable_bit_is_dropped_on_windows() {
    let nar = Tree::dir([("run", Tree::executable("#!/bin/sh\n"))])
        .to_nar()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    restore(&nar[..], &dest).unwrap();
    let (dumped, _) = dump_path(&dest, Vec::new()).unwrap();
    assert_eq!(
        Tree::from_nar(&dumped[..]).unwrap(),
        Tree::dir([("run", Tree::file("#!/bin/sh\n"))])
    );
}

#[test]
fn restoring_onto_an_existing_path_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("there");
    std::fs::write(&dest, "keep").unwrap();
    let nar = Tree::file("x").to_nar().unwrap();
    assert!(matches!(
        restore(&nar[..], &dest),
        Err(Error::DestinationExists(_))
    ));
    assert_eq!(std::fs::read(&dest).unwrap(), b"keep");
}
