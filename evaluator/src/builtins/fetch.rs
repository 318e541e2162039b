//! Fetchers: `builtins.fetchurl`, `builtins.fetchTarball` and
//! `builtins.fetchGit` (local repositories), with Nix 2.8's arguments,
//! results and messages. Downloads and unpacking go through b3-store's one
//! network module (`b3_store::fetch`); results are added to the store, or
//! kept in the evaluation's scratch directory in read-only mode (see
//! `storepath::StoreOptions`). Each distinct request is fetched once per
//! evaluation.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::rc::Rc;

use b3_store::fetch::{self, FetchOptions};
use b3_store::hash::{Hash, HashAlgo};

use crate::error::EvalError;
use crate::eval::{err, Ev, R};
use crate::pos::Pos;
use crate::storepath::{self, make_fixed_output_path, nar_hash};
use crate::value::*;

pub fn register(t: &mut Vec<(&'static str, usize, PrimFn)>) {
    // These replace the "not supported" placeholders registered earlier.
    t.retain(|(n, _, _)| !matches!(*n, "fetchurl" | "fetchTarball" | "fetchGit"));
    t.push(("fetchurl", 1, fetchurl));
    t.push(("fetchTarball", 1, fetch_tarball));
    t.push(("fetchGit", 1, fetch_git));
}

fn other(p: Pos) -> impl Fn(String) -> EvalError {
    move |e| EvalError::other(e, p)
}

fn store_string(sp: String) -> Value {
    let mut ctx = Context::new();
    ctx.insert(Rc::from(sp.as_str()));
    Value::str_ctx(sp.into_bytes(), ctx)
}

/// Nix's `newHashAllowEmpty`: an empty hash is the all-zero one (so that the
/// mismatch error tells the right hash), with a warning.
fn expected_hash(s: &str, algo: Option<HashAlgo>, p: Pos) -> R<Hash> {
    if s.is_empty() {
        let h = Hash::zero(algo.unwrap_or(HashAlgo::Sha256));
        eprintln!("warning: found empty hash, assuming '{}'", h.to_sri());
        return Ok(h);
    }
    Hash::parse_any(s, algo).map_err(|e| EvalError::other(format!("invalid hash '{s}': {e}"), p))
}

fn base_name_of(url: &str) -> String {
    let t = url.strip_suffix('/').unwrap_or(url);
    t.rsplit('/').next().unwrap_or(t).to_string()
}

fn fetchurl(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    fetch_common(ev, &a[0], p, "fetchurl", false)
}

fn fetch_tarball(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    fetch_common(ev, &a[0], p, "fetchTarball", true)
}

/// `fetchurl` and `fetchTarball` (Nix's `fetch` in primops/fetchTree.cc).
fn fetch_common(ev: &Ev, arg: &Value, p: Pos, who: &str, unpack: bool) -> R<Value> {
    let v = ev.force(arg)?;
    let mut url = None;
    let mut name = None;
    let mut expected = None;
    if let Value::Attrs(attrs) = &v {
        for (k, v, _) in attrs.iter() {
            match &**k {
                "url" => url = Some(ev.force_string(v, p)?),
                "sha256" => {
                    expected = Some(expected_hash(
                        &ev.force_string(v, p)?,
                        Some(HashAlgo::Sha256),
                        p,
                    )?)
                }
                // Not in Nix 2.8: an SRI or prefixed hash of any algorithm.
                "hash" => expected = Some(expected_hash(&ev.force_string(v, p)?, None, p)?),
                "name" => name = Some(ev.force_string(v, p)?),
                other => return err(format!("unsupported argument '{other}' to '{who}'"), p),
            }
        }
        if url.is_none() {
            return err("'url' argument required", p);
        }
    } else {
        url = Some(ev.force_string(&v, p)?);
    }
    let url = url.unwrap_or_default();
    if ev.opts.pure && expected.is_none() {
        return err(
            format!("in pure evaluation mode, '{who}' requires a 'sha256' argument"),
            p,
        );
    }
    let name = match name {
        Some(n) if !n.is_empty() => n,
        _ if unpack => "source".to_string(),
        _ => base_name_of(&url),
    };
    super::store::check_name(&name, p)?;
    let key = format!(
        "{who}\0{url}\0{name}\0{}",
        expected.as_ref().map(|h| h.to_sri()).unwrap_or_default()
    );
    if let Some(v) = ev.store_io.fetch_cache.borrow().get(&key) {
        return Ok(v.clone());
    }
    // A pinned result already in the store is not fetched again (as Nix).
    if let Some(sp) = pinned_in_store(ev, expected.as_ref(), unpack, &name).map_err(other(p))? {
        let v = store_string(sp);
        ev.store_io.fetch_cache.borrow_mut().insert(key, v.clone());
        return Ok(v);
    }
    let io = &ev.store_io;
    let file = io.scratch_path("download").map_err(other(p))?;
    let got = fetch::download_to_file(&url, &file, &FetchOptions::default())
        .map_err(|e| EvalError::other(e.to_string(), p))?;
    let mismatch = |expected: &Hash, got: &Hash| {
        EvalError::other(
            format!(
                "hash mismatch in file downloaded from '{url}':\n  specified: {}\n  got:       {}",
                expected.encode(b3_store::hash::HashFormat::Nix32, true),
                got.encode(b3_store::hash::HashFormat::Nix32, true)
            ),
            p,
        )
    };
    let (content, sp) = if unpack {
        let dir = io.scratch_path("unpack").map_err(other(p))?;
        fetch::unpack_tarball_file(&file, &dir)
            .map_err(|e| EvalError::other(format!("unpacking '{url}': {e}"), p))?;
        let _ = std::fs::remove_file(&file);
        let top = fetch::single_top_level(&dir)
            .map_err(|e| EvalError::other(format!("tarball '{url}': {e}"), p))?;
        let h = nar_hash(&top.to_string_lossy(), None).map_err(other(p))?;
        let got = Hash::from_bytes(HashAlgo::Sha256, &h)
            .map_err(|e| EvalError::other(e.to_string(), p))?;
        if let Some(e) = &expected {
            if e.algo() != HashAlgo::Sha256 || e != &got {
                return Err(mismatch(e, &got));
            }
        }
        let sp = make_fixed_output_path(&ev.opts.store_dir, true, "sha256", &h, &name, &[])
            .map_err(other(p))?;
        (top, sp)
    } else {
        if let Some(e) = &expected {
            let got = if e.algo() == HashAlgo::Sha256 {
                got.sha256
            } else {
                hash_file(&file, e.algo()).map_err(other(p))?
            };
            if e != &got {
                return Err(mismatch(e, &got));
            }
        }
        let sp = make_fixed_output_path(
            &ev.opts.store_dir,
            false,
            "sha256",
            got.sha256.as_bytes(),
            &name,
            &[],
        )
        .map_err(other(p))?;
        (file, sp)
    };
    storepath::add_computed(ev, &content, &name, unpack, &sp).map_err(other(p))?;
    if ev.opts.store.write {
        // The store has its own copy now; read-only mode keeps reading this one.
        let _ = match content.parent() {
            Some(dir) if unpack => std::fs::remove_dir_all(dir),
            _ => std::fs::remove_file(&content),
        };
    }
    let v = store_string(sp);
    ev.store_io.fetch_cache.borrow_mut().insert(key, v.clone());
    Ok(v)
}

/// The store path a sha256-pinned fetch would produce, if the b3 store
/// (write mode) already has it.
fn pinned_in_store(
    ev: &Ev,
    expected: Option<&Hash>,
    recursive: bool,
    name: &str,
) -> Result<Option<String>, String> {
    let Some(h) = expected.filter(|h| h.algo() == HashAlgo::Sha256) else {
        return Ok(None);
    };
    if !ev.opts.store.write || h.as_bytes().iter().all(|b| *b == 0) {
        return Ok(None);
    }
    let sp = make_fixed_output_path(
        &ev.opts.store_dir,
        recursive,
        "sha256",
        h.as_bytes(),
        name,
        &[],
    )?;
    let store = ev.store_io.store(&ev.opts.store, &ev.opts.store_dir)?;
    let parsed = store.store_dir().parse(&sp).map_err(|e| e.to_string())?;
    let valid = store.is_valid_sync(&parsed).map_err(|e| e.to_string())?;
    Ok(valid.then_some(sp))
}

fn hash_file(path: &Path, algo: HashAlgo) -> Result<Hash, String> {
    let mut h = b3_store::hash::Hasher::new(algo);
    let mut f =
        std::fs::File::open(path).map_err(|e| format!("opening '{}': {e}", path.display()))?;
    std::io::copy(&mut f, &mut h).map_err(|e| format!("reading '{}': {e}", path.display()))?;
    Ok(h.finish())
}

// ---------- fetchGit ----------

fn git(repo: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .output()
        .map_err(|e| format!("running git: {e} (is git installed?)"))?;
    if !out.status.success() {
        return Err(format!(
            "program 'git' ({}) failed with {}: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

fn git_line(repo: &Path, args: &[&str]) -> Result<String, String> {
    Ok(String::from_utf8_lossy(&git(repo, args)?)
        .trim()
        .to_string())
}

/// `%Y%m%d%H%M%S` of a Unix time, in UTC.
fn utc_stamp(t: i64) -> String {
    let days = t.div_euclid(86400);
    let secs = t.rem_euclid(86400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

struct GitArgs {
    url: String,
    name: String,
    git_ref: Option<String>,
    rev: Option<String>,
    submodules: bool,
}

fn git_args(ev: &Ev, v: &Value, p: Pos) -> R<GitArgs> {
    let v = ev.force(v)?;
    let mut a = GitArgs {
        url: String::new(),
        name: "source".into(),
        git_ref: None,
        rev: None,
        submodules: false,
    };
    let mut have_url = false;
    let as_url = |x: &Value| -> R<String> {
        let (s, _) = ev.coerce_to_string(x, false, false, p)?;
        Ok(String::from_utf8_lossy(&s).into_owned())
    };
    if let Value::Attrs(attrs) = &v {
        for (k, x, _) in attrs.iter() {
            match &**k {
                "url" => {
                    a.url = as_url(x)?;
                    have_url = true;
                }
                "name" => a.name = ev.force_string(x, p)?,
                "ref" => a.git_ref = Some(ev.force_string(x, p)?),
                "rev" => a.rev = Some(ev.force_string(x, p)?),
                "submodules" => a.submodules = ev.force_bool(x, p)?,
                "shallow" | "allRefs" => {
                    ev.force_bool(x, p)?;
                }
                other => return err(format!("unsupported argument '{other}' to 'fetchGit'"), p),
            }
        }
        if !have_url {
            return err("'url' argument required", p);
        }
    } else {
        a.url = as_url(&v)?;
    }
    Ok(a)
}

fn fetch_git(ev: &Ev, a: &[Value], p: Pos) -> R<Value> {
    let args = git_args(ev, &a[0], p)?;
    super::store::check_name(&args.name, p)?;
    if args.submodules {
        return err("b3's fetchGit does not support 'submodules = true' yet", p);
    }
    let repo = match args.url.strip_prefix("file://") {
        Some(r) => r.to_string(),
        None if args.url.starts_with('/') => args.url.clone(),
        None => {
            return err(
                format!(
                    "b3's fetchGit fetches local repositories only, not '{}'",
                    args.url
                ),
                p,
            )
        }
    };
    if ev.opts.pure && args.rev.is_none() {
        return err(
            "in pure evaluation mode, 'fetchGit' requires a locked input",
            p,
        );
    }
    let key = format!(
        "fetchGit\0{repo}\0{}\0{}\0{}",
        args.name,
        args.git_ref.as_deref().unwrap_or(""),
        args.rev.as_deref().unwrap_or("")
    );
    if let Some(v) = ev.store_io.fetch_cache.borrow().get(&key) {
        return Ok(v.clone());
    }
    let v = fetch_git_local(ev, Path::new(&repo), &args).map_err(other(p))?;
    ev.store_io.fetch_cache.borrow_mut().insert(key, v.clone());
    Ok(v)
}

fn fetch_git_local(ev: &Ev, repo: &Path, args: &GitArgs) -> Result<Value, String> {
    let io = &ev.store_io;
    let have_commits = git(repo, &["rev-parse", "--verify", "-q", "HEAD"]).is_ok();
    // Without ref and rev, a working tree with uncommitted changes to
    // tracked files is taken as it is (Nix's "dirty" tree).
    let dirty = args.git_ref.is_none()
        && args.rev.is_none()
        && (!have_commits
            || Command::new("git")
                .arg("-C")
                .arg(repo)
                .args(["diff-index", "--quiet", "HEAD", "--"])
                .status()
                .map_err(|e| format!("running git: {e}"))?
                .code()
                == Some(1));
    let tree: PathBuf;
    let rev: Option<String>;
    if dirty {
        eprintln!("warning: Git tree '{}' is dirty", repo.display());
        let listed = git(repo, &["ls-files", "-z"])?;
        let mut keep = std::collections::HashSet::new();
        for f in listed.split(|b| *b == 0).filter(|f| !f.is_empty()) {
            let f = String::from_utf8_lossy(f).into_owned();
            let mut cur = f.as_str();
            keep.insert(cur.to_string());
            while let Some(i) = cur.rfind('/') {
                cur = &cur[..i];
                keep.insert(cur.to_string());
            }
        }
        let root = repo.to_string_lossy().trim_end_matches('/').to_string();
        let mut filter = |full: &str, _ty: &str| -> Result<bool, String> {
            let rel = full
                .strip_prefix(&root)
                .unwrap_or(full)
                .trim_start_matches('/');
            Ok(keep.contains(rel))
        };
        tree = io.scratch_path("git")?;
        storepath::copy_filtered(&root, &tree, &mut filter)?;
        rev = None;
    } else {
        let r = match &args.rev {
            Some(r) => r.clone(),
            None => {
                let git_ref = match &args.git_ref {
                    Some(r) => r.clone(),
                    None => git_line(repo, &["rev-parse", "--abbrev-ref", "HEAD"])?,
                };
                git_line(repo, &["rev-parse", &git_ref])?
            }
        };
        if git(repo, &["cat-file", "-e", &format!("{r}^{{commit}}")]).is_err() {
            return Err(format!(
                "Cannot find Git revision '{r}' in ref '{}' of repository '{}'!",
                args.git_ref.as_deref().unwrap_or("HEAD"),
                repo.display()
            ));
        }
        // `git archive` honours export-ignore, as Nix's export does.
        let archive = io.scratch_path("git.tar")?;
        let tar = git(repo, &["archive", &r])?;
        std::fs::write(&archive, tar)
            .map_err(|e| format!("writing '{}': {e}", archive.display()))?;
        tree = io.scratch_path("git")?;
        fetch::unpack_tarball_file(&archive, &tree)
            .map_err(|e| format!("unpacking revision '{r}': {e}"))?;
        let _ = std::fs::remove_file(&archive);
        rev = Some(r);
    }
    let h = nar_hash(&tree.to_string_lossy(), None)?;
    let sp = make_fixed_output_path(&ev.opts.store_dir, true, "sha256", &h, &args.name, &[])?;
    storepath::add_computed(ev, &tree, &args.name, true, &sp)?;
    let last_modified: i64 = if have_commits {
        let at = rev.as_deref().unwrap_or("HEAD");
        git_line(
            repo,
            &["log", "-1", "--format=%ct", "--no-show-signature", at],
        )?
        .parse()
        .unwrap_or(0)
    } else {
        0
    };
    let (rev_s, rev_count) = match &rev {
        Some(r) => (
            r.clone(),
            git_line(repo, &["rev-list", "--count", r])?
                .parse::<i64>()
                .unwrap_or(0),
        ),
        None => ("0".repeat(40), 0),
    };
    let nar = Hash::from_bytes(HashAlgo::Sha256, &h).map_err(|e| e.to_string())?;
    Ok(super::mk_attrs(
        ev,
        vec![
            ("lastModified", Value::Int(last_modified)),
            ("lastModifiedDate", Value::str(utc_stamp(last_modified))),
            ("narHash", Value::str(nar.to_sri())),
            ("outPath", store_string(sp)),
            ("rev", Value::str(rev_s.clone())),
            ("revCount", Value::Int(rev_count)),
            ("shortRev", Value::str(rev_s[..7].to_string())),
            ("submodules", Value::Bool(args.submodules)),
        ],
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamp_matches_known_dates() {
        assert_eq!(utc_stamp(0), "19700101000000");
        // date -u -d @1795252741 +%Y%m%d%H%M%S
        assert_eq!(utc_stamp(1_795_252_741), "20261121091901");
        assert_eq!(utc_stamp(951_782_400), "20000229000000");
    }

    #[test]
    fn fetchurl_name_is_the_url_base_name() {
        assert_eq!(base_name_of("http://h/a/b.tar.gz"), "b.tar.gz");
        assert_eq!(base_name_of("file:///x/y/"), "y");
    }
}
