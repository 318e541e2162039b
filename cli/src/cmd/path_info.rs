//! `b3 path-info`: metadata of store paths, like `nix path-info`.
//!
//! `--json` prints Nix's shape: an array of objects with `path`, `narHash`
//! (SRI), `narSize`, `references`, then `ca`, `deriver`,
//! `registrationTime`, `ultimate` and `signatures` when present; an invalid
//! path is `{"path": …, "valid": false}` and makes the exit status 1.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;

use b3_store::local::LocalStore;
use b3_store::path::StorePath;
use b3_store::traits::ValidPathInfo;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Include the closures of the given paths.
    #[arg(long, short = 'r')]
    recursive: bool,
    /// Store paths (or links to them).
    #[arg(required = true)]
    paths: Vec<String>,
}

fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// One path's JSON object, keys in Nix's order.
pub fn info_json(store: &LocalStore, info: &ValidPathInfo) -> String {
    let mut o = format!(
        "{{\"path\":{},\"narHash\":{},\"narSize\":{},\"references\":[{}]",
        js(&store.print_path(&info.path)),
        js(&info.nar_hash.to_sri()),
        info.nar_size,
        info.references
            .iter()
            .map(|r| js(&store.print_path(r)))
            .collect::<Vec<_>>()
            .join(",")
    );
    if let Some(ca) = &info.ca {
        o.push_str(&format!(",\"ca\":{}", js(&ca.to_string())));
    }
    if let Some(d) = &info.deriver {
        o.push_str(&format!(",\"deriver\":{}", js(&store.print_path(d))));
    }
    if let Some(t) = info.registration_time {
        o.push_str(&format!(",\"registrationTime\":{t}"));
    }
    if info.ultimate {
        o.push_str(",\"ultimate\":true");
    }
    if !info.signatures.is_empty() {
        o.push_str(&format!(
            ",\"signatures\":[{}]",
            info.signatures
                .iter()
                .map(|s| js(s))
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    o.push('}');
    o
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let store = super::store::open_store(g)?;
    let mut wanted: Vec<(String, Option<StorePath>)> = Vec::new();
    for p in &a.paths {
        let sp = store.resolve_user_path(p)?;
        wanted.push((store.print_path(&sp), Some(sp)));
    }
    let mut all_valid = true;
    if a.recursive {
        let roots: BTreeSet<StorePath> = wanted.iter().filter_map(|(_, p)| p.clone()).collect();
        let mut valid_roots = BTreeSet::new();
        for r in &roots {
            if store.is_valid_sync(r)? {
                valid_roots.insert(r.clone());
            } else {
                all_valid = false;
            }
        }
        let closure = store.query_closure_sync(&valid_roots)?;
        let mut ordered: Vec<(String, Option<StorePath>)> = closure
            .into_iter()
            .map(|p| (store.print_path(&p), Some(p)))
            .collect();
        for (s, p) in &wanted {
            if let Some(p) = p {
                if !valid_roots.contains(p) {
                    ordered.push((s.clone(), None));
                }
            }
        }
        ordered.sort_by(|a, b| a.0.cmp(&b.0));
        wanted = ordered;
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut objs = Vec::new();
    for (printed, sp) in &wanted {
        let info = match sp {
            Some(sp) => store.query_path_info_sync(sp)?,
            None => None,
        };
        match info {
            Some(info) => {
                if a.json {
                    objs.push(info_json(&store, &info));
                } else {
                    writeln!(out, "{printed}")?;
                }
            }
            None => {
                all_valid = false;
                if a.json {
                    objs.push(format!("{{\"path\":{},\"valid\":false}}", js(printed)));
                } else {
                    eprintln!("error: path '{printed}' is not valid");
                }
            }
        }
    }
    if a.json {
        writeln!(out, "[{}]", objs.join(","))?;
    }
    Ok(if all_valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
