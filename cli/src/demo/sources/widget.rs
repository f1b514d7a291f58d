//! Dashboards and scheduled scans: sources that refresh one (ticker, module) pair on a fixed
//! period, within a market-hours window or always.

use super::{Emit, Fired, Kind, World};
use crate::demo::calendar::Market;
use crate::demo::rng::Rng;
use crate::demo::Origin;
use chrono::{Datelike, Days, NaiveDate, TimeZone, Utc, Weekday};
use prefetch_common::contract::ClientId;

/// One (ticker, module) pair of a dashboard, refreshed every `period_ms` while the dashboard is
/// open: weekdays between its open and close minute (market time), or always.
pub(crate) struct Widget {
    client: ClientId,
    ticker: u32,
    kind: Kind,
    period_ms: i64,
    /// Offset of the first refresh after the dashboard opens (always-on: after the trace start).
    offset_ms: i64,
    /// Local open and close minutes; `None` for a wallboard that never closes.
    window: Option<(u32, u32)>,
    next: i64,
    window_close: i64,
    end_ms: i64,
    market: Market,
    origin: Origin,
}

impl Widget {
    /// Draws a dashboard's widgets: 2 to 6 distinct pairs of tickers popular at `at` (ms),
    /// refreshed until `until` (ms).
    pub(crate) fn dashboard(
        world: &World,
        rng: &mut Rng,
        client: &ClientId,
        at: f64,
        until: i64,
    ) -> Vec<Widget> {
        let (open, close) = (world.market().open, world.market().close);
        let window = if rng.chance(0.2) {
            None
        } else {
            // Desks open the board up to 2½ hours before the bell (07:00–09:30 in New York) and
            // close it up to 3 hours after the close.
            Some((
                open.saturating_sub(150) + rng.below(151) as u32,
                (close + rng.below(181) as u32).min(1439),
            ))
        };
        let n = 2 + rng.below(5);
        let mut widgets: Vec<Widget> = Vec::with_capacity(n);
        for i in 0..n {
            let ticker = world.popular_ticker(rng, at);
            let kind = Kind::pick(rng, &world.shape.widget_mix);
            if widgets.iter().any(|w| w.ticker == ticker && w.kind == kind) {
                continue;
            }
            let period_ms = world.shape.widget_period_s[kind as usize] * 1000;
            let offset_ms = match window {
                Some(_) => i as i64 * 250 + rng.below(250) as i64,
                None => rng.below(period_ms as usize) as i64,
            };
            widgets.push(Widget {
                client: client.clone(),
                ticker,
                kind,
                period_ms,
                offset_ms,
                window,
                next: 0,
                window_close: i64::MAX,
                end_ms: world.end_ms.min(until),
                market: world.shape.market,
                origin: Origin::Dashboard,
            });
        }
        widgets
    }

    /// A scheduled job (always on): `n` distinct tickers, half popular and half from anywhere
    /// in the universe, one module, scanned every `period_s` with queries 200 ms apart.
    pub(crate) fn scanner(
        world: &World,
        rng: &mut Rng,
        client: &ClientId,
        n: usize,
        period_s: i64,
    ) -> Vec<Widget> {
        let kind = Kind::pick(rng, &world.shape.widget_mix);
        let period_ms = period_s * 1000;
        let base = rng.below(period_ms as usize) as i64;
        let mut tickers: Vec<u32> = Vec::with_capacity(n);
        for _ in 0..n * 4 {
            if tickers.len() >= n.min(world.tickers.len()) {
                break;
            }
            let t = if rng.chance(0.5) {
                world.popular_ticker(rng, 0.0)
            } else {
                world.ticker_of_rank(rng.below(world.tickers.len()), 0.0)
            };
            if !tickers.contains(&t) {
                tickers.push(t);
            }
        }
        tickers
            .into_iter()
            .enumerate()
            .map(|(i, ticker)| Widget {
                client: client.clone(),
                ticker,
                kind,
                period_ms,
                offset_ms: (base + 200 * i as i64) % period_ms,
                window: None,
                next: 0,
                window_close: i64::MAX,
                end_ms: world.end_ms,
                market: world.shape.market,
                origin: Origin::Scan,
            })
            .collect()
    }

    /// Refreshes per second while open.
    pub(crate) fn rate(&self) -> f64 {
        1000.0 / self.period_ms as f64
    }

    pub(super) fn first(&mut self, start: i64) -> Option<i64> {
        let t = match self.window {
            None => start + self.offset_ms,
            Some(_) => self.first_in_window(start)?,
        };
        self.next = t;
        (t < self.end_ms).then_some(t)
    }

    /// The first refresh at or after `from` in an open window, noting when that window closes.
    fn first_in_window(&mut self, from: i64) -> Option<i64> {
        let (open_min, close_min) = self.window?;
        let market = self.market;
        let mut date: NaiveDate = market.local_date(Utc.timestamp_millis_opt(from).single()?);
        for _ in 0..8 {
            if !matches!(date.weekday(), Weekday::Sat | Weekday::Sun) {
                let open = market.local_instant(date, open_min).timestamp_millis() + self.offset_ms;
                let close = market.local_instant(date, close_min).timestamp_millis();
                let k = if from > open {
                    (from - open + self.period_ms - 1) / self.period_ms
                } else {
                    0
                };
                let t = open + k * self.period_ms;
                if t < close {
                    self.window_close = close;
                    return Some(t);
                }
            }
            date = date.checked_add_days(Days::new(1))?;
        }
        None
    }

    pub(super) fn fire(&mut self) -> Fired {
        let emit = Emit {
            ticker: self.ticker,
            kind: self.kind,
            client: self.client.clone(),
            origin: self.origin,
        };
        let mut next = self.next + self.period_ms;
        if next >= self.window_close {
            // The board is closed until the next weekday's open.
            match self.first_in_window(self.window_close) {
                Some(t) => next = t,
                None => return Fired { emit: Some(emit), next: None, spawn: None },
            }
        }
        self.next = next;
        Fired { emit: Some(emit), next: (next < self.end_ms).then_some(next as f64), spawn: None }
    }
}
