//! Times repeated mount → first stat → unmount cycles of a one-path view,
//! split into the mount call, the first stat and the unmount.
//!
//! `cargo run --release -p b3-vfs --example mount_cycles -- ODB_DIR NAME FILE_IN_NAME [N [EXTRA]]`
//!
//! EXTRA more (absent) store path names are declared in the closure.

use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    if a.len() < 3 {
        eprintln!("usage: mount_cycles ODB_DIR NAME FILE_IN_NAME [N]");
        std::process::exit(2);
    }
    let odb = b3_vfs::odb::Odb::open(&a[0]).expect("open odb");
    let n: usize = a.get(3).and_then(|v| v.parse().ok()).unwrap_or(10);
    let extra: usize = a.get(4).and_then(|v| v.parse().ok()).unwrap_or(0);
    let mnt = std::env::temp_dir().join(format!("b3-vfs-cycles-{}", std::process::id()));
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    for i in 0..n {
        let mut names: Vec<String> = (0..extra).map(|i| format!("{i:032}-decl")).collect();
        names.push(a[1].clone());
        let t = Instant::now();
        let set = b3_vfs::view::closure(names).expect("names");
        let t_set = t.elapsed();
        let t = Instant::now();
        let g = b3_vfs::view::mount_closure(&odb, set, &mnt, Default::default()).expect("mount");
        let t_mount = t.elapsed();
        std::fs::metadata(mnt.join(&a[1]).join(&a[2])).expect("stat");
        let t_stat = t.elapsed() - t_mount;
        let t = Instant::now();
        g.unmount().expect("unmount");
        println!(
            "{i}: name set {:.2} ms, mount {:.2} ms, first stat {:.2} ms, unmount {:.2} ms",
            t_set.as_secs_f64() * 1e3,
            t_mount.as_secs_f64() * 1e3,
            t_stat.as_secs_f64() * 1e3,
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let _ = std::fs::remove_dir(&mnt);
}
