/* init.c -- fill kernels of the initializers (kernels/init.py). The fan/gain/bound logic is Python;
 * these only fill. Counters are philox4x32_10(counter = (c low, c high, stream, 0), key = (seed low,
 * high)) -> (w0, w1, w2, w3), u(a, b) = ((a >> 5) * 2^26 + (b >> 6)) * 2^-53 in [0, 1) (53 bits, exact):
 *   uniform, stream 1: element i uses counter i; out = low + (high - low) * u(w0, w1)
 *   normal, stream 2 ("stream v2"): the pair of elements (2j, 2j + 1) uses counter j (Box-Muller, both
 *            halves): r = sqrt(-2 log(1 - u(w0, w1))), theta = 2 pi u(w2, w3), z_2j = r cos(theta),
 *            z_2j+1 = r sin(theta); out = mean + std * z (an odd n keeps the cosine of the last pair)
 * all in double, rounded once to the output dtype (but the avx2 normal for float32 outputs: below);
 * element i depends on (seed, i) only, never on n.
 *
 * Two paths (dp_rng_path, philox.h), each the same function of the index for every n (tails run the
 * same code into a small buffer):
 *   portable  scalar Philox, libm's log, cos, sin of 2 pi u rounded to double;
 *   avx2      Philox on 4 64-bit lanes x 2 or 4 (philox.h), and for the normal our own vectorised
 *             double log and sincos (below), or for float32 outputs the float ones (further below). The uniform fill is bit-identical on both paths (exact u,
 *             then a separate multiply and add, as NumPy); the normal agrees to a few ulp (below).
 *
 * The avx2 normal's math, all in double, no table:
 *   log(v), v = 1 - u in [2^-53, 1] (exact): v = 2^k m, m in [sqrt(2)/2, sqrt(2)), f = m - 1 (exact),
 *     s = f / (2 + f), log v = k ln2_hi + (f - hfsq + s (hfsq + R(s^2)) + k ln2_lo), hfsq = f^2 / 2 --
 *     fdlibm/musl's e_log.c (its polynomial R, error < 1 ulp), evaluated with FMA.
 *   sincos(2 pi t), t = u(w2, w3): reduced exactly in t, not in the rounded 2 pi t: x = 4t, k = the
 *     nearest integer, r = x - k in [-1/2, 1/2] (exact), a = r pi/2 in [-pi/4, pi/4] rounded once
 *     (pi/2 in two parts, FMA); sin a, cos a by fdlibm's k_sin.c / k_cos.c polynomials (< 1 ulp), and
 *     the quadrant k mod 4 swaps and negates them.
 *   Measured against mpmath (tests/test_init.py): log <= 1 ulp; sin, cos of 2 pi t within 1 ulp + 2^-54
 *     absolute (the absolute part is at the zeros, where libm's cos(fl(2 pi t)) of the portable path
 *     and NumPy are off by up to |fl(2 pi t) - 2 pi t| ~ 4.4e-16 -- the reduction in t is the more
 *     accurate one). So z = r cos(theta) differs between paths and from the NumPy reference by a few
 *     1e-16 |r| at most: a few ulp of float64, and never more than one rounding step of float32.
 * Measured on this Zen 3 core (1 thread, float32, 256 x 256, output preallocated, a busy machine):
 * normal ~3.8-4.2 ns/value (was 47-52: libm, one value per Philox call), uniform ~2.3-2.5 (was 8.5).
 * Where the normal's time goes (measured by removing parts): Philox + u + stores ~1.9, sincos ~1.2,
 * log ~0.7 (its division ~0.35), sqrt ~0.25 ns/value. The float32 normal with its math in float (below):
 * ~2.6 ns/value where the double math measured ~3.9 in the same process (Philox + u + the double steps
 * + stores ~1.9; the float math, affine and stores the rest; the affine widened to double cost ~0.35
 * more). */
#include <math.h>
#include <string.h>
#include "deepprop.h"
#include "philox.h"

#define DP_STREAM_UNIFORM 1u
#define DP_STREAM_NORMAL 2u
#define DP_TWO_PI 6.283185307179586 /* 2 * pi rounded to double, as 2 * math.pi in Python */

/* ---- avx2: log and sincos of 4 doubles --------------------------------------------------------------- */
#if DP_RNG_X86

