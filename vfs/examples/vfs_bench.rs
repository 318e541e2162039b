//! Measures what a view buys over unpacking, on a generated closure.
//!
//! ```text
//! cargo run --release -p b3-vfs --example vfs_bench -- [WORKDIR] [--mib N] [--drop-caches] [--no-passthrough]
//! ```
//!
//! Generates a closure of store paths (NARs written with b3-nar's encoder,
//! thousands of files, at least `--mib` MiB, default 512), imports it into an
//! object database, then compares:
//! - making it usable: restoring every NAR into a directory vs. mounting a view;
//! - reading every file once, and a second time, from each.
//!
//! `--drop-caches` (root only) empties the page cache before each first read,
//! so first reads come from disk. Also prints BLAKE3 vs SHA-256 throughput,
//! the measurement behind the object database's choice of BLAKE3.

use std::fs;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use b3_nar::NarEncoder;
use b3_vfs::odb::Odb;
use b3_vfs::view::{mount, ViewOptions};

fn noise(buf: &mut Vec<u8>, len: usize, seed: u64) {
    buf.clear();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while buf.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        buf.extend_from_slice(&x.to_le_bytes());
    }
    buf.truncate(len);
}

/// File sizes: mostly small (like real packages), a few large ones.
fn size_of(i: u64) -> usize {
    match (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 100 {
        0 => 8 * 1024 * 1024 + 17,
        1..=9 => 256 * 1024 + (i % 7) as usize * 1000,
        10..=59 => 16 * 1024 + (i % 13) as usize * 300,
        _ => 700 + (i % 29) as usize * 100,
    }
}

struct Gen {
    files: u64,
    bytes: u64,
}

/// Writes one store path's NAR: `dirs` directories of `per_dir` files, plus a
/// `bin/` with an executable and a symlink.
fn gen_nar(path: &Path, seed: u64, dirs: u64, per_dir: u64, g: &mut Gen) {
    let f = BufWriter::new(fs::File::create(path).expect("create NAR"));
    let mut enc = NarEncoder::new(f);
    let mut buf = Vec::new();
    enc.directory_start().unwrap();
    enc.entry(b"bin").unwrap();
    enc.directory_start().unwrap();
    enc.entry(b"run").unwrap();
    enc.file_bytes(true, b"#!/bin/sh\nexit 0\n").unwrap();
    enc.entry(b"run-link").unwrap();
    enc.symlink(b"run").unwrap();
    enc.directory_end().unwrap();
    enc.entry(b"share").unwrap();
    enc.directory_start().unwrap();
    let mut names: Vec<String> = (0..dirs).map(|d| format!("d{d:03}")).collect();
    names.sort();
    for (d, dn) in names.iter().enumerate() {
        enc.entry(dn.as_bytes()).unwrap();
        enc.directory_start().unwrap();
        let mut fnames: Vec<String> = (0..per_dir).map(|k| format!("f{k:04}.dat")).collect();
        fnames.sort();
        for (k, fname) in fnames.iter().enumerate() {
            let i = seed * 1_000_000 + d as u64 * 1000 + k as u64;
            let len = size_of(i);
            noise(&mut buf, len, i);
            enc.entry(fname.as_bytes()).unwrap();
            enc.file_bytes(false, &buf).unwrap();
            g.files += 1;
            g.bytes += len as u64;
        }
        enc.directory_end().unwrap();
    }
    enc.directory_end().unwrap();
    enc.directory_end().unwrap();
    enc.finish().unwrap();
}

/// Reads every regular file under `root` once; returns (files, bytes).
fn read_all(root: &Path, buf: &mut [u8]) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                let mut f = fs::File::open(e.path()).unwrap();
                loop {
                    let n = f.read(buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    bytes += n as u64;
                }
                files += 1;
            }
        }
    }
    (files, bytes)
}

