//! What the evaluator's `derivationStrict` does once the attributes are
//! collected: decide the output paths and the `.drv` path.
//!
//! Mirrors Nix 2.8: a fixed-output derivation gets `makeFixedOutputPath`
//! for `out`; floating/impure outputs get hash placeholders; an
//! input-addressed one first sets its outputs (and the env vars named after
//! them) to empty, hashes that masked derivation modulo its inputs, then
//! computes `output:<name>` paths and writes them into outputs and env. The
//! result carries the ATerm, the drv path and the unmasked modulo hash that
//! Nix caches under the drv path for later derivations that depend on it.

use std::collections::BTreeSet;

use super::hashing::{hash_derivation_modulo, DrvHash, DrvHashKind};
use super::{Derivation, DerivationError, DerivationOutput};
use crate::hash::{Hash, HashAlgo};
use crate::path::{
    check_name, ContentAddress, ContentAddressMethod, FileIngestionMethod, StoreDir, StorePath,
};

/// How the outputs of a new derivation are addressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputHashing {
    /// The default: paths from the derivation's modulo hash.
    InputAddressed,
    /// `outputHash` given: one output `out` with a declared content hash.
    Fixed(ContentAddress),
    /// `__contentAddressed = true` (experimental).
    Floating {
        method: ContentAddressMethod,
        algo: HashAlgo,
    },
    /// `__impure = true` (experimental).
    Impure {
        method: ContentAddressMethod,
        algo: HashAlgo,
    },
}

/// The attributes of a `derivation` call that decide how outputs are addressed.
#[derive(Debug, Clone, Copy, Default)]
pub struct OutputHashAttrs<'a> {
    pub output_hash: Option<&'a str>,
    pub output_hash_algo: Option<&'a str>,
    pub output_hash_mode: Option<&'a str>,
    /// `__contentAddressed`.
    pub content_addressed: bool,
    /// `__impure`.
    pub impure: bool,
}

impl OutputHashing {
    /// Decides the addressing as Nix 2.8's `derivationStrict`: `outputHash`
    /// (possibly SRI or `algo:`-prefixed; empty means all zeros) makes a
    /// fixed output, flat unless `outputHashMode = "recursive"`; an unknown
    /// `outputHashAlgo` counts as absent; floating/impure default to
    /// recursive sha256.
    pub fn from_nix_attrs(a: OutputHashAttrs<'_>) -> Result<Self, DerivationError> {
        let mode = match a.output_hash_mode {
            None => None,
            Some("recursive") => Some(FileIngestionMethod::Recursive),
            Some("flat") => Some(FileIngestionMethod::Flat),
            Some(other) => {
                return Err(DerivationError::Invalid(format!(
                    "invalid value '{other}' for 'outputHashMode' attribute"
                )))
            }
        };
        let algo = a.output_hash_algo.and_then(HashAlgo::from_name);
        if let Some(h) = a.output_hash {
            let hash = parse_hash_allow_empty(h, algo)?;
            return Ok(OutputHashing::Fixed(ContentAddress {
                method: ContentAddressMethod::Fixed(mode.unwrap_or(FileIngestionMethod::Flat)),
                hash,
            }));
        }
        if a.content_addressed && a.impure {
            return Err(DerivationError::Invalid(
                "derivation cannot be both content-addressed and impure".into(),
            ));
        }
        let method = ContentAddressMethod::Fixed(mode.unwrap_or(FileIngestionMethod::Recursive));
        let algo = algo.unwrap_or(HashAlgo::Sha256);
        Ok(if a.impure {
            OutputHashing::Impure { method, algo }
        } else if a.content_addressed {
            OutputHashing::Floating { method, algo }
        } else {
            OutputHashing::InputAddressed
        })
    }
}

