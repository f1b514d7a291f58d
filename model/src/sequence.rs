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
//! event came within the session gap and, separately, within the horizon. The probability a
//! follow-up happens within the horizon is `within_horizon / (opportunities + 1)`: an empirical
//! frequency, so calibrated by construction, shrunk while evidence is thin. All counts decay with
//! a time constant of a third of the retention, so one observation fades out over one retention.

use super::keys::{IdHash, DEAD};
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

/// Key of the contextual module table: a module id and a session position.
fn ctx_key(module: u32, ctx: u32) -> u32 {
    (module << 2) | ctx
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

fn decay(v: f32, from: u32, to: u32, tau: f32) -> f32 {
    if to > from {
        v * (-((to - from) as f32) / tau).exp()
    } else {
        v
    }
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

/// Client positions and both transition tables.
#[derive(Debug)]
pub(crate) struct Sequences {
    clients: HashMap<u64, Last, IdHash>,
    module_edges: HashMap<u32, Vec<Edge>, IdHash>,
    module_out: HashMap<u32, Decayed, IdHash>,
    ticker_edges: HashMap<u32, Vec<Edge>, IdHash>,
    ticker_out: HashMap<u32, Decayed, IdHash>,
    /// Module → module on the same ticker, by session position of the source ([`ctx_key`]).
    ctx_edges: HashMap<u32, Vec<Edge>, IdHash>,
    ctx_out: HashMap<u32, Decayed, IdHash>,
    gap: u32,
    horizon: u32,
    tau: f32,
}

fn learn(edges: &mut Vec<Edge>, ticker: u32, module: u32, t: u32, within: bool, tau: f32) {
    let hit = if within { 1.0 } else { 0.0 };
    if let Some(e) = edges.iter_mut().find(|e| e.ticker == ticker && e.module == module) {
        let to = e.at.max(t);
        e.in_gap = decay(e.in_gap, e.at, to, tau) + 1.0;
        e.in_horizon = decay(e.in_horizon, e.at, to, tau) + hit;
        e.at = to;
        return;
    }
    let fresh = Edge { ticker, module, in_gap: 1.0, in_horizon: hit, at: t };
    if edges.len() < MAX_EDGES {
        edges.push(fresh);
    } else if let Some(weakest) = edges
        .iter_mut()
        .min_by(|a, b| decay(a.in_gap, a.at, t, tau).total_cmp(&decay(b.in_gap, b.at, t, tau)))
    {
        *weakest = fresh;
    }
}

impl Sequences {
    /// Tables for the given session gap, horizon and retention (seconds).
    pub fn new(gap: u32, horizon: u32, retention: u32) -> Self {
        Self {
            clients: HashMap::default(),
            module_edges: HashMap::default(),
            module_out: HashMap::default(),
            ticker_edges: HashMap::default(),
            ticker_out: HashMap::default(),
            ctx_edges: HashMap::default(),
            ctx_out: HashMap::default(),
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
    ) -> Vec<Follow> {
        let tau = self.tau;
        let mut ctx = FIRST;
        if let Some(prev) = self.clients.get(&client).copied() {
            if t < prev.at {
                return Vec::new();
            }
            let dt = t - prev.at;
            if dt <= self.gap {
                let within = dt <= self.horizon;
                if prev.ticker == ticker {
                    ctx = SAME;
                    learn(
                        self.module_edges.entry(prev.module).or_default(),
                        DEAD,
                        module,
                        t,
                        within,
                        tau,
                    );
                    learn(
                        self.ctx_edges.entry(ctx_key(prev.module, prev.ctx)).or_default(),
                        DEAD,
                        module,
                        t,
                        within,
                        tau,
                    );
                } else {
                    ctx = OTHER;
                    learn(
                        self.ticker_edges.entry(prev.ticker).or_default(),
                        ticker,
                        module,
                        t,
                        within,
                        tau,
                    );
                }
            }
        }
        self.module_out.entry(module).or_default().add(t, tau);
        // Each count is read back at once (one lookup, not two: this runs for every event).
        let key = ctx_key(module, ctx);
        let m_out = {
            let d = self.ctx_out.entry(key).or_default();
            d.add(t, tau);
            d.get(t, tau)
        };
        let t_out = {
            let d = self.ticker_out.entry(ticker).or_default();
            d.add(t, tau);
            d.get(t, tau)
        };
        self.clients.insert(client, Last { ticker, module, at: t, ctx });

        let mut out = Vec::new();
        let mut push = |edges: Option<&Vec<Edge>>, out_count: f32, same_ticker: bool| {
            for e in edges.into_iter().flatten() {
                let (to_ticker, to_module) =
                    if same_ticker { (ticker, e.module) } else { (e.ticker, e.module) };
                if (to_ticker, to_module) == (ticker, module) {
                    continue;
                }
                let p = f64::from(decay(e.in_horizon, e.at, t, tau)) / (f64::from(out_count) + 1.0);
                if p >= min_p && p > 0.0 {
                    out.push(Follow { ticker: to_ticker, module: to_module, probability: p });
                }
            }
        };
        push(self.ctx_edges.get(&key), m_out, true);
        push(self.ticker_edges.get(&ticker), t_out, false);
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
        let keep_edges = |edges: &mut Vec<Edge>| {
            edges.retain(|e| {
                decay(e.in_gap, e.at, now, tau) >= FORGET
                    && !dead_m(e.module)
                    && (e.ticker == DEAD || !dead_t(e.ticker))
            });
            edges.shrink_to_fit();
            !edges.is_empty()
        };
        self.module_edges.retain(|&m, edges| !dead_m(m) && keep_edges(edges));
        self.ticker_edges.retain(|&t, edges| !dead_t(t) && keep_edges(edges));
        self.module_out.retain(|&m, d| !dead_m(m) && d.get(now, tau) >= FORGET);
        self.ctx_edges.retain(|&k, edges| !dead_m(k >> 2) && keep_edges(edges));
        self.ctx_out.retain(|&k, d| !dead_m(k >> 2) && d.get(now, tau) >= FORGET);
        self.ticker_out.retain(|&t, d| !dead_t(t) && d.get(now, tau) >= FORGET);
    }

    /// Every learned edge with its decayed count and probability at `now`.
    pub fn edges(&self, now: u32) -> Vec<EdgeView> {
        let tau = self.tau;
        let view = |kind, from: u32, outs: &HashMap<u32, Decayed, IdHash>, e: &Edge| {
            let opportunities = outs.get(&from).map_or(0.0, |d| d.get(now, tau));
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
        let modules = self.module_edges.iter().flat_map(|(&m, es)| {
            es.iter().map(move |e| view(EdgeKind::Module, m, &self.module_out, e))
        });
        let tickers = self.ticker_edges.iter().flat_map(|(&t, es)| {
            es.iter().map(move |e| view(EdgeKind::Ticker, t, &self.ticker_out, e))
        });
        modules.chain(tickers).collect()
    }

    /// Clients seen within the session gap (as of the last sweep).
    pub fn live_clients(&self) -> usize {
        self.clients.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRICE: u32 = 0;
    const CHART: u32 = 1;
    const NEWS: u32 = 2;

    #[test]
    fn learns_module_follow_ups_across_tickers() {
        let mut s = Sequences::new(1_800, 300, 7 * 86_400);
        // Ten clients each look at price then, 20 s later, chart, on ticker i.
        for c in 0..10u64 {
            let t = 1_000 + c as u32 * 100;
            s.observe(c, c as u32, PRICE, t, 0.5);
            s.observe(c, c as u32, CHART, t + 20, 0.5);
        }
        // A new client on a new ticker: price predicts chart on that ticker.
        let f = s.observe(99, 42, PRICE, 5_000, 0.5);
        assert_eq!(f.len(), 1, "{f:?}");
        assert_eq!((f[0].ticker, f[0].module), (42, CHART));
        // Ten hits in eleven opportunities (the 11th is this event), shrunk by one: ~10/12.
        assert!((f[0].probability - 10.0 / 12.0).abs() < 0.01, "{}", f[0].probability);
        // Chart never led anywhere; news has no history.
        assert!(s.observe(98, 43, CHART, 5_000, 0.1).is_empty());
        assert!(s.observe(97, 44, NEWS, 5_000, 0.0).is_empty());
    }

    #[test]
    fn the_session_position_separates_analysts_from_one_off_lookups() {
        let mut s = Sequences::new(1_800, 300, 7 * 86_400);
        // Ten analysts: a first query on price, then the chart of the same ticker.
        for c in 0..10u32 {
            s.observe(u64::from(c), c, PRICE, 1_000 + c * 10, 0.5);
            s.observe(u64::from(c), c, CHART, 1_020 + c * 10, 0.5);
        }
        // A user's one-off lookups: price of another ticker each minute, never a chart.
        for i in 0..30u32 {
            s.observe(500, 100 + i, PRICE, 2_000 + i * 60, 0.5);
        }
        // A newcomer's price predicts its chart (10 in 12 first-query opportunities); the user's
        // next lookup does not, and neither would a table blind to the session position
        // (10 in 42).
        let f = s.observe(600, 7, PRICE, 5_000, 0.5);
        assert_eq!(f.iter().map(|f| (f.ticker, f.module)).collect::<Vec<_>>(), vec![(7, CHART)]);
        assert!((f[0].probability - 10.0 / 13.0).abs() < 0.01, "{}", f[0].probability);
        assert!(s.observe(500, 300, PRICE, 5_000, 0.5).is_empty());
    }

    #[test]
    fn follow_ups_beyond_the_horizon_count_for_the_gap_only() {
        let mut s = Sequences::new(1_800, 300, 7 * 86_400);
        for c in 0..10u64 {
            s.observe(c, 7, PRICE, 1_000, 0.5);
            s.observe(c, 7, NEWS, 1_000 + 600, 0.5);
        }
        let edges = s.edges(2_000);
        let e = edges.iter().find(|e| e.to_module == NEWS).expect("price → news learned");
        assert!(e.in_gap > 9.9 && e.probability < 1e-6, "{e:?}");
        assert!(s.observe(50, 7, PRICE, 2_000, 0.01).is_empty());
    }

    #[test]
    fn ticker_follow_ups_and_out_of_order_events() {
        let mut s = Sequences::new(1_800, 300, 7 * 86_400);
        for c in 0..5u64 {
            s.observe(c, 1, PRICE, 1_000, 0.5);
            s.observe(c, 2, PRICE, 1_030, 0.5);
            // An older event of the same client is ignored entirely.
            assert!(s.observe(c, 3, PRICE, 900, 0.0).is_empty());
        }
        let f = s.observe(77, 1, NEWS, 2_000, 0.5);
        assert_eq!(f.iter().map(|f| (f.ticker, f.module)).collect::<Vec<_>>(), vec![(2, PRICE)]);
        assert!(s.edges(2_000).iter().all(|e| e.to_ticker != 3));
    }

    #[test]
    fn sweep_forgets_idle_clients_faded_edges_and_freed_ids() {
        let mut s = Sequences::new(1_800, 300, 3 * 86_400);
        s.observe(1, 1, PRICE, 1_000, 0.5);
        s.observe(1, 1, CHART, 1_010, 0.5);
        s.observe(2, 5, PRICE, 1_000, 0.5);
        s.observe(2, 6, PRICE, 1_010, 0.5);
        s.sweep(1_100, &[], &[]);
        assert_eq!((s.live_clients(), s.edges(1_100).len()), (2, 2));
        // Ticker 6 freed: its edge goes, the module edge stays; clients are past the gap.
        let mut freed = vec![false; 7];
        freed[6] = true;
        s.sweep(5_000, &freed, &[]);
        assert_eq!(s.live_clients(), 0);
        assert_eq!(
            s.edges(5_000).iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EdgeKind::Module]
        );
        // One retention later a single observation has faded out.
        s.sweep(1_010 + 3 * 86_400 + 60, &[], &[]);
        assert!(s.edges(1_010 + 3 * 86_400 + 60).is_empty());
    }
}