/* log v for v positive and normal (here v in [2^-53, 1]); musl's log.c, < 1 ulp */
DP_AVX2_INLINE __m256d dp_log_avx2(__m256d v) {
    const double Lg1 = 6.666666666666735130e-01, Lg2 = 3.999999999940941908e-01,
                 Lg3 = 2.857142874366239149e-01, Lg4 = 2.222219843214978396e-01,
                 Lg5 = 1.818357216161805012e-01, Lg6 = 1.531383769920937332e-01,
                 Lg7 = 1.479819860511658591e-01;
    const double ln2_hi = 6.93147180369123816490e-01, ln2_lo = 1.90821492927058770002e-10;
    /* shift the exponent so that the mantissa lands in [sqrt(2)/2, sqrt(2)): bits + (1 - 0x3fe6a09e) */
    __m256i u = _mm256_add_epi64(_mm256_castpd_si256(v),
                                 _mm256_set1_epi64x(0x3ff0000000000000 - 0x3fe6a09e00000000));
    __m256i kb = _mm256_srli_epi64(u, 52); /* k + 1023, in [970, 1023] */
    __m256d k = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(kb, _mm256_set1_epi64x(0x4330000000000000))),
                              _mm256_set1_pd(4503599627370496.0 + 1023.0));
    __m256i mb = _mm256_add_epi64(_mm256_and_si256(u, _mm256_set1_epi64x(0x000fffffffffffff)),
                                  _mm256_set1_epi64x(0x3fe6a09e00000000));
    __m256d f = _mm256_sub_pd(_mm256_castsi256_pd(mb), _mm256_set1_pd(1.0));
    __m256d hfsq = _mm256_mul_pd(_mm256_mul_pd(_mm256_set1_pd(0.5), f), f);
    __m256d s = _mm256_div_pd(f, _mm256_add_pd(_mm256_set1_pd(2.0), f));
    __m256d z = _mm256_mul_pd(s, s), w = _mm256_mul_pd(z, z);
    __m256d t1 = _mm256_mul_pd(w, _mm256_fmadd_pd(w, _mm256_fmadd_pd(w, _mm256_set1_pd(Lg6), _mm256_set1_pd(Lg4)),
                                                  _mm256_set1_pd(Lg2)));
    __m256d t2 = _mm256_mul_pd(z, _mm256_fmadd_pd(w, _mm256_fmadd_pd(w, _mm256_fmadd_pd(w, _mm256_set1_pd(Lg7),
                                                  _mm256_set1_pd(Lg5)), _mm256_set1_pd(Lg3)), _mm256_set1_pd(Lg1)));
    __m256d R = _mm256_add_pd(t2, t1);
    /* s * (hfsq + R) + k ln2_lo - hfsq + f + k ln2_hi, left to right as in musl */
    __m256d acc = _mm256_fmadd_pd(k, _mm256_set1_pd(ln2_lo), _mm256_mul_pd(s, _mm256_add_pd(hfsq, R)));
    acc = _mm256_add_pd(_mm256_sub_pd(acc, hfsq), f);
    return _mm256_fmadd_pd(k, _mm256_set1_pd(ln2_hi), acc);
}

