//! The generator: every source on one priority queue of next firing times, popped in order.

use super::calendar::MinuteTable;
use super::params::{Budget, Params, ParamsError};
use super::rng::{Rng, Zipf};
use super::sources::{Burst, Fired, Session, Source, Spawn, Widget, World, BURST_FLOOR, MODULES};
use chrono::{TimeZone, Utc};
use prefetch_common::contract::{ClientId, Module, QueryEvent, Ticker};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};

/// Which kind of traffic produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Origin {
    /// A one-off lookup by one of the pool of users (`client` = `user-NNNNN`).
    Lookup,
    /// A dashboard refreshing one of its pairs (`client` = `dash-NNN`).
    Dashboard,
    /// An analyst session walking price → chart → news (`client` = `sess-NNNNNNN`).
    Session,
    /// A query for a ticker in a news burst (`client` = a user of the pool).
    Burst,
    /// A scheduled job scanning its list of tickers (`client` = `scan-NNN`).
    Scan,
}

impl Origin {
    /// Every origin, in summary order.
    pub const ALL: [Origin; 5] =
        [Origin::Lookup, Origin::Dashboard, Origin::Session, Origin::Burst, Origin::Scan];

    /// Lower-case name used in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Lookup => "lookups",
            Origin::Dashboard => "dashboards",
            Origin::Session => "sessions",
            Origin::Burst => "bursts",
            Origin::Scan => "scans",
        }
    }
}

/// Well-known symbols, most asked first; synthetic four-letter ones follow for larger universes.
const KNOWN_TICKERS: &[&str] = &[
    "AAPL", "NVDA", "TSLA", "MSFT", "AMZN", "SPY", "META", "GOOGL", "AMD", "QQQ", "NFLX", "AVGO",
    "PLTR", "JPM", "BRK.B", "V", "COIN", "INTC", "BA", "DIS", "^GSPC", "XOM", "WMT", "UNH", "COST",
    "MU", "SMCI", "ARM", "UBER", "SHOP", "CRM", "ORCL", "ADBE", "PYPL", "BAC", "KO", "PEP", "NKE",
    "T", "F", "GM", "PFE", "MRNA", "LLY", "JNJ", "CVX", "GS", "MS", "C", "IWM", "DIA", "EURUSD=X",
    "BTC-USD", "^VIX", "GLD", "TLT", "SOFI", "RIVN", "LCID", "NIO", "BABA", "TSM", "ASML", "SNOW",
    "ROKU", "HOOD", "MSTR",
];

/// Size of the pool of users behind one-off lookups and bursts.
const USERS: usize = 10_000;

/// Random-stream ids, so that each source's choices depend only on the seed and its own knobs
/// (changing `--bursts-per-day` does not reshuffle the dashboards).
const STREAM_DASHBOARDS: u64 = 1;
const STREAM_LOOKUPS: u64 = 2;
const STREAM_SESSIONS: u64 = 3;
const STREAM_BURSTS: u64 = 4;
const STREAM_CLIENTS: u64 = 5;
const STREAM_REGIME: u64 = 6;
const STREAM_SCANNERS: u64 = 7;

/// A deterministic stream of demo [`QueryEvent`]s in non-decreasing event time.
///
/// Pure: no wall clock, no I/O; equal [`Params`] give equal events. Memory follows the number of
/// live sources (dashboard pairs, open sessions and bursts), not the length of the trace.
pub struct Generator {
    world: World,
    /// Slots of live sources; a finished source's slot is reused.
    slots: Vec<Option<Source>>,
    free: Vec<u32>,
    /// (next firing in ms, slot): ties go to the lower slot, which keeps the order deterministic.
    queue: BinaryHeap<Reverse<(i64, u32)>>,
    sessions_started: u64,
    budget: Budget,
    /// Decides which events drop their client (with `client_share` below 1).
    clients: Rng,
}

