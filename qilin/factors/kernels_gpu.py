"""CuPy kernels behind :mod:`qilin.factors.ops` and :mod:`qilin.factors.indicators`.

CuPy is imported lazily, inside the functions, so this module imports on machines without a
GPU. The time-series kernels run one CUDA thread per column over a *compressed* copy of the
panel: the finite observations of each column are moved to the top of that column (with
array operations), the thread loops over them exactly like the numba core in
:mod:`qilin.factors.kernels_cpu` (same names, same statements), and the results are scattered
back to the rows they came from.

Examples
--------
>>> from qilin.factors import kernels_gpu
>>> "ts1_kernel" in kernels_gpu.CUDA_SOURCE
True
"""

from __future__ import annotations

import functools
from typing import Any

from qilin.backend import array_module
from qilin.factors import kernels_cpu as kc

_THREADS = 128

_CODES = "\n".join(
    f"#define {name} {getattr(kc, name)}"
    for name in dir(kc)
    if name.startswith(("TS_", "IND_")) and isinstance(getattr(kc, name), int)
)

_INDICATOR_SOURCE = r"""
// ---------------------------------------------------------------------------------------
// indicators (mirror kernels_cpu._*_core_nb); x/res/tmp rows are column-strided by s
// ---------------------------------------------------------------------------------------
__device__ double true_range(double high, double low, double prev_close) {
    double r = high - low;
    double a = fabs(high - prev_close);
    if (a > r) r = a;
    double b = fabs(low - prev_close);
    if (b > r) r = b;
    return r;
}

__device__ void multi_ema_core(const double* x, double* res, double* tmp0, double* tmp1,
                               double* tmp2, long long n, long long s, int p, int depth) {
    double* tmp[3] = {tmp0, tmp1, tmp2};
    ema_core(x, tmp[0], n, s, p, p - 1);
    for (int k = 1; k < depth; k++) {
        long long off = (long long)k * (p - 1);
        if (off >= n) return;
        ema_core(tmp[k - 1] + off * s, tmp[k] + off * s, n - off, s, p, p - 1);
    }
    for (long long t = (long long)depth * (p - 1); t < n; t++) {
        if (depth == 1) AT(res, t) = AT(tmp[0], t);
        else if (depth == 2) AT(res, t) = 2.0 * AT(tmp[0], t) - AT(tmp[1], t);
        else AT(res, t) = 3.0 * AT(tmp[0], t) - 3.0 * AT(tmp[1], t) + AT(tmp[2], t);
    }
}

__device__ void macd_core(const double* x, double* res, double* tmp0, double* tmp1,
                          double* tmp2, long long n, long long s, int fast, int slow,
                          int signal, int which) {
    if (slow < fast) { int sw = fast; fast = slow; slow = sw; }
    ema_core(x, tmp0, n, s, fast, slow - 1);
    ema_core(x, tmp1, n, s, slow, slow - 1);
    for (long long t = slow - 1; t < n; t++) AT(tmp2, t) = AT(tmp0, t) - AT(tmp1, t);
    if (slow - 1 >= n) return;
    long long off = slow - 1;
    ema_core(tmp2 + off * s, tmp1 + off * s, n - off, s, signal, signal - 1);
    for (long long t = slow + signal - 2; t < n; t++) {
        if (which == IND_MACD) AT(res, t) = AT(tmp2, t);
        else if (which == IND_MACD_SIGNAL) AT(res, t) = AT(tmp1, t);
        else AT(res, t) = AT(tmp2, t) - AT(tmp1, t);
    }
}

__device__ void rsi_core(const double* x, double* res, long long n, long long s, int p) {
    if (n <= p) return;
    double gain = 0.0, loss = 0.0;
    for (long long t = 1; t < p + 1; t++) {
        double d = AT(x, t) - AT(x, t - 1);
        if (d < 0) loss -= d; else gain += d;
    }
    loss /= p;
    gain /= p;
    double total = gain + loss;
    AT(res, p) = TA_IS_ZERO(total) ? 0.0 : 100.0 * (gain / total);
    for (long long t = p + 1; t < n; t++) {
        double d = AT(x, t) - AT(x, t - 1);
        loss *= p - 1;
        gain *= p - 1;
        if (d < 0) loss -= d; else gain += d;
        loss /= p;
        gain /= p;
        total = gain + loss;
        AT(res, t) = TA_IS_ZERO(total) ? 0.0 : 100.0 * (gain / total);
    }
}

__device__ void bbands_core(const double* x, double* res, double* tmp0, double* tmp1,
                            long long n, long long s, int p, double nbdev, int which) {
    sum_core(x, tmp0, n, s, p, true);
    moments_core(x, tmp1, n, s, p, TS_VAR, 0.0);
    for (long long t = p - 1; t < n; t++) {
        double var = AT(tmp1, t);
        double sd = var >= TA_EPSILON ? sqrt(var) : 0.0;
        if (which == IND_BBANDS_UPPER) AT(res, t) = AT(tmp0, t) + nbdev * sd;
        else if (which == IND_BBANDS_MIDDLE) AT(res, t) = AT(tmp0, t);
        else AT(res, t) = AT(tmp0, t) - nbdev * sd;
    }
}

__device__ void atr_core(const double* high, const double* low, const double* close,
                         double* res, long long n, long long s, int p, bool normalised) {
    if (n <= p) return;
    double atr = 0.0;
    for (long long t = 1; t < p + 1; t++) {
        atr += true_range(AT(high, t), AT(low, t), AT(close, t - 1));
    }
    atr /= p;
    for (long long t = p; t < n; t++) {
        if (t > p) {
            atr *= p - 1;
            atr += true_range(AT(high, t), AT(low, t), AT(close, t - 1));
            atr /= p;
        }
        if (!normalised) AT(res, t) = atr;
        else if (AT(close, t) != 0.0) AT(res, t) = (atr / AT(close, t)) * 100.0;
        else AT(res, t) = 0.0;
    }
}

__device__ void cci_core(const double* high, const double* low, const double* close,
                         double* res, double* tmp0, long long n, long long s, int p) {
    for (long long t = 0; t < n; t++) AT(tmp0, t) = (AT(high, t) + AT(low, t) + AT(close, t)) / 3.0;
    for (long long t = p - 1; t < n; t++) {
        double avg = window_mean(tmp0, s, t - p + 1, t + 1);
        double dev = 0.0;
        for (long long i = t - p + 1; i < t + 1; i++) dev += fabs(AT(tmp0, i) - avg);
        double diff = AT(tmp0, t) - avg;
        if (diff != 0.0 && dev != 0.0) AT(res, t) = diff / (0.015 * (dev / p));
        else AT(res, t) = 0.0;
    }
}

__device__ void window_extremes(const double* high, const double* low, long long s,
                                long long start, long long stop, double* hh, double* ll) {
    *hh = AT(high, start);
    *ll = AT(low, start);
    for (long long i = start + 1; i < stop; i++) {
        if (AT(high, i) > *hh) *hh = AT(high, i);
        if (AT(low, i) < *ll) *ll = AT(low, i);
    }
}

__device__ void willr_core(const double* high, const double* low, const double* close,
                           double* res, long long n, long long s, int p) {
    for (long long t = p - 1; t < n; t++) {
        double hh, ll;
        window_extremes(high, low, s, t - p + 1, t + 1, &hh, &ll);
        double diff = (hh - ll) / (-100.0);
        AT(res, t) = diff != 0.0 ? (hh - AT(close, t)) / diff : 0.0;
    }
}

__device__ void stoch_core(const double* high, const double* low, const double* close,
                           double* res, double* tmp0, double* tmp1, long long n, long long s,
                           int fastk, int slowk, int slowd, int which) {
    for (long long t = fastk - 1; t < n; t++) {
        double hh, ll;
        window_extremes(high, low, s, t - fastk + 1, t + 1, &hh, &ll);
        double diff = (hh - ll) / 100.0;
        AT(tmp0, t) = diff != 0.0 ? (AT(close, t) - ll) / diff : 0.0;
    }
    long long k_start = fastk + slowk - 2;
    for (long long t = k_start; t < n; t++) {
        AT(tmp1, t) = window_mean(tmp0, s, t - slowk + 1, t + 1);
    }
    long long first = k_start + slowd - 1;
    for (long long t = first; t < n; t++) {
        if (which == IND_STOCH_K) AT(res, t) = AT(tmp1, t);
        else AT(res, t) = window_mean(tmp1, s, t - slowd + 1, t + 1);
    }
}

__device__ void mfi_core(const double* high, const double* low, const double* close,
                         const double* volume, double* res, double* tmp0, double* tmp1,
                         long long n, long long s, int p) {
    double prev = n > 0 ? (AT(high, 0) + AT(low, 0) + AT(close, 0)) / 3.0 : 0.0;
    for (long long t = 1; t < n; t++) {
        double tp = (AT(high, t) + AT(low, t) + AT(close, t)) / 3.0;
        double d = tp - prev;
        bool flat = fabs(d) <= MFI_DEAD_ZONE * (fabs(tp) + fabs(prev));
        prev = tp;
        double mf = flat ? 0.0 : tp * AT(volume, t);
        AT(tmp0, t) = d < 0.0 ? 0.0 : mf;
        AT(tmp1, t) = d < 0.0 ? mf : 0.0;
    }
    for (long long t = p; t < n; t++) {
        double pos = 0.0, neg = 0.0;
        for (long long i = t - p + 1; i < t + 1; i++) {
            pos += AT(tmp0, i);
            neg += AT(tmp1, i);
        }
        double total = pos + neg;
        if (total <= 0.0) AT(res, t) = 0.0;
        else AT(res, t) = 100.0 * (fmin(fmax(pos, 0.0), total) / total);
    }
}

__device__ void obv_core(const double* close, const double* volume, double* res, long long n,
                         long long s) {
    if (n == 0) return;
    double obv = AT(volume, 0);
    AT(res, 0) = obv;
    for (long long t = 1; t < n; t++) {
        if (AT(close, t) > AT(close, t - 1)) obv += AT(volume, t);
        else if (AT(close, t) < AT(close, t - 1)) obv -= AT(volume, t);
        AT(res, t) = obv;
    }
}

__device__ void roc_core(const double* x, double* res, long long n, long long s, int p) {
    for (long long t = p; t < n; t++) {
        double prev = AT(x, t - p);
        AT(res, t) = prev != 0.0 ? ((AT(x, t) / prev) - 1.0) * 100.0 : 0.0;
    }
}

__device__ void dm_step(const double* high, const double* low, long long s, long long t,
                        double* dp, double* dm) {
    double diff_p = AT(high, t) - AT(high, t - 1);
    double diff_m = AT(low, t - 1) - AT(low, t);
    *dp = 0.0;
    *dm = 0.0;
    if (diff_m > 0 && diff_p < diff_m) *dm = diff_m;
    else if (diff_p > 0 && diff_p > diff_m) *dp = diff_p;
}

__device__ double dx_value(double plus_dm, double minus_dm, double tr) {
    if (TA_IS_ZERO(tr)) return -1.0;
    double minus_di = 100.0 * (minus_dm / tr);
    double plus_di = 100.0 * (plus_dm / tr);
    double total = minus_di + plus_di;
    if (TA_IS_ZERO(total)) return -1.0;
    return 100.0 * (fabs(minus_di - plus_di) / total);
}

__device__ void adx_core(const double* high, const double* low, const double* close,
                         double* res, long long n, long long s, int p) {
    if (n <= 2 * p - 1) return;
    double plus_dm = 0.0, minus_dm = 0.0, tr = 0.0, dp, dm;
    for (long long t = 1; t < p; t++) {
        dm_step(high, low, s, t, &dp, &dm);
        plus_dm += dp;
        minus_dm += dm;
        tr += true_range(AT(high, t), AT(low, t), AT(close, t - 1));
    }
    double sum_dx = 0.0;
    for (long long t = p; t < 2 * p; t++) {
        dm_step(high, low, s, t, &dp, &dm);
        minus_dm -= minus_dm / p;
        plus_dm -= plus_dm / p;
        minus_dm += dm;
        plus_dm += dp;
        tr = tr - (tr / p) + true_range(AT(high, t), AT(low, t), AT(close, t - 1));
        double dx = dx_value(plus_dm, minus_dm, tr);
        if (dx >= 0.0) sum_dx += dx;
    }
    double adx = sum_dx / p;
    AT(res, 2 * p - 1) = adx;
    for (long long t = 2 * p; t < n; t++) {
        dm_step(high, low, s, t, &dp, &dm);
        minus_dm -= minus_dm / p;
        plus_dm -= plus_dm / p;
        minus_dm += dm;
        plus_dm += dp;
        tr = tr - (tr / p) + true_range(AT(high, t), AT(low, t), AT(close, t - 1));
        double dx = dx_value(plus_dm, minus_dm, tr);
        if (dx >= 0.0) adx = ((adx * (p - 1)) + dx) / p;
        AT(res, t) = adx;
    }
}

__device__ void vwap_core(const double* high, const double* low, const double* close,
                          const double* volume, double* res, long long n, long long s, int p) {
    for (long long t = p - 1; t < n; t++) {
        double pv = 0.0, vol = 0.0;
        for (long long i = t - p + 1; i < t + 1; i++) {
            pv += (AT(high, i) + AT(low, i) + AT(close, i)) / 3.0 * AT(volume, i);
            vol += AT(volume, i);
        }
        if (vol != 0.0) AT(res, t) = pv / vol;
    }
}

__global__ void ind_kernel(const double* hc, const double* lc, const double* cc,
                           const double* vc, const long long* nvalid, double* res,
                           double* tmp, long long T, long long N, int op, int p1, int p2,
                           int p3, double f) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    long long s = N;
    long long n = nvalid[j];
    const double* high = hc + j;
    const double* low = lc + j;
    const double* close = cc + j;
    const double* volume = vc + j;
    double* r = res + j;
    double* t0 = tmp + j;
    double* t1 = tmp + T * N + j;
    double* t2 = tmp + 2 * T * N + j;
    if (op == IND_SMA) sum_core(close, r, n, s, p1, true);
    else if (op == IND_EMA) multi_ema_core(close, r, t0, t1, t2, n, s, p1, 1);
    else if (op == IND_WMA) linear_core(close, r, n, s, p1, TS_WMA);
    else if (op == IND_DEMA) multi_ema_core(close, r, t0, t1, t2, n, s, p1, 2);
    else if (op == IND_TEMA) multi_ema_core(close, r, t0, t1, t2, n, s, p1, 3);
    else if (op <= IND_MACD_HIST) macd_core(close, r, t0, t1, t2, n, s, p1, p2, p3, op);
    else if (op == IND_RSI) rsi_core(close, r, n, s, p1);
    else if (op <= IND_BBANDS_LOWER) bbands_core(close, r, t0, t1, n, s, p1, f, op);
    else if (op <= IND_NATR) atr_core(high, low, close, r, n, s, p1, op == IND_NATR);
    else if (op == IND_CCI) cci_core(high, low, close, r, t0, n, s, p1);
    else if (op == IND_WILLR) willr_core(high, low, close, r, n, s, p1);
    else if (op == IND_MFI) mfi_core(high, low, close, volume, r, t0, t1, n, s, p1);
    else if (op == IND_OBV) obv_core(close, volume, r, n, s);
    else if (op == IND_ROC) roc_core(close, r, n, s, p1);
    else if (op <= IND_STOCH_D) stoch_core(high, low, close, r, t0, t1, n, s, p1, p2, p3, op);
    else if (op == IND_ADX) adx_core(high, low, close, r, n, s, p1);
    else vwap_core(high, low, close, volume, r, n, s, p1);
}
"""

