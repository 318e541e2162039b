//! `restore_many STORE_ROOT PATHS JOBS`: adds PATHS small generated NARs
//! (mixed shapes: single files of 100 B–200 KiB, small directories with an
//! executable and a symlink) to a fresh local store through
//! `LocalStore::add_nar_sync`, JOBS at a time, as a substitution or
//! `b3 copy --from` does, and prints paths/s. Measures the store's restore
//! path alone (no network, no decompression): run it under `/usr/bin/time`
//! for its user and kernel time (bench/store/restore.sh).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use b3_nar::Tree;
use b3_store::hash::{Hash, HashAlgo};
use b3_store::local::{LocalStore, LocalStoreConfig};
use b3_store::path::StorePath;
use b3_store::traits::ValidPathInfo;

fn nar_for(i: usize) -> Vec<u8> {
    let size = [100usize, 3_000, 40_000, 200_000][i % 4];
    let body: Vec<u8> = (0..size).map(|k| (k * 31 + i) as u8).collect();
    let t = if i.is_multiple_of(3) {
        Tree::dir([
            ("bin", Tree::dir([("tool", Tree::executable(body))])),
            ("lib", Tree::dir([("x.so", Tree::file(format!("lib {i}")))])),
            ("share", Tree::symlink("lib")),
        ])
    } else {
        Tree::file(body)
    };
    t.to_nar().expect("in-memory NAR")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, n, jobs] = &args[..] else {
        eprintln!("usage: restore_many STORE_ROOT PATHS JOBS");
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("PATHS");
    let jobs: usize = jobs.parse().expect("JOBS");
    let cfg = LocalStoreConfig::resolve(Some(root.into())).expect("config");
    let store = LocalStore::open(cfg).expect("open");
    let items: Vec<(ValidPathInfo, Vec<u8>)> = (0..n)
        .map(|i| {
            let nar = nar_for(i);
            let hash = Hash::digest(HashAlgo::Sha256, &nar);
            // Any valid name: nothing checks input-addressed paths here.
            let h = b3_store::nixbase32::encode(
                &Hash::digest(HashAlgo::Sha1, i.to_le_bytes()).as_bytes()[..20],
            );
            let p = StorePath::from_base_name(&format!("{h}-p{i}")).expect("path");
            (ValidPathInfo::new(p, hash, nar.len() as u64), nar)
        })
        .collect();
    let next = AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((info, nar)) = items.get(i) else {
                    return;
                };
                store.add_nar_sync(info, &nar[..]).expect("add");
            });
        }
    });
    let secs = t0.elapsed().as_secs_f64();
    let bytes: usize = items.iter().map(|(_, n)| n.len()).sum();
    println!(
        "{n} paths, {:.1} MiB of NAR, {jobs} jobs: {secs:.2} s, {:.0} paths/s",
        bytes as f64 / 1048576.0,
        n as f64 / secs
    );
}
