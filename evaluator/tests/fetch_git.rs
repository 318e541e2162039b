//! `builtins.fetchGit` on local repositories made here with the git CLI,
//! against Nix 2.8: the whole result set (outPath, rev, shortRev, revCount,
//! lastModified, lastModifiedDate, narHash, submodules) for HEAD, a ref, an
//! older rev, and a dirty working tree.

mod fetch_common;

use std::path::Path;
use std::process::Command;

use fetch_common::*;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .env("GIT_AUTHOR_DATE", "2021-03-04T05:06:07Z")
        .env("GIT_COMMITTER_DATE", "2021-03-04T05:06:07Z")
        .output()
        .expect("git is needed: run scripts/setup-test-deps.sh");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn make_repo(t: &Path) -> (std::path::PathBuf, String) {
    let repo = t.join("repo");
    std::fs::create_dir_all(repo.join("sub")).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("a.txt"), "one\n").unwrap();
    std::fs::write(repo.join("sub/run.sh"), "#!/bin/sh\n").unwrap();
    Command::new("chmod")
        .arg("+x")
        .arg(repo.join("sub/run.sh"))
        .status()
        .unwrap();
    std::os::unix::fs::symlink("a.txt", repo.join("link")).unwrap();
    std::fs::write(repo.join(".gitattributes"), "secret export-ignore\n").unwrap();
    std::fs::write(repo.join("secret"), "not exported\n").unwrap();
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "first"]);
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("a.txt"), "two\n").unwrap();
    git(&repo, &["commit", "-q", "-am", "second"]);
    git(&repo, &["branch", "old", &first]);
    (repo, first)
}

fn same_as_nix(expr: &str) {
    let nix = nix_eval(expr).unwrap();
    let b3 = b3_eval(expr, None).unwrap();
    assert_eq!(b3, nix, "{expr}");
}

#[test]
fn fetch_git_of_head_ref_and_rev_matches_nix() {
    let t = TmpDir::new("git");
    let (repo, first) = make_repo(t.path());
    let r = repo.display().to_string();
    same_as_nix(&format!("builtins.fetchGit {}", lit(&r)));
    same_as_nix(&format!(
        "builtins.fetchGit {{ url = {}; }}",
        lit(&format!("file://{r}"))
    ));
    same_as_nix(&format!(
        "builtins.fetchGit {{ url = {}; ref = \"old\"; name = \"n\"; }}",
        lit(&r)
    ));
    same_as_nix(&format!(
        "builtins.fetchGit {{ url = {}; rev = \"{first}\"; }}",
        lit(&r)
    ));
}

#[test]
fn fetch_git_exports_the_tree_into_the_store() {
    let t = TmpDir::new("gitstore");
    let (repo, _) = make_repo(t.path());
    let store = TmpDir::new("gitstore-s");
    let out = b3_eval(
        &format!(
            "(builtins.fetchGit {}).outPath",
            lit(&repo.display().to_string())
        ),
        Some(store.path()),
    )
    .unwrap();
    let d = physical(store.path(), &unquote(&out));
    assert_eq!(std::fs::read_to_string(d.join("a.txt")).unwrap(), "two\n");
    assert!(!d.join("secret").exists(), "export-ignore is honoured");
    assert!(!d.join(".git").exists());
}

#[test]
fn a_dirty_tree_is_fetched_as_it_is_like_nix() {
    let t = TmpDir::new("gitdirty");
    let (repo, _) = make_repo(t.path());
    std::fs::write(repo.join("a.txt"), "uncommitted\n").unwrap();
    std::fs::write(repo.join("untracked"), "ignored\n").unwrap();
    same_as_nix(&format!(
        "builtins.fetchGit {}",
        lit(&repo.display().to_string())
    ));
}
