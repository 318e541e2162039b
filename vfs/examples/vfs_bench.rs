//! Measures what a view buys over unpacking, on a generated closure.
//!
//! ```text
//! cargo run --release -p b3-vfs --example vfs_bench -- [WORKDIR] [--mib N] [--rounds N] [--drop-caches]
//! ```
//!
//! Generates a closure of store paths (NARs written with b3-nar's encoder,
//! thousands of files, at least `--mib` MiB, default 512), imports it into an
//! object database, then prints two tables:
//! - **time to usable**: restoring every NAR vs. mounting a view, and what a
//!   runtime (the `b3 shell --vfs` machinery) takes from its launch until a
//!   process inside sees a file, for the closure and for 100,020 declared
//!   paths;
//! - **full reads**: every file read once (first read, after emptying the
//!   page cache with `--drop-caches`, root only), then `--rounds` warm
//!   rounds (default 15) alternating between the unpacked tree and each view
//!   mode, with medians of wall clock and of CPU time (user + system) of the
//!   reader and of the view's server threads.
//!
//! The load average is printed with each table: the machine may be shared.
//! Also prints BLAKE3 vs SHA-256 throughput, the measurement behind the
//! object database's choice of BLAKE3.

use std::fs;
use std::io::{BufReader, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use b3_nar::NarEncoder;
use b3_vfs::odb::Odb;
use b3_vfs::runtime::{self, RuntimeSpec};
use b3_vfs::view::{mount, MountGuard, ViewOptions};

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

/// User + system CPU time so far of `who` (`RUSAGE_SELF`: every thread of
/// this process; `RUSAGE_THREAD`: the calling thread).
fn cpu_time(who: libc::c_int) -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for this process and the
/// processes of a runtime (a mount + user namespace shares it).
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn drop_caches() {
    // SAFETY: plain libc call, no memory is shared.
    unsafe { libc::sync() };
    if let Err(e) = fs::write("/proc/sys/vm/drop_caches", "3") {
        eprintln!("warning: cannot drop caches ({e}); first reads are warm");
    }
}

fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median<T: Copy + PartialOrd>(v: &[T]) -> T {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// The entry points this executable also serves: the runtime server
/// (`__serve`, as `b3 runtime serve`) and the probe a runtime runs
/// (`__probe FILE`: stat FILE, print the monotonic clock).
fn helper_main(args: &[String]) -> Option<i32> {
    match args.first().map(String::as_str) {
        Some("__serve") => {
            let rest: Vec<std::ffi::OsString> = args[1..].iter().map(Into::into).collect();
            Some(match runtime::serve_main(&rest) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("runtime server: {e}");
                    1
                }
            })
        }
        Some("__probe") => {
            let ok = fs::metadata(&args[1]).is_ok();
            let t = monotonic_ns();
            println!("{t}");
            Some(if ok { 0 } else { 1 })
        }
        _ => None,
    }
}

/// One warm or cold full read of one tree.
#[derive(Clone, Copy)]
struct Sample {
    wall: Duration,
    reader: Duration,
    server: Duration,
}

impl Sample {
    fn cpu(&self) -> Duration {
        self.reader + self.server
    }
}

