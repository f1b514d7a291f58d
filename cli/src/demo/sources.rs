//! The sources of traffic. Each keeps its own clock and random stream, emits at most one event
//! per firing, and says when it fires next; the generator interleaves them by time.
//!
//! A source's clock is fractional milliseconds so that Poisson gaps below a millisecond do not
//! round away; events carry the clock floored to the millisecond (the canonical JSON precision).

use super::calendar::{Market, MinuteTable};
use super::rng::{Rng, Zipf};
use super::shape::{Shape, SESSION_MAX_TICKERS, SESSION_P_FUNDAMENTALS, SESSION_P_OPTIONS};
use super::Origin;
use prefetch_common::contract::{ClientId, Module, Ticker};

mod widget;
pub(crate) use widget::Widget;

/// The modules the demo app serves.
pub const MODULES: [&str; 5] = ["price", "chart", "news", "fundamentals", "options"];

/// A module by index into [`MODULES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Price = 0,
    Chart = 1,
    News = 2,
    Fundamentals = 3,
    Options = 4,
}

impl Kind {
    const ALL: [Kind; 5] =
        [Kind::Price, Kind::Chart, Kind::News, Kind::Fundamentals, Kind::Options];

    fn pick(rng: &mut Rng, weights: &[f64; 5]) -> Self {
        Self::ALL[rng.weighted(weights)]
    }
}

/// How often a dashboard of the default shape refreshes a widget of `module` (one of
/// [`MODULES`]).
pub fn dashboard_period(module: &str) -> Option<std::time::Duration> {
    let i = MODULES.iter().position(|m| *m == module)?;
    Some(std::time::Duration::from_secs(Shape::default().widget_period_s[i].unsigned_abs()))
}

/// Chance that an analyst reads the news before the chart (so price → chart holds "mostly").
const SESSION_P_NEWS_FIRST: f64 = 0.15;

/// What every source reads: the universe, its popularity, the market clock.
pub(crate) struct World {
    pub tickers: Vec<Ticker>,
    pub modules: Vec<Module>,
    pub zipf: Zipf,
    pub intensity: MinuteTable,
    pub users: Vec<ClientId>,
    pub end_ms: i64,
    /// Events per second of a burst at its start.
    pub burst_peak: f64,
    /// The trace's structure (mixes, periods, session and burst shapes).
    pub shape: Shape,
    /// Popularity rank → ticker index before `switch_ms`, and from it on (equal without a
    /// regime change).
    pub ranks: [Vec<u32>; 2],
    /// When the regime changes (`i64::MAX` for never).
    pub switch_ms: i64,
}

impl World {
    /// The next arrival after `clock` of a Poisson process of `rate`/s scaled by the market
    /// intensity (raised to at least `floor`); `None` at the end of the trace. The intensity is
    /// constant within a minute, so the process is sampled minute by minute, exactly.
    fn poisson_next(&self, rng: &mut Rng, mut clock: f64, rate: f64, floor: f64) -> Option<f64> {
        loop {
            let (intensity, minute_end) = self.intensity.at(clock as i64)?;
            let per_ms = rate * intensity.max(floor) / 1000.0;
            if per_ms > 0.0 {
                let next = clock + rng.exp(1.0 / per_ms);
                if next < minute_end as f64 {
                    return (next < self.end_ms as f64).then_some(next);
                }
            }
            clock = minute_end as f64;
            if clock >= self.end_ms as f64 {
                return None;
            }
        }
    }

    fn user(&self, rng: &mut Rng) -> ClientId {
        self.users[rng.below(self.users.len())].clone()
    }

    /// A ticker drawn by popularity as it stands at `at` (ms).
    fn popular_ticker(&self, rng: &mut Rng, at: f64) -> u32 {
        self.ticker_of_rank(self.zipf.sample(rng), at)
    }

    /// The ticker holding popularity `rank` at `at` (ms).
    fn ticker_of_rank(&self, rank: usize, at: f64) -> u32 {
        self.ranks[usize::from(at >= self.switch_ms as f64)][rank]
    }

    fn market(&self) -> &Market {
        &self.shape.market
    }
}

