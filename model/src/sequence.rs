//! Learned sequences: which query a client makes next.
//!
//! Two first-order transition tables, learned from consecutive events of one client no more than
//! a session gap apart:
//! - module → module on the same ticker (`price` → `chart`), shared across tickers so a habit
//!   learned on AAPL applies to MSFT;
//! - ticker → (ticker, module) (`AAPL` → `MSFT:price`), at most [`MAX_EDGES`] per source.
//!
//! Same-ticker follow-ups are predicted from a third table, the module table split by where the
//! client is in its session: its first query, a query on the same ticker as its previous one, or
//! on another. An analyst who has looked at AAPL's price and then its chart will likely read its
//! news; someone whose one-off lookups happen to land twice on AAPL will not — and a first-order
//! table cannot tell them apart.
//!
//! Every client event is an opportunity (the denominator); an edge counts how often the next
//! event came within the session gap and, separately, within the window a warm would serve it:
//! the horizon, or the TTL of the follow-up's module when shorter (a warm made at the first
//! query is gone by then). The probability a follow-up happens within that window is
//! `within / (opportunities + 1)`: an empirical frequency, so calibrated by construction,
//! shrunk while evidence is thin.
//!
//! Queries that name no client learn the same-ticker tables from each ticker's own stream
//! instead ([`Sequences::observe_anonymous`]). All counts decay with
//! a time constant of a third of the retention, so one observation fades out over one retention.

use super::keys::{IdHash, DEAD};
use std::collections::hash_map::Entry;
use std::collections::HashMap;

/// Most outgoing edges kept per source ticker or module.
pub(crate) const MAX_EDGES: usize = 16;
/// Decayed counts below this are forgotten.
const FORGET: f32 = 0.05;

/// A likely follow-up of an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Follow {
    pub ticker: u32,
    pub module: u32,
    pub probability: f64,
}

/// Which table an edge belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EdgeKind {
    Module,
    Ticker,
}

/// One learned transition, for `Stats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EdgeView {
    pub kind: EdgeKind,
    /// Source module (for [`EdgeKind::Module`]) or ticker id.
    pub from: u32,
    /// Target ticker id ([`DEAD`] for module edges) and module id.
    pub to_ticker: u32,
    pub to_module: u32,
    pub in_gap: f64,
    pub probability: f64,
}

#[derive(Debug, Clone, Copy)]
struct Last {
    ticker: u32,
    module: u32,
    at: u32,
    /// Where in its session this query was ([`FIRST`], [`SAME`] or [`OTHER`]).
    ctx: u32,
}

/// The client's first query within a session gap.
const FIRST: u32 = 0;
/// A query on the same ticker as the client's previous one.
const SAME: u32 = 1;
/// A query on another ticker than the client's previous one.
const OTHER: u32 = 2;
/// A query that names no client, with the ticker's previous such query at most
/// [`ANON_STEP_S`] before it (see [`Sequences::observe_anonymous`]).
const ANON_NEXT: u32 = 3;
/// A query that names no client, on a ticker no one asked for in the [`ANON_STEP_S`] before.
const ANON_START: u32 = 4;
/// Seconds between a ticker's queries naming no client within which the second one counts as
/// the next step of a session rather than its start.
const ANON_STEP_S: u32 = 60;

/// Key of the contextual module table: a module id and a session position.
fn ctx_key(module: u32, ctx: u32) -> u32 {
    (module << 3) | ctx
}

