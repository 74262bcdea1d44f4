//! The deployment files and the configuration reference, checked against
//! the code. No Docker engine or cluster is needed: every YAML and JSON
//! file under `deploy/` is parsed, and what it names — topics, the HTTP
//! port, probe paths, the config file, metric names, the image, the user —
//! must be what the code defines.
//!
//! - `deploy/docker-compose.yml` creates exactly the topics of
//!   `Config::default().kafka.topics`, runs the instances with the image's
//!   own command, and every `vitals` command line in it parses with the
//!   real CLI;
//! - `deploy/prometheus.yml` scrapes every instance on the HTTP port;
//! - `deploy/grafana/`: the dashboard queries only `vitals_*` metrics the
//!   code exports, through the provisioned data source;
//! - `deploy/k8s/`: probes on `/healthz` and `/readyz`, the ConfigMap's
//!   `vitals.toml` loads with `Config::from_toml` and holds no secret,
//!   secrets come from Secrets, selectors and ports line up;
//! - `deploy/Dockerfile`: non-root `USER`, a `HEALTHCHECK` on `/healthz`,
//!   the port and the command the others assume;
//! - `docs/CONFIG.md` documents every config key with its default, and the
//!   environment variables.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use vitals::config::{Config, SECRET_ENV};

// ---------------------------------------------------------------------------
// Helpers

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let p = root().join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Every file under `dir` (recursively), sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// Every document of a YAML file, with merge keys (`<<: *anchor`) applied
/// as Docker Compose applies them.
fn yaml_docs_of(text: &str, origin: &str) -> Vec<Yaml> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|doc| {
            let mut v = Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{origin}: {e}"));
            // One pass copies an anchor's own `<<` into the mapping that
            // merges it (nested merges); repeat until nothing changes.
            loop {
                let before = v.clone();
                v.apply_merge()
                    .unwrap_or_else(|e| panic!("{origin}: merge keys: {e}"));
                if v == before {
                    break;
                }
            }
            v
        })
        .collect()
}

fn yaml_file(rel_path: &str) -> Yaml {
    let mut docs = yaml_docs_of(&read(rel_path), rel_path);
    assert_eq!(docs.len(), 1, "{rel_path}: expected one YAML document");
    docs.remove(0)
}

/// `v[k1][k2]…`, or a panic naming the path.
fn at<'a>(v: &'a Yaml, path: &[&str]) -> &'a Yaml {
    let mut cur = v;
    for (i, k) in path.iter().enumerate() {
        cur = cur
            .get(*k)
            .unwrap_or_else(|| panic!("missing key {}", path[..=i].join(".")));
    }
    cur
}

fn str_at<'a>(v: &'a Yaml, path: &[&str]) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a string", path.join(".")))
}

fn seq_at<'a>(v: &'a Yaml, path: &[&str]) -> &'a [Yaml] {
    at(v, path)
        .as_sequence()
        .unwrap_or_else(|| panic!("{} is not a list", path.join(".")))
}

/// A scalar as text (compose and Kubernetes accept numbers where strings
/// are meant).
fn scalar(v: &Yaml) -> String {
    match v {
        Yaml::String(s) => s.clone(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Bool(b) => b.to_string(),
        other => panic!("not a scalar: {other:?}"),
    }
}

fn strings(v: &[Yaml]) -> Vec<String> {
    v.iter().map(scalar).collect()
}

fn default_http_port() -> u16 {
    let listen: std::net::SocketAddr = Config::default().http.listen.parse().unwrap();
    listen.port()
}

/// The port of a `HOST:PORT` address.
fn port_of(addr: &str) -> u16 {
    let (_, port) = addr
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("{addr:?} has no port"));
    port.parse()
        .unwrap_or_else(|e| panic!("{addr:?}: bad port: {e}"))
}

/// The topic names of the default config, every field of
/// `[kafka.topics]` (so a topic added to the struct is checked too), and
/// the Kafka snapshot store's `snapshot.topic`.
fn config_topics() -> BTreeSet<String> {
    let cfg = Config::default();
    let t = toml::Value::try_from(cfg.kafka.topics).unwrap();
    let mut names: BTreeSet<String> = t
        .as_table()
        .unwrap()
        .values()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    names.insert(cfg.snapshot.topic);
    // SPEC §2's ten topics, the shadow scorecard's and the snapshots'.
    assert_eq!(names.len(), 12, "twelve topics: {names:?}");
    names
}

// ---------------------------------------------------------------------------
// The Dockerfile

/// The instructions of a Dockerfile: (keyword, arguments), continuation
/// lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let text = read("deploy/Dockerfile");
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if cur.is_empty() && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
            continue;
        }
        cur.push_str(t);
        let (k, args) = cur.split_once(char::is_whitespace).unwrap_or((&cur, ""));
        out.push((k.to_ascii_uppercase(), args.trim().to_string()));
        cur.clear();
    }
    assert!(cur.is_empty(), "Dockerfile ends in a continuation line");
    out
}

