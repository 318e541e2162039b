//! Runs a shell command in the sandbox with the store busybox (manual check).
use b3_builder::sandbox::{run, SandboxPath, SandboxSpec};
use std::path::PathBuf;

fn main() {
    let script = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "id; ls -la /; hostname".into());
    let tmp = std::env::temp_dir().join(format!("b3-smoke-{}", std::process::id()));
    for d in ["root", "build", "store"] {
        std::fs::create_dir_all(tmp.join(d)).unwrap();
    }
    let bb = "b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";
    let spec = SandboxSpec {
        builder: format!("/nix/store/{bb}/bin/sh"),
        args: vec!["-c".into(), script],
        env: vec![("PATH".into(), format!("/nix/store/{bb}/bin"))],
        env_bytes: Vec::new(),
        logical_store_dir: "/nix/store".into(),
        physical_store_dir: PathBuf::from("/nix/store"),
        inputs: vec![bb.into()],
        store_dir_host: tmp.join("store"),
        build_dir: tmp.join("build"),
        root_dir: tmp.join("root"),
        scratch_dir: None,
        made_points: Default::default(),
        network: false,
        extra_paths: vec![SandboxPath::parse("/bin/sh=/bin/busybox").unwrap()],
        kvm: true,
        timeout: None,
        max_silent: None,
        cancel: None,
        pool: None,
    };
    let mut out = std::io::stdout();
    let r = run(&spec, &mut out);
    println!("{r:?}");
    let _ = std::fs::remove_dir_all(&tmp);
}
