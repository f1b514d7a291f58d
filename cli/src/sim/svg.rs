//! Hand-written SVG charts: the hit rate over time of each strategy, and tune's hit rate
//! against upstream fetches. Plain `<polyline>`s and `<circle>`s, no plotting crate.

use std::fmt::Write as _;

const W: f64 = 900.0;
const H: f64 = 420.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 160.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 50.0;
/// Colours of the series, in order.
pub const COLOURS: [&str; 6] = ["#1f77b4", "#7f7f7f", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd"];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn x(&self, v: f64) -> f64 {
        LEFT + (v - self.x0) / (self.x1 - self.x0).max(f64::MIN_POSITIVE) * (W - LEFT - RIGHT)
    }
    fn y(&self, v: f64) -> f64 {
        H - BOTTOM - (v - self.y0) / (self.y1 - self.y0).max(f64::MIN_POSITIVE) * (H - TOP - BOTTOM)
    }
}

fn axes(
    out: &mut String,
    f: &Frame,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    xticks: &[(f64, String)],
    yticks: &[(f64, String)],
) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">
<rect width="{W}" height="{H}" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">{}</text>
"#,
        (W - RIGHT + LEFT) / 2.0,
        esc(title)
    );
    let (xa, xb, ya, yb) = (LEFT, W - RIGHT, TOP, H - BOTTOM);
    let _ = writeln!(out, r##"<path d="M{xa} {ya} V{yb} H{xb}" fill="none" stroke="#333"/>"##);
    for (v, label) in yticks {
        let y = f.y(*v);
        let _ = writeln!(
            out,
            r##"<line x1="{xa}" y1="{y:.1}" x2="{xb}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            xa - 6.0,
            y + 4.0,
            esc(label)
        );
    }
    for (v, label) in xticks {
        let x = f.x(*v);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{yb}" x2="{x:.1}" y2="{}" stroke="#333"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
            yb + 5.0,
            yb + 20.0,
            esc(label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (xa + xb) / 2.0,
        H - 10.0,
        esc(xlabel)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(16 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        (ya + yb) / 2.0,
        esc(ylabel)
    );
}

fn legend(out: &mut String, names: &[(String, &str)]) {
    for (i, (name, colour)) in names.iter().enumerate() {
        let y = TOP + 10.0 + i as f64 * 18.0;
        let x = W - RIGHT + 15.0;
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="3"/><text x="{}" y="{}">{}</text>"#,
            x + 20.0,
            x + 26.0,
            y + 4.0,
            esc(name)
        );
    }
}

/// Ticks for `[lo, hi]`: about five round values.
fn nice_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::MIN_POSITIVE);
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * mag);
    let mut v = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while v <= hi + step * 1e-9 {
        out.push(v);
        v += step;
    }
    out
}

/// One series of the timeline: its name and `(queries, hits)` per bucket.
pub struct Series<'a> {
    /// Legend text.
    pub name: String,
    /// `(queries, hits)` per bucket.
    pub points: &'a [(u64, u64)],
}

/// Hit rate per bucket of `bucket_h` hours, one line per series; buckets with fewer than
/// `min_queries` queries are left out (the line breaks there).
pub fn timeline(title: &str, series: &[Series<'_>], bucket_h: f64, min_queries: u64) -> String {
    let n = series.iter().map(|s| s.points.len()).max().unwrap_or(0).max(1);
    let rates: Vec<Vec<Option<f64>>> = series
        .iter()
        .map(|s| {
            s.points
                .iter()
                .map(|&(q, h)| (q >= min_queries && q > 0).then(|| h as f64 / q as f64))
                .collect()
        })
        .collect();
    let lo = rates.iter().flatten().flatten().fold(1.0f64, |a, &b| a.min(b));
    let y0 = (lo * 10.0).floor() / 10.0;
    let f = Frame { x0: 0.0, x1: n as f64 * bucket_h, y0, y1: 1.0 };
    let xt: Vec<(f64, String)> =
        nice_ticks(0.0, f.x1).into_iter().map(|v| (v, format!("{v}h"))).collect();
    let yt: Vec<(f64, String)> =
        nice_ticks(y0, 1.0).into_iter().map(|v| (v, format!("{:.0}%", v * 100.0))).collect();
    let mut out = String::new();
    axes(&mut out, &f, title, "hours since the first event", "hit rate", &xt, &yt);
    for (i, rs) in rates.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut run: Vec<String> = Vec::new();
        let flush = |run: &mut Vec<String>, out: &mut String| {
            if run.len() > 1 {
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
                    run.join(" ")
                );
            }
            run.clear();
        };
        for (b, r) in rs.iter().enumerate() {
            match r {
                Some(r) => {
                    run.push(format!("{:.1},{:.1}", f.x((b as f64 + 0.5) * bucket_h), f.y(*r)))
                }
                None => flush(&mut run, &mut out),
            }
        }
        flush(&mut run, &mut out);
    }
    legend(
        &mut out,
        &series
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), COLOURS[i % COLOURS.len()]))
            .collect::<Vec<_>>(),
    );
    out.push_str("</svg>\n");
    out
}

