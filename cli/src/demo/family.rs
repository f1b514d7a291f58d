//! The trace family of issue #13: demo traces whose structure, not just one knob, is drawn from
//! a seed — which traffic dominates (dashboards, analyst sessions, news bursts, one-off
//! lookups, or a mix), 100 to 20,000 tickers, popularity skew, module mixes and widget periods,
//! session and burst shapes, scheduled scans, the market (New York, London, Frankfurt, Tokyo,
//! Hong Kong, Mumbai, Sydney, or a crypto venue trading around the clock), the cache's TTL mix,
//! producers that name no client, a regime change halfway through, and producers that send no
//! hit flags (always `hit: false`).
//!
//! **The split.** [`DEV_SEEDS`] are the members the model's defaults were developed and tuned
//! on (1–12 until session 22, when 13–24 joined them: the first twelve had no analyst sessions
//! without client ids, what the anonymous sequences of `model/src/sequence.rs` were developed
//! for; 25–36 since session 23: the first 24 had no one-off lookups over more than 1,600
//! tickers nor anonymous sessions on popular tickers, the archetypes of the evaluation misses);
//! [`EVAL_SEEDS`] are only ever evaluated (`cargo run --release -p prefetch --example
//! backtest_targets`), never tuned on. BENCHMARKS.md ("Evaluation on held-out traces") states the same split.
//!
//! A member is replayed with the default live config, except for what describes the deployment
//! rather than the model: the cache's TTLs and the market's time zone ([`Member::live_config`]),
//! and whether the producer reports hits ([`Member::hit_flags`]).

use super::calendar::Market;
use super::params::Params;
use super::rng::Rng;
use super::shape::{PerModule, Shape};
use super::{Generator, ParamsError};
use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};
use prefetch_common::config::LiveConfig;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// Seeds the defaults are developed and tuned on.
pub const DEV_SEEDS: RangeInclusive<u64> = 1..=36;
/// Seeds only evaluated, never tuned on (issue #13's evaluation set).
pub const EVAL_SEEDS: RangeInclusive<u64> = 1001..=1010;

/// The random stream of a member's structure (its events use the member's seed as usual).
const STREAM_FAMILY: u64 = 0xFA;

/// Which traffic a member is built around: its rate is boosted, the others are kept low
/// (one-off lookups are every member's floor, so they are a large share everywhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Archetype {
    /// Many dashboards polling fixed pairs.
    Dashboards,
    /// Analyst sessions walking price → chart → news.
    Sessions,
    /// Frequent news bursts.
    Bursts,
    /// One-off lookups by a pool of users.
    Lookups,
    /// A bit of everything.
    Mixed,
}

/// One member of the family: the trace and how its deployment looks.
#[derive(Debug, Clone)]
pub struct Member {
    /// The family seed.
    pub seed: u64,
    /// The dominant traffic.
    pub archetype: Archetype,
    /// The generator's parameters (shape included).
    pub params: Params,
    /// The cache's TTL per module, seconds.
    pub ttl_s: BTreeMap<String, u64>,
    /// IANA time zone of the market.
    pub market_tz: &'static str,
    /// Whether the producer reports its cache's hits (false: always `hit: false`).
    pub hit_flags: bool,
}

/// (IANA zone, open minute, close minute, around the clock).
const MARKETS: [(&str, u32, u32, bool); 8] = [
    ("America/New_York", 9 * 60 + 30, 16 * 60, false),
    ("Europe/London", 8 * 60, 16 * 60 + 30, false),
    ("Europe/Berlin", 9 * 60, 17 * 60 + 30, false),
    ("Asia/Tokyo", 9 * 60, 15 * 60 + 30, false),
    ("Asia/Hong_Kong", 9 * 60 + 30, 16 * 60, false),
    ("Asia/Kolkata", 9 * 60 + 15, 15 * 60 + 30, false),
    ("Australia/Sydney", 10 * 60, 16 * 60, false),
    ("UTC", 0, 1440, true),
];

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[rng.below(xs.len())]
}

/// A module mix: `base` with each weight scaled by a factor in [0.3, 1.7).
fn jitter(rng: &mut Rng, base: PerModule<f64>) -> PerModule<f64> {
    base.map(|w| w * rng.range(0.3, 1.7))
}