/* cos and sin of 2 pi t for t in [0, 1) (any t >= 0 with 4t < 2^51 works) */
DP_AVX2_INLINE void dp_sincos2pi_avx2(__m256d t, __m256d *cs, __m256d *sn) {
    const double S1 = -1.66666666666666324348e-01, S2 = 8.33333333332248946124e-03,
                 S3 = -1.98412698298579493134e-04, S4 = 2.75573137070700676789e-06,
                 S5 = -2.50507602534068634195e-08, S6 = 1.58969099521155010221e-10;
    const double C1 = 4.16666666666666019037e-02, C2 = -1.38888888888741095749e-03,
                 C3 = 2.48015872894767294178e-05, C4 = -2.75573143513906633035e-07,
                 C5 = 2.08757232129817482790e-09, C6 = -1.13596475577881948265e-11;
    const double pio2_hi = 1.57079632679489655800e+00, pio2_lo = 6.12323399573676603587e-17;
    __m256d x = _mm256_mul_pd(t, _mm256_set1_pd(4.0)); /* exact */
    /* k = the nearest integer: x + 1.5 * 2^52 rounds x to an integer (ulp 1 there), which then sits
     * in the low mantissa bits of that sum -- read as the quadrant below, no conversion needed */
    __m256d kb = _mm256_add_pd(x, _mm256_set1_pd(6755399441055744.0));
    __m256d kq = _mm256_sub_pd(kb, _mm256_set1_pd(6755399441055744.0));
    __m256d r = _mm256_sub_pd(x, kq);                  /* exact, |r| <= 1/2 */
    /* a + y = r pi/2 to ~2^-106 relative: a rounded once, y its remainder (pi/2 = pio2_hi + pio2_lo) */
    __m256d rlo = _mm256_mul_pd(r, _mm256_set1_pd(pio2_lo));
    __m256d a = _mm256_fmadd_pd(r, _mm256_set1_pd(pio2_hi), rlo);
    __m256d y = _mm256_add_pd(_mm256_fmsub_pd(r, _mm256_set1_pd(pio2_hi), a), rlo);
    __m256d z = _mm256_mul_pd(a, a), w = _mm256_mul_pd(z, z), za = _mm256_mul_pd(z, a);
    /* k_sin.c: rs = S2 + z (S3 + z (S4 + z (S5 + z S6))), sin = a - ((z (y/2 - za rs) - y) - za S1) */
    __m256d rs = _mm256_fmadd_pd(z, _mm256_fmadd_pd(z, _mm256_fmadd_pd(z, _mm256_fmadd_pd(z, _mm256_set1_pd(S6),
                                 _mm256_set1_pd(S5)), _mm256_set1_pd(S4)), _mm256_set1_pd(S3)), _mm256_set1_pd(S2));
    __m256d hy = _mm256_mul_pd(_mm256_set1_pd(0.5), y);
    __m256d sa = _mm256_sub_pd(_mm256_mul_pd(z, _mm256_fnmadd_pd(za, rs, hy)), y);
    __m256d s = _mm256_sub_pd(a, _mm256_fnmadd_pd(za, _mm256_set1_pd(S1), sa));
    /* k_cos.c: rc = z (C1 + z (C2 + z C3)) + w^2 (C4 + z (C5 + z C6)); hz = z / 2, wc = 1 - hz,
     * cos = wc + (((1 - wc) - hz) + (z rc - a y)) */
    __m256d rc = _mm256_fmadd_pd(_mm256_mul_pd(w, w),
                                 _mm256_fmadd_pd(z, _mm256_fmadd_pd(z, _mm256_set1_pd(C6), _mm256_set1_pd(C5)),
                                                 _mm256_set1_pd(C4)),
                                 _mm256_mul_pd(z, _mm256_fmadd_pd(z, _mm256_fmadd_pd(z, _mm256_set1_pd(C3),
                                               _mm256_set1_pd(C2)), _mm256_set1_pd(C1))));
    __m256d hz = _mm256_mul_pd(_mm256_set1_pd(0.5), z);
    __m256d wc = _mm256_sub_pd(_mm256_set1_pd(1.0), hz);
    __m256d c = _mm256_add_pd(wc, _mm256_add_pd(_mm256_sub_pd(_mm256_sub_pd(_mm256_set1_pd(1.0), wc), hz),
                                                _mm256_fmsub_pd(z, rc, _mm256_mul_pd(a, y))));
    /* quadrant q = k mod 4: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c) */
    __m256i q = _mm256_castpd_si256(kb); /* its low bits are k; only bits 0 and 1 are used */
    __m256d odd = _mm256_castsi256_pd(_mm256_slli_epi64(q, 63));                       /* q & 1 in the sign bit */
    __m256d cneg = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_srli_epi64(_mm256_add_epi64(q,
                                       _mm256_set1_epi64x(1)), 1), 63));                 /* (q + 1) & 2 */
    __m256d sneg = _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_srli_epi64(q, 1), 63)); /* q & 2 */
    __m256d c2 = _mm256_blendv_pd(c, s, odd), s2 = _mm256_blendv_pd(s, c, odd);
    *cs = _mm256_xor_pd(c2, cneg);
    *sn = _mm256_xor_pd(s2, sneg);
}

/* z for the pairs of the 4 lanes from v = 1 - u(w0, w1) (exact, in [2^-53, 1]) and t = u(w2, w3):
 * the cosine half zc, the sine half zs (Box-Muller) */
DP_AVX2_INLINE void dp_box_muller_avx2(__m256d v, __m256d t, __m256d *zc, __m256d *zs) {
    __m256d r = _mm256_sqrt_pd(_mm256_mul_pd(_mm256_set1_pd(-2.0), dp_log_avx2(v)));
    __m256d c, s;
    dp_sincos2pi_avx2(t, &c, &s);
    *zc = _mm256_mul_pd(r, c);
    *zs = _mm256_mul_pd(r, s);
}

