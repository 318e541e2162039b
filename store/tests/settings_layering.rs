//! Settings layering as Nix does it: system file, user files, includes,
//! `extra-`, `NIX_CONFIG`, command line; provenance of every value; unknown
//! names as warnings; bad values and missing includes as errors naming the
//! file and line.

use std::fs;
use std::path::{Path, PathBuf};

use b3_store::settings::{Config, ConfigEnv, Origin, SandboxMode, SettingsError, Warning};

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&p, text).unwrap();
    p
}

fn file_origin(path: &Path, line: usize) -> Origin {
    Origin::File {
        path: path.to_path_buf(),
        line,
    }
}

#[test]
fn layered_files_includes_extra_and_nix_config() {
    let t = tempfile::tempdir().unwrap();
    let sys = write(
        t.path(),
        "etc/nix.conf",
        "# system\nsubstituters = https://a.example/\nmax-jobs = 4\ninclude sub/more.conf\n!include absent.conf\nsandbox = relaxed\n",
    );
    let more = write(
        t.path(),
        "etc/sub/more.conf",
        "extra-substituters = https://b.example/\ncores = 3\n",
    );
    let u1 = write(t.path(), "u1.conf", "cores = 5\nkeep-failed = true\n");
    let u2 = write(t.path(), "u2.conf", "cores = 6\nlog-lines = 1K\n");
    let env = ConfigEnv {
        nix_conf_dir: t.path().join("etc"),
        user_files: vec![u1.clone(), u2.clone()],
        nix_config: Some("extra-substituters = https://c.example/\nrequire-sigs = false".into()),
    };
    let c = Config::load(&env).unwrap();
    let s = &c.settings;
    assert_eq!(
        s.substituters.0,
        [
            "https://a.example/",
            "https://b.example/",
            "https://c.example/"
        ]
    );
    assert_eq!(s.max_jobs.0, 4);
    // NIX_USER_CONF_FILES order: the first listed file wins.
    assert_eq!(s.cores, 5);
    assert!(s.keep_failed);
    assert_eq!(s.log_lines, 1024);
    assert_eq!(s.sandbox, SandboxMode::Relaxed);
    assert!(!s.require_sigs);

    let p = c.provenance("substituters").unwrap();
    assert_eq!(p.set, file_origin(&sys, 2));
    assert_eq!(
        p.appended,
        vec![file_origin(&more, 1), Origin::NixConfig { line: 1 }]
    );
    assert_eq!(c.provenance("cores").unwrap().set, file_origin(&u1, 1));
    assert_eq!(c.provenance("log-lines").unwrap().set, file_origin(&u2, 2));
    assert_eq!(
        c.provenance("require-sigs").unwrap().set,
        Origin::NixConfig { line: 2 }
    );
    assert_eq!(c.provenance("fallback").unwrap().set, Origin::Default);
    assert_eq!(c.files_read(), [sys, more, u2, u1]);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn command_line_overrides_everything() {
    let t = tempfile::tempdir().unwrap();
    write(
        t.path(),
        "nix.conf",
        "cores = 2\nsubstituters = x\nsandbox = true\nkeep-going = true\n",
    );
    let mut c = Config::load(&ConfigEnv {
        nix_config: Some("cores = 3".into()),
        ..ConfigEnv::isolated(t.path())
    })
    .unwrap();
    let args: Vec<String> = [
        "build",
        "--option",
        "cores",
        "9",
        "--extra-substituters",
        "y",
        "--no-sandbox",
        "--keep-failed",
        "-j",
        "auto",
        "--store",
        "/my/root",
        "--max-silent-time",
        "7",
        "--no-keep-going",
        "--",
        "--cores",
        "1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let rest = c.take_setting_args(args, &["--store"]).unwrap();
    assert_eq!(rest, ["build", "--store", "/my/root", "--", "--cores", "1"]);
    let s = &c.settings;
    assert_eq!(s.cores, 9);
    assert_eq!(s.substituters.0, ["x", "y"]);
    assert_eq!(s.sandbox, SandboxMode::Disabled);
    assert!(s.keep_failed);
    assert!(!s.keep_going);
    assert_eq!(
        s.max_jobs.0,
        std::thread::available_parallelism().unwrap().get() as u64
    );
    assert_eq!(s.max_silent_time, 7);
    assert_eq!(
        c.provenance("cores").unwrap().set,
        Origin::CommandLine {
            flag: "--option cores".into()
        }
    );
    assert_eq!(
        c.provenance("sandbox").unwrap().set,
        Origin::CommandLine {
            flag: "--no-sandbox".into()
        }
    );
    let err = c
        .take_setting_args(vec!["--option".into(), "cores".into()], &[])
        .unwrap_err();
    assert!(
        matches!(err, SettingsError::MissingFlagValue { .. }),
        "{err}"
    );
}

#[test]
fn aliases_and_extra_on_aliases() {
    let mut c = Config::new("/nonexistent");
    c.apply_nix_config("binary-caches = q\nextra-binary-caches = r\nbuild-max-jobs = 2\nextra-sandbox-paths = /bin/sh=/x/sh? /dev/kvm")
        .unwrap();
    assert_eq!(c.settings.substituters.0, ["q", "r"]);
    assert_eq!(c.settings.max_jobs.0, 2);
    let paths: Vec<_> = c
        .settings
        .sandbox_paths
        .0
        .iter()
        .map(|p| (p.target.as_str(), p.source.as_str(), p.optional))
        .collect();
    assert_eq!(
        paths,
        [("/bin/sh", "/x/sh", true), ("/dev/kvm", "/dev/kvm", false)]
    );
    assert_eq!(
        c.provenance("binary-caches").unwrap().set,
        Origin::NixConfig { line: 1 }
    );
}

#[test]
fn unknown_names_are_collected_warnings() {
    let t = tempfile::tempdir().unwrap();
    let f = write(
        t.path(),
        "nix.conf",
        "foo-bar = 1\nextra-log-lines = 3\ntrusted-users = root alice\nextra-trusted-users = bob\nexperimental-features = nix-command warp-drive\n",
    );
    let mut c = Config::load(&ConfigEnv::isolated(t.path())).unwrap();
    c.apply_option("no-such", "x").unwrap();
    assert_eq!(
        c.warnings(),
        [
            Warning::UnknownSetting {
                name: "foo-bar".into(),
                origin: file_origin(&f, 1)
            },
            // `extra-` on a non-list setting is an unknown name, as in Nix.
            Warning::UnknownSetting {
                name: "extra-log-lines".into(),
                origin: file_origin(&f, 2)
            },
            Warning::UnknownExperimentalFeature {
                feature: "warp-drive".into(),
                origin: file_origin(&f, 5)
            },
            Warning::UnknownSetting {
                name: "no-such".into(),
                origin: Origin::CommandLine {
                    flag: "--option no-such".into()
                }
            },
        ]
    );
    // Recognised Nix settings b3 does not act on are kept, not warned about.
    assert_eq!(c.opaque_value("trusted-users"), Some("root alice bob"));
    assert!(c.settings.has_feature("nix-command"));
    assert_eq!(
        c.warnings()[0].to_string(),
        format!("unknown setting 'foo-bar' ({}:1)", f.display())
    );
}

#[test]
fn bad_values_name_file_and_line() {
    let t = tempfile::tempdir().unwrap();
    let cases = [
        ("cores = x\n", "setting 'cores' has invalid value 'x'"),
        (
            "\nrequire-sigs = maybe\n",
            "Boolean setting 'require-sigs' has invalid value 'maybe'",
        ),
        (
            "\n\nmax-jobs = lots\n",
            "configuration setting 'max-jobs' should be 'auto' or an integer",
        ),
        (
            "sandbox = sometimes\n",
            "option 'sandbox' has invalid value 'sometimes'",
        ),
        (
            "log-lines = 2 3\n",
            "setting 'log-lines' has invalid value '2 3'",
        ),
        (
            "log-lines = 3Q\n",
            "setting 'log-lines' has invalid value '3Q'",
        ),
    ];
    for (text, msg) in cases {
        let f = write(t.path(), "nix.conf", text);
        let line = text.find(|c: char| c != '\n').unwrap() + 1;
        let err = Config::load(&ConfigEnv::isolated(t.path())).unwrap_err();
        assert_eq!(err.to_string(), format!("{}:{line}: {msg}", f.display()));
    }
    let f = write(t.path(), "nix.conf", "ok = 1\nlog-lines=2\n");
    let err = Config::load(&ConfigEnv::isolated(t.path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: illegal configuration line 'log-lines=2'",
            f.display()
        )
    );
}

#[test]
fn missing_or_unreadable_mandatory_include_is_an_error() {
    let t = tempfile::tempdir().unwrap();
    let f = write(t.path(), "nix.conf", "cores = 1\ninclude gone.conf\n");
    let err = Config::load(&ConfigEnv::isolated(t.path())).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}:2: included file '{}' not found",
            f.display(),
            t.path().join("gone.conf").display()
        )
    );
    // A directory cannot be read as a file.
    fs::create_dir(t.path().join("dir.conf")).unwrap();
    write(t.path(), "nix.conf", "include dir.conf\n");
    let err = Config::load(&ConfigEnv::isolated(t.path())).unwrap_err();
    assert!(
        matches!(err, SettingsError::UnreadableInclude { .. }),
        "{err}"
    );
    // Optional includes of either kind are skipped.
    write(
        t.path(),
        "nix.conf",
        "!include gone.conf\n!include dir.conf\ncores = 4\n",
    );
    assert_eq!(
        Config::load(&ConfigEnv::isolated(t.path()))
            .unwrap()
            .settings
            .cores,
        4
    );
    // A missing top-level file is not an error at all.
    let none = Config::load(&ConfigEnv::isolated(t.path().join("nowhere"))).unwrap();
    assert!(none.files_read().is_empty());
}

