//! The HTTP listener over a known event log: the fold runs in daily
//! batches over two partitions, the read side is refreshed per batch as a
//! worker would, and every answer is checked against the fold's own
//! health records.
//!
//! The client is a few lines of HTTP/1.1 over `std::net::TcpStream` (run
//! on the blocking pool), so the test needs no HTTP client crate; the
//! `/metrics` text is checked by a strict exposition-format parser below.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;
use vitals::codec::{json, output, timefmt};
use vitals::core::time::{day_of, MS_PER_DAY, MS_PER_HOUR};
use vitals::core::{Health, Model, ModelConfig, Partition, Signal};
use vitals::http::{serve, HttpState};
use vitals::readside::{install_recorder, PartitionStatus, ReadSide};

const DAYS: i64 = 120;
const QUOTED_SEGMENT: &str = "mid \"q\" \\ x";

fn t0() -> i64 {
    timefmt::parse("2026-01-05T00:00:00Z").expect("start time")
}

fn at(day: i64, hour: i64) -> String {
    timefmt::format(t0() + day * MS_PER_DAY + hour * MS_PER_HOUR)
}

/// One event line; `extra` is the type's fields as JSON object members.
fn line(id: &str, account: &str, ty: &str, day: i64, hour: i64, extra: &str) -> (i64, String) {
    let sep = if extra.is_empty() { "" } else { "," };
    (
        day,
        format!(
            r#"{{"id":"{id}","account_id":"{account}","type":"{ty}","time":"{}"{sep}{extra}}}"#,
            at(day, hour)
        ),
    )
}

