//! Fuzzes the `.narinfo` parser: it must never panic, and whatever it
//! accepts must print to text that parses back to the same value and
//! prints identically (the printer is a fixed point).
#![no_main]

use b3_store::binary_cache::NarInfo;
use b3_store::path::StoreDir;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = StoreDir::default();
    if let Ok(info) = NarInfo::parse_bytes(data, &dir) {
        let text = info.to_text(&dir);
        let again = match NarInfo::parse(&text, &dir) {
            Ok(a) => a,
            Err(e) => panic!("printed narinfo does not reparse: {e}\n{text}"),
        };
        // Sigs are a set in Nix: compare as printed (sorted, unique).
        assert_eq!(again.to_text(&dir), text);
        assert_eq!(again.store_path, info.store_path);
        assert_eq!(again.nar_hash, info.nar_hash);
        assert_eq!(again.references, info.references);
        let _ = info.fingerprint(&dir);
    }
});
