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
    /// Kafka: brokers, group, topics, formats, client (security) settings.
    pub kafka: KafkaConfig,
    /// The sequencer: merge wait and idle ticks.
    pub sequencer: SequencerSettings,
    /// The HTTP listener (`/metrics`, health probes, the account API).
    pub http: HttpConfig,
    /// Per-partition snapshots of the fold's state.
    pub snapshot: SnapshotConfig,
    /// A shadow scorecard (same keys as `[model]`): scored beside the live
    /// one on the same log, published only to `kafka.topics.shadow` and the
    /// `vitals_model_*{role="shadow"}` metrics. Absent = no shadow.
    pub shadow: Option<ModelConfig>,
}

/// `[snapshot]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// Take snapshots (recovery then replays only the log's tail).
    pub enabled: bool,
    /// Where: `dir` (a local directory) or `kafka` (a topic, so any
    /// instance can restore any partition).
    pub store: String,
    /// Directory of the local store (`<dir>/p<partition>/<offset>.snap`).
    pub dir: String,
    /// Topic of the Kafka store: the inputs' partition count, snapshots of
    /// partition p in partition p, `cleanup.policy=compact`.
    pub topic: String,
    /// Largest chunk record of the Kafka store (a snapshot is split into
    /// chunks of at most this many bytes).
    pub chunk_bytes: u64,
    /// A snapshot at least this often (wall clock) while records flow.
    pub interval_secs: u64,
    /// ... or after this many sequenced records, whichever comes first.
    pub every_records: u64,
    /// Snapshots kept per partition (older ones are deleted).
    pub keep: u32,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            enabled: true,
            store: "dir".into(),
            dir: "vitals-snapshots".into(),
            topic: crate::kafka::topics::SNAPSHOTS.into(),
            chunk_bytes: crate::kafka::snapstore::DEFAULT_CHUNK_BYTES as u64,
            interval_secs: 60,
            every_records: 1_000_000,
            keep: 3,
        }
    }
}

/// Bounds of `snapshot.chunk_bytes`.
const MIN_CHUNK_BYTES: u64 = 1024;
const MAX_CHUNK_BYTES: u64 = 900 * 1024;

/// `[kafka]`. Its `Debug` shows secret client properties as `[redacted]`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`; `--brokers` / `VITALS_BROKERS` override it.
    pub brokers: String,
    /// Consumer group of the service instances.
    pub group_id: String,
    /// How keys map to partitions, to check co-partitioning per record.
    /// Only `murmur2` (the Java client's default) is supported.
    pub partitioner: String,
    /// Kafka transactions for outputs and offsets (`read_committed`
    /// consumers see each batch at once). Exactly-once holds without them.
    pub transactions: bool,
    /// Output encoding: `json` or `protobuf`.
    pub output_format: String,
    /// The group consumer's `fetch.wait.max.ms`: how long the broker may
    /// hold a fetch that finds no new record. A real broker answers as soon
    /// as records arrive; the embedded mock holds every empty fetch this
    /// long and does not wake for new ones, so there it adds latency.
    pub fetch_wait_max_ms: u64,
    /// Topic names.
    pub topics: TopicNames,
    /// Value format per input topic: `json` or `protobuf` (a record's
    /// `content-type: application/x-protobuf` header wins).
    pub formats: BTreeMap<String, String>,
    /// librdkafka properties passed through to every client (security:
    /// `security.protocol`, `sasl.mechanism`, `ssl.ca.location`, …).
    /// Secrets come from the environment (see [`SECRET_ENV`]), never here.
    pub client: BTreeMap<String, String>,
    /// librdkafka properties for the consumers only (over `client`):
    /// `session.timeout.ms`, `fetch.*`, … (a producer given a consumer
    /// property warns that it ignores it).
    pub consumer: BTreeMap<String, String>,
    /// librdkafka properties for the producers only (over `client`):
    /// `compression.type`, `batch.size`, ….
    pub producer: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so a new field cannot be left out by accident.
        let KafkaConfig {
            brokers,
            group_id,
            partitioner,
            transactions,
            output_format,
            fetch_wait_max_ms,
            topics,
            formats,
            client,
            consumer,
            producer,
        } = self;
        let redacted = |m: &'_ BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret_client_key(k) {
                        "[redacted]"
                    } else {
                        v.as_str()
                    };
                    (k.clone(), v.to_string())
                })
                .collect()
        };
        f.debug_struct("KafkaConfig")
            .field("brokers", brokers)
            .field("group_id", group_id)
            .field("partitioner", partitioner)
            .field("transactions", transactions)
            .field("output_format", output_format)
            .field("fetch_wait_max_ms", fetch_wait_max_ms)
            .field("topics", topics)
            .field("formats", formats)
            .field("client", &redacted(client))
            .field("consumer", &redacted(consumer))
            .field("producer", &redacted(producer))
            .finish()
    }
}

