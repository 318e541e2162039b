//! Differential tests against real Nix 2.8: the same nix.conf layering gives
//! the same values (`nix show-config --json`), and b3's internal-json log
//! lines have the shape Nix's `nix-build --log-format internal-json` has.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use b3_store::activity::{
    parse_json_line, ActivityType, JsonDialect, JsonMessage, JsonSink, Logger, Verbosity,
};
use b3_store::settings::{Config, ConfigEnv};

fn require_nix() {
    let ok = Command::new("nix")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "real Nix is needed for this test: run scripts/setup-test-deps.sh"
    );
}

/// Typed settings whose values Nix 2.8 prints the same way b3 does.
const COMPARED: &[&str] = &[
    "substituters",
    "trusted-substituters",
    "trusted-public-keys",
    "require-sigs",
    "max-jobs",
    "cores",
    "sandbox",
    "sandbox-paths",
    "sandbox-fallback",
    "keep-outputs",
    "keep-derivations",
    "keep-failed",
    "keep-going",
    "fallback",
    "substitute",
    "max-silent-time",
    "timeout",
    "connect-timeout",
    "secret-key-files",
    "store",
    "build-users-group",
    "log-lines",
    "narinfo-cache-negative-ttl",
    "narinfo-cache-positive-ttl",
    "http-connections",
];

