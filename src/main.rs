//! The `vitals` command line: parses flags, sets up logging, loads config
//! and calls into the library.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use vitals::config::Config;
use vitals::core::time::MS_PER_DAY;
use vitals::{backtest, codec, replay, simulate};

// mimalloc instead of the system allocator: 1M accounts of small vectors
// fold ~10–20% faster and restore faster, and freed pages go back to the
// OS instead of staying as glibc's high-water mark (BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "vitals",
    version,
    about = "Live, explainable customer-health scores"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Realistic synthetic customers → a JSONL event log (and ground truth).
    Simulate {
        #[arg(long, default_value_t = 1000, value_parser = at_least_one())]
        accounts: u32,
        #[arg(long, default_value_t = 365, value_parser = at_least_one())]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First day of the simulation (RFC 3339).
        #[arg(long, default_value = "2025-01-06T00:00:00Z")]
        start: String,
        /// Persona weights: steady,silent_churner,support_heavy,payment_trouble,expanding,promoter,detractor.
        #[arg(long, value_delimiter = ',', num_args = 1..=7)]
        mix: Option<Vec<f64>>,
        /// Share of accounts that join during the first 60% of the period
        /// (the rest exist from the first week); 0 = a fixed population.
        #[arg(long, default_value_t = 0.3)]
        joining: f64,
        /// Where to write the events ("-" = stdout).
        #[arg(long, default_value = "-")]
        out: String,
        /// Publish to the input topics of this Kafka cluster instead of
        /// writing a file (keyed by account_id, murmur2-partitioned, JSON).
        #[arg(long, env = "VITALS_BROKERS")]
        brokers: Option<String>,
        /// Publish to the cluster of this service config instead of writing
        /// a file: its kafka.brokers (unless --brokers), client settings
        /// (security) and input topic names.
        #[arg(long)]
        config: Option<PathBuf>,
        /// With --brokers: publish at most this many events per second
        /// (a steady load); 0 = as fast as possible.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Where to write the ground truth (JSONL, one account per line).
        #[arg(long)]
        truth: Option<PathBuf>,
    },
    /// The service: consume the input topics, publish health and alerts.
    Run {
        /// Config file (TOML); default: the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Kafka bootstrap servers, overriding kafka.brokers.
        #[arg(long, env = "VITALS_BROKERS")]
        brokers: Option<String>,
        /// HTTP listen address, overriding http.listen.
        #[arg(long, env = "VITALS_HTTP")]
        http: Option<String>,
    },
    /// Fold a JSONL event log offline: health.jsonl (last health per
    /// account), health_log.jsonl, alerts.jsonl, rejected.jsonl,
    /// summary.json, portfolio.json and interventions.json in --out.
    Replay {
        /// The event log: one SPEC event (JSON) per line.
        #[arg(long)]
        input: PathBuf,
        /// Directory for the outputs (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// Scoring config (what-if re-scoring); default: the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// How well scores and at_risk alerts predict cancellations in a log
    /// (one scorecard, or two side by side with --compare).
    Backtest {
        #[arg(long)]
        input: PathBuf,
        /// Scoring config (TOML); default: the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// A second config, folded in the same pass and shown beside the first.
        #[arg(long)]
        compare: Option<PathBuf>,
        /// Evaluation times (RFC 3339 or YYYY-MM-DD), comma-separated.
        #[arg(long, value_delimiter = ',')]
        at: Vec<String>,
        /// Evaluation days, counted from the first event's day.
        #[arg(long, value_delimiter = ',')]
        at_day: Vec<u32>,
        /// Evaluate every this long (e.g. 30d), from one interval after the
        /// first event while the horizon stays inside the log. The default
        /// when no --at/--at-day is given: 30d.
        #[arg(long, value_parser = duration)]
        every: Option<i64>,
        /// A cancellation within this long after an evaluation time makes
        /// the account a churner there (e.g. 60d, 12w, 720h).
        #[arg(long, value_parser = duration, conflicts_with = "horizon_days")]
        horizon: Option<i64>,
        /// --horizon in days (older spelling).
        #[arg(long)]
        horizon_days: Option<u32>,
        /// An at_risk alert is correct when a cancellation follows within this long.
        #[arg(long, value_parser = duration, conflicts_with = "alert_window_days")]
        alert_window: Option<i64>,
        /// --alert-window in days (older spelling).
        #[arg(long)]
        alert_window_days: Option<u32>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Fit component weights and band thresholds to the outcomes in a log;
    /// write the calibrated config and compare it with the base on the
    /// held-out part of the log.
    Calibrate {
        #[arg(long)]
        input: PathBuf,
        /// Where to write the calibrated config (TOML, the whole [model] section).
        #[arg(long)]
        out: PathBuf,
        /// The base config (TOML); default: the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// At-risk alerts per 100 accounts per month wanted (default: the
        /// base config's load over the training part).
        #[arg(long)]
        target_alerts: Option<f64>,
        /// A cancellation within this long after an evaluation time makes
        /// the account a churner there.
        #[arg(long, value_parser = duration, default_value = "60d")]
        horizon: i64,
        /// Interval between evaluation times.
        #[arg(long, value_parser = duration, default_value = "7d")]
        every: i64,
        /// An at_risk alert is correct when a cancellation follows within this long.
        #[arg(long, value_parser = duration, default_value = "90d")]
        alert_window: i64,
        /// Share of the log's time span to fit on (the rest is held out).
        #[arg(long, default_value_t = 0.7)]
        split: f64,
        /// A segment gets its own scorecard with at least this many
        /// churning accounts in the training part.
        #[arg(long, default_value_t = 50)]
        min_churners: u32,
        /// Print the report as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Snapshots: `vitals snapshot inspect PATH` (a file), `vitals snapshot
    /// list --partition P` (the Kafka store).
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// The embedded Kafka-protocol broker alone (librdkafka's mock cluster)
    /// with the SPEC topics created; prints its bootstrap address.
    Broker {
        /// Partitions of every topic.
        #[arg(long, default_value_t = 4)]
        partitions: u32,
        /// Number of mock brokers.
        #[arg(long, default_value_t = 1)]
        brokers: u32,
        /// Also write the bootstrap address to this file (for scripts).
        #[arg(long)]
        address_file: Option<PathBuf>,
    },
    /// Measurements (BENCHMARKS.md): `e2e` through the embedded broker,
    /// `snapshot` write/restore, `memory` per account, `limits` under
    /// hostile input, `snapshot-kafka` for the Kafka store.
    #[command(subcommand)]
    Bench(BenchCmd),
    /// See it work, no setup: an embedded Kafka-protocol broker, the
    /// service and simulated customers in accelerated time, with the alert
    /// feed printed as it happens and the HTTP API served.
    Demo(DemoOpts),
}

/// `vitals demo`: the whole system on one machine, no setup.
#[derive(clap::Args)]
struct DemoOpts {
    #[arg(long, default_value_t = 200, value_parser = at_least_one())]
    accounts: u32,
    #[arg(long, default_value_t = 150, value_parser = at_least_one())]
    days: u32,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Events per second the simulator publishes (accelerated time).
    #[arg(long, default_value_t = 5000)]
    rate: u64,
    /// Partitions of every topic of the embedded broker.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Stop after this many seconds (0: once the simulation is folded).
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// HTTP listen address (default: http.listen, or a free port if taken).
    #[arg(long, env = "VITALS_HTTP")]
    http: Option<String>,
    /// Most alerts to print (the rest are counted).
    #[arg(long, default_value_t = 40)]
    show: usize,
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Print a snapshot's partition, offsets, watermark, account count,
    /// size, format version and checksum status (JSON).
    Inspect {
        /// A snapshot file (`snapshot.dir/p<P>/<offset>.snap`).
        path: PathBuf,
    },
    /// The complete snapshots of a partition in the Kafka store, newest
    /// first, each inspected like `inspect` does (JSON array).
    List {
        /// Kafka bootstrap servers, overriding kafka.brokers.
        #[arg(long, env = "VITALS_BROKERS")]
        brokers: Option<String>,
        /// Config file (for the brokers, client settings and snapshot.topic).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        partition: u32,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Snapshot write/size/load and tail replay vs full replay, one partition.
    Snapshot {
        #[arg(long, default_value_t = 100_000, value_parser = at_least_one())]
        accounts: u32,
        #[arg(long, default_value_t = 30, value_parser = at_least_one())]
        days: u32,
        /// Days of events after the snapshot (the tail to replay).
        #[arg(long, default_value_t = 1)]
        tail_days: u32,
        /// Cut the snapshot this many events before the end of the log
        /// instead (at most the tail days' events). The service snapshots
        /// at least every `snapshot.every_records` (1,000,000) sequenced
        /// records, so that is the longest tail a restore replays.
        #[arg(long)]
        tail_events: Option<u64>,
        /// Fold the tail account by account, as the simulator makes it,
        /// instead of in event-time order as the service's sequenced log
        /// holds it (the order of the measurements before 2026-12-08).
        #[arg(long)]
        account_major_tail: bool,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Where to write the snapshot (default: a temporary directory).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Times loading a snapshot file `vitals bench snapshot` wrote, in this
    /// process (that command runs it to time a load in a fresh process).
    #[command(hide = true)]
    SnapshotLoad { path: PathBuf },
    /// Loads a snapshot file, then times writing it again (`--times`
    /// writes) into `--dir`, with nothing else running.
    #[command(hide = true)]
    SnapshotWrite {
        path: PathBuf,
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 3, value_parser = at_least_one())]
        times: u32,
    },
    /// The Kafka snapshot store on the embedded broker: put, then list +
    /// get from another instance, of every partition's snapshot.
    SnapshotKafka {
        #[arg(long, default_value_t = 100_000, value_parser = at_least_one())]
        accounts: u32,
        #[arg(long, default_value_t = 30, value_parser = at_least_one())]
        days: u32,
        /// Enough that one partition's snapshot fits the embedded broker's
        /// 5 MiB per partition (about 800 bytes per account).
        #[arg(long, default_value_t = 24)]
        partitions: u32,
        #[arg(long, default_value_t = 524_288)]
        chunk_bytes: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Simulated events through the embedded broker and the whole service:
    /// events/s, then event-to-alert latency at half that rate.
    E2e {
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        #[arg(long, default_value_t = 8)]
        partitions: u32,
        /// Seconds of steady load for the latency measurement.
        #[arg(long, default_value_t = 20)]
        latency_secs: u64,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Most records the producer runs ahead of the fold.
        #[arg(long, default_value_t = 200_000)]
        window: u64,
    },
    /// Fold simulated accounts and report resident memory growth per account.
    Memory {
        #[arg(long, default_value_t = 1_000_000, value_parser = at_least_one())]
        accounts: u32,
        #[arg(long, default_value_t = 30, value_parser = at_least_one())]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// State bounds under hostile input: one account flooded with
    /// distinct user, feature and ticket ids, then many accounts with one
    /// event each (RSS growth; default limits).
    Limits {
        #[arg(long, default_value_t = 1_000_000)]
        flood_ids: u64,
        #[arg(long, default_value_t = 10_000_000)]
        accounts: u64,
    },
}

/// Accounts and days: 0 of either is refused by name (`--days 0` made the
/// simulator panic).
fn at_least_one() -> clap::builder::RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..)
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("VITALS_"))
        .collect()
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    Ok(Config::load(path.map(|p| p.as_path()), &env_map())?)
}

fn main() {
    use std::io::IsTerminal;
    // Colours only on a terminal: a file, a pipe, journald or a container
    // log gets plain lines.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("vitals: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line, each cause once: many errors
/// already say their cause (`{path}: {source}`), and `{:#}` would repeat
/// it.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let c = cause.to_string();
        if msg.ends_with(&c) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&c);
    }
    msg.replace('\n', " ")
}

