#!/usr/bin/env python3
"""Hindsight refresh-ahead bound for Smart Prefetch traces (issue #13 analysis).
Usage: bound.py TRACE.ndjson CONFIG.json
Cache semantics as cli/src/sim/cache.rs: hit iff expires > t; a miss fetches (expires = t+ttl).
Oracle as cli/src/sim/oracle.rs (5 s ticks, top_n per tick).
"""
import sys, json, bisect, math
from collections import defaultdict

def iso_ms(s):
    # "2026-06-30T04:00:00.658Z" -> epoch ms (UTC)
    import calendar
    y, mo, d = int(s[0:4]), int(s[5:7]), int(s[8:10])
    h, mi, se = int(s[11:13]), int(s[14:16]), int(s[17:19])
    ms = 0
    if len(s) > 20 and s[19] == '.':
        frac = s[20:-1]
        ms = int((frac + '000')[:3])
    return calendar.timegm((y, mo, d, h, mi, se)) * 1000 + ms

def load(path, cfg):
    ttls = cfg['ttl_s']; dflt = cfg.get('default_ttl_s', 300)
    keyid = {}; keys = []; ev = []
    with open(path) as f:
        for line in f:
            o = json.loads(line)
            k = (o['ticker'], o['module'])
            ev.append((iso_ms(o['ts']), k))
    ev.sort(key=lambda x: x[0])
    ts = []; kk = []
    for t, k in ev:
        i = keyid.get(k)
        if i is None:
            i = keyid[k] = len(keys); keys.append(k)
        ts.append(t); kk.append(i)
    ttl = [int(ttls.get(m, dflt) * 1000) for (_, m) in keys]
    return ts, kk, keys, ttl

def no_warming(ts, kk, ttl, nk):
    exp = [None] * nk; hits = 0; miss_flag = bytearray(len(ts))
    for i, (t, k) in enumerate(zip(ts, kk)):
        e = exp[k]
        if e is not None and e > t:
            hits += 1
        else:
            exp[k] = t + ttl[k]; miss_flag[i] = 1
    return hits, len(ts) - hits, miss_flag

