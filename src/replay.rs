//! `vitals replay`: fold a JSONL event log offline, through the same fold
//! the service runs, and write what the service would have published.
//!
//! Outputs in `--out DIR`:
//! - `health.jsonl` — per account, the last health record published
//!   (what a compacted read of `vitals.health` shows), sorted by account id;
//! - `health_log.jsonl` — every health record, in log order;
//! - `alerts.jsonl` — every alert, in log order;
//! - `rejected.jsonl` — invalid lines: line number, reason, original text
//!   (and the exact bytes in base64 when the line is not UTF-8);
//! - `summary.json` — counts;
//! - `portfolio.json` — portfolio analytics as of the end of the log,
//!   overall and by segment, with the per-month table
//!   ([`crate::core::portfolio::PortfolioReport`]);
//! - `interventions.json` — the effect of each CS touchpoint kind on score
//!   and churn against matched accounts
//!   ([`crate::core::interventions::InterventionReport`]).
//!
//! Time does not advance past the last event: timers fire only as far as
//! the log's own watermark takes them, exactly as in the live service.
//!
//! A line `{"tick":"<RFC 3339>"}` is a clock tick, as the service's
//! sequencer appends to `vitals.sequenced` when a partition is idle: time
//! moves to it (timers fire) without an event. A partition of
//! `vitals.sequenced` written out as JSONL, ticks included, replays to
//! exactly what the service published for it.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::codec::{json, output};
use crate::core::event::TYPE_NAMES;
use crate::core::partition::Stats;
use crate::core::{AlertKind, Model, ModelConfig, Outcome, Partition, Signal};

/// Errors that stop a replay (bad data never does).
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io<T>(path: &Path, r: std::io::Result<T>) -> Result<T, ReplayError> {
    r.map_err(|source| ReplayError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub lines: u64,
    pub events: u64,
    pub applied: u64,
    pub late: u64,
    pub duplicate: u64,
    pub invalid: u64,
    pub accounts: u64,
    pub health_records: u64,
    pub alerts_at_risk: u64,
    pub alerts_recovered: u64,
    pub alerts_upsell: u64,
    pub timers_fired: u64,
    pub rescore_skipped: u64,
    pub model: String,
    /// Feedback-measured precision per alert kind, where feedback exists.
    pub precision_at_risk: Option<f64>,
    pub precision_upsell: Option<f64>,
    /// Live model monitoring as of the end of the log (docs/MODEL.md).
    pub model_monitor: crate::core::monitor::MonitorReport,
    pub events_by_type: std::collections::BTreeMap<String, [u64; 3]>,
    pub elapsed_secs: f64,
}

impl Summary {
    fn from_stats(st: &Stats, p: &Partition) -> Self {
        let mut s = Summary::default();
        for (i, row) in st.events.iter().enumerate() {
            s.applied += row[Outcome::Applied as usize];
            s.late += row[Outcome::Late as usize];
            s.duplicate += row[Outcome::Duplicate as usize];
            if row.iter().any(|&c| c > 0) {
                s.events_by_type.insert(TYPE_NAMES[i].to_string(), *row);
            }
        }
        s.accounts = p.accounts.len() as u64;
        s.health_records = st.health_published;
        s.alerts_at_risk = st.alerts[AlertKind::AtRisk as usize];
        s.alerts_recovered = st.alerts[AlertKind::Recovered as usize];
        s.alerts_upsell = st.alerts[AlertKind::UpsellOpportunity as usize];
        s.timers_fired = st.timers_fired;
        s.rescore_skipped = st.rescore_skipped;
        s.model = p.model.id.to_string();
        s.precision_at_risk = st.precision(AlertKind::AtRisk);
        s.precision_upsell = st.precision(AlertKind::UpsellOpportunity);
        s.model_monitor = p.monitor.tally.report();
        s
    }
}

#[derive(Serialize)]
struct Rejected<'a> {
    line: u64,
    reason: String,
    /// The line as text (invalid UTF-8 replaced by U+FFFD) ...
    record: &'a str,
    /// ... and, when it is not valid UTF-8, its exact bytes, so nothing
    /// is lost.
    #[serde(skip_serializing_if = "Option::is_none")]
    record_base64: Option<String>,
}

/// Options for [`replay`].
#[derive(Debug, Clone)]
pub struct Options {
    pub input: PathBuf,
    pub out: PathBuf,
    pub model: ModelConfig,
    pub progress: bool,
}

