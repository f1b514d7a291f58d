//! Learned sequences (`sequence.rs`): client sessions, anonymous tickers, decay and sweep.

use super::*;

const PRICE: u32 = 0;
const CHART: u32 = 1;
const NEWS: u32 = 2;

/// Sources of the contextual table with edges, and with a count.
fn ctx_sizes(s: &Sequences) -> (usize, usize) {
    let with_edges = s.ctx.values().filter(|x| !x.edges.is_empty()).count();
    let counted = s.ctx.values().filter(|x| x.out.value != 0.0).count();
    (with_edges, counted)
}

#[test]
fn learns_module_follow_ups_across_tickers() {
    let mut s = Sequences::new(1_800, 300, 7 * 86_400);
    // Ten clients each look at price then, 20 s later, chart, on ticker i.
    for c in 0..10u64 {
        let t = 1_000 + c as u32 * 100;
        s.observe(c, c as u32, PRICE, t, 0.5, u32::MAX);
        s.observe(c, c as u32, CHART, t + 20, 0.5, u32::MAX);
    }
    // A new client on a new ticker: price predicts chart on that ticker.
    let f = s.observe(99, 42, PRICE, 5_000, 0.5, u32::MAX);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].ticker, f[0].module), (42, CHART));
    // Ten hits in eleven opportunities (the 11th is this event), shrunk by one: ~10/12.
    assert!((f[0].probability - 10.0 / 12.0).abs() < 0.01, "{}", f[0].probability);
    // Chart never led anywhere; news has no history.
    assert!(s.observe(98, 43, CHART, 5_000, 0.1, u32::MAX).is_empty());
    assert!(s.observe(97, 44, NEWS, 5_000, 0.0, u32::MAX).is_empty());
}

#[test]
fn the_session_position_separates_analysts_from_one_off_lookups() {
    let mut s = Sequences::new(1_800, 300, 7 * 86_400);
    // Ten analysts: a first query on price, then the chart of the same ticker.
    for c in 0..10u32 {
        s.observe(u64::from(c), c, PRICE, 1_000 + c * 10, 0.5, u32::MAX);
        s.observe(u64::from(c), c, CHART, 1_020 + c * 10, 0.5, u32::MAX);
    }
    // A user's one-off lookups: price of another ticker each minute, never a chart.
    for i in 0..30u32 {
        s.observe(500, 100 + i, PRICE, 2_000 + i * 60, 0.5, u32::MAX);
    }
    // A newcomer's price predicts its chart (10 in 12 first-query opportunities); the user's
    // next lookup does not, and neither would a table blind to the session position
    // (10 in 42).
    let f = s.observe(600, 7, PRICE, 5_000, 0.5, u32::MAX);
    assert_eq!(f.iter().map(|f| (f.ticker, f.module)).collect::<Vec<_>>(), vec![(7, CHART)]);
    assert!((f[0].probability - 10.0 / 13.0).abs() < 0.01, "{}", f[0].probability);
    assert!(s.observe(500, 300, PRICE, 5_000, 0.5, u32::MAX).is_empty());
}

#[test]
fn follow_ups_beyond_the_horizon_count_for_the_gap_only() {
    let mut s = Sequences::new(1_800, 300, 7 * 86_400);
    for c in 0..10u64 {
        s.observe(c, 7, PRICE, 1_000, 0.5, u32::MAX);
        s.observe(c, 7, NEWS, 1_000 + 600, 0.5, u32::MAX);
    }
    let edges = s.edges(2_000);
    let e = edges.iter().find(|e| e.to_module == NEWS).expect("price → news learned");
    assert!(e.in_gap > 9.9 && e.probability < 1e-6, "{e:?}");
    assert!(s.observe(50, 7, PRICE, 2_000, 0.01, u32::MAX).is_empty());
}

