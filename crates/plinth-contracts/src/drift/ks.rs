//! The two-sample Kolmogorov–Smirnov test, two-sided, with the same statistic and p-value as
//! `scipy.stats.ks_2samp(a, b)` (its default `method='auto'`).
//!
//! This is a port of SciPy's algorithm (BSD-3-Clause; `scipy/stats/_stats_py.py`,
//! `_stats_pythran.py`, `_ksstats.py` and the cephes `smirnov` function):
//!
//! - exact p-value when `max(n1, n2) <= 10_000`: the lattice-path counts of Hodges
//!   (`_compute_prob_outside_square` when `n1 == n2`, the "inside method" with Viehmann's
//!   stable recursion otherwise), with the statistic rounded to a multiple of `1/lcm(n1, n2)`;
//! - otherwise the distribution of the one-sample two-sided statistic `kstwo.sf(d, round(en))`
//!   with `en = n1*n2/(n1+n2)`, computed as SciPy does by the Simard–L'Ecuyer choice among
//!   Ruben–Gambino, Durbin's matrix (Marsaglia–Tsang–Wang), Pomeranz, Pelz–Good and
//!   `2*smirnov` (Birnbaum–Tingey).
//!
//! SciPy evaluates `smirnov` in double-double arithmetic; here it is a sum of positive terms
//! evaluated in `f64` log space, whose relative error grows like `n * ln n * 2^-52` (below 1e-10
//! for `en <= 100_000`; `en` only exceeds that when both samples hold more than 200,000 values).

use super::special::{ldexp, ln_gamma};

/// Above this size `method='auto'` switches from the exact to the asymptotic p-value.
pub const MAX_EXACT_N: usize = 10_000;

/// The result of a two-sample KS test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KsResult {
    /// `sup |F1 - F2|` over the pooled sample.
    pub statistic: f64,
    /// Two-sided p-value.
    pub pvalue: f64,
    /// `exact` or `asymp`, as SciPy names the branch used.
    pub method: KsMethod,
}

/// Which p-value computation produced a [`KsResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KsMethod {
    Exact,
    Asymp,
}

/// The two-sided two-sample KS statistic and p-value of two samples, sorted ascending and free
/// of NaN. `None` when either sample is empty.
pub fn ks_2samp_sorted(a: &[f64], b: &[f64]) -> Option<KsResult> {
    let n1 = a.len();
    let n2 = b.len();
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let d = ks_statistic_sorted(a, b);
    let g = gcd(n1 as u64, n2 as u64);
    if n1.max(n2) <= MAX_EXACT_N
        && let Some((d_exact, p)) = attempt_exact(n1 as u64, n2 as u64, g, d)
    {
        return Some(KsResult {
            statistic: d_exact,
            pvalue: p.clamp(0.0, 1.0),
            method: KsMethod::Exact,
        });
    }
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let en = m * n / (m + n);
    let p = kolmogn_sf(en.round_ties_even() as u64, d);
    Some(KsResult {
        statistic: d,
        pvalue: p.clamp(0.0, 1.0),
        method: KsMethod::Asymp,
    })
}

/// `max |i/n1 - j/n2|` over the pooled values, as SciPy computes it (ECDFs evaluated with
/// `side='right'` at every pooled value).
fn ks_statistic_sorted(a: &[f64], b: &[f64]) -> f64 {
    let (n1, n2) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j) = (0usize, 0usize);
    let mut max_s = f64::NEG_INFINITY;
    let mut min_s = f64::INFINITY;
    while i < a.len() || j < b.len() {
        let v = match (a.get(i), b.get(j)) {
            (Some(&x), Some(&y)) => x.min(y),
            (Some(&x), None) => x,
            (None, Some(&y)) => y,
            (None, None) => break,
        };
        while i < a.len() && a[i] <= v {
            i += 1;
        }
        while j < b.len() && b[j] <= v {
            j += 1;
        }
        let diff = i as f64 / n1 - j as f64 / n2;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    if min_s > max_s { min_s } else { max_s }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// SciPy's `_attempt_exact_2kssamp` for `alternative='two-sided'`: the rounded statistic and
/// the exact p-value, or `None` when the computation is not usable.
fn attempt_exact(n1: u64, n2: u64, g: u64, d: f64) -> Option<(f64, f64)> {
    let lcm = (n1 / g) * n2;
    let h = (d * lcm as f64).round_ties_even() as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Some((d, 1.0));
    }
    let prob = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside_method(n1, n2, g, h)
    };
    if !prob.is_finite() || !(0.0..=1.0).contains(&prob) {
        return None;
    }
    Some((d, prob))
}

/// `Pr(D_{n,n} >= h/n)` by the alternating binomial sum in Horner form.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0f64;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0f64;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

