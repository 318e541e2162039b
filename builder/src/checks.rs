//! Output checks after a build, as Nix 2.8 does them before registering:
//! `allowedReferences`, `allowedRequisites`, `disallowedReferences`,
//! `disallowedRequisites` (whitespace-separated in the derivation's env), or
//! with `__structuredAttrs` the per-output `outputChecks.<out>` object (which
//! adds `maxSize`, `maxClosureSize` and `ignoreSelfRefs`).
//!
//! A reference specifier is a store path or the name of one of the
//! derivation's outputs. "Requisites" are the closure, walked through the
//! just-built outputs (not registered yet) and then through the store.
//! Messages are Nix's, word for word (checked against Nix 2.8).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use b3_store::derivation::Derivation;
use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use b3_store::traits::{StoreError, ValidPathInfo};

/// What one output is checked against.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checks {
    /// Leave the output itself out of its requisites (always for the
    /// env form; `ignoreSelfRefs` in `outputChecks`).
    pub ignore_self_refs: bool,
    pub max_size: Option<u64>,
    pub max_closure_size: Option<u64>,
    pub allowed_references: Option<Vec<String>>,
    pub allowed_requisites: Option<Vec<String>>,
    pub disallowed_references: Option<Vec<String>>,
    pub disallowed_requisites: Option<Vec<String>>,
}

impl Checks {
    fn is_empty(&self) -> bool {
        self.max_size.is_none()
            && self.max_closure_size.is_none()
            && self.allowed_references.is_none()
            && self.allowed_requisites.is_none()
            && self.disallowed_references.is_none()
            && self.disallowed_requisites.is_none()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error("output '{path}' is not allowed to refer to the following paths:{list}")]
    BadReferences { path: String, list: String },
    #[error("path '{path}' is too large at {size} bytes; limit is {limit} bytes")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("closure of path '{path}' is too large at {size} bytes; limit is {limit} bytes")]
    ClosureTooLarge { path: String, size: u64, limit: u64 },
    #[error("derivation contains an illegal reference specifier '{0}'")]
    BadSpecifier(String),
    #[error("the derivation's outputChecks are malformed: {0}")]
    Malformed(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn words(s: &str) -> Vec<String> {
    s.split([' ', '\t', '\n', '\r'])
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

fn json_strings(v: &serde_json::Value, what: &str) -> Result<Vec<String>, CheckError> {
    let arr = v
        .as_array()
        .ok_or_else(|| CheckError::Malformed(format!("'{what}' is not a list")))?;
    arr.iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| CheckError::Malformed(format!("'{what}' has a non-string item")))
        })
        .collect()
}

/// The checks for each output of `drv` (outputs without checks are absent).
pub fn output_checks(drv: &Derivation) -> Result<BTreeMap<String, Checks>, CheckError> {
    let mut out = BTreeMap::new();
    if let Some(json) = drv.env.get("__json") {
        let attrs: serde_json::Value = serde_json::from_str(json)
            .map_err(|e| CheckError::Malformed(format!("__json: {e}")))?;
        let Some(per_output) = attrs.get("outputChecks") else {
            return Ok(out);
        };
        for name in drv.outputs.keys() {
            let Some(obj) = per_output.get(name) else {
                continue;
            };
            let mut c = Checks::default();
            if let Some(v) = obj.get("ignoreSelfRefs") {
                c.ignore_self_refs = v.as_bool().ok_or_else(|| {
                    CheckError::Malformed("'ignoreSelfRefs' is not a Boolean".into())
                })?;
            }
            let size = |k: &str| -> Result<Option<u64>, CheckError> {
                obj.get(k)
                    .map(|v| {
                        v.as_u64().ok_or_else(|| {
                            CheckError::Malformed(format!("'{k}' is not an unsigned integer"))
                        })
                    })
                    .transpose()
            };
            c.max_size = size("maxSize")?;
            c.max_closure_size = size("maxClosureSize")?;
            let list = |k: &str| obj.get(k).map(|v| json_strings(v, k)).transpose();
            c.allowed_references = list("allowedReferences")?;
            c.allowed_requisites = list("allowedRequisites")?;
            c.disallowed_references = list("disallowedReferences")?;
            c.disallowed_requisites = list("disallowedRequisites")?;
            out.insert(name.clone(), c);
        }
    } else {
        let get = |k: &str| drv.env.get(k).map(|s| words(s));
        let c = Checks {
            ignore_self_refs: true,
            allowed_references: get("allowedReferences"),
            allowed_requisites: get("allowedRequisites"),
            disallowed_references: get("disallowedReferences"),
            disallowed_requisites: get("disallowedRequisites"),
            ..Checks::default()
        };
        if !c.is_empty() {
            for name in drv.outputs.keys() {
                out.insert(name.clone(), c.clone());
            }
        }
    }
    Ok(out)
}

/// Store paths named by `specs`: store paths as they are, output names
/// as the output's path.
fn resolve_specs(
    store: &LocalStore,
    drv: &Derivation,
    specs: &[String],
) -> Result<BTreeSet<StorePath>, CheckError> {
    let mut set = BTreeSet::new();
    for s in specs {
        if let Ok(p) = store.store_dir().parse(s) {
            set.insert(p);
        } else if let Some(p) = drv.outputs.get(s).and_then(|o| o.path()) {
            set.insert(p.clone());
        } else {
            return Err(CheckError::BadSpecifier(s.clone()));
        }
    }
    Ok(set)
}

