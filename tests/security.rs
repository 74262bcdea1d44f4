//! Secrets are never logged, printed or served. The real binary runs with
//! a distinctive secret in every secret environment variable
//! (`config::SECRET_ENV`) and another as the HTTP bearer token, with
//! `RUST_LOG=trace` and librdkafka's `debug=all` (its configuration dumps
//! included): while it serves over the embedded broker, while it fails to
//! authenticate with SASL, and when it refuses a bad configuration at
//! start. Neither stdout, stderr, `/metrics`, `/healthz`, `/readyz` nor the
//! account API may contain either secret.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{start_broker, vitals, Proc};
use vitals::config::{Config, SECRET_ENV};

/// What every secret environment variable holds.
const SECRET: &str = "s3cr3t-Zq9";
/// `VITALS_HTTP_TOKEN`.
const TOKEN: &str = "t0ken-Wv7-s3cr3t";
/// Set only in this librdkafka build's rejection test: it has no OIDC
/// support (no libcurl), so any value for it stops the service at start.
const OAUTH_SECRET_ENV: &str = "VITALS_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET";

fn assert_no_secret(what: &str, text: &str) {
    for s in [SECRET, TOKEN] {
        if let Some(at) = text.find(s) {
            let from = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let to = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!("{what} reveals a secret:\n{}", &text[from..to]);
        }
    }
}