fn parse_time(s: &str) -> Result<i64> {
    codec::timefmt::parse(s).with_context(|| format!("{s:?} is not an RFC 3339 timestamp"))
}

/// An RFC 3339 time, or a date (midnight UTC).
fn parse_date(s: &str) -> Result<i64> {
    if s.len() == 10 {
        return parse_time(&format!("{s}T00:00:00Z"));
    }
    parse_time(s)
}

/// `60d`, `12w`, `720h` → milliseconds.
fn duration(s: &str) -> Result<i64, String> {
    backtest::parse_duration(s)
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Simulate {
            accounts,
            days,
            seed,
            start,
            mix,
            joining,
            out,
            truth,
            brokers,
            config,
            rate,
        } => {
            if !(0.0..=1.0).contains(&joining) {
                bail!("--joining: a share between 0 and 1, got {joining}");
            }
            let mut o = simulate::SimOptions {
                accounts,
                days,
                seed,
                start: parse_time(&start)?,
                joining,
                ..Default::default()
            };
            if let Some(m) = mix {
                if m.len() != 7 {
                    bail!("--mix: give 7 weights (steady,silent_churner,support_heavy,payment_trouble,expanding,promoter,detractor), got {}", m.len());
                }
                if m.iter().any(|w| w.is_nan() || *w < 0.0) || m.iter().sum::<f64>() <= 0.0 {
                    bail!("--mix: weights must be ≥ 0 and not all 0");
                }
                o.mix.copy_from_slice(&m);
            }
            if brokers.is_some() || config.is_some() {
                // The built-in config when none is given, with the
                // environment's secrets (VITALS_KAFKA_*) either way.
                let mut cfg = load_config(config.as_ref())?;
                if let Some(b) = brokers {
                    cfg.kafka.brokers = b;
                }
                let brokers = cfg.kafka.brokers.clone();
                if let Some(p) = &truth {
                    let mut t = BufWriter::new(
                        File::create(p)
                            .with_context(|| format!("cannot create {}", p.display()))?,
                    );
                    for a in simulate::truth(&o) {
                        serde_json::to_writer(&mut t, &a)?;
                        t.write_all(b"\n")?;
                    }
                    t.flush()?;
                }
                let events = simulate::stream(&o);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let n = rt
                    .block_on(async {
                        let p = vitals::kafka::publish::producer_with(
                            vitals::kafka::service::producer_config(&cfg),
                        )?;
                        vitals::kafka::publish::publish(&p, &cfg.kafka.topics, events, 10_000, rate)
                            .await
                    })
                    .with_context(|| format!("publishing to {brokers}"))?;
                tracing::info!(events = n, accounts, days, seed, %brokers, "simulation published");
                return Ok(());
            }
            let mut w: Box<dyn Write> = if out == "-" {
                Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock()))
            } else {
                Box::new(BufWriter::with_capacity(
                    1 << 20,
                    File::create(&out).with_context(|| format!("cannot create {out}"))?,
                ))
            };
            let mut t = match &truth {
                Some(p) => Some(BufWriter::new(
                    File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
                )),
                None => None,
            };
            let n = simulate::simulate(&o, &mut w, t.as_mut().map(|t| t as &mut dyn Write))?;
            w.flush()?;
            if let Some(t) = t.as_mut() {
                t.flush()?;
            }
            tracing::info!(events = n, accounts, days, seed, "simulation written");
        }
        Cmd::Replay {
            input,
            out,
            config,
            quiet,
        } => {
            let cfg = load_config(config.as_ref())?;
            let s = replay::replay(&replay::Options {
                input,
                out: out.clone(),
                model: cfg.model,
                progress: !quiet,
            })?;
            eprintln!(
                "replayed {} lines in {:.2}s ({:.0} events/s): {} applied, {} late, {} duplicate, {} invalid{}; \
                 {} accounts, {} health records, alerts: {} at_risk, {} recovered, {} upsell",
                s.lines,
                s.elapsed_secs,
                s.events as f64 / s.elapsed_secs.max(1e-9),
                s.applied,
                s.late,
                s.duplicate,
                s.invalid,
                if s.invalid > 0 {
                    format!(" (see {})", out.join("rejected.jsonl").display())
                } else {
                    String::new()
                },
                s.accounts,
                s.health_records,
                s.alerts_at_risk,
                s.alerts_recovered,
                s.alerts_upsell
            );
        }
        Cmd::Backtest {
            input,
            config,
            compare,
            at,
            at_day,
            every,
            horizon,
            horizon_days,
            alert_window,
            alert_window_days,
            json,
        } => {
            let cfg = load_config(config.as_ref())?;
            let cmp = compare.as_ref().map(|p| load_config(Some(p))).transpose()?;
            let at: Vec<i64> = at.iter().map(|s| parse_date(s)).collect::<Result<_>>()?;
            let every = every.or((at.is_empty() && at_day.is_empty()).then_some(30 * MS_PER_DAY));
            let o = backtest::Options {
                at,
                at_day,
                every,
                horizon: horizon.unwrap_or(horizon_days.unwrap_or(60) as i64 * MS_PER_DAY),
                alert_window: alert_window
                    .unwrap_or(alert_window_days.unwrap_or(90) as i64 * MS_PER_DAY),
            };
            let r = backtest::run_file(&input, cfg.model, cmp.map(|c| c.model), &o)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print!("{}", backtest::render(&r));
            }
        }
        Cmd::Calibrate {
            input,
            out,
            config,
            target_alerts,
            horizon,
            every,
            alert_window,
            split,
            min_churners,
            json,
        } => {
            let cfg = load_config(config.as_ref())?;
            let c = vitals::calibrate::calibrate(
                &input,
                cfg.model,
                &vitals::calibrate::Options {
                    horizon,
                    every,
                    alert_window,
                    split,
                    target_alerts,
                    min_churners,
                },
            )?;
            std::fs::write(&out, &c.toml)
                .with_context(|| format!("cannot write {}", out.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&c.report)?);
            } else {
                print!("{}", vitals::calibrate::render(&c.report));
                println!("\nwrote {} (version {})", out.display(), c.report.version);
            }
        }
        Cmd::Broker {
            partitions,
            brokers,
            address_file,
        } => {
            let b = vitals::kafka::broker::EmbeddedBroker::start(brokers, partitions)?;
            let addr = b.bootstrap_servers();
            if let Some(f) = &address_file {
                std::fs::write(f, format!("{addr}\n"))
                    .with_context(|| format!("cannot write {}", f.display()))?;
            }
            println!("{addr}");
            std::io::stdout().flush()?;
            eprintln!(
                "embedded broker (librdkafka mock cluster) at {addr}: topics {} with {partitions} partitions each; \
                 at most 5 MiB kept per partition; Ctrl-C or SIGTERM stops it",
                vitals::kafka::topics::all()
                    .into_iter()
                    .chain([
                        vitals::kafka::topics::SHADOW,
                        vitals::kafka::topics::SNAPSHOTS
                    ])
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            wait_for_shutdown()?;
            drop(b);
        }
        Cmd::Run {
            config,
            brokers,
            http,
        } => {
            let mut cfg = load_config(config.as_ref())?;
            if let Some(b) = brokers {
                cfg.kafka.brokers = b;
            }
            if let Some(h) = http {
                cfg.http.listen = h;
            }
            cfg.validate("command line")?;
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            run_service(cfg, stop, |_| {})?;
        }
        Cmd::Bench(BenchCmd::E2e {
            events,
            partitions,
            latency_secs,
            seed,
            window,
        }) => {
            let r = vitals::kafka::bench::e2e(&vitals::kafka::bench::E2eOptions {
                events,
                partitions,
                latency_secs,
                seed,
                window,
            })?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Cmd::Bench(BenchCmd::Snapshot {
            accounts,
            days,
            tail_days,
            tail_events,
            account_major_tail,
            seed,
            dir,
        }) => {
            let tmp = tempfile::tempdir()?;
            let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
            let opts = vitals::bench::SnapshotOptions {
                accounts,
                days,
                tail_days,
                tail_events,
                account_major_tail,
                seed,
            };
            let mut r = vitals::bench::snapshot(&opts, &dir)?;
            // A crash restores in a new process, whose memory is all
            // untouched: time that load too, in one.
            let out = std::process::Command::new(std::env::current_exe()?)
                .args(["bench", "snapshot-load"])
                .arg(&r.file)
                .stderr(std::process::Stdio::inherit())
                .output()
                .context("running `vitals bench snapshot-load`")?;
            if !out.status.success() {
                bail!("`vitals bench snapshot-load` failed: {}", out.status);
            }
            let secs: f64 = String::from_utf8_lossy(&out.stdout)
                .trim()
                .parse()
                .context("`vitals bench snapshot-load` printed no seconds")?;
            r.load_fresh_process_secs = Some(secs);
            r.restore_fresh_process_secs = Some(secs + r.tail_secs);
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Cmd::Bench(BenchCmd::SnapshotLoad { path }) => {
            println!("{}", vitals::bench::load(&path)?);
        }
        Cmd::Bench(BenchCmd::SnapshotWrite { path, dir, times }) => {
            println!("{:?}", vitals::bench::write(&path, &dir, times)?);
        }
        Cmd::Bench(BenchCmd::SnapshotKafka {
            accounts,
            days,
            partitions,
            chunk_bytes,
            seed,
        }) => {
            let r = vitals::kafka::bench::snapshot_store(
                accounts,
                days,
                partitions,
                seed,
                chunk_bytes,
            )?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Cmd::Bench(BenchCmd::Memory {
            accounts,
            days,
            seed,
        }) => {
            let r = vitals::bench::memory(accounts, days, seed);
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Cmd::Bench(BenchCmd::Limits {
            flood_ids,
            accounts,
        }) => {
            let r = vitals::bench::limits(flood_ids, accounts);
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Cmd::Demo(o) => demo(o)?,
        Cmd::Snapshot(SnapshotCmd::List {
            brokers,
            config,
            partition,
        }) => {
            let mut cfg = load_config(config.as_ref())?;
            if let Some(b) = brokers {
                cfg.kafka.brokers = b;
            }
            let store = vitals::kafka::snapstore::KafkaStore::with_clients(
                &vitals::kafka::service::consumer_config(&cfg),
                &vitals::kafka::service::producer_config(&cfg),
                &cfg.snapshot.topic,
                usize::try_from(cfg.snapshot.chunk_bytes).unwrap_or(usize::MAX),
            )?;
            use vitals::snapshot::SnapshotStore;
            let mut out = Vec::new();
            for name in store.list(partition)? {
                let label = format!("kafka://{}/{partition}/{name}", cfg.snapshot.topic);
                out.push(match store.get(partition, &name) {
                    Ok(b) => vitals::snapshot::inspect_bytes(label, &b),
                    Err(e) => vitals::snapshot::inspection(label, 0, Err(e)),
                });
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Cmd::Snapshot(SnapshotCmd::Inspect { path }) => {
            let i = vitals::snapshot::inspect(&path)?;
            println!("{}", serde_json::to_string_pretty(&i)?);
            if let Some(e) = &i.error {
                bail!("{}: {e}", path.display());
            }
        }
    }
    Ok(())
}

/// Feeds the read side (API, `/metrics`) from the partition workers, and
/// passes events on to another observer (the demo's feed).
struct ReadSideObserver {
    read: std::sync::Arc<vitals::readside::ReadSide>,
    analytics_at: std::sync::Mutex<std::collections::HashMap<u32, std::time::Instant>>,
}

impl vitals::kafka::service::Observer for ReadSideObserver {
    fn assigned(&self, _partitions: &[u32]) {
        self.read.set_joined(true);
    }
    fn shadow(&self, partition: u32, shadow: &vitals::core::Partition) {
        self.read.set_shadow(partition, shadow);
    }
    fn restoring(&self, partition: u32) {
        self.read
            .set_status(partition, vitals::readside::PartitionStatus::default());
    }
    fn batch(
        &self,
        partition: u32,
        part: &vitals::core::Partition,
        touched: &[&str],
        st: &vitals::kafka::service::Status,
    ) {
        self.read.refresh(partition, part, touched);
        // Analytics are copied at most about once a second per partition.
        let now = std::time::Instant::now();
        let mut last = self.analytics_at.lock().unwrap_or_else(|p| p.into_inner());
        let due = last
            .get(&partition)
            .is_none_or(|t| now.duration_since(*t) >= std::time::Duration::from_secs(1));
        if due {
            last.insert(partition, now);
            self.read.set_analytics(partition, part);
        }
        self.read.set_status(
            partition,
            vitals::readside::PartitionStatus {
                watermark: st.watermark,
                sequenced_offset: st.sequenced_offset,
                input_offsets: st.input_offsets.clone(),
                restoring: st.restoring,
                scorecard_changes: part.scorecard_changes.clone(),
            },
        );
    }
    fn revoked(&self, partition: u32) {
        self.read.drop_partition(partition);
    }
}

/// The bearer token for `/v1/*` when `http.require_token` is set.
fn http_token(cfg: &Config) -> Result<Option<String>> {
    if !cfg.http.require_token {
        return Ok(None);
    }
    match std::env::var("VITALS_HTTP_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_string())),
        _ => bail!("http.require_token = true but VITALS_HTTP_TOKEN is not set"),
    }
}

/// Runs the service with its HTTP listener until SIGINT/SIGTERM (or until
/// `stop` is set); the partitions drain and commit before it returns.
/// `ready` is told the bound HTTP address.
fn run_service(
    cfg: Config,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    on_listen: impl FnOnce(std::net::SocketAddr),
) -> Result<()> {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    let token = http_token(&cfg)?;
    let read = Arc::new(vitals::readside::ReadSide::new());
    let handle = vitals::readside::install_recorder();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listen = cfg.http.listen.clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(&listen))
        .with_context(|| format!("http.listen: cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "serving /metrics, /healthz, /readyz and /v1/accounts");
    on_listen(addr);
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let state = vitals::http::HttpState::new(read.clone(), handle, token);
    let server = rt.spawn(vitals::http::serve(listener, state, async move {
        let _ = http_stop_rx.await;
    }));
    let svc = {
        let stop = stop.clone();
        let observer = Arc::new(ReadSideObserver {
            read,
            analytics_at: Default::default(),
        });
        std::thread::Builder::new()
            .name("vitals-consumer".into())
            .spawn(move || {
                let r = vitals::kafka::service::run(&cfg, observer, stop.clone());
                // Wake the signal watcher when the service ends by itself.
                stop.store(true, Ordering::SeqCst);
                r
            })?
    };
    let watcher_stop = stop.clone();
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                    if watcher_stop.load(Ordering::SeqCst) { break; }
                }
            }
        }
        tracing::info!("stopping: finishing the batch in flight");
        watcher_stop.store(true, Ordering::SeqCst);
        Ok::<(), std::io::Error>(())
    })?;
    let result = match svc.join() {
        Ok(r) => r.map_err(anyhow::Error::from),
        Err(_) => Err(anyhow::anyhow!("the service thread panicked")),
    };
    let _ = http_stop_tx.send(());
    let _ = rt.block_on(server);
    result
}

/// Blocks until SIGINT or SIGTERM.
fn wait_for_shutdown() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    Ok(())
}

fn demo(o: DemoOpts) -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::Arc;
    let mut cfg = load_config(None)?;
    let broker = vitals::kafka::broker::EmbeddedBroker::start(1, o.partitions)?;
    cfg.kafka.brokers = broker.bootstrap_servers();
    cfg.kafka.group_id = "vitals-demo".into();
    // A fresh broker each time: snapshots of an earlier demo do not apply.
    let snapshots = tempfile::tempdir().context("a temporary snapshot directory")?;
    cfg.snapshot.dir = snapshots.path().display().to_string();
    if let Some(h) = &o.http {
        cfg.http.listen = h.clone();
    } else if std::net::TcpListener::bind(&cfg.http.listen).is_err() {
        // The default port is taken (another vitals?): any free port.
        cfg.http.listen = "127.0.0.1:0".into();
    }
    cfg.validate("vitals demo")?;
    let sim = simulate::SimOptions {
        accounts: o.accounts,
        days: o.days,
        seed: o.seed,
        ..Default::default()
    };
    let events = simulate::generate(&sim);
    let total = events.len() as u64;
    println!(
        "vitals demo: embedded Kafka-protocol broker at {} ({} partitions per topic)\n\
         simulating {} customers over {} days = {} events, published at {} events/s\n",
        cfg.kafka.brokers, o.partitions, o.accounts, o.days, total, o.rate
    );
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    // The publisher: the simulator as a producer, in accelerated time.
    let published = Arc::new(AtomicBool::new(false));
    let publisher = {
        let brokers = cfg.kafka.brokers.clone();
        let topics = cfg.kafka.topics.clone();
        let published = published.clone();
        let rate = o.rate;
        std::thread::spawn(move || -> Result<u64> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let n = rt.block_on(async {
                let p = vitals::kafka::publish::producer(&brokers)?;
                vitals::kafka::publish::publish(&p, &topics, events, 10_000, rate).await
            })?;
            published.store(true, Ordering::SeqCst);
            Ok(n)
        })
    };
    // The feed: a subscriber of the alert topics, as a CS tool would be.
    let o_topics = (
        cfg.kafka.topics.at_risk.clone(),
        cfg.kafka.topics.upsell.clone(),
    );
    let feed = {
        let brokers = cfg.kafka.brokers.clone();
        let topics = [
            cfg.kafka.topics.at_risk.clone(),
            cfg.kafka.topics.upsell.clone(),
        ];
        let stop = stop.clone();
        let counts = counts.clone();
        let show = o.show;
        std::thread::spawn(move || alert_feed(&brokers, &topics, &stop, &counts, show))
    };
    // Stop after --duration, or once everything published was folded.
    {
        let stop = stop.clone();
        let duration = o.duration;
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            let mut quiet_since: Option<std::time::Instant> = None;
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(200));
                if duration > 0 {
                    if start.elapsed().as_secs() >= duration {
                        break;
                    }
                } else if published.load(Ordering::SeqCst) {
                    let q = *quiet_since.get_or_insert_with(std::time::Instant::now);
                    if q.elapsed().as_secs() >= 5 {
                        break;
                    }
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
    }
    run_service(cfg, stop.clone(), |addr| {
        println!(
            "metrics: http://{addr}/metrics   accounts: http://{addr}/v1/accounts?band=at_risk   (Ctrl-C stops)\n"
        );
        println!(
            "alerts as they arrive (dates are event time; each partition folds at its own pace, \
             so dates from different partitions interleave):\n"
        );
    })?;
    stop.store(true, Ordering::SeqCst);
    let _ = feed.join();
    let n = match publisher.join() {
        Ok(r) => r?,
        Err(_) => bail!("the publisher panicked"),
    };
    let total: u64 = counts.iter().map(|c| c.load(Ordering::SeqCst)).sum();
    println!(
        "\n{n} events published and folded; alerts: {} at_risk, {} recovered, {} upsell_opportunity",
        counts[0].load(Ordering::SeqCst),
        counts[1].load(Ordering::SeqCst),
        counts[2].load(Ordering::SeqCst),
    );
    if total > o.show as u64 {
        println!(
            "({} of them shown above, few upsells among them; --show N prints more, \
             and every alert is on the topics {} and {})",
            o.show, o_topics.0, o_topics.1
        );
    }
    drop(broker);
    Ok(())
}

