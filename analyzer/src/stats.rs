//! The patterns snapshot (the original tool's `analyze_patterns`), aggregated with polars from
//! a [`PatternsInput`] the model copied out ([`Model::patterns_input`]): the group-bys and
//! top-k sorts run after the model's lock is released, so a stats request never stalls folding.
//! The frame is O(live keys) rows; it is meant for an occasional request, not for every tick.

use chrono::{DateTime, Utc};
use polars::prelude::*;
use prefetch_model::patterns::{KeyCount, NameCount, PatternsInput, Stats, TimeOutOfRange};
use prefetch_model::Model;

/// Why a snapshot could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The polars aggregation failed (a bug, not bad input).
    #[error("aggregation failed: {0}")]
    Polars(#[from] PolarsError),
    /// `now` is outside the model's time range (before 2000 or after 2136).
    #[error("time {0} is out of range")]
    Time(DateTime<Utc>),
}

impl From<TimeOutOfRange> for StatsError {
    fn from(e: TimeOutOfRange) -> Self {
        StatsError::Time(e.0)
    }
}

/// The `k` rows with the largest `value` (grouped by `group` first when it is not the key),
/// ties broken by the group columns ascending.
fn top(
    df: &DataFrame,
    group: &[&str],
    value: &str,
    k: usize,
    aggregate: bool,
) -> PolarsResult<DataFrame> {
    let mut lf = df.clone().lazy();
    if aggregate {
        lf = lf.group_by(group.iter().map(|c| col(*c)).collect::<Vec<_>>()).agg([col(value).sum()]);
    }
    let mut by = vec![value];
    by.extend_from_slice(group);
    let mut descending = vec![true];
    descending.extend(group.iter().map(|_| false));
    lf.filter(col(value).gt(lit(0u64)))
        .sort(by, SortMultipleOptions::new().with_order_descending_multi(descending))
        .limit(k as IdxSize)
        .collect()
}

fn u32s(df: &DataFrame, name: &str) -> PolarsResult<Vec<u32>> {
    Ok(df.column(name)?.u32()?.iter().flatten().collect())
}

fn u64s(df: &DataFrame, name: &str) -> PolarsResult<Vec<u64>> {
    Ok(df.column(name)?.u64()?.iter().flatten().collect())
}

/// The patterns snapshot of `model` at `now` (or its watermark, if later), `top_n` entries per
/// list. Runs polars: call it from `spawn_blocking` in an async service. Holding `model` only
/// for the copy is the caller's choice: see [`aggregate`].
pub fn stats(model: &Model, now: DateTime<Utc>) -> Result<Stats, StatsError> {
    aggregate(model.patterns_input(now)?)
}