#[test]
fn ticker_follow_ups_and_out_of_order_events() {
    let mut s = Sequences::new(1_800, 300, 7 * 86_400);
    for c in 0..5u64 {
        s.observe(c, 1, PRICE, 1_000, 0.5, u32::MAX);
        s.observe(c, 2, PRICE, 1_030, 0.5, u32::MAX);
        // An older event of the same client is ignored entirely.
        assert!(s.observe(c, 3, PRICE, 900, 0.0, u32::MAX).is_empty());
    }
    let f = s.observe(77, 1, NEWS, 2_000, 0.5, u32::MAX);
    assert_eq!(f.iter().map(|f| (f.ticker, f.module)).collect::<Vec<_>>(), vec![(2, PRICE)]);
    assert!(s.edges(2_000).iter().all(|e| e.to_ticker != 3));
}

#[test]
fn sweep_forgets_idle_clients_faded_edges_and_freed_ids() {
    let mut s = Sequences::new(1_800, 300, 3 * 86_400);
    s.observe(1, 1, PRICE, 1_000, 0.5, u32::MAX);
    s.observe(1, 1, CHART, 1_010, 0.5, u32::MAX);
    s.observe(2, 5, PRICE, 1_000, 0.5, u32::MAX);
    s.observe(2, 6, PRICE, 1_010, 0.5, u32::MAX);
    s.sweep(1_100, &[], &[]);
    assert_eq!((s.live_clients(), s.edges(1_100).len()), (2, 2));
    // Ticker 6 freed: its edge goes, the module edge stays; clients are past the gap.
    let mut freed = vec![false; 7];
    freed[6] = true;
    s.sweep(5_000, &freed, &[]);
    assert_eq!(s.live_clients(), 0);
    assert_eq!(s.edges(5_000).iter().map(|e| e.kind).collect::<Vec<_>>(), vec![EdgeKind::Module]);
    // One retention later a single observation has faded out.
    s.sweep(1_010 + 3 * 86_400 + 60, &[], &[]);
    assert!(s.edges(1_010 + 3 * 86_400 + 60).is_empty());
}

#[test]
fn sweep_forgets_idle_anonymous_tickers_their_faded_tables_and_freed_ids() {
    let mut s = Sequences::new(1_800, 300, 3 * 86_400);
    s.observe_anonymous(1, PRICE, 1_000, 0.5, u32::MAX);
    s.observe_anonymous(1, CHART, 1_010, 0.5, u32::MAX);
    s.observe_anonymous(2, PRICE, 1_000, 0.5, u32::MAX);
    s.sweep(1_100, &[], &[]);
    assert_eq!((s.anon.len(), ctx_sizes(&s).0), (2, 1));
    // Ticker 2 freed: its last query goes; ticker 1's stays within the session gap.
    let mut freed = vec![false; 3];
    freed[2] = true;
    s.sweep(1_200, &freed, &[]);
    assert_eq!(s.anon.keys().collect::<Vec<_>>(), [&1]);
    // Past the gap no last query is kept; the chart module freed, its table goes.
    let mut chart = vec![false; 4];
    chart[CHART as usize] = true;
    s.sweep(5_000, &[], &chart);
    assert!(s.anon.is_empty() && ctx_sizes(&s).0 == 0, "{:?}", s.ctx);
    // A table of modules still live fades out: one observation within a retention, the three
    // session starts of price within two.
    s.observe_anonymous(3, PRICE, 10_000, 0.5, u32::MAX);
    s.observe_anonymous(3, NEWS, 10_010, 0.5, u32::MAX);
    s.sweep(10_100, &[], &[]);
    assert_eq!(ctx_sizes(&s), (1, 2));
    s.sweep(10_010 + 3 * 86_400 + 60, &[], &[]);
    assert_eq!(ctx_sizes(&s), (0, 1), "{:?}", s.ctx);
    s.sweep(10_010 + 6 * 86_400, &[], &[]);
    assert!(s.ctx.is_empty(), "{:?}", s.ctx);
}

