#!/usr/bin/env python3
"""Reference values for the Rust `stats` module tests (src/stats/).

Run with `python3 tests/scipy/stats_reference.py` (needs numpy and scipy).
Each printed line is `name = value`; the Rust tests paste these numbers and
name the call that produced them. The cases here must stay identical to the
fixed cases in the Rust tests.
"""

import numpy as np
from scipy import special, stats
from scipy.spatial import distance

PSI_EPSILON = 1e-4  # same floor as drift::PSI_EPSILON


def show(name, value):
    print(f"{name} = {float(value)!r}")


def proportions(counts):
    counts = np.asarray(counts, dtype=float)
    return counts / counts.sum()


def psi(ref, cur):
    # Zero proportions are replaced by PSI_EPSILON (no renormalisation),
    # exactly as drift::psi does.
    p = proportions(ref)
    q = proportions(cur)
    p = np.where(p == 0, PSI_EPSILON, p)
    q = np.where(q == 0, PSI_EPSILON, q)
    # (q - p) * ln(q / p) == rel_entr(q, p) + rel_entr(p, q)
    return np.sum(special.rel_entr(q, p) + special.rel_entr(p, q))


def positions_from_edges(edges):
    # Midpoints of interior bins; outer bins one neighbouring width beyond the
    # outermost edge (drift::bin_positions).
    e = np.asarray(edges, dtype=float)
    mids = (e[:-1] + e[1:]) / 2
    return np.concatenate(([e[0] - (e[1] - e[0])], mids, [e[-1] + (e[-1] - e[-2])]))


def weighted_std(pos, counts):
    w = np.asarray(counts, dtype=float)
    mean = np.average(pos, weights=w)
    return np.sqrt(np.average((pos - mean) ** 2, weights=w))


def ks_binned(ref, cur, pos):
    n, m = sum(ref), sum(cur)
    # Expanding the bins into samples at their positions reproduces the binned
    # CDF exactly, so ks_2samp's statistic is the binned statistic.
    d = stats.ks_2samp(np.repeat(pos, ref), np.repeat(pos, cur)).statistic
    en = n * m / (n + m)
    return d, stats.kstwobign.sf(np.sqrt(en) * d)


def chi_square_homogeneity(ref, cur):
    table = np.array([ref, cur], dtype=float)
    keep = table.sum(axis=0) > 0  # bins empty in both samples are dropped
    res = stats.chi2_contingency(table[:, keep], correction=False)
    return res.statistic, res.dof, res.pvalue


# --- drift, numeric case A -------------------------------------------------
EDGES_A = [0.0, 1.0, 2.5, 4.0, 7.0]
REF_A = [5, 30, 80, 120, 50, 15]
CUR_A = [0, 22, 60, 140, 90, 38]
POS_A = positions_from_edges(EDGES_A)

show("a_psi", psi(REF_A, CUR_A))
d, p = ks_binned(REF_A, CUR_A, POS_A)
show("a_ks_statistic", d)  # scipy.stats.ks_2samp(expanded).statistic
show("a_ks_pvalue", p)  # scipy.stats.kstwobign.sf(sqrt(n*m/(n+m)) * d)
show("a_js", distance.jensenshannon(REF_A, CUR_A, base=2))
w = stats.wasserstein_distance(POS_A, POS_A, REF_A, CUR_A)
show("a_wasserstein_raw", w)
show("a_wasserstein", w / weighted_std(POS_A, REF_A))
stat, dof, p = chi_square_homogeneity(REF_A, CUR_A)
show("a_chi2_statistic", stat)
show("a_chi2_dof", dof)
show("a_chi2_pvalue", p)

# Reference concentrated in one bin: std is zero, normalise by edge span.
REF_A0 = [0, 0, 10, 0, 0, 0]
w = stats.wasserstein_distance(POS_A, POS_A, REF_A0, CUR_A)
show("a0_wasserstein", w / (EDGES_A[-1] - EDGES_A[0]))

# Single edge: outer bins at edge -/+ 1, zero-std fallback is the position span.
w = stats.wasserstein_distance([2.0, 4.0], [2.0, 4.0], [10, 0], [7, 3])
show("single_edge_wasserstein", w / 2.0)

