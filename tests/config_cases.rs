//! Data-driven configuration tests, after Telegraf's `testcases/`: each folder under
//! `tests/config_cases/` holds a `facilityd.toml` (and maybe `conf.d/` and an `env` file of
//! FACILITYD_* variables) and either `expected.err` (the exact errors, one a line, paths
//! relative to the case folder) or `expected.warn` (it must load, with exactly these warnings).

use std::collections::HashMap;
use std::path::Path;

fn read_lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn config_cases() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases");
    let mut cases: Vec<_> = std::fs::read_dir(&root)
        .expect("tests/config_cases")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(
        cases.len() >= 10,
        "expected the config cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let name = case.file_name().unwrap().to_string_lossy().to_string();
        let env: HashMap<String, String> = read_lines(&case.join("env"))
            .iter()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let prefix = format!("{}/", case.display());
        let result = facilityd::settings::load_with_env(&case.join("facilityd.toml"), env);
        let err_file = case.join("expected.err");
        let warn_file = case.join("expected.warn");
        match result {
            Err(e) if err_file.exists() => {
                let got: Vec<String> =
                    e.0.iter()
                        .map(|i| i.to_string().replace(&prefix, ""))
                        .collect();
                let want = read_lines(&err_file);
                if got != want {
                    failures.push(format!(
                        "{name}: errors differ\n  got:  {got:#?}\n  want: {want:#?}"
                    ));
                }
            }
            Err(e) => failures.push(format!("{name}: expected success, got errors:\n{e}")),
            Ok(_) if err_file.exists() => {
                failures.push(format!("{name}: expected errors, but the config loaded"))
            }
            Ok(s) => {
                let got: Vec<String> = s.warnings.iter().map(|w| w.replace(&prefix, "")).collect();
                let want = read_lines(&warn_file);
                if got != want {
                    failures.push(format!(
                        "{name}: warnings differ\n  got:  {got:#?}\n  want: {want:#?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn check_never_prints_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("influx-token");
    std::fs::write(&token, "tok-5up3r-s3cr3t\n").unwrap();
    let cfg = dir.path().join("facilityd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw\"\n[influxdb]\nurl = \"http://127.0.0.1:8086\"\norg = \"o\"\nbucket = \"b\"\ntoken_file = \"{}\"\n\n[[devices]]\nid = \"P-1\"\nprofile = \"pump\"\nmodbus = {{ url = \"tcp://127.0.0.1:1502\", unit = 1 }}\n",
            token.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facilityd"))
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("token set"), "{text}");
    assert!(!text.contains("s3cr3t"), "check printed the token:\n{text}");
    // Through the environment too, and in Debug output of the settings.
    let env = HashMap::from([(
        "FACILITYD_INFLUXDB__TOKEN".to_string(),
        "env-s3cr3t".to_string(),
    )]);
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&format!("token_file = \"{}\"\n", token.display()), ""),
    )
    .unwrap();
    let s = facilityd::settings::load_with_env(&cfg, env).unwrap();
    match &s.influxdb.as_ref().unwrap().api {
        facilityd::config::InfluxApi::V2 { token, .. } => assert_eq!(token.0, "env-s3cr3t"),
        other => panic!("expected API v2, found {other:?}"),
    }
    assert!(!format!("{s:?}").contains("s3cr3t"));

    // API v1: the password from a file and from the environment.
    let password = dir.path().join("influx-password");
    std::fs::write(&password, "pw-5up3r-s3cr3t\n").unwrap();
    std::fs::write(
        &cfg,
        format!(
            "[gateway]\nid = \"gw\"\n[influxdb]\napi = \"v1\"\nurl = \"http://127.0.0.1:8086\"\ndatabase = \"d\"\nusername = \"u\"\npassword_file = \"{}\"\n",
            password.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facilityd"))
        .args(["check", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("user \"u\" password set"), "{text}");
    assert!(
        !text.contains("s3cr3t"),
        "check printed the password:\n{text}"
    );
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace(&format!("password_file = \"{}\"\n", password.display()), ""),
    )
    .unwrap();
    let env = HashMap::from([(
        "FACILITYD_INFLUXDB__PASSWORD".to_string(),
        "env-s3cr3t".to_string(),
    )]);
    let s = facilityd::settings::load_with_env(&cfg, env).unwrap();
    match &s.influxdb.as_ref().unwrap().api {
        facilityd::config::InfluxApi::V1 { password, .. } => assert_eq!(password.0, "env-s3cr3t"),
        other => panic!("expected API v1, found {other:?}"),
    }
    assert!(!format!("{s:?}").contains("s3cr3t"));
}

#[test]
fn check_exits_1_and_names_the_key() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/config_cases/unit_out_of_range/facilityd.toml");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_facilityd"))
        .args(["check", "-c"])
        .arg(&case)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("devices[1].modbus.unit"), "{err}");
}