/// `[kafka.topics]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicNames {
    pub usage: String,
    pub tickets: String,
    pub payments: String,
    pub surveys: String,
    pub health: String,
    pub at_risk: String,
    pub upsell: String,
    pub dlq: String,
    pub sequenced: String,
    pub repartition: String,
    /// Written only when a `[shadow]` scorecard is configured.
    pub shadow: String,
}

impl Default for TopicNames {
    fn default() -> Self {
        use crate::kafka::topics as t;
        TopicNames {
            usage: t::INPUTS[0].into(),
            tickets: t::INPUTS[1].into(),
            payments: t::INPUTS[2].into(),
            surveys: t::INPUTS[3].into(),
            health: t::HEALTH.into(),
            at_risk: t::ALERTS_AT_RISK.into(),
            upsell: t::ALERTS_UPSELL.into(),
            dlq: t::DLQ.into(),
            sequenced: t::SEQUENCED.into(),
            repartition: t::REPARTITION.into(),
            shadow: t::SHADOW.into(),
        }
    }
}

impl TopicNames {
    /// The input topics, in source order.
    pub fn inputs(&self) -> [&str; 4] {
        [&self.usage, &self.tickets, &self.payments, &self.surveys]
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: "127.0.0.1:9092".into(),
            group_id: "vitals".into(),
            partitioner: "murmur2".into(),
            transactions: false,
            output_format: "json".into(),
            fetch_wait_max_ms: 10,
            topics: TopicNames::default(),
            formats: BTreeMap::new(),
            client: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
        }
    }
}

/// Environment variables that supply secret librdkafka properties.
pub const SECRET_ENV: [(&str, &str); 5] = [
    ("VITALS_KAFKA_SASL_USERNAME", "sasl.username"),
    ("VITALS_KAFKA_SASL_PASSWORD", "sasl.password"),
    ("VITALS_KAFKA_SSL_KEY_PASSWORD", "ssl.key.password"),
    (
        "VITALS_KAFKA_SSL_KEYSTORE_PASSWORD",
        "ssl.keystore.password",
    ),
    (
        "VITALS_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET",
        "sasl.oauthbearer.client.secret",
    ),
];

/// librdkafka properties whose values are secrets: never logged, never
/// echoed in an error. Those of [`SECRET_ENV`], and any password, secret,
/// private key or JAAS/OAUTHBEARER config (`ssl.key.pem`,
/// `sasl.oauthbearer.config`, …), however it was set.
pub fn is_secret_client_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_ENV.iter().any(|(_, prop)| k.contains(prop))
        || [
            "password",
            "secret",
            "key.pem",
            "jaas",
            "oauthbearer.config",
        ]
        .iter()
        .any(|w| k.contains(w))
}

/// Properties the service sets itself; setting them in `[kafka.client]`,
/// `[kafka.consumer]` or `[kafka.producer]` would break its guarantees.
const RESERVED_CLIENT_KEYS: [&str; 7] = [
    "bootstrap.servers",
    "group.id",
    "enable.idempotence",
    "enable.auto.commit",
    "isolation.level",
    "transactional.id",
    "partition.assignment.strategy",
];

/// `[sequencer]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequencerSettings {
    /// Longest a record waits for the other input topics of its partition
    /// before it is sequenced anyway (wall clock).
    pub max_wait_ms: u64,
    /// An idle partition gets a clock tick this often (wall clock), so
    /// timers fire for silent accounts.
    pub tick_every_ms: u64,
}