#[test]
fn include_cycles_stop_with_an_error() {
    let t = tempfile::tempdir().unwrap();
    write(t.path(), "nix.conf", "include a.conf\n");
    write(t.path(), "a.conf", "include nix.conf\n");
    let err = Config::load(&ConfigEnv::isolated(t.path())).unwrap_err();
    assert!(matches!(err, SettingsError::IncludeTooDeep { .. }), "{err}");
}

#[test]
fn nix_config_relative_include_is_refused_absolute_works() {
    let t = tempfile::tempdir().unwrap();
    let inc = write(t.path(), "inc.conf", "cores = 12\n");
    let mut c = Config::new(t.path());
    let err = c.apply_nix_config("include inc.conf").unwrap_err();
    assert_eq!(
        err.to_string(),
        "NIX_CONFIG:1: relative include 'inc.conf' is only allowed inside a file"
    );
    c.apply_nix_config(&format!("include {}", inc.display()))
        .unwrap();
    assert_eq!(c.settings.cores, 12);
    assert_eq!(c.provenance("cores").unwrap().set, file_origin(&inc, 1));
}

#[test]
fn show_json_has_values_defaults_and_origins() {
    let t = tempfile::tempdir().unwrap();
    let f = write(
        t.path(),
        "nix.conf",
        "keep-outputs = true\nauto-optimise-store = true\n",
    );
    let c = Config::load(&ConfigEnv::isolated(t.path())).unwrap();
    let j = c.to_json();
    assert_eq!(j["keep-outputs"]["value"], true);
    assert_eq!(j["keep-outputs"]["defaultValue"], false);
    assert_eq!(j["keep-outputs"]["origin"]["kind"], "file");
    assert_eq!(
        j["keep-outputs"]["origin"]["path"],
        f.to_string_lossy().as_ref()
    );
    assert_eq!(j["keep-outputs"]["origin"]["line"], 1);
    assert_eq!(j["auto-optimise-store"]["value"], true);
    assert_eq!(j["auto-optimise-store"]["interpreted"], false);
    assert_eq!(j["substituters"]["value"][0], "https://cache.nixos.org/");
    assert_eq!(j["substituters"]["origin"]["kind"], "default");
    assert_eq!(
        j["builders"]["value"],
        format!("@{}/machines", t.path().display())
    );
    let names: Vec<&str> = c.entries().iter().map(|e| e.name).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(names.len() > 100);
}
