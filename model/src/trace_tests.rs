//! Calibration on a synthetic trace: does "confidence 0.7" come true about 70% of the time?
//!
//! 240 keys over four market days (Monday–Thursday, New York), ticking every minute:
//! - 120 steady Poisson keys, rates log-uniform between one an hour and one a minute;
//! - 60 market-hours keys, 20× busier 09:30–16:00 than outside;
//! - 60 bursty keys: one an hour, plus ten-minute bursts of one every 20 s about every 4 h.
//!
//! The first day is warm-up (the model learns profiles and calibration); on the other three,
//! every live key's published confidence at every tick is scored against whether the key was
//! queried within the next 300 s.

use super::tests::{ev, publish_all, utc};
use super::*;
use chrono::Duration;

/// SplitMix64: a tiny deterministic generator, enough for a reproducible trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// Poisson(mean) by inversion (means here are small).
    fn poisson(&mut self, mean: f64) -> u32 {
        let (mut k, mut p, mut cdf) = (0, (-mean).exp(), (-mean).exp());
        let u = self.unit();
        while u > cdf && k < 1_000 {
            k += 1;
            p *= mean / f64::from(k);
            cdf += p;
        }
        k
    }
}

enum Kind {
    Steady(f64),
    MarketHours(f64),
    Bursty { next_burst: i64 },
}

/// Event times (seconds since `start`) per key, and each key's true rate (events/s) per minute.
fn trace(rng: &mut Rng, minutes: i64, start: DateTime<Utc>) -> (Vec<Vec<i64>>, Vec<Vec<f64>>) {
    let tz = chrono_tz::America::New_York;
    let mut kinds: Vec<Kind> = Vec::new();
    for i in 0..240 {
        let rate = (1.0 / 3600.0) * 60f64.powf(rng.unit());
        kinds.push(match i {
            0..120 => Kind::Steady(rate),
            120..180 => Kind::MarketHours(rate),
            _ => Kind::Bursty { next_burst: (rng.unit() * 240.0) as i64 },
        });
    }
    let mut events = vec![Vec::new(); kinds.len()];
    let mut rates = vec![Vec::with_capacity(minutes as usize); kinds.len()];
    for minute in 0..minutes {
        let local = (start + Duration::minutes(minute)).with_timezone(&tz);
        let mins = chrono::Timelike::hour(&local) * 60 + chrono::Timelike::minute(&local);
        let open = (570..960).contains(&mins);
        for (k, kind) in kinds.iter_mut().enumerate() {
            let rate = match kind {
                Kind::Steady(r) => *r,
                Kind::MarketHours(r) => {
                    if open {
                        *r
                    } else {
                        *r / 20.0
                    }
                }
                Kind::Bursty { next_burst } => {
                    if minute >= *next_burst + 10 {
                        *next_burst = minute + 120 + (rng.unit() * 240.0) as i64;
                    }
                    if minute >= *next_burst {
                        1.0 / 20.0
                    } else {
                        1.0 / 3600.0
                    }
                }
            };
            rates[k].push(rate);
            let mut ts: Vec<i64> = (0..rng.poisson(rate * 60.0))
                .map(|_| minute * 60 + (rng.unit() * 60.0) as i64)
                .collect();
            ts.sort_unstable();
            events[k].extend(ts);
        }
    }
    (events, rates)
}

/// Brier score and expected calibration error (10 bins) of `(probability, outcome)` pairs, with
/// a printable reliability table.
fn score(pairs: &[(f64, bool)]) -> (f64, f64, String, Vec<(f64, f64, usize)>) {
    let n = pairs.len() as f64;
    let brier = pairs.iter().map(|&(p, o)| (p - f64::from(u8::from(o))).powi(2)).sum::<f64>() / n;
    let mut bins = vec![(0.0f64, 0.0f64, 0usize); 10];
    for &(p, o) in pairs {
        let b = ((p * 10.0) as usize).min(9);
        bins[b].0 += p;
        bins[b].1 += f64::from(u8::from(o));
        bins[b].2 += 1;
    }
    let (mut ece, mut table) = (0.0, String::new());
    for (i, b) in bins.iter_mut().enumerate().filter(|(_, b)| b.2 > 0) {
        let c = b.2;
        (b.0, b.1) = (b.0 / c as f64, b.1 / c as f64);
        ece += (b.0 - b.1).abs() * c as f64 / n;
        table += &format!(
            "  [{:.1},{:.1}) n={c:7} mean p={:.3} observed={:.3}\n",
            i as f64 / 10.0,
            (i + 1) as f64 / 10.0,
            b.0,
            b.1
        );
    }
    (brier, ece, table, bins)
}

