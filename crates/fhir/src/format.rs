//! Lexical checks of FHIR R4 primitive values, written by hand from the regular
//! expressions in the specification (`profiles-types.json`, the `regex` extension of each
//! primitive's `value`), so that no regex engine runs on the write path.
//!
//! "Whitespace" is the regex `\s` class of the specification: space, tab, line feed,
//! vertical tab, form feed, carriage return. Dates must also be real calendar dates
//! (the specification requires valid dates; its regex alone accepts `2021-02-31`).

/// Why an integer-valued primitive was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntegerProblem {
    Syntax,
    Range,
}

/// The largest value of `integer`, `positiveInt` and `unsignedInt` (a 32-bit signed integer).
pub(crate) const INTEGER_MAX: i64 = i32::MAX as i64;
pub(crate) const INTEGER_MIN: i64 = i32::MIN as i64;

fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// `string`, `markdown`: `[ \r\n\t\S]+`: not empty, no vertical tab or form feed.
pub(crate) fn is_string(text: &str) -> bool {
    !text.is_empty() && !text.bytes().any(|byte| byte == 0x0b || byte == 0x0c)
}

/// `uri`, `url`, `canonical`: `\S*`, and not empty (JSON forbids empty values).
pub(crate) fn is_uri(text: &str) -> bool {
    !text.is_empty() && !text.bytes().any(is_space)
}

/// `code`: `[^\s]+(\s[^\s]+)*`: no leading, trailing or doubled whitespace.
pub(crate) fn is_code(text: &str) -> bool {
    let bytes = text.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else { return false };
    if is_space(*first) || is_space(*last) {
        return false;
    }
    !bytes.windows(2).any(|pair| is_space(pair[0]) && is_space(pair[1]))
}

/// `id`: `[A-Za-z0-9\-\.]{1,64}`.
pub(crate) fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.')
}

/// `oid`: `urn:oid:[0-2](\.(0|[1-9][0-9]*))+`.
pub(crate) fn is_oid(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("urn:oid:") else { return false };
    let mut arcs = rest.split('.');
    let first_ok = matches!(arcs.next(), Some("0" | "1" | "2"));
    let mut count = 0;
    let rest_ok = arcs.all(|arc| {
        count += 1;
        is_unsigned_digits(arc)
    });
    first_ok && rest_ok && count >= 1
}

/// `0|[1-9][0-9]*`.
fn is_unsigned_digits(text: &str) -> bool {
    let bytes = text.as_bytes();
    match bytes {
        [] => false,
        [b'0'] => true,
        [b'0', ..] => false,
        _ => bytes.iter().all(u8::is_ascii_digit),
    }
}

/// `uuid`: `urn:uuid:` and 8-4-4-4-12 lower-case hexadecimal digits.
pub(crate) fn is_uuid(text: &str) -> bool {
    let Some(rest) = text.strip_prefix("urn:uuid:") else { return false };
    let bytes = rest.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(index, byte)| match index {
            8 | 13 | 18 | 23 => *byte == b'-',
            _ => byte.is_ascii_digit() || (b'a'..=b'f').contains(byte),
        })
}

/// `base64Binary`: `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`: groups of four characters, with
/// whitespace only between groups.
pub(crate) fn is_base64(text: &str) -> bool {
    let is_alphabet = |byte: u8| byte.is_ascii_alphanumeric() || matches!(byte, b'+' | b'/' | b'=');
    let bytes = text.as_bytes();
    let mut at = 0;
    let mut groups = 0usize;
    loop {
        while at < bytes.len() && is_space(bytes[at]) {
            at += 1;
        }
        if at == bytes.len() {
            return groups > 0;
        }
        let Some(group) = bytes.get(at..at + 4) else { return false };
        if !group.iter().all(|byte| is_alphabet(*byte)) {
            return false;
        }
        at += 4;
        groups += 1;
    }
}

/// `decimal`: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` (the JSON number grammar).
pub(crate) fn is_decimal(text: &str) -> bool {
    let mut cursor = Cursor::new(text);
    cursor.eat(b'-');
    if !cursor.unsigned_integer() {
        return false;
    }
    if cursor.eat(b'.') && cursor.digit_run() == 0 {
        return false;
    }
    if cursor.eat(b'e') || cursor.eat(b'E') {
        let _ = cursor.eat(b'+') || cursor.eat(b'-');
        if cursor.digit_run() == 0 {
            return false;
        }
    }
    cursor.done()
}