impl Default for SequencerSettings {
    fn default() -> Self {
        SequencerSettings {
            max_wait_ms: 200,
            tick_every_ms: 1000,
        }
    }
}

/// `[http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address; `--http` / `VITALS_HTTP` override it. Loopback by
    /// default: expose it deliberately.
    pub listen: String,
    /// Require `Authorization: Bearer <token>` on `/v1/*`; the token comes
    /// from `VITALS_HTTP_TOKEN`, never from this file.
    pub require_token: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:9464".into(),
            require_token: false,
        }
    }
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
    #[error("config {path} is invalid: {}", problems.join("; "))]
    Invalid { path: String, problems: Vec<String> },
}

impl Config {
    /// Parses TOML text and validates it. `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            // toml quotes the offending value ("invalid type: integer
            // `123456`"): not when it is a secret's.
            let secret = e.span().is_some_and(|s| on_secret_line(text, s.start));
            let detail = if secret {
                "invalid value for a secret property (value not shown); a string is expected"
                    .to_string()
            } else {
                e.message().to_string() + &did_you_mean(e.message())
            };
            let (key, place) = e
                .span()
                .map(|s| (key_at(text, s.start), position(text, s.start)))
                .unwrap_or_default();
            ConfigError::Parse {
                path: origin.to_string(),
                message: key.map(|k| format!("{k}: ")).unwrap_or_default() + &detail + &place,
            }
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

    /// Environment overrides: `VITALS_MODEL_VERSION`, `VITALS_BROKERS`,
    /// `VITALS_HTTP`, and the secrets of [`SECRET_ENV`].
    pub fn apply_env(&mut self, env: &BTreeMap<String, String>) {
        if let Some(v) = env.get("VITALS_MODEL_VERSION") {
            self.model.version = v.clone();
        }
        if let Some(v) = env.get("VITALS_BROKERS") {
            self.kafka.brokers = v.clone();
        }
        if let Some(v) = env.get("VITALS_HTTP") {
            self.http.listen = v.clone();
        }
        for (var, prop) in SECRET_ENV {
            if let Some(v) = env.get(var) {
                self.kafka.client.insert(prop.to_string(), v.clone());
            }
        }
    }