#[derive(Debug, Clone, Copy)]
struct Edge {
    ticker: u32,
    module: u32,
    in_gap: f32,
    in_horizon: f32,
    at: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Decayed {
    value: f32,
    at: u32,
}

/// The factor a count fades by from `from` to `to` (1 when `to` is not later).
fn fade(from: u32, to: u32, tau: f32) -> f32 {
    if to > from {
        (-((to - from) as f32) / tau).exp()
    } else {
        1.0
    }
}

fn decay(v: f32, from: u32, to: u32, tau: f32) -> f32 {
    v * fade(from, to, tau)
}

impl Decayed {
    fn add(&mut self, t: u32, tau: f32) {
        self.value = decay(self.value, self.at, t, tau) + 1.0;
        self.at = self.at.max(t);
    }
    fn get(&self, t: u32, tau: f32) -> f32 {
        decay(self.value, self.at, t, tau)
    }
}

/// One source of a transition table: how often it was seen (the opportunities) and its
/// outgoing edges. Both live in one map entry, so the event that counts a source and reads its
/// edges probes the map once (the sequence tables were 39% of `record` in the profile,
/// BENCHMARKS.md #15). A source absent before is `Source::default()`: no count, no edge.
#[derive(Debug, Default)]
struct Source {
    out: Decayed,
    edges: Vec<Edge>,
}

/// Sources by id: module, ticker, or [`ctx_key`].
type Table = HashMap<u32, Source, IdHash>;

/// Client positions and both transition tables.
#[derive(Debug)]
pub(crate) struct Sequences {
    clients: HashMap<u64, Last, IdHash>,
    /// The latest query naming no client, per ticker id.
    anon: HashMap<u32, Last, IdHash>,
    /// Module → module on the same ticker (for `Stats`).
    modules: Table,
    /// Ticker → (ticker, module).
    tickers: Table,
    /// Module → module on the same ticker, by session position of the source ([`ctx_key`]).
    ctx: Table,
    gap: u32,
    horizon: u32,
    tau: f32,
}

fn learn(edges: &mut Vec<Edge>, ticker: u32, module: u32, t: u32, within: bool, tau: f32) {
    let hit = if within { 1.0 } else { 0.0 };
    if let Some(e) = edges.iter_mut().find(|e| e.ticker == ticker && e.module == module) {
        let to = e.at.max(t);
        // Both counts fade by the same factor: one `exp`, not two.
        let f = fade(e.at, to, tau);
        e.in_gap = e.in_gap * f + 1.0;
        e.in_horizon = e.in_horizon * f + hit;
        e.at = to;
        return;
    }
    let fresh = Edge { ticker, module, in_gap: 1.0, in_horizon: hit, at: t };
    if edges.len() < MAX_EDGES {
        edges.push(fresh);
    } else if let Some((_, weakest)) = edges
        .iter_mut()
        // Each edge's faded count once (16 `exp`, not 30 in the comparisons).
        .map(|e| (decay(e.in_gap, e.at, t, tau), e))
        .min_by(|a, b| a.0.total_cmp(&b.0))
    {
        *weakest = fresh;
    }
}

/// Adds to `out` the targets of `edges` (learnt from a source seen `out_count` times) whose
/// probability at `t` reaches `min_p`: on the source's ticker (`same_ticker`, module edges) or
/// on the edge's own, never the source key itself.
fn follows(
    out: &mut Vec<Follow>,
    edges: &[Edge],
    out_count: f32,
    (ticker, module): (u32, u32),
    same_ticker: bool,
    (t, tau): (u32, f32),
    min_p: f64,
) {
    let opportunities = f64::from(out_count) + 1.0;
    for e in edges {
        let to = if same_ticker { (ticker, e.module) } else { (e.ticker, e.module) };
        if to == (ticker, module) {
            continue;
        }
        // Fading only lowers a count: an edge below `min_p` before it fades stays below after,
        // and costs no `exp`.
        if f64::from(e.in_horizon) / opportunities < min_p {
            continue;
        }
        let p = f64::from(decay(e.in_horizon, e.at, t, tau)) / opportunities;
        if p >= min_p && p > 0.0 {
            out.push(Follow { ticker: to.0, module: to.1, probability: p });
        }
    }
}

impl Sequences {
    /// Tables for the given session gap, horizon and retention (seconds).
    pub fn new(gap: u32, horizon: u32, retention: u32) -> Self {
        Self {
            clients: HashMap::default(),
            anon: HashMap::default(),
            modules: Table::default(),
            tickers: Table::default(),
            ctx: Table::default(),
            gap,
            horizon,
            tau: retention as f32 / 3.0,
        }
    }