/// Prints alerts from the alert topics as they are published.
fn alert_feed(
    brokers: &str,
    topics: &[String; 2],
    stop: &std::sync::atomic::AtomicBool,
    counts: &[std::sync::atomic::AtomicU64; 3],
    show: usize,
) -> Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    use std::sync::atomic::Ordering;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "vitals-demo-feed")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    let t: Vec<&str> = topics.iter().map(String::as_str).collect();
    c.subscribe(&t)?;
    let mut shown = 0;
    let mut upsells_shown = 0;
    while !stop.load(Ordering::SeqCst) {
        let Some(Ok(m)) = c.poll(std::time::Duration::from_millis(200)) else {
            continue;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(m.payload().unwrap_or_default())
        else {
            continue;
        };
        let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
        let kind = s("kind");
        let i = match kind.as_str() {
            "at_risk" => 0,
            "recovered" => 1,
            _ => 2,
        };
        counts[i].fetch_add(1, Ordering::SeqCst);
        // Upsells are frequent: show a few, keep room for risk.
        if shown >= show || (i == 2 && upsells_shown >= show / 5) {
            continue;
        }
        shown += 1;
        upsells_shown += usize::from(i == 2);
        let time = s("time");
        let score = v.get("score").and_then(|x| x.as_f64()).unwrap_or(0.0);
        let mark = match i {
            0 => "▼ AT RISK ",
            1 => "▲ RECOVERED",
            _ => "★ UPSELL  ",
        };
        let change = if i == 2 {
            s("band")
        } else {
            format!("{} → {}  {}", s("previous_band"), s("band"), s("reason"))
        };
        println!(
            "{}  {mark}  {:<12} score {:>5.1}  {change}",
            time.get(..10).unwrap_or(&time),
            s("account_id"),
            score,
        );
        for d in v
            .get("drivers")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
            .take(3)
        {
            let impact = d.get("impact").and_then(|x| x.as_f64()).unwrap_or(0.0);
            let detail = d.get("detail").and_then(|x| x.as_str()).unwrap_or("");
            println!("                  {impact:+6.1}  {detail}");
        }
        for g in v
            .get("signals")
            .and_then(|d| d.as_array())
            .into_iter()
            .flatten()
        {
            let detail = g.get("detail").and_then(|x| x.as_str()).unwrap_or("");
            println!("                  ↑ {detail}");
        }
    }
    Ok(())
}