/// `integer` (`-?([0]|([1-9][0-9]*))`), `unsignedInt` (`[0]|([1-9][0-9]*)`) and
/// `positiveInt` (`[1-9][0-9]*`), with `min` 0 or 1 for the latter two, all within 32 bits.
pub(crate) fn integer(text: &str, min: i64) -> Result<(), IntegerProblem> {
    let digits = match text.strip_prefix('-') {
        Some(_) if min >= 0 => return Err(IntegerProblem::Syntax),
        Some(digits) => digits,
        None => text,
    };
    if !is_unsigned_digits(digits) || (min > 0 && digits == "0") {
        return Err(IntegerProblem::Syntax);
    }
    if digits.len() > 10 {
        return Err(IntegerProblem::Range);
    }
    let value: i64 = text.parse().map_err(|_| IntegerProblem::Syntax)?;
    if value < min.max(INTEGER_MIN) || value > INTEGER_MAX {
        return Err(IntegerProblem::Range);
    }
    Ok(())
}

/// The length of `YYYY-MM-DD`.
const FULL_DATE_BYTES: usize = 10;

/// `date`: `YYYY`, `YYYY-MM` or `YYYY-MM-DD`.
pub(crate) fn is_date(text: &str) -> bool {
    let mut cursor = Cursor::new(text);
    cursor.partial_date() && cursor.done()
}

/// `dateTime`: a `date`, or a full date with `T`, a time and a time zone.
pub(crate) fn is_date_time(text: &str) -> bool {
    let mut cursor = Cursor::new(text);
    if !cursor.partial_date() {
        return false;
    }
    if cursor.done() {
        return true;
    }
    cursor.at == FULL_DATE_BYTES && cursor.eat(b'T') && cursor.time() && cursor.zone() && cursor.done()
}

/// `instant`: a full date, `T`, a time and a time zone.
pub(crate) fn is_instant(text: &str) -> bool {
    let mut cursor = Cursor::new(text);
    cursor.partial_date()
        && cursor.at == FULL_DATE_BYTES
        && cursor.eat(b'T')
        && cursor.time()
        && cursor.zone()
        && cursor.done()
}

/// `time`: `hh:mm:ss` with optional fraction, no zone.
pub(crate) fn is_time(text: &str) -> bool {
    let mut cursor = Cursor::new(text);
    cursor.time() && cursor.done()
}