/* ---- avx2, float32 outputs: the same u, the Box-Muller math in float, 8 pairs at a time ---------------
 * The exact double steps stay double (4 lanes): v = 1 - u, its split v = 2^k (1 + f) (f exact), and the
 * reduction x = 4t = k' + r (exact) with a = r pi/2; then f, k, a are rounded once to float and the
 * rest runs on 8 float lanes: log(1 + f) by fdlibm's e_logf.c kernel (s = f / (2 + f), its polynomial,
 * < 1 ulp), sqrt, sin a, cos a by fdlibm's k_sinf.c / k_cosf.c polynomials (|a| <= pi/4, written as
 * a + a z S(z) and 1 + z C(z) so each ends in one rounding), the quadrant k' mod 4 as in double. z is
 * then r cos, r sin in float, and mean + std z = fma(s_hi, z, fma(s_lo, z, mean)) in float, std =
 * s_hi + s_lo split in two floats (std z rounded once, in effect). Only where that keeps its accuracy:
 * std 0 or a float >= 2^-100, mean a finite float (normal_fill_avx2_f32); else the double math.
 * Measured against mpmath and NumPy (tests/test_init.py, rng_math_f32_c): log v within 1.30 ulp of
 * float32, cos 2 pi t and sin 2 pi t within 1.36 (relative also near their zeros, the reduction being
 * exact; the exact zeros exact); z within 3.3 ulp of float32 of the float64 z (tests bound 1.5 and 4),
 * about 1 eps normwise against the NumPy reference, where verify allows 16.
 * Why: the draw is a fifth of a He-initialised layer of the depth harness; this halves its math. */

/* the double steps for 4 pairs: f, k of v = 2^k (1 + f); a = r pi/2 and the quadrant q of t */
DP_AVX2_INLINE void dp_bm_prep_f32(__m256d v, __m256d t, __m128 *f, __m128 *k, __m128 *a, __m128i *q) {
    __m256i u = _mm256_add_epi64(_mm256_castpd_si256(v),
                                 _mm256_set1_epi64x(0x3ff0000000000000 - 0x3fe6a09e00000000));
    __m256i kb = _mm256_srli_epi64(u, 52);
    __m256d kd = _mm256_sub_pd(_mm256_castsi256_pd(_mm256_or_si256(kb, _mm256_set1_epi64x(0x4330000000000000))),
                               _mm256_set1_pd(4503599627370496.0 + 1023.0));
    __m256i mb = _mm256_add_epi64(_mm256_and_si256(u, _mm256_set1_epi64x(0x000fffffffffffff)),
                                  _mm256_set1_epi64x(0x3fe6a09e00000000));
    *f = _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_castsi256_pd(mb), _mm256_set1_pd(1.0)));
    *k = _mm256_cvtpd_ps(kd);
    __m256d x = _mm256_mul_pd(t, _mm256_set1_pd(4.0));
    __m256d kq = _mm256_sub_pd(_mm256_add_pd(x, _mm256_set1_pd(6755399441055744.0)),
                               _mm256_set1_pd(6755399441055744.0)); /* nearest integer, 0..4 */
    *a = _mm256_cvtpd_ps(_mm256_mul_pd(_mm256_sub_pd(x, kq), _mm256_set1_pd(1.57079632679489661923)));
    *q = _mm256_cvtpd_epi32(kq);
}

/* log(1 + f) + k ln 2 for f in [sqrt(2)/2 - 1, sqrt(2) - 1]: fdlibm's e_logf.c */
DP_AVX2_INLINE __m256 dp_log_f32_avx2(__m256 f, __m256 k) {
    const float Lg1 = 6.6666662693e-01f, Lg2 = 4.0000972152e-01f, Lg3 = 2.8498786688e-01f,
                Lg4 = 2.4279078841e-01f, ln2_hi = 6.9313812256e-01f, ln2_lo = 9.0580006145e-06f;
    __m256 hfsq = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), f), f);
    __m256 s = _mm256_div_ps(f, _mm256_add_ps(_mm256_set1_ps(2.0f), f));
    __m256 z = _mm256_mul_ps(s, s), w = _mm256_mul_ps(z, z);
    __m256 t1 = _mm256_mul_ps(w, _mm256_fmadd_ps(w, _mm256_set1_ps(Lg4), _mm256_set1_ps(Lg2)));
    __m256 t2 = _mm256_mul_ps(z, _mm256_fmadd_ps(w, _mm256_set1_ps(Lg3), _mm256_set1_ps(Lg1)));
    __m256 R = _mm256_add_ps(t2, t1);
    /* k ln2_hi - ((hfsq - (s (hfsq + R) + k ln2_lo)) - f) */
    __m256 acc = _mm256_fmadd_ps(s, _mm256_add_ps(hfsq, R), _mm256_mul_ps(k, _mm256_set1_ps(ln2_lo)));
    acc = _mm256_sub_ps(_mm256_sub_ps(hfsq, acc), f);
    return _mm256_fmsub_ps(k, _mm256_set1_ps(ln2_hi), acc);
}