fn nix_show_config(
    conf_dir: &Path,
    user_files: &str,
    nix_config: &str,
    args: &[&str],
) -> serde_json::Value {
    let out = Command::new("nix")
        .args(["show-config", "--json"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", conf_dir)
        .env("NIX_CONF_DIR", conf_dir)
        .env("NIX_USER_CONF_FILES", user_files)
        .env("NIX_CONFIG", nix_config)
        .output()
        .expect("running nix show-config");
    assert!(
        out.status.success(),
        "nix show-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("nix show-config --json output")
}

fn nix_show_text(conf_dir: &Path, user_files: &str, nix_config: &str) -> BTreeMap<String, String> {
    let out = Command::new("nix")
        .arg("show-config")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", conf_dir)
        .env("NIX_CONF_DIR", conf_dir)
        .env("NIX_USER_CONF_FILES", user_files)
        .env("NIX_CONFIG", nix_config)
        .output()
        .expect("running nix show-config");
    assert!(
        out.status.success(),
        "nix show-config failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(" = ")
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect()
}

#[test]
fn layered_config_values_match_nix() {
    require_nix();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(
        d.join("nix.conf"),
        "experimental-features = nix-command\n\
         substituters = https://a.example/ https://b.example/   # comment\n\
         trusted-substituters = z a z\n\
         trusted-public-keys = k2:AAAA k1:BBBB k2:AAAA\n\
         require-sigs = no\n\
         max-jobs = auto\n\
         sandbox = relaxed\n\
         sandbox-paths = /b /a=/x /c?\n\
         extra-sandbox-paths = /d\n\
         build-max-silent-time = 30\n\
         include sub/more.conf\n\
         !include nope.conf\n\
         keep-going = 1\n\
         build-users-group =\n\
         store = /tmp/somewhere\n",
    )
    .unwrap();
    fs::write(
        d.join("sub/more.conf"),
        "extra-substituters = https://c.example/\ncores = 7\nkeep-outputs = true\ntimeout = 99\n",
    )
    .unwrap();
    fs::write(d.join("u1.conf"), "cores = 3\nlog-lines = 40\n").unwrap();
    fs::write(
        d.join("u2.conf"),
        "cores = 4\nfallback = true\nhttp-connections = 8\n",
    )
    .unwrap();
    let user_files = format!(
        "{}:{}",
        d.join("u1.conf").display(),
        d.join("u2.conf").display()
    );
    let nix_config = "extra-trusted-public-keys = k0:CCCC\nnarinfo-cache-negative-ttl = 60\nsecret-key-files = /k/a /k/b";
    let flags = [
        "--option",
        "connect-timeout",
        "5",
        "--extra-substituters",
        "https://d.example/",
        "--no-sandbox-fallback",
        "--keep-failed",
    ];

    let nix = nix_show_config(d, &user_files, nix_config, &flags);
    let env = ConfigEnv::from_vars(|k| match k {
        "NIX_CONF_DIR" => Some(d.to_string_lossy().into_owned()),
        "NIX_USER_CONF_FILES" => Some(user_files.clone()),
        "NIX_CONFIG" => Some(nix_config.to_owned()),
        _ => None,
    });
    let mut b3 = Config::load(&env).unwrap();
    let rest = b3
        .take_setting_args(flags.iter().map(|s| s.to_string()).collect(), &[])
        .unwrap();
    assert!(rest.is_empty());
    assert!(b3.warnings().is_empty(), "{:?}", b3.warnings());
    let ours = b3.to_json();
    for name in COMPARED {
        assert_eq!(ours[name]["value"], nix[name]["value"], "setting {name}");
    }
    // Nix 2.8's JSON prints experimental features as enum numbers; compare text.
    assert_eq!(
        b3.entries()
            .iter()
            .find(|e| e.name == "experimental-features")
            .unwrap()
            .value_text,
        nix_show_text(d, &user_files, nix_config)["experimental-features"]
    );
}

#[test]
fn defaults_match_nix_except_documented_differences() {
    require_nix();
    let t = tempfile::tempdir().unwrap();
    let nix_config = "experimental-features = nix-command";
    let nix = nix_show_config(t.path(), "", nix_config, &[]);
    let mut b3 = Config::new(t.path());
    b3.apply_nix_config(nix_config).unwrap();
    let ours = b3.to_json();
    // log-lines: 25 in current Nix, 10 in 2.8. build-users-group: Nix picks
    // `nixbld` when run as root; b3 builds in user namespaces instead.
    let differ: BTreeSet<&str> = ["log-lines", "build-users-group"].into();
    for name in COMPARED.iter().filter(|n| !differ.contains(*n)) {
        assert_eq!(ours[name]["value"], nix[name]["value"], "default of {name}");
    }
    assert_eq!(ours["log-lines"]["value"], 25);
    assert_eq!(nix["log-lines"]["value"], 10);
    // Settings b3 only records: same defaults as text (host-derived ones aside).
    // (`pure-eval`: its default is false, but the `nix` command turns it on
    // for itself before printing.)
    let host: BTreeSet<&str> = [
        "system-features",
        "extra-platforms",
        "system",
        "build-hook",
        "experimental-features",
        "pure-eval",
    ]
    .into();
    let nix_text = nix_show_text(t.path(), "", nix_config);
    let entries = b3.entries();
    for name in nix.as_object().unwrap().keys() {
        let e = entries.iter().find(|e| e.name == name.as_str());
        let Some(e) = e else {
            panic!("b3 does not know Nix 2.8 setting {name}")
        };
        if host.contains(name.as_str()) || COMPARED.contains(&name.as_str()) {
            continue;
        }
        assert_eq!(e.value_text, nix_text[name], "default of {name}");
    }
}

/// Replaces ids with their order of first appearance, so shapes compare.
fn shape(lines: &[String]) -> Vec<String> {
    let mut ids: Vec<u64> = Vec::new();
    lines
        .iter()
        .map(|l| {
            let mut v: serde_json::Value =
                serde_json::from_str(l.strip_prefix("@nix ").unwrap()).unwrap();
            for key in ["id", "parent"] {
                if let Some(id) = v.get(key).and_then(serde_json::Value::as_u64) {
                    let n = match ids.iter().position(|x| *x == id) {
                        Some(n) => n,
                        None if id == 0 => usize::MAX,
                        None => {
                            ids.push(id);
                            ids.len() - 1
                        }
                    };
                    v[key] = serde_json::Value::from(n);
                }
            }
            // Key order is part of the shape: serde_json (without
            // preserve_order) sorts, so compare against the raw key sequence.
            let keys: Vec<String> = raw_keys(l);
            format!("{keys:?} {v}")
        })
        .collect()
}

fn raw_keys(line: &str) -> Vec<String> {
    // Top-level keys in textual order (values here hold no `{`).
    let body = line.strip_prefix("@nix {").unwrap();
    let mut keys = Vec::new();
    let mut depth = 0;
    let mut in_str = false;
    let mut esc = false;
    let mut cur = String::new();
    let mut expecting_key = true;
    for c in body.chars() {
        if in_str {
            if esc {
                esc = false;
            } else if c == '\\' {
                esc = true;
            } else if c == '"' {
                in_str = false;
                if depth == 0 && expecting_key {
                    keys.push(std::mem::take(&mut cur));
                    expecting_key = false;
                }
                continue;
            }
            if depth == 0 && expecting_key {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '[' | '{' => depth += 1,
            ']' | '}' => depth -= 1,
            ',' if depth == 0 => expecting_key = true,
            _ => {}
        }
    }
    keys
}

#[test]
fn internal_json_build_records_have_nix_shape() {
    require_nix();
    let t = tempfile::tempdir().unwrap();
    let bb = "/nix/store/b8zzzm23p9pd6h8zbaiz806gqid7q81v-bb";
    assert!(
        Path::new(bb).exists(),
        "busybox oracle path missing: run scripts/setup-test-deps.sh"
    );
    let unique = format!("{:?}", std::time::SystemTime::now());
    let expr = format!(
        "derivation {{ name = \"b3-logshape\"; system = builtins.currentSystem; \
         builder = \"${{builtins.storePath {bb}}}/bin/sh\"; args = [\"-c\" \"echo hello; echo world >&2; echo $u > $out\"]; u = \"{unique}\"; }}"
    );
    let out = Command::new("nix-build")
        .args([
            "--log-format",
            "internal-json",
            "-v",
            "--no-out-link",
            "-E",
            &expr,
        ])
        .current_dir(t.path())
        .output()
        .expect("running nix-build");
    assert!(
        out.status.success(),
        "nix-build failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nix_lines: Vec<String> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("@nix "))
        .map(str::to_owned)
        .collect();
    // Every line Nix printed parses as a record b3 understands.
    for l in &nix_lines {
        parse_json_line(l)
            .unwrap()
            .unwrap_or_else(|e| panic!("{l}: {e}"));
    }
    // Pick the build activity and its records.
    let build_start = nix_lines
        .iter()
        .find(|l| l.contains("\"type\":105") && l.contains("\"action\":\"start\""))
        .unwrap();
    let Some(Ok(JsonMessage::Start {
        id: build_id,
        fields,
        text,
        ..
    })) = parse_json_line(build_start)
    else {
        panic!("no build start")
    };
    let drv = match &fields[0] {
        b3_store::activity::Field::Str(s) => s.clone(),
        other => panic!("{other:?}"),
    };
    let nix_build: Vec<String> = nix_lines
        .iter()
        .filter(|l| l.contains(&format!("\"id\":{build_id}")))
        .cloned()
        .collect();

    // b3 emitting the same records through its API.
    let sink = Arc::new(JsonSink::new(Vec::new(), JsonDialect::Nix28));
    let logger = Logger::new(sink.clone(), Verbosity::Talkative);
    {
        let realise = logger.start(Verbosity::Error, ActivityType::Realise, "", vec![], 0);
        let b = logger.start_build(&drv, "", realise.id());
        b.log_line("hello");
        b.log_line("world");
    }
    drop(logger);
    let ours_all: Vec<String> = String::from_utf8(Arc::try_unwrap(sink).ok().unwrap().into_inner())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let our_build_id = match parse_json_line(&ours_all[1]) {
        Some(Ok(JsonMessage::Start { id, .. })) => id,
        _ => panic!("{:?}", ours_all),
    };
    let ours_build: Vec<String> = ours_all
        .iter()
        .filter(|l| l.contains(&format!("\"id\":{our_build_id}")))
        .cloned()
        .collect();
    assert!(text.starts_with("building '"));
    assert_eq!(shape(&ours_build), shape(&nix_build));
    // The realise activity's start is the same shape too.
    let nix_realise = nix_lines
        .iter()
        .find(|l| l.contains("\"type\":102"))
        .unwrap();
    assert_eq!(
        shape(std::slice::from_ref(&ours_all[0])),
        shape(std::slice::from_ref(nix_realise))
    );
}

#[test]
fn xdg_config_precedence_matches_nix() {
    require_nix();
    let t = tempfile::tempdir().unwrap();
    let d = t.path();
    for (dir, text) in [
        ("home/nix", "cores = 5\n"),
        ("d1/nix", "cores = 6\ntimeout = 11\nlog-lines = 31\n"),
        (
            "d2/nix",
            "timeout = 12\nlog-lines = 32\nconnect-timeout = 13\n",
        ),
    ] {
        fs::create_dir_all(d.join(dir)).unwrap();
        fs::write(d.join(dir).join("nix.conf"), text).unwrap();
    }
    fs::write(
        d.join("nix.conf"),
        "experimental-features = nix-command\nconnect-timeout = 1\n",
    )
    .unwrap();
    let vars: BTreeMap<&str, String> = [
        ("NIX_CONF_DIR", d.to_string_lossy().into_owned()),
        ("HOME", d.to_string_lossy().into_owned()),
        (
            "XDG_CONFIG_HOME",
            d.join("home").to_string_lossy().into_owned(),
        ),
        (
            "XDG_CONFIG_DIRS",
            format!("{}:{}", d.join("d1").display(), d.join("d2").display()),
        ),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
    ]
    .into();
    let out = Command::new("nix")
        .args(["show-config", "--json"])
        .env_clear()
        .envs(vars.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("running nix show-config");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nix: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let b3 = Config::load(&ConfigEnv::from_vars(|k| vars.get(k).cloned())).unwrap();
    let ours = b3.to_json();
    for name in ["cores", "timeout", "log-lines", "connect-timeout"] {
        assert_eq!(ours[name]["value"], nix[name]["value"], "setting {name}");
    }
    assert_eq!(ours["cores"]["value"], 5);
}