/// The runtime (last) stage's instructions.
fn runtime_stage() -> Vec<(String, String)> {
    let all = dockerfile();
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").unwrap();
    all[last_from..].to_vec()
}

fn instruction(stage: &[(String, String)], key: &str) -> String {
    let found: Vec<&String> = stage
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, a)| a)
        .collect();
    assert_eq!(found.len(), 1, "runtime stage: expected one {key}");
    found[0].clone()
}

fn exec_form(stage: &[(String, String)], key: &str) -> Vec<String> {
    serde_json::from_str(&instruction(stage, key))
        .unwrap_or_else(|e| panic!("{key} must be in exec (JSON) form: {e}"))
}

/// The image's default command: `run --config PATH`.
fn image_cmd() -> Vec<String> {
    exec_form(&runtime_stage(), "CMD")
}

fn image_config_path() -> String {
    let cmd = image_cmd();
    let i = cmd.iter().position(|a| a == "--config").unwrap();
    cmd[i + 1].clone()
}

/// The uid given to the image's user.
fn image_uid() -> u64 {
    let stage = runtime_stage();
    let run = stage
        .iter()
        .find(|(k, a)| k == "RUN" && a.contains("useradd"))
        .expect("the runtime stage creates its user");
    let after = run.1.split("--uid").nth(1).expect("useradd --uid N");
    after.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn dockerfile_runs_as_a_non_root_user_with_a_healthcheck() {
    let all = dockerfile();
    let froms: Vec<&str> = all
        .iter()
        .filter(|(k, _)| k == "FROM")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(froms.len(), 2, "builder and runtime stages: {froms:?}");
    assert!(froms[0].starts_with("rust:1.95-bookworm"), "{froms:?}");
    assert!(froms[1].starts_with("debian:bookworm-slim"), "{froms:?}");

    let stage = runtime_stage();
    let user = instruction(&stage, "USER");
    let name = user.split(':').next().unwrap();
    assert!(
        !["root", "0", ""].contains(&name),
        "the runtime stage must run as a non-root user, not {user:?}"
    );
    assert_eq!(name, "vitals");
    assert_ne!(image_uid(), 0);
    // USER comes after everything that needs root.
    let user_at = stage.iter().position(|(k, _)| k == "USER").unwrap();
    assert!(
        stage[user_at..].iter().all(|(k, _)| k != "RUN"),
        "RUN after USER would run as the unprivileged user"
    );

    let health = instruction(&stage, "HEALTHCHECK");
    assert!(health.contains("CMD"), "{health}");
    assert!(health.contains("/healthz"), "{health}");
    assert!(
        health.contains(&default_http_port().to_string()),
        "{health}"
    );

    let expose = instruction(&stage, "EXPOSE");
    assert_eq!(expose.trim(), default_http_port().to_string());
    let env = instruction(&stage, "ENV");
    assert!(
        env.contains(&format!("VITALS_HTTP=0.0.0.0:{}", default_http_port())),
        "the image must listen beyond loopback on the default port: {env}"
    );

    assert_eq!(exec_form(&stage, "ENTRYPOINT"), ["vitals"]);
    assert_eq!(image_cmd(), ["run", "--config", "/etc/vitals/vitals.toml"]);
    // The config the command names is the commented default, copied in.
    let copy = format!("config/vitals.toml {}", image_config_path());
    assert!(
        stage.iter().any(|(k, a)| k == "COPY" && *a == copy),
        "runtime stage must COPY {copy}"
    );
}

#[test]
fn dockerfile_copies_what_the_build_needs() {
    // Every source the builder copies exists, and the sources it needs to
    // compile are among them.
    let all = dockerfile();
    let last_from = all.iter().rposition(|(k, _)| k == "FROM").unwrap();
    let mut copied = BTreeSet::new();
    for (k, a) in &all[..last_from] {
        if k != "COPY" {
            continue;
        }
        let words: Vec<&str> = a.split_whitespace().collect();
        for src in &words[..words.len() - 1] {
            assert!(!src.starts_with("--"), "unexpected COPY flag {src}");
            assert!(root().join(src).exists(), "COPY {src}: no such path");
            copied.insert(src.to_string());
        }
    }
    for needed in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        "proto",
        "src",
        "config",
        "benches",
    ] {
        assert!(copied.contains(needed), "the builder must COPY {needed}");
    }
}

// ---------------------------------------------------------------------------
// Every file parses

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut yaml = 0;
    let mut json = 0;
    for p in files_under(&root().join("deploy")) {
        let name = rel(&p);
        let text = std::fs::read_to_string(&p).unwrap();
        match p.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => {
                let docs = yaml_docs_of(&text, &name);
                assert!(!docs.is_empty(), "{name}: no YAML document");
                for d in &docs {
                    assert!(d.is_mapping(), "{name}: every document is a mapping");
                }
                yaml += 1;
            }
            Some("json") => {
                let v: Json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(v.is_object(), "{name}");
                json += 1;
            }
            _ => {}
        }
    }
    assert!(yaml >= 10, "found only {yaml} YAML files under deploy/");
    assert!(json >= 1, "found no JSON file under deploy/");
}