#[test]
fn confidence_is_calibrated_on_a_synthetic_trace() {
    let start = utc(2026, 1, 5, 5, 0); // Monday 00:00 in New York
    let days = 4;
    let minutes = days * 1_440;
    let mut rng = Rng(7);
    let (events, rates) = trace(&mut rng, minutes, start);
    let names: Vec<String> = (0..events.len()).map(|k| format!("K{k}")).collect();
    let module = Module::parse("price").unwrap();
    let mut model = Model::new(publish_all()).unwrap();
    let mut cursor = vec![0usize; events.len()];
    // (probability, outcome) for every scored prediction: the model's published confidence,
    // its raw (uncalibrated) probability, and an oracle that knows each key's true intensity.
    let (mut published, mut raw, mut oracle) = (Vec::new(), Vec::new(), Vec::new());
    let mut class_of = Vec::new();
    for minute in 1..=minutes {
        let now = minute * 60;
        for (k, ts) in events.iter().enumerate() {
            while cursor[k] < ts.len() && ts[cursor[k]] <= now {
                model.record(&ev(
                    &names[k],
                    "price",
                    start + Duration::seconds(ts[cursor[k]]),
                    None,
                ));
                cursor[k] += 1;
            }
        }
        let at = start + Duration::seconds(now);
        let preds = model.tick(at);
        if minute <= 1_440 || now + 300 > minutes * 60 {
            continue;
        }
        for p in preds {
            let k: usize = p.ticker.as_str()[1..].parse().unwrap();
            let ts = &events[k];
            let next = ts.partition_point(|&t| t <= now);
            let hit = next < ts.len() && ts[next] <= now + 300;
            published.push((p.confidence, hit));
            class_of.push(if k < 120 {
                0
            } else if k < 180 {
                1
            } else {
                2
            });
            raw.push((model.explain(&p.ticker, &module, at).unwrap().raw_probability, hit));
            let mass: f64 =
                rates[k][minute as usize..minute as usize + 5].iter().sum::<f64>() * 60.0;
            oracle.push((1.0 - (-mass).exp(), hit));
        }
    }

    let n = published.len() as f64;
    let base = published.iter().filter(|s| s.1).count() as f64 / n;
    let brier_base = base * (1.0 - base);
    let (brier, ece, table, bins) = score(&published);
    let (brier_raw, ece_raw, table_raw, _) = score(&raw);
    let (brier_oracle, ece_oracle, _, _) = score(&oracle);
    let skill = |b: f64| 1.0 - b / brier_base;
    println!(
        "n={n} base rate={base:.4} Brier: base-rate {brier_base:.4}, published {brier:.4} (skill {:.3}), raw {brier_raw:.4} \
         (skill {:.3}), oracle {brier_oracle:.4} (skill {:.3})\nECE: published {ece:.4}, raw {ece_raw:.4}, oracle {ece_oracle:.4}\n\
         published:\n{table}raw:\n{table_raw}",
        skill(brier),
        skill(brier_raw),
        skill(brier_oracle)
    );
    // Per key family, for the record (not asserted: calibration is global, per family it is not).
    for c in 0..3 {
        let pick = |v: &[(f64, bool)]| {
            v.iter().zip(&class_of).filter(|(_, &k)| k == c).map(|(x, _)| *x).collect::<Vec<_>>()
        };
        let (bp, ep, _, _) = score(&pick(&published));
        let (bo, _, _, _) = score(&pick(&oracle));
        let pp = pick(&published);
        let base = pp.iter().filter(|s| s.1).count() as f64 / pp.len() as f64;
        println!("class {c}: base {base:.3} published Brier {bp:.4} ECE {ep:.4} skill {:.3}; oracle {bo:.4} skill {:.3}", 1.0 - bp / (base * (1.0 - base)), 1.0 - bo / (base * (1.0 - base)));
    }
    // Reliability: every well-populated bin within 0.05 of what happened, 0.02 on average.
    for (i, &(mean_p, observed, count)) in bins.iter().enumerate() {
        assert!(
            count < 2_000 || (mean_p - observed).abs() < 0.05,
            "bin {i} miscalibrated:\n{table}"
        );
    }
    assert!(ece < 0.02, "expected calibration error {ece:.4}\n{table}");
    // Resolution: most of the skill of an oracle that knows every key's true intensity (bursts
    // included, before they start).
    assert!(
        skill(brier) > 0.7 * skill(brier_oracle),
        "skill {:.3} vs oracle {:.3}",
        skill(brier),
        skill(brier_oracle)
    );
    // The calibration layer does not make the raw probabilities worse.
    assert!(
        ece <= ece_raw + 0.002 && brier <= brier_raw + 0.002,
        "calibrated {ece:.4}/{brier:.4} vs raw {ece_raw:.4}/{brier_raw:.4}"
    );
}