    /// Changes the horizon follow-ups are predicted within (a live config change).
    pub fn set_horizon(&mut self, horizon: u32) {
        self.horizon = horizon;
    }

    /// Learns from `client` querying `(ticker, module)` at `t` and returns the follow-ups whose
    /// probability within the horizon is at least `min_p`. An event older than the client's
    /// last one teaches nothing (its successor is unknown) and predicts nothing.
    pub fn observe(
        &mut self,
        client: u64,
        ticker: u32,
        module: u32,
        t: u32,
        min_p: f64,
        window: u32,
    ) -> Vec<Follow> {
        let tau = self.tau;
        let (gap, horizon) = (self.gap, self.horizon);
        let mut ctx = FIRST;
        // One probe of the client's entry: read its previous query, then overwrite it.
        let last = match self.clients.entry(client) {
            Entry::Occupied(o) => {
                let last = o.into_mut();
                let prev = *last;
                if t < prev.at {
                    return Vec::new();
                }
                let dt = t - prev.at;
                if dt <= gap {
                    let within = dt <= window.min(horizon);
                    if prev.ticker == ticker {
                        ctx = SAME;
                        let edges = &mut self.modules.entry(prev.module).or_default().edges;
                        learn(edges, DEAD, module, t, within, tau);
                        let source = ctx_key(prev.module, prev.ctx);
                        let edges = &mut self.ctx.entry(source).or_default().edges;
                        learn(edges, DEAD, module, t, within, tau);
                    } else {
                        ctx = OTHER;
                        let edges = &mut self.tickers.entry(prev.ticker).or_default().edges;
                        learn(edges, ticker, module, t, within, tau);
                    }
                }
                last
            }
            Entry::Vacant(v) => v.insert(Last { ticker, module, at: t, ctx }),
        };
        *last = Last { ticker, module, at: t, ctx };
        self.modules.entry(module).or_default().out.add(t, tau);

        // Each source is counted and its edges read in one probe (this runs for every event).
        let mut out = Vec::new();
        let from = (ticker, module);
        let source = self.ctx.entry(ctx_key(module, ctx)).or_default();
        source.out.add(t, tau);
        let m_out = source.out.get(t, tau);
        follows(&mut out, &source.edges, m_out, from, true, (t, tau), min_p);
        let source = self.tickers.entry(ticker).or_default();
        source.out.add(t, tau);
        let t_out = source.out.get(t, tau);
        follows(&mut out, &source.edges, t_out, from, false, (t, tau), min_p);
        out
    }

