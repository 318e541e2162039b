// The oracle tree has an executable and a symlink, which Windows cannot hold.
#![cfg(unix)]
use b3_nar::*;
#[test]
fn oracle_fact_tree_hashes_dumps_and_restores_like_nix() {
    let d = tempfile::tempdir().unwrap();
    let t = d.path().join("tree");
    std::fs::create_dir_all(t.join("sub")).unwrap();
    std::fs::write(t.join("a.txt"), "hello\n").unwrap();
    std::fs::write(t.join("sub/run.sh"), "#!/bin/sh\necho x\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(t.join("sub/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("a.txt", t.join("link")).unwrap();
    std::fs::write(t.join("empty"), "").unwrap();
    let h = hash_path(&t).unwrap();
    assert_eq!(
        h.to_base16(),
        "50b741837b61476ddf101f126901ee18bf7855b56410e6561b6c010689ffb512"
    );
    assert_eq!(
        h.to_nix_base32(),
        "04mmzy4hc0bc3dbfc434nmapigqqxq0nj4hz23gnsiv1gf1l3dsh"
    );
    assert_eq!(
        h.to_sri(),
        "sha256-ULdBg3thR23fEB8SaQHuGL94VbVkEOZWG2wBBon/tRI="
    );
    let (nar, _) = dump_path(&t, Vec::new()).unwrap();
    let tree = Tree::from_nar(&nar[..]).unwrap();
    assert_eq!(tree.to_nar().unwrap(), nar);
    let out = d.path().join("out");
    restore(&nar[..], &out).unwrap();
    let (nar2, _) = dump_path(&out, Vec::new()).unwrap();
    assert_eq!(nar, nar2);
}