    /// Everything wrong with the non-model sections, each naming its key.
    fn service_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            p.push("kafka.brokers: must name at least one HOST:PORT".into());
        }
        if k.group_id.trim().is_empty() {
            p.push("kafka.group_id: must not be empty".into());
        }
        if k.partitioner != "murmur2" {
            p.push(format!(
                "kafka.partitioner: {:?} is not supported (only \"murmur2\", the Java client's default)",
                k.partitioner
            ));
        }
        if !["json", "protobuf"].contains(&k.output_format.as_str()) {
            p.push(format!(
                "kafka.output_format: {:?} must be \"json\" or \"protobuf\"",
                k.output_format
            ));
        }
        let inputs = k.topics.inputs();
        for (topic, f) in &k.formats {
            if !inputs.contains(&topic.as_str()) {
                p.push(format!(
                    "kafka.formats.{topic}: not an input topic (inputs: {})",
                    inputs.join(", ")
                ));
            }
            if !["json", "protobuf"].contains(&f.as_str()) {
                p.push(format!(
                    "kafka.formats.{topic}: {f:?} must be \"json\" or \"protobuf\""
                ));
            }
        }
        let t = &k.topics;
        let mut names: Vec<(&str, &str)> = vec![
            ("usage", &t.usage),
            ("tickets", &t.tickets),
            ("payments", &t.payments),
            ("surveys", &t.surveys),
            ("health", &t.health),
            ("at_risk", &t.at_risk),
            ("upsell", &t.upsell),
            ("dlq", &t.dlq),
            ("sequenced", &t.sequenced),
            ("repartition", &t.repartition),
        ];
        for (key, name) in &names {
            if name.is_empty() {
                p.push(format!("kafka.topics.{key}: must not be empty"));
            }
        }
        names.sort_by_key(|&(_, n)| n);
        for w in names.windows(2) {
            if w[0].1 == w[1].1 {
                p.push(format!(
                    "kafka.topics.{} and kafka.topics.{}: both are {:?}; every topic must differ",
                    w[0].0, w[1].0, w[0].1
                ));
            }
        }
        for (table, props) in [
            ("client", &k.client),
            ("consumer", &k.consumer),
            ("producer", &k.producer),
        ] {
            for key in props.keys() {
                if RESERVED_CLIENT_KEYS.contains(&key.as_str()) {
                    p.push(format!(
                        "kafka.{table}.\"{key}\": set by Vitals itself (use kafka.brokers / kafka.group_id / kafka.transactions)"
                    ));
                }
            }
        }
        let snap = &self.snapshot;
        match snap.store.as_str() {
            "dir" => {
                if snap.enabled && snap.dir.trim().is_empty() {
                    p.push("snapshot.dir: must name a directory when snapshot.enabled".into());
                }
            }
            "kafka" => {
                if snap.topic.trim().is_empty() {
                    p.push(
                        "snapshot.topic: must name a topic when snapshot.store = \"kafka\"".into(),
                    );
                }
                let shadow = [("shadow", t.shadow.as_str())];
                let clash = names.iter().chain(&shadow).find(|(_, n)| *n == snap.topic);
                if let Some((key, _)) = clash {
                    p.push(format!(
                        "snapshot.topic: {:?} is also kafka.topics.{key}; the snapshot topic must be its own",
                        snap.topic
                    ));
                }
            }
            other => p.push(format!(
                "snapshot.store: {other:?} must be \"dir\" or \"kafka\""
            )),
        }
        if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&snap.chunk_bytes) {
            p.push(format!(
                "snapshot.chunk_bytes: {} must be between {MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES} \
                 (a chunk, its key and headers must fit Kafka's default 1 MB message.max.bytes)",
                snap.chunk_bytes
            ));
        }
        if self.snapshot.keep == 0 {
            p.push("snapshot.keep: must be at least 1".into());
        }
        if self.snapshot.interval_secs == 0 && self.snapshot.every_records == 0 {
            p.push(
                "snapshot.interval_secs and snapshot.every_records: one must be positive".into(),
            );
        }
        if !(1..=300_000).contains(&self.kafka.fetch_wait_max_ms) {
            p.push("kafka.fetch_wait_max_ms: must be between 1 and 300000".into());
        }
        if self.sequencer.tick_every_ms == 0 {
            p.push("sequencer.tick_every_ms: must be at least 1".into());
        }
        if self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            p.push(format!(
                "http.listen: {:?} is not an IP:PORT address",
                self.http.listen
            ));
        }
        p
    }

    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let mut problems = self.model.problems();
        if let Some(sh) = &self.shadow {
            problems.extend(
                sh.problems()
                    .into_iter()
                    .map(|p| match p.strip_prefix("model.") {
                        Some(rest) => format!("shadow.{rest}"),
                        None => p,
                    }),
            );
        }
        problems.extend(self.service_problems());
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

/// Whether byte `at` of a TOML text is on a line assigning a secret
/// client property (`"sasl.password" = ...`).
fn on_secret_line(text: &str, at: usize) -> bool {
    let start = text
        .get(..at)
        .and_then(|t| t.rfind('\n'))
        .map_or(0, |i| i + 1);
    let line = text.get(start..).unwrap_or("").lines().next().unwrap_or("");
    line.split_once('=')
        .is_some_and(|(key, _)| is_secret_client_key(key))
}

/// " (line L, column C)" of byte `at` of `text` (both from 1).
fn position(text: &str, at: usize) -> String {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" (line {line}, column {column})")
}

/// The dotted key assigned on the line holding byte `at` (`kafka.brokers`
/// for `brokers = …` under `[kafka]`), when that line is a plain
/// `key = value`; `None` otherwise (a table header, an inline table, a
/// value spanning lines).
fn key_at(text: &str, at: usize) -> Option<String> {
    let start = text.get(..at)?.rfind('\n').map_or(0, |i| i + 1);
    let line = text[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let plain = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.\"".contains(c))
    };
    if !plain(key) || line.trim_start().starts_with('[') {
        return None;
    }
    let table = text[..start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('[') && !l.starts_with("[["))
        .and_then(|l| l.strip_prefix('[')?.split(']').next())
        .map(str::trim);
    Some(match table {
        Some(t) if !t.is_empty() => format!("{t}.{key}"),
        _ => key.to_string(),
    })
}