/* cos and sin of the angle q pi/2 + a, |a| <= pi/4 */
DP_AVX2_INLINE void dp_sincos_f32_avx2(__m256 a, __m256i q, __m256 *cs, __m256 *sn) {
    const float S1 = -1.6666667163e-01f, S2 = 8.3333337680e-03f, S3 = -1.9841270114e-04f,
                S4 = 2.7557314297e-06f;
    const float C1 = 4.1666667908e-02f, C2 = -1.3888889225e-03f, C3 = 2.4801587642e-05f,
                C4 = -2.7557314297e-07f;
    __m256 z = _mm256_mul_ps(a, a);
    __m256 ps = _mm256_fmadd_ps(z, _mm256_fmadd_ps(z, _mm256_fmadd_ps(z, _mm256_set1_ps(S4), _mm256_set1_ps(S3)),
                                                   _mm256_set1_ps(S2)), _mm256_set1_ps(S1));
    __m256 s = _mm256_fmadd_ps(_mm256_mul_ps(a, z), ps, a);
    __m256 pc = _mm256_fmadd_ps(z, _mm256_fmadd_ps(z, _mm256_fmadd_ps(z, _mm256_fmadd_ps(z, _mm256_set1_ps(C4),
                                _mm256_set1_ps(C3)), _mm256_set1_ps(C2)), _mm256_set1_ps(C1)), _mm256_set1_ps(-0.5f));
    __m256 c = _mm256_fmadd_ps(z, pc, _mm256_set1_ps(1.0f));
    /* quadrant q mod 4: (cos, sin) = (c, s), (-s, c), (-c, -s), (s, -c) */
    __m256 odd = _mm256_castsi256_ps(_mm256_slli_epi32(q, 31));
    __m256 cneg = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_srli_epi32(_mm256_add_epi32(q,
                                      _mm256_set1_epi32(1)), 1), 31));
    __m256 sneg = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_srli_epi32(q, 1), 31));
    __m256 c2 = _mm256_blendv_ps(c, s, odd), s2 = _mm256_blendv_ps(s, c, odd);
    *cs = _mm256_xor_ps(c2, cneg);
    *sn = _mm256_xor_ps(s2, sneg);
}

/* store 8 doubles (or their float roundings) in element order: a = lanes 0-3, b = lanes 4-7 */
DP_AVX2_INLINE void dp_store8_avx2_f64(double *out, __m256d a, __m256d b) {
    _mm256_storeu_pd(out, a);
    _mm256_storeu_pd(out + 4, b);
}
DP_AVX2_INLINE void dp_store8_avx2_f32(float *out, __m256d a, __m256d b) {
    _mm256_storeu_ps(out, _mm256_set_m128(_mm256_cvtpd_ps(b), _mm256_cvtpd_ps(a)));
}

/* uniform: 16 elements = 4 x 4 counters per step. normal: blocks of DP_NORMAL_BLOCK pairs, first all
 * their Philox words (into v, t), then the math 4 pairs at a time: two loops of short independent
 * iterations, which the out-of-order core overlaps (one loop doing both is bound by the latency of
 * Philox -> log -> sqrt). A partial last step is computed whole into a buffer and the part needed
 * copied (a partial block's Philox loop fills v, t up to a multiple of 16 pairs, past the last pair:
 * finite values, computed and never stored). */