struct Tree {
    label: &'static str,
    root: PathBuf,
    guard: Option<MountGuard>,
    first: Option<Sample>,
    warm: Vec<Sample>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(code) = helper_main(&args) {
        std::process::exit(code);
    }
    let mut it = args.into_iter();
    let mut work = PathBuf::from("/tmp/b3-vfs-bench");
    let mut mib: u64 = 512;
    let mut rounds: usize = 15;
    let mut drop = false;
    let mut usable = true;
    let mut only: Option<Vec<String>> = None;
    while let Some(a) = it.next() {
        match a.as_str() {
            "--mib" => mib = it.next().and_then(|v| v.parse().ok()).expect("--mib N"),
            "--rounds" => {
                rounds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&n| n > 0)
                    .expect("--rounds N")
            }
            "--drop-caches" => drop = true,
            // For profiling one part: skip the time-to-usable table, or
            // read only the views whose label contains one of the words.
            "--no-usable" => usable = false,
            "--only" => {
                only = Some(
                    it.next()
                        .expect("--only WORD,WORD")
                        .split(',')
                        .map(str::to_owned)
                        .collect(),
                )
            }
            // Kept for old command lines: every mode is measured now.
            "--no-passthrough" => {}
            _ => work = PathBuf::from(a),
        }
    }
    let _ = fs::remove_dir_all(&work);
    for d in ["nars", "unpacked", "rt-store", "registry"] {
        fs::create_dir_all(work.join(d)).unwrap();
    }
    println!("load average at start: {}", load_average());

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
    let avg = (0..10_000).map(size_of).sum::<usize>() as u64 / 10_000;
    let files_needed = (mib << 20) / avg + 1;
    let dirs = (files_needed / (paths * per_dir)).max(1) + 1;
    let mut g = Gen { files: 0, bytes: 0 };
    let t = Instant::now();
    let mut names = Vec::new();
    for p in 0..paths {
        let name = format!("{p:032}-bench-pkg-{p}");
        gen_nar(&work.join("nars").join(&name), p + 1, dirs, per_dir, &mut g);
        names.push(name);
    }
    println!(
        "generated {} store paths, {} files, {:.0} MiB in {:.2} s",
        paths,
        g.files,
        g.bytes as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let odb = Odb::open(work.join("odb")).unwrap();
    let t = Instant::now();
    for n in &names {
        let f =
            BufReader::with_capacity(1 << 20, fs::File::open(work.join("nars").join(n)).unwrap());
        odb.import_nar(n, f).unwrap();
    }
    let ti = t.elapsed();
    println!(
        "import into the ODB: {:.2} s ({:.0} MiB/s)",
        ti.as_secs_f64(),
        g.bytes as f64 / 1048576.0 / ti.as_secs_f64()
    );

    if usable {
        usable_table(&work, &odb, &names);
    } else {
        restore_all(&work, &names);
    }

    // ---- Full reads ----
    let modes: [(&'static str, ViewOptions); 3] = [
        ("view, kernel opens (default)", ViewOptions::default()),
        (
            "view, passthrough",
            ViewOptions {
                kernel_opens: false,
                ..ViewOptions::default()
            },
        ),
        (
            "view, served reads",
            ViewOptions {
                kernel_opens: false,
                passthrough: false,
                ..ViewOptions::default()
            },
        ),
    ];
    let mut trees = vec![Tree {
        label: "unpacked tree",
        root: work.join("unpacked"),
        guard: None,
        first: None,
        warm: Vec::new(),
    }];
    for (i, (label, opts)) in modes.into_iter().enumerate() {
        if only
            .as_ref()
            .is_some_and(|w| !w.iter().any(|w| label.contains(w.as_str())))
        {
            continue;
        }
        let mnt = work.join(format!("mnt{i}"));
        fs::create_dir_all(&mnt).unwrap();
        let guard = mount(&odb, names.iter().cloned(), &mnt, opts).unwrap();
        trees.push(Tree {
            label,
            root: mnt,
            guard: Some(guard),
            first: None,
            warm: Vec::new(),
        });
    }

    let mut buf = vec![0u8; 1 << 20];
    let expected_files = g.files + paths;
    let min_bytes = g.bytes;
    let mut timed = |root: &Path| {
        let (r0, p0) = (cpu_time(libc::RUSAGE_THREAD), cpu_time(libc::RUSAGE_SELF));
        let t = Instant::now();
        let (f, b) = read_all(root, &mut buf);
        let wall = t.elapsed();
        let (r1, p1) = (cpu_time(libc::RUSAGE_THREAD), cpu_time(libc::RUSAGE_SELF));
        assert_eq!(f, expected_files, "every file read");
        assert!(b >= min_bytes);
        let reader = r1 - r0;
        Sample {
            wall,
            reader,
            // The view's server threads are this process's other threads.
            server: (p1 - p0).saturating_sub(reader),
        }
    };
    let load_before = load_average();
    for tree in &mut trees {
        if drop {
            drop_caches();
        }
        tree.first = Some(timed(&tree.root));
    }
    // Emptying the page cache before one tree's first read emptied the
    // others' too: one untimed pass warms every tree again.
    if drop {
        for tree in &trees {
            read_all(&tree.root, &mut vec![0u8; 1 << 20]);
        }
    }
    // Warm rounds: every tree once per round, the order rotating, so that
    // changes in the machine's load hit every tree alike.
    for r in 0..rounds {
        let n = trees.len();
        for k in 0..n {
            let tree = &mut trees[(r + k) % n];
            tree.warm.push(timed(&tree.root));
        }
    }
    let stats: Vec<_> = trees
        .iter()
        .map(|t| t.guard.as_ref().map(MountGuard::stats))
        .collect();
    println!();
    println!(
        "full reads: {} files, {:.0} MiB; {rounds} warm rounds; load average before {load_before}, after {}",
        expected_files,
        g.bytes as f64 / 1048576.0,
        load_average()
    );
    if !drop {
        println!("(first reads are not cold: run as root with --drop-caches for that)");
    }
    println!(
        "| {:<28} | {:>10} | {:>11} | {:>11} | {:>11} | {:>9} | {:>19} | {:>9} |",
        "tree",
        "first read",
        "warm wall",
        "CPU reader",
        "CPU server",
        "CPU total",
        "wall / unpacked",
        "CPU / unp."
    );
    println!(
        "|{:-<30}|{:->12}|{:->13}|{:->13}|{:->13}|{:->11}|{:->21}|{:->11}|",
        "", "", "", "", "", "", "", ""
    );
    let base = trees[0].warm.clone();
    for tree in &trees {
        let wall = median(&tree.warm.iter().map(|s| s.wall).collect::<Vec<_>>());
        let reader = median(&tree.warm.iter().map(|s| s.reader).collect::<Vec<_>>());
        let server = median(&tree.warm.iter().map(|s| s.server).collect::<Vec<_>>());
        let cpu = median(&tree.warm.iter().map(Sample::cpu).collect::<Vec<_>>());
        // Per-round ratios against the unpacked tree's read of the same round.
        let wr: Vec<f64> = tree
            .warm
            .iter()
            .zip(&base)
            .map(|(v, u)| v.wall.as_secs_f64() / u.wall.as_secs_f64())
            .collect();
        let cr: Vec<f64> = tree
            .warm
            .iter()
            .zip(&base)
            .map(|(v, u)| v.cpu().as_secs_f64() / u.cpu().as_secs_f64().max(1e-6))
            .collect();
        let (lo, hi) = min_max(&wr);
        let first = tree.first.map(|s| s.wall).unwrap_or_default();
        println!(
            "| {:<28} | {:>7.0} ms | {:>8.1} ms | {:>8.1} ms | {:>8.1} ms | {:>6.1} ms | {:>5.2}x ({:.2}-{:.2}) | {:>8.2}x |",
            tree.label,
            ms(first),
            ms(wall),
            ms(reader),
            ms(server),
            ms(cpu),
            median(&wr),
            lo,
            hi,
            median(&cr)
        );
    }
    println!("(medians over the warm rounds; ratios are per round, median (min-max); target: warm wall <= 1.5x)");
    for (tree, st) in trees.iter().zip(stats) {
        if let Some(st) = st {
            println!(
                "  {}: requests served in all, {} opens, {} reads, {} lookups, {} readdirs",
                tree.label, st.opens, st.reads, st.lookups, st.readdirs
            );
        }
    }
    for tree in trees {
        if let Some(gd) = tree.guard {
            gd.unmount().unwrap();
        }
    }
    let _ = fs::remove_dir_all(&work);
}

/// Restores every NAR into `unpacked/`; returns the time it took.
fn restore_all(work: &Path, names: &[String]) -> Duration {
    let t = Instant::now();
    for n in names {
        let f =
            BufReader::with_capacity(1 << 20, fs::File::open(work.join("nars").join(n)).unwrap());
        b3_nar::restore(f, &work.join("unpacked").join(n)).unwrap();
    }
    t.elapsed()
}

/// Time to usable: unpacking vs. a view mount vs. a runtime's launch.
fn usable_table(work: &Path, odb: &Odb, names: &[String]) {
    let samples = 7;
    let t_unpack = restore_all(work, names);

    let mut many: Vec<String> = (0..100_000).map(|i| format!("{i:032}-decl")).collect();
    many.extend(names.iter().cloned());
    let probe = |mnt: &Path| mnt.join(&names[0]).join("bin/run");
    let mnt = work.join("mnt-usable");
    fs::create_dir_all(&mnt).unwrap();

    // A view mounted in this process, until a file inside answers stat.
    let mount_until_stat = |closure: &[String]| {
        let t = Instant::now();
        let g = mount(odb, closure.iter().cloned(), &mnt, ViewOptions::default()).unwrap();
        fs::metadata(probe(&mnt)).unwrap();
        let d = t.elapsed();
        g.unmount().unwrap();
        d
    };
    // A runtime from its launch until a process inside has seen a file
    // (what `b3 shell --vfs` waits for before its shell starts), and until
    // it has ended (unmounted, unregistered).
    let exe = std::env::current_exe().unwrap();
    let rt_store = work.join("rt-store");
    let runtime_until_stat = |closure: &[String]| {
        let spec = RuntimeSpec {
            odb: odb.root_dir().to_path_buf(),
            store_dir: rt_store.clone(),
            registry: work.join("registry"),
            trace_log: None,
            closure: closure.to_vec(),
            command: vec![
                exe.clone().into(),
                "__probe".into(),
                probe(&rt_store).into(),
            ],
        };
        let t0 = monotonic_ns();
        let t = Instant::now();
        let out = runtime::launch(&exe, &["__serve"], &spec)
            .unwrap()
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        let total = t.elapsed();
        assert!(out.status.success(), "runtime: {:?}", out.status);
        let seen: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        (Duration::from_nanos(seen - t0), total)
    };

    let load_before = load_average();
    let mut m_small = Vec::new();
    let mut m_many = Vec::new();
    let mut r_small = Vec::new();
    let mut r_many = Vec::new();
    for _ in 0..samples {
        m_small.push(mount_until_stat(names));
        m_many.push(mount_until_stat(&many));
        r_small.push(runtime_until_stat(names));
        r_many.push(runtime_until_stat(&many));
    }
    println!();
    println!(
        "time to usable ({samples} samples each, interleaved; load average before {load_before}, after {})",
        load_average()
    );
    println!(
        "| {:<58} | {:>9} | {:>9} | {:>9} |",
        "way", "median", "best", "worst"
    );
    println!("|{:-<60}|{:->11}|{:->11}|{:->11}|", "", "", "", "");
    let row = |label: &str, v: &[Duration]| {
        let mut v = v.to_vec();
        v.sort();
        println!(
            "| {:<58} | {:>6.2} ms | {:>6.2} ms | {:>6.2} ms |",
            label,
            ms(v[v.len() / 2]),
            ms(v[0]),
            ms(v[v.len() - 1])
        );
    };
    println!(
        "| {:<58} | {:>6.0} ms | {:>9} | {:>9} |",
        format!("unpack: restore {} NARs", names.len()),
        ms(t_unpack),
        "",
        ""
    );
    row(
        &format!("mount a view of {} paths, until a stat inside", names.len()),
        &m_small,
    );
    row(
        "mount a view declaring 100,020 paths, until a stat inside",
        &m_many,
    );
    let first = |v: &[(Duration, Duration)]| v.iter().map(|p| p.0).collect::<Vec<_>>();
    let whole = |v: &[(Duration, Duration)]| v.iter().map(|p| p.1).collect::<Vec<_>>();
    row(
        &format!(
            "runtime of {} paths: launch until a process inside stats",
            names.len()
        ),
        &first(&r_small),
    );
    row(
        "runtime declaring 100,020 paths: launch until a stat inside",
        &first(&r_many),
    );
    row(
        &format!(
            "runtime of {} paths: launch until it has ended",
            names.len()
        ),
        &whole(&r_small),
    );
    row(
        "runtime declaring 100,020 paths: launch until it has ended",
        &whole(&r_many),
    );
    println!("(target: usable in under 50 ms whatever the closure's size)");
}