# --- drift, categorical case C (last bin is "other", empty in reference) ----
REF_C = [400, 300, 200, 100, 0]
CUR_C = [350, 280, 260, 80, 30]
show("c_psi", psi(REF_C, CUR_C))
show("c_js", distance.jensenshannon(REF_C, CUR_C, base=2))
stat, dof, p = chi_square_homogeneity(REF_C, CUR_C)
show("c_chi2_statistic", stat)  # scipy.stats.chi2_contingency(correction=False)
show("c_chi2_dof", dof)
show("c_chi2_pvalue", p)

# Case D: a bin empty in both samples is dropped (dof shrinks).
REF_D = [10, 0, 20, 5]
CUR_D = [12, 0, 15, 9]
stat, dof, p = chi_square_homogeneity(REF_D, CUR_D)
show("d_chi2_statistic", stat)
show("d_chi2_dof", dof)
show("d_chi2_pvalue", p)
show("d_js", distance.jensenshannon(REF_D, CUR_D, base=2))

# Strong drift: tiny p-values.
REF_E = [5000, 3000, 2000]
CUR_E = [3000, 3000, 4000]
stat, dof, p = chi_square_homogeneity(REF_E, CUR_E)
show("e_chi2_statistic", stat)
show("e_chi2_pvalue", p)
d, p = ks_binned(REF_E, CUR_E, np.arange(3.0))
show("e_ks_statistic", d)
show("e_ks_pvalue", p)

# --- Kolmogorov limiting distribution ---------------------------------------
for x in [0.05, 0.3, 0.8, 1.0, 1.17, 1.19, 1.5, 2.5, 4.0, 6.0]:
    show(f"kolmogorov_sf_{x}", stats.kstwobign.sf(x))

# --- Mann-Whitney U on binned samples ---------------------------------------
POS_M = np.arange(7.0)
CANARY_M = [3, 10, 25, 40, 30, 12, 5]
STABLE_M = [5, 18, 35, 40, 20, 6, 1]
for name, x, y in [("m", CANARY_M, STABLE_M), ("m_rev", STABLE_M, CANARY_M)]:
    r = stats.mannwhitneyu(np.repeat(POS_M, x), np.repeat(POS_M, y),
                           alternative="greater", method="asymptotic",
                           use_continuity=True)
    show(f"{name}_u", r.statistic)
    show(f"{name}_pvalue", r.pvalue)

# Heavy ties, unequal sizes.
CANARY_T = [0, 7, 1]
STABLE_T = [4, 20, 0]
r = stats.mannwhitneyu(np.repeat(np.arange(3.0), CANARY_T),
                       np.repeat(np.arange(3.0), STABLE_T),
                       alternative="greater", method="asymptotic", use_continuity=True)
show("t_u", r.statistic)
show("t_pvalue", r.pvalue)

# --- two-proportion z-test (H0: p_c - p_s <= margin), unpooled Wald SE -----
for name, ec, nc, es, ns, margin in [("prop_a", 30, 1000, 20, 1200, 0.005),
                                     ("prop_b", 30, 1000, 20, 1200, 0.0),
                                     ("prop_c", 12, 800, 40, 900, 0.01)]:
    pc, ps = ec / nc, es / ns
    se = np.sqrt(pc * (1 - pc) / nc + ps * (1 - ps) / ns)
    z = (pc - ps - margin) / se
    show(f"{name}_z", z)
    show(f"{name}_pvalue", stats.norm.sf(z))  # scipy.stats.norm.sf(z)

# --- learned quantile edges: numpy.quantile (linear, numpy's default) -------
SAMPLE = [3.1, -2.0, 0.5, 7.25, 4.0, 4.0, 1.5, 9.0, -0.75, 2.2, 6.6, 5.1]
for k, q in enumerate(np.quantile(SAMPLE, [0.25, 0.5, 0.75])):
    show(f"learned_edge_{k}", q)
show("sample_mean", np.mean(SAMPLE))
show("sample_std", np.std(SAMPLE))  # population (ddof=0)