/// Folds `input` and writes the outputs. Bad lines are rejected, never fatal.
pub fn replay(opts: &Options) -> Result<Summary, ReplayError> {
    let start = Instant::now();
    let inp = &opts.input;
    let file = io(inp, File::open(inp))?;
    io(&opts.out, std::fs::create_dir_all(&opts.out))?;
    let total = io(inp, file.metadata())?.len();
    let bar = if opts.progress {
        let b = indicatif::ProgressBar::new(total);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        b
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut reader = LogLines::new(BufReader::with_capacity(1 << 20, file));

    let create = |name: &str| -> Result<(PathBuf, BufWriter<File>), ReplayError> {
        let p = opts.out.join(name);
        let f = io(&p, File::create(&p))?;
        Ok((p, BufWriter::with_capacity(1 << 20, f)))
    };
    let (alerts_path, mut alerts) = create("alerts.jsonl")?;
    let (log_path, mut health_log) = create("health_log.jsonl")?;
    let (rej_path, mut rejected) = create("rejected.jsonl")?;

    let mut part = Partition::new(Arc::new(Model::new(opts.model.clone())));
    let mut out = Vec::new();
    // Per account index: where its last health record is in health_log.
    let mut last_health: Vec<(u64, u32)> = Vec::new();
    let mut log_pos = 0u64;
    let mut lines = 0u64;
    let mut invalid = 0u64;
    while let Some(LogLine {
        body, bytes_read, ..
    }) = io(inp, reader.next_line())?
    {
        lines += 1;
        if lines % 65536 == 0 {
            bar.set_position(bytes_read);
        }
        // An oversize line is cut; the decoder rejects it for its size.
        if body.is_empty() {
            continue;
        }
        if let Some(t) = tick(body) {
            part.advance(t, &mut out);
        } else {
            match json::decode(body) {
                Ok(ev) => {
                    part.apply(&ev, &mut out);
                }
                Err(e) => {
                    invalid += 1;
                    let text = String::from_utf8_lossy(body);
                    let exact = match &text {
                        std::borrow::Cow::Borrowed(_) => None,
                        std::borrow::Cow::Owned(_) => {
                            use base64::Engine;
                            Some(base64::engine::general_purpose::STANDARD.encode(body))
                        }
                    };
                    let rec = Rejected {
                        line: lines,
                        reason: e.to_string(),
                        record: &text,
                        record_base64: exact,
                    };
                    io(
                        &rej_path,
                        serde_json::to_writer(&mut rejected, &rec).map_err(std::io::Error::other),
                    )?;
                    io(&rej_path, rejected.write_all(b"\n"))?;
                    continue;
                }
            }
        }
        for s in out.drain(..) {
            match s {
                Signal::Health(h) => {
                    let bytes = output::health_json(&h);
                    let idx = account_index(&part, &h.account_id);
                    if last_health.len() <= idx {
                        last_health.resize(idx + 1, (0, 0));
                    }
                    last_health[idx] = (log_pos, bytes.len() as u32);
                    io(&log_path, health_log.write_all(&bytes))?;
                    io(&log_path, health_log.write_all(b"\n"))?;
                    log_pos += bytes.len() as u64 + 1;
                }
                Signal::Alert(a) => {
                    io(&alerts_path, alerts.write_all(&output::alert_json(&a)))?;
                    io(&alerts_path, alerts.write_all(b"\n"))?;
                }
            }
        }
    }
    bar.finish_and_clear();
    io(&alerts_path, alerts.flush())?;
    io(&rej_path, rejected.flush())?;
    io(&log_path, health_log.flush())?;
    drop(health_log);

    // health.jsonl: the last record per account, sorted by account id.
    let log_file = io(&log_path, File::open(&log_path))?;
    let mut order: Vec<usize> = (0..part.accounts.len().min(last_health.len()))
        .filter(|&i| last_health[i].1 > 0)
        .collect();
    order.sort_by(|&a, &b| part.accounts[a].id.cmp(&part.accounts[b].id));
    let (health_path, mut health) = create("health.jsonl")?;
    let mut buf = Vec::new();
    for i in order {
        let (pos, len) = last_health[i];
        buf.resize(len as usize, 0);
        io(&log_path, log_file.read_exact_at(&mut buf, pos))?;
        io(&health_path, health.write_all(&buf))?;
        io(&health_path, health.write_all(b"\n"))?;
    }
    io(&health_path, health.flush())?;

    let mut summary = Summary::from_stats(&part.stats, &part);
    summary.lines = lines;
    summary.invalid = invalid;
    summary.events = summary.applied + summary.late + summary.duplicate + invalid;
    summary.elapsed_secs = start.elapsed().as_secs_f64();
    write_json(&opts.out.join("summary.json"), &summary)?;
    write_json(&opts.out.join("portfolio.json"), &part.portfolio_report())?;
    write_json(
        &opts.out.join("interventions.json"),
        &part.interventions_report(),
    )?;
    Ok(summary)
}

/// Writes a value as pretty JSON with a final newline.
fn write_json(path: &Path, value: &impl Serialize) -> Result<(), ReplayError> {
    // Plain data (no maps with non-string keys): serializing cannot fail.
    let text = serde_json::to_string_pretty(value).expect("report serializes");
    io(path, std::fs::write(path, text + "\n"))
}

/// A clock-tick line: `{"tick":"<RFC 3339>"}`.
pub(crate) fn tick(body: &[u8]) -> Option<crate::core::Ts> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tick<'a> {
        tick: &'a str,
    }
    if !body.starts_with(b"{\"tick\"") {
        return None;
    }
    let t: Tick = serde_json::from_slice(body).ok()?;
    crate::codec::timefmt::parse(t.tick)
}

