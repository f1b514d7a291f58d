//! Tick cost: the lazy tick (`Model::tick`) against the full walk (`Model::tick_full_scan`) in
//! the same run, on the same events — a backtest-style replay and live ticks at many keys. Both
//! twins must publish the same predictions; the run fails otherwise.

use analyzer::{CacheTtls, Model, ModelConfig};
use chrono::{DateTime, Duration as CDuration, TimeZone, Utc};
use prefetch_common::config::LiveConfig;
use prefetch_common::contract::{Module, QueryEvent, Ticker};
use prefetch_contract::testgen::Gen;
use std::collections::HashMap;
use std::time::Instant;

const MODULES: [&str; 5] = ["price", "chart", "news", "fundamentals", "options"];

/// `prefetch-bench tick` flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Backtest replay: events in total.
    #[arg(long, default_value_t = 1_000_000)]
    pub events: u64,
    /// Backtest replay: live keys the events spread over (5 modules per ticker).
    #[arg(long, default_value_t = 100_000)]
    pub keys: u64,
    /// Backtest replay: event-time span, hours (ticks every 60 s over it).
    #[arg(long, default_value_t = 24)]
    pub span_hours: u64,
    /// Live ticks: keys held (3 events each over the last day before the first tick, 8 h
    /// apart, at times of their own).
    #[arg(long, default_value_t = 1_000_000)]
    pub live_keys: u64,
    /// Live ticks: ticks timed (5 s apart, 200 new events between two ticks).
    #[arg(long, default_value_t = 720)]
    pub live_ticks: u64,
    /// Skip the backtest replay.
    #[arg(long)]
    pub no_backtest: bool,
    /// Skip the live ticks.
    #[arg(long)]
    pub no_live: bool,
}

/// A key index in `[0, n)` with a Zipf-like skew (a power of a uniform draw); the seeded
/// generator gives the same events on every run.
fn skewed_key(rng: &mut Gen, n: u64) -> u64 {
    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    ((u.powi(3) * n as f64) as u64).min(n - 1)
}

struct Keys {
    tickers: Vec<Ticker>,
    modules: Vec<Module>,
}

impl Keys {
    fn new(n: u64) -> Self {
        Self {
            tickers: (0..n.div_ceil(5)).map(|i| Ticker::parse(&format!("T{i}")).unwrap()).collect(),
            modules: MODULES.iter().map(|m| Module::parse(m).unwrap()).collect(),
        }
    }
    fn event(&self, i: u64, ts: DateTime<Utc>, hit: bool) -> QueryEvent {
        QueryEvent {
            ticker: self.tickers[(i / 5) as usize].clone(),
            module: self.modules[(i % 5) as usize].clone(),
            hit,
            ts,
            client: None,
            latency_ms: None,
        }
    }
}

/// One model ticked one way, with its tick times (ms) and a digest of what it published.
struct Twin {
    model: Model,
    lazy: bool,
    ticks_ms: Vec<f64>,
    published: u64,
    digest: u64,
}

impl Twin {
    fn new(lazy: bool) -> anyhow::Result<Self> {
        let mut model = Model::new(ModelConfig::default())?;
        model.set_cache_ttls(CacheTtls::of_live(&LiveConfig::default()));
        Ok(Self { model, lazy, ticks_ms: Vec::new(), published: 0, digest: 0 })
    }
    fn tick(&mut self, now: DateTime<Utc>) -> Vec<prefetch_common::prediction::Prediction> {
        let started = Instant::now();
        let out = if self.lazy { self.model.tick(now) } else { self.model.tick_full_scan(now) };
        self.ticks_ms.push(started.elapsed().as_secs_f64() * 1e3);
        self.published += out.len() as u64;
        for p in &out {
            let h = p.confidence.to_bits() ^ (p.ticker.as_str().len() as u64) << 56;
            self.digest = self.digest.rotate_left(7) ^ h;
        }
        out
    }
    /// Keys visited per tick, and the same split by why (see `TickVisits`).
    fn visits(&self) -> (f64, String) {
        let v = self.model.tick_visits();
        let ticks = self.ticks_ms.len().max(1) as f64;
        let all = v.walked + v.dirty + v.expiring + v.resolving + v.opening + v.popped;
        let per = |n: u64| n as f64 / ticks;
        let split = format!(
            "{} walks ({:.0} keys/tick), per tick: {:.0} dirty, {:.0} expiring, {:.0} resolving, \
             {:.0} opening, {:.0} popped",
            v.walks,
            per(v.walked),
            per(v.dirty),
            per(v.expiring),
            per(v.resolving),
            per(v.opening),
            per(v.popped)
        );
        (per(all), split)
    }
    fn name(&self) -> &'static str {
        if self.lazy {
            "lazy tick (new)"
        } else {
            "full walk (old)"
        }
    }
    fn pct(&mut self, q: f64) -> f64 {
        self.ticks_ms.sort_by(f64::total_cmp);
        let i = ((self.ticks_ms.len() as f64 * q).ceil() as usize).clamp(1, self.ticks_ms.len());
        self.ticks_ms[i - 1]
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if !args.no_backtest {
        backtest(&args)?;
    }
    if !args.no_live {
        live(&args)?;
    }
    Ok(())
}