#[test]
fn queries_naming_no_client_teach_same_ticker_follow_ups_from_the_tickers_stream() {
    let mut s = Sequences::new(1_800, 300, 7 * 86_400);
    // Sessions on quiet tickers, no client: price, then chart 20 s later.
    for i in 0..200u32 {
        let t = 10_000 + i * 1_000;
        s.observe_anonymous(i, PRICE, t, 0.5, u32::MAX);
        s.observe_anonymous(i, CHART, t + 20, 0.5, u32::MAX);
    }
    let t = 300_000;
    let f = s.observe_anonymous(900, PRICE, t, 0.5, u32::MAX);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!((f[0].ticker, f[0].module), (900, CHART));
    assert!(f[0].probability > 0.8, "{f:?}");
    // Their own tables: a client's session start learnt nothing from them.
    assert!(s.observe(7, 901, PRICE, t + 5, 0.1, u32::MAX).is_empty());
    // A busy ticker, asked for every 2 s by anyone for any module: no module follows a
    // price with any certainty.
    let mut busy = Sequences::new(1_800, 300, 7 * 86_400);
    let (mut out, mut x) = (Vec::new(), 0x2545_f491_4f6c_dd1du64);
    for i in 0..3_000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let module = ((x >> 33) % 3) as u32;
        out = busy.observe_anonymous(5, module, 1_000 + 2 * i, 0.5, u32::MAX);
    }
    assert!(out.is_empty(), "{out:?}");
    // A chart copy lives 10 s: a chart 20 s after the price is not one a warm at the price
    // would serve, and nothing is learnt as likely.
    let mut short = Sequences::new(1_800, 300, 7 * 86_400);
    for i in 0..200u32 {
        let t = 10_000 + i * 1_000;
        short.observe_anonymous(i, PRICE, t, 0.5, 10);
        short.observe_anonymous(i, CHART, t + 20, 0.5, 10);
    }
    assert!(short.observe_anonymous(900, PRICE, 300_000, 0.1, 10).is_empty());
}

#[test]
fn a_faded_count_is_forgotten_while_the_sources_edges_live_on() {
    // A source's count and edges share one entry: a sweep must forget the count once faded
    // (as a table of counts of its own did) yet keep the edges, which fade from later on.
    let mut s = Sequences::new(1_800, 300, 3 * 86_400);
    s.observe(1, 7, PRICE, 1_000, 0.5, u32::MAX);
    s.observe(1, 7, CHART, 1_300, 0.5, u32::MAX);
    // The price count (at 1,000) has faded below the bar, the price → chart edge (at 1,300) not.
    let now = 1_000 + 258_900;
    s.sweep(now, &[], &[]);
    let edges = s.edges(now);
    let e = edges.iter().find(|e| e.kind == EdgeKind::Module).expect("price → chart kept");
    assert!(e.in_gap > 0.05, "{e:?}");
    assert!((e.probability - e.in_gap).abs() < 1e-6, "no opportunity left: {e:?}");
    // A newcomer's price counts from one, not from the faded rest.
    let f = s.observe(2, 9, PRICE, now + 1, 0.0, u32::MAX);
    assert_eq!(f.iter().map(|f| (f.ticker, f.module)).collect::<Vec<_>>(), vec![(9, CHART)]);
    assert!((f[0].probability - e.in_gap / 2.0).abs() < 1e-5, "{f:?} {e:?}");
}

#[test]
fn a_full_source_replaces_its_weakest_edge() {
    let mut edges = Vec::new();
    // Sixteen targets; target 5 was seen once and long ago, the others twice and lately.
    learn(&mut edges, 5, PRICE, 1_000, true, 86_400.0);
    for target in (0..MAX_EDGES as u32).filter(|&x| x != 5) {
        for t in [50_000, 50_010] {
            learn(&mut edges, target, PRICE, t, true, 86_400.0);
        }
    }
    assert_eq!(edges.len(), MAX_EDGES);
    learn(&mut edges, 99, NEWS, 60_000, true, 86_400.0);
    assert_eq!(edges.len(), MAX_EDGES);
    let mut targets: Vec<u32> = edges.iter().map(|e| e.ticker).collect();
    targets.sort_unstable();
    let want: Vec<u32> = (0..MAX_EDGES as u32).filter(|&x| x != 5).chain([99]).collect();
    assert_eq!(targets, want, "the faded edge gave way");
    // The newcomer, seen once, is now the weakest: the next newcomer takes its place.
    learn(&mut edges, 98, NEWS, 60_000, true, 86_400.0);
    assert!(edges.iter().any(|e| e.ticker == 98) && !edges.iter().any(|e| e.ticker == 99));
}
