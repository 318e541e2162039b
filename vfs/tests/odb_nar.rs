//! The object database against the Nix oracle: importing `nix-store --dump`
//! output and exporting it again must give the very same bytes, for real
//! store paths and for generated trees with every NAR feature.

mod common;

use std::fs;

use b3_vfs::odb::{Node, Odb};
use common::*;

fn round_trip(odb: &Odb, name: &str, nar: &[u8]) {
    odb.import_nar(name, nar).unwrap();
    let (out, size) = odb.export_nar(name, Vec::new()).unwrap();
    assert_eq!(size as usize, nar.len(), "{name}: NAR size");
    assert!(
        out == nar,
        "{name}: exported NAR differs from nix-store --dump"
    );
}

#[test]
fn real_store_paths_export_to_the_same_nar_as_nix_store_dump() {
    let dir = tempfile::tempdir().unwrap();
    let odb = Odb::open(dir.path()).unwrap();
    let bb = busybox();
    round_trip(&odb, "b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb", &nix_dump(&bb));
    // Single-file store paths (sources, derivations) have a file as root.
    let mut files = 0;
    for e in fs::read_dir("/nix/store").unwrap() {
        let e = e.unwrap();
        let name = e.file_name().into_string().unwrap();
        if files < 20 && e.file_type().unwrap().is_file() && !name.ends_with(".lock") {
            round_trip(&odb, &name, &nix_dump(&e.path()));
            files += 1;
        }
    }
    assert!(
        files > 0,
        "expected some single-file store paths in /nix/store"
    );
}

#[test]
fn generated_tree_round_trips_byte_for_byte() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 3 * 1024 * 1024 + 5);
    seal(&src);
    let nar = nix_dump(&src);
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    round_trip(&odb, "00000000000000000000000000000000-gen", &nar);
    // Importing the directory itself gives the same node as importing its NAR.
    let from_fs = odb.store_path(&src).unwrap();
    assert_eq!(
        Some(from_fs),
        odb.root("00000000000000000000000000000000-gen").unwrap()
    );
}

#[test]
fn single_symlink_and_empty_directory_roots_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink("/some/where", &link).unwrap();
    round_trip(
        &odb,
        "11111111111111111111111111111111-link",
        &nix_dump(&link),
    );
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    round_trip(
        &odb,
        "22222222222222222222222222222222-empty",
        &nix_dump(&empty),
    );
}

#[test]
fn identical_files_across_store_paths_are_stored_once() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    make_tree(&a, 100_000);
    make_tree(&b, 100_000);
    fs::write(b.join("extra"), b"only in b").unwrap();
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    odb.import_nar("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a", &nix_dump(&a)[..])
        .unwrap();
    let blobs_after_a = count_files(&tmp.path().join("odb/blobs"));
    odb.import_nar("bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b", &nix_dump(&b)[..])
        .unwrap();
    let blobs_after_b = count_files(&tmp.path().join("odb/blobs"));
    assert_eq!(
        blobs_after_b,
        blobs_after_a + 1,
        "only the new file adds a blob"
    );
}

fn count_files(dir: &std::path::Path) -> usize {
    walk(dir)
        .into_iter()
        .filter(|p| fs::symlink_metadata(p).unwrap().is_file())
        .count()
}

#[test]
fn truncated_or_corrupt_nar_is_rejected_and_not_published() {
    let tmp = tempfile::tempdir().unwrap();
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    let nar = nix_dump(&busybox());
    let name = "cccccccccccccccccccccccccccccccc-broken";
    let err = odb.import_nar(name, &nar[..nar.len() - 100]).unwrap_err();
    assert!(matches!(err, b3_vfs::odb::Error::Nar(_)), "{err}");
    let mut bad = nar.clone();
    bad[8] ^= 0xff; // inside the magic string
    assert!(odb.import_nar(name, &bad[..]).is_err());
    assert_eq!(odb.root(name).unwrap(), None);
}

#[test]
fn gc_sweeps_objects_of_removed_roots_and_keeps_live_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let a = tmp.path().join("a");
    make_tree(&a, 10_000);
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    odb.import_nar(
        "dddddddddddddddddddddddddddddddd-keep",
        &nix_dump(&busybox())[..],
    )
    .unwrap();
    odb.import_nar("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-drop", &nix_dump(&a)[..])
        .unwrap();
    // Too young: nothing goes.
    odb.remove_root("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-drop")
        .unwrap();
    let st = odb.gc(std::time::Duration::from_secs(3600)).unwrap();
    assert_eq!(st.deleted_blobs + st.deleted_trees, 0);
    let st = odb.gc(std::time::Duration::ZERO).unwrap();
    assert!(st.deleted_blobs > 10 && st.deleted_trees > 3, "{st:?}");
    // The kept path still exports identically; a second sweep finds nothing.
    let (out, _) = odb
        .export_nar("dddddddddddddddddddddddddddddddd-keep", Vec::new())
        .unwrap();
    assert!(out == nix_dump(&busybox()));
    let st = odb.gc(std::time::Duration::ZERO).unwrap();
    assert_eq!(st.deleted_blobs + st.deleted_trees, 0);
    assert!(matches!(
        odb.root("dddddddddddddddddddddddddddddddd-keep").unwrap(),
        Some(Node::Directory { .. })
    ));
}

