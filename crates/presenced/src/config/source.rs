//! Reading configuration files: YAML into a generic tree, then the reference homeserver's
//! overlay rule (each later file replaces whole **top-level** keys of the earlier ones).
//!
//! A directory given as a config path stands for the `.yaml` files directly inside it, in
//! name order, as it does for the reference homeserver.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde_json::{Map, Value};

use super::{ConfigError, ConfigProblem, section::describe};

/// Parses one YAML document into a top-level mapping. `name` labels problems.
pub(super) fn parse_yaml(name: &str, text: &str) -> Result<Map<String, Value>, ConfigProblem> {
    let value: Value = serde_saphyr::from_str(text).map_err(|e| {
        ConfigProblem::new(name, format!("invalid YAML: {}", yaml_message(name, &e)))
    })?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Err(ConfigProblem::new(name, "the file is empty")),
        other => Err(ConfigProblem::new(
            name,
            format!(
                "the file must hold a mapping of keys to values, found {}",
                describe(&other)
            ),
        )),
    }
}

/// The parser's message, adjusted for operators: its source snippet names the file, and
/// advice addressed to programs using the parser is dropped.
fn yaml_message(name: &str, error: &serde_saphyr::Error) -> String {
    let text = error.to_string();
    let text = text.strip_prefix("error: ").unwrap_or(&text);
    text.replace("--> <input>", &format!("--> {name}"))
        .replace(", set DuplicateKeyPolicy in Options if acceptable", "")
}

/// Overlays `later` on `base`: top-level keys of `later` replace those of `base` whole.
pub(super) fn overlay(base: &mut Map<String, Value>, later: Map<String, Value>) {
    for (key, value) in later {
        base.insert(key, value);
    }
}

/// Reads and merges the given files (and directories), reporting every unreadable or
/// malformed file at once.
pub(super) fn read_files(paths: &[PathBuf]) -> Result<Map<String, Value>, ConfigError> {
    if paths.is_empty() {
        return Err(ConfigError::single(
            "--config-path",
            "no configuration file was given",
        ));
    }
    let mut problems = Vec::new();
    let mut merged = Map::new();
    for file in expand(paths, &mut problems) {
        let name = file.display().to_string();
        let parsed = fs::read_to_string(&file)
            .map_err(|e| ConfigProblem::new(name.as_str(), format!("cannot read the file: {e}")))
            .and_then(|text| parse_yaml(&name, &text));
        match parsed {
            Ok(map) => overlay(&mut merged, map),
            Err(problem) => problems.push(problem),
        }
    }
    if problems.is_empty() {
        Ok(merged)
    } else {
        Err(ConfigError::new(problems))
    }
}

/// Replaces each directory by its `.yaml` files (sorted), keeping the given order otherwise.
fn expand(paths: &[PathBuf], problems: &mut Vec<ConfigProblem>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match yaml_files_in(path) {
            Ok(found) if found.is_empty() => problems.push(ConfigProblem::new(
                path.display().to_string(),
                "the directory holds no .yaml files",
            )),
            Ok(found) => files.extend(found),
            Err(e) => problems.push(ConfigProblem::new(
                path.display().to_string(),
                format!("cannot list the directory: {e}"),
            )),
        }
    }
    files
}

fn yaml_files_in(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if !hidden && path.is_file() && path.extension().is_some_and(|e| e == "yaml") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