/// The log, by partition: (day, JSON line). Six accounts with different
/// fates: a healthy enterprise account, an smb account that goes silent and
/// has payment trouble, an unsegmented one with an override, a cancelled
/// one, and on the second partition a busy account and one whose segment
/// needs escaping in Prometheus labels.
fn event_log() -> [Vec<(i64, String)>; 2] {
    let mut p0 = Vec::new();
    let mut p1 = Vec::new();
    let started = |plan: &str, mrr: u32, seats: u32| {
        format!(r#""plan":"{plan}","mrr_cents":{mrr},"seats":{seats}"#)
    };
    // acme: enterprise, used every day by rotating users.
    p0.push(line(
        "a-start",
        "acme",
        "subscription.started",
        0,
        8,
        &started("enterprise", 50_000, 10),
    ));
    p0.push(line(
        "a-seg",
        "acme",
        "account.updated",
        0,
        9,
        r#""segment":"enterprise""#,
    ));
    for d in 0..DAYS {
        for u in 0..4 {
            let user = (d + u) % 8;
            p0.push(line(
                &format!("a-l{d}-{u}"),
                "acme",
                "usage.login",
                d,
                10 + u,
                &format!(r#""user_id":"u{user}""#),
            ));
        }
        let feature = ["reports", "export", "alerts", "api", "sso"][(d % 5) as usize];
        p0.push(line(
            &format!("a-f{d}"),
            "acme",
            "usage.feature",
            d,
            15,
            &format!(r#""user_id":"u{}","feature":"{feature}","count":3"#, d % 8),
        ));
    }
    p0.push(line("a-nps", "acme", "survey.nps", 100, 12, r#""score":9"#));
    p0.push(line(
        "a-t1",
        "acme",
        "ticket.opened",
        110,
        9,
        r#""ticket_id":"t1","priority":"high""#,
    ));
    // globex: smb, active for 40 days, then silence, an urgent ticket, a
    // detractor and a failed payment.
    p0.push(line(
        "g-start",
        "globex",
        "subscription.started",
        0,
        8,
        &started("team", 10_000, 5),
    ));
    p0.push(line(
        "g-seg",
        "globex",
        "account.updated",
        0,
        9,
        r#""segment":"smb""#,
    ));
    for d in 0..40 {
        for u in 0..2 {
            p0.push(line(
                &format!("g-l{d}-{u}"),
                "globex",
                "usage.login",
                d,
                11 + u,
                &format!(r#""user_id":"g{u}""#),
            ));
        }
    }
    p0.push(line(
        "g-t1",
        "globex",
        "ticket.opened",
        60,
        9,
        r#""ticket_id":"gt1","priority":"urgent""#,
    ));
    p0.push(line(
        "g-t2",
        "globex",
        "ticket.opened",
        62,
        9,
        r#""ticket_id":"gt2","priority":"normal""#,
    ));
    p0.push(line("g-nps", "globex", "survey.nps", 61, 9, r#""score":2"#));
    p0.push(line(
        "g-pf",
        "globex",
        "invoice.payment_failed",
        70,
        9,
        r#""invoice_id":"i1","amount_cents":10000"#,
    ));
    // initech: no segment, light use, an override near the end.
    p0.push(line(
        "i-start",
        "initech",
        "subscription.started",
        0,
        8,
        &started("starter", 5_000, 3),
    ));
    for d in (0..DAYS).step_by(3) {
        p0.push(line(
            &format!("i-l{d}"),
            "initech",
            "usage.login",
            d,
            14,
            r#""user_id":"i1""#,
        ));
    }
    p0.push(line(
        "i-ov",
        "initech",
        "health.override",
        115,
        9,
        &format!(
            r#""band":"at_risk","reason":"champion left","by":"csm@example.com","expires_at":"{}""#,
            at(200, 0)
        ),
    ));
    // umbrella: smb, cancelled on day 30.
    p0.push(line(
        "u-start",
        "umbrella",
        "subscription.started",
        0,
        8,
        &started("team", 8_000, 4),
    ));
    p0.push(line(
        "u-seg",
        "umbrella",
        "account.updated",
        0,
        9,
        r#""segment":"smb""#,
    ));
    for d in 0..20 {
        p0.push(line(
            &format!("u-l{d}"),
            "umbrella",
            "usage.login",
            d,
            13,
            r#""user_id":"x1""#,
        ));
    }
    p0.push(line(
        "u-cancel",
        "umbrella",
        "subscription.cancelled",
        30,
        9,
        r#""reason":"budget""#,
    ));
    // hooli (partition 1): smb, busy from day 10.
    p1.push(line(
        "h-start",
        "hooli",
        "subscription.started",
        10,
        8,
        &started("team", 20_000, 5),
    ));
    p1.push(line(
        "h-seg",
        "hooli",
        "account.updated",
        10,
        9,
        r#""segment":"smb""#,
    ));
    for d in 10..DAYS {
        for u in 0..5 {
            p1.push(line(
                &format!("h-l{d}-{u}"),
                "hooli",
                "usage.login",
                d,
                10 + u,
                &format!(r#""user_id":"h{u}""#),
            ));
        }
        p1.push(line(
            &format!("h-f{d}"),
            "hooli",
            "usage.feature",
            d,
            16,
            &format!(r#""user_id":"h1","feature":"f{}""#, d % 4),
        ));
    }
    // quoted (partition 1): a segment with a quote and a backslash.
    p1.push(line(
        "q-start",
        "quoted",
        "subscription.started",
        5,
        8,
        &started("team", 3_000, 2),
    ));
    p1.push(line(
        "q-seg",
        "quoted",
        "account.updated",
        5,
        9,
        &format!(
            r#""segment":{}"#,
            serde_json::to_string(QUOTED_SEGMENT).expect("json string")
        ),
    ));
    for d in (5..DAYS).step_by(2) {
        p1.push(line(
            &format!("q-l{d}"),
            "quoted",
            "usage.login",
            d,
            12,
            r#""user_id":"q1""#,
        ));
    }
    p1.push(line(
        "q-t1",
        "quoted",
        "ticket.opened",
        50,
        9,
        r#""ticket_id":"qt1","priority":"normal""#,
    ));
    p0.sort_by_key(|(d, l)| (*d, json::decode(l.as_bytes()).expect("event").time));
    p1.sort_by_key(|(d, l)| (*d, json::decode(l.as_bytes()).expect("event").time));
    [p0, p1]
}

/// `publish_min_delta = 0`: every scoring publishes a health record, so the
/// last record of each account is exactly its last evaluation.
fn model() -> Arc<Model> {
    let mut cfg = ModelConfig::default();
    cfg.alerts.publish_min_delta = 0.0;
    Arc::new(Model::new(cfg))
}

struct Folded {
    parts: [Partition; 2],
    read: Arc<ReadSide>,
    /// Every health record of each account, in order.
    health: BTreeMap<String, Vec<Health>>,
    events: [i64; 2],
}

/// Folds the log in daily batches, as a partition worker would: apply the
/// day's events, let the day's timers fire, publish the touched accounts,
/// then the status.
fn fold_log() -> Folded {
    let log = event_log();
    let read = Arc::new(ReadSide::new());
    let mut parts = [Partition::new(model()), Partition::new(model())];
    let mut health: BTreeMap<String, Vec<Health>> = BTreeMap::new();
    let mut events = [0i64; 2];
    for (p, part) in parts.iter_mut().enumerate() {
        read.set_status(p as u32, PartitionStatus::default());
        for day in 0..DAYS {
            let mut out = Vec::new();
            let mut touched: BTreeSet<String> = BTreeSet::new();
            for (_, l) in log[p].iter().filter(|(d, _)| *d == day) {
                let ev = json::decode(l.as_bytes()).expect("valid test event");
                touched.insert(ev.account_id.to_string());
                part.apply(&ev, &mut out);
                events[p] += 1;
            }
            part.advance(t0() + (day + 1) * MS_PER_DAY, &mut out);
            for s in out {
                touched.insert(s.account_id().to_string());
                if let Signal::Health(h) = s {
                    health.entry(h.account_id.clone()).or_default().push(h);
                }
            }
            let ids: Vec<&str> = touched.iter().map(String::as_str).collect();
            read.refresh(p as u32, part, &ids);
            read.set_status(
                p as u32,
                PartitionStatus {
                    watermark: Some(part.watermark()),
                    sequenced_offset: events[p],
                    input_offsets: vec![("vitals.usage".into(), events[p] * 2)],
                    restoring: false,
                    ..PartitionStatus::default()
                },
            );
        }
    }
    Folded {
        parts,
        read,
        health,
        events,
    }
}

// ---- a tiny HTTP/1.1 client ----

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let i = b
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&b[..i]).expect("chunk size");
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .expect("hex chunk size");
        b = &b[i + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

fn request_blocking(addr: SocketAddr, raw: Vec<u8>) -> Resp {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // The server may answer and close before it has read a large request
    // (that is the point of some cases): a failed write is then expected,
    // and the answer is still there to read.
    if let Err(e) = s.write_all(&raw) {
        assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
            ),
            "send: {e}"
        );
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            // A reset after the answer: keep what arrived.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && !buf.is_empty() => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = std::str::from_utf8(&buf[..end]).expect("utf-8 head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
    let status = status_line[9..12].parse().expect("status code");
    let headers: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').expect("header line");
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let body = &buf[end + 4..];
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Resp {
        status,
        headers,
        body: String::from_utf8(body).expect("utf-8 body"),
    }
}

async fn send(addr: SocketAddr, method: &str, path: &str, extra_headers: &str) -> Resp {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n{extra_headers}\r\n"
    )
    .into_bytes();
    tokio::task::spawn_blocking(move || request_blocking(addr, raw))
        .await
        .expect("client task")
}

async fn get(addr: SocketAddr, path: &str) -> Resp {
    send(addr, "GET", path, "").await
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(read: Arc<ReadSide>, token: Option<&str>) -> Server {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = HttpState::new(read, install_recorder(), token.map(str::to_string));
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async move {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let r = tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops")
            .expect("server task");
        r.expect("serve returns Ok");
    }
}

// ---- a strict Prometheus text-format (0.0.4) parser ----

#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Parses the exposition text, rejecting anything the format does not
/// allow: bad names, bad escapes, samples of a family split by another
/// family, a TYPE after its samples or twice, samples that do not belong
/// to their declared family, duplicate series.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut samples = Vec::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeSet<String> = BTreeSet::new();
    let mut finished: BTreeSet<String> = BTreeSet::new();
    let mut current: Option<String> = None;
    let mut seen: BTreeSet<(String, BTreeMap<String, String>)> = BTreeSet::new();
    let family_of = |name: &str, types: &BTreeMap<String, String>| -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if matches!(
                    types.get(base).map(String::as_str),
                    Some("histogram" | "summary")
                ) {
                    return base.to_string();
                }
            }
        }
        name.to_string()
    };
    let enter = |fam: &str, current: &mut Option<String>, finished: &mut BTreeSet<String>| {
        if current.as_deref() != Some(fam) {
            if finished.contains(fam) {
                return Err(format!("family {fam} is split"));
            }
            if let Some(c) = current.take() {
                finished.insert(c);
            }
            *current = Some(fam.to_string());
        }
        Ok(())
    };
    for (n, l) in text.lines().enumerate() {
        let err = |m: String| format!("line {}: {m}: {l:?}", n + 1);
        if l.is_empty() {
            continue;
        }
        if let Some(rest) = l.strip_prefix('#') {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            let mut parts = rest.splitn(3, ' ');
            match parts.next() {
                Some("HELP") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| err("HELP without name".into()))?;
                    if !is_name(name, true) {
                        return Err(err("bad HELP name".into()));
                    }
                    if !helps.insert(name.to_string()) {
                        return Err(err("second HELP".into()));
                    }
                    enter(name, &mut current, &mut finished).map_err(err)?;
                }
                Some("TYPE") => {
                    let name = parts
                        .next()
                        .ok_or_else(|| err("TYPE without name".into()))?;
                    let ty = parts
                        .next()
                        .ok_or_else(|| err("TYPE without type".into()))?;
                    if !matches!(
                        ty,
                        "counter" | "gauge" | "histogram" | "summary" | "untyped"
                    ) {
                        return Err(err(format!("unknown type {ty}")));
                    }
                    if types.insert(name.to_string(), ty.to_string()).is_some() {
                        return Err(err("second TYPE".into()));
                    }
                    if samples
                        .iter()
                        .any(|s: &Sample| family_of(&s.name, &types) == name)
                    {
                        return Err(err("TYPE after samples".into()));
                    }
                    enter(name, &mut current, &mut finished).map_err(err)?;
                }
                _ => {} // a comment
            }
            continue;
        }
        // name{labels} value [timestamp]
        let name_end = l.find(['{', ' ']).ok_or_else(|| err("no value".into()))?;
        let name = &l[..name_end];
        if !is_name(name, true) {
            return Err(err("bad metric name".into()));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &l[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut r = r;
            loop {
                if let Some(after) = r.strip_prefix('}') {
                    r = after;
                    break;
                }
                let eq = r.find('=').ok_or_else(|| err("label without =".into()))?;
                let lname = &r[..eq];
                if !is_name(lname, false) {
                    return Err(err(format!("bad label name {lname:?}")));
                }
                r = r[eq + 1..]
                    .strip_prefix('"')
                    .ok_or_else(|| err("label value not quoted".into()))?;
                let mut value = String::new();
                let mut chars = r.char_indices();
                let close = loop {
                    match chars.next() {
                        None => return Err(err("unterminated label value".into())),
                        Some((i, '"')) => break i,
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(err("bad escape".into())),
                        },
                        Some((_, '\n')) => return Err(err("newline in label value".into())),
                        Some((_, c)) => value.push(c),
                    }
                };
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err("repeated label".into()));
                }
                r = &r[close + 1..];
                if let Some(after) = r.strip_prefix(',') {
                    r = after;
                } else if !r.starts_with('}') {
                    return Err(err("expected , or }".into()));
                }
            }
            rest = r;
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("expected a space before the value".into()))?;
        let mut fields = rest.split(' ');
        let value = parse_value(fields.next().unwrap_or("")).map_err(err)?;
        if let Some(ts) = fields.next() {
            ts.parse::<i64>().map_err(|_| err("bad timestamp".into()))?;
        }
        if fields.next().is_some() {
            return Err(err("trailing fields".into()));
        }
        let fam = family_of(name, &types);
        enter(&fam, &mut current, &mut finished).map_err(err)?;
        if matches!(types.get(&fam).map(String::as_str), Some("histogram"))
            && name.ends_with("_bucket")
            && !labels.contains_key("le")
        {
            return Err(err("histogram bucket without le".into()));
        }
        if !seen.insert((name.to_string(), labels.clone())) {
            return Err(err("duplicate series".into()));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    Ok(samples)
}

#[test]
fn the_parser_is_strict() {
    assert!(parse_exposition("a 1\nb{x=\"y\"} 2 123\n").is_ok());
    for bad in [
        "a{x=\"y} 1",
        "a{x=y} 1",
        "a{x=\"\\t\"} 1",
        "1a 1",
        "a one",
        "a 1\nb 1\na 2",
        "a 1\na 1",
        "a{x=\"1\",x=\"2\"} 1",
        "# TYPE a gauge\n# TYPE a gauge",
        "# TYPE a histogram\na_bucket 1",
        "a{-x=\"1\"} 1",
        "a  1",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

// ---- expectations from the fold's own records ----

fn last_health(f: &Folded, id: &str) -> Health {
    f.health
        .get(id)
        .and_then(|v| v.last())
        .cloned()
        .unwrap_or_else(|| panic!("{id} published health"))
}

/// `le` of a score: the smallest multiple of 10 at or above it (≥ 10).
fn le_of(score: f64) -> u32 {
    ((score / 10.0).ceil() as u32).clamp(1, 10) * 10
}

const ACCOUNTS: [&str; 6] = ["acme", "globex", "initech", "umbrella", "hooli", "quoted"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_api_listing_and_metrics_over_a_known_log() {
    let f = fold_log();
    assert_eq!(f.read.len(), ACCOUNTS.len());
    let server = Server::start(Arc::clone(&f.read), None).await;
    let addr = server.addr;

    // --- one account: the health record's fields, exactly ---
    for id in ACCOUNTS {
        let r = get(addr, &format!("/v1/accounts/{id}")).await;
        assert_eq!(r.status, 200, "{id}: {}", r.body);
        assert!(r
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")));
        let got = r.json();
        let h = last_health(&f, id);
        let Value::Object(record) =
            serde_json::from_slice::<Value>(&output::health_json(&h)).expect("record json")
        else {
            panic!("record is an object")
        };
        for (k, v) in &record {
            if k != "caused_by" && k != "time" {
                assert_eq!(&got[k], v, "{id}.{k}");
            }
        }
        assert!(got.get("caused_by").is_none());
        // `time` is the account's last evaluation: the record's time, or
        // later when later usage provably left the score unchanged (the
        // fold skips re-scoring then and publishes nothing).
        let p = if matches!(id, "hooli" | "quoted") {
            1
        } else {
            0
        };
        let acc = f.parts[p].account(id).expect("account in its partition");
        assert_eq!(
            got["time"].as_str(),
            Some(timefmt::format(acc.last_eval).as_str())
        );
        assert!(acc.last_eval >= h.time);
        assert_eq!(got["score"].as_f64(), Some(h.score), "{id}");
        assert_eq!(got["restoring"], Value::Bool(false));
        assert_eq!(got["partition"], p);
        assert_eq!(got["as_of"]["partition"], p);
        assert_eq!(got["as_of"]["sequenced_offset"], f.events[p]);
        assert_eq!(
            got["as_of"]["input_offsets"]["vitals.usage"],
            f.events[p] * 2
        );
        assert_eq!(
            got["as_of"]["watermark"].as_str(),
            Some(timefmt::format(f.parts[p].watermark()).as_str())
        );
    }

    // acme in detail: drivers, 90 daily points equal to the end-of-day
    // score of the fold's records, tickets, MRR, NPS.
    let acme = get(addr, "/v1/accounts/acme").await.json();
    let h = last_health(&f, "acme");
    assert!(!h.drivers.is_empty());
    assert_eq!(
        acme["drivers"].as_array().map(Vec::len),
        Some(h.drivers.len())
    );
    assert_eq!(acme["drivers"][0]["factor"], h.drivers[0].factor);
    let points = acme["score_days"].as_array().expect("score_days");
    assert_eq!(points.len(), 90);
    let mut end_of_day: BTreeMap<i32, f64> = BTreeMap::new();
    for r in &f.health["acme"] {
        end_of_day.insert(day_of(r.time), r.score);
    }
    let last_day = day_of(h.time);
    for (i, p) in points.iter().enumerate() {
        let day = last_day - 89 + i as i32;
        assert_eq!(
            p["date"].as_str(),
            timefmt::format(day as i64 * MS_PER_DAY).get(..10)
        );
        let expected = end_of_day
            .range(..=day)
            .next_back()
            .map(|(_, s)| *s)
            .expect("scored by then");
        assert_eq!(p["score"].as_f64(), Some(expected.round()), "day {i}");
    }
    assert_eq!(acme["open_tickets"]["high"], 1);
    assert_eq!(acme["open_tickets"]["total"], 1);
    assert_eq!(acme["mrr_cents"], 50_000);
    assert_eq!(acme["nps"]["score"], 9);
    assert_eq!(acme["nps"]["date"], at(100, 0)[..10]);
    assert_eq!(acme["segment"], "enterprise");
    let globex = get(addr, "/v1/accounts/globex").await.json();
    assert_eq!(globex["band"], "at_risk");
    assert_eq!(globex["open_tickets"]["urgent"], 1);
    assert_eq!(globex["open_tickets"]["normal"], 1);
    let initech = get(addr, "/v1/accounts/initech").await.json();
    assert_eq!(initech["override"]["band"], "at_risk");
    assert_eq!(initech["override"]["reason"], "champion left");
    assert_eq!(initech["segment"], Value::Null);
    assert_eq!(
        get(addr, "/v1/accounts/umbrella").await.json()["status"],
        "cancelled"
    );

    // --- listing: worst first, ties by id, filters ---
    let all = get(addr, "/v1/accounts?limit=1000").await;
    assert_eq!(all.status, 200, "{}", all.body);
    let all = all.json();
    assert_eq!(all["next_cursor"], Value::Null);
    assert_eq!(all["restoring"], Value::Bool(false));
    assert_eq!(all["as_of"]["partitions"].as_array().map(Vec::len), Some(2));
    // The analytics routes say how current they are, as the listing does
    // (SPEC §5); the portfolio is not known until a partition published
    // its analytics.
    let iv = get(addr, "/v1/interventions").await;
    assert_eq!(iv.status, 200, "{}", iv.body);
    let iv = iv.json();
    assert_eq!(iv["as_of"], all["as_of"]);
    assert_eq!(iv["restoring"], Value::Bool(false));
    let pf = get(addr, "/v1/portfolio").await;
    assert_eq!(pf.status, 503, "{}", pf.body);
    assert!(pf.header("retry-after").is_some());
    let listed: Vec<(f64, String)> = all["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .map(|a| {
            (
                a["score"].as_f64().expect("score"),
                a["account_id"].as_str().expect("id").to_string(),
            )
        })
        .collect();
    // Active accounts by default (as `vitals_accounts` counts them).
    let mut everyone: Vec<(f64, String)> = ACCOUNTS
        .iter()
        .map(|id| (last_health(&f, id).score, id.to_string()))
        .collect();
    everyone.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
    let expected: Vec<(f64, String)> = everyone
        .iter()
        .filter(|(_, id)| !last_health(&f, id).cancelled)
        .cloned()
        .collect();
    assert_eq!(listed, expected);
    assert_eq!(expected.len(), 5);

    let ids = |v: &Value| -> Vec<String> {
        v["accounts"]
            .as_array()
            .expect("accounts")
            .iter()
            .map(|a| a["account_id"].as_str().expect("id").to_string())
            .collect()
    };
    let where_ = |pred: &dyn Fn(&Health) -> bool| -> Vec<String> {
        expected
            .iter()
            .filter(|(_, id)| pred(&last_health(&f, id)))
            .map(|(_, id)| id.clone())
            .collect()
    };
    let at_risk = get(addr, "/v1/accounts?band=at_risk").await.json();
    assert_eq!(ids(&at_risk), where_(&|h| h.band.as_str() == "at_risk"));
    assert!(ids(&at_risk).contains(&"globex".to_string()));
    let smb = get(addr, "/v1/accounts?segment=smb").await.json();
    assert_eq!(ids(&smb), where_(&|h| h.segment.as_deref() == Some("smb")));
    assert_eq!(ids(&smb), ["globex", "hooli"]);
    let quoted = get(addr, "/v1/accounts?segment=mid%20%22q%22%20%5C%20x")
        .await
        .json();
    assert_eq!(ids(&quoted), ["quoted"]);
    let none = get(addr, "/v1/accounts?segment=").await.json();
    assert_eq!(ids(&none), ["initech"]);
    let cancelled = get(addr, "/v1/accounts?status=cancelled").await.json();
    assert_eq!(ids(&cancelled), ["umbrella"]);
    let all = get(addr, "/v1/accounts?status=all").await.json();
    assert_eq!(
        ids(&all),
        everyone
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<Vec<_>>()
    );
    let smb_active = get(addr, "/v1/accounts?segment=smb&status=active&band=at_risk")
        .await
        .json();
    assert_eq!(
        ids(&smb_active),
        where_(&|h| h.segment.as_deref() == Some("smb")
            && !h.cancelled
            && h.band.as_str() == "at_risk")
    );

    // --- pagination: pages of 2 add up to the whole listing ---
    let mut paged = Vec::new();
    let mut path = "/v1/accounts?limit=2".to_string();
    let mut pages = 0;
    loop {
        let page = get(addr, &path).await.json();
        pages += 1;
        let got = ids(&page);
        assert!(got.len() <= 2);
        paged.extend(got);
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/accounts?limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        paged,
        expected
            .iter()
            .map(|(_, id)| id.clone())
            .collect::<Vec<_>>()
    );

    // --- errors ---
    let r = get(addr, "/v1/accounts/nope").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["status"], 404);
    assert!(r.json()["error"]
        .as_str()
        .is_some_and(|e| e.contains("nope")));
    for q in [
        "band=bad",
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "cursor=garbage!",
        "cursor=bm9uZQ",
        "status=gone",
        "bands=at_risk",
    ] {
        let r = get(addr, &format!("/v1/accounts?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        let j = r.json();
        assert_eq!(j["status"], 400, "{q}");
        assert!(j["error"].as_str().is_some_and(|e| !e.is_empty()), "{q}");
    }
    assert_eq!(get(addr, "/v1/accounts?limit=1000").await.status, 200);
    let r = get(addr, "/v2/nothing").await;
    assert_eq!(
        (r.status, r.json()["status"].clone()),
        (404, Value::from(404))
    );
    let r = send(addr, "POST", "/v1/accounts", "Content-Length: 0\r\n").await;
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["status"], 405);
    // Headers beyond the bound are refused before any handler runs.
    let big = format!("X-Big: {}\r\n", "a".repeat(20 * 1024));
    let r = send(addr, "GET", "/healthz", &big).await;
    assert_eq!(r.status, 431);

    // --- /healthz, /readyz ---
    let r = get(addr, "/healthz").await;
    assert_eq!((r.status, r.body.as_str()), (200, "ok"));
    let r = get(addr, "/readyz").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["ready"], true);

    // --- /metrics: valid exposition text with the exact counts ---
    metrics::counter!("vitals_events_total", "topic" => "vitals.usage", "type" => "usage.login", "outcome" => "applied")
        .increment(7);
    metrics::histogram!("vitals_batch_duration_seconds").record(0.02);
    let r = get(addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain; version=0.0.4")));
    let samples = parse_exposition(&r.body).unwrap_or_else(|e| panic!("{e}\n{}", r.body));
    for s in &samples {
        for forbidden in ["account", "account_id"] {
            assert!(!s.labels.contains_key(forbidden), "{s:?}");
        }
        for id in ACCOUNTS {
            assert!(
                s.labels.values().all(|v| v != id),
                "an account id as a label value: {s:?}"
            );
        }
    }
    assert!(samples.iter().any(|s| s.name == "vitals_events_total"
        && s.labels.get("outcome").map(String::as_str) == Some("applied")
        && s.value >= 7.0));
    assert!(samples
        .iter()
        .any(|s| s.name == "vitals_batch_duration_seconds_bucket"));
    // Installing again is harmless and gives a handle to the same recorder.
    assert!(install_recorder().render().contains("vitals_events_total"));

    // Expected from the fold's records: bands and cumulative buckets of
    // the active accounts, by segment.
    let mut want_bands: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut want_buckets: BTreeMap<(String, String), f64> = BTreeMap::new();
    let mut want_cancelled: BTreeMap<String, f64> = BTreeMap::new();
    for id in ACCOUNTS {
        let h = last_health(&f, id);
        let seg = h.segment.clone().unwrap_or_default();
        if h.cancelled {
            *want_cancelled.entry(seg).or_default() += 1.0;
            continue;
        }
        *want_bands
            .entry((h.band.as_str().into(), seg.clone()))
            .or_default() += 1.0;
        for le in (10..=100).step_by(10) {
            if le_of(h.score) <= le {
                *want_buckets
                    .entry((seg.clone(), le.to_string()))
                    .or_default() += 1.0;
            }
        }
        *want_buckets.entry((seg, "+Inf".into())).or_default() += 1.0;
    }
    let label = |s: &Sample, k: &str| s.labels.get(k).cloned().unwrap_or_default();
    let mut got_bands = BTreeMap::new();
    let mut got_buckets = BTreeMap::new();
    let mut got_cancelled = BTreeMap::new();
    for s in &samples {
        match s.name.as_str() {
            "vitals_accounts" => {
                assert_eq!(s.labels.keys().collect::<Vec<_>>(), ["band", "segment"]);
                if s.value != 0.0 {
                    got_bands.insert((label(s, "band"), label(s, "segment")), s.value);
                }
            }
            "vitals_account_score_bucket" => {
                assert_eq!(s.labels.keys().collect::<Vec<_>>(), ["le", "segment"]);
                if s.value != 0.0 {
                    got_buckets.insert((label(s, "segment"), label(s, "le")), s.value);
                }
            }
            "vitals_accounts_cancelled" if s.value != 0.0 => {
                got_cancelled.insert(label(s, "segment"), s.value);
            }
            _ => {}
        }
    }
    assert_eq!(got_bands, want_bands);
    assert_eq!(got_buckets, want_buckets);
    assert_eq!(got_cancelled, want_cancelled);
    // Pinned for this log, so a change in the model shows up here too.
    let total_active: f64 = got_bands.values().sum();
    assert_eq!(total_active, 5.0);
    assert_eq!(
        got_bands.get(&("at_risk".to_string(), "smb".to_string())),
        Some(&1.0)
    );
    assert_eq!(got_cancelled.get("smb"), Some(&1.0));
    let q = QUOTED_SEGMENT;
    let pinned_bands: BTreeMap<(String, String), f64> = [
        (("neutral", ""), 1.0),
        (("healthy", "enterprise"), 1.0),
        (("neutral", q), 1.0),
        (("at_risk", "smb"), 1.0),
        (("healthy", "smb"), 1.0),
    ]
    .into_iter()
    .map(|((b, s), n)| ((b.to_string(), s.to_string()), n))
    .collect();
    assert_eq!(got_bands, pinned_bands);
    let mut pinned_buckets: BTreeMap<(String, String), f64> = BTreeMap::new();
    let les = [
        "10", "20", "30", "40", "50", "60", "70", "80", "90", "100", "+Inf",
    ];
    // (segment, first non-zero le index, counts from there on)
    for (seg, from, counts) in [
        ("", 6, &[1.0; 5][..]),
        ("enterprise", 7, &[1.0; 4][..]),
        (q, 6, &[1.0; 5][..]),
        ("smb", 4, &[1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0][..]),
    ] {
        for (i, n) in counts.iter().enumerate() {
            pinned_buckets.insert((seg.to_string(), les[from + i].to_string()), *n);
        }
    }
    assert_eq!(got_buckets, pinned_buckets);
    let restoring: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.name == "vitals_partition_restoring")
        .collect();
    assert_eq!(restoring.len(), 2);
    assert!(restoring.iter().all(|s| s.value == 0.0));

    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_guards_the_api_only() {
    let f = fold_log();
    let server = Server::start(Arc::clone(&f.read), Some("s3cret")).await;
    let addr = server.addr;
    let r = get(addr, "/v1/accounts/acme").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["status"], 401);
    assert!(r
        .header("www-authenticate")
        .is_some_and(|v| v.starts_with("Bearer")));
    for auth in [
        "Authorization: Bearer wrong\r\n",
        "Authorization: Basic s3cret\r\n",
        "Authorization: Bearer s3cre\r\n",
    ] {
        assert_eq!(
            send(addr, "GET", "/v1/accounts", auth).await.status,
            401,
            "{auth}"
        );
    }
    let ok = "Authorization: Bearer s3cret\r\n";
    assert_eq!(send(addr, "GET", "/v1/accounts/acme", ok).await.status, 200);
    assert_eq!(
        send(addr, "GET", "/v1/accounts?band=at_risk", ok)
            .await
            .status,
        200
    );
    assert_eq!(
        send(
            addr,
            "GET",
            "/v1/accounts",
            "Authorization: bearer s3cret\r\n"
        )
        .await
        .status,
        200
    );
    // 404 only for a caller who may ask.
    assert_eq!(send(addr, "GET", "/v1/accounts/nope", ok).await.status, 404);
    assert_eq!(get(addr, "/v1/accounts/nope").await.status, 401);
    for open in ["/metrics", "/healthz", "/readyz"] {
        assert_eq!(get(addr, open).await.status, 200, "{open}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_restoring_partitions() {
    let f = fold_log();
    // A fresh read side, as after a restart: nothing assigned yet.
    let read = Arc::new(ReadSide::new());
    let server = Server::start(Arc::clone(&read), None).await;
    let addr = server.addr;
    let r = get(addr, "/readyz").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["reason"], "no_assignment");
    assert_eq!(r.json()["status"], 503);

    // Partition 0 assigned and restoring: not ready; its accounts are not
    // known yet (503 with Retry-After, not 404).
    read.set_status(0, PartitionStatus::default());
    let r = get(addr, "/readyz").await;
    assert_eq!(r.status, 503);
    let j = r.json();
    assert_eq!(j["reason"], "restoring");
    assert_eq!(j["restoring"], serde_json::json!([0]));
    let r = get(addr, "/v1/accounts/acme").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["restoring"], true);
    assert!(r.header("retry-after").is_some());

    // Restored state published, still restoring: answers say so.
    read.refresh_all(0, &f.parts[0]);
    let r = get(addr, "/v1/accounts/acme").await;
    assert_eq!(r.status, 200);
    let j = r.json();
    assert_eq!(j["restoring"], true);
    assert_eq!(j["as_of"]["sequenced_offset"], -1);
    assert_eq!(get(addr, "/v1/accounts").await.json()["restoring"], true);
    // The restored view equals the live one, except for history the
    // snapshot does not hold (32 days in the core).
    let live = f.read.get("acme").expect("live view");
    let restored = read.get("acme").expect("restored view");
    assert_eq!(restored.health, live.health);
    assert_eq!(j["score_days"].as_array().map(Vec::len), Some(32));

    assert_eq!(j["scorecard_changes"], serde_json::json!([]));

    // Two config changes: one before the account's history (not shown),
    // one inside it (marked).
    let wm = f.parts[0].watermark();
    let change = |at, from: &str, to: &str| vitals::core::ScorecardChange {
        at,
        from: from.into(),
        to: to.into(),
    };
    read.set_status(
        0,
        PartitionStatus {
            watermark: Some(wm),
            sequenced_offset: f.events[0],
            input_offsets: vec![("vitals.usage".into(), 1)],
            restoring: false,
            scorecard_changes: vec![
                change(wm - 400 * 86_400_000, "v0+00000000", "v1+11111111"),
                change(wm - 3 * 86_400_000, "v1+11111111", "v2+22222222"),
            ],
        },
    );
    let r = get(addr, "/readyz").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let j = get(addr, "/v1/accounts/acme").await.json();
    assert_eq!(j["restoring"], false);
    assert_eq!(j["as_of"]["sequenced_offset"], f.events[0]);
    assert_eq!(
        j["scorecard_changes"],
        serde_json::json!([{
            "time": vitals::codec::timefmt::format(wm - 3 * 86_400_000),
            "from": "v1+11111111",
            "to": "v2+22222222",
        }])
    );
    // Ready now, so an account of another instance's partition is a 404.
    assert_eq!(get(addr, "/v1/accounts/hooli").await.status, 404);

    // Revocation: the partition and its accounts go; an instance that has
    // joined its group with nothing assigned is still ready.
    read.drop_partition(0);
    assert!(read.is_empty());
    assert_eq!(get(addr, "/readyz").await.status, 503);
    read.set_joined(true);
    assert_eq!(get(addr, "/readyz").await.status, 200);
    assert_eq!(get(addr, "/v1/accounts/acme").await.status, 404);
    server.stop().await;
}

/// Oversize requests are refused by the listener before any handler runs,
/// bodies are never waited for, and page sizes stay within 1..=MAX_LIMIT
/// however the parameter is spelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_requests_and_page_sizes_are_refused() {
    use vitals::http::{MAX_HEADERS, MAX_HEADER_BYTES, MAX_LIMIT};
    let f = fold_log();
    let server = Server::start(Arc::clone(&f.read), None).await;
    let addr = server.addr;

    // A request line longer than the header buffer (the line counts
    // against it, so hyper answers 431 rather than 414).
    let long = "a".repeat(MAX_HEADER_BYTES + 1024);
    let r = get(addr, &format!("/v1/accounts?cursor={long}")).await;
    assert_eq!(r.status, 431, "{}", r.body);
    // More headers than allowed, each of them small.
    let many: String = (0..=MAX_HEADERS)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    assert_eq!(send(addr, "GET", "/healthz", &many).await.status, 431);
    // Exactly as many is fine (Host and Connection count too).
    let ok: String = (0..MAX_HEADERS - 2)
        .map(|i| format!("X-H{i}: v\r\n"))
        .collect();
    assert_eq!(send(addr, "GET", "/healthz", &ok).await.status, 200);

    // A body is never read nor waited for: a claimed 1 GiB that never
    // comes still gets its answer (a server waiting for it would leave the
    // client's read to time out), and a POST of 2 MiB is refused.
    let r = send(
        addr,
        "GET",
        "/healthz",
        &format!("Content-Length: {}\r\n", 1u64 << 30),
    )
    .await;
    assert_eq!(r.status, 200);
    let body = vec![b'x'; 2 << 20];
    let mut raw = format!(
        "POST /v1/accounts HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(&body);
    let r = tokio::task::spawn_blocking(move || request_blocking(addr, raw))
        .await
        .expect("client task");
    assert_eq!(r.status, 405);

    // Page sizes: out of range, overflowing, repeated or malformed.
    for q in [
        format!("limit={}", MAX_LIMIT + 1),
        "limit=18446744073709551616".to_string(),
        "limit=99999999999999999999999999".to_string(),
        "limit=1000&limit=1".to_string(),
        "limit=1&limit=1000000".to_string(),
        "limit=1e3".to_string(),
        "limit=".to_string(),
        "limit=%2B1001".to_string(),
        format!("limit={}", usize::MAX),
        format!("cursor={}", "QUFB".repeat(3000)),
    ] {
        let r = get(addr, &format!("/v1/accounts?{q}")).await;
        assert_eq!(r.status, 400, "{q}: {}", r.body);
        assert_eq!(r.json()["status"], 400, "{q}");
    }
    let r = get(addr, &format!("/v1/accounts?limit={MAX_LIMIT}&status=all")).await;
    assert_eq!(r.status, 200);
    let n = r.json()["accounts"].as_array().map_or(0, Vec::len);
    assert!((1..=MAX_LIMIT).contains(&n), "{n}");
    server.stop().await;
}