#[test]
fn export_detects_a_truncated_blob() {
    let tmp = tempfile::tempdir().unwrap();
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    let f = tmp.path().join("f");
    fs::write(&f, b"some content").unwrap();
    let node = odb
        .import_nar("ffffffffffffffffffffffffffffffff-f", &nix_dump(&f)[..])
        .unwrap();
    let Node::File { blob, .. } = node else {
        panic!()
    };
    let p = odb.blob_path(&blob);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, b"some").unwrap();
    let err = odb
        .export_nar("ffffffffffffffffffffffffffffffff-f", Vec::new())
        .unwrap_err();
    assert!(matches!(err, b3_vfs::odb::Error::BlobSize { .. }), "{err}");
}

#[test]
fn a_blob_emptied_by_a_crash_is_rewritten_by_the_next_import() {
    // A crash after a blob's rename but before its data reached the disk
    // leaves an empty file under the right name; its root was never
    // published (roots are written after syncfs). Re-importing must repair it.
    let tmp = tempfile::tempdir().unwrap();
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    let f = tmp.path().join("f");
    fs::write(&f, b"precious content").unwrap();
    let nar = nix_dump(&f);
    let name = "gggggggggggggggggggggggggggggggg-f";
    let Node::File { blob, .. } = odb.import_nar(name, &nar[..]).unwrap() else {
        panic!()
    };
    odb.remove_root(name).unwrap();
    let p = odb.blob_path(&blob);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, b"").unwrap();
    odb.import_nar(name, &nar[..]).unwrap();
    assert_eq!(fs::read(&p).unwrap(), b"precious content");
    assert!(odb.verify(name).unwrap().is_empty());
}

#[test]
fn verify_reports_damaged_and_missing_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 50_000);
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    let name = "hhhhhhhhhhhhhhhhhhhhhhhhhhhhhhhh-v";
    odb.import_nar(name, &nix_dump(&src)[..]).unwrap();
    assert_eq!(odb.verify(name).unwrap(), vec![]);
    let (big, _) = odb.put_blob(&noise(50_000, 42)).unwrap();
    let p = odb.blob_path(&big);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = fs::read(&p).unwrap();
    bytes[100] ^= 1;
    fs::write(&p, &bytes).unwrap();
    let (readme, _) = odb.put_blob(b"hello\n").unwrap();
    fs::remove_file(odb.blob_path(&readme)).unwrap();
    let damage = odb.verify(name).unwrap();
    assert_eq!(damage.len(), 2, "{damage:?}");
    assert!(damage.contains(&b3_vfs::odb::Damage::MissingBlob(readme)));
    assert!(damage
        .iter()
        .any(|d| matches!(d, b3_vfs::odb::Damage::BadBlob { id, .. } if *id == big)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_import_gives_the_same_objects_as_sync_import() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, 1024 * 1024 + 1);
    seal(&src);
    let nar_path = tmp.path().join("x.nar");
    fs::write(&nar_path, nix_dump(&src)).unwrap();
    let odb = Odb::open(tmp.path().join("odb")).unwrap();
    let f = tokio::fs::File::open(&nar_path).await.unwrap();
    let node = odb
        .import_nar_async("iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-async", f)
        .await
        .unwrap();
    let sync_odb = Odb::open(tmp.path().join("odb2")).unwrap();
    let sync_node = sync_odb
        .import_nar(
            "iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-async",
            &fs::read(&nar_path).unwrap()[..],
        )
        .unwrap();
    assert_eq!(node, sync_node);
    let (out, _) = odb
        .export_nar("iiiiiiiiiiiiiiiiiiiiiiiiiiiiiiii-async", Vec::new())
        .unwrap();
    assert!(out == fs::read(&nar_path).unwrap());
    // A truncated stream fails with the NAR error and publishes nothing.
    let bytes = fs::read(&nar_path).unwrap();
    let err = odb
        .import_nar_async(
            "jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj-cut",
            &bytes[..bytes.len() / 2],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, b3_vfs::odb::Error::Nar(_)), "{err}");
    assert_eq!(
        odb.root("jjjjjjjjjjjjjjjjjjjjjjjjjjjjjjjj-cut").unwrap(),
        None
    );
}