/// Nix's `newHashAllowEmpty`: an empty string is the all-zero hash of the
/// given algorithm (Nix warns and then reports the real hash on mismatch).
pub fn parse_hash_allow_empty(s: &str, algo: Option<HashAlgo>) -> Result<Hash, DerivationError> {
    if s.is_empty() {
        let algo = algo.ok_or_else(|| {
            DerivationError::Invalid("empty hash requires explicit hash type".into())
        })?;
        return Ok(Hash::zero(algo));
    }
    Ok(Hash::parse_any(s, algo)?)
}

/// A derivation ready to be written: its text, path and modulo hash.
#[derive(Debug, Clone)]
pub struct Instantiated {
    pub drv: Derivation,
    pub drv_path: StorePath,
    /// The `.drv` file contents (exact whenever `drv.env_bytes` is empty,
    /// as for every derivation the evaluator makes; otherwise write
    /// `drv.to_aterm_bytes`).
    pub aterm: String,
    /// `hashDerivationModulo(drv, maskOutputs = false)`: cache it under
    /// `drv_path` (e.g. in a [`super::DrvHashCache`]).
    pub hash: DrvHash,
}

/// Nix's `hashPlaceholder`: `/<nix32 of sha256("nix-output:<output>")>`,
/// what `builtins.placeholder` returns and floating outputs get in env.
pub fn hash_placeholder(output: &str) -> String {
    let h = Hash::digest(HashAlgo::Sha256, format!("nix-output:{output}").as_bytes());
    format!("/{}", h.to_nix32())
}