/// Checks the just-built outputs `infos` (output name → info with
/// references) against the derivation's output checks.
pub fn check_outputs(
    store: &LocalStore,
    drv: &Derivation,
    infos: &BTreeMap<String, ValidPathInfo>,
) -> Result<(), CheckError> {
    let checks = output_checks(drv)?;
    if checks.is_empty() {
        return Ok(());
    }
    let by_path: BTreeMap<&StorePath, &ValidPathInfo> =
        infos.values().map(|i| (&i.path, i)).collect();
    let closure = |start: &StorePath| -> Result<(BTreeSet<StorePath>, u64), CheckError> {
        let mut done = BTreeSet::new();
        let mut size = 0u64;
        let mut left = VecDeque::from([start.clone()]);
        while let Some(p) = left.pop_front() {
            if !done.insert(p.clone()) {
                continue;
            }
            let info = match by_path.get(&p) {
                Some(i) => (*i).clone(),
                None => store
                    .query_path_info_sync(&p)?
                    .ok_or_else(|| StoreError::InvalidPath(store.print_path(&p)))?,
            };
            size += info.nar_size;
            left.extend(info.references.iter().cloned());
        }
        Ok((done, size))
    };
    for (name, c) in &checks {
        let Some(info) = infos.get(name) else {
            continue;
        };
        let shown = store.print_path(&info.path);
        if let Some(limit) = c.max_size {
            if info.nar_size > limit {
                return Err(CheckError::TooLarge {
                    path: shown,
                    size: info.nar_size,
                    limit,
                });
            }
        }
        if let Some(limit) = c.max_closure_size {
            let (_, size) = closure(&info.path)?;
            if size > limit {
                return Err(CheckError::ClosureTooLarge {
                    path: shown,
                    size,
                    limit,
                });
            }
        }
        let rules = [
            (&c.allowed_references, true, false),
            (&c.allowed_requisites, true, true),
            (&c.disallowed_references, false, false),
            (&c.disallowed_requisites, false, true),
        ];
        for (specs, allowed, recursive) in rules {
            let Some(specs) = specs else { continue };
            let spec = resolve_specs(store, drv, specs)?;
            let mut used = if recursive {
                closure(&info.path)?.0
            } else {
                info.references.clone()
            };
            if recursive && c.ignore_self_refs {
                used.remove(&info.path);
            }
            let bad: BTreeSet<String> = used
                .iter()
                .filter(|p| spec.contains(*p) != allowed)
                .map(|p| store.print_path(p))
                .collect();
            if !bad.is_empty() {
                // Nix's error renderer indents continuation lines by 9.
                let list: String = bad.iter().map(|p| format!("\n         {p}")).collect();
                return Err(CheckError::BadReferences { path: shown, list });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use b3_store::derivation::aterm;
    use b3_store::path::StoreDir;

    fn drv(env: &[(&str, &str)]) -> Derivation {
        let mut env_s = String::new();
        for (i, (k, v)) in env.iter().enumerate() {
            if i > 0 {
                env_s.push(',');
            }
            env_s.push_str(&format!(
                "(\"{k}\",\"{}\")",
                v.replace('"', "\\\"").replace('\n', "\\n")
            ));
        }
        let text = format!(
            "Derive([(\"dev\",\"/nix/store/22222222222222222222222222222222-x-dev\",\"\",\"\"),(\"out\",\"/nix/store/11111111111111111111111111111111-x\",\"\",\"\")],[],[],\"x86_64-linux\",\"/bin/sh\",[],[{env_s}])"
        );
        aterm::parse(&StoreDir::default(), text.as_bytes()).unwrap()
    }

    #[test]
    fn env_form_applies_to_every_output_and_ignores_self_in_requisites() {
        let d = drv(&[
            (
                "allowedReferences",
                " out\n/nix/store/33333333333333333333333333333333-y ",
            ),
            ("disallowedRequisites", "dev"),
        ]);
        let c = output_checks(&d).unwrap();
        assert_eq!(c.len(), 2);
        assert!(c["out"].ignore_self_refs);
        assert_eq!(
            c["out"].allowed_references.as_deref(),
            Some(
                &[
                    "out".to_string(),
                    "/nix/store/33333333333333333333333333333333-y".to_string()
                ][..]
            )
        );
        assert_eq!(
            c["dev"].disallowed_requisites.as_deref(),
            Some(&["dev".to_string()][..])
        );
        assert!(output_checks(&drv(&[("name", "x")])).unwrap().is_empty());
    }

    #[test]
    fn structured_form_reads_output_checks_only() {
        let json = r#"{"allowedReferences":[],"outputChecks":{"out":{"maxSize":10,"maxClosureSize":20,"ignoreSelfRefs":true,"disallowedRequisites":["dev"]}}}"#;
        let c = output_checks(&drv(&[("__json", json)])).unwrap();
        assert_eq!(
            c.len(),
            1,
            "top-level allowedReferences is ignored with structured attrs"
        );
        let o = &c["out"];
        assert_eq!((o.max_size, o.max_closure_size), (Some(10), Some(20)));
        assert!(o.ignore_self_refs);
        assert_eq!(
            o.disallowed_requisites.as_deref(),
            Some(&["dev".to_string()][..])
        );
        let bad = r#"{"outputChecks":{"out":{"maxSize":"big"}}}"#;
        assert!(matches!(
            output_checks(&drv(&[("__json", bad)])),
            Err(CheckError::Malformed(_))
        ));
    }
}
