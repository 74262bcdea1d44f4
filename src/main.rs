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
        #[arg(long, default_value_t = 1000)]
        accounts: u32,
        #[arg(long, default_value_t = 365)]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// First day of the simulation (RFC 3339).
        #[arg(long, default_value = "2025-01-06T00:00:00Z")]
        start: String,
        /// Persona weights: steady,silent_churner,support_heavy,payment_trouble,expanding,promoter,detractor.
        #[arg(long, value_delimiter = ',', num_args = 7)]
        mix: Option<Vec<f64>>,
        /// Where to write the events ("-" = stdout).
        #[arg(long, default_value = "-")]
        out: String,
        /// Publish to the input topics of this Kafka cluster instead of
        /// writing a file (keyed by account_id, murmur2-partitioned, JSON).
        #[arg(long, env = "VITALS_BROKERS")]
        brokers: Option<String>,
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
    /// Fold a JSONL event log offline; write health.jsonl and alerts.jsonl.
    Replay {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Scoring config (what-if re-scoring); default: the built-in one.
        #[arg(long)]
        config: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// How well scores and at_risk alerts predict cancellations in a log.
    Backtest {
        #[arg(long)]
        input: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Evaluation times (RFC 3339), comma-separated.
        #[arg(long, value_delimiter = ',')]
        at: Vec<String>,
        /// Evaluation days, counted from the first event's day.
        #[arg(long, value_delimiter = ',')]
        at_day: Vec<u32>,
        #[arg(long, default_value_t = 60)]
        horizon_days: u32,
        #[arg(long, default_value_t = 90)]
        alert_window_days: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
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
    /// Measurements: `vitals bench memory` (RSS per account of the fold state).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// See it work: simulated customers folded in accelerated time, with
    /// the alert feed printed as it happens (offline; no broker needed).
    Demo {
        #[arg(long, default_value_t = 200)]
        accounts: u32,
        #[arg(long, default_value_t = 180)]
        days: u32,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Most alerts to print (the rest are counted).
        #[arg(long, default_value_t = 40)]
        show: usize,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Fold simulated accounts and report resident memory growth per account.
    Memory {
        #[arg(long, default_value_t = 1_000_000)]
        accounts: u32,
        #[arg(long, default_value_t = 30)]
        days: u32,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Err(e) = run(Cli::parse()) {
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("vitals: {msg}");
        std::process::exit(1);
    }
}

fn parse_time(s: &str) -> Result<i64> {
    codec::timefmt::parse(s).with_context(|| format!("{s:?} is not an RFC 3339 timestamp"))
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Simulate {
            accounts,
            days,
            seed,
            start,
            mix,
            out,
            truth,
            brokers,
            rate,
        } => {
            let mut o = simulate::SimOptions {
                accounts,
                days,
                seed,
                start: parse_time(&start)?,
                ..Default::default()
            };
            if let Some(m) = mix {
                if m.iter().any(|w| w.is_nan() || *w < 0.0) || m.iter().sum::<f64>() <= 0.0 {
                    bail!("--mix: weights must be ≥ 0 and not all 0");
                }
                o.mix.copy_from_slice(&m);
            }
            if let Some(brokers) = brokers {
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
                let events = simulate::generate(&o);
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let n = rt
                    .block_on(async {
                        let p = vitals::kafka::publish::producer(&brokers)?;
                        vitals::kafka::publish::publish(&p, events, 10_000, rate).await
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
                "replayed {} lines in {:.2}s ({:.0} events/s): {} applied, {} late, {} duplicate, {} invalid (see {}); \
                 {} accounts, {} health records, alerts: {} at_risk, {} recovered, {} upsell",
                s.lines,
                s.elapsed_secs,
                s.events as f64 / s.elapsed_secs.max(1e-9),
                s.applied,
                s.late,
                s.duplicate,
                s.invalid,
                out.join("rejected.jsonl").display(),
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
            at,
            at_day,
            horizon_days,
            alert_window_days,
            json,
        } => {
            let cfg = load_config(config.as_ref())?;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("cannot read {}", input.display()))?;
            let mut events = Vec::new();
            let mut bad = 0u64;
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match codec::json::decode(line.as_bytes()) {
                    Ok(e) => events.push(e),
                    Err(_) => bad += 1,
                }
            }
            let Some(first) = events.first().map(|e| e.time) else {
                bail!("{} holds no valid events", input.display());
            };
            let day0 = first.div_euclid(MS_PER_DAY) * MS_PER_DAY;
            let mut times: Vec<i64> = at.iter().map(|s| parse_time(s)).collect::<Result<_>>()?;
            times.extend(at_day.iter().map(|d| day0 + *d as i64 * MS_PER_DAY));
            if times.is_empty() {
                bail!("give --at or --at-day");
            }
            let r = backtest::run(
                events,
                cfg.model,
                &backtest::Options {
                    at: times,
                    horizon_days,
                    alert_window_days,
                },
            );
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                print_backtest(&r, bad);
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
                vitals::kafka::topics::all().join(", ")
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
            run_service(cfg)?;
        }
        Cmd::Bench(BenchCmd::Memory {
            accounts,
            days,
            seed,
        }) => {
            let r = vitals::bench::memory(accounts, days, seed);
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        Cmd::Demo {
            accounts,
            days,
            seed,
            show,
        } => demo(accounts, days, seed, show)?,
    }
    Ok(())
}

/// Runs the service until SIGINT/SIGTERM; the partitions drain and commit
/// before it returns.
fn run_service(cfg: Config) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let svc = {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("vitals-consumer".into())
            .spawn(move || {
                let r = vitals::kafka::service::run(
                    &cfg,
                    Arc::new(vitals::kafka::service::NoObserver),
                    stop.clone(),
                );
                // Wake the signal watcher when the service ends by itself.
                stop.store(true, Ordering::SeqCst);
                r
            })?
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let watcher_stop = stop.clone();
    rt.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                _ = tokio::time::sleep(std::time::Duration::from_millis(200)) => {
                    if watcher_stop.load(Ordering::SeqCst) { break; }
                }
            }
        }
        tracing::info!("signal received: finishing the batch in flight");
        watcher_stop.store(true, Ordering::SeqCst);
        Ok::<(), std::io::Error>(())
    })?;
    match svc.join() {
        Ok(r) => r.map_err(Into::into),
        Err(_) => bail!("the service thread panicked"),
    }
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

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.map_or("n/a".into(), |v| format!("{v:.digits$}"))
}