    /// Learns from a query of `(ticker, module)` at `t` that names no client and returns the
    /// same-ticker follow-ups whose probability within the horizon is at least `min_p`.
    ///
    /// Without a client the session is unknown, but a ticker's queries still come in sessions:
    /// an analyst's price → chart → news on one ticker are consecutive queries of that ticker
    /// unless someone else asks for it in between. So the ticker's previous query naming no
    /// client (by anyone, within the session gap) stands in for the client's, and the module
    /// transitions are learned in tables of their own, split by whether the ticker was asked for
    /// within the minute before ([`ANON_NEXT`], [`ANON_START`]): what follows on a ticker
    /// whoever asks is not what follows for one client, and must not blur the clients' table.
    /// The probability is the same empirical frequency, so a busy ticker, whose next query is
    /// anyone's, learns low probabilities for any one module rather than false certainty.
    pub fn observe_anonymous(
        &mut self,
        ticker: u32,
        module: u32,
        t: u32,
        min_p: f64,
        window: u32,
    ) -> Vec<Follow> {
        let tau = self.tau;
        let (gap, horizon) = (self.gap, self.horizon);
        let mut ctx = ANON_START;
        let last = match self.anon.entry(ticker) {
            Entry::Occupied(o) => {
                let last = o.into_mut();
                let prev = *last;
                if t < prev.at {
                    return Vec::new();
                }
                let dt = t - prev.at;
                if dt <= gap {
                    let edges =
                        &mut self.ctx.entry(ctx_key(prev.module, prev.ctx)).or_default().edges;
                    learn(edges, DEAD, module, t, dt <= window.min(horizon), tau);
                }
                if dt <= ANON_STEP_S {
                    ctx = ANON_NEXT;
                }
                last
            }
            Entry::Vacant(v) => v.insert(Last { ticker, module, at: t, ctx }),
        };
        *last = Last { ticker, module, at: t, ctx };
        let mut out = Vec::new();
        let source = self.ctx.entry(ctx_key(module, ctx)).or_default();
        source.out.add(t, tau);
        let out_count = source.out.get(t, tau);
        follows(&mut out, &source.edges, out_count, (ticker, module), true, (t, tau), min_p);
        out
    }

    /// Forgets clients idle longer than the session gap, faded counts, and anything that refers
    /// to a ticker or module id just freed (ids are recycled, so stale references would lie).
    pub fn sweep(&mut self, now: u32, freed_tickers: &[bool], freed_modules: &[bool]) {
        let tau = self.tau;
        let dead_t = |id: u32| freed_tickers.get(id as usize).copied().unwrap_or(false);
        let dead_m = |id: u32| freed_modules.get(id as usize).copied().unwrap_or(false);
        let gap = self.gap;
        self.clients.retain(|_, l| {
            now.saturating_sub(l.at) <= gap && !dead_t(l.ticker) && !dead_m(l.module)
        });
        self.anon.retain(|_, l| {
            now.saturating_sub(l.at) <= gap && !dead_t(l.ticker) && !dead_m(l.module)
        });
        // A faded count is forgotten (back to none) and faded edges go; a source with neither
        // left goes too.
        let keep = |source: &mut Source| {
            source.edges.retain(|e| {
                decay(e.in_gap, e.at, now, tau) >= FORGET
                    && !dead_m(e.module)
                    && (e.ticker == DEAD || !dead_t(e.ticker))
            });
            source.edges.shrink_to_fit();
            if source.out.get(now, tau) < FORGET {
                source.out = Decayed::default();
            }
            !source.edges.is_empty() || source.out.at != 0 || source.out.value != 0.0
        };
        self.modules.retain(|&m, source| !dead_m(m) && keep(source));
        self.tickers.retain(|&t, source| !dead_t(t) && keep(source));
        self.ctx.retain(|&k, source| !dead_m(k >> 3) && keep(source));
    }

    /// Every learned edge with its decayed count and probability at `now`.
    pub fn edges(&self, now: u32) -> Vec<EdgeView> {
        let tau = self.tau;
        let view = |kind, from: u32, source: &Source, e: &Edge| {
            let opportunities = source.out.get(now, tau);
            EdgeView {
                kind,
                from,
                to_ticker: e.ticker,
                to_module: e.module,
                in_gap: f64::from(decay(e.in_gap, e.at, now, tau)),
                probability: f64::from(decay(e.in_horizon, e.at, now, tau))
                    / (f64::from(opportunities) + 1.0),
            }
        };
        let modules = self.modules.iter().flat_map(|(&m, source)| {
            source.edges.iter().map(move |e| view(EdgeKind::Module, m, source, e))
        });
        let tickers = self.tickers.iter().flat_map(|(&t, source)| {
            source.edges.iter().map(move |e| view(EdgeKind::Ticker, t, source, e))
        });
        modules.chain(tickers).collect()
    }

    /// Clients seen within the session gap (as of the last sweep).
    pub fn live_clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests;