CUDA_SOURCE = (
    _CODES
    + r"""
#define QNAN __longlong_as_double(0x7ff8000000000000ULL)
#define TA_EPSILON 1e-8
#define MFI_DEAD_ZONE 1e-14
#define TA_IS_ZERO(v) (((-TA_EPSILON) < (v)) && ((v) < TA_EPSILON))
// column-strided access: element t of this thread's column
#define AT(a, t) a[(long long)(t) * s]

extern "C" {

__device__ double window_mean(const double* x, long long s, long long start, long long stop) {
    double acc = 0.0;
    for (long long i = start; i < stop; i++) acc += AT(x, i);
    return acc / (double)(stop - start);
}

__device__ long long bisect_left(const double* buf, long long s, long long m, double v) {
    long long lo = 0, hi = m;
    while (lo < hi) {
        long long mid = (lo + hi) / 2;
        if (AT(buf, mid) < v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

__device__ long long bisect_right(const double* buf, long long s, long long m, double v) {
    long long lo = 0, hi = m;
    while (lo < hi) {
        long long mid = (lo + hi) / 2;
        if (AT(buf, mid) <= v) lo = mid + 1; else hi = mid;
    }
    return lo;
}

__device__ void sum_core(const double* x, double* res, long long n, long long s, int w,
                         bool as_mean) {
    double acc = 0.0;
    int since = 0;
    for (long long t = w - 1; t < n; t++) {
        bool exact = since == 0;
        since = since + 1 < w ? since + 1 : 0;
        if (exact) {
            acc = 0.0;
            for (long long i = t - w + 1; i < t + 1; i++) acc += AT(x, i);
        } else {
            acc += AT(x, t) - AT(x, t - w);
        }
        AT(res, t) = as_mean ? acc / w : acc;
    }
}

__device__ double moment_stat(double s1, double s2, double s3, double s4, int w, int op,
                              double ddof, bool constant) {
    double n = (double)w;
    if (op == TS_VAR || op == TS_STD) {
        if (n - ddof <= 0) return QNAN;
        double ss = s2 - s1 * s1 / n;
        if (constant || ss < 0.0) ss = 0.0;
        double v = ss / (n - ddof);
        return op == TS_STD ? sqrt(v) : v;
    }
    double a = s1 / n;
    double b = s2 / n - a * a;
    if (constant || b <= 1e-14) return QNAN;
    double c = s3 / n - a * a * a - 3.0 * a * b;
    if (op == TS_SKEW) {
        if (w < 3) return QNAN;
        double r = sqrt(b);
        return (sqrt(n * (n - 1.0)) * c) / ((n - 2.0) * r * r * r);
    }
    if (w < 4) return QNAN;
    double d = s4 / n - a * a * a * a - 6.0 * b * a * a - 4.0 * c * a;
    double k = (n * n - 1.0) * d / (b * b) - 3.0 * ((n - 1.0) * (n - 1.0));
    return k / ((n - 2.0) * (n - 3.0));
}

__device__ void moments_core(const double* x, double* res, long long n, long long s, int w,
                             int op, double ddof) {
    double c = 0.0, s1 = 0.0, s2 = 0.0, s3 = 0.0, s4 = 0.0;
    long long run = 0;
    int since = 0;
    for (long long t = 0; t < n; t++) {
        if (t > 0 && AT(x, t) == AT(x, t - 1)) run += 1; else run = 1;
        if (t < w - 1) continue;
        bool exact = since == 0;
        since = since + 1 < w ? since + 1 : 0;
        if (exact) {
            c = window_mean(x, s, t - w + 1, t + 1);
            s1 = 0.0; s2 = 0.0; s3 = 0.0; s4 = 0.0;
            for (long long i = t - w + 1; i < t + 1; i++) {
                double d = AT(x, i) - c;
                double d2 = d * d;
                s1 += d; s2 += d2; s3 += d2 * d; s4 += d2 * d2;
            }
        } else {
            double d = AT(x, t) - c;
            double e = AT(x, t - w) - c;
            double d2 = d * d;
            double e2 = e * e;
            s1 += d - e; s2 += d2 - e2; s3 += d2 * d - e2 * e; s4 += d2 * d2 - e2 * e2;
        }
        AT(res, t) = moment_stat(s1, s2, s3, s4, w, op, ddof, run >= w);
    }
}

__device__ void minmax_core(const double* x, double* res, long long n, long long s, int w,
                            int op, long long* pos_after, double* value_after) {
    double sign = (op == TS_MAX || op == TS_ARGMAX) ? 1.0 : -1.0;
    for (long long start = 0; start < n; start += w) {
        long long best = (start + w < n ? start + w : n) - 1;
        double top = sign * AT(x, best);
        for (long long i = best; i > start - 1; i--) {
            double v = sign * AT(x, i);
            if (v >= top) { top = v; best = i; }
            AT(pos_after, i) = best;
            AT(value_after, i) = top;
        }
    }
    long long head = 0;
    double head_top = 0.0;
    int since = 0;
    for (long long t = 0; t < n; t++) {
        double v = sign * AT(x, t);
        if (since == 0 || v > head_top) { head = t; head_top = v; }
        since = since + 1 < w ? since + 1 : 0;
        if (t < w - 1) continue;
        long long st = t - w + 1;
        long long best = AT(value_after, st) >= head_top ? AT(pos_after, st) : head;
        if (op == TS_MAX || op == TS_MIN) AT(res, t) = AT(x, best);
        else AT(res, t) = (double)(best - st + 1);
    }
}

__device__ void rank_core(const double* x, double* res, long long n, long long s, int w) {
    for (long long t = w - 1; t < n; t++) {
        double v = AT(x, t);
        long long below = 0, not_above = 0;
        for (long long i = t - w + 1; i < t + 1; i++) {
            below += AT(x, i) < v;
            not_above += AT(x, i) <= v;
        }
        AT(res, t) = (below + not_above + 1.0) / (2.0 * w);
    }
}

__device__ void quantile_core(const double* x, double* res, long long n, long long s, int w,
                              double q, double* buf) {
    long long m = 0;
    for (long long t = 0; t < n; t++) {
        double v = AT(x, t);
        if (t < w) {
            long long k = bisect_right(buf, s, m, v);
            for (long long i = m; i > k; i--) AT(buf, i) = AT(buf, i - 1);
            AT(buf, k) = v;
            m += 1;
        } else {
            long long k = bisect_left(buf, s, m, AT(x, t - w));
            while (k + 1 < m && AT(buf, k + 1) < v) { AT(buf, k) = AT(buf, k + 1); k += 1; }
            while (k > 0 && AT(buf, k - 1) > v) { AT(buf, k) = AT(buf, k - 1); k -= 1; }
            AT(buf, k) = v;
        }
        if (t < w - 1) continue;
        double pos = q * (w - 1);
        long long lo = (long long)pos;
        if (lo >= w - 1) AT(res, t) = AT(buf, w - 1);
        else if (pos == (double)lo) AT(res, t) = AT(buf, lo);
        else AT(res, t) = AT(buf, lo) + (AT(buf, lo + 1) - AT(buf, lo)) * (pos - lo);
    }
}

__device__ void linear_core(const double* x, double* res, long long n, long long s, int w,
                            int op) {
    double xbar = (w + 1.0) / 2.0;
    double sxx = w * ((double)w * w - 1.0) / 12.0;
    double den = w * (w + 1.0) / 2.0;
    double c = 0.0, sy = 0.0, siy = 0.0, syy = 0.0;
    long long run = 0;
    int since = 0;
    for (long long t = 0; t < n; t++) {
        if (t > 0 && AT(x, t) == AT(x, t - 1)) run += 1; else run = 1;
        if (t < w - 1) continue;
        bool exact = since == 0;
        since = since + 1 < w ? since + 1 : 0;
        if (exact) {
            c = window_mean(x, s, t - w + 1, t + 1);
            sy = 0.0; siy = 0.0; syy = 0.0;
            for (long long i = t - w + 1; i < t + 1; i++) {
                double d = AT(x, i) - c;
                sy += d;
                siy += (double)(i - t + w) * d;
                syy += d * d;
            }
        } else {
            double d = AT(x, t) - c;
            double e = AT(x, t - w) - c;
            siy += w * d - sy;
            sy += d - e;
            syy += d * d - e * e;
        }
        if (op == TS_WMA) {
            AT(res, t) = c + siy / den;
            continue;
        }
        if (sxx <= 0.0) continue;
        double sxy = siy - xbar * sy;
        double slope = sxy / sxx;
        if (op == TS_SLOPE) {
            AT(res, t) = slope;
        } else if (op == TS_RESI) {
            AT(res, t) = (AT(x, t) - c) - (sy / w + slope * (w - xbar));
        } else {
            double vyy = syy - sy * sy / w;
            if (run < w && vyy > 0.0) AT(res, t) = sxy * sxy / (sxx * vyy);
        }
    }
}

__device__ void ema_core(const double* x, double* res, long long n, long long s, int span,
                         long long start) {
    if (start >= n || start < span - 1) return;
    double k = 2.0 / (span + 1.0);
    double e = window_mean(x, s, start - span + 1, start + 1);
    AT(res, start) = e;
    for (long long t = start + 1; t < n; t++) {
        e = (AT(x, t) - e) * k + e;
        AT(res, t) = e;
    }
}

__device__ void shift_core(const double* x, double* res, long long n, long long s, int d,
                           int op) {
    for (long long t = d; t < n; t++) {
        double prev = AT(x, t - d);
        if (op == TS_DELAY) AT(res, t) = prev;
        else if (op == TS_DELTA) AT(res, t) = AT(x, t) - prev;
        else if (prev != 0.0) AT(res, t) = AT(x, t) / prev - 1.0;
    }
}

__device__ void count_core(const double* x, double* res, long long n, long long s, int w) {
    long long cnt = 0;
    for (long long t = 0; t < n; t++) {
        if (AT(x, t) != 0.0) cnt += 1;
        if (t >= w && AT(x, t - w) != 0.0) cnt -= 1;
        if (t >= w - 1) AT(res, t) = (double)cnt;
    }
}

__device__ void mad_core(const double* x, double* res, long long n, long long s, int w) {
    for (long long t = w - 1; t < n; t++) {
        double avg = window_mean(x, s, t - w + 1, t + 1);
        double dev = 0.0;
        for (long long i = t - w + 1; i < t + 1; i++) dev += fabs(AT(x, i) - avg);
        AT(res, t) = dev / w;
    }
}

__global__ void ts1_kernel(const double* comp, const long long* nvalid, double* res,
                           long long* ibuf, double* fbuf, long long N, int op, int w,
                           double p) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    long long s = N;
    const double* x = comp + j;
    double* r = res + j;
    long long n = nvalid[j];
    if (op == TS_SUM || op == TS_MEAN) sum_core(x, r, n, s, w, op == TS_MEAN);
    else if (op <= TS_KURT) moments_core(x, r, n, s, w, op, p);
    else if (op <= TS_ARGMIN) minmax_core(x, r, n, s, w, op, ibuf + j, fbuf + j);
    else if (op == TS_RANK) rank_core(x, r, n, s, w);
    else if (op == TS_QUANTILE) quantile_core(x, r, n, s, w, p, fbuf + j);
    else if (op <= TS_WMA) linear_core(x, r, n, s, w, op);
    else if (op == TS_EMA) ema_core(x, r, n, s, w, w - 1);
    else if (op <= TS_PCT_CHANGE) shift_core(x, r, n, s, w, op);
    else if (op == TS_COUNT) count_core(x, r, n, s, w);
    else mad_core(x, r, n, s, w);
}

__global__ void ts2_kernel(const double* xc, const double* yc, const long long* nvalid,
                           double* res, long long N, int op, int w) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= N) return;
    long long s = N;
    const double* x = xc + j;
    const double* y = yc + j;
    double* r = res + j;
    long long n = nvalid[j];
    double cx = 0.0, cy = 0.0, sx = 0.0, sy = 0.0, sxx = 0.0, syy = 0.0, sxy = 0.0;
    long long run_x = 0, run_y = 0;
    int since = 0;
    for (long long t = 0; t < n; t++) {
        if (t > 0 && AT(x, t) == AT(x, t - 1)) run_x += 1; else run_x = 1;
        if (t > 0 && AT(y, t) == AT(y, t - 1)) run_y += 1; else run_y = 1;
        if (t < w - 1) continue;
        bool exact = since == 0;
        since = since + 1 < w ? since + 1 : 0;
        if (exact) {
            cx = window_mean(x, s, t - w + 1, t + 1);
            cy = window_mean(y, s, t - w + 1, t + 1);
            sx = 0.0; sy = 0.0; sxx = 0.0; syy = 0.0; sxy = 0.0;
            for (long long i = t - w + 1; i < t + 1; i++) {
                double dx = AT(x, i) - cx;
                double dy = AT(y, i) - cy;
                sx += dx; sy += dy; sxx += dx * dx; syy += dy * dy; sxy += dx * dy;
            }
        } else {
            double dx = AT(x, t) - cx;
            double dy = AT(y, t) - cy;
            double ex = AT(x, t - w) - cx;
            double ey = AT(y, t - w) - cy;
            sx += dx - ex; sy += dy - ey;
            sxx += dx * dx - ex * ex; syy += dy * dy - ey * ey; sxy += dx * dy - ex * ey;
        }
        if (w < 2) continue;
        double cov = sxy - sx * sy / w;
        if (op == TS_COV) {
            AT(r, t) = cov / (w - 1.0);
            continue;
        }
        double vx = sxx - sx * sx / w;
        double vy = syy - sy * sy / w;
        if (run_x >= w || run_y >= w || vx <= 0.0 || vy <= 0.0) continue;
        AT(r, t) = cov / sqrt(vx * vy);
    }
}

// cs_rank: one thread per element, binary search in its sorted row (finite values first).
__global__ void cs_rank_kernel(const double* x, const double* srt, const long long* nrow,
                               double* out, long long R, long long N) {
    long long k = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= R * N) return;
    long long i = k / N;
    long long m = nrow[i];
    double v = x[k];
    if (m < 2 || !isfinite(v)) { out[k] = QNAN; return; }
    const double* row = srt + i * N;
    long long s = 1;
    long long left = bisect_left(row, s, m, v);
    long long right = bisect_right(row, s, m, v);
    out[k] = (left + right + 1.0) / (2.0 * m);
}
"""
    + _INDICATOR_SOURCE
    + '\n}  // extern "C"\n'
)