// ---------------------------------------------------------------------------
// docker-compose.yml

fn compose() -> Yaml {
    yaml_file("deploy/docker-compose.yml")
}

fn services(c: &Yaml) -> BTreeMap<String, Yaml> {
    at(c, &["services"])
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

fn env_of(service: &Yaml) -> BTreeMap<String, String> {
    match service.get("environment") {
        None => BTreeMap::new(),
        Some(e) => e
            .as_mapping()
            .expect("environment as a mapping")
            .iter()
            .map(|(k, v)| (scalar(k), scalar(v)))
            .collect(),
    }
}

/// Services that run the Vitals image.
fn vitals_services(c: &Yaml) -> BTreeMap<String, Yaml> {
    let image = format!("vitals:{}", env!("CARGO_PKG_VERSION"));
    services(c)
        .into_iter()
        .filter(|(_, s)| s.get("image").and_then(Yaml::as_str) == Some(image.as_str()))
        .collect()
}

/// The `vitals run` instances.
fn instances(c: &Yaml) -> BTreeMap<String, Yaml> {
    vitals_services(c)
        .into_iter()
        .filter(|(_, s)| s.get("command").map(|v| scalar(&v[0])) == Some("run".into()))
        .collect()
}

#[test]
fn compose_creates_exactly_the_configured_topics_all_alike() {
    let c = compose();
    let svc = services(&c);
    let topics = svc.get("topics").expect("a one-shot `topics` service");
    let env = env_of(topics);
    let lines: Vec<Vec<&str>> = env["TOPICS"]
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| !w.is_empty())
        .collect();
    let created: BTreeSet<String> = lines.iter().map(|w| w[0].to_string()).collect();
    assert_eq!(lines.len(), created.len(), "a topic is listed twice");
    assert_eq!(created, config_topics());

    // One partition count for all (the service checks co-partitioning).
    let partitions: u32 = env["PARTITIONS"].parse().unwrap();
    assert!(
        partitions >= 2,
        "two instances need at least two partitions"
    );
    let script = strings(seq_at(topics, &["command"])).join("\n");
    assert!(script.contains("--partitions \"$$PARTITIONS\""), "{script}");
    assert!(script.contains("$$TOPICS"), "{script}");

    let settings = |name: &str| -> String {
        lines
            .iter()
            .find(|w| w[0] == name)
            .map(|w| w[1..].join(","))
            .unwrap_or_default()
    };
    let t = Config::default().kafka.topics;
    assert!(settings(&t.health).contains("cleanup.policy=compact"));
    // The snapshot store retires snapshots with tombstones.
    assert!(settings(&Config::default().snapshot.topic).contains("cleanup.policy=compact"));
    // The fold is rebuilt from vitals.sequenced; the last record of each
    // output partition is the provenance mark (deploy/README.md).
    for keep in [&t.sequenced, &t.at_risk, &t.upsell, &t.dlq] {
        assert!(
            settings(keep).contains("retention.ms=-1"),
            "{keep} must not expire"
        );
    }

    // Topics come only from this service.
    let kafka = &svc["kafka"];
    assert_eq!(env_of(kafka)["KAFKA_AUTO_CREATE_TOPICS_ENABLE"], "false");
    let deps = at(&svc["vitals-1"], &["depends_on", "topics", "condition"]);
    assert_eq!(scalar(deps), "service_completed_successfully");
}

#[test]
fn compose_runs_kafka_in_kraft_mode() {
    let c = compose();
    let svc = services(&c);
    let kafka = &svc["kafka"];
    let image = str_at(kafka, &["image"]);
    assert!(
        image.starts_with("apache/kafka:") || image.starts_with("bitnami/kafka:"),
        "{image}"
    );
    let env = env_of(kafka);
    assert_eq!(env["KAFKA_PROCESS_ROLES"], "broker,controller");
    assert!(env.contains_key("KAFKA_CONTROLLER_QUORUM_VOTERS"));
    assert!(!env.keys().any(|k| k.contains("ZOOKEEPER")));
}