#define DP_NORMAL_BLOCK 64
#define DEFINE_UNIFORM_AVX2(T, SFX)                                                                       \
DP_AVX2 static void uniform_fill_avx2_##SFX(T *out, int64_t n, uint64_t seed, double low, double high) { \
    dp_philox_keys ks;                                                                               \
    dp_philox_keys_avx2(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));                                \
    const __m256d lo = _mm256_set1_pd(low), width = _mm256_set1_pd(high - low);                     \
    T buf[16];                                                                                       \
    for (int64_t i = 0; i < n; i += 16) {                                                            \
        __m256i c[4][4];                                                                             \
        dp_philox_run_avx2_x4(c, &ks, (uint64_t)i, DP_STREAM_UNIFORM, 0u);                           \
        T *dst = n - i >= 16 ? out + i : buf;                                                        \
        __m256d y[4];                                                                                \
        for (int v = 0; v < 4; v++) /* low + width * u: multiply, then add (no FMA), as NumPy */   \
            y[v] = _mm256_add_pd(lo, _mm256_mul_pd(width, dp_u53_avx2(c[0][v], c[1][v])));          \
        dp_store8_avx2_##SFX(dst, y[0], y[1]);                                                       \
        dp_store8_avx2_##SFX(dst + 8, y[2], y[3]);                                                   \
        if (dst == buf) memcpy(out + i, buf, (size_t)(n - i) * sizeof(T));                          \
    }                                                                                                \
}
/* the normal with the math in double (float64 outputs) */
#define DEFINE_NORMAL_AVX2(T, SFX, NAME)                                                               \
DP_AVX2 static void NAME(T *out, int64_t n, uint64_t seed, double mean, double std) {                  \
    dp_philox_keys ks;                                                                               \
    dp_philox_keys_avx2(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));                                \
    const __m256d mu = _mm256_set1_pd(mean), sd = _mm256_set1_pd(std);                             \
    _Alignas(32) double vb[DP_NORMAL_BLOCK], tb[DP_NORMAL_BLOCK];                                    \
    T buf[8];                                                                                        \
    int64_t npairs = (n + 1) / 2;                                                                    \
    for (int64_t p0 = 0; p0 < npairs; p0 += DP_NORMAL_BLOCK) {                                       \
        int64_t np = npairs - p0 < DP_NORMAL_BLOCK ? npairs - p0 : DP_NORMAL_BLOCK;                  \
        for (int64_t k = 0; k < np; k += 16) { /* the words of 16 pairs -> v = 1 - u, t */          \
            __m256i c[4][4];                                                                         \
            dp_philox_run_avx2_x4(c, &ks, (uint64_t)(p0 + k), DP_STREAM_NORMAL, 0u);                 \
            for (int v = 0; v < 4; v++) {                                                            \
                _mm256_store_pd(vb + k + 4 * v,                                                      \
                                _mm256_sub_pd(_mm256_set1_pd(1.0), dp_u53_avx2(c[0][v], c[1][v])));  \
                _mm256_store_pd(tb + k + 4 * v, dp_u53_avx2(c[2][v], c[3][v]));                      \
            }                                                                                        \
        }                                                                                            \
        for (int64_t k = 0; k < np; k += 4) { /* 4 pairs -> 8 values */                              \
            int64_t i = 2 * (p0 + k);                                                                \
            __m256d zc, zs;                                                                          \
            dp_box_muller_avx2(_mm256_load_pd(vb + k), _mm256_load_pd(tb + k), &zc, &zs);            \
            zc = _mm256_add_pd(mu, _mm256_mul_pd(sd, zc)); /* mean + std * z, no FMA, as NumPy */    \
            zs = _mm256_add_pd(mu, _mm256_mul_pd(sd, zs));                                           \
            /* interleave: (c0 s0 c1 s1), (c2 s2 c3 s3) */                                           \
            __m256d lo = _mm256_unpacklo_pd(zc, zs), hi = _mm256_unpackhi_pd(zc, zs);                \
            T *dst = n - i >= 8 ? out + i : buf;                                                     \
            dp_store8_avx2_##SFX(dst, _mm256_permute2f128_pd(lo, hi, 0x20),                          \
                                 _mm256_permute2f128_pd(lo, hi, 0x31));                              \
            if (dst == buf) memcpy(out + i, buf, (size_t)(n - i) * sizeof(T));                       \
        }                                                                                            \
    }                                                                                                \
}
DEFINE_UNIFORM_AVX2(float, f32)
DEFINE_UNIFORM_AVX2(double, f64)
DEFINE_NORMAL_AVX2(double, f64, normal_fill_avx2_f64)
DEFINE_NORMAL_AVX2(float, f32, normal_fill_avx2_f32_dmath)

/* the normal for float32 outputs: the same blocks, the Philox loop also doing the double steps
 * (dp_bm_prep_f32), the math loop 8 pairs -> 16 values in float */
