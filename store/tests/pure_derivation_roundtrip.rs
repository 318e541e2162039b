//! Pure (no oracle) checks of the `.drv` and JSON codecs on generated and
//! damaged inputs: printing then parsing gives the same derivation back, and
//! no truncated or corrupted text makes the parser panic or accept garbage.

use std::collections::BTreeSet;

use b3_store::derivation::json::{parse_show_derivations, show_derivations};
use b3_store::derivation::{Derivation, DerivationOutput};
use b3_store::hash::{Hash, HashAlgo};
use b3_store::path::{
    ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath,
};

/// A small deterministic generator (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn string(&mut self, max: usize) -> String {
        const POOL: &[char] = &[
            'a', 'Z', '0', ' ', '"', '\\', '\n', '\r', '\t', '$', '{', '}', '(', ')', ',', '[',
            ']', '\u{1}', '\u{1f}', '\u{7f}', 'é', '☃', '𝄞',
        ];
        let n = self.below(max + 1);
        (0..n).map(|_| POOL[self.below(POOL.len())]).collect()
    }
    fn name(&mut self) -> String {
        const POOL: &[u8] = b"abcxyzABC019+-._?=";
        let n = 1 + self.below(12);
        let mut s: String = (0..n)
            .map(|_| char::from(POOL[self.below(POOL.len())]))
            .collect();
        if s.starts_with('.') {
            s.insert(0, 'n');
        }
        s
    }
    fn path(&mut self) -> StorePath {
        let mut digest = [0u8; 20];
        for b in digest.iter_mut() {
            *b = self.next() as u8;
        }
        StorePath::from_parts(digest, &self.name()).unwrap()
    }
}

fn generate(rng: &mut Rng) -> Derivation {
    let mut d = Derivation {
        system: ["x86_64-linux", "aarch64-darwin", "builtin"][rng.below(3)].to_owned(),
        builder: rng.string(20),
        ..Default::default()
    };
    let algos = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ];
    match rng.below(4) {
        0 => {
            let algo = algos[rng.below(4)];
            let method = match rng.below(3) {
                0 => ContentAddressMethod::Text,
                1 => ContentAddressMethod::Fixed(FileIngestionMethod::Flat),
                _ => ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
            };
            let hash = Hash::digest(algo, rng.next().to_le_bytes());
            let path = rng.path();
            d.outputs.insert(
                "out".into(),
                DerivationOutput::CaFixed {
                    ca: ContentAddress { method, hash },
                    path,
                },
            );
        }
        1 => {
            for _ in 0..1 + rng.below(3) {
                d.outputs.insert(rng.name(), DerivationOutput::Deferred);
            }
        }
        2 => {
            let algo = algos[rng.below(4)];
            d.outputs.insert(
                "out".into(),
                DerivationOutput::CaFloating {
                    method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
                    algo,
                },
            );
        }
        _ => {
            for _ in 0..1 + rng.below(4) {
                let p = rng.path();
                d.outputs
                    .insert(rng.name(), DerivationOutput::InputAddressed(p));
            }
        }
    }
    for _ in 0..rng.below(4) {
        let outs: BTreeSet<String> = (0..1 + rng.below(3)).map(|_| rng.name()).collect();
        d.input_drvs.insert(rng.path(), outs);
    }
    for _ in 0..rng.below(4) {
        d.input_srcs.insert(rng.path());
    }
    for _ in 0..rng.below(5) {
        d.args.push(rng.string(30));
    }
    for _ in 0..rng.below(8) {
        d.env.insert(rng.string(8), rng.string(60));
    }
    d
}

#[test]
fn generated_derivations_round_trip_through_aterm_and_json() {
    let sd = StoreDir::default();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..2000 {
        let d = generate(&mut rng);
        let text = d.to_aterm(&sd);
        let back = Derivation::from_aterm(&sd, text.as_bytes())
            .unwrap_or_else(|e| panic!("case {i}: {e}\n{text}"));
        assert_eq!(back, d, "case {i}: ATerm round trip\n{text}");
        assert_eq!(back.to_aterm(&sd), text);
        let p = rng.path();
        let json = String::from_utf8(show_derivations(&sd, [(&p, &d)])).unwrap();
        let from_json =
            parse_show_derivations(&sd, &json).unwrap_or_else(|e| panic!("case {i}: {e}\n{json}"));
        assert_eq!(from_json.get(&p), Some(&d), "case {i}: JSON round trip");
    }
}

#[test]
fn other_store_dirs_round_trip() {
    let sd = StoreDir::new("/b3/store").unwrap();
    let mut rng = Rng(42);
    for _ in 0..200 {
        let d = generate(&mut rng);
        let text = d.to_aterm(&sd);
        assert!(!text.contains("/nix/store/"));
        assert_eq!(Derivation::from_aterm(&sd, text.as_bytes()).unwrap(), d);
        // Paths of another store are not store paths here.
        if !d.input_srcs.is_empty() {
            assert!(Derivation::from_aterm(&StoreDir::default(), text.as_bytes()).is_err());
        }
    }
}

#[test]
fn every_truncation_and_corruption_is_an_error_not_a_panic() {
    let sd = StoreDir::default();
    let mut rng = Rng(7);
    for _ in 0..30 {
        let d = generate(&mut rng);
        let text = d.to_aterm(&sd).into_bytes();
        for cut in 0..text.len() {
            let e = Derivation::from_aterm(&sd, &text[..cut]);
            assert!(e.is_err(), "prefix of {cut} bytes parsed");
            assert!(e.unwrap_err().offset <= cut);
        }
        for _ in 0..200 {
            let mut bad = text.clone();
            let at = rng.below(bad.len());
            bad[at] = rng.next() as u8;
            // Either an error or a derivation that prints back to valid text.
            if let Ok(d2) = Derivation::from_aterm(&sd, &bad) {
                let again = d2.to_aterm(&sd);
                let _ = Derivation::from_aterm(&sd, again.as_bytes());
            }
        }
    }
}
