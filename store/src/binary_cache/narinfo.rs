//! `<hashpart>.narinfo`: the metadata of one store path in a binary cache.
//!
//! Text of `Name: value` lines. Nix writes the fields in this order and b3
//! prints them the same way, byte for byte: `StorePath URL Compression
//! FileHash FileSize NarHash NarSize References Deriver System Sig… CA`.
//! `References` is always written (empty: `References: ` with the space),
//! signatures are sorted and unique (Nix keeps them in a `std::set`).
//!
//! Parsing follows Nix's reader (unknown fields are ignored; a missing
//! `Compression` means bzip2; `Deriver: unknown-deriver` means none;
//! `StorePath`, `URL`, `NarHash` and a non-zero `NarSize` are required) but
//! is stricter where Nix would fail later or never: every error names the
//! line and field, hashes must be sha256, duplicate fields and unknown
//! compressions are rejected, and `Sig` must at least be `name:value`.
//! Signatures are kept as text (as Nix keeps them): one that does not
//! decode simply never verifies.

use std::collections::BTreeSet;

use thiserror::Error;

use super::compression::Compression;
use super::signing::{self, PublicKey, SecretKey, Signature};
use crate::hash::{Hash, HashAlgo};
use crate::path::{ContentAddress, StoreDir, StorePath};

/// One parsed `.narinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    pub store_path: StorePath,
    /// Where the (compressed) NAR is, relative to the cache root.
    pub url: String,
    pub compression: Compression,
    /// sha256 of the file at `url`.
    pub file_hash: Option<Hash>,
    pub file_size: Option<u64>,
    /// sha256 of the uncompressed NAR.
    pub nar_hash: Hash,
    pub nar_size: u64,
    pub references: BTreeSet<StorePath>,
    pub deriver: Option<StorePath>,
    /// Old Nix wrote it; 2.8 still reads and prints it.
    pub system: Option<String>,
    /// `keyname:base64` texts, sorted and unique like Nix's `std::set`.
    pub sigs: BTreeSet<String>,
    pub ca: Option<ContentAddress>,
}