DP_AVX2 static void normal_fill_avx2_f32_fmath(float *out, int64_t n, uint64_t seed, double mean, double std) {
    dp_philox_keys ks;
    dp_philox_keys_avx2(&ks, (uint32_t)seed, (uint32_t)(seed >> 32));
    const float std_hi = (float)std;
    const __m256 shi = _mm256_set1_ps(std_hi), mf = _mm256_set1_ps((float)mean),
                 slo = _mm256_set1_ps((float)(std - (double)std_hi));
    _Alignas(32) float fb[DP_NORMAL_BLOCK], kb[DP_NORMAL_BLOCK], ab[DP_NORMAL_BLOCK];
    _Alignas(32) int32_t qb[DP_NORMAL_BLOCK];
    float buf[16];
    int64_t npairs = (n + 1) / 2;
    for (int64_t p0 = 0; p0 < npairs; p0 += DP_NORMAL_BLOCK) {
        int64_t np = npairs - p0 < DP_NORMAL_BLOCK ? npairs - p0 : DP_NORMAL_BLOCK;
        for (int64_t k = 0; k < np; k += 16) { /* the words of 16 pairs -> f, k, a, q */
            __m256i c[4][4];
            dp_philox_run_avx2_x4(c, &ks, (uint64_t)(p0 + k), DP_STREAM_NORMAL, 0u);
            for (int v = 0; v < 4; v++) {
                __m128 f, kf, a;
                __m128i q;
                dp_bm_prep_f32(_mm256_sub_pd(_mm256_set1_pd(1.0), dp_u53_avx2(c[0][v], c[1][v])),
                               dp_u53_avx2(c[2][v], c[3][v]), &f, &kf, &a, &q);
                _mm_store_ps(fb + k + 4 * v, f);
                _mm_store_ps(kb + k + 4 * v, kf);
                _mm_store_ps(ab + k + 4 * v, a);
                _mm_store_si128((__m128i *)(qb + k + 4 * v), q);
            }
        }
        for (int64_t k = 0; k < np; k += 8) { /* 8 pairs -> 16 values */
            int64_t i = 2 * (p0 + k);
            __m256 r = _mm256_sqrt_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f),
                                                    dp_log_f32_avx2(_mm256_load_ps(fb + k), _mm256_load_ps(kb + k))));
            __m256 cs, sn;
            dp_sincos_f32_avx2(_mm256_load_ps(ab + k), _mm256_load_si256((const __m256i *)(qb + k)), &cs, &sn);
            __m256 zc = _mm256_mul_ps(r, cs), zs = _mm256_mul_ps(r, sn);
            /* mean + std z as fma(s_hi, z, fma(s_lo, z, m)): std = s_hi + s_lo to ~2^-48, so with mean 0
             * this is std z rounded once (as the double product rounded to float, but for the rare
             * double-rounding tie), and mean + 0 z = +0 as in NumPy; a float mean adds its own rounding.
             * (Widening to double for the affine cost ~15% of the draw.) */
            float *dst = n - i >= 16 ? out + i : buf;
            zc = _mm256_fmadd_ps(shi, zc, _mm256_fmadd_ps(slo, zc, mf));
            zs = _mm256_fmadd_ps(shi, zs, _mm256_fmadd_ps(slo, zs, mf));
            /* interleave: lo = (c0 s0 c1 s1 | c4 s4 c5 s5), hi = (c2 s2 c3 s3 | c6 s6 c7 s7) */
            __m256 lo = _mm256_unpacklo_ps(zc, zs), hi = _mm256_unpackhi_ps(zc, zs);
            _mm256_storeu_ps(dst, _mm256_permute2f128_ps(lo, hi, 0x20));
            _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
            if (dst == buf) memcpy(out + i, buf, (size_t)(n - i) * sizeof(float));
        }
    }
}

/* float32 outputs: the float math where it keeps its accuracy -- std 0, or a float of at least 2^-100
 * (so an output is subnormal only where z is tiny, never at the scale of the draw: there float32 has
 * fewer bits than the float math's few ulp), and mean a finite float -- else (std or mean beyond
 * float's range, std tiny) the double math, as for float64 */
DP_AVX2 static void normal_fill_avx2_f32(float *out, int64_t n, uint64_t seed, double mean, double std) {
    if ((std == 0.0 || (std >= 0x1p-100 && isfinite((float)std))) && isfinite((float)mean))
        normal_fill_avx2_f32_fmath(out, n, seed, mean, std);
    else
        normal_fill_avx2_f32_dmath(out, n, seed, mean, std);
}

