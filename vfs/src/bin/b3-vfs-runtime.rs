//! The runtime server as a stand-alone program (the `b3` CLI runs the same
//! code as `b3 runtime serve`): `b3-vfs-runtime serve <spec args>`, started
//! through `b3_vfs::runtime::launch`.

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if args.first().and_then(|a| a.to_str()) != Some("serve") {
        eprintln!("usage: b3-vfs-runtime serve --odb DIR [--store-dir DIR] [--registry DIR] [--trace FILE] [--path NAME]... -- CMD [ARG]...");
        return std::process::ExitCode::from(2);
    }
    match b3_vfs::runtime::serve_main(&args[1..]) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("b3-vfs-runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn main() -> std::process::ExitCode {
    eprintln!("b3-vfs-runtime: runtimes need Linux namespaces and FUSE");
    std::process::ExitCode::FAILURE
}