// `u32::is_multiple_of` is newer than the workspace's rust-version (1.85).
#[allow(clippy::manual_is_multiple_of)]
fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor { bytes: text.as_bytes(), at: 0 }
    }

    fn done(&self) -> bool {
        self.at == self.bytes.len()
    }

    fn eat(&mut self, byte: u8) -> bool {
        if self.bytes.get(self.at) == Some(&byte) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Exactly `count` digits as a number.
    fn number(&mut self, count: usize) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + count)?;
        let mut value = 0u32;
        for digit in digits {
            if !digit.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u32::from(digit - b'0');
        }
        self.at += count;
        Some(value)
    }

    fn digit_run(&mut self) -> usize {
        let start = self.at;
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
        self.at - start
    }

    /// `0|[1-9][0-9]*`
    fn unsigned_integer(&mut self) -> bool {
        if self.eat(b'0') {
            return true;
        }
        self.bytes.get(self.at).is_some_and(|byte| (b'1'..=b'9').contains(byte)) && self.digit_run() > 0
    }

    /// `YYYY(-MM(-DD)?)?`, year 0001–9999, a real day of the month.
    fn partial_date(&mut self) -> bool {
        let Some(year) = self.number(4) else { return false };
        if year == 0 {
            return false;
        }
        if !self.eat(b'-') {
            return true;
        }
        let Some(month) = self.number(2) else { return false };
        if !(1..=12).contains(&month) {
            return false;
        }
        if !self.eat(b'-') {
            return true;
        }
        let Some(day) = self.number(2) else { return false };
        (1..=days_in_month(year, month)).contains(&day)
    }

    /// `([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]+)?`
    fn time(&mut self) -> bool {
        let hour_ok = self.number(2).is_some_and(|hour| hour <= 23);
        let minute_ok = hour_ok && self.eat(b':') && self.number(2).is_some_and(|minute| minute <= 59);
        let second_ok = minute_ok && self.eat(b':') && self.number(2).is_some_and(|second| second <= 60);
        second_ok && (!self.eat(b'.') || self.digit_run() > 0)
    }

    /// `Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00)`
    fn zone(&mut self) -> bool {
        if self.eat(b'Z') {
            return true;
        }
        if !(self.eat(b'+') || self.eat(b'-')) {
            return false;
        }
        let Some(hour) = self.number(2) else { return false };
        if !self.eat(b':') {
            return false;
        }
        let Some(minute) = self.number(2) else { return false };
        (hour <= 13 && minute <= 59) || (hour == 14 && minute == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_follow_the_specification() {
        for good in ["2020", "2020-02", "2020-02-29", "0001-01-01", "2000-02-29"] {
            assert!(is_date(good), "{good}");
        }
        for bad in ["0000", "20", "2020-13", "2020-13-01", "2021-02-29", "1900-02-29", "2020-1-01", "2020-01-01T"] {
            assert!(!is_date(bad), "{bad}");
        }
        for good in ["2020", "2020-01-01", "2020-01-01T10:00:00Z", "2020-01-01T23:59:60.123+14:00"] {
            assert!(is_date_time(good), "{good}");
        }
        for bad in ["2020-01T10:00:00Z", "2020-01-01T10:00:00", "2020-01-01T10:00Z", "2020-01-01T24:00:00Z"] {
            assert!(!is_date_time(bad), "{bad}");
        }
        assert!(is_instant("2015-02-07T13:28:17.239+02:00"));
        assert!(!is_instant("2015-02-07"));
        assert!(!is_instant("2015-02-07T13:28:17+14:30"));
        assert!(!is_instant("2015-02T13:28:17Z"));
        assert!(is_time("13:28:17.5") && !is_time("13:28") && !is_time("13:28:17Z"));
    }

    #[test]
    fn numbers_follow_the_specification() {
        for good in ["0", "-0", "1.50", "-12.5e-3", "1E10"] {
            assert!(is_decimal(good), "{good}");
        }
        for bad in ["01", "1.", ".5", "1e", "+1", "--1"] {
            assert!(!is_decimal(bad), "{bad}");
        }
        assert_eq!(integer("2147483647", INTEGER_MIN), Ok(()));
        assert_eq!(integer("-2147483648", INTEGER_MIN), Ok(()));
        assert_eq!(integer("2147483648", INTEGER_MIN), Err(IntegerProblem::Range));
        assert_eq!(integer("99999999999999999999", INTEGER_MIN), Err(IntegerProblem::Range));
        assert_eq!(integer("1.0", INTEGER_MIN), Err(IntegerProblem::Syntax));
        assert_eq!(integer("0", 1), Err(IntegerProblem::Syntax));
        assert_eq!(integer("-1", 0), Err(IntegerProblem::Syntax));
        assert_eq!(integer("0", 0), Ok(()));
    }

    #[test]
    fn strings_follow_the_specification() {
        assert!(is_code("a b") && !is_code(" a") && !is_code("a ") && !is_code("a  b") && !is_code(""));
        assert!(is_uri("http://x") && !is_uri("http://x y") && !is_uri(""));
        assert!(is_id("a-B.9") && !is_id("a_b") && !is_id(&"a".repeat(65)));
        assert!(is_oid("urn:oid:1.2.840") && !is_oid("urn:oid:3.1") && !is_oid("urn:oid:1") && !is_oid("urn:oid:1.02"));
        assert!(is_uuid("urn:uuid:53fefa32-fcbb-4ff8-8a92-55ee120877b7"));
        assert!(!is_uuid("urn:uuid:53FEFA32-fcbb-4ff8-8a92-55ee120877b7"));
        assert!(is_base64("aGVsbG8=") && is_base64("aGVs\nbG8=") && !is_base64("aGVsbG8") && !is_base64("aG Vs"));
        assert!(is_string(" x ") && !is_string("") && !is_string("a\u{b}"));
    }
}