fn account_index(p: &Partition, id: &str) -> usize {
    p.account_index(id).expect("a signal's account exists")
}

/// A JSONL log read line by line, each line bounded by
/// [`crate::codec::MAX_RECORD_BYTES`] so one huge line cannot exhaust
/// memory: how `vitals replay` and `vitals backtest` both read a log.
pub struct LogLines<R> {
    reader: R,
    line: Vec<u8>,
    bytes_read: u64,
}

/// One line of a log, as [`LogLines`] reads it.
pub struct LogLine<'a> {
    /// The line without its trailing whitespace (maybe empty).
    pub body: &'a [u8],
    /// The line was over the bound: `body` is cut (its first bytes and 64
    /// of the rest, for the rejection message) and the rest was skipped.
    pub oversize: bool,
    /// Bytes of the log read so far (for progress).
    pub bytes_read: u64,
}

impl<R: BufRead> LogLines<R> {
    pub fn new(reader: R) -> Self {
        LogLines {
            reader,
            line: Vec::with_capacity(4096),
            bytes_read: 0,
        }
    }

    /// The next line, `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<LogLine<'_>>> {
        let max = crate::codec::MAX_RECORD_BYTES as u64;
        self.line.clear();
        let n = (&mut self.reader)
            .take(max + 2)
            .read_until(b'\n', &mut self.line)?;
        if n == 0 {
            return Ok(None);
        }
        self.bytes_read += n as u64;
        let oversize = !self.line.ends_with(b"\n") && n as u64 > max;
        if oversize {
            let mut rest = Vec::new();
            self.bytes_read += self.reader.read_until(b'\n', &mut rest)? as u64;
            self.line.extend_from_slice(&rest[..rest.len().min(64)]);
        }
        Ok(Some(LogLine {
            body: trim(&self.line),
            oversize,
            bytes_read: self.bytes_read,
        }))
    }
}

fn trim(line: &[u8]) -> &[u8] {
    let mut s = line;
    while let Some((&last, rest)) = s.split_last() {
        if last == b'\n' || last == b'\r' || last == b' ' || last == b'\t' {
            s = rest;
        } else {
            break;
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines come back trimmed; one over the bound comes back cut and
    /// flagged, and the line after it is read intact.
    #[test]
    fn log_lines_bound_each_line_and_resume_after_an_oversize_one() {
        let max = crate::codec::MAX_RECORD_BYTES;
        let mut log = b"first \r\n\n".to_vec();
        log.extend(std::iter::repeat_n(b'x', max + 500));
        log.extend(b"\nlast");
        let mut r = LogLines::new(std::io::Cursor::new(&log));
        let mut got = Vec::new();
        while let Some(l) = r.next_line().unwrap() {
            got.push((l.body.len(), l.oversize, l.bytes_read));
        }
        let total = log.len() as u64;
        assert_eq!(
            got,
            vec![
                (5, false, 8),
                (0, false, 9),
                ((max + 2) + 64, true, 9 + max as u64 + 501),
                (4, false, total),
            ]
        );
    }
}
