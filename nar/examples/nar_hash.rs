//! `cargo run --release --example nar_hash -- [--single] PATH`: prints the
//! NAR hash (base32) and size of PATH; used to measure hash_path alone.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let single = args.iter().any(|a| a == "--single");
    let Some(path) = args.iter().find(|a| !a.starts_with("--")) else {
        eprintln!("usage: nar_hash [--single] PATH");
        std::process::exit(2);
    };
    let h = if single {
        b3_nar::hash_path_single_threaded(path.as_ref())
    } else {
        b3_nar::hash_path(path.as_ref())
    };
    match h {
        Ok(h) => println!("{} {}", h.to_nix_base32(), h.size),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