#[test]
fn compose_instances_share_a_group_and_reach_kafka_and_prometheus() {
    let c = compose();
    let svc = services(&c);
    let inst = instances(&c);
    assert!(
        inst.len() >= 2,
        "two instances in one group: {:?}",
        inst.keys()
    );
    let kafka_env = env_of(&svc["kafka"]);
    let advertised = &kafka_env["KAFKA_ADVERTISED_LISTENERS"];
    for (name, s) in &inst {
        let env = env_of(s);
        let brokers = &env["VITALS_BROKERS"];
        assert!(
            advertised.contains(&format!("://{brokers}")),
            "{name}: VITALS_BROKERS={brokers} is not an advertised listener ({advertised})"
        );
        assert_eq!(port_of(&env["VITALS_HTTP"]), default_http_port(), "{name}");
        assert!(
            env["VITALS_HTTP"].starts_with("0.0.0.0:"),
            "{name}: Prometheus must reach it"
        );
        // One group: nothing overrides kafka.group_id per instance, and
        // every instance runs the image's command with its config.
        assert_eq!(strings(seq_at(s, &["command"])), image_cmd(), "{name}");
        let build = str_at(s, &["build", "dockerfile"]);
        assert_eq!(build, "deploy/Dockerfile");
        let ports = strings(seq_at(s, &["ports"]));
        assert!(
            ports.iter().all(|p| port_of(p) == default_http_port()),
            "{name}: container port must be {}: {ports:?}",
            default_http_port()
        );
    }

    // The simulator loads the same broker.
    let sim = &svc["simulator"];
    let cmd = strings(seq_at(sim, &["command"]));
    assert_eq!(cmd[0], "simulate");
    let b = cmd.iter().position(|a| a == "--brokers").unwrap();
    assert!(advertised.contains(&format!("://{}", cmd[b + 1])));
    assert!(cmd.contains(&"--rate".to_string()));

    // Grafana mounts the dashboards where the provider looks for them.
    let provider = yaml_file("deploy/grafana/provisioning/dashboards/vitals.yml");
    let path = str_at(&seq_at(&provider, &["providers"])[0], &["options", "path"]);
    let mounts = strings(seq_at(&svc["grafana"], &["volumes"]));
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./grafana/dashboards:") && m.contains(path)),
        "grafana must mount ./grafana/dashboards at {path}: {mounts:?}"
    );
    assert!(mounts
        .iter()
        .any(|m| m.starts_with("./grafana/provisioning:/etc/grafana/provisioning")));
    let prom_mounts = strings(seq_at(&svc["prometheus"], &["volumes"]));
    assert!(prom_mounts
        .iter()
        .any(|m| m.starts_with("./prometheus.yml:")));
}

