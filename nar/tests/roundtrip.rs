//! Round trips without Nix: random trees through the encoder, both readers,
//! restore and dump; the encoder refuses out-of-grammar use; hashing
//! adaptors agree with `hash_path`.

use std::io::Read;

use b3_nar::{
    dump_path, hash_path, hash_path_single_threaded, restore, AsyncEvent, AsyncNarReader, Error,
    HashingReader, HashingWriter, NarEncoder, NarReader, Tree,
};
use tokio::io::AsyncReadExt;

/// Small deterministic generator (no extra test dependency).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_name(g: &mut Lcg) -> Vec<u8> {
    let len = 1 + g.below(12) as usize;
    loop {
        let n: Vec<u8> = (0..len)
            .map(|_| match g.below(4) {
                0 => b'a' + g.below(26) as u8,
                1 => b'A' + g.below(26) as u8,
                2 => 0x80 + g.below(0x7f) as u8,
                _ => b" -_.~+"[g.below(6) as usize],
            })
            .collect();
        if n != b"." && n != b".." {
            return n;
        }
    }
}

fn random_tree(g: &mut Lcg, depth: u32) -> Tree {
    match g.below(if depth == 0 { 2 } else { 4 }) {
        0 => {
            let len = match g.below(4) {
                0 => 0,
                1 => g.below(9),
                2 => g.below(300),
                _ => g.below(300_000),
            } as usize;
            let contents: Vec<u8> = (0..len).map(|i| (i as u64 * 31 + g.0) as u8).collect();
            Tree::File {
                executable: g.below(2) == 0,
                contents,
            }
        }
        1 => Tree::symlink(random_name(g)),
        _ => Tree::dir((0..g.below(6)).map(|_| (random_name(g), random_tree(g, depth - 1)))),
    }
}

// Random names include bytes Windows cannot hold in file names.
#[cfg(unix)]
#[test]
fn random_trees_round_trip_through_readers_restore_and_dump() {
    let mut g = Lcg(42);
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    for i in 0..60 {
        let tree = random_tree(&mut g, 4);
        let nar = tree.to_nar().unwrap();
        assert_eq!(Tree::from_nar(&nar[..]).unwrap(), tree);

        // The async reader sees the same events and contents.
        let mut sync_events = Vec::new();
        let mut r = NarReader::new(&nar[..]);
        while let Some(ev) = r.next().unwrap() {
            sync_events.push(match ev {
                b3_nar::Event::File {
                    executable,
                    mut contents,
                    ..
                } => {
                    let mut v = Vec::new();
                    contents.read_to_end(&mut v).unwrap();
                    format!("file {executable} {v:?}")
                }
                other => format!("{other:?}"),
            });
        }
        let async_events = rt.block_on(async {
            let mut out = Vec::new();
            let mut r = AsyncNarReader::new(&nar[..]);
            while let Some(ev) = r.next().await.unwrap() {
                out.push(match ev {
                    AsyncEvent::File {
                        executable,
                        mut contents,
                        ..
                    } => {
                        let mut v = Vec::new();
                        contents.read_to_end(&mut v).await.unwrap();
                        format!("file {executable} {v:?}")
                    }
                    AsyncEvent::DirectoryStart => "DirectoryStart".into(),
                    AsyncEvent::DirectoryEnd => "DirectoryEnd".into(),
                    AsyncEvent::Entry { name } => format!("Entry {{ name: {name:?} }}"),
                    AsyncEvent::Symlink { target } => format!("Symlink {{ target: {target:?} }}"),
                });
            }
            out
        });
        assert_eq!(sync_events, async_events);

        let dest = tmp.path().join(format!("t{i}"));
        assert_eq!(restore(&nar[..], &dest).unwrap(), nar.len() as u64);
        assert!(dump_path(&dest, Vec::new()).unwrap().0 == nar, "tree {i}");
        let h = hash_path(&dest).unwrap();
        assert_eq!(h, hash_path_single_threaded(&dest).unwrap());
        assert_eq!(h.size, nar.len() as u64);
    }
}