/// For serde's "unknown field `x`, expected one of `a`, `b`": the closest
/// expected name, as " — did you mean `a`?" (empty when none is close).
fn did_you_mean(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return String::new();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return String::new();
    };
    // A name that extends or shortens the typo counts as close as one
    // edit (`group` → `group_id`).
    let best = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| {
            let prefix = cand.starts_with(unknown) || unknown.starts_with(cand);
            let d = if prefix {
                1
            } else {
                edit_distance(unknown, cand)
            };
            (d, cand)
        })
        .min();
    match best {
        Some((d, cand)) if d <= 2.max(unknown.len() / 3) => format!(" — did you mean `{cand}`?"),
        _ => String::new(),
    }
}

/// Levenshtein distance (small strings: config keys).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != cb))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_gets_a_suggestion() {
        let err = Config::from_toml("[kafka]\ngroup = \"x\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `group`"), "{err}");
        assert!(err.contains("did you mean `group_id`?"), "{err}");
        let err = Config::from_toml("[snapshot]\nintreval_secs = 5\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("did you mean `interval_secs`?"), "{err}");
        let err = Config::from_toml("[kafka]\nzzzzzz = 1\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn embedded_default_equals_code_defaults() {
        let cfg = Config::from_toml(DEFAULT_TOML, "default").unwrap();
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn a_value_of_the_wrong_type_is_named_with_its_line() {
        let err = Config::from_toml(
            "# comment\n[kafka]\nbrokers = \"b:9092\"\nfetch_wait_max_ms = \"soon\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("config t.toml: kafka.fetch_wait_max_ms: "),
            "{err}"
        );
        assert!(err.contains("line 4, column 21"), "{err}");
        let err = Config::from_toml("[kafka\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("(line 1, column"), "{err}");
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
    fn consumer_and_producer_tables_layer_over_the_client_table() {
        let cfg = Config::from_toml(
            "[kafka.client]\n\"security.protocol\" = \"SSL\"\n\"client.id\" = \"all\"\n             [kafka.consumer]\n\"session.timeout.ms\" = \"6000\"\n\"client.id\" = \"c\"\n             [kafka.producer]\n\"compression.type\" = \"lz4\"\n",
            "t.toml",
        )
        .unwrap();
        use crate::kafka::service::{consumer_config, producer_config};
        let (c, p) = (consumer_config(&cfg), producer_config(&cfg));
        assert_eq!(c.get("security.protocol"), Some("SSL"));
        assert_eq!(p.get("security.protocol"), Some("SSL"));
        assert_eq!(c.get("session.timeout.ms"), Some("6000"));
        assert_eq!(p.get("session.timeout.ms"), None);
        assert_eq!(p.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("compression.type"), None);
        assert_eq!(
            (c.get("client.id"), p.get("client.id")),
            (Some("c"), Some("all"))
        );
        // What Vitals sets itself is refused in every table, by name.
        let err = Config::from_toml(
            "[kafka.consumer]\n\"group.id\" = \"x\"\n[kafka.producer]\n\"enable.idempotence\" = \"false\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("kafka.consumer.\"group.id\""), "{err}");
        assert!(
            err.contains("kafka.producer.\"enable.idempotence\""),
            "{err}"
        );
    }

    #[test]
    fn snapshot_store_settings_are_checked() {
        let cfg = Config::from_toml(
            "[snapshot]\nstore = \"kafka\"\ntopic = \"snaps\"\nchunk_bytes = 4096\n",
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            (cfg.snapshot.store.as_str(), cfg.snapshot.topic.as_str()),
            ("kafka", "snaps")
        );
        let err = Config::from_toml(
            "[snapshot]\nstore = \"s3\"\nchunk_bytes = 2000000\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("snapshot.store: \"s3\""), "{err}");
        assert!(err.contains("snapshot.chunk_bytes: 2000000"), "{err}");
        let err = Config::from_toml(
            "[snapshot]\nstore = \"kafka\"\ntopic = \"vitals.health\"\n",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("also kafka.topics.health"), "{err}");
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
