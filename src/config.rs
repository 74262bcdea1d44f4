//! The service configuration (`config/vitals.toml`).
//!
//! Precedence: built-in defaults < the config file < environment
//! (`VITALS_*`) < command-line flags. Unknown keys are an error naming the
//! key; validation reports every problem at once.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::core::ModelConfig;

/// The default configuration file, embedded so the binary runs without one.
pub const DEFAULT_TOML: &str = include_str!("../config/vitals.toml");

/// Everything `vitals` reads from its config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The health model: scorecards, alert rules, time rules, limits.
    pub model: ModelConfig,
}

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config {path} is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid { path: String, problems: Vec<String> },
}

impl Config {
    /// Parses TOML text and validates it. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.message().to_string()
                + &e.span()
                    .map(|s| format!(" (at byte {})", s.start))
                    .unwrap_or_default(),
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Loads a file, or the embedded default when `path` is `None`, then
    /// applies environment overrides from `env`.
    pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut cfg = match path {
            None => Config::from_toml(DEFAULT_TOML, "<built-in default>")?,
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.display().to_string(),
                    source,
                })?;
                Config::from_toml(&text, &p.display().to_string())?
            }
        };
        cfg.apply_env(env);
        let origin = path.map_or("<built-in default>".to_string(), |p| {
            p.display().to_string()
        });
        cfg.validate(&origin)?;
        Ok(cfg)
    }

    /// Environment overrides. Only `VITALS_MODEL_VERSION` exists so far;
    /// connection settings join it with the Kafka service.
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) {
        if let Some(v) = env.get("VITALS_MODEL_VERSION") {
            self.model.version = v.clone();
        }
    }

    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let problems = self.model.problems();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid {
                path: origin.to_string(),
                problems,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_equals_code_defaults() {
        let cfg = Config::from_toml(DEFAULT_TOML, "default").unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[model]\nverison = \"x\"\n", "t.toml").unwrap_err();
        assert!(err.to_string().contains("verison"), "{err}");
    }

    #[test]
    fn every_problem_is_reported() {
        let err = Config::from_toml(
            "[model.scorecard.bands]\nat_risk_below = 80.0\nhealthy_at = 60.0\n[model.factors]\ninactivity_days = 1\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model.scorecard.bands.healthy_at"), "{err}");
        assert!(err.contains("model.factors.inactivity_days"), "{err}");
    }

    #[test]
    fn segment_patch_is_checked() {
        let err = Config::from_toml(
            "[model.segments.enterprise.weights]\nusage = -1.0\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("model.segments.enterprise.weights"), "{err}");
    }
}