/// The polars half of the snapshot: group-bys and top-k sorts over a copied input.
pub fn aggregate(input: PatternsInput) -> Result<Stats, StatsError> {
    let PatternsInput {
        generated_at,
        market_hour,
        market_weekday,
        current_hour_weight,
        top_n: k,
        ticker_names,
        module_names,
        ticker_rank: t_col,
        module_rank: m_col,
        total: total_col,
        hour: hour_col,
        weekday: wd_col,
        top_sequences,
        hourly_profile,
        weekday_profile,
    } = input;
    let n = t_col.len();
    let events_in_window = total_col.iter().sum();
    let df = polars::df!("ticker" => t_col, "module" => m_col, "total" => total_col, "hour" => hour_col, "weekday" => wd_col)?;
    let names = |out: DataFrame,
                 key: &str,
                 name: &dyn Fn(usize) -> String|
     -> PolarsResult<Vec<NameCount>> {
        let ids = u32s(&out, key)?;
        let counts = u64s(&out, "total")?;
        Ok(ids
            .into_iter()
            .zip(counts)
            .map(|(r, count)| NameCount { name: name(r as usize), count })
            .collect())
    };
    let keys = |out: DataFrame, value: &str| -> PolarsResult<Vec<KeyCount>> {
        let (ts, ms, counts) = (u32s(&out, "ticker")?, u32s(&out, "module")?, u64s(&out, value)?);
        Ok(ts
            .into_iter()
            .zip(ms)
            .zip(counts)
            .map(|((t, m), count)| KeyCount {
                ticker: ticker_names[t as usize].clone(),
                module: module_names[m as usize].clone(),
                count,
            })
            .collect())
    };

    Ok(Stats {
        generated_at,
        market_hour,
        market_weekday,
        current_hour_weight,
        live_keys: n as u64,
        events_in_window,
        top_tickers: names(top(&df, &["ticker"], "total", k, true)?, "ticker", &|r| {
            ticker_names[r].to_string()
        })?,
        top_modules: names(top(&df, &["module"], "total", k, true)?, "module", &|r| {
            module_names[r].to_string()
        })?,
        top_pairs: keys(top(&df, &["ticker", "module"], "total", k, false)?, "total")?,
        popular_this_hour: keys(top(&df, &["ticker", "module"], "hour", k, false)?, "hour")?,
        popular_this_weekday: keys(
            top(&df, &["ticker", "module"], "weekday", k, false)?,
            "weekday",
        )?,
        top_sequences,
        hourly_profile,
        weekday_profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};
    use prefetch_common::contract::{Module, QueryEvent, Ticker};
    use prefetch_model::patterns::{KeyCount, NameCount};
    use prefetch_model::ModelConfig;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn ev(ticker: &str, module: &str, ts: DateTime<Utc>) -> QueryEvent {
        QueryEvent {
            ticker: Ticker::parse(ticker).unwrap(),
            module: Module::parse(module).unwrap(),
            hit: false,
            ts,
            client: None,
            latency_ms: None,
        }
    }

    #[test]
    fn stats_report_top_lists_profiles_and_serialise() {
        let mut m = Model::new(ModelConfig { top_n: 2, ..ModelConfig::default() }).unwrap();
        // Monday 10:xx New York: AAPL price ×5, AAPL news ×2, MSFT price ×3, GOOG price ×3.
        let mon = utc(2026, 1, 5, 15, 0);
        for (t, md, n) in
            [("AAPL", "price", 5), ("AAPL", "news", 2), ("MSFT", "price", 3), ("GOOG", "price", 3)]
        {
            for i in 0..n {
                m.record(&ev(t, md, mon + Duration::minutes(i)));
            }
        }
        // Tuesday 15:xx: MSFT news ×4.
        let tue = utc(2026, 1, 6, 20, 0);
        for i in 0..4 {
            m.record(&ev("MSFT", "news", tue + Duration::minutes(i)));
        }
        m.tick(tue + Duration::minutes(5));
        // Asked on Wednesday at 10:30 New York.
        let s = stats(&m, utc(2026, 1, 7, 15, 30)).unwrap();
        assert_eq!(
            (s.market_hour, s.market_weekday.as_str(), s.current_hour_weight),
            (10, "Wed", 1.5)
        );
        assert_eq!((s.live_keys, s.events_in_window), (5, 17));
        let names =
            |v: &[NameCount]| v.iter().map(|n| (n.name.clone(), n.count)).collect::<Vec<_>>();
        assert_eq!(names(&s.top_tickers), vec![("AAPL".into(), 7), ("MSFT".into(), 7)]);
        assert_eq!(names(&s.top_modules), vec![("price".into(), 11), ("news".into(), 6)]);
        let keys = |v: &[KeyCount]| {
            v.iter().map(|k| format!("{}:{}={}", k.ticker, k.module, k.count)).collect::<Vec<_>>()
        };
        assert_eq!(keys(&s.top_pairs), vec!["AAPL:price=5", "MSFT:news=4"]);
        // Hour 10 happened only on Monday; GOOG and MSFT price tie and break alphabetically.
        assert_eq!(keys(&s.popular_this_hour), vec!["AAPL:price=5", "GOOG:price=3"]);
        // Nothing happened on a Wednesday yet.
        assert!(s.popular_this_weekday.is_empty());
        assert_eq!(s.hourly_profile[10], 13);
        assert_eq!(s.hourly_profile[15], 4);
        assert_eq!((s.weekday_profile[0], s.weekday_profile[1]), (13, 4));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["top_pairs"][0]["ticker"], "AAPL");
        let back: Stats = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
    }
}