#[test]
fn every_vitals_command_line_in_compose_parses_with_the_real_cli() {
    // `--help` after the arguments makes clap parse them all (unknown
    // flags and bad values fail) and then exit 0 without running.
    let c = compose();
    let svc = vitals_services(&c);
    assert!(svc.len() >= 3, "{:?}", svc.keys());
    for (name, s) in &svc {
        let args = strings(seq_at(s, &["command"]));
        let out = Command::new(env!("CARGO_BIN_EXE_vitals"))
            .args(&args)
            .arg("--help")
            .env_remove("VITALS_BROKERS")
            .env_remove("VITALS_HTTP")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: vitals {} rejected: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The image's own command too.
    let out = Command::new(env!("CARGO_BIN_EXE_vitals"))
        .args(image_cmd())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
}

#[test]
fn the_image_config_is_the_default_config() {
    // The image copies config/vitals.toml; it must load (a unit test in
    // src/config.rs keeps it equal to the defaults).
    let cfg = Config::from_toml(&read("config/vitals.toml"), "config/vitals.toml").unwrap();
    assert_eq!(cfg, Config::default());
}

// ---------------------------------------------------------------------------
// Prometheus and Grafana

#[test]
fn prometheus_scrapes_every_instance_on_the_http_port() {
    let p = yaml_file("deploy/prometheus.yml");
    let jobs = seq_at(&p, &["scrape_configs"]);
    let job = jobs
        .iter()
        .find(|j| j.get("job_name").and_then(Yaml::as_str) == Some("vitals"))
        .expect("a `vitals` job");
    assert_eq!(
        job.get("metrics_path")
            .and_then(Yaml::as_str)
            .unwrap_or("/metrics"),
        "/metrics"
    );
    let mut targets = BTreeSet::new();
    for sc in seq_at(job, &["static_configs"]) {
        for t in strings(seq_at(sc, &["targets"])) {
            assert_eq!(port_of(&t), default_http_port(), "target {t}");
            targets.insert(t.rsplit_once(':').unwrap().0.to_string());
        }
    }
    let c = compose();
    let inst: BTreeSet<String> = instances(&c).into_keys().collect();
    assert_eq!(targets, inst, "Prometheus must scrape every instance");
}

/// The provisioned data source.
fn datasource() -> Yaml {
    let d = yaml_file("deploy/grafana/provisioning/datasources/prometheus.yml");
    let list = seq_at(&d, &["datasources"]);
    assert_eq!(list.len(), 1);
    list[0].clone()
}

#[test]
fn grafana_data_source_is_the_compose_prometheus() {
    let ds = datasource();
    assert_eq!(str_at(&ds, &["type"]), "prometheus");
    let url = str_at(&ds, &["url"]);
    let c = compose();
    let svc = services(&c);
    assert!(svc.contains_key("prometheus"));
    let ports = strings(seq_at(&svc["prometheus"], &["ports"]));
    let port = port_of(&ports[0]);
    assert_eq!(url, format!("http://prometheus:{port}"));
}

/// Every PromQL expression of the dashboard, with its panel's title.
fn dashboard_exprs(d: &Json) -> Vec<(String, String)> {
    fn walk(v: &Json, title: &str, out: &mut Vec<(String, String)>) {
        match v {
            Json::Object(m) => {
                let title = m.get("title").and_then(Json::as_str).unwrap_or(title);
                if let Some(e) = m.get("expr").and_then(Json::as_str) {
                    out.push((title.to_string(), e.to_string()));
                }
                for v in m.values() {
                    walk(v, title, out);
                }
            }
            Json::Array(a) => a.iter().for_each(|v| walk(v, title, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], "", &mut out);
    out
}

/// Metric names in a PromQL expression: identifiers outside strings,
/// label matchers and range selectors that are neither functions,
/// aggregations, keywords, nor the label lists of `by (…)`/`on (…)`.
fn metric_names(expr: &str) -> Vec<String> {
    const KEYWORDS: [&str; 20] = [
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "inf",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Blank out strings, {…} and […].
    let mut flat = String::new();
    let mut quote = None;
    let mut depth = 0i32;
    for c in expr.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            _ if depth == 0 => flat.push(c),
            _ => {}
        }
    }
    let chars: Vec<char> = flat.chars().collect();
    let mut names = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            // A number (0.99, 1e3).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut j = i;
            while j < chars.len() && chars[j].is_whitespace() {
                j += 1;
            }
            let next = chars.get(j).copied();
            if LABEL_LISTS.contains(&word.as_str()) && next == Some('(') {
                // Skip the label list.
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
            } else if next == Some('(') || KEYWORDS.contains(&word.to_ascii_lowercase().as_str()) {
                // A function or an aggregation.
            } else {
                names.push(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

#[test]
fn metric_names_are_found_in_promql() {
    assert_eq!(
        metric_names(
            "histogram_quantile(0.99, sum by (le) (rate(vitals_batch_seconds_bucket[$__rate_interval])))"
        ),
        ["vitals_batch_seconds_bucket"]
    );
    assert_eq!(
        metric_names(r#"sum by (segment) (vitals_portfolio_mrr_cents{segment=~"$segment"}) / 100"#),
        ["vitals_portfolio_mrr_cents"]
    );
    assert_eq!(
        metric_names("max by (partition) (vitals_consumer_lag) + on (x) up"),
        ["vitals_consumer_lag", "up"]
    );
}

/// Named in issue 5 and exported by the portfolio analytics, developed on
/// their own branch; once merged they are found in `src/` like the rest.
const PORTFOLIO_METRICS: [&str; 5] = [
    "vitals_portfolio_nps",
    "vitals_portfolio_gross_churn_rate",
    "vitals_portfolio_nrr",
    "vitals_portfolio_grr",
    "vitals_portfolio_mrr_cents",
];

/// Every string literal `"vitals_…"` in `src/`: the metric names the code
/// exports.
fn metrics_in_source() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for p in files_under(&root().join("src")) {
        if p.extension().and_then(|e| e.to_str()) != Some("rs") {
            continue;
        }
        let text = std::fs::read_to_string(&p).unwrap();
        for piece in text.split("\"vitals_").skip(1) {
            let name: String = piece
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if piece[name.len()..].starts_with('"') {
                names.insert(format!("vitals_{name}"));
            }
        }
    }
    names
}

#[test]
fn dashboard_queries_only_vitals_metrics_the_code_exports() {
    let d: Json = serde_json::from_str(&read("deploy/grafana/dashboards/vitals.json")).unwrap();
    let exprs = dashboard_exprs(&d);
    assert!(exprs.len() >= 10, "{exprs:?}");
    let known = metrics_in_source();
    assert!(known.contains("vitals_events_total"), "{known:?}");
    let mut queried = BTreeSet::new();
    for (title, e) in &exprs {
        let names = metric_names(e);
        assert!(!names.is_empty(), "{title}: no metric in {e}");
        for n in names {
            assert!(n.starts_with("vitals_"), "{title}: {n} in {e}");
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| n.strip_suffix(s))
                .filter(|b| !known.contains(&n) && known.contains(*b))
                .unwrap_or(&n);
            assert!(
                known.contains(base) || PORTFOLIO_METRICS.contains(&base),
                "{title}: {n} is not a metric the code exports"
            );
            queried.insert(base.to_string());
        }
    }
    // The panels issue 5 asks for.
    for m in [
        "vitals_account_score_bucket",
        "vitals_accounts",
        "vitals_alerts_total",
        "vitals_events_total",
        "vitals_dlq_total",
        "vitals_consumer_lag",
        "vitals_event_to_alert_seconds",
        "vitals_batch_seconds",
    ]
    .into_iter()
    .chain(PORTFOLIO_METRICS)
    {
        assert!(queried.contains(m), "no panel queries {m}");
    }

    // Panels use the dashboard's data source variable, which selects the
    // provisioned Prometheus.
    let ds_uid = str_at(&datasource(), &["uid"]).to_string();
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(vars
        .iter()
        .any(|v| v["name"] == "datasource" && v["query"] == "prometheus"));
    let mut ids = BTreeSet::new();
    for p in d["panels"].as_array().unwrap() {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        if p["type"] == "row" {
            continue;
        }
        let uid = p["datasource"]["uid"].as_str().unwrap();
        assert!(uid == "${datasource}" || uid == ds_uid, "{}", p["title"]);
    }
}

// ---------------------------------------------------------------------------
// Kubernetes

/// Every document of every manifest in `deploy/k8s`, by kind.
fn k8s() -> BTreeMap<String, Vec<Yaml>> {
    let mut by_kind: BTreeMap<String, Vec<Yaml>> = BTreeMap::new();
    for p in files_under(&root().join("deploy/k8s")) {
        let name = rel(&p);
        for d in yaml_docs_of(&std::fs::read_to_string(&p).unwrap(), &name) {
            by_kind
                .entry(str_at(&d, &["kind"]).to_string())
                .or_default()
                .push(d);
        }
    }
    by_kind
}

fn one<'a>(k: &'a BTreeMap<String, Vec<Yaml>>, kind: &str) -> &'a Yaml {
    let v = k.get(kind).unwrap_or_else(|| panic!("no {kind}"));
    assert_eq!(v.len(), 1, "expected one {kind}");
    &v[0]
}

/// The workload (Deployment or StatefulSet).
fn workload(k: &BTreeMap<String, Vec<Yaml>>) -> &Yaml {
    let found: Vec<&Yaml> = ["Deployment", "StatefulSet"]
        .iter()
        .filter_map(|kind| k.get(*kind))
        .flatten()
        .collect();
    assert_eq!(found.len(), 1, "one Deployment or StatefulSet");
    found[0]
}

fn container(w: &Yaml) -> &Yaml {
    let cs = seq_at(w, &["spec", "template", "spec", "containers"]);
    cs.iter()
        .find(|c| c.get("name").and_then(Yaml::as_str) == Some("vitals"))
        .expect("a container named vitals")
}

fn labels(v: &Yaml) -> BTreeMap<String, String> {
    v.as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| (scalar(k), scalar(v)))
        .collect()
}

fn selects(selector: &Yaml, pod_labels: &BTreeMap<String, String>) -> bool {
    let want = labels(at(selector, &["matchLabels"]));
    !want.is_empty() && want.iter().all(|(k, v)| pod_labels.get(k) == Some(v))
}

/// The container's port named `name` (or given by number).
fn container_port(c: &Yaml, port: &Yaml) -> u64 {
    match port {
        Yaml::Number(n) => n.as_u64().unwrap(),
        Yaml::String(name) => {
            let p = seq_at(c, &["ports"])
                .iter()
                .find(|p| p.get("name").and_then(Yaml::as_str) == Some(name))
                .unwrap_or_else(|| panic!("no container port named {name}"));
            at(p, &["containerPort"]).as_u64().unwrap()
        }
        other => panic!("bad port {other:?}"),
    }
}

#[test]
fn k8s_probes_ports_and_command_match_the_service() {
    let k = k8s();
    let w = workload(&k);
    let c = container(w);
    let port = u64::from(default_http_port());
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(str_at(c, &[probe, "httpGet", "path"]), path, "{probe}");
        let p = at(c, &[probe, "httpGet", "port"]);
        assert_eq!(container_port(c, p), port, "{probe} port");
    }
    assert_eq!(
        strings(seq_at(c, &["args"])),
        image_cmd(),
        "the container runs the image's command"
    );
    let image = str_at(c, &["image"]);
    assert_eq!(image, format!("vitals:{}", env!("CARGO_PKG_VERSION")));

    // Resources and a non-root user matching the image's.
    for r in ["requests", "limits"] {
        assert!(
            at(c, &["resources", r]).get("memory").is_some(),
            "{r}.memory"
        );
    }
    let sc = at(w, &["spec", "template", "spec", "securityContext"]);
    assert_eq!(at(sc, &["runAsNonRoot"]).as_bool(), Some(true));
    assert_eq!(at(sc, &["runAsUser"]).as_u64(), Some(image_uid()));

    // The Service and the ServiceMonitor reach that port.
    let pod_labels = labels(at(w, &["spec", "template", "metadata", "labels"]));
    assert!(selects(at(w, &["spec", "selector"]), &pod_labels));
    let svc = one(&k, "Service");
    let sp = &seq_at(svc, &["spec", "ports"])[0];
    assert_eq!(at(sp, &["port"]).as_u64(), Some(port));
    assert_eq!(container_port(c, at(sp, &["targetPort"])), port);
    let sel = labels(at(svc, &["spec", "selector"]));
    assert!(sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));

    let sm = one(&k, "ServiceMonitor");
    let svc_labels = labels(at(svc, &["metadata", "labels"]));
    assert!(selects(at(sm, &["spec", "selector"]), &svc_labels));
    let ep = &seq_at(sm, &["spec", "endpoints"])[0];
    assert_eq!(str_at(ep, &["port"]), str_at(sp, &["name"]));
    assert_eq!(str_at(ep, &["path"]), "/metrics");

    let pdb = one(&k, "PodDisruptionBudget");
    assert!(selects(at(pdb, &["spec", "selector"]), &pod_labels));

    // Kustomize applies every manifest but the example Secret, with the
    // image's tag.
    let kz = one(&k, "Kustomization");
    let listed: BTreeSet<String> = strings(seq_at(kz, &["resources"])).into_iter().collect();
    let files: BTreeSet<String> = files_under(&root().join("deploy/k8s"))
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
        .filter(|f| f != "kustomization.yaml" && !f.contains("example"))
        .collect();
    assert_eq!(listed, files);
    let img = &seq_at(kz, &["images"])[0];
    assert_eq!(str_at(img, &["name"]), "vitals");
    assert_eq!(scalar(at(img, &["newTag"])), env!("CARGO_PKG_VERSION"));
}