@functools.cache
def _module() -> Any:
    import cupy as cp  # type: ignore[import-not-found]

    return cp.RawModule(code=CUDA_SOURCE, options=("-std=c++14",))


def _kernel(name: str) -> Any:
    return _module().get_function(name)


def compress(*arrays: Any) -> tuple[list[Any], Any, tuple[Any, Any, Any]]:
    """Move each column's rows where all ``arrays`` are finite to the top of the column.

    Works on NumPy or CuPy arrays. Returns the compressed copies (NaN below each column's
    count), the per-column counts and ``(rows, cols, pos)``: where each kept entry came
    from and the row it went to.

    Examples
    --------
    >>> import numpy as np
    >>> (c,), n, _ = compress(np.array([[1.0, np.nan], [np.nan, 2.0], [3.0, 4.0]]))
    >>> c.tolist(), n.tolist()
    ([[1.0, 2.0], [3.0, 4.0], [nan, nan]], [2, 2])
    """
    xp = array_module(*arrays)
    valid = xp.isfinite(arrays[0])
    for a in arrays[1:]:
        valid &= xp.isfinite(a)
    pos = xp.cumsum(valid, axis=0, dtype=xp.int64) - 1
    rows, cols = xp.nonzero(valid)
    prow = pos[rows, cols]
    comps = []
    for a in arrays:
        c = xp.full(a.shape, xp.nan, dtype=xp.float64)
        c[prow, cols] = a[rows, cols]
        comps.append(c)
    nvalid = valid.sum(axis=0, dtype=xp.int64)
    return comps, nvalid, (rows, cols, prow)


