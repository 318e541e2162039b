//! The three ways Nix turns a float into text, reproduced byte for byte:
//! - [`fmt_g`]: C `printf("%g")` (6 significant digits), which is what
//!   `ostream << double` gives; used when printing values.
//! - [`fmt_f`]: C `printf("%f")`, i.e. `std::to_string`; used by
//!   `toString` and string interpolation.
//! - [`fmt_json`]: nlohmann::json's `dump()` layout (shortest round-trip
//!   digits), used by `builtins.toJSON`.
//!
//! Rust's float formatting is exact (correctly rounded, ties to even), as
//! glibc's is, so the printf digits come from `format!` and only the
//! layout is done here. nlohmann's digits come from its Grisu2, which is
//! reimplemented below because it sometimes differs from the shortest form.

/// glibc's spelling of the non-finite values.
fn non_finite(v: f64) -> Option<String> {
    if v.is_nan() {
        Some(if v.is_sign_negative() { "-nan" } else { "nan" }.to_owned())
    } else if v.is_infinite() {
        Some(if v < 0.0 { "-inf" } else { "inf" }.to_owned())
    } else {
        None
    }
}

/// Splits Rust's `{:e}` output ("-1.2345e-7") into mantissa and exponent.
fn split_exp(s: &str) -> (&str, i32) {
    match s.split_once('e') {
        Some((m, e)) => (m, e.parse().unwrap_or(0)),
        None => (s, 0),
    }
}

/// Removes trailing zeros after a decimal point, then the point itself.
fn strip_fraction_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

fn c_exponent(out: &mut String, e: i32) {
    out.push('e');
    out.push(if e < 0 { '-' } else { '+' });
    let a = e.unsigned_abs();
    if a < 10 {
        out.push('0');
    }
    out.push_str(&a.to_string());
}

/// `printf("%g", v)`.
pub fn fmt_g(v: f64) -> String {
    const P: i32 = 6;
    if let Some(s) = non_finite(v) {
        return s;
    }
    // The exponent %g decides on is the one after rounding to P digits.
    let e_form = format!("{:.*e}", (P - 1) as usize, v);
    let (mant, x) = split_exp(&e_form);
    if (-4..P).contains(&x) {
        let prec = usize::try_from(P - 1 - x).unwrap_or(0);
        let f = format!("{:.*}", prec, v);
        strip_fraction_zeros(&f).to_owned()
    } else {
        let mut out = strip_fraction_zeros(mant).to_owned();
        c_exponent(&mut out, x);
        out
    }
}

/// `printf("%f", v)` (what `std::to_string(double)` returns).
pub fn fmt_f(v: f64) -> String {
    if let Some(s) = non_finite(v) {
        return s;
    }
    format!("{:.6}", v)
}