/// `vitals ARGS` with every secret set (the OAUTHBEARER one only if
/// `oauth`), trace logging and plain (uncoloured) output.
fn secret_run(args: &[&str], oauth: bool) -> Command {
    let mut c = vitals();
    c.args(args)
        .env("RUST_LOG", "trace")
        .env("NO_COLOR", "1")
        .env("VITALS_HTTP_TOKEN", TOKEN);
    for (var, _) in SECRET_ENV {
        if var != OAUTH_SECRET_ENV || oauth {
            c.env(var, SECRET);
        }
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A config for `vitals run` on `addr`: librdkafka's debug logging on,
/// `client` added to `[kafka.client]`, the API behind a bearer token.
fn write_config(dir: &Path, addr: &str, group: &str, client: &str) -> PathBuf {
    let path = dir.join(format!("{group}.toml"));
    let toml = format!(
        "[kafka]\nbrokers = \"{addr}\"\ngroup_id = \"{group}\"\n\
         [kafka.client]\n\"debug\" = \"all\"\n\"session.timeout.ms\" = \"6000\"\n\
         \"heartbeat.interval.ms\" = \"500\"\n{client}\
         [sequencer]\ntick_every_ms = 300\nmax_wait_ms = 100\n\
         [snapshot]\ndir = \"{}\"\ninterval_secs = 1\n\
         [http]\nlisten = \"127.0.0.1:0\"\nrequire_token = true\n",
        dir.join(format!("{group}-snapshots")).display()
    );
    std::fs::write(&path, toml).expect("write config");
    path
}

/// Starts `cmd` with stdout and stderr going to files in `dir`.
fn spawn_logged(mut cmd: Command, dir: &Path, name: &str) -> (Proc, PathBuf, PathBuf) {
    let out = dir.join(format!("{name}.stdout"));
    let err = dir.join(format!("{name}.stderr"));
    let child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("spawn vitals");
    (Proc(child), out, err)
}

fn read(path: &Path) -> String {
    text(&std::fs::read(path).unwrap_or_default())
}

/// The port of "http listening addr=127.0.0.1:PORT" in the log.
fn http_port(log: &Path, run: &mut Proc) -> u16 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let l = read(log);
        if let Some(i) = l.find("http listening") {
            let rest = &l[i..];
            if let Some(j) = rest.find("127.0.0.1:") {
                let port: String = rest[j + 10..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if let Ok(p) = port.parse() {
                    return p;
                }
            }
        }
        if let Ok(Some(status)) = run.0.try_wait() {
            panic!("vitals run exited ({status}) before listening:\n{l}");
        }
        assert!(Instant::now() < deadline, "no http listener in:\n{l}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One HTTP/1.1 GET; returns (status, the whole response as text).
fn get(port: u16, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let resp = text(&buf);
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp)
}

/// Sends SIGTERM and waits (at most `secs`) for the process to end.
fn terminate(run: &mut Proc, secs: u64) -> std::process::ExitStatus {
    let _ = Command::new("kill")
        .args(["-TERM", &run.0.id().to_string()])
        .status();
    wait_exit(run, secs)
}

fn wait_exit(run: &mut Proc, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(s) = run.0.try_wait().expect("wait") {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "vitals did not exit within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The service folds a stream for a while with every secret set, serves
/// its HTTP routes, and stops: nothing it writes or serves holds a secret.
#[test]
fn a_running_service_never_logs_or_serves_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_broker, addr) = start_broker(2);
    let sim = vitals()
        .args(["simulate", "--accounts", "6", "--days", "20", "--seed", "3"])
        .args(["--brokers", &addr])
        .output()
        .expect("simulate");
    assert!(sim.status.success(), "{}", text(&sim.stderr));

    let config = write_config(dir, &addr, "security-run", "");
    let cfg = config.to_str().unwrap();
    let (mut run, out, err) = spawn_logged(
        secret_run(&["run", "--config", cfg, "--http", "127.0.0.1:0"], false),
        dir,
        "run",
    );
    let port = http_port(&err, &mut run);
    // Let it take its partitions and fold the stream.
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(port, "/readyz", None).0 != 200 {
        assert!(Instant::now() < deadline, "never ready:\n{}", read(&err));
        std::thread::sleep(Duration::from_millis(200));
    }
    let bearer = format!("Bearer {TOKEN}");
    let first = loop {
        let (status, listing) = get(port, "/v1/accounts?limit=1000", Some(&bearer));
        assert_eq!(status, 200, "{listing}");
        if let Some(id) = listing
            .split("\"account_id\":\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no account folded:\n{listing}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let one = format!("/v1/accounts/{first}");
    for (path, auth, want) in [
        ("/metrics", None, Some(200)),
        ("/healthz", None, Some(200)),
        ("/readyz", None, Some(200)),
        ("/v1/accounts", None, Some(401)),
        ("/v1/accounts", Some("Bearer wrong"), Some(401)),
        ("/v1/accounts", Some(bearer.as_str()), Some(200)),
        (one.as_str(), Some(bearer.as_str()), Some(200)),
        ("/v1/accounts/nope", Some(bearer.as_str()), None),
        ("/v1/accounts?bands=x", Some(bearer.as_str()), Some(400)),
        ("/v1/portfolio", Some(bearer.as_str()), None),
        ("/v1/interventions", Some(bearer.as_str()), Some(200)),
        ("/nowhere", Some(bearer.as_str()), Some(404)),
    ] {
        let (status, body) = get(port, path, auth);
        assert_ne!(status, 0, "{path}: no answer");
        if let Some(want) = want {
            assert_eq!(status, want, "{path}: {body}");
        }
        assert_no_secret(&format!("GET {path} ({status})"), &body);
    }
    let status = terminate(&mut run, 60);
    assert!(status.success(), "{status}: {}", read(&err));
    let (stdout, stderr) = (read(&out), read(&err));
    assert_no_secret("stdout", &stdout);
    assert_no_secret("stderr", &stderr);
    // The check is not vacuous: the secrets were configured and librdkafka
    // dumped its configuration, redacting them itself.
    assert!(
        stderr.contains("sasl.password = [redacted]"),
        "no librdkafka configuration dump in the log:\n{}",
        &stderr[..stderr.len().min(4000)]
    );
    assert!(stderr.lines().count() > 1000, "little was logged");
}

/// SASL against the embedded broker fails: the service logs the failure
/// and exits, and neither the log nor the exit message holds a secret.
#[test]
fn a_failing_sasl_login_never_logs_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (_broker, addr) = start_broker(1);
    let config = write_config(
        dir,
        &addr,
        "security-sasl",
        "\"security.protocol\" = \"SASL_PLAINTEXT\"\n\"sasl.mechanism\" = \"PLAIN\"\n",
    );
    let cfg = config.to_str().unwrap();
    let (mut run, out, err) =
        spawn_logged(secret_run(&["run", "--config", cfg], false), dir, "sasl");
    // It cannot read the cluster's metadata (30 s), then stops.
    let status = wait_exit(&mut run, 90);
    let (stdout, stderr) = (read(&out), read(&err));
    assert!(!status.success(), "SASL against the mock broker succeeded?");
    assert!(
        stderr.contains("vitals: cannot reach the Kafka brokers at"),
        "{stderr}"
    );
    // A log file gets plain lines: colours only on a terminal.
    assert!(!stderr.contains('\x1b'), "{stderr}");
    assert_no_secret("stdout", &stdout);
    assert_no_secret("stderr", &stderr);
}

/// librdkafka rejects a property it does not support, and its error
/// carries the value: the service must not print it.
#[test]
fn a_rejected_secret_property_is_not_echoed() {
    let tmp = tempfile::tempdir().unwrap();
    // No broker needed: the client is refused before it connects.
    let config = write_config(tmp.path(), "127.0.0.1:9", "security-oauth", "");
    let cfg = config.to_str().unwrap();
    let out = run_to_end(secret_run(&["run", "--config", cfg], true));
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sasl.oauthbearer.client.secret [redacted]"),
        "expected this build to refuse the OAUTHBEARER secret:\n{stderr}"
    );
    assert_no_secret("stdout", &text(&out.stdout));
    assert_no_secret("stderr", &stderr);
}

fn run_to_end(mut cmd: Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vitals");
    let mut p = Proc(child);
    let status = wait_exit(&mut p, 60);
    let mut o = Output {
        status,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let Some(mut s) = p.0.stdout.take() {
        let _ = s.read_to_end(&mut o.stdout);
    }
    if let Some(mut s) = p.0.stderr.take() {
        let _ = s.read_to_end(&mut o.stderr);
    }
    o
}

/// Configurations refused at start, with every secret in the environment
/// and, where the file is the problem, in the file too: the error names
/// the problem, never the secret.
#[test]
fn a_bad_config_refused_at_start_does_not_echo_a_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 6] = [
        // A number where the password string belongs: toml quotes it.
        (
            "numeric-secret",
            "[kafka.client]\n\"sasl.password\" = 912873465\n",
            &[],
        ),
        (
            "unquoted-secret",
            "[kafka.client]\n\"sasl.password\" = s3cr3t-Zq9\n",
            &[],
        ),
        (
            "unknown-key",
            "[kafka.client]\n\"sasl.password\" = \"s3cr3t-Zq9\"\n[kafka]\ngroup = \"g\"\n",
            &[],
        ),
        (
            "invalid-values",
            "[kafka]\ngroup_id = \"\"\npartitioner = \"crc32\"\n\
             [kafka.client]\n\"bootstrap.servers\" = \"x\"\n\"sasl.password\" = \"s3cr3t-Zq9\"\n",
            &[],
        ),
        ("bad-http-flag", "", &["--http", "not an address"]),
        ("token-required", "[http]\nrequire_token = true\n", &[]),
    ];
    for (name, toml, extra) in cases {
        let path = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&path, toml).unwrap();
        let mut args = vec!["run", "--config", path.to_str().unwrap()];
        args.extend_from_slice(extra);
        let mut cmd = secret_run(&args, false);
        if name == "token-required" {
            cmd.env_remove("VITALS_HTTP_TOKEN");
        }
        let out = run_to_end(cmd);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{name}: started:\n{stderr}");
        assert!(stderr.contains("vitals: "), "{name}: no error:\n{stderr}");
        assert_no_secret(&format!("{name}: stdout"), &text(&out.stdout));
        assert_no_secret(&format!("{name}: stderr"), &stderr);
        if name == "numeric-secret" {
            assert!(!stderr.contains("912873465"), "{stderr}");
        }
    }
    // A config file that cannot be read.
    let out = run_to_end(secret_run(
        &["run", "--config", "/nonexistent/v.toml"],
        true,
    ));
    assert!(!out.status.success());
    assert_no_secret("unreadable config", &text(&out.stderr));
}

/// The loaded configuration holds the secrets (librdkafka needs them), but
/// its `Debug` form, what a `debug!(?cfg)` would log, does not.
#[test]
fn the_config_debug_form_redacts_secrets() {
    let env: BTreeMap<String, String> = SECRET_ENV
        .iter()
        .map(|(var, _)| (var.to_string(), SECRET.to_string()))
        .collect();
    let mut cfg = Config::load(None, &env).expect("loads");
    cfg.kafka
        .client
        .insert("ssl.key.pem".into(), format!("-----BEGIN {SECRET}"));
    for (_, prop) in SECRET_ENV {
        assert_eq!(cfg.kafka.client.get(prop).map(String::as_str), Some(SECRET));
    }
    let shown = format!("{cfg:?} {:?} {cfg:#?}", cfg.kafka);
    assert_no_secret("Config's Debug", &shown);
    assert!(
        shown.contains("\"sasl.password\": \"[redacted]\""),
        "{shown}"
    );
}