/// User + system CPU time of this process (all its threads) so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn drop_caches() {
    // SAFETY-free: plain libc call, no memory is shared.
    unsafe { libc::sync() };
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("warning: cannot drop caches ({e}); first reads are warm");
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3} s", d.as_secs_f64())
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mut work = PathBuf::from("/tmp/b3-vfs-bench");
    let mut mib: u64 = 512;
    let mut drop = false;
    let mut passthrough = true;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--mib" => mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--drop-caches" => drop = true,
            "--no-passthrough" => passthrough = false,
            _ => work = PathBuf::from(a),
        }
    }
    let _ = fs::remove_dir_all(&work);
    for d in ["nars", "unpacked", "mnt"] {
        fs::create_dir_all(work.join(d)).unwrap();
    }

    // Hash throughput (what the object database pays per imported byte).
    let mut data = Vec::new();
    noise(&mut data, 256 << 20, 99);
    let t = Instant::now();
    let b = blake3::hash(&data);
    let tb = t.elapsed();
    let t = Instant::now();
    let s = {
        use sha2::Digest;
        sha2::Sha256::digest(&data)
    };
    let ts = t.elapsed();
    std::hint::black_box((b, s));
    std::mem::drop(data);
    println!(
        "hash 256 MiB: blake3 {:.0} MiB/s, sha256 {:.0} MiB/s",
        256.0 / tb.as_secs_f64(),
        256.0 / ts.as_secs_f64()
    );

    // Generate: 20 store paths; per path dirs × files sized so the whole is >= mib.
    let paths = 20u64;
    let per_dir = 25u64;
    // Average file size from the distribution above, ~ 0.01*8M + 0.09*259K + 0.5*18K + 0.4*2.1K.
    let avg = (0..10_000).map(size_of).sum::<usize>() as u64 / 10_000;
    let files_needed = (mib << 20) / avg + 1;
    let dirs = (files_needed / (paths * per_dir)).max(1) + 1;
    let mut g = Gen { files: 0, bytes: 0 };
    let t = Instant::now();
    let mut names = Vec::new();
    for p in 0..paths {
        let name = format!("{:032}-bench-pkg-{p}", p);
        gen_nar(&work.join("nars").join(&name), p + 1, dirs, per_dir, &mut g);
        names.push(name);
    }
    println!(
        "generated {} store paths, {} files, {:.0} MiB in {}",
        paths,
        g.files,
        g.bytes as f64 / 1048576.0,
        secs(t.elapsed())
    );

    // Import into the object database.
    let odb = Odb::open(work.join("odb")).unwrap();
    let t = Instant::now();
    for n in &names {
        let f =
            BufReader::with_capacity(1 << 20, fs::File::open(work.join("nars").join(n)).unwrap());
        odb.import_nar(n, f).unwrap();
    }
    let ti = t.elapsed();
    println!(
        "import into the ODB: {} ({:.0} MiB/s)",
        secs(ti),
        g.bytes as f64 / 1048576.0 / ti.as_secs_f64()
    );

    // Usable, way 1: unpack every NAR.
    let t = Instant::now();
    for n in &names {
        let f =
            BufReader::with_capacity(1 << 20, fs::File::open(work.join("nars").join(n)).unwrap());
        b3_nar::restore(f, &work.join("unpacked").join(n)).unwrap();
    }
    let t_unpack = t.elapsed();

    // Usable, way 2: mount a view (until a file inside answers stat).
    // Five mount/unmount cycles: the machine is shared, so report the
    // best and the median.
    let opts = ViewOptions {
        passthrough,
        ..ViewOptions::default()
    };
    let mut mounts = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let g = mount(&odb, names.iter().cloned(), work.join("mnt"), opts.clone()).unwrap();
        fs::metadata(work.join("mnt").join(&names[0]).join("bin/run")).unwrap();
        mounts.push(t.elapsed());
        g.unmount().unwrap();
    }
    println!(
        "mount view samples (in order, the first is the first mount of this process): {:?}",
        mounts
            .iter()
            .map(|d| format!("{:.2} ms", d.as_secs_f64() * 1000.0))
            .collect::<Vec<_>>()
    );
    mounts.sort();
    let t_mount = mounts[2];
    println!(
        "usable: unpack (NAR restore) {}, mount view best {:.2} ms, median {:.2} ms  => {:.0}x",
        secs(t_unpack),
        mounts[0].as_secs_f64() * 1000.0,
        t_mount.as_secs_f64() * 1000.0,
        t_unpack.as_secs_f64() / t_mount.as_secs_f64()
    );
    let guard = mount(&odb, names.iter().cloned(), work.join("mnt"), opts).unwrap();

    // The same with 100,000 more declared (absent) paths: names are only
    // put in a set, nothing is resolved per path.
    fs::create_dir_all(work.join("mnt2")).unwrap();
    let mut many: Vec<String> = (0..100_000).map(|i| format!("{i:032}-decl")).collect();
    many.extend(names.iter().cloned());
    let t = Instant::now();
    let set = b3_vfs::view::closure(many).unwrap();
    let t_set = t.elapsed();
    let t = Instant::now();
    let g2 =
        b3_vfs::view::mount_closure(&odb, set, work.join("mnt2"), ViewOptions::default()).unwrap();
    fs::metadata(work.join("mnt2").join(&names[0]).join("bin/run")).unwrap();
    let t_mount_many = t.elapsed();
    g2.unmount().unwrap();
    println!(
        "usable: mount view declaring 100,020 paths {:.2} ms (+ {:.2} ms checking and hashing the 100,020 names, once per closure)",
        t_mount_many.as_secs_f64() * 1000.0,
        t_set.as_secs_f64() * 1000.0
    );

    let mut buf = vec![0u8; 1 << 20];
    let expected_files = g.files + paths;
    let min_bytes = g.bytes;
    // Wall clock, and CPU time (user + system) of this whole process, which
    // includes the view's server threads: on a shared, loaded machine the
    // CPU time is the steadier measure of the work each way costs.
    let mut cpu_log: Vec<(Duration, Duration)> = Vec::new();
    let mut timed = |root: &Path| {
        let c = cpu_time();
        let t = Instant::now();
        let (f, b) = read_all(root, &mut buf);
        assert_eq!(f, expected_files, "every file read");
        assert!(b >= min_bytes);
        (t.elapsed(), cpu_time() - c)
    };
    // First reads once each (after emptying the page cache if asked).
    if drop {
        drop_caches();
    }
    let (u1, u1c) = timed(&work.join("unpacked"));
    cpu_log.push((u1, u1c));
    if drop {
        drop_caches();
    }
    let before = guard.stats();
    let (v1, v1c) = timed(&work.join("mnt"));
    cpu_log.push((v1, v1c));
    let after_first = guard.stats();
    // Second reads: rounds alternating between the two trees, so a change
    // in the machine's load hits both alike; each round's ratio is kept.
    let rounds = 7;
    let mut us = Vec::new();
    let mut vs = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..rounds {
        let (u, uc) = timed(&work.join("unpacked"));
        cpu_log.push((u, uc));
        let s0 = guard.stats();
        let (v, vc) = timed(&work.join("mnt"));
        cpu_log.push((v, vc));
        let s1 = guard.stats();
        let n = cpu_log.len();
        eprintln!(
            "  round: unpacked {:.3} s ({:.3} s CPU), view {:.3} s ({:.3} s CPU; {} opens, {} reads served)",
            u.as_secs_f64(),
            cpu_log[n - 2].1.as_secs_f64(),
            v.as_secs_f64(),
            cpu_log[n - 1].1.as_secs_f64(),
            s1.opens - s0.opens,
            s1.reads - s0.reads
        );
        ratios.push(v.as_secs_f64() / u.as_secs_f64());
        us.push(u);
        vs.push(v);
    }
    let later = guard.stats();
    // cpu_log: [u1, v1, then (u, v) per round].
    let mut cpu_ratios: Vec<f64> = cpu_log[2..]
        .chunks(2)
        .map(|p| p[1].1.as_secs_f64() / p[0].1.as_secs_f64().max(1e-6))
        .collect();
    cpu_ratios.sort_by(f64::total_cmp);
    let cpu_ms = |i: usize| cpu_log[i].1.as_secs_f64() * 1000.0;
    println!(
        "CPU (user+sys, whole process): first read unpacked {:.0} ms, view {:.0} ms; second read per round view/unpacked best {:.2}x, median {:.2}x, worst {:.2}x",
        cpu_ms(0),
        cpu_ms(1),
        cpu_ratios[0],
        cpu_ratios[rounds / 2],
        cpu_ratios[rounds - 1]
    );
    us.sort();
    vs.sort();
    ratios.sort_by(f64::total_cmp);
    let (u2, u2m, v2, v2m) = (us[0], us[rounds / 2], vs[0], vs[rounds / 2]);
    let mb = g.bytes as f64 / 1048576.0;
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!(
        "read all, unpacked: first {} ({:.0} MiB/s), second best {} ({:.0} MiB/s), median {}",
        secs(u1),
        rate(u1),
        secs(u2),
        rate(u2),
        secs(u2m)
    );
    println!(
        "read all, view:     first {} ({:.0} MiB/s), second best {} ({:.0} MiB/s), median {}",
        secs(v1),
        rate(v1),
        secs(v2),
        rate(v2),
        secs(v2m)
    );
    let per = |a: u64, b: u64| a.saturating_sub(b);
    println!(
        "requests served: first read {} opens, {} reads; {rounds} second reads {} opens, {} reads, {} lookups, {} readdirs",
        per(after_first.opens, before.opens),
        per(after_first.reads, before.reads),
        per(later.opens, after_first.opens),
        per(later.reads, after_first.reads),
        per(later.lookups, after_first.lookups),
        per(later.readdirs, after_first.readdirs),
    );
    println!(
        "ratios view/unpacked: first read {:.2}x, second read per round best {:.2}x, median {:.2}x, worst {:.2}x (target <= 1.5x); mount + first view read vs unpack + first read: {:.2}x",
        v1.as_secs_f64() / u1.as_secs_f64(),
        ratios[0],
        ratios[rounds / 2],
        ratios[rounds - 1],
        (v1 + t_mount).as_secs_f64() / (u1 + t_unpack).as_secs_f64()
    );
    println!(
        "load average: {}",
        fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    guard.unmount().unwrap();
    let _ = fs::remove_dir_all(&work);
}