/// nlohmann::json's `dump()` of a double: `null` for non-finite values,
/// otherwise Grisu2 digits (usually, but not always, the shortest that
/// round-trip) laid out as a plain decimal when the decimal point falls
/// within (-4, 15] digits of the first digit, else as `d.ddde±XX`;
/// integral values keep a `.0`.
pub fn fmt_json(v: f64) -> String {
    if !v.is_finite() {
        return "null".to_owned();
    }
    let mut out = String::new();
    if v.is_sign_negative() {
        out.push('-');
    }
    let a = v.abs();
    if a == 0.0 {
        out.push_str("0.0");
        return out;
    }
    let (digits, exp10) = grisu2::digits(a);
    let digits = String::from_utf8_lossy(&digits).into_owned();
    let k = digits.len() as i32;
    // Position of the decimal point relative to the first digit.
    let n = k + exp10;
    const MIN_EXP: i32 = -4;
    const MAX_EXP: i32 = 15;
    if k <= n && n <= MAX_EXP {
        out.push_str(&digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
        out.push_str(".0");
    } else if 0 < n && n <= MAX_EXP {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if MIN_EXP < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(&digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        c_exponent(&mut out, n - 1);
    }
    out
}

/// Loitsch's Grisu2 (PLDI 2010) with 64-bit "do-it-yourself" floats, as
/// nlohmann::json runs it: boundaries m-/m+ halfway to the neighbouring
/// doubles, narrowed by one unit after scaling by a cached power of ten,
/// digits generated from m+ and the last digit nudged towards the value.
/// Its output must be reproduced exactly, including the cases where it
/// is one digit longer than the shortest round-trip form.
mod grisu2 {
    #[derive(Clone, Copy)]
    struct Fp {
        f: u64,
        e: i32,
    }

    impl Fp {
        /// Upper 64 bits of the 128-bit product, rounded half up.
        fn mul(self, o: Fp) -> Fp {
            let p = u128::from(self.f) * u128::from(o.f) + (1u128 << 63);
            Fp {
                f: (p >> 64) as u64,
                e: self.e + o.e + 64,
            }
        }

        fn normalize(self) -> Fp {
            let s = self.f.leading_zeros();
            Fp {
                f: self.f << s,
                e: self.e - s as i32,
            }
        }
    }

    /// (f, e, k) with f·2^e ≈ 10^k, f normalised and rounded to nearest,
    /// for k = -300, -292, …, 324. Computed exactly with rational
    /// arithmetic; these are the values Grisu implementations tabulate.
    const POWERS: [(u64, i32, i32); 79] = [
        (0xAB70FE17C79AC6CA, -1060, -300),
        (0xFF77B1FCBEBCDC4F, -1034, -292),
        (0xBE5691EF416BD60C, -1007, -284),
        (0x8DD01FAD907FFC3C, -980, -276),
        (0xD3515C2831559A83, -954, -268),
        (0x9D71AC8FADA6C9B5, -927, -260),
        (0xEA9C227723EE8BCB, -901, -252),
        (0xAECC49914078536D, -874, -244),
        (0x823C12795DB6CE57, -847, -236),
        (0xC21094364DFB5637, -821, -228),
        (0x9096EA6F3848984F, -794, -220),
        (0xD77485CB25823AC7, -768, -212),
        (0xA086CFCD97BF97F4, -741, -204),
        (0xEF340A98172AACE5, -715, -196),
        (0xB23867FB2A35B28E, -688, -188),
        (0x84C8D4DFD2C63F3B, -661, -180),
        (0xC5DD44271AD3CDBA, -635, -172),
        (0x936B9FCEBB25C996, -608, -164),
        (0xDBAC6C247D62A584, -582, -156),
        (0xA3AB66580D5FDAF6, -555, -148),
        (0xF3E2F893DEC3F126, -529, -140),
        (0xB5B5ADA8AAFF80B8, -502, -132),
        (0x87625F056C7C4A8B, -475, -124),
        (0xC9BCFF6034C13053, -449, -116),
        (0x964E858C91BA2655, -422, -108),
        (0xDFF9772470297EBD, -396, -100),
        (0xA6DFBD9FB8E5B88F, -369, -92),
        (0xF8A95FCF88747D94, -343, -84),
        (0xB94470938FA89BCF, -316, -76),
        (0x8A08F0F8BF0F156B, -289, -68),
        (0xCDB02555653131B6, -263, -60),
        (0x993FE2C6D07B7FAC, -236, -52),
        (0xE45C10C42A2B3B06, -210, -44),
        (0xAA242499697392D3, -183, -36),
        (0xFD87B5F28300CA0E, -157, -28),
        (0xBCE5086492111AEB, -130, -20),
        (0x8CBCCC096F5088CC, -103, -12),
        (0xD1B71758E219652C, -77, -4),
        (0x9C40000000000000, -50, 4),
        (0xE8D4A51000000000, -24, 12),
        (0xAD78EBC5AC620000, 3, 20),
        (0x813F3978F8940984, 30, 28),
        (0xC097CE7BC90715B3, 56, 36),
        (0x8F7E32CE7BEA5C70, 83, 44),
        (0xD5D238A4ABE98068, 109, 52),
        (0x9F4F2726179A2245, 136, 60),
        (0xED63A231D4C4FB27, 162, 68),
        (0xB0DE65388CC8ADA8, 189, 76),
        (0x83C7088E1AAB65DB, 216, 84),
        (0xC45D1DF942711D9A, 242, 92),
        (0x924D692CA61BE758, 269, 100),
        (0xDA01EE641A708DEA, 295, 108),
        (0xA26DA3999AEF774A, 322, 116),
        (0xF209787BB47D6B85, 348, 124),
        (0xB454E4A179DD1877, 375, 132),
        (0x865B86925B9BC5C2, 402, 140),
        (0xC83553C5C8965D3D, 428, 148),
        (0x952AB45CFA97A0B3, 455, 156),
        (0xDE469FBD99A05FE3, 481, 164),
        (0xA59BC234DB398C25, 508, 172),
        (0xF6C69A72A3989F5C, 534, 180),
        (0xB7DCBF5354E9BECE, 561, 188),
        (0x88FCF317F22241E2, 588, 196),
        (0xCC20CE9BD35C78A5, 614, 204),
        (0x98165AF37B2153DF, 641, 212),
        (0xE2A0B5DC971F303A, 667, 220),
        (0xA8D9D1535CE3B396, 694, 228),
        (0xFB9B7CD9A4A7443C, 720, 236),
        (0xBB764C4CA7A44410, 747, 244),
        (0x8BAB8EEFB6409C1A, 774, 252),
        (0xD01FEF10A657842C, 800, 260),
        (0x9B10A4E5E9913129, 827, 268),
        (0xE7109BFBA19C0C9D, 853, 276),
        (0xAC2820D9623BF429, 880, 284),
        (0x80444B5E7AA7CF85, 907, 292),
        (0xBF21E44003ACDD2D, 933, 300),
        (0x8E679C2F5E44FF8F, 960, 308),
        (0xD433179D9C8CB841, 986, 316),
        (0x9E19DB92B4E31BA9, 1013, 324),
    ];

    const ALPHA: i32 = -60;

    fn cached_power(e: i32) -> (Fp, i32) {
        // Smallest k with ALPHA <= e + e_c + 64, via log10(2) ≈ 78913 / 2^18.
        let f = ALPHA - e - 1;
        let k = (f * 78913) / (1 << 18) + i32::from(f > 0);
        let index = ((300 + k + 7) / 8).clamp(0, POWERS.len() as i32 - 1) as usize;
        let (pf, pe, pk) = POWERS[index];
        (Fp { f: pf, e: pe }, pk)
    }

    /// Decimal digits and exponent with `v = digits · 10^exp`; `v` must be
    /// finite and positive.
    pub(super) fn digits(v: f64) -> (Vec<u8>, i32) {
        let bits = v.to_bits();
        let biased = bits >> 52;
        let frac = bits & ((1u64 << 52) - 1);
        let (f, e) = if biased == 0 {
            (frac, -1074)
        } else {
            (frac | (1u64 << 52), biased as i32 - 1075)
        };
        let lower_closer = frac == 0 && biased > 1;
        let plus = Fp {
            f: 2 * f + 1,
            e: e - 1,
        }
        .normalize();
        let minus = if lower_closer {
            Fp {
                f: 4 * f - 1,
                e: e - 2,
            }
        } else {
            Fp {
                f: 2 * f - 1,
                e: e - 1,
            }
        };
        let minus = Fp {
            f: minus.f << (minus.e - plus.e),
            e: plus.e,
        };
        let w = Fp { f, e }.normalize();

        let (c, ck) = cached_power(plus.e);
        let w = w.mul(c);
        let lo = minus.mul(c);
        let hi = plus.mul(c);
        let lo = Fp {
            f: lo.f + 1,
            e: lo.e,
        };
        let hi = Fp {
            f: hi.f - 1,
            e: hi.e,
        };
        let mut exp10 = -ck;
        let buf = generate(lo, w, hi, &mut exp10);
        (buf, exp10)
    }

    fn generate(lo: Fp, w: Fp, hi: Fp, exp10: &mut i32) -> Vec<u8> {
        let mut delta = hi.f - lo.f;
        let mut dist = hi.f - w.f;
        let shift = (-hi.e) as u32;
        let one = 1u64 << shift;
        let mut int_part = (hi.f >> shift) as u32;
        let mut frac = hi.f & (one - 1);
        let mut buf = Vec::with_capacity(20);

        let mut pow10: u32 = 1;
        let mut n = 1;
        while n < 10 && int_part >= pow10 * 10 {
            pow10 *= 10;
            n += 1;
        }
        while n > 0 {
            let d = int_part / pow10;
            int_part %= pow10;
            buf.push(b'0' + d as u8);
            n -= 1;
            let rest = (u64::from(int_part) << shift) + frac;
            if rest <= delta {
                *exp10 += n;
                round(&mut buf, dist, delta, rest, u64::from(pow10) << shift);
                return buf;
            }
            pow10 /= 10;
        }
        let mut m = 0;
        loop {
            frac *= 10;
            let d = frac >> shift;
            frac &= one - 1;
            buf.push(b'0' + d as u8);
            m += 1;
            delta *= 10;
            dist *= 10;
            if frac <= delta {
                break;
            }
        }
        *exp10 -= m;
        round(&mut buf, dist, delta, frac, one);
        buf
    }

    /// Moves the last digit down while that brings the number closer to
    /// the exact value and stays inside the boundaries.
    fn round(buf: &mut [u8], dist: u64, delta: u64, mut rest: u64, ten_k: u64) {
        let Some(last) = buf.last_mut() else { return };
        while rest < dist
            && delta - rest >= ten_k
            && (rest + ten_k < dist || dist - rest > rest + ten_k - dist)
        {
            *last -= 1;
            rest += ten_k;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_matches_nix_printing() {
        assert_eq!(fmt_g(1.0), "1");
        assert_eq!(fmt_g(1.0e-5), "1e-05");
        assert_eq!(fmt_g(1234567.0), "1.23457e+06");
        assert_eq!(fmt_g(0.1), "0.1");
        assert_eq!(fmt_g(123456.5), "123456");
        assert_eq!(fmt_g(-0.0), "-0");
        assert_eq!(fmt_g(f64::INFINITY), "inf");
        assert_eq!(fmt_g(1e100), "1e+100");
    }

    #[test]
    fn f_matches_to_string() {
        assert_eq!(fmt_f(1.0), "1.000000");
        assert_eq!(fmt_f(-2.5), "-2.500000");
        assert_eq!(fmt_f(1e-7), "0.000000");
    }

    #[test]
    fn json_matches_nlohmann_layout() {
        assert_eq!(fmt_json(1.0), "1.0");
        assert_eq!(fmt_json(0.1), "0.1");
        assert_eq!(fmt_json(1e-5), "1e-05");
        assert_eq!(fmt_json(0.0001), "0.0001");
        assert_eq!(fmt_json(1e14), "100000000000000.0");
        assert_eq!(fmt_json(1e15), "1e+15");
        assert_eq!(fmt_json(1.5e300), "1.5e+300");
        assert_eq!(fmt_json(-0.0), "-0.0");
        assert_eq!(fmt_json(f64::NAN), "null");
    }
}