fn floor_div(a: i64, b: i64) -> i64 {
    a.div_euclid(b)
}

fn ceil_div(a: i64, b: i64) -> i64 {
    -(-a).div_euclid(b)
}

/// The proportion of lattice paths from (0,0) to (m,n) that leave the band
/// `|x/m - y/n| < h/lcm(m,n)` (Hodges' inside method, computing 1 - p directly).
fn outer_prob_inside_method(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (mut m, mut n, g, h) = (m as i64, n as i64, g as i64, h as i64);
    if m < n {
        std::mem::swap(&mut m, &mut n);
    }
    let mg = m / g;
    let ng = n / g;
    let mut minj: i64 = 0;
    let mut maxj: i64 = ceil_div(h, mg).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for x in a.iter_mut().take(maxj as usize).skip(minj as usize) {
        *x = 0.0;
    }
    for i in 1..=m {
        let lastminj = minj;
        let lastlen = curlen;
        minj = (floor_div(ng * i - h, mg) + 1).max(0).min(n);
        maxj = ceil_div(ng * i + h, mg).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            let src = (jj + minj - lastminj) as usize;
            let prev = a.get(src).copied().unwrap_or(1.0);
            val = (prev * i as f64 + val * j as f64) / (i + j) as f64;
            if let Some(slot) = a.get_mut(jj as usize) {
                *slot = val;
            }
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            let end = (start + (lastlen - curlen) as usize).min(a.len());
            for x in a.iter_mut().take(end).skip(start) {
                *x = 1.0;
            }
        }
    }
    a.get((maxj - minj - 1) as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

// ---------------------------------------------------------------------------------------------
// kstwo: the two-sided one-sample KS distribution (SciPy `_ksstats._kolmogn`, survival side).

const E128: i64 = 128;
const LOG_2PI: f64 = 1.837_877_066_409_345_5;
const MIN_LOG: f64 = -708.0;
// The coefficients as SciPy writes them (more digits than f64 holds).
#[allow(clippy::excessive_precision)]
const STIRLING_COEFFS: [f64; 8] = [
    -2.955_065_359_477_124_183e-2,
    6.410_256_410_256_410_256_4e-3,
    -1.917_526_917_526_917_526_9e-3,
    8.417_508_417_508_417_508_4e-4,
    -5.952_380_952_380_952_381e-4,
    7.936_507_936_507_936_507_9e-4,
    -2.777_777_777_777_777_777_8e-3,
    8.333_333_333_333_333_333_3e-2,
];

fn ep128() -> f64 {
    2f64.powi(E128 as i32)
}

fn em128() -> f64 {
    2f64.powi(-(E128 as i32))
}

/// `log(n! / n^n)` by Stirling's series with `n log n` removed.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    let rn = 1.0 / n;
    let x = rn / n;
    let mut poly = 0.0;
    for c in STIRLING_COEFFS {
        poly = poly * x + c;
    }
    n.ln() / 2.0 - n + LOG_2PI / 2.0 + rn * poly
}

/// `Pr(D_n >= x)` for the two-sided one-sample statistic (SciPy `kstwo.sf(x, n)`).
pub fn kolmogn_sf(n: u64, x: f64) -> f64 {
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            let mut p = 1.0;
            for i in 1..=n {
                p *= i as f64 * (1.0 / nf) * (2.0 * t - 1.0);
            }
            p
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return (1.0 - prob).clamp(0.0, 1.0);
    }
    if t >= nf - 1.0 {
        let prob = 2.0 * (1.0 - x).powf(nf);
        return prob.clamp(0.0, 1.0);
    }
    if x >= 0.5 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let nxsquared = t * x;
    if n <= 140 {
        let cdf = if nxsquared <= 0.754_693 {
            kolmogn_dmtw_cdf(n, x)
        } else if nxsquared <= 4.0 {
            kolmogn_pomeranz_cdf(n, x)
        } else {
            return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
        };
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return (2.0 * smirnov_sf(n, x)).clamp(0.0, 1.0);
    }
    let cdf = if nxsquared >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        kolmogn_dmtw_cdf(n, x)
    } else {
        kolmogn_pelz_good_cdf(n, x)
    };
    (1.0 - cdf).clamp(0.0, 1.0)
}

fn matmul(a: &[f64], b: &[f64], m: usize) -> Vec<f64> {
    let mut c = vec![0.0; m * m];
    for i in 0..m {
        for k in 0..m {
            let aik = a[i * m + k];
            if aik == 0.0 {
                continue;
            }
            for j in 0..m {
                c[i * m + j] += aik * b[k * m + j];
            }
        }
    }
    c
}