/// One event to emit.
pub(crate) struct Emit {
    pub ticker: u32,
    pub kind: Kind,
    pub client: ClientId,
    pub origin: Origin,
}

/// A source the generator must create (it owns the id counters).
pub(crate) enum Spawn {
    Session { seed: u64 },
    Burst { seed: u64 },
}

/// The result of firing a source at its scheduled time.
pub(crate) struct Fired {
    pub emit: Option<Emit>,
    /// When it fires again; `None` when it is done.
    pub next: Option<f64>,
    /// A new source starting at the given clock.
    pub spawn: Option<(Spawn, f64)>,
}

/// A traffic source.
pub(crate) enum Source {
    /// One-off lookups by the user pool: Zipf ticker, any module.
    Lookups {
        rng: Rng,
        rate: f64,
        clock: f64,
    },
    /// Starts analyst sessions.
    SessionArrivals {
        rng: Rng,
        rate: f64,
        clock: f64,
    },
    Session(Session),
    Widget(Widget),
    /// Starts news bursts.
    BurstArrivals {
        rng: Rng,
        rate: f64,
        clock: f64,
    },
    Burst(Burst),
}

impl Source {
    /// The first firing time of a source whose process starts at `start` ms.
    pub(crate) fn first(&mut self, world: &World, start: f64) -> Option<f64> {
        match self {
            Source::Lookups { rng, rate, clock } | Source::SessionArrivals { rng, rate, clock } => {
                *clock = world.poisson_next(rng, start, *rate, 0.0)?;
                Some(*clock)
            }
            Source::BurstArrivals { rng, rate, clock } => {
                *clock = world.poisson_next(rng, start, *rate, BURST_FLOOR)?;
                Some(*clock)
            }
            Source::Widget(w) => w.first(start as i64).map(|t| t as f64),
            Source::Session(s) => Some(s.clock),
            Source::Burst(b) => b.advance(),
        }
    }

    pub(crate) fn fire(&mut self, world: &World) -> Fired {
        match self {
            Source::Lookups { rng, rate, clock } => {
                let emit = Emit {
                    ticker: world.popular_ticker(rng, *clock),
                    kind: Kind::pick(rng, &world.shape.lookup_mix),
                    client: world.user(rng),
                    origin: Origin::Lookup,
                };
                let next = world.poisson_next(rng, *clock, *rate, 0.0);
                *clock = next.unwrap_or(f64::INFINITY);
                Fired { emit: Some(emit), next, spawn: None }
            }
            Source::SessionArrivals { rng, rate, clock } => {
                let spawn = (Spawn::Session { seed: rng.next_u64() }, *clock);
                let next = world.poisson_next(rng, *clock, *rate, 0.0);
                *clock = next.unwrap_or(f64::INFINITY);
                Fired { emit: None, next, spawn: Some(spawn) }
            }
            Source::BurstArrivals { rng, rate, clock } => {
                let spawn = (Spawn::Burst { seed: rng.next_u64() }, *clock);
                let next = world.poisson_next(rng, *clock, *rate, BURST_FLOOR);
                *clock = next.unwrap_or(f64::INFINITY);
                Fired { emit: None, next, spawn: Some(spawn) }
            }
            Source::Session(s) => s.fire(world),
            Source::Widget(w) => w.fire(),
            Source::Burst(b) => {
                let emit = b.emit(world);
                Fired { emit: Some(emit), next: b.advance(), spawn: None }
            }
        }
    }
}

/// An analyst: for each ticker looked at, price → chart → news (→ fundamentals) (→ options),
/// seconds to a minute or two apart, then maybe another ticker.
pub(crate) struct Session {
    rng: Rng,
    client: ClientId,
    ticker: u32,
    steps: [Kind; 5],
    n_steps: usize,
    step: usize,
    tickers_left: i32,
    clock: f64,
}

impl Session {
    pub(crate) fn new(world: &World, seed: u64, client: ClientId, clock: f64) -> Self {
        let mut rng = Rng::new(seed, 0);
        let mut tickers_left = 0;
        while tickers_left + 1 < SESSION_MAX_TICKERS && rng.chance(world.shape.session_continue) {
            tickers_left += 1;
        }
        let mut s = Self {
            rng,
            client,
            ticker: 0,
            steps: [Kind::Price; 5],
            n_steps: 0,
            step: 0,
            tickers_left,
            clock,
        };
        s.plan(world, None);
        s
    }