fn print_backtest(r: &backtest::Report, invalid: u64) {
    println!("model {}  (horizon {} days)", r.model, r.horizon_days);
    println!(
        "{:<26} {:>9} {:>9} {:>7}",
        "evaluated at", "accounts", "churners", "AUC"
    );
    for e in &r.evaluations {
        println!(
            "{:<26} {:>9} {:>9} {:>7}   by component: {}",
            e.at,
            e.accounts,
            e.churners,
            fmt_opt(e.auc, 3),
            e.component_auc
                .iter()
                .map(|(n, a)| format!("{n} {}", fmt_opt(*a, 2)))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    println!(
        "at_risk alerts: {} ({} judged)  precision {}  recall {} ({} cancellations)  median lead {} days  load {} alerts/100 accounts/month",
        r.at_risk_alerts,
        r.at_risk_alerts_judged,
        fmt_opt(r.precision, 3),
        fmt_opt(r.recall, 3),
        r.cancellations_judged,
        fmt_opt(r.median_lead_days, 1),
        fmt_opt(r.alerts_per_100_accounts_per_month, 2)
    );
    if invalid > 0 {
        println!("({invalid} invalid lines skipped)");
    }
}

fn demo(accounts: u32, days: u32, seed: u64, show: usize) -> Result<()> {
    use std::sync::Arc;
    use vitals::core::{Model, Partition, Signal};
    let cfg = load_config(None)?;
    let o = simulate::SimOptions {
        accounts,
        days,
        seed,
        ..Default::default()
    };
    println!(
        "vitals demo (offline fold; the Kafka service is not wired in yet): {accounts} simulated accounts, {days} days, seed {seed}\n"
    );
    let events = simulate::generate(&o);
    let mut part = Partition::new(Arc::new(Model::new(cfg.model)));
    let mut out = Vec::new();
    let mut shown = 0;
    let mut upsells_shown = 0;
    let mut counts = [0u64; 3];
    for ev in &events {
        part.apply(ev, &mut out);
        for s in out.drain(..) {
            if let Signal::Alert(a) = s {
                counts[a.kind as usize] += 1;
                // Upsells are frequent: show a few, keep room for risk.
                let is_upsell = a.kind == vitals::core::AlertKind::UpsellOpportunity;
                if is_upsell && upsells_shown >= show / 5 {
                    continue;
                }
                if shown < show {
                    shown += 1;
                    upsells_shown += usize::from(is_upsell);
                    let when = codec::timefmt::format(a.time);
                    println!(
                        "{}  {:<19} {}  score {:>5.1}  {} → {}  ({})",
                        &when[..10],
                        a.kind.as_str(),
                        a.account_id,
                        a.score,
                        a.previous_band.as_str(),
                        a.band.as_str(),
                        a.reason
                    );
                    for d in a.drivers.iter().take(3) {
                        println!("      {:+6.1}  {}", d.impact, d.detail);
                    }
                    for s in &a.signals {
                        println!("      ↑ {}", s.detail);
                    }
                }
            }
        }
    }
    println!(
        "\n{} events folded; alerts: {} at_risk, {} recovered, {} upsell_opportunity ({} shown)",
        events.len(),
        counts[0],
        counts[1],
        counts[2],
        shown
    );
    Ok(())
}