/// Why a `.narinfo` was rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NarInfoError {
    #[error("narinfo is not valid UTF-8")]
    NotUtf8,
    #[error("narinfo line {line}: expected 'Name: value'")]
    NoColon { line: usize },
    #[error("narinfo line {line}: missing the final newline")]
    NoNewline { line: usize },
    #[error("narinfo line {line}: field {field}: {reason}")]
    BadField {
        line: usize,
        field: &'static str,
        reason: String,
    },
    #[error("narinfo line {line}: field {field} appears more than once")]
    Duplicate { line: usize, field: &'static str },
    #[error("narinfo line {line}: field Compression: unknown compression method '{value}'")]
    UnknownCompression { line: usize, value: String },
    #[error("narinfo has no {0} field")]
    Missing(&'static str),
}

/// The fields Nix knows; anything else is skipped, as Nix does.
const FIELDS: [&str; 12] = [
    "StorePath",
    "URL",
    "Compression",
    "FileHash",
    "FileSize",
    "NarHash",
    "NarSize",
    "References",
    "Deriver",
    "System",
    "Sig",
    "CA",
];

impl NarInfo {
    /// Parses narinfo bytes (must be UTF-8).
    pub fn parse_bytes(bytes: &[u8], store_dir: &StoreDir) -> Result<Self, NarInfoError> {
        let text = std::str::from_utf8(bytes).map_err(|_| NarInfoError::NotUtf8)?;
        Self::parse(text, store_dir)
    }

    /// Parses narinfo text whose `StorePath` lies in `store_dir`.
    pub fn parse(text: &str, store_dir: &StoreDir) -> Result<Self, NarInfoError> {
        let mut p = Partial::default();
        let mut rest = text;
        let mut line = 0usize;
        while !rest.is_empty() {
            line += 1;
            let (l, after) = rest
                .split_once('\n')
                .ok_or(NarInfoError::NoNewline { line })?;
            rest = after;
            let (name, value) = l.split_once(':').ok_or(NarInfoError::NoColon { line })?;
            // Nix skips exactly one character after the colon (the space).
            let value = match value.strip_prefix(' ') {
                Some(v) => v,
                None if value.is_empty() => value,
                None => return Err(NarInfoError::NoColon { line }),
            };
            let Some(&field) = FIELDS.iter().find(|f| **f == name) else {
                continue;
            };
            p.field(line, field, value, store_dir)?;
        }
        p.finish()
    }

    /// The text Nix writes for this narinfo.
    ///
    /// A narinfo built by hand without `file_hash`/`file_size` prints without
    /// those lines (Nix itself always has them).
    pub fn to_text(&self, store_dir: &StoreDir) -> String {
        let mut s = String::with_capacity(512);
        let mut line = |k: &str, v: &str| {
            s.push_str(k);
            s.push_str(": ");
            s.push_str(v);
            s.push('\n');
        };
        line("StorePath", &store_dir.display(&self.store_path));
        line("URL", &self.url);
        line("Compression", self.compression.name());
        if let Some(h) = &self.file_hash {
            line("FileHash", &h.to_string());
        }
        if let Some(n) = self.file_size {
            line("FileSize", &n.to_string());
        }
        line("NarHash", &self.nar_hash.to_string());
        line("NarSize", &self.nar_size.to_string());
        let refs: Vec<String> = self.references.iter().map(|r| r.to_string()).collect();
        line("References", &refs.join(" "));
        if let Some(d) = &self.deriver {
            line("Deriver", &d.to_string());
        }
        if let Some(sys) = &self.system {
            line("System", sys);
        }
        for sig in &self.sigs {
            line("Sig", sig);
        }
        if let Some(ca) = &self.ca {
            line("CA", &ca.to_string());
        }
        s
    }

    /// Nix's `ValidPathInfo::fingerprint`, the message that `Sig`s sign.
    pub fn fingerprint(&self, store_dir: &StoreDir) -> String {
        signing::fingerprint(
            store_dir,
            &self.store_path,
            &self.nar_hash,
            self.nar_size,
            &self.references,
        )
    }

    /// Adds (or replaces) the signature of `key` over this narinfo.
    pub fn sign(&mut self, store_dir: &StoreDir, key: &SecretKey) {
        let sig = key.sign(self.fingerprint(store_dir).as_bytes());
        let prefix = format!("{}:", sig.key_name);
        self.sigs.retain(|s| !s.starts_with(&prefix));
        self.sigs.insert(sig.to_string());
    }

    /// How many of the signatures are valid under distinct `trusted` keys.
    pub fn count_valid_sigs(&self, store_dir: &StoreDir, trusted: &[PublicKey]) -> usize {
        let fp = self.fingerprint(store_dir);
        let mut names = BTreeSet::new();
        for text in &self.sigs {
            let Ok(sig) = text.parse::<Signature>() else {
                continue;
            };
            if trusted.iter().any(|k| k.verify(fp.as_bytes(), &sig)) {
                names.insert(sig.key_name);
            }
        }
        names.len()
    }

    /// Base name of the NAR file's path component, e.g. `nar/<h>.nar.xz`.
    pub fn hash_part(&self) -> String {
        self.store_path.hash_part()
    }
}

/// A narinfo being parsed: every field optional until `finish`.
#[derive(Default)]
struct Partial {
    store_path: Option<StorePath>,
    url: Option<String>,
    compression: Option<Compression>,
    file_hash: Option<Hash>,
    file_size: Option<u64>,
    nar_hash: Option<Hash>,
    nar_size: Option<u64>,
    references: Option<BTreeSet<StorePath>>,
    deriver: Option<Option<StorePath>>,
    system: Option<String>,
    sigs: BTreeSet<String>,
    ca: Option<ContentAddress>,
}

fn set_once<T>(
    slot: &mut Option<T>,
    v: T,
    line: usize,
    field: &'static str,
) -> Result<(), NarInfoError> {
    if slot.is_some() {
        return Err(NarInfoError::Duplicate { line, field });
    }
    *slot = Some(v);
    Ok(())
}

impl Partial {
    fn field(
        &mut self,
        line: usize,
        field: &'static str,
        value: &str,
        store_dir: &StoreDir,
    ) -> Result<(), NarInfoError> {
        let bad = |reason: String| NarInfoError::BadField {
            line,
            field,
            reason,
        };
        match field {
            "StorePath" => {
                let p = store_dir.parse(value).map_err(|e| bad(e.to_string()))?;
                set_once(&mut self.store_path, p, line, field)
            }
            "URL" => {
                if value.is_empty() {
                    return Err(bad("empty".into()));
                }
                set_once(&mut self.url, value.to_owned(), line, field)
            }
            "Compression" => {
                let c =
                    value
                        .parse::<Compression>()
                        .map_err(|_| NarInfoError::UnknownCompression {
                            line,
                            value: value.to_owned(),
                        })?;
                set_once(&mut self.compression, c, line, field)
            }
            "FileHash" => set_once(&mut self.file_hash, sha256(value, &bad)?, line, field),
            "NarHash" => set_once(&mut self.nar_hash, sha256(value, &bad)?, line, field),
            "FileSize" => set_once(&mut self.file_size, number(value, &bad)?, line, field),
            "NarSize" => {
                let n = number(value, &bad)?;
                if n == 0 {
                    return Err(bad("must not be zero".into()));
                }
                set_once(&mut self.nar_size, n, line, field)
            }
            "References" => {
                let mut refs = BTreeSet::new();
                for r in value.split(' ').filter(|r| !r.is_empty()) {
                    let p = StorePath::from_base_name(r).map_err(|e| bad(e.to_string()))?;
                    refs.insert(p);
                }
                set_once(&mut self.references, refs, line, field)
            }
            "Deriver" => {
                let d = if value == "unknown-deriver" {
                    None
                } else {
                    Some(StorePath::from_base_name(value).map_err(|e| bad(e.to_string()))?)
                };
                set_once(&mut self.deriver, d, line, field)
            }
            "System" => set_once(&mut self.system, value.to_owned(), line, field),
            "Sig" => {
                match value.split_once(':') {
                    Some((name, sig))
                        if !name.is_empty()
                            && !sig.is_empty()
                            && !value.contains(char::is_whitespace) => {}
                    _ => {
                        return Err(bad(format!(
                            "'{value}' is not of the form 'keyname:signature'"
                        )))
                    }
                }
                self.sigs.insert(value.to_owned());
                Ok(())
            }
            "CA" => {
                let ca = ContentAddress::parse(value).map_err(|e| bad(e.to_string()))?;
                set_once(&mut self.ca, ca, line, field)
            }
            _ => Ok(()),
        }
    }

    fn finish(self) -> Result<NarInfo, NarInfoError> {
        Ok(NarInfo {
            store_path: self.store_path.ok_or(NarInfoError::Missing("StorePath"))?,
            url: self.url.ok_or(NarInfoError::Missing("URL"))?,
            compression: self.compression.unwrap_or(Compression::Bzip2),
            file_hash: self.file_hash,
            file_size: self.file_size,
            nar_hash: self.nar_hash.ok_or(NarInfoError::Missing("NarHash"))?,
            nar_size: self.nar_size.ok_or(NarInfoError::Missing("NarSize"))?,
            references: self.references.unwrap_or_default(),
            deriver: self.deriver.flatten(),
            system: self.system,
            sigs: self.sigs,
            ca: self.ca,
        })
    }
}

fn sha256(value: &str, bad: &dyn Fn(String) -> NarInfoError) -> Result<Hash, NarInfoError> {
    let h = Hash::parse_prefixed(value).map_err(|e| bad(e.to_string()))?;
    if h.algo() != HashAlgo::Sha256 {
        return Err(bad(format!("only sha256 is supported, got {}", h.algo())));
    }
    Ok(h)
}

fn number(value: &str, bad: &dyn Fn(String) -> NarInfoError) -> Result<u64, NarInfoError> {
    // `u64::from_str` accepts a leading '+'; Nix's string2Int does too, but
    // nothing writes one, so insist on plain digits.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(format!("'{value}' is not a number")));
    }
    value
        .parse::<u64>()
        .map_err(|_| bad(format!("'{value}' is out of range")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by Nix 2.8 (`nix copy --to file://…?secret-key=…`), see
    /// shared/reference/nix-oracle-facts.md.
    const T2: &str = "StorePath: /nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-t2
URL: nar/063cns1b187wh1f95090c607xs3d2b5yw5l306m8d9q8m2wyv0cm.nar.xz
Compression: xz
FileHash: sha256:063cns1b187wh1f95090c607xs3d2b5yw5l306m8d9q8m2wyv0cm
FileSize: 312
NarHash: sha256:1jv3czbi825d33w44zflglchch541h2wpzm57maq64z7jviary9h
NarSize: 784
References: b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb z6nl0rwcz4lzvjlyhm1hx9m7697mhnnw-dep
Deriver: rziqp8dp0qlfygycfkpsq80mz2zmdf19-t2.drv
Sig: b3-oracle-1:7gZK7PAP6xPd40XnoQ5YBXkwtz4GrejAKfep5IH6a2qJAoLxGaPn1YkLiAKfw9buqF8DC9nBGqhR43pxLdqrBA==
";
    const T2_KEY: &str = "b3-oracle-1:RvS7rYKiz9tnyxZyElKeco1R86cVVtwiTxqwB/XeSVY=";

    fn dir() -> StoreDir {
        StoreDir::default()
    }

    #[test]
    fn nix_written_narinfo_round_trips_byte_identically() {
        let info = NarInfo::parse(T2, &dir()).unwrap();
        assert_eq!(info.compression, Compression::Xz);
        assert_eq!(info.nar_size, 784);
        assert_eq!(info.file_size, Some(312));
        assert_eq!(info.references.len(), 2);
        assert_eq!(
            info.deriver.as_ref().unwrap().to_string(),
            "rziqp8dp0qlfygycfkpsq80mz2zmdf19-t2.drv"
        );
        assert_eq!(info.to_text(&dir()), T2);
    }

    #[test]
    fn nix_signature_verifies_over_the_fingerprint() {
        let info = NarInfo::parse(T2, &dir()).unwrap();
        assert_eq!(
            info.fingerprint(&dir()),
            "1;/nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-t2;\
             sha256:1jv3czbi825d33w44zflglchch541h2wpzm57maq64z7jviary9h;784;\
             /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb,\
             /nix/store/z6nl0rwcz4lzvjlyhm1hx9m7697mhnnw-dep"
        );
        let key: PublicKey = T2_KEY.parse().unwrap();
        assert_eq!(info.count_valid_sigs(&dir(), std::slice::from_ref(&key)), 1);

        // Any change to a signed field breaks it.
        let mut tampered = info.clone();
        tampered.nar_size += 1;
        assert_eq!(tampered.count_valid_sigs(&dir(), &[key]), 0);
    }

    #[test]
    fn ca_path_without_deriver_and_empty_references() {
        let text = "StorePath: /nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb
URL: nar/1xx.nar
Compression: none
FileHash: sha256:0m54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x
FileSize: 1982928
NarHash: sha256:0m54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x
NarSize: 1982928
References: 
CA: fixed:r:sha256:0m54h46i7lwk20d2vihhq0fq7ns5ypg44viy8bxxnfqpz3y9a10x
";
        let info = NarInfo::parse(text, &dir()).unwrap();
        assert!(info.references.is_empty());
        assert!(info.deriver.is_none());
        assert!(info.ca.is_some());
        assert_eq!(info.to_text(&dir()), text);
    }

    #[test]
    fn sigs_print_sorted_and_unique_like_nix() {
        let mut info = NarInfo::parse(T2, &dir()).unwrap();
        let other = "a-key:7gZK7PAP6xPd40XnoQ5YBXkwtz4GrejAKfep5IH6a2qJAoLxGaPn1YkLiAKfw9buqF8DC9nBGqhR43pxLdqrBA==";
        info.sigs.insert(other.to_owned());
        info.sigs.insert(other.to_owned());
        // An undecodable signature is kept (as Nix keeps it) but never verifies.
        info.sigs.insert("junk:AAAA".to_owned());
        let key: PublicKey = T2_KEY.parse().unwrap();
        assert_eq!(info.count_valid_sigs(&dir(), &[key]), 1);
        let text = info.to_text(&dir());
        let sig_lines: Vec<&str> = text.lines().filter(|l| l.starts_with("Sig: ")).collect();
        assert_eq!(sig_lines.len(), 3);
        assert!(sig_lines[0].starts_with("Sig: a-key:"));
        assert!(sig_lines[1].starts_with("Sig: b3-oracle-1:"));
        assert_eq!(sig_lines[2], "Sig: junk:AAAA");
    }

    #[test]
    fn missing_compression_means_bzip2_and_other_hash_forms_are_accepted() {
        let text = "StorePath: /nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-t2
URL: nar/x.nar.bz2
NarHash: sha256-MPms4pbnE4NVPaX+ywUMpEAGGX3UfUL4GK0IFNdnY8s=
NarSize: 784
Deriver: unknown-deriver
FutureField: ignored
";
        let info = NarInfo::parse(text, &dir()).unwrap();
        assert_eq!(info.compression, Compression::Bzip2);
        assert_eq!(
            info.nar_hash.to_string(),
            "sha256:1jv3czbi825d33w44zflglchch541h2wpzm57maq64z7jviary9h"
        );
        assert!(info.deriver.is_none());
        assert!(info.references.is_empty());
        assert!(info.file_hash.is_none());
    }

    fn err(text: &str) -> NarInfoError {
        NarInfo::parse(text, &dir()).unwrap_err()
    }

    #[test]
    fn errors_name_the_line_and_field() {
        let e = err("StorePath: /nix/store/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-t2\nNarSize: 12x\n");
        assert!(
            matches!(
                e,
                NarInfoError::BadField {
                    line: 2,
                    field: "NarSize",
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("line 2: field NarSize"), "{e}");

        let e = err("StorePath: /tmp/ap8llpmkx0n1cn5b6h321cfd1ggqc6bg-t2\n");
        assert!(matches!(
            e,
            NarInfoError::BadField {
                line: 1,
                field: "StorePath",
                ..
            }
        ));

        let e = err("URL: x\nNarHash: sha256:tooshort\n");
        assert!(matches!(
            e,
            NarInfoError::BadField {
                line: 2,
                field: "NarHash",
                ..
            }
        ));

        let e = err("NarHash: md5:d41d8cd98f00b204e9800998ecf8427e\n");
        assert!(e.to_string().contains("only sha256"), "{e}");

        let e = err("URL: x\nReferences: not-a-store-path\n");
        assert!(matches!(
            e,
            NarInfoError::BadField {
                line: 2,
                field: "References",
                ..
            }
        ));

        let e = err("Sig: nokey\n");
        assert!(matches!(
            e,
            NarInfoError::BadField {
                line: 1,
                field: "Sig",
                ..
            }
        ));

        let e = err("CA: fixed:bogus\n");
        assert!(matches!(
            e,
            NarInfoError::BadField {
                line: 1,
                field: "CA",
                ..
            }
        ));

        let e = err("URL: a\nCompression: br\n");
        assert_eq!(
            e,
            NarInfoError::UnknownCompression {
                line: 2,
                value: "br".into()
            }
        );

        assert_eq!(
            err("URL: a\nURL: b\n"),
            NarInfoError::Duplicate {
                line: 2,
                field: "URL"
            }
        );
        assert_eq!(
            err("URL: a\nno colon here\n"),
            NarInfoError::NoColon { line: 2 }
        );
        assert_eq!(err("URL: a\nURL: b"), NarInfoError::NoNewline { line: 2 });
        assert_eq!(err("URL:x\n"), NarInfoError::NoColon { line: 1 });
        assert_eq!(
            NarInfo::parse_bytes(b"URL: \xff\n", &dir()).unwrap_err(),
            NarInfoError::NotUtf8
        );
    }

    #[test]
    fn required_fields_are_checked() {
        let full = T2.to_owned();
        for (field, missing) in [
            ("StorePath", "StorePath"),
            ("URL", "URL"),
            ("NarHash", "NarHash"),
            ("NarSize", "NarSize"),
        ] {
            let text: String = full
                .lines()
                .filter(|l| !l.starts_with(&format!("{field}:")))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(err(&text), NarInfoError::Missing(missing));
        }
        let e = err(&T2.replace("NarSize: 784", "NarSize: 0"));
        assert!(e.to_string().contains("must not be zero"), "{e}");
    }

    #[test]
    fn sign_then_verify_with_own_key() {
        let mut info = NarInfo::parse(T2, &dir()).unwrap();
        info.sigs.clear();
        let sk = SecretKey::generate("test-1").unwrap();
        info.sign(&dir(), &sk);
        info.sign(&dir(), &sk); // re-signing replaces, not duplicates
        assert_eq!(info.sigs.len(), 1);
        assert_eq!(info.count_valid_sigs(&dir(), &[sk.public()]), 1);
        let other = SecretKey::generate("test-1").unwrap().public();
        assert_eq!(info.count_valid_sigs(&dir(), &[other]), 0);
        // Reparse keeps the signature valid.
        let again = NarInfo::parse(&info.to_text(&dir()), &dir()).unwrap();
        assert_eq!(again.count_valid_sigs(&dir(), &[sk.public()]), 1);
    }
}
