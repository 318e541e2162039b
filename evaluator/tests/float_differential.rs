//! Differential test of `float_fmt` against glibc `printf` (`%g`, `%f`)
//! and nlohmann::json's `dump()` (Debian `nlohmann-json3-dev`), on edge
//! cases and ≥ 1,000,000 generated doubles: uniformly random bit patterns,
//! "human" decimals (integer / power of ten), values next to rounding ties
//! and to the %g / JSON layout switch points.
//!
//! `B3_FLOAT_DIFF_COUNT` overrides the number of generated doubles.

#[path = "oracles/harness.rs"]
mod harness;

use b3_evaluator::float_fmt::{fmt_f, fmt_g, fmt_json};
use harness::Rng;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

fn edge_cases() -> Vec<f64> {
    let mut v = vec![
        0.0,
        -0.0,
        1.0,
        -1.0,
        0.1,
        0.2,
        0.3,
        1.0 / 3.0,
        2.0 / 3.0,
        123456.5,
        1234565.0,
        999999.5,
        9999995.0,
        0.00001,
        0.0001,
        0.00009999995,
        1e15,
        1e16,
        1e14,
        123456789012345.0,
        1234567890123456.0,
        1e21,
        1e22,
        1e-7,
        5e-324,
        f64::MIN_POSITIVE,
        f64::MAX,
        f64::MIN,
        f64::EPSILON,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        -f64::NAN,
        3.14157,
        2.5,
        0.5,
        1.5,
        1e100,
        1e-100,
        123.456,
        100.0,
        1e6,
        1e5,
        999999.0,
        0.000123456789,
    ];
    for e in -30..=30 {
        let p = 10f64.powi(e);
        v.extend([p, -p, p * 1.5, p * 9.999995, p * 0.5]);
    }
    v
}

fn generated(n: usize) -> Vec<f64> {
    let mut rng = Rng::new(0xf10a7);
    let mut v = Vec::with_capacity(n);
    while v.len() < n {
        let x = match v.len() % 4 {
            0 => f64::from_bits(rng.next_u64()),
            1 => {
                let m = (rng.next_u64() % 10_000_000_000) as f64;
                m / 10f64.powi(rng.below(25) as i32 - 5)
            }
            2 => {
                // Halfway cases for 6 significant digits, and neighbours.
                let m = (rng.next_u64() % 1_000_000) as f64 + 0.5;
                let x = m * 10f64.powi(rng.below(30) as i32 - 15);
                match rng.below(3) {
                    0 => x,
                    1 => f64::from_bits(x.to_bits() + 1),
                    _ => f64::from_bits(x.to_bits().saturating_sub(1)),
                }
            }
            _ => {
                let e = rng.below(40) as i32 - 20;
                let x = 10f64.powi(e) * (1.0 + (rng.next_u64() % 1000) as f64 * 1e-12);
                if rng.below(2) == 0 {
                    -x
                } else {
                    x
                }
            }
        };
        v.push(x);
    }
    v
}

fn b3_line(x: f64) -> String {
    format!("{}|{}|{}", fmt_g(x), fmt_f(x), fmt_json(x))
}

fn compare(values: &[f64]) -> (usize, Vec<String>) {
    let exe = harness::build("float_oracle", &[]);
    let mut child = Command::new(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting float oracle");
    let mut stdin = child.stdin.take().expect("stdin");
    let input: Vec<u64> = values.iter().map(|x| x.to_bits()).collect();
    let writer = std::thread::spawn(move || {
        let mut w = std::io::BufWriter::new(&mut stdin);
        for b in input {
            writeln!(w, "{b:016x}").expect("writing to oracle");
        }
    });
    let reader = BufReader::new(child.stdout.take().expect("stdout"));
    let mut diffs = Vec::new();
    let mut n = 0;
    for (line, &x) in reader.lines().zip(values) {
        let want = line.expect("oracle line");
        let got = b3_line(x);
        n += 1;
        if got != want {
            diffs.push(format!("{x:e} ({:016x}): C {want} / b3 {got}", x.to_bits()));
        }
    }
    writer.join().expect("writer");
    assert!(child.wait().expect("oracle exit").success());
    assert_eq!(n, values.len(), "oracle answered every value");
    (n, diffs)
}

fn report(name: &str, (n, diffs): (usize, Vec<String>)) {
    eprintln!("{name}: {n} doubles, {} differences", diffs.len());
    for d in diffs.iter().take(30) {
        eprintln!("  {d}");
    }
    assert!(diffs.is_empty(), "{name}: {} differences", diffs.len());
}

#[test]
fn edge_cases_match_glibc_and_nlohmann() {
    report("edge cases", compare(&edge_cases()));
}

#[test]
fn a_million_doubles_match_glibc_and_nlohmann() {
    let n = std::env::var("B3_FLOAT_DIFF_COUNT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    report("generated", compare(&generated(n)));
}