/// A backtest's replay: events in time order, a tick every 60 s, refresh-ahead on, the cache
/// simulated from the TTLs (a query hits a copy fetched or warmed within its TTL).
fn backtest(args: &Args) -> anyhow::Result<()> {
    let keys = Keys::new(args.keys);
    let ttls = CacheTtls::of_live(&LiveConfig::default());
    let start = Utc.with_ymd_and_hms(2026, 3, 2, 5, 0, 0).unwrap();
    let span_ms = (args.span_hours * 3_600_000) as i64;
    println!("| {} events over {} keys, {} h, tick 60 s | total | in ticks | ticks | tick p50 | tick p99 | tick max | keys visited per tick | predictions |", args.events, args.keys, args.span_hours);
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut splits = Vec::new();
    let mut digests = Vec::new();
    for lazy in [true, false] {
        let mut twin = Twin::new(lazy)?;
        let mut rng = Gen::new(0x5EED);
        let mut cache: HashMap<u64, DateTime<Utc>> = HashMap::new();
        let ttl =
            |i: u64| CDuration::seconds(i64::from(ttls.for_module(MODULES[(i % 5) as usize])));
        let index: HashMap<(String, String), u64> = (0..args.keys)
            .map(|i| {
                let e = keys.event(i, start, false);
                ((e.ticker.as_str().to_owned(), e.module.as_str().to_owned()), i)
            })
            .collect();
        let started = Instant::now();
        let mut next_tick = start + CDuration::seconds(60);
        for n in 0..args.events {
            let ts = start + CDuration::milliseconds(span_ms * n as i64 / args.events as i64);
            while ts >= next_tick {
                for p in twin.tick(next_tick) {
                    if let Some(&i) =
                        index.get(&(p.ticker.as_str().to_owned(), p.module.as_str().to_owned()))
                    {
                        cache.insert(i, next_tick + ttl(i));
                    }
                }
                next_tick += CDuration::seconds(60);
            }
            let i = skewed_key(&mut rng, args.keys);
            let hit = cache.get(&i).is_some_and(|&e| e > ts);
            if !hit {
                cache.insert(i, ts + ttl(i));
            }
            twin.model.record(&keys.event(i, ts, hit));
        }
        let total = started.elapsed().as_secs_f64();
        let (visited, split) = twin.visits();
        splits.push(format!("{}: {split}", twin.name()));
        println!(
            "| {} | {total:.1} s | {:.1} s | {} | {:.2} ms | {:.2} ms | {:.1} ms | {visited:.0} | {} |",
            twin.name(),
            twin.ticks_ms.iter().sum::<f64>() / 1e3,
            twin.ticks_ms.len(),
            twin.pct(0.5),
            twin.pct(0.99),
            twin.pct(1.0),
            twin.published
        );
        digests.push((twin.published, twin.digest));
    }
    for split in splits {
        println!("\n{split}");
    }
    anyhow::ensure!(digests[0] == digests[1], "the two ticks published differently: {digests:?}");
    Ok(())
}

/// Live ticks at many keys: both twins hold the same keys and get the same events.
fn live(args: &Args) -> anyhow::Result<()> {
    let keys = Keys::new(args.live_keys);
    let now = Utc.with_ymd_and_hms(2026, 3, 3, 15, 0, 0).unwrap();
    let mut twins = [Twin::new(true)?, Twin::new(false)?];
    // Each key's three events at its own times over the day (8 h apart, shifted by a hash of
    // the key): with every key at the same instants, a module's 200k keys all tied for the
    // cut, and a tick had to score them all (178,713 a tick; BENCHMARKS.md, "Tick cost").
    for round in 0..3i64 {
        for i in 0..args.live_keys {
            let shift = (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % (8 * 3_600);
            let ts = now - CDuration::hours(24 - 8 * round) + CDuration::seconds(shift as i64);
            for t in &mut twins {
                t.model.record(&keys.event(i, ts, false));
            }
        }
    }
    let mut rng = Gen::new(0xF00D);
    for tick in 0..args.live_ticks {
        let at = now + CDuration::seconds(5 * tick as i64);
        for j in 0..200 {
            let e = keys.event(
                skewed_key(&mut rng, args.live_keys),
                at - CDuration::milliseconds(25 * j),
                false,
            );
            for t in &mut twins {
                t.model.record(&e);
            }
        }
        let (a, b) = (twins[0].tick(at), twins[1].tick(at));
        anyhow::ensure!(a == b, "tick {tick}: the lazy tick and the full walk differ");
    }
    println!(
        "| {} live keys, {} ticks 5 s apart | tick p50 | tick p99 | tick max | keys visited per tick | predictions |",
        args.live_keys, args.live_ticks
    );
    println!("|---|---|---|---|---|---|");
    for t in &mut twins {
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.1} ms | {:.0} | {} |",
            t.name(),
            t.pct(0.5),
            t.pct(0.99),
            t.pct(1.0),
            t.visits().0,
            t.published
        );
    }
    for t in &twins {
        println!("\n{}: {}", t.name(), t.visits().1);
    }
    Ok(())
}
