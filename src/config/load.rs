//! Reading the config file, `conf.d/*.toml` beside it, and FACILITYD_* environment variables.
//!
//! The `config` crate merges tables key by key but replaces arrays, and its errors lose the file
//! and garble the key path (`devices[1]modbus.unit`). So each file is first deserialized on its
//! own through `serde_path_to_error`, which gives exact paths with the file name; the sections
//! are then merged by the `config` crate (files, then environment), and the arrays of tables
//! (`devices`, `profiles`, `rules`, `notify`) are concatenated here in file order.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use config::{Config, Environment, File, FileFormat};
use serde::de::DeserializeOwned;

use super::schema::FileConfig;
use super::{ConfigError, ConfigIssue};

/// An array item with the file it came from and its index there.
#[derive(Debug, Clone)]
pub(crate) struct Sourced<T> {
    pub file: String,
    pub index: usize,
    pub item: T,
}

/// Everything read from disk, before validation.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub main: FileConfig,
    pub files: Vec<PathBuf>,
    pub devices: Vec<Sourced<super::schema::DeviceConfig>>,
    pub profiles: Vec<Sourced<crate::profile::ProfileConfig>>,
    pub rules: Vec<Sourced<config::Value>>,
    pub notify: Vec<Sourced<config::Value>>,
}

fn issue(file: &Path, path: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError(vec![ConfigIssue {
        file: file.display().to_string(),
        path: path.into(),
        message: message.into(),
    }])
}

/// Deserializes through serde_path_to_error so the key path survives.
fn deserialize<T: DeserializeOwned>(cfg: Config, file: &str) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize::<_, T>(cfg).map_err(|e| {
        let path = e.path().to_string();
        let message = clean_message(&e.inner().to_string(), ENUM_VALUES);
        ConfigError(vec![ConfigIssue {
            file: file.to_string(),
            path: if path == "." { String::new() } else { path },
            message,
        }])
    })
}

/// The values of the config's enums, for messages the config crate words as "enum X does not
/// have variant constructor Y".
const ENUM_VALUES: &[(&str, &str)] = &[
    ("ByteOrder", "ABCD, DCBA, BADC, CDAB"),
    ("RegisterKind", "holding, input, coil, discrete"),
    (
        "DataType",
        "bool, u16, i16, u32, i32, u64, i64, f32, f64, string",
    ),
    ("PointKind", "gauge, counter, state, alarm, event"),
    (
        "DeviceType",
        "elevator, pump, fire_panel, access_door, other",
    ),
    ("TimestampFormat", "rfc3339, epoch_s, epoch_ms, epoch_ns"),
];

/// The config crate appends its own (garbled) location to some messages; ours is exact. Its
/// "enum X does not have variant constructor Y" becomes "expected one of ..., found Y" with the
/// values of X from `enums` (name, values). Every deserialization error of the configuration,
/// wherever its section is validated, goes through here.
pub fn clean_message(msg: &str, enums: &[(&str, &str)]) -> String {
    let msg = match msg.find(" for key `") {
        Some(i) => &msg[..i],
        None => msg,
    };
    if let Some(rest) = msg.strip_prefix("enum ")
        && let Some((name, value)) = rest.split_once(" does not have variant constructor ")
        && let Some((_, values)) = enums.iter().find(|(n, _)| *n == name)
    {
        return format!("expected one of {values}, found {:?}", value.trim());
    }
    let msg = match msg.find(" in ") {
        Some(i) if msg[i..].contains(".toml") => &msg[..i],
        _ => msg,
    };
    msg.to_string()
}

fn conf_d_files(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = main.parent().unwrap_or(Path::new(".")).join("conf.d");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(issue(
                &dir,
                "",
                format!("cannot read the conf.d directory: {e}"),
            ));
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && p.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// Reads the file at `path`, `conf.d/*.toml` beside it and the FACILITYD_* variables in `env`.
pub(crate) fn read_all(path: &Path, env: HashMap<String, String>) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| issue(path, "", format!("cannot read the config file: {e}")))?;
    let mut files = vec![path.to_path_buf()];
    files.extend(conf_d_files(path)?);
    let mut sources = vec![text];
    for f in &files[1..] {
        sources.push(
            std::fs::read_to_string(f).map_err(|e| issue(f, "", format!("cannot read: {e}")))?,
        );
    }

    let mut loaded = Loaded {
        main: FileConfig::default(),
        files: files.clone(),
        devices: Vec::new(),
        profiles: Vec::new(),
        rules: Vec::new(),
        notify: Vec::new(),
    };
    let mut merged = Config::builder();
    for (file, src) in files.iter().zip(&sources) {
        let name = file.display().to_string();
        let cfg = Config::builder()
            .add_source(File::from_str(src, FileFormat::Toml))
            .build()
            .map_err(|e| {
                issue(
                    file,
                    "",
                    format!(
                        "not valid TOML: {}",
                        clean_message(&e.to_string(), ENUM_VALUES)
                    ),
                )
            })?;
        let one: FileConfig = deserialize(cfg, &name)?;
        sourced(&mut loaded.devices, &name, one.devices);
        sourced(&mut loaded.profiles, &name, one.profiles);
        sourced(&mut loaded.rules, &name, one.rules);
        sourced(&mut loaded.notify, &name, one.notify);
        merged = merged.add_source(File::from_str(src, FileFormat::Toml));
    }
    let env_source = Environment::with_prefix("FACILITYD")
        .prefix_separator("_")
        .separator("__")
        .try_parsing(true)
        .source(Some(env.into_iter().collect()));
    let merged = merged.add_source(env_source).build().map_err(|e| {
        ConfigError(vec![ConfigIssue {
            file: "environment".into(),
            path: String::new(),
            message: clean_message(&e.to_string(), ENUM_VALUES),
        }])
    })?;
    // The files were valid on their own, so an error here comes from a FACILITYD_* variable:
    // name the variable.
    let mut main: FileConfig = deserialize(merged, "environment").map_err(|mut e| {
        for i in &mut e.0 {
            if !i.path.is_empty() {
                let var = format!(
                    "FACILITYD_{}",
                    i.path
                        .to_uppercase()
                        .replacen('.', "__", 1)
                        .replace('.', "__")
                );
                i.path = var;
            }
        }
        e
    })?;
    main.devices.clear();
    main.profiles.clear();
    main.rules.clear();
    main.notify.clear();
    loaded.main = main;
    Ok(loaded)
}

fn sourced<T>(out: &mut Vec<Sourced<T>>, file: &str, items: Vec<T>) {
    out.extend(items.into_iter().enumerate().map(|(index, item)| Sourced {
        file: file.to_string(),
        index,
        item,
    }));
}
