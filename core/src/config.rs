//! Layered configuration: embedded defaults (TOML text compiled into the
//! binary), then an optional TOML file, then environment variables with a
//! prefix and `__` as the nesting separator
//! (`MADO_SERVER__HTTP__BIND=127.0.0.1:9000`).
//!
//! Errors come out as one line naming the file (or variable), the field and
//! what was expected.

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::de::DeserializeOwned;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// Load `T` from `defaults` (TOML text), then `file` (if given; it must
/// exist), then env vars starting with `env_prefix` (e.g. `MADO_SERVER__`).
pub fn load<T: DeserializeOwned>(
    defaults: &str,
    file: Option<&Path>,
    env_prefix: &str,
) -> Result<T, ConfigError> {
    let mut fig = Figment::from(Toml::string(defaults));
    if let Some(path) = file {
        if !path.is_file() {
            return Err(ConfigError(format!(
                "config file {}: not found or not a regular file",
                path.display()
            )));
        }
        fig = fig.merge(Toml::file_exact(path));
    }
    fig = fig.merge(Env::prefixed(env_prefix).split("__"));
    fig.extract::<T>()
        .map_err(|e| ConfigError(one_line(&e, file, env_prefix)))
}

fn one_line(e: &figment::Error, file: Option<&Path>, env_prefix: &str) -> String {
    let field = if e.path.is_empty() {
        "(top level)".to_string()
    } else {
        e.path.join(".")
    };
    let source = match e.metadata.as_ref().and_then(|m| m.source.as_ref()) {
        Some(figment::Source::File(p)) => format!("config file {}", p.display()),
        Some(other) => other.to_string(),
        None => match (e.metadata.as_ref().map(|m| m.name.to_string()), file) {
            (Some(name), _) if name.to_lowercase().contains("environment") => {
                format!("environment ({env_prefix}*)")
            }
            (_, Some(p)) => format!("config file {}", p.display()),
            _ => "built-in defaults".to_string(),
        },
    };
    let kind = e.kind.to_string();
    format!("{source}: field `{field}`: {kind}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // only deserialized, to provoke errors
    struct C {
        http: Http,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Http {
        port: u16,
    }

    #[test]
    fn bad_field_names_file_and_field() {
        let dir = std::env::temp_dir().join(format!("mado-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("bad.toml");
        std::fs::write(&f, "[http]\nport = \"abc\"\n").unwrap();
        let err = load::<C>("[http]\nport = 1\n", Some(&f), "MADO_TEST_NONE__").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("bad.toml"), "{msg}");
        assert!(msg.contains("http.port"), "{msg}");
        assert!(!msg.contains('\n'));
    }
}
