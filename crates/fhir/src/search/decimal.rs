//! Exact decimals for number and quantity search: FHIR decimals keep their written
//! precision (`100` and `100.00` differ in what they claim), and binary floating point
//! cannot hold the bounds of an implicit range such as `[5.35, 5.45)` exactly.

use std::cmp::Ordering;
use std::fmt;

/// The most significant digits a decimal may have (FHIR asks for at least 18).
const DIGITS_MAX: u32 = 34;
/// The largest absolute decimal exponent accepted.
const EXPONENT_ABS_MAX: i32 = 400;

/// `mantissa × 10^exponent`, normalized: the mantissa has no trailing zero (zero is `0 × 10^0`),
/// so equal values have equal fields and the derived `Eq`/`Hash` agree with [`Ord`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Decimal {
    mantissa: i128,
    exponent: i32,
}

impl Decimal {
    pub const ZERO: Decimal = Decimal { mantissa: 0, exponent: 0 };

    /// `mantissa × 10^exponent`; `None` if it has more than 34 significant digits or an
    /// exponent beyond ±400.
    pub fn new(mantissa: i128, exponent: i32) -> Option<Decimal> {
        let mut decimal = Decimal { mantissa, exponent };
        if mantissa == 0 {
            return Some(Decimal::ZERO);
        }
        while decimal.mantissa % 10 == 0 {
            decimal.mantissa /= 10;
            decimal.exponent = decimal.exponent.checked_add(1)?;
        }
        (digit_count(decimal.mantissa) <= DIGITS_MAX && decimal.exponent.abs() <= EXPONENT_ABS_MAX).then_some(decimal)
    }

    pub fn mantissa(self) -> i128 {
        self.mantissa
    }

    pub fn exponent(self) -> i32 {
        self.exponent
    }

    /// Parses a FHIR decimal or a search number (`-12.50`, `1e2`, `1.5E-3`). Returns the
    /// value and the exponent of its last written digit, which gives its implicit precision:
    /// `100` → 0, `100.00` → −2, `1e2` → 2. `None` if malformed or out of range.
    pub fn parse_with_precision(text: &str) -> Option<(Decimal, i32)> {
        let (significand, exponent_text) = match text.find(['e', 'E']) {
            Some(at) => (&text[..at], Some(&text[at + 1..])),
            None => (text, None),
        };
        let (negative, unsigned) = match significand.as_bytes().first()? {
            b'-' => (true, &significand[1..]),
            b'+' => (false, &significand[1..]),
            _ => (false, significand),
        };
        let (whole, fraction) = match unsigned.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (unsigned, ""),
        };
        if whole.is_empty()
            || !whole.bytes().all(|c| c.is_ascii_digit())
            || !fraction.bytes().all(|c| c.is_ascii_digit())
            || (unsigned.contains('.') && fraction.is_empty())
        {
            return None;
        }
        let written_exponent: i32 = match exponent_text {
            Some(exponent) => {
                let digits = exponent.strip_prefix(['+', '-']).unwrap_or(exponent);
                if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                    return None;
                }
                exponent.parse().ok()?
            }
            None => 0,
        };
        let mut mantissa: i128 = 0;
        let mut significant = 0u32;
        for digit in whole.bytes().chain(fraction.bytes()) {
            if mantissa != 0 || digit != b'0' {
                significant += 1;
            }
            if significant > DIGITS_MAX {
                return None;
            }
            mantissa = mantissa * 10 + i128::from(digit - b'0');
        }
        let fraction_len = i32::try_from(fraction.len()).ok()?;
        let last_digit_exponent = written_exponent.checked_sub(fraction_len)?;
        if last_digit_exponent.abs() > EXPONENT_ABS_MAX {
            return None;
        }
        let mantissa = if negative { -mantissa } else { mantissa };
        Some((Decimal::new(mantissa, last_digit_exponent)?, last_digit_exponent))
    }

    /// Parses a decimal, dropping its precision.
    pub fn parse(text: &str) -> Option<Decimal> {
        Decimal::parse_with_precision(text).map(|(decimal, _)| decimal)
    }

    /// The implicit range of a value written with its last digit at `precision_exponent`:
    /// half a unit of that digit either side (`100` → `[99.5, 100.5)`, per the R4 search
    /// specification). `None` if the bounds overflow.
    pub fn precision_range(self, precision_exponent: i32) -> Option<(Decimal, Decimal)> {
        let half_unit = Decimal::new(5, precision_exponent.checked_sub(1)?)?;
        Some((self.checked_sub(half_unit)?, self.checked_add(half_unit)?))
    }

    pub fn checked_add(self, other: Decimal) -> Option<Decimal> {
        let exponent = self.exponent.min(other.exponent);
        let left = scale_up(self.mantissa, self.exponent - exponent)?;
        let right = scale_up(other.mantissa, other.exponent - exponent)?;
        Decimal::new(left.checked_add(right)?, exponent)
    }

    pub fn checked_sub(self, other: Decimal) -> Option<Decimal> {
        self.checked_add(Decimal { mantissa: other.mantissa.checked_neg()?, exponent: other.exponent })
    }

    /// The nearest `f64` (for bucketing; comparisons use the exact value).
    pub fn to_f64(self) -> f64 {
        format!("{}e{}", self.mantissa, self.exponent).parse().unwrap_or(f64::NAN)
    }

    fn signum(self) -> i32 {
        match self.mantissa.cmp(&0) {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }
    }

    /// The exponent of the leading digit (`123` → 2, `0.05` → −2); only for non-zero values.
    fn magnitude(self) -> i32 {
        self.exponent + i32::try_from(digit_count(self.mantissa)).unwrap_or(0) - 1
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Decimal) -> Ordering {
        let (left, right) = (*self, *other);
        match left.signum().cmp(&right.signum()) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        if left.signum() == 0 {
            return Ordering::Equal;
        }
        let by_magnitude = left.magnitude().cmp(&right.magnitude());
        let by_absolute = if by_magnitude != Ordering::Equal {
            by_magnitude
        } else {
            // Same leading digit position: scaling the one with fewer digits up to the other's
            // exponent gives at most DIGITS_MAX digits, which fits in an i128.
            let exponent = left.exponent.min(right.exponent);
            let left_scaled = scale_up(left.mantissa.abs(), left.exponent - exponent).unwrap_or(i128::MAX);
            let right_scaled = scale_up(right.mantissa.abs(), right.exponent - exponent).unwrap_or(i128::MAX);
            left_scaled.cmp(&right_scaled)
        };
        if left.signum() < 0 {
            by_absolute.reverse()
        } else {
            by_absolute
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Decimal) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Beyond this many digits (or zeros after the point), [`Decimal`] displays in scientific
/// notation, so that what it writes always parses back.
const PLAIN_DIGITS_MAX: i32 = 30;

impl fmt::Display for Decimal {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.exponent > PLAIN_DIGITS_MAX - i32::try_from(digit_count(self.mantissa)).unwrap_or(0)
            || self.exponent < -PLAIN_DIGITS_MAX
        {
            return write!(formatter, "{}e{}", self.mantissa, self.exponent);
        }
        if self.exponent >= 0 {
            let zeros = "0".repeat(usize::try_from(self.exponent).unwrap_or(0));
            return write!(formatter, "{}{zeros}", self.mantissa);
        }
        let digits = self.mantissa.unsigned_abs().to_string();
        let fraction_len = usize::try_from(-self.exponent).unwrap_or(0);
        let sign = if self.mantissa < 0 { "-" } else { "" };
        if digits.len() > fraction_len {
            let (whole, fraction) = digits.split_at(digits.len() - fraction_len);
            write!(formatter, "{sign}{whole}.{fraction}")
        } else {
            write!(formatter, "{sign}0.{}{digits}", "0".repeat(fraction_len - digits.len()))
        }
    }
}