def oracle(ts, kk, ttl, nk, top_n, tick=5000):
    times = [[] for _ in range(nk)]
    for t, k in zip(ts, kk):
        times[k].append(t)
    exp = [None] * nk; hits = 0; fetches = 0; warms = 0
    n = len(ts)
    next_tick = (ts[0] // tick) * tick
    if next_tick < ts[0]:
        next_tick += tick
    for i in range(n):
        t = ts[i]
        while next_tick < t:
            now = next_tick; next_tick += tick
            seen = set(); picks = []
            j = i
            while j < n and ts[j] <= next_tick:
                k = kk[j]
                if k not in seen:
                    seen.add(k)
                    e = exp[k]
                    would_miss = e is None or e <= ts[j]
                    if ts[j] - now < ttl[k] and would_miss:
                        tl = times[k]
                        lo = bisect.bisect_right(tl, now)
                        hi = bisect.bisect_left(tl, now + ttl[k])
                        picks.append((-(hi - lo), ts[j], k))
                j += 1
            picks.sort()
            for _, _, k in picks[:top_n]:
                exp[k] = now + ttl[k]; warms += 1
        k = kk[i]; e = exp[k]
        if e is not None and e > t:
            hits += 1
        else:
            exp[k] = t + ttl[k]; fetches += 1
    return hits, fetches + warms, warms

def sim_key(times, ivs, ttl):
    """Refresh-ahead in the merged intervals ivs (sorted, disjoint [a,b)): fetch at a if no
    live copy, re-fetch at each expiry < b. Returns (hits, fetches)."""
    exp = -1 << 62; hits = 0; fetches = 0; j = 0; m = len(ivs)
    def run(a, b, upto):  # refreshes in [a, b) up to time upto (inclusive)
        nonlocal exp, fetches
        if exp <= a and a <= upto:
            exp = a + ttl; fetches += 1
        lim = min(upto, b - 1)
        if exp <= lim:
            c = (lim - exp) // ttl + 1
            exp += c * ttl; fetches += c
    for t in times:
        while j < m and ivs[j][0] <= t:
            a, b = ivs[j]
            run(a, b, t)
            if b <= t:
                j += 1
            else:
                break
        if exp > t:
            hits += 1
        else:
            exp = t + ttl; fetches += 1
    while j < m:
        a, b = ivs[j]; run(a, b, b); j += 1
    return hits, fetches


def rate_policy(times, ttl, theta, W, causal):
    """Refresh at each expiry e iff lam(e)*TTL >= theta, lam from queries in
    [e-W, e) U [e+TTL, e+TTL+W) (hindsight, excluding the served span) or [e-W, e) (causal)."""
    H = 0; F = 0
    for k, tl in enumerate(times):
        T = ttl[k]; exp = None; n = len(tl)
        dur = W if causal else 2 * W
        thr = theta * dur / T  # count threshold
        for i, t in enumerate(tl):
            while exp is not None and exp <= t:
                e = exp
                c = i - bisect.bisect_left(tl, e - W, 0, i)  # queries in [e-W, e)
                if not causal:
                    a = bisect.bisect_left(tl, e + T, i); b = bisect.bisect_left(tl, e + T + W, a)
                    c += b - a
                if c >= thr:
                    exp = e + T; F += 1
                else:
                    break
            if exp is not None and exp > t:
                H += 1
            else:
                exp = t + T; F += 1
        # refreshes after the last query
        while exp is not None:
            e = exp
            c = n - bisect.bisect_left(tl, e - W)
            if c >= thr and e < tl[-1] + 2 * W:
                exp = e + T; F += 1
            else:
                break
    return H, F

def rate_bound(times, ttl, N, f0, hr0, gain_o, W, causal, label):
    lo, hi = 0.0, 64.0
    best = None
    for _ in range(22):
        mid = (lo + hi) / 2
        H, F = rate_policy(times, ttl, mid, W, causal)
        if F <= 1.3 * f0:
            hi = mid; best = (mid, H, F)
        else:
            lo = mid
    th, H, F = best
    hr = H / N
    print(f"rate  {label:14s} hit {100*hr:.2f}% fetches {F} ({F/f0:.3f}x) share {(hr-hr0)/gain_o:.3f} threshold lam*TTL>={th:.3f}")
    return hr, F / f0, (hr - hr0) / gain_o, th


def rate_policy_h(times, ttl, theta, gts, Ws=7200_000, Wv=600_000):
    """lam_k(e) = share of key k among all queries in [e-Ws, e+Ws] (served span [e, e+T)
    excluded from the key's count) x total query volume per ms in [e-Wv, e+Wv]."""
    H = 0; F = 0
    bl = bisect.bisect_left
    for k, tl in enumerate(times):
        T = ttl[k]; exp = None; n = len(tl)
        def lam_T(e, i):
            ck = (bl(tl, e + Ws, i) - bl(tl, e - Ws, 0, min(i + 1, n))) - (bl(tl, e + T, i) - bl(tl, e, i))
            call = bl(gts, e + Ws) - bl(gts, e - Ws)
            vol = (bl(gts, e + Wv) - bl(gts, e - Wv)) / (2 * Wv)
            return (ck / call if call else 0.0) * vol * T
        for i, t in enumerate(tl):
            while exp is not None and exp <= t:
                e = exp
                if lam_T(e, i) >= theta:
                    exp = e + T; F += 1
                else:
                    break
            if exp is not None and exp > t:
                H += 1
            else:
                exp = t + T; F += 1
        while exp is not None:
            e = exp
            if lam_T(e, n) >= theta and e < tl[-1] + Ws:
                exp = e + T; F += 1
            else:
                break
    return H, F

def rate_bound_h(times, ttl, gts, N, f0, hr0, gain_o, label):
    lo, hi = 0.0, 16.0
    best = None
    for _ in range(16):
        mid = (lo + hi) / 2
        H, F = rate_policy_h(times, ttl, mid, gts)
        if F <= 1.3 * f0:
            hi = mid; best = (mid, H, F)
        else:
            lo = mid
    th, H, F = best
    hr = H / N
    print(f"rate  {label:14s} hit {100*hr:.2f}% fetches {F} ({F/f0:.3f}x) share {(hr-hr0)/gain_o:.3f} threshold lam*TTL>={th:.3f}")
    return hr, F / f0, (hr - hr0) / gain_o, th

def merge(cells, L):
    cells = sorted(cells); out = []
    for c in cells:
        a, b = c * L, (c + 1) * L
        if out and out[-1][1] >= a:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out

def main():
    path, cpath = sys.argv[1], sys.argv[2]
    cfg = json.load(open(cpath))
    ts, kk, keys, ttl = load(path, cfg)
    nk = len(keys); N = len(ts)
    T0 = ts[0]; span = ts[-1] - T0
    times = [[] for _ in range(nk)]
    for t, k in zip(ts, kk):
        times[k].append(t)
    h0, f0, miss = no_warming(ts, kk, ttl, nk)
    hr0 = h0 / N
    print(f"events {N} keys {nk} span {span/3.6e6:.1f}h")
    print(f"none   hit {100*hr0:.2f}% fetches {f0}")
    ho, fo, wo = oracle(ts, kk, ttl, nk, cfg.get('top_n', 10))
    hro = ho / N
    print(f"oracle hit {100*hro:.2f}% fetches {fo} ({fo/f0:.3f}x) warms {wo}")
    gain_o = hro - hr0
    budget = 0.3 * f0
    # demand misses per key (times)
    mtimes = [[] for _ in range(nk)]
    for i in range(N):
        if miss[i]:
            mtimes[kk[i]].append(ts[i])
    base_h = [0] * nk; base_f = [0] * nk
    for k in range(nk):
        base_f[k] = len(mtimes[k]); base_h[k] = len(times[k]) - base_f[k]
    results = {}
    # align cells to the hour (epoch-based, UTC)
    for label, L in (("c 1h", 3600_000), ("d 10m", 600_000), ("e trace", None)):
        cells = []  # (priority, gain, cost, k, cell)
        if L is None:
            Lw = span + 1
            for k in range(nk):
                g = base_f[k]
                cost = Lw / ttl[k] - g
                cells.append((k, 0, g, cost, len(times[k])))
        else:
            cnt = defaultdict(int); qc = defaultdict(int)
            for k in range(nk):
                for t in mtimes[k]:
                    cnt[(k, t // L)] += 1
                for t in times[k]:
                    qc[(k, t // L)] += 1
            for (k, c), g in cnt.items():
                cost = L / ttl[k] - g
                cells.append((k, c, g, cost, qc[(k, c)]))
        def prio(x):
            k, c, g, cost, q = x
            return float('inf') if cost <= 0 else g / cost
        cells.sort(key=prio, reverse=True)
        # exact evaluation of a prefix
        def evaluate(n):
            by = defaultdict(list)
            for x in cells[:n]:
                by[x[0]].append(x[1])
            H = sum(base_h); F = sum(base_f)
            for k, cs in by.items():
                ivs = [[T0 - 1, T0 + span + 1]] if L is None else merge(cs, L)
                h, f = sim_key(times[k], ivs, ttl[k])
                H += h - base_h[k]; F += f - base_f[k]
            return H, F
        # estimated prefix, then exact binary search on the prefix length
        acc = 0; n_est = len(cells)
        for i, x in enumerate(cells):
            acc += x[3]
            if acc > budget:
                n_est = i; break
        lo, hi = 0, len(cells)
        # find largest n with F <= 1.3 f0 (monotone enough); start near estimate
        H, F = evaluate(n_est)
        if F <= 1.3 * f0:
            lo = n_est
            step = max(1, n_est // 8)
            while lo < len(cells):
                n2 = min(len(cells), lo + step)
                H2, F2 = evaluate(n2)
                if F2 <= 1.3 * f0:
                    lo = n2; step *= 2
                else:
                    hi = n2; break
        else:
            hi = n_est
        while hi - lo > 1 and hi - lo > len(cells) // 2000:
            mid = (lo + hi) // 2
            Hm, Fm = evaluate(mid)
            if Fm <= 1.3 * f0: lo = mid
            else: hi = mid
        H, F = evaluate(lo)
        hr = H / N
        share = (hr - hr0) / gain_o if gain_o > 0 else float('nan')
        last = cells[lo - 1] if lo else None
        print(f"bound {label:8s} hit {100*hr:.2f}% fetches {F} ({F/f0:.3f}x) share {share:.3f} cells {lo}/{len(cells)}")
        # where the budget goes: by module and by key popularity, and λ·TTL of chosen cells
        if lo:
            chosen = cells[:lo]
            Lw = (span + 1) if L is None else L
            lt = sorted(x[4] / Lw * ttl[x[0]] for x in chosen)
            print(f"   chosen cells λ·TTL: min {lt[0]:.2f} p10 {lt[len(lt)//10]:.2f} median {lt[len(lt)//2]:.2f};"
                  f" last ratio gain/cost {prio(last):.3f}")
            bym = defaultdict(lambda: [0, 0.0, 0])
            for x in chosen:
                m = keys[x[0]][1]; bym[m][0] += x[2]; bym[m][1] += max(x[3], 0); bym[m][2] += 1
            print("   by module (est. gain misses, est. extra fetches, cells): " +
                  ", ".join(f"{m} {v[0]}/{v[1]:.0f}/{v[2]}" for m, v in sorted(bym.items())))
            # popularity rank of chosen keys (by total queries)
            rank = sorted(range(nk), key=lambda k: -len(times[k]))
            rk = {k: r for r, k in enumerate(rank)}
            dec = [0] * 10
            for x in chosen:
                dec[min(9, rk[x[0]] * 10 // nk)] += x[2]
            tot = sum(dec) or 1
            print("   gain by key-popularity decile: " + " ".join(f"{d/tot:.2f}" for d in dec))
            # gain-curve: share reached at 1.1x, 1.2x
        results[label] = (hr, F / f0, share)
    for W, causal, lab in ((600_000, False, "f hind 10m"), (3600_000, False, "f hind 60m"),
                           (600_000, True, "g past 10m"), (3600_000, True, "g past 60m")):
        r = rate_bound(times, ttl, N, f0, hr0, gain_o, W, causal, lab)
        results[lab] = r[:3]
    r = rate_bound_h(times, ttl, ts, N, f0, hr0, gain_o, "h share*vol")
    results["h share*vol"] = r[:3]
    # misses by key popularity decile
    rank = sorted(range(nk), key=lambda k: -len(times[k]))
    dq = [0] * 10; dm = [0] * 10; dk = [0] * 10
    for r, k in enumerate(rank):
        d = min(9, r * 10 // nk)
        dq[d] += len(times[k]); dm[d] += base_f[k]; dk[d] += 1
    print("deciles of keys by queries (top first): queries% " + " ".join(f"{100*x/N:.1f}" for x in dq))
    print("                                        misses%  " + " ".join(f"{100*x/f0:.1f}" for x in dm))
    # miss types: first-ever query, after a gap >= 30 min (cold), vs re-miss soon after expiry
    first = sum(1 for k in range(nk) if times[k])
    cold = 0; near = 0
    for k in range(nk):
        tl = times[k]; mt = mtimes[k]
        prev = {}
        j = 0
        for idx, t in enumerate(tl):
            pass
        # gap before each miss to the previous query of the key
        qs = tl
        for t in mt[1:]:
            p = bisect.bisect_left(qs, t) - 1
            gap = t - qs[p] if p >= 0 else None
            if gap is None or gap >= 1800_000:
                cold += 1
            elif gap < 2 * ttl[k]:
                near += 1
    print(f"misses: first-ever {first} ({100*first/f0:.1f}%), after >=30min quiet {cold} ({100*cold/f0:.1f}%),"
          f" within 2xTTL of previous query {near} ({100*near/f0:.1f}%)")
    # bursts: tickers whose 10-min count is >= 8x their trace mean and >= 30 queries
    tq = defaultdict(list)
    for t, k in zip(ts, kk):
        tq[keys[k][0]].append(t)
    nwin = span / 600_000
    bursts = []
    gw = defaultdict(int)
    for t in ts:
        gw[(t - T0) // 600_000] += 1
    for tk, tl in tq.items():
        share = len(tl) / N
        w = defaultdict(int)
        for t in tl:
            w[(t - T0) // 600_000] += 1
        hot = sorted(c for c, v in w.items() if v >= 30 and v >= 5 * share * gw[c])
        # group consecutive hot windows into bursts
        for c in hot:
            if bursts and bursts[-1][0] == tk and c - bursts[-1][2] <= 2:
                bursts[-1][2] = c
            else:
                bursts.append([tk, c, c])
    bm = 0; bfirst = 0; bq = 0
    for tk, c0, c1 in bursts:
        a = T0 + (c0 - 1) * 600_000; b = T0 + (c1 + 2) * 600_000  # one window margin each side
        for k in range(nk):
            if keys[k][0] != tk: continue
            lo = bisect.bisect_left(times[k], a); hi = bisect.bisect_left(times[k], b)
            bq += hi - lo
            mlo = bisect.bisect_left(mtimes[k], a); mhi = bisect.bisect_left(mtimes[k], b)
            bm += mhi - mlo
            if mhi > mlo:
                bfirst += 1
    if bursts:
        print(f"bursts detected {len(bursts)}: queries {bq}, misses {bm} ({100*bm/f0:.1f}% of all misses),"
              f" first query of a module in a burst {bfirst} ({100*bfirst/max(bm,1):.1f}% of burst misses)")
    gain_pts = 100 * gain_o
    print(f"SUMMARY none {100*hr0:.2f} oracle {100*hro:.2f} gain {gain_pts:.2f}pts | " +
          " | ".join(f"{l}: {100*v[0]:.2f}% {v[1]:.3f}x share {v[2]:.3f}" for l, v in results.items()))

main()