/// The member of family seed `seed`.
pub fn member(seed: u64) -> Member {
    let mut r = Rng::new(seed, STREAM_FAMILY);
    let archetype = pick(
        &mut r,
        &[
            Archetype::Dashboards,
            Archetype::Sessions,
            Archetype::Bursts,
            Archetype::Lookups,
            Archetype::Mixed,
        ],
    );
    let tickers = (100f64.ln() + r.f64() * (20_000f64.ln() - 100f64.ln())).exp().round() as usize;
    let zipf_s = r.range(0.6, 1.5);
    let (zone, open, close, around_the_clock) = pick(&mut r, &MARKETS);
    let tz: chrono_tz::Tz = zone.parse().expect("a listed zone");
    let market = Market { tz, open, close, around_the_clock };
    let d = Shape::default();
    let shape = Shape {
        market,
        lookup_mix: jitter(&mut r, d.lookup_mix),
        widget_mix: jitter(&mut r, d.widget_mix),
        burst_mix: jitter(&mut r, d.burst_mix),
        widget_period_s: [
            pick(&mut r, &[15, 30, 60, 120]),
            pick(&mut r, &[60, 300, 600]),
            pick(&mut r, &[60, 120, 300]),
            pick(&mut r, &[900, 3600]),
            pick(&mut r, &[30, 60, 120]),
        ],
        session_continue: r.range(0.3, 0.7),
        session_step_s: r.range(8.0, 40.0),
        session_next_s: r.range(40.0, 150.0),
        burst_minutes: {
            let lo = r.range(5.0, 20.0);
            (lo, lo + r.range(10.0, 80.0))
        },
        burst_peak_share: r.range(0.05, 0.3),
        scanners: if r.chance(0.3) {
            (1 + r.below(4), 20 + r.below(181), pick(&mut r, &[300, 600, 900, 1800]))
        } else {
            (0, 0, 600)
        },
        client_share: pick(&mut r, &[1.0, 1.0, 1.0, 1.0, 0.5, 0.0, 0.0]),
        regime_change: r.chance(0.35),
    };
    let boost = |r: &mut Rng, on: bool, lo: f64, hi: f64| {
        if on {
            r.range(lo, hi)
        } else {
            r.range(0.0, lo / 4.0)
        }
    };
    let lookups = r.range(2.0, 12.0) * if archetype == Archetype::Lookups { 2.0 } else { 1.0 };
    let dashboards =
        boost(&mut r, matches!(archetype, Archetype::Dashboards | Archetype::Mixed), 30.0, 150.0)
            .round() as usize;
    let sessions_per_hour =
        boost(&mut r, matches!(archetype, Archetype::Sessions | Archetype::Mixed), 600.0, 2_500.0);
    let bursts_per_day =
        boost(&mut r, matches!(archetype, Archetype::Bursts | Archetype::Mixed), 12.0, 50.0);
    let days = if shape.regime_change { 2 } else { 1 };
    let start = start_date(&mut r, &market);
    let ttl_s: BTreeMap<String, u64> = [
        ("price", pick(&mut r, &[15, 30, 60, 120])),
        ("chart", pick(&mut r, &[60, 300, 900])),
        ("news", pick(&mut r, &[120, 300, 600])),
        ("fundamentals", pick(&mut r, &[3_600, 86_400])),
        ("options", pick(&mut r, &[30, 60, 300])),
    ]
    .into_iter()
    .map(|(m, s)| (m.to_owned(), s))
    .collect();
    let hit_flags = !r.chance(0.3);
    let params = Params {
        start,
        duration: chrono::Duration::days(days),
        seed,
        tickers,
        zipf_s,
        rate: lookups,
        dashboards,
        sessions_per_hour,
        bursts_per_day,
        shape,
    };
    Member { seed, archetype, params: with_rate(params), ttl_s, market_tz: zone, hit_flags }
}

/// `params` with `rate` raised by what the dashboards, scans and sessions make (the family
/// draws the lookups' own rate; the generator's `rate` counts every source).
fn with_rate(mut params: Params) -> Params {
    match Generator::new(&params) {
        Err(ParamsError::RateTooLow { dashboards, sessions, .. }) => {
            params.rate += dashboards + sessions;
        }
        Ok(g) => {
            let b = g.budget();
            params.rate += b.dashboards + b.sessions;
        }
        Err(e) => panic!("family member {} has invalid parameters: {e}", params.seed),
    }
    params
}

/// Local midnight of a Monday–Thursday (any day around the clock) between January and
/// October 2026 in the market's zone.
fn start_date(r: &mut Rng, market: &Market) -> DateTime<Utc> {
    let first_monday = NaiveDate::from_ymd_opt(2026, 1, 5).expect("valid date");
    let days = 7 * r.below(40) as u64 + r.below(if market.around_the_clock { 7 } else { 4 }) as u64;
    let date = first_monday.checked_add_days(Days::new(days)).expect("in range");
    let naive = date.and_hms_opt(0, 0, 0).expect("midnight");
    market
        .tz
        .from_local_datetime(&naive)
        .earliest()
        .unwrap_or_else(|| Utc.from_utc_datetime(&naive).with_timezone(&market.tz))
        .with_timezone(&Utc)
}

impl Member {
    /// A one-line description for tables: archetype, size, skew, market and the variants.
    pub fn describe(&self) -> String {
        let p = &self.params;
        let mut s = format!(
            "{:?}, {} tickers, Zipf {:.2}, {}",
            self.archetype,
            p.tickers,
            p.zipf_s,
            self.market_tz.rsplit('/').next().unwrap_or(self.market_tz)
        );
        if p.shape.client_share < 1.0 {
            s += &format!(", clients {:.0}%", 100.0 * p.shape.client_share);
        }
        if p.shape.scanners.0 > 0 {
            s += &format!(", {} scans", p.shape.scanners.0);
        }
        if p.shape.regime_change {
            s += ", regime change";
        }
        if !self.hit_flags {
            s += ", hit:false only";
        }
        s
    }

    /// The live config a member is replayed with: the defaults, with the deployment's TTLs and
    /// market time zone (facts of the deployment an operator sets, not model tuning).
    pub fn live_config(&self) -> LiveConfig {
        LiveConfig {
            ttl_s: self.ttl_s.clone(),
            market_tz: self.market_tz.to_owned(),
            ..LiveConfig::default()
        }
    }
}