// The tree has an executable, which Windows cannot mark.
#[cfg(unix)]
#[test]
fn hashing_reader_during_restore_equals_hash_path() {
    let tree = Tree::dir([
        (
            "bin",
            Tree::dir([("x", Tree::executable(vec![1u8; 70_000]))]),
        ),
        ("lib", Tree::symlink("bin")),
    ]);
    let nar = tree.to_nar().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("out");
    let mut hr = HashingReader::new(&nar[..]);
    restore(&mut hr, &dest).unwrap();
    let (_, h) = hr.finish_nar();
    assert_eq!(h, hash_path(&dest).unwrap());
    let (w, _) = dump_path(&dest, HashingWriter::new(Vec::new())).unwrap();
    let (bytes, h2) = w.finish_nar();
    assert_eq!(h2, h);
    assert_eq!(bytes, nar);
}

#[test]
fn encoder_refuses_out_of_order_use() {
    let usage = |r: Result<(), Error>| matches!(r, Err(Error::Usage(_)));
    let mut e = NarEncoder::new(Vec::new());
    assert!(usage(e.entry(b"a"))); // no open directory
    e.directory_start().unwrap();
    assert!(usage(e.symlink(b"x"))); // node without entry
    e.entry(b"b").unwrap();
    assert!(usage(e.entry(b"c"))); // entry without node
    e.file_bytes(false, b"1").unwrap();
    assert!(usage(e.entry(b"a"))); // not sorted
    assert!(usage(e.entry(b"b"))); // duplicate
    assert!(usage(e.entry(b"x/y"))); // bad name
    e.entry(b"c").unwrap();
    assert!(usage(e.symlink(b""))); // bad target
    e.symlink(b"b").unwrap();
    e.directory_end().unwrap();
    assert!(usage(e.directory_end()));
    assert!(usage(e.file_bytes(false, b"")));
    let (nar, size) = e.finish().unwrap();
    assert_eq!(size, nar.len() as u64);
    let tree = Tree::dir([("b", Tree::file("1")), ("c", Tree::symlink("b"))]);
    assert_eq!(nar, tree.to_nar().unwrap());

    let mut e = NarEncoder::new(Vec::new());
    e.directory_start().unwrap();
    assert!(matches!(e.finish(), Err(Error::Usage(_)))); // incomplete
}

#[test]
fn encoder_file_from_reader_must_supply_the_announced_size() {
    let mut e = NarEncoder::new(Vec::new());
    let r = e.file(false, 10, &mut &b"short"[..]);
    assert!(matches!(r, Err(Error::Write(_))), "{r:?}");
    let mut e = NarEncoder::new(Vec::new());
    e.file(true, 5, &mut &b"exact and more"[..]).unwrap();
    let (nar, _) = e.finish().unwrap();
    assert_eq!(Tree::from_nar(&nar[..]).unwrap(), Tree::executable("exact"));
}

// Makes a FIFO with mkfifo.
#[cfg(unix)]
#[test]
fn unsupported_file_types_are_errors_naming_the_path() {
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("fifo");
    let st = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(st.success());
    match dump_path(tmp.path(), Vec::new()) {
        Err(Error::UnsupportedType(p)) => assert_eq!(p, fifo),
        other => panic!("expected UnsupportedType, got {other:?}"),
    }
}

#[test]
fn nar_hash_renders_all_forms() {
    let h = b3_nar::NarHash {
        sha256: [0u8; 32],
        size: 0,
    };
    assert_eq!(h.to_nix_base32(), "0".repeat(52));
    assert_eq!(h.to_typed_base32(), format!("sha256:{}", "0".repeat(52)));
    assert_eq!(
        h.to_sri(),
        "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    assert_eq!(h.to_base16(), "0".repeat(64));
}

#[test]
fn copy_nar_passes_valid_archives_through_and_stops_on_invalid_ones() {
    let mut g = Lcg(7);
    for _ in 0..20 {
        let nar = random_tree(&mut g, 3).to_nar().unwrap();
        let (out, n) = b3_nar::copy_nar(&nar[..], Vec::new()).unwrap();
        assert_eq!(n, nar.len() as u64);
        assert!(out == nar);
    }
    let nar = Tree::dir([("a", Tree::file(vec![9u8; 10_000]))])
        .to_nar()
        .unwrap();
    let cut = &nar[..nar.len() - 100];
    let err = b3_nar::copy_nar(cut, Vec::new()).unwrap_err();
    assert_eq!(err.reason(), Some(&b3_nar::Reason::Truncated), "{err}");
    assert_eq!(err.offset(), Some(cut.len() as u64));
}