DP_AVX2 static void rng_math_avx2(double *lg, double *cs, double *sn, const double *v, const double *t, int64_t n) {
    for (int64_t i = 0; i < n; i += 4) {
        double vb[4] = {1.0, 1.0, 1.0, 1.0}, tb[4] = {0.0, 0.0, 0.0, 0.0}, l[4], c[4], s[4];
        int64_t m = n - i < 4 ? n - i : 4;
        memcpy(vb, v + i, (size_t)m * sizeof(double));
        memcpy(tb, t + i, (size_t)m * sizeof(double));
        __m256d cv, sv;
        _mm256_storeu_pd(l, dp_log_avx2(_mm256_loadu_pd(vb)));
        dp_sincos2pi_avx2(_mm256_loadu_pd(tb), &cv, &sv);
        _mm256_storeu_pd(c, cv);
        _mm256_storeu_pd(s, sv);
        memcpy(lg + i, l, (size_t)m * sizeof(double));
        memcpy(cs + i, c, (size_t)m * sizeof(double));
        memcpy(sn + i, s, (size_t)m * sizeof(double));
    }
}
DP_AVX2 static void rng_math_f32_avx2(float *lg, float *cs, float *sn, const double *v, const double *t,
                                      int64_t n) {
    for (int64_t i = 0; i < n; i += 8) {
        double vb[8] = {1, 1, 1, 1, 1, 1, 1, 1}, tb[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        float l[8], c[8], s[8];
        int64_t m = n - i < 8 ? n - i : 8;
        memcpy(vb, v + i, (size_t)m * sizeof(double));
        memcpy(tb, t + i, (size_t)m * sizeof(double));
        __m128 f0, f1, k0, k1, a0, a1;
        __m128i q0, q1;
        dp_bm_prep_f32(_mm256_loadu_pd(vb), _mm256_loadu_pd(tb), &f0, &k0, &a0, &q0);
        dp_bm_prep_f32(_mm256_loadu_pd(vb + 4), _mm256_loadu_pd(tb + 4), &f1, &k1, &a1, &q1);
        __m256 cv, sv;
        _mm256_storeu_ps(l, dp_log_f32_avx2(_mm256_set_m128(f1, f0), _mm256_set_m128(k1, k0)));
        dp_sincos_f32_avx2(_mm256_set_m128(a1, a0), _mm256_set_m128i(q1, q0), &cv, &sv);
        _mm256_storeu_ps(c, cv);
        _mm256_storeu_ps(s, sv);
        memcpy(lg + i, l, (size_t)m * sizeof(float));
        memcpy(cs + i, c, (size_t)m * sizeof(float));
        memcpy(sn + i, s, (size_t)m * sizeof(float));
    }
}
#define DP_INIT_AVX2_CALL(NAME, ...)                                                                 \
    if (dp_rng_path() == DP_RNG_AVX2) {                                                              \
        NAME(__VA_ARGS__);                                                                           \
        return;                                                                                      \
    }
#else
#define DP_INIT_AVX2_CALL(NAME, ...)
#endif

void rng_math_check(double *lg, double *cs, double *sn, const double *v, const double *t, int64_t n) {
    /* lg, cs, sn, v, t: (n,) */
    DP_INIT_AVX2_CALL(rng_math_avx2, lg, cs, sn, v, t, n)
    for (int64_t i = 0; i < n; i++) {
        lg[i] = log(v[i]);
        cs[i] = cos(DP_TWO_PI * t[i]);
        sn[i] = sin(DP_TWO_PI * t[i]);
    }
}

void rng_math_f32_check(float *lg, float *cs, float *sn, const double *v, const double *t, int64_t n) {
    /* lg, cs, sn, v, t: (n,); the float32 normal's math (portable: libm's double, rounded) */
    DP_INIT_AVX2_CALL(rng_math_f32_avx2, lg, cs, sn, v, t, n)
    for (int64_t i = 0; i < n; i++) {
        lg[i] = (float)log(v[i]);
        cs[i] = (float)cos(DP_TWO_PI * t[i]);
        sn[i] = (float)sin(DP_TWO_PI * t[i]);
    }
}

/* ---- the exported kernels (portable path inline) ---------------------------------------------------- */

#define DEFINE_INIT(T, SFX)                                                                        \
void constant_fill_##SFX(T *out, int64_t n, double value) {                                         \
    /* out: (n,) */                                                                                \
    T v = (T)value;                                                                                \
    for (int64_t i = 0; i < n; i++) out[i] = v;                                                    \
}                                                                                                  \
void uniform_fill_##SFX(T *out, int64_t n, uint64_t seed, double low, double high) {               \
    /* out: (n,) */                                                                                \
    DP_INIT_AVX2_CALL(uniform_fill_avx2_##SFX, out, n, seed, low, high)                            \
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32), w[4];                               \
    double width = high - low;                                                                     \
    for (int64_t i = 0; i < n; i++) {                                                              \
        uint64_t c = (uint64_t)i;                                                                  \
        dp_philox4x32_10(w, (uint32_t)c, (uint32_t)(c >> 32), DP_STREAM_UNIFORM, 0u, k0, k1);       \
        out[i] = (T)(low + width * dp_u53(w[0], w[1]));                                            \
    }                                                                                              \
}                                                                                                  \
void normal_fill_##SFX(T *out, int64_t n, uint64_t seed, double mean, double std) {                \
    /* out: (n,) */                                                                                \
    DP_INIT_AVX2_CALL(normal_fill_avx2_##SFX, out, n, seed, mean, std)                             \
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32), w[4];                               \
    for (int64_t i = 0; i < n; i += 2) {                                                           \
        uint64_t c = (uint64_t)i / 2;                                                              \
        dp_philox4x32_10(w, (uint32_t)c, (uint32_t)(c >> 32), DP_STREAM_NORMAL, 0u, k0, k1);        \
        double r = sqrt(-2.0 * log(1.0 - dp_u53(w[0], w[1])));                                     \
        double theta = DP_TWO_PI * dp_u53(w[2], w[3]);                                             \
        out[i] = (T)(mean + std * (r * cos(theta)));                                               \
        if (i + 1 < n) out[i + 1] = (T)(mean + std * (r * sin(theta)));                            \
    }                                                                                              \
}

DEFINE_INIT(float, f32)
DEFINE_INIT(double, f64)