def scatter(res: Any, where: tuple[Any, Any, Any]) -> Any:
    """Inverse of :func:`compress` for one result array.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[1.0], [np.nan], [3.0]])
    >>> (c,), _, where = compress(x)
    >>> scatter(c * 10, where).tolist()
    [[10.0], [nan], [30.0]]
    """
    xp = array_module(res)
    rows, cols, prow = where
    out = xp.full(res.shape, xp.nan, dtype=xp.float64)
    out[rows, cols] = res[prow, cols]
    return out


def _grid(n: int) -> tuple[tuple[int], tuple[int]]:
    return ((n + _THREADS - 1) // _THREADS,), (_THREADS,)


def ts1_gpu(x: Any, op: int, w: int, p: float) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.ts1_nb`."""
    import cupy as cp

    n_rows, n_cols = x.shape
    w = min(w, n_rows + 1)  # any longer window gives all-NaN too; keeps it an int32
    (comp,), nvalid, where = compress(x)
    res = cp.full((n_rows, n_cols), cp.nan, dtype=cp.float64)
    minmax = kc.TS_MAX <= op <= kc.TS_ARGMIN
    ibuf = cp.empty((n_rows + 1, n_cols) if minmax else (1, 1), dtype=cp.int64)
    f_rows = n_rows + 1 if minmax else min(w, n_rows) + 1 if op == kc.TS_QUANTILE else 1
    fbuf = cp.empty((f_rows, n_cols) if f_rows > 1 else (1, 1), dtype=cp.float64)
    _kernel("ts1_kernel")(
        *_grid(n_cols),
        (comp, nvalid, res, ibuf, fbuf, cp.int64(n_cols), cp.int32(op), cp.int32(w),
         cp.float64(p)),
    )
    return scatter(res, where)


def ts2_gpu(x: Any, y: Any, op: int, w: int) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.ts2_nb`."""
    import cupy as cp

    n_rows, n_cols = x.shape
    w = min(w, n_rows + 1)
    (xc, yc), nvalid, where = compress(x, y)
    res = cp.full((n_rows, n_cols), cp.nan, dtype=cp.float64)
    _kernel("ts2_kernel")(
        *_grid(n_cols), (xc, yc, nvalid, res, cp.int64(n_cols), cp.int32(op), cp.int32(w))
    )
    return scatter(res, where)


def cs_rank_gpu(x: Any) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.cs_rank_nb`."""
    import cupy as cp

    n_rows, n_cols = x.shape
    valid = cp.isfinite(x)
    srt = cp.ascontiguousarray(cp.sort(cp.where(valid, x, cp.inf), axis=1))
    nrow = valid.sum(axis=1, dtype=cp.int64)
    out = cp.empty((n_rows, n_cols), dtype=cp.float64)
    _kernel("cs_rank_kernel")(
        *_grid(n_rows * n_cols), (x, srt, nrow, out, cp.int64(n_rows), cp.int64(n_cols))
    )
    return out


def ind_gpu(high: Any, low: Any, close: Any, volume: Any, op: int, p1: int, p2: int, p3: int,
            f: float) -> Any:
    """GPU twin of :func:`qilin.factors.kernels_cpu.ind_nb`."""
    import cupy as cp

    n_rows, n_cols = close.shape
    p1, p2, p3 = (min(p, n_rows + 1) for p in (p1, p2, p3))
    (hc, lc, cc, vc), nvalid, where = compress(high, low, close, volume)
    res = cp.full((n_rows, n_cols), cp.nan, dtype=cp.float64)
    tmp = cp.full((3, n_rows, n_cols), cp.nan, dtype=cp.float64)
    _kernel("ind_kernel")(
        *_grid(n_cols),
        (hc, lc, cc, vc, nvalid, res, tmp, cp.int64(n_rows), cp.int64(n_cols), cp.int32(op),
         cp.int32(p1), cp.int32(p2), cp.int32(p3), cp.float64(f)),
    )
    return scatter(res, where)