    /// Chooses the next ticker (another than `previous`, if a few draws find one) and its walk.
    fn plan(&mut self, world: &World, previous: Option<u32>) {
        for _ in 0..8 {
            self.ticker = world.popular_ticker(&mut self.rng, self.clock);
            if Some(self.ticker) != previous {
                break;
            }
        }
        let mut steps = vec![Kind::Price, Kind::Chart, Kind::News];
        if self.rng.chance(SESSION_P_NEWS_FIRST) {
            steps.swap(1, 2);
        }
        if self.rng.chance(SESSION_P_FUNDAMENTALS) {
            steps.push(Kind::Fundamentals);
        }
        if self.rng.chance(SESSION_P_OPTIONS) {
            steps.push(Kind::Options);
        }
        self.n_steps = steps.len();
        self.steps[..steps.len()].copy_from_slice(&steps);
        self.step = 0;
    }

    fn fire(&mut self, world: &World) -> Fired {
        let emit = Emit {
            ticker: self.ticker,
            kind: self.steps[self.step],
            client: self.client.clone(),
            origin: Origin::Session,
        };
        self.step += 1;
        let gap_s = if self.step < self.n_steps {
            3.0 + self.rng.exp(world.shape.session_step_s)
        } else if self.tickers_left > 0 {
            self.tickers_left -= 1;
            self.plan(world, Some(self.ticker));
            20.0 + self.rng.exp(world.shape.session_next_s)
        } else {
            return Fired { emit: Some(emit), next: None, spawn: None };
        };
        self.clock += gap_s * 1000.0;
        let next = (self.clock < world.end_ms as f64).then_some(self.clock);
        Fired { emit: Some(emit), next, spawn: None }
    }
}

/// News bursts arrive mostly in market hours, but news breaks at any hour: the arrival intensity
/// never drops below this fraction of the market-hours mean.
pub(crate) const BURST_FLOOR: f64 = 0.1;

/// One ticker suddenly hot: queries start at `peak`/s and decay exponentially (time constant a
/// third of the burst) until the burst ends 10 to 60 minutes later.
pub(crate) struct Burst {
    rng: Rng,
    ticker: u32,
    start: f64,
    end: f64,
    tau: f64,
    peak: f64,
    clock: f64,
}

impl Burst {
    pub(crate) fn new(world: &World, seed: u64, clock: f64) -> Self {
        let mut rng = Rng::new(seed, 0);
        // A ticker outside the top ten, whose burst stands out from its everyday traffic.
        let n = world.tickers.len();
        let skip = if n > 10 { 10 } else { 0 };
        let ticker = world.ticker_of_rank(skip + rng.below(n - skip), clock);
        let (shortest, longest) = world.shape.burst_minutes;
        let minutes = rng.range(shortest, longest);
        let end = (clock + minutes * 60_000.0).min(world.end_ms as f64);
        Self {
            rng,
            ticker,
            start: clock,
            end,
            tau: minutes * 60_000.0 / 3.0,
            peak: world.burst_peak / 1000.0,
            clock,
        }
    }

    fn rate_at(&self, t: f64) -> f64 {
        self.peak * (-(t - self.start) / self.tau).exp()
    }

    /// Moves to the next query (thinning: the rate only decreases, so the rate now bounds it).
    fn advance(&mut self) -> Option<f64> {
        loop {
            let bound = self.rate_at(self.clock);
            if bound <= 0.0 {
                return None;
            }
            self.clock += self.rng.exp(1.0 / bound);
            if self.clock >= self.end {
                return None;
            }
            if self.rng.chance(self.rate_at(self.clock) / bound) {
                return Some(self.clock);
            }
        }
    }

    fn emit(&mut self, world: &World) -> Emit {
        Emit {
            ticker: self.ticker,
            kind: Kind::pick(&mut self.rng, &world.shape.burst_mix),
            client: world.user(&mut self.rng),
            origin: Origin::Burst,
        }
    }
}
