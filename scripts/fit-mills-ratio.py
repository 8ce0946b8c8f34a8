#!/usr/bin/env python3
"""The polynomial behind the CPU's exact GELU (kernels/cpu/fast_math.hpp, mills_ratio).

The lower tail of the standard normal is Phi(-a) = phi(a) * m(a) for a >= 0, phi the
density and m Mills' ratio. m is smooth and falls slowly (m(0) = sqrt(pi/2), m(a) ~ 1/a),
so it is fitted here as a polynomial in t = 1 / (1 + a/4), which maps a in [0, inf) to
t in (0, 1]. The fit needs a only up to 13.5: past 13.2, phi(a) < 1.7e-38 and fast_exp
flushes it to 0, so m's value there is never seen.

The fit minimises the largest relative error (Lawson's iteration on a least-squares fit
at Chebyshev points) against m from scipy's erfcx: m(a) = sqrt(pi/2) * erfcx(a / sqrt(2)).
It prints the coefficients (lowest degree first, as fast_math.hpp lists them), the fit's
relative error in float64, and the error of the float32 evaluation as the C++ does it
(t rounded, coefficients rounded, Horner in float32). The C++ test
CpuFastMath.ExactGeluAndItsGradientAgainstTheDefinition checks the result end to end.

usage: scripts/fit-mills-ratio.py [--degree 9]   (needs numpy and scipy: Debian's python3)
"""
import argparse

import numpy as np
from scipy.special import erfcx

T_SCALE = 0.25   # t = 1 / (1 + T_SCALE * a); a power of two, so T_SCALE * a is exact
A_MAX = 13.5


def mills_ratio(a):
    return np.sqrt(np.pi / 2) * erfcx(a / np.sqrt(2))


def fit(degree, points=3000, iterations=200):
    t_min = 1 / (1 + T_SCALE * A_MAX)
    t = t_min + (1 - t_min) * 0.5 * (1 - np.cos(np.pi * (np.arange(points) + 0.5) / points))
    target = mills_ratio((1 / t - 1) / T_SCALE)
    powers = np.vander(t, degree + 1, increasing=True)
    weights = np.full(points, 1.0 / points)
    for _ in range(iterations):  # Lawson: weight up the points where the relative error is largest
        scale = weights / target
        coefficients, *_ = np.linalg.lstsq(powers * scale[:, None], target * scale, rcond=None)
        error = np.abs(powers @ coefficients - target) / target
        weights *= error
        weights /= weights.sum()
    return coefficients


def float32_error(coefficients, a):
    a32 = a.astype(np.float32)
    t = np.float32(1) / (np.float32(1) + np.float32(T_SCALE) * a32)
    value = np.full_like(t, np.float32(coefficients[-1]))
    for c in coefficients[-2::-1]:
        value = (value * t + np.float32(c)).astype(np.float32)
    exact = mills_ratio(a32.astype(np.float64))
    return np.max(np.abs(value - exact) / exact)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--degree", type=int, default=9)
    args = parser.parse_args()
    coefficients = fit(args.degree)
    a = np.linspace(0, A_MAX, 400001)
    t = 1 / (1 + T_SCALE * a)
    fitted = np.polynomial.polynomial.polyval(t, coefficients)
    print("coefficients of t^0 .. t^%d:" % args.degree)
    for c in coefficients:
        print("  %.9ef" % c)
    print("largest relative error over a in [0, %g]: fit %.2e, evaluated in float32 %.2e"
          % (A_MAX, np.max(np.abs(fitted - mills_ratio(a)) / mills_ratio(a)), float32_error(coefficients, a)))


if __name__ == "__main__":
    main()
