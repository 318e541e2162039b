//! The three ways Nix turns a float into text, reproduced byte for byte:
//! - [`fmt_g`]: C `printf("%g")` (6 significant digits), which is what
//!   `ostream << double` gives; used when printing values.
//! - [`fmt_f`]: C `printf("%f")`, i.e. `std::to_string`; used by
//!   `toString` and string interpolation.
//! - [`fmt_json`]: nlohmann::json's `dump()` layout (shortest round-trip
//!   digits), used by `builtins.toJSON`.
//!
//! Rust's float formatting is exact (correctly rounded, ties to even), as
//! glibc's is, so the digits come from `format!` and only the layout is
//! done here.

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
/// otherwise the shortest round-trip digits laid out as a plain decimal
/// when the decimal point falls within (-4, 15] digits of the first
/// digit, else as `d.ddde±XX`; integral values keep a `.0`.
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
    let e_form = format!("{:e}", a);
    let (mant, x) = split_exp(&e_form);
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let k = digits.len() as i32;
    // Position of the decimal point relative to the first digit.
    let n = x + 1;
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
