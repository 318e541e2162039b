//! Fuzzes the NAR reader: arbitrary bytes must never panic, hang or
//! allocate without bound; the streaming reader, `Tree::from_nar`,
//! `copy_nar` and restore must agree; whatever the reader accepts must re-encode to
//! exactly the same bytes (the format is canonical), and restoring it must
//! succeed or fail cleanly, leaving nothing behind on failure.
#![no_main]

use b3_nar::{Event, NarReader, Tree};
use libfuzzer_sys::fuzz_target;

fn read_all(data: &[u8]) -> Result<u64, b3_nar::Error> {
    let mut r = NarReader::new(data);
    let mut buf = [0u8; 113];
    while let Some(ev) = r.next()? {
        if let Event::File { mut contents, .. } = ev {
            while contents.read_nar(&mut buf)? > 0 {}
        }
    }
    Ok(r.offset())
}

fuzz_target!(|data: &[u8]| {
    let ok = read_all(data);
    // The in-memory parse must agree with the streaming one.
    let tree = Tree::from_nar(data);
    assert_eq!(ok.is_ok(), tree.is_ok());
    // The validating copy agrees too, and reproduces the accepted bytes.
    match (b3_nar::copy_nar(data, Vec::new()), &ok) {
        (Ok((out, n)), Ok(len)) => {
            assert_eq!(n, *len);
            assert_eq!(&out[..], &data[..*len as usize], "copy differs");
        }
        (Err(e), Err(e2)) => assert_eq!(e.offset(), e2.offset(), "{e} vs {e2}"),
        (a, b) => panic!("copy_nar and reader disagree: {a:?} vs {b:?}"),
    }
    if let (Ok(len), Ok(tree)) = (&ok, &tree) {
        let again = tree.to_nar().expect("accepted tree must encode");
        assert_eq!(&again[..], &data[..*len as usize], "re-encoding differs");
    }
    // Restore (also on invalid input, to check clean-up).
    let dir = tempdir();
    let dest = dir.join("out");
    let restored = b3_nar::restore(data, &dest);
    assert_eq!(restored.is_ok(), ok.is_ok());
    if restored.is_ok() {
        let (redump, _) = b3_nar::dump_path(&dest, Vec::new()).expect("dump restored");
        if let Ok(len) = ok {
            assert_eq!(&redump[..], &data[..len as usize], "restore+dump differs");
        }
        let _ = std::fs::remove_dir_all(&dest).or_else(|_| std::fs::remove_file(&dest));
    } else {
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "restore left files"
        );
    }
    let _ = std::fs::remove_dir(&dir);
});

fn tempdir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "b3-nar-fuzz-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}
