//! Numeric text as Go's `strconv.ParseFloat(s, 64)` reads it: Mixer's adapter turned STRING
//! metric values into numbers that way, so the same text must be a number (or an error) here.
//!
//! Accepted: an optional sign; decimal mantissa with optional fraction and `e` exponent; `0x`
//! hexadecimal mantissa with a required `p` exponent; `_` between digits (Go's rule);
//! `inf`/`infinity` (any case, optional sign) and `nan` (any case, no sign). Rejected: spaces
//! anywhere, out-of-range values (`1e400`), anything else.

/// Parses `s` as Go's `strconv.ParseFloat(s, 64)` does; `None` where Go returns an error.
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    if let Some(v) = special(s) {
        return Some(v);
    }
    if s.contains('_') && !underscores_ok(s) {
        return None;
    }
    let clean: String = s.chars().filter(|&c| c != '_').collect();
    let (negative, body) = match clean.as_bytes().first()? {
        b'-' => (true, &clean[1..]),
        b'+' => (false, &clean[1..]),
        _ => (false, &clean[..]),
    };
    let magnitude = if body.len() > 1
        && body.as_bytes()[0] == b'0'
        && matches!(body.as_bytes()[1], b'x' | b'X')
    {
        hex(&body[2..])?
    } else {
        decimal(body)?
    };
    if magnitude.is_infinite() {
        return None;
    }
    Some(if negative { -magnitude } else { magnitude })
}

/// `inf`, `+Infinity`, `-INF`, `nan` (NaN takes no sign in Go).
fn special(s: &str) -> Option<f64> {
    let (sign, rest) = match s.as_bytes().first()? {
        b'-' => (-1.0, &s[1..]),
        b'+' => (1.0, &s[1..]),
        _ => (1.0, s),
    };
    if rest.eq_ignore_ascii_case("inf") || rest.eq_ignore_ascii_case("infinity") {
        return Some(sign * f64::INFINITY);
    }
    (rest.len() == s.len() && s.eq_ignore_ascii_case("nan")).then_some(f64::NAN)
}

/// Go's rule: an underscore only between digits, or between a base prefix and a digit.
fn underscores_ok(s: &str) -> bool {
    let b = s.strip_prefix(['+', '-']).unwrap_or(s).as_bytes();
    let (mut i, mut saw, mut hex) = (0, b'^', false);
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    for &c in &b[i..] {
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

/// `123`, `1.5`, `.5`, `5.`, `1e-3`: checked for Go's syntax, then read by Rust's correctly
/// rounded parser (which agrees with Go's on every well-formed decimal).
fn decimal(body: &str) -> Option<f64> {
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(at) => (&body[..at], Some(&body[at + 1..])),
        None => (body, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |t: &str| t.bytes().all(|c| c.is_ascii_digit());
    if int.len() + frac.len() == 0 || !digits(int) || !digits(frac) {
        return None;
    }
    if let Some(e) = exp {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        if e.is_empty() || !digits(e) {
            return None;
        }
    }
    body.parse().ok()
}

/// The part after `0x`: hex digits with an optional `.`, then `p` and a decimal exponent.
fn hex(body: &str) -> Option<f64> {
    let at = body.find(['p', 'P'])?;
    let (mantissa, exp) = (&body[..at], &body[at + 1..]);
    let exp_digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
    if exp_digits.is_empty() || !exp_digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    // Huge exponents only need to saturate: the result is 0 or out of range either way.
    let mut exp2: i64 = exp_digits
        .bytes()
        .fold(0i64, |a, c| (a * 10 + i64::from(c - b'0')).min(1 << 20));
    if exp.starts_with('-') {
        exp2 = -exp2;
    }
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.len() + frac.len() == 0 {
        return None;
    }
    // 60 significant bits, plus a sticky bit for anything dropped: enough for the cast to
    // round as Go does.
    let (mut m, mut sticky) = (0u64, false);
    for (n, c) in int.bytes().chain(frac.bytes()).enumerate() {
        let d = u64::from(char::from(c).to_digit(16)?);
        if m >> 56 == 0 {
            m = m << 4 | d;
            if n >= int.len() {
                exp2 -= 4;
            }
        } else {
            sticky |= d != 0;
            if n < int.len() {
                exp2 += 4;
            }
        }
    }
    let mut v = (m | u64::from(sticky)) as f64;
    // Scale in steps so no intermediate power of two overflows.
    while exp2 != 0 {
        let step = exp2.clamp(-1000, 1000);
        v *= 2f64.powi(step as i32);
        exp2 -= step;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::parse_go_float as p;

    #[test]
    fn go_accepts() {
        assert_eq!(p("12.5"), Some(12.5));
        assert_eq!(p("-3"), Some(-3.0));
        assert_eq!(p("+.5"), Some(0.5));
        assert_eq!(p("5."), Some(5.0));
        assert_eq!(p("1e3"), Some(1000.0));
        assert_eq!(p("1E-2"), Some(0.01));
        assert_eq!(p("1_000"), Some(1000.0));
        assert_eq!(p("1_000.5_0"), Some(1000.5));
        assert_eq!(p("0x1p-2"), Some(0.25));
        assert_eq!(p("0X1.8P1"), Some(3.0));
        assert_eq!(p("-0x_1p4"), Some(-16.0));
        assert_eq!(p("0x.8p0"), Some(0.5));
        assert_eq!(
            p("0x1fffffffffffff_fp0"),
            Some(9007199254740992.0 * 16.0 - 1.0)
        );
        assert_eq!(p("inf"), Some(f64::INFINITY));
        assert_eq!(p("-Infinity"), Some(f64::NEG_INFINITY));
        assert!(p("NaN").unwrap().is_nan());
        assert_eq!(p("1e-400"), Some(0.0));
        assert_eq!(p("1.7976931348623157e308"), Some(f64::MAX));
    }

    #[test]
    fn go_refuses() {
        for s in [
            "", " 2", "2 ", "+nan", "-nan", "1e400", "-1e400", "0x1p2000", "0x1", "0x", "0xp1",
            ".", "e5", "1e", "1e+", "_1", "1_", "1__0", "1_.5", "1._5", "0b101", "infin", "1,5",
            "0x1.8", "1f", "++1",
        ] {
            assert_eq!(p(s), None, "{s:?}");
        }
    }
}