impl Generator {
    /// Builds the generator; fails when a knob is out of range or `rate` is below what the
    /// dashboards and sessions alone produce.
    pub fn new(params: &Params) -> Result<Self, ParamsError> {
        params.validate()?;
        let start_ms = params.start.timestamp_millis();
        let end_ms = params.end().timestamp_millis();
        let shape = params.shape.clone();
        let identity: Vec<u32> = (0..params.tickers as u32).collect();
        let (ranks, switch_ms) = if shape.regime_change {
            let mut rng = Rng::new(params.seed, STREAM_REGIME);
            let mut after = identity.clone();
            // The top 10% of ranks (at least 5) each trade places with a ticker anywhere.
            for r in 0..(params.tickers / 10).max(5).min(params.tickers) {
                let other = rng.below(params.tickers);
                after.swap(r, other);
            }
            ([identity, after], start_ms + (end_ms - start_ms) / 2)
        } else {
            ([identity.clone(), identity], i64::MAX)
        };
        let world = World {
            tickers: ticker_universe(params.tickers),
            modules: MODULES.iter().map(|m| Module::parse(m).expect("valid module")).collect(),
            zipf: Zipf::new(params.tickers, params.zipf_s),
            intensity: MinuteTable::new(&shape.market, start_ms, end_ms),
            users: (1..=USERS)
                .map(|i| ClientId::parse(&format!("user-{i:05}")).expect("valid client"))
                .collect(),
            end_ms,
            burst_peak: (shape.burst_peak_share * params.rate).max(0.5),
            shape,
            ranks,
            switch_ms,
        };

        let mut rng = Rng::new(params.seed, STREAM_DASHBOARDS);
        let first_until = world.switch_ms.min(end_ms);
        let mut widgets: Vec<(Widget, f64)> = (0..params.dashboards)
            .flat_map(|d| {
                let client = ClientId::parse(&format!("dash-{d:03}")).expect("valid client");
                Widget::dashboard(&world, &mut rng, &client, start_ms as f64, first_until)
            })
            .map(|w| (w, start_ms as f64))
            .collect();
        let dashboards = widgets.iter().map(|(w, _)| w.rate()).sum::<f64>();
        if world.switch_ms < end_ms {
            // The new regime's dashboards: as many, on the new favourites.
            let at = world.switch_ms as f64;
            for d in 0..params.dashboards {
                let client = ClientId::parse(&format!("dash-{:03}", params.dashboards + d))
                    .expect("valid client");
                widgets.extend(
                    Widget::dashboard(&world, &mut rng, &client, at, end_ms)
                        .into_iter()
                        .map(|w| (w, at)),
                );
            }
        }
        // Scheduled scans count with the dashboards: fixed pairs at fixed periods.
        let (jobs, per_job, period_s) = world.shape.scanners;
        let mut rng = Rng::new(params.seed, STREAM_SCANNERS);
        let mut scans = 0.0;
        for j in 0..jobs {
            let client = ClientId::parse(&format!("scan-{j:03}")).expect("valid client");
            for w in Widget::scanner(&world, &mut rng, &client, per_job, period_s) {
                scans += w.rate();
                widgets.push((w, start_ms as f64));
            }
        }
        let dashboards = dashboards + scans;
        let sessions = params.sessions_per_hour / 3600.0 * world.shape.session_mean_events();
        let lookups = params.rate - dashboards - sessions;
        if lookups < -1e-9 {
            return Err(ParamsError::RateTooLow { rate: params.rate, dashboards, sessions });
        }
        let lookups = lookups.max(0.0);
        // Arrivals per second at intensity 1, so that a weekday averages `bursts_per_day`.
        let burst_rate =
            params.bursts_per_day / 86_400.0 / world.shape.market.weekday_mean(BURST_FLOOR);
        let burst_events =
            params.bursts_per_day * world.shape.expected_burst_events(world.burst_peak) / 86_400.0;
        let budget = Budget { dashboards, sessions, lookups, bursts: burst_events };

        let mut g = Self {
            world,
            slots: Vec::new(),
            free: Vec::new(),
            queue: BinaryHeap::new(),
            sessions_started: 0,
            budget,
            clients: Rng::new(params.seed, STREAM_CLIENTS),
        };
        let start = start_ms as f64;
        let seed = params.seed;
        for (w, at) in widgets {
            g.schedule(Source::Widget(w), at);
        }
        let mut initial: Vec<Source> = Vec::new();
        if lookups > 0.0 {
            initial.push(Source::Lookups {
                rng: Rng::new(seed, STREAM_LOOKUPS),
                rate: lookups,
                clock: start,
            });
        }
        if params.sessions_per_hour > 0.0 {
            let rate = params.sessions_per_hour / 3600.0;
            initial.push(Source::SessionArrivals {
                rng: Rng::new(seed, STREAM_SESSIONS),
                rate,
                clock: start,
            });
        }
        if burst_rate > 0.0 {
            initial.push(Source::BurstArrivals {
                rng: Rng::new(seed, STREAM_BURSTS),
                rate: burst_rate,
                clock: start,
            });
        }
        for source in initial {
            g.schedule(source, start);
        }
        Ok(g)
    }