/// A point of the tune frontier.
pub struct Point {
    /// Upstream fetches.
    pub fetches: f64,
    /// Hit rate, 0–1.
    pub hit_rate: f64,
    /// On the Pareto frontier.
    pub frontier: bool,
    /// The recommended setting.
    pub recommended: bool,
}

/// Hit rate against upstream fetches: every grid setting as a dot, the frontier as a line, the
/// no-warming point and the budget as references.
pub fn frontier(
    title: &str,
    points: &[Point],
    baseline: (f64, f64),
    budget: Option<f64>,
) -> String {
    let xs = points.iter().map(|p| p.fetches).chain([baseline.0]).chain(budget);
    let (xmin, xmax) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let ys = points.iter().map(|p| p.hit_rate).chain([baseline.1]);
    let (ymin, ymax) = ys.fold((f64::MAX, f64::MIN), |(a, b), y| (a.min(y), b.max(y)));
    let pad_x = (xmax - xmin).max(1.0) * 0.05;
    let pad_y = (ymax - ymin).max(0.01) * 0.1;
    let f = Frame {
        x0: xmin - pad_x,
        x1: xmax + pad_x,
        y0: (ymin - pad_y).max(0.0),
        y1: (ymax + pad_y).min(1.0),
    };
    let xt: Vec<(f64, String)> =
        nice_ticks(f.x0, f.x1).into_iter().map(|v| (v, format!("{v}"))).collect();
    let yt: Vec<(f64, String)> =
        nice_ticks(f.y0, f.y1).into_iter().map(|v| (v, format!("{:.1}%", v * 100.0))).collect();
    let mut out = String::new();
    axes(&mut out, &f, title, "upstream fetches", "hit rate", &xt, &yt);
    if let Some(b) = budget {
        let x = f.x(b);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{}" stroke="#d62728" stroke-dasharray="4 3"/>"##,
            H - BOTTOM
        );
    }
    let mut front: Vec<&Point> = points.iter().filter(|p| p.frontier).collect();
    front.sort_by(|a, b| a.fetches.total_cmp(&b.fetches));
    let line: Vec<String> =
        front.iter().map(|p| format!("{:.1},{:.1}", f.x(p.fetches), f.y(p.hit_rate))).collect();
    if line.len() > 1 {
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            COLOURS[0],
            line.join(" ")
        );
    }
    for p in points {
        let (r, colour) = if p.recommended {
            (6.0, COLOURS[4])
        } else if p.frontier {
            (4.0, COLOURS[0])
        } else {
            (3.0, "#aaa")
        };
        let _ = writeln!(
            out,
            r#"<circle cx="{:.1}" cy="{:.1}" r="{r}" fill="{colour}"/>"#,
            f.x(p.fetches),
            f.y(p.hit_rate)
        );
    }
    let _ = writeln!(
        out,
        r#"<circle cx="{:.1}" cy="{:.1}" r="5" fill="none" stroke="{}" stroke-width="2"/>"#,
        f.x(baseline.0),
        f.y(baseline.1),
        COLOURS[1]
    );
    legend(
        &mut out,
        &[
            ("frontier".to_owned(), COLOURS[0]),
            ("other settings".to_owned(), "#aaa"),
            ("recommended".to_owned(), COLOURS[4]),
            ("no warming".to_owned(), COLOURS[1]),
            ("fetch budget".to_owned(), COLOURS[4]),
        ],
    );
    out.push_str("</svg>\n");
    out
}