/// `Pr(D_n <= d)` by Durbin's matrix algorithm as arranged by Marsaglia, Tsang and Wang.
fn kolmogn_dmtw_cdf(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let nd = nf * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut hm = vec![0.0f64; m * m];
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0f64; m];
    let mut fac = 1.0f64;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;
    for i in 1..m {
        for r in (i - 1)..m {
            hm[r * m + i] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[r * m] = v[r];
    }
    for c in 0..m {
        hm[(m - 1) * m + c] = v[m - 1 - c];
    }
    let mut hpwr = vec![0.0f64; m * m];
    for i in 0..m {
        hpwr[i * m + i] = 1.0;
    }
    let mut nn = n;
    let mut expnt: i64 = 0;
    let mut hexpnt: i64 = 0;
    while nn > 0 {
        if nn % 2 == 1 {
            hpwr = matmul(&hpwr, &hm, m);
            expnt += hexpnt;
        }
        hm = matmul(&hm, &hm, m);
        hexpnt *= 2;
        if hm[(k - 1) * m + (k - 1)].abs() > ep128() {
            for x in hm.iter_mut() {
                *x /= ep128();
            }
            hexpnt += E128;
        }
        nn /= 2;
    }
    let mut p = hpwr[(k - 1) * m + (k - 1)];
    for i in 1..=n {
        p = i as f64 * p / nf;
        if p.abs() < em128() {
            p *= ep128();
            expnt -= E128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    p.clamp(0.0, 1.0)
}

fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let ip1div2 = (i + 1) / 2;
        let ip1mod2 = (i + 1) % 2;
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// `Pr(D_n <= x)` by the Pomeranz recursion.
fn kolmogn_pomeranz_cdf(n: u64, x: f64) -> f64 {
    let nf = n as f64;
    let n = n as i64;
    let t = nf * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![0.0f64; npwrs];
    let mut twogpower = vec![0.0f64; npwrs];
    let mut onem2gpower = vec![0.0f64; npwrs];
    gpower[0] = 1.0;
    twogpower[0] = 1.0;
    onem2gpower[0] = 1.0;
    let mut expnt: i64 = 0;
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) =
        (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }
    let mut v0 = vec![0.0f64; npwrs];
    let mut v1 = vec![0.0f64; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s): (i64, i64) = (0, 0);
    let (mut j1, _) = pomeranz_j1j2(0, n, ll, ceilf, roundf);
    for i in 1..(2 * n + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.iter_mut().for_each(|x| *x = 0.0);
        let (nj1, j2) = pomeranz_j1j2(i, n, ll, ceilf, roundf);
        j1 = nj1;
        let pwrs = if i == 1 || i == 2 * n + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = j2 - k1 + 1;
        if ln2 > 0 {
            let start = (k1 - v0s).max(0) as usize;
            let end = (start + ln2 as usize).min(v0.len());
            let seg = &v0[start.min(end)..end];
            let pw = &pwrs[..(ln2 as usize).min(pwrs.len())];
            let conv = convolve(seg, pw);
            let conv_start = (j1 - k1).max(0) as usize;
            let conv_len = (j2 - j1 + 1).max(0) as usize;
            for idx in 0..conv_len {
                if let (Some(dst), Some(src)) = (v1.get_mut(idx), conv.get(conv_start + idx)) {
                    *dst = *src;
                }
            }
            let vmax = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < vmax && vmax < em128() {
                v1.iter_mut().for_each(|x| *x *= ep128());
                expnt -= E128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = v1.get((n - v1s).max(0) as usize).copied().unwrap_or(0.0);
    for m in 1..=n {
        if ans.abs() > ep128() {
            ans *= em128();
            expnt += E128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    ans.clamp(0.0, 1.0)
}

/// Full discrete convolution (`numpy.convolve(a, b)`).
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    out
}

/// The Pelz–Good approximation to `Pr(D_n <= x)`.
fn kolmogn_pelz_good_cdf(n: u64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let nf = n as f64;
    let sqrt2pi = (2.0 * PI).sqrt();
    let (pi2, pi4, pi6) = (PI * PI, PI.powi(4), PI.powi(6));
    let z = nf.sqrt() * x;
    let (zsquared, zthree, zfour, zsix) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let qlog = -pi2 / 8.0 / zsquared;
    if qlog < MIN_LOG {
        return 0.0;
    }
    let q = qlog.exp();
    let k1a = -zsquared;
    let k1b = pi2 / 4.0;
    let k2a = 6.0 * zsix + 2.0 * zfour;
    let k2b = (2.0 * zfour - 5.0 * zsquared) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * zsquared) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * zsquared) / 64.0;
    let k3c = pi4 * (-60.0 * zsquared + 212.0 * zfour) / 16.0;
    let k3b = pi2 * (135.0 * zfour - 96.0 * zsix) / 4.0;
    let k3a = -30.0 * zsix - 90.0 * z.powi(8);
    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (msq, mfour, msix) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * msq,
            k2a + k2b * msq + k2c * mfour,
            k3a + k3b * msq + k3c * mfour + k3d * msix,
        ];
        for (acc, c) in k.iter_mut().zip(coeffs) {
            *acc *= qpower;
            *acc += c;
        }
    }
    let div = [z, 6.0 * zfour, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (acc, dv) in k.iter_mut().zip(div) {
        *acc *= q;
        *acc *= sqrt2pi;
        *acc /= dv;
    }
    let q2 = (-pi2 / 2.0 / zsquared).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let mut k2extra = 0.0;
    let mut k3extra = 0.0;
    for kk in (1..=maxk).rev() {
        let ks = kk as f64;
        let ksq = ks * ks;
        let qp = q2.powf(ksq);
        k2extra += ksq * qp;
        let kspi = PI * ks;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksq * qp;
    }
    k2extra *= pi2 * sqrt2pi / (-36.0 * zthree);
    k[2] += k2extra;
    k3extra *= pi2 * sqrt2pi / (216.0 * zsix);
    k[3] += k3extra;
    for (i, acc) in k.iter_mut().enumerate() {
        *acc /= nf.powf(i as f64 / 2.0);
    }
    k.iter().sum()
}

/// `smirnov(n, x)`: `Pr(D+_n >= x)` for the one-sided one-sample statistic, by the
/// Birnbaum–Tingey sum (SciPy `scipy.special.smirnov`).
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    const MINLOG: f64 = -7.083_964_185_322_641e2;
    if n == 0 || !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    let nf = n as f64;
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    // floor(n*x) and its remainder, exactly.
    let prod = nf * x;
    let err = nf.mul_add(x, -prod);
    let mut nxfl = prod.floor();
    let mut alpha = (prod - nxfl) + err;
    if alpha < 0.0 {
        nxfl -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        nxfl += 1.0;
        alpha -= 1.0;
    }
    let nxfl = nxfl as i64;
    let n_i = n as i64;
    let mut n1mxfl = n_i - nxfl - i64::from(alpha != 0.0);
    if alpha == 0.0 {
        n1mxfl -= 1;
    }
    if nxfl == 0 || (nxfl == 1 && alpha == 0.0) {
        let cdf = x * (1.0 + x).powf(nf - 1.0);
        return (1.0 - cdf).clamp(0.0, 1.0);
    }
    if -2.0 * nf * x * x < MINLOG {
        return 0.0;
    }
    if nxfl >= n_i - 1 {
        return (1.0 - x).powf(nf).clamp(0.0, 1.0);
    }
    if n > 1_000_000 {
        let logp = -(6.0 * nf * x + 1.0).powi(2) / 18.0 / nf;
        return logp.exp().clamp(0.0, 1.0);
    }
    // Lower sum: x * sum_{v=0}^{n1mxfl} C(n,v) (x + v/n)^(v-1) (1 - x - v/n)^(n-v); all terms
    // are positive.
    let ln_n_fact = ln_gamma(nf + 1.0);
    let mut sum = 0.0f64;
    for v in 0..=n1mxfl.max(0) {
        let vf = v as f64;
        let t2x = (n_i - v) as f64 / nf - x;
        let t1x = vf / nf + x;
        if t2x <= 0.0 {
            continue;
        }
        let ln_c = ln_n_fact - ln_gamma(vf + 1.0) - ln_gamma(nf - vf + 1.0);
        let ln_term = ln_c + (vf - 1.0) * t1x.ln() + (nf - vf) * t2x.ln();
        let term = ln_term.exp();
        sum += term;
        if term != 0.0 && 4.0 * (n1mxfl + 1 - v) as f64 * term < f64::EPSILON * sum && v != n1mxfl {
            break;
        }
    }
    (x * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_have_pvalue_one() {
        let a = [1.0, 2.0, 3.0];
        let r = ks_2samp_sorted(&a, &a);
        assert_eq!(r.map(|r| (r.statistic, r.pvalue)), Some((0.0, 1.0)));
    }

    #[test]
    fn empty_sample_is_none() {
        assert!(ks_2samp_sorted(&[], &[1.0]).is_none());
    }

    #[test]
    fn disjoint_small_samples() {
        // scipy.stats.ks_2samp([1,2,3],[4,5,6]) -> statistic 1.0, pvalue 0.1
        let r = ks_2samp_sorted(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]);
        let r = r.map(|r| (r.statistic, r.pvalue)).unwrap_or_default();
        assert_eq!(r.0, 1.0);
        assert!((r.1 - 0.1).abs() < 1e-15);
    }
}