fn digit_count(mantissa: i128) -> u32 {
    mantissa.unsigned_abs().checked_ilog10().map_or(1, |log| log + 1)
}

fn scale_up(mantissa: i128, by: i32) -> Option<i128> {
    let by = u32::try_from(by).ok()?;
    mantissa.checked_mul(10i128.checked_pow(by)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).expect("a decimal")
    }

    #[test]
    fn parses_with_the_precision_of_the_last_digit() {
        assert_eq!(Decimal::parse_with_precision("100"), Some((d("100"), 0)));
        assert_eq!(Decimal::parse_with_precision("100.00"), Some((d("100"), -2)));
        assert_eq!(Decimal::parse_with_precision("1e2"), Some((d("100"), 2)));
        assert_eq!(Decimal::parse_with_precision("-1.5E-3"), Some((d("-0.0015"), -4)));
        for bad in ["", "-", "1.", ".5", "1e", "1e+", "a", "1.2.3", "1e99999", "--1", "1 "] {
            assert_eq!(Decimal::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn implicit_ranges_follow_the_specification() {
        let range = |text: &str| {
            let (value, precision) = Decimal::parse_with_precision(text).expect("a decimal");
            let (low, high) = value.precision_range(precision).expect("in range");
            (low.to_string(), high.to_string())
        };
        assert_eq!(range("100"), ("99.5".into(), "100.5".into()));
        assert_eq!(range("100.00"), ("99.995".into(), "100.005".into()));
        assert_eq!(range("1e2"), ("50".into(), "150".into()));
        assert_eq!(range("5.4"), ("5.35".into(), "5.45".into()));
        assert_eq!(range("-0.5"), ("-0.55".into(), "-0.45".into()));
    }

    #[test]
    fn orders_exactly() {
        let ordered = ["-1000", "-5.45", "-5.4", "-0.001", "0", "0.0000001", "5.35", "5.4", "5.4000001", "1e3", "1001"];
        for (i, left) in ordered.iter().enumerate() {
            for (j, right) in ordered.iter().enumerate() {
                assert_eq!(d(left).cmp(&d(right)), i.cmp(&j), "{left} vs {right}");
            }
        }
        assert_eq!(d("1.50"), d("1.5"));
        assert_eq!(d("1e3"), d("1000"));
        assert_eq!(d("0.00"), Decimal::ZERO);
        for text in ["-1.000000000000000000E+245", "1E-22", "1e-245", "123.456", "-0.000001", "1e29", "1e31"] {
            let decimal = d(text);
            assert_eq!(Decimal::parse(&decimal.to_string()), Some(decimal), "{text} → {decimal}");
        }
        assert_eq!(d("1e31").to_string(), "1e31");
        assert_eq!(d("1e29").to_string(), "100000000000000000000000000000");
        assert!((d("5.35").to_f64() - 5.35).abs() < 1e-12);
    }
}