    /// Planned mean events per second of each source in weekday market hours.
    pub fn budget(&self) -> Budget {
        self.budget
    }

    /// The ticker universe, most popular first.
    pub fn tickers(&self) -> &[Ticker] {
        &self.world.tickers
    }

    /// The next event and the traffic that produced it.
    pub fn next_with_origin(&mut self) -> Option<(QueryEvent, Origin)> {
        loop {
            let Reverse((ts, slot)) = self.queue.pop()?;
            let source = self.slots[slot as usize].as_mut().expect("a queued slot holds a source");
            let Fired { emit, next, spawn } = source.fire(&self.world);
            match next {
                Some(t) => self.queue.push(Reverse((t as i64, slot))),
                None => {
                    self.slots[slot as usize] = None;
                    self.free.push(slot);
                }
            }
            if let Some((spawn, at)) = spawn {
                let source = match spawn {
                    Spawn::Session { seed } => {
                        self.sessions_started += 1;
                        let client = ClientId::parse(&format!("sess-{:07}", self.sessions_started))
                            .expect("valid client");
                        Source::Session(Session::new(&self.world, seed, client, at))
                    }
                    Spawn::Burst { seed } => Source::Burst(Burst::new(&self.world, seed, at)),
                };
                self.schedule(source, at);
            }
            if let Some(e) = emit {
                let share = self.world.shape.client_share;
                let named = share >= 1.0 || (share > 0.0 && self.clients.chance(share));
                let event = QueryEvent {
                    ticker: self.world.tickers[e.ticker as usize].clone(),
                    module: self.world.modules[e.kind as usize].clone(),
                    hit: false,
                    ts: Utc.timestamp_millis_opt(ts).single().expect("validated range"),
                    client: named.then_some(e.client),
                    latency_ms: None,
                };
                return Some((event, e.origin));
            }
        }
    }

    fn schedule(&mut self, mut source: Source, start: f64) {
        let Some(first) = source.first(&self.world, start) else { return };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(source);
                s
            }
            None => {
                self.slots.push(Some(source));
                (self.slots.len() - 1) as u32
            }
        };
        self.queue.push(Reverse((first as i64, slot)));
    }
}

impl Iterator for Generator {
    type Item = QueryEvent;

    fn next(&mut self) -> Option<QueryEvent> {
        self.next_with_origin().map(|(e, _)| e)
    }
}

/// `n` distinct valid tickers: the well-known ones, then `AAAA`, `AAAB`, … (skipping any
/// well-known one).
fn ticker_universe(n: usize) -> Vec<Ticker> {
    let known: HashSet<&str> = KNOWN_TICKERS.iter().copied().collect();
    let synthetic = (0u32..).map(|mut i| {
        let mut name = [b'A'; 4];
        for c in name.iter_mut().rev() {
            *c = b'A' + (i % 26) as u8;
            i /= 26;
        }
        String::from_utf8(name.to_vec()).expect("ASCII")
    });
    KNOWN_TICKERS
        .iter()
        .map(|s| (*s).to_owned())
        .chain(synthetic.filter(|s| !known.contains(s.as_str())))
        .take(n)
        .map(|s| Ticker::parse(&s).expect("valid ticker"))
        .collect()
}