/// Fills the outputs of `drv` (whose env, args, builder, system and inputs
/// are set) for the given output names, then computes its path.
///
/// `input_hash` returns the unmasked modulo hash of each input derivation
/// (see [`super::DrvHashCache::path_hash`] or `get`).
pub fn instantiate<F>(
    mut drv: Derivation,
    drv_name: &str,
    output_names: &BTreeSet<String>,
    hashing: OutputHashing,
    store_dir: &StoreDir,
    mut input_hash: F,
) -> Result<Instantiated, DerivationError>
where
    F: FnMut(&StorePath) -> Result<DrvHash, DerivationError>,
{
    if drv_name.ends_with(".drv") {
        return Err(DerivationError::NameEndsInDrv);
    }
    check_name(drv_name)?;
    if output_names.is_empty() {
        return Err(DerivationError::NoOutputs);
    }
    drv.outputs.clear();
    match hashing {
        OutputHashing::Fixed(ca) => {
            if output_names.len() != 1 || !output_names.contains("out") {
                return Err(DerivationError::FixedOutputMultipleOutputs);
            }
            let path = store_dir.make_path_from_ca(drv_name, &ca, &BTreeSet::new(), false)?;
            drv.env.insert("out".into(), store_dir.display(&path));
            drv.outputs
                .insert("out".into(), DerivationOutput::CaFixed { ca, path });
        }
        OutputHashing::Floating { method, algo } | OutputHashing::Impure { method, algo } => {
            let impure = matches!(hashing, OutputHashing::Impure { .. });
            for o in output_names {
                drv.env.insert(o.clone(), hash_placeholder(o));
                let out = if impure {
                    DerivationOutput::Impure { method, algo }
                } else {
                    DerivationOutput::CaFloating { method, algo }
                };
                drv.outputs.insert(o.clone(), out);
            }
        }
        OutputHashing::InputAddressed => {
            for o in output_names {
                drv.env.insert(o.clone(), String::new());
                drv.outputs.insert(o.clone(), DerivationOutput::Deferred);
            }
            let h = hash_derivation_modulo(&drv, store_dir, true, &mut input_hash)?;
            if h.kind == DrvHashKind::Regular {
                for o in output_names {
                    let oh = h.hashes.get(o).ok_or_else(|| {
                        DerivationError::Invalid(format!("no modulo hash for output '{o}'"))
                    })?;
                    let path = store_dir.make_output_path(o, oh, drv_name)?;
                    drv.env.insert(o.clone(), store_dir.display(&path));
                    drv.outputs
                        .insert(o.clone(), DerivationOutput::InputAddressed(path));
                }
            }
        }
    }
    let aterm_bytes = drv.to_aterm_bytes(store_dir);
    let drv_path =
        store_dir.compute_text_path(&format!("{drv_name}.drv"), &aterm_bytes, &drv.references())?;
    let hash = hash_derivation_modulo(&drv, store_dir, false, &mut input_hash)?;
    Ok(Instantiated {
        drv,
        drv_path,
        aterm: String::from_utf8(aterm_bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        hash,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::path::FileIngestionMethod;

    fn no_inputs(p: &StorePath) -> Result<DrvHash, DerivationError> {
        Err(DerivationError::Invalid(format!("unexpected input {p}")))
    }

    fn base(name: &str, builder: &str) -> Derivation {
        let mut d = Derivation {
            system: "x86_64-linux".into(),
            builder: builder.into(),
            ..Default::default()
        };
        d.env.insert("builder".into(), builder.into());
        d.env.insert("name".into(), name.into());
        d.env.insert("system".into(), "x86_64-linux".into());
        d
    }

    fn outs(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hello_matches_nix() {
        // derivation { name = "hello"; system = "x86_64-linux"; builder = "/bin/sh"; args = ["-c" "echo hi > $out"]; }
        let sd = StoreDir::default();
        let mut d = base("hello", "/bin/sh");
        d.args = vec!["-c".into(), "echo hi > $out".into()];
        let i = instantiate(
            d,
            "hello",
            &outs(&["out"]),
            OutputHashing::InputAddressed,
            &sd,
            no_inputs,
        )
        .unwrap();
        assert_eq!(
            sd.display(&i.drv_path),
            "/nix/store/76w21n1f03fs5kw8fnffphx7qrqffw6r-hello.drv"
        );
        assert_eq!(
            i.drv.env["out"],
            "/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"
        );
        assert_eq!(
            i.aterm,
            r#"Derive([("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello","","")],[],[],"x86_64-linux","/bin/sh",["-c","echo hi > $out"],[("builder","/bin/sh"),("name","hello"),("out","/nix/store/mjs27ix6ig2bkbi3s3sm470vrv4lf7ic-hello"),("system","x86_64-linux")])"#
        );
        // Recomputing from the finished derivation gives the same paths.
        let paths = i.drv.compute_output_paths(&sd, "hello", no_inputs).unwrap();
        assert_eq!(paths["out"].as_ref(), i.drv.outputs["out"].path());
        assert_eq!(i.drv.path(&sd, "hello").unwrap(), i.drv_path);
    }

    #[test]
    fn multi_output_dev_matches_nix() {
        let sd = StoreDir::default();
        let mut d = base("multi", "x");
        d.env.insert("outputs".into(), "out dev lib".into());
        let i = instantiate(
            d,
            "multi",
            &outs(&["out", "dev", "lib"]),
            OutputHashing::InputAddressed,
            &sd,
            no_inputs,
        )
        .unwrap();
        assert_eq!(
            i.drv.env["dev"],
            "/nix/store/2va9ahrw6r0qiijy28ny2ki19r5169m9-multi-dev"
        );
    }

    #[test]
    fn fixed_output_flat_and_recursive_match_nix() {
        let sd = StoreDir::default();
        let h = Hash::digest(HashAlgo::Sha256, b"hello\n");
        for (method, expected) in [
            (
                FileIngestionMethod::Flat,
                "/nix/store/09xxzzxfl30gihclrc0q5vfmj0iwipml-fo",
            ),
            (
                FileIngestionMethod::Recursive,
                "/nix/store/8iqi0hyc743qh1sz7dqcdcmfg6cn88na-fo",
            ),
        ] {
            let ca = ContentAddress {
                method: ContentAddressMethod::Fixed(method),
                hash: h,
            };
            let i = instantiate(
                base("fo", "x"),
                "fo",
                &outs(&["out"]),
                OutputHashing::Fixed(ca),
                &sd,
                no_inputs,
            )
            .unwrap();
            assert_eq!(i.drv.env["out"], expected);
            assert_eq!(i.drv.kind().unwrap(), super::super::DerivationKind::Fixed);
            i.drv.check_fixed_output_paths(&sd, "fo").unwrap();
        }
        let ca = ContentAddress {
            method: ContentAddressMethod::Fixed(FileIngestionMethod::Flat),
            hash: h,
        };
        assert!(matches!(
            instantiate(
                base("fo", "x"),
                "fo",
                &outs(&["out", "dev"]),
                OutputHashing::Fixed(ca),
                &sd,
                no_inputs
            ),
            Err(DerivationError::FixedOutputMultipleOutputs)
        ));
    }

    #[test]
    fn text_hashed_fixed_output_is_a_text_path() {
        // `outputHashMode = "text"` (newer Nix; 2.8 refuses it): the output is
        // the text path of its declared contents, and the ATerm says `text:sha256`.
        let sd = StoreDir::default();
        let ca = ContentAddress {
            method: ContentAddressMethod::Text,
            hash: Hash::digest(HashAlgo::Sha256, b"bar"),
        };
        let i = instantiate(
            base("foo", "x"),
            "foo",
            &outs(&["out"]),
            OutputHashing::Fixed(ca),
            &sd,
            no_inputs,
        )
        .unwrap();
        let expected = sd
            .compute_text_path("foo", b"bar", &BTreeSet::new())
            .unwrap();
        assert_eq!(i.drv.outputs["out"].path(), Some(&expected));
        assert_eq!(
            sd.display(&expected),
            "/nix/store/vxjiwkjkn7x4079qvh1jkl5pn05j2aw0-foo"
        );
        assert!(i.aterm.contains(&format!(
            r#"("out","{}","text:sha256","{}")"#,
            sd.display(&expected),
            ca.hash.to_base16()
        )));
        let back = Derivation::from_aterm(&sd, i.aterm.as_bytes()).unwrap();
        assert_eq!(back, i.drv);
        back.check_fixed_output_paths(&sd, "foo").unwrap();
        let sha1 = ContentAddress {
            method: ContentAddressMethod::Text,
            hash: Hash::digest(HashAlgo::Sha1, b"bar"),
        };
        assert!(instantiate(
            base("foo", "x"),
            "foo",
            &outs(&["out"]),
            OutputHashing::Fixed(sha1),
            &sd,
            no_inputs,
        )
        .is_err());
    }

    #[test]
    fn output_hashing_from_attrs_follows_nix() {
        let attrs =
            |h: Option<&'static str>, algo: Option<&'static str>, mode: Option<&'static str>| {
                OutputHashing::from_nix_attrs(OutputHashAttrs {
                    output_hash: h,
                    output_hash_algo: algo,
                    output_hash_mode: mode,
                    ..Default::default()
                })
            };
        let hello = Hash::digest(HashAlgo::Sha256, b"hello\n");
        let flat = ContentAddressMethod::Fixed(FileIngestionMethod::Flat);
        let rec = ContentAddressMethod::Fixed(FileIngestionMethod::Recursive);
        assert_eq!(
            attrs(
                Some("sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="),
                None,
                None
            )
            .unwrap(),
            OutputHashing::Fixed(ContentAddress {
                method: flat,
                hash: hello
            })
        );
        // An unknown algo counts as absent; the SRI prefix still names it.
        assert_eq!(
            attrs(
                Some("sha256-WJG1tSLV3whtD/CxEPvZ0hu0/HFjrzTQgoai6Eb2vgM="),
                Some("bogus"),
                Some("recursive")
            )
            .unwrap(),
            OutputHashing::Fixed(ContentAddress {
                method: rec,
                hash: hello
            })
        );
        assert_eq!(
            attrs(Some(""), Some("sha1"), None).unwrap(),
            OutputHashing::Fixed(ContentAddress {
                method: flat,
                hash: Hash::zero(HashAlgo::Sha1)
            })
        );
        assert!(attrs(Some(""), None, None).is_err());
        assert!(attrs(
            Some("0000000000000000000000000000000000000000000000000000000000000000"),
            None,
            None
        )
        .is_err());
        assert!(attrs(
            Some("0000000000000000000000000000000000000000000000000000000000000000"),
            Some("sha256"),
            Some("text")
        )
        .is_err());
        assert_eq!(
            attrs(None, Some("sha1"), Some("flat")).unwrap(),
            OutputHashing::InputAddressed
        );
        assert_eq!(
            OutputHashing::from_nix_attrs(OutputHashAttrs {
                content_addressed: true,
                ..Default::default()
            })
            .unwrap(),
            OutputHashing::Floating {
                method: rec,
                algo: HashAlgo::Sha256
            }
        );
        assert!(OutputHashing::from_nix_attrs(OutputHashAttrs {
            content_addressed: true,
            impure: true,
            ..Default::default()
        })
        .is_err());
    }

    #[test]
    fn rejects_bad_names() {
        let sd = StoreDir::default();
        assert!(matches!(
            instantiate(
                base("a.drv", "x"),
                "a.drv",
                &outs(&["out"]),
                OutputHashing::InputAddressed,
                &sd,
                no_inputs
            ),
            Err(DerivationError::NameEndsInDrv)
        ));
        assert!(matches!(
            instantiate(
                base("a b", "x"),
                "a b",
                &outs(&["out"]),
                OutputHashing::InputAddressed,
                &sd,
                no_inputs
            ),
            Err(DerivationError::StorePath(_))
        ));
    }

    #[test]
    fn floating_outputs_get_placeholders() {
        let sd = StoreDir::default();
        let i = instantiate(
            base("ca", "x"),
            "ca",
            &outs(&["out"]),
            OutputHashing::Floating {
                method: ContentAddressMethod::Fixed(FileIngestionMethod::Recursive),
                algo: HashAlgo::Sha256,
            },
            &sd,
            no_inputs,
        )
        .unwrap();
        // `builtins.placeholder "out"` in Nix.
        assert_eq!(
            i.drv.env["out"],
            "/1rz4g4znpzjwh1xymhjpm42vipw92pr73vdgl6xs1hycac8kf2n9"
        );
        assert_eq!(i.hash.kind, DrvHashKind::Deferred);
        assert!(i.aterm.contains(r#"("out","","r:sha256","")"#));
    }

    #[test]
    fn depends_on_input_hash_from_callback() {
        let sd = StoreDir::default();
        let dep = instantiate(
            base("dep", "x"),
            "dep",
            &outs(&["out"]),
            OutputHashing::InputAddressed,
            &sd,
            no_inputs,
        )
        .unwrap();
        let mut d = base("top", "x");
        d.input_drvs.insert(dep.drv_path.clone(), outs(&["out"]));
        d.env.insert("dep".into(), dep.drv.env["out"].clone());
        let cache: BTreeMap<StorePath, DrvHash> =
            BTreeMap::from([(dep.drv_path.clone(), dep.hash.clone())]);
        let top = instantiate(
            d.clone(),
            "top",
            &outs(&["out"]),
            OutputHashing::InputAddressed,
            &sd,
            |p| {
                cache
                    .get(p)
                    .cloned()
                    .ok_or_else(|| DerivationError::Invalid("missing".into()))
            },
        )
        .unwrap();
        // A different input hash changes the output path.
        let other = Hash::digest(HashAlgo::Sha256, b"x");
        let top2 = instantiate(
            d,
            "top",
            &outs(&["out"]),
            OutputHashing::InputAddressed,
            &sd,
            |_| {
                Ok(DrvHash {
                    hashes: BTreeMap::from([("out".to_owned(), other)]),
                    kind: DrvHashKind::Regular,
                })
            },
        )
        .unwrap();
        assert_ne!(top.drv.env["out"], top2.drv.env["out"]);
        assert!(top.aterm.contains(&sd.display(&dep.drv_path)));
    }
}