#[test]
fn k8s_config_map_loads_and_holds_no_secret() {
    let k = k8s();
    let w = workload(&k);
    let c = container(w);
    let config_path = image_config_path();
    let (dir, file) = config_path.rsplit_once('/').unwrap();

    // The ConfigMap is mounted where the command reads the config.
    let mount = seq_at(c, &["volumeMounts"])
        .iter()
        .find(|m| str_at(m, &["mountPath"]) == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"));
    let vol_name = str_at(mount, &["name"]);
    let vol = seq_at(w, &["spec", "template", "spec", "volumes"])
        .iter()
        .find(|v| str_at(v, &["name"]) == vol_name)
        .unwrap();
    let cm_name = str_at(vol, &["configMap", "name"]);
    let cm = k["ConfigMap"]
        .iter()
        .find(|m| str_at(m, &["metadata", "name"]) == cm_name)
        .unwrap_or_else(|| panic!("no ConfigMap {cm_name}"));
    let toml_text = str_at(cm, &["data", file]);

    // No unknown keys, valid values.
    let cfg =
        Config::from_toml(toml_text, "deploy/k8s/configmap.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(port_of(&cfg.http.listen), default_http_port());
    assert!(
        !cfg.http.listen.starts_with("127."),
        "probes need a non-loopback listener"
    );
    for (_, prop) in SECRET_ENV {
        assert!(
            !cfg.kafka.client.contains_key(prop),
            "{prop} is a secret: it belongs in a Secret, not the ConfigMap"
        );
    }

    // The environment: only variables Vitals reads; secrets only from
    // Secrets.
    let secret_vars: BTreeSet<&str> = SECRET_ENV
        .iter()
        .map(|(v, _)| *v)
        .chain(["VITALS_HTTP_TOKEN"])
        .collect();
    let known: BTreeSet<&str> = secret_vars
        .iter()
        .copied()
        .chain(["VITALS_BROKERS", "VITALS_HTTP", "VITALS_MODEL_VERSION"])
        .collect();
    let mut seen = BTreeSet::new();
    for e in seq_at(c, &["env"]) {
        let name = str_at(e, &["name"]);
        if !name.starts_with("VITALS_") {
            continue;
        }
        assert!(known.contains(name), "Vitals does not read {name}");
        if secret_vars.contains(name) {
            assert!(e.get("value").is_none(), "{name} must not be a literal");
            at(e, &["valueFrom", "secretKeyRef", "name"]);
        }
        if name == "VITALS_HTTP" {
            assert_eq!(port_of(&scalar(at(e, &["value"]))), default_http_port());
        }
        seen.insert(name.to_string());
    }
    if cfg.http.require_token {
        assert!(
            seen.contains("VITALS_HTTP_TOKEN"),
            "require_token needs the token"
        );
    }
    if cfg
        .kafka
        .client
        .get("security.protocol")
        .map(String::as_str)
        == Some("SASL_SSL")
    {
        assert!(seen.contains("VITALS_KAFKA_SASL_USERNAME"));
        assert!(seen.contains("VITALS_KAFKA_SASL_PASSWORD"));
    }
}

// ---------------------------------------------------------------------------
// docs/CONFIG.md

/// Every key path of a TOML table with its value; a table without
/// entries (a map with no default entries) is a path of its own.
fn key_paths(prefix: &str, v: &toml::Value, out: &mut BTreeMap<String, toml::Value>) {
    match v {
        toml::Value::Table(t) if !t.is_empty() => {
            for (k, v) in t {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                key_paths(&p, v, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// The rows of the markdown tables whose first cell is a backticked key:
/// key → the second cell.
fn doc_rows(doc: &str) -> BTreeMap<String, String> {
    let mut rows = BTreeMap::new();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("| `") else {
            continue;
        };
        let cells: Vec<&str> = rest.split(" | ").collect();
        let key = cells[0].trim_end_matches('`');
        if cells.len() >= 3 {
            rows.insert(key.to_string(), cells[1].trim().to_string());
        }
    }
    rows
}

#[test]
fn every_config_key_is_documented_with_its_default() {
    let doc = read("docs/CONFIG.md");
    let rows = doc_rows(&doc);

    let mut keys = BTreeMap::new();
    key_paths(
        "",
        &toml::Value::try_from(Config::default()).unwrap(),
        &mut keys,
    );
    // The commented default file: the same keys (and any it adds).
    let mut file_keys = BTreeMap::new();
    key_paths(
        "",
        &toml::from_str::<toml::Value>(&read("config/vitals.toml")).unwrap(),
        &mut file_keys,
    );
    for (k, v) in &file_keys {
        keys.entry(k.clone()).or_insert_with(|| v.clone());
    }
    assert!(keys.len() > 50, "{} keys", keys.len());

    let mut problems = Vec::new();
    for (key, value) in &keys {
        let Some(cell) = rows.get(key) else {
            problems.push(format!("`{key}` has no row in docs/CONFIG.md"));
            continue;
        };
        match value {
            toml::Value::Table(_) => {
                if !cell.contains("table") {
                    problems.push(format!("`{key}`: document it as a table, not {cell}"));
                }
            }
            v => {
                let literal = cell.trim_matches('`');
                match toml::from_str::<toml::Value>(&format!("v = {literal}")) {
                    Ok(t) if t["v"] == *v => {}
                    _ => problems.push(format!("`{key}`: documented default {cell}, code has {v}")),
                }
            }
        }
    }
    // The tables without default entries are documented with the keys an
    // entry may have.
    assert!(keys.contains_key("model.segments"));
    let patch = vitals::core::config::ScorecardPatch {
        weights: vitals::core::config::WeightsPatch {
            usage: Some(1.0),
            adoption: Some(1.0),
            support: Some(1.0),
            financial: Some(1.0),
            sentiment: Some(1.0),
            lifecycle: Some(1.0),
        },
        bands: vitals::core::config::BandsPatch {
            at_risk_below: Some(1.0),
            healthy_at: Some(1.0),
            hysteresis: Some(1.0),
        },
    };
    let mut patch_keys = BTreeMap::new();
    key_paths(
        "model.segments.<name>",
        &toml::Value::try_from(patch).unwrap(),
        &mut patch_keys,
    );
    assert_eq!(patch_keys.len(), 9);
    for k in patch_keys.keys() {
        if !rows.contains_key(k) {
            problems.push(format!("`{k}` has no row in docs/CONFIG.md"));
        }
    }
    // And nothing documented that the code does not have.
    for k in rows.keys() {
        let is_key = ["model.", "kafka.", "sequencer.", "http."]
            .iter()
            .any(|p| k.starts_with(p));
        if is_key && !keys.contains_key(k) && !patch_keys.contains_key(k) {
            problems.push(format!("`{k}` is documented but is not a config key"));
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
}

#[test]
fn every_environment_variable_is_documented() {
    let doc = read("docs/CONFIG.md");
    for var in SECRET_ENV.iter().map(|(v, _)| *v).chain([
        "VITALS_BROKERS",
        "VITALS_HTTP",
        "VITALS_MODEL_VERSION",
        "VITALS_HTTP_TOKEN",
    ]) {
        assert!(
            doc.contains(&format!("| `{var}` |")),
            "{var} has no row in docs/CONFIG.md"
        );
    }
    for (_, prop) in SECRET_ENV {
        assert!(doc.contains(&format!("`{prop}`")), "{prop} is not named");
    }
    assert!(doc.contains("defaults < the config file < environment variables < command-line"));
}

#[test]
fn documented_env_overrides_are_what_the_loader_does() {
    // The precedence the docs state, checked on the loader itself.
    let env: BTreeMap<String, String> = [
        ("VITALS_BROKERS", "b:1"),
        ("VITALS_HTTP", "0.0.0.0:1"),
        ("VITALS_MODEL_VERSION", "v9"),
        ("VITALS_KAFKA_SASL_PASSWORD", "pw"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let mut cfg = Config::from_toml(
        "[kafka]\nbrokers = \"file:9092\"\n[kafka.client]\n\"sasl.password\" = \"from-file\"\n",
        "t.toml",
    )
    .unwrap();
    cfg.apply_env(&env);
    assert_eq!(cfg.kafka.brokers, "b:1");
    assert_eq!(cfg.http.listen, "0.0.0.0:1");
    assert_eq!(cfg.model.version, "v9");
    assert_eq!(cfg.kafka.client["sasl.password"], "pw");
}
