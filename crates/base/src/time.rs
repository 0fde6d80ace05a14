//! UTC calendar arithmetic for FHIR instants and HTTP dates, without a time library.
//!
//! Days from civil dates use Howard Hinnant's public-domain algorithm; everything is in
//! fixed-size integers so that results do not depend on the platform.

const MS_PER_DAY: i64 = 86_400_000;
const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// A UTC date and time broken into fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub millisecond: u32,
}

pub fn civil_from_ms(epoch_ms: i64) -> Civil {
    let days = epoch_ms.div_euclid(MS_PER_DAY);
    let ms_of_day = epoch_ms.rem_euclid(MS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let ms_of_day = u32::try_from(ms_of_day).unwrap_or(0);
    Civil {
        year,
        month,
        day,
        hour: ms_of_day / 3_600_000,
        minute: ms_of_day / 60_000 % 60,
        second: ms_of_day / 1000 % 60,
        millisecond: ms_of_day % 1000,
    }
}

/// FHIR `instant` in UTC with milliseconds: `2026-11-29T03:39:14.123Z`.
pub fn format_instant(epoch_ms: i64) -> String {
    let c = civil_from_ms(epoch_ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millisecond
    )
}

/// RFC 9110 `IMF-fixdate`, for `Last-Modified`: `Sun, 29 Nov 2026 03:39:14 GMT`.
pub fn format_http_date(epoch_ms: i64) -> String {
    let c = civil_from_ms(epoch_ms);
    let weekday = WEEKDAYS[usize::try_from(epoch_ms.div_euclid(MS_PER_DAY).rem_euclid(7)).unwrap_or(0)];
    let month = MONTHS[usize::try_from(c.month - 1).unwrap_or(0)];
    format!("{weekday}, {:02} {month} {:04} {:02}:{:02}:{:02} GMT", c.day, c.year, c.hour, c.minute, c.second)
}

/// Parses a FHIR `instant` (`YYYY-MM-DDThh:mm:ss[.fff…](Z|±hh:mm)`) into epoch
/// milliseconds. Fractions beyond milliseconds are truncated. `None` if malformed.
pub fn parse_instant(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits(&b[0..4])?;
    let month = u32::try_from(digits(&b[5..7])?).ok()?;
    let day = u32::try_from(digits(&b[8..10])?).ok()?;
    let hour = digits(&b[11..13])?;
    let minute = digits(&b[14..16])?;
    let second = digits(&b[17..19])?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &b[19..];
    let mut millisecond = 0i64;
    if let Some((ms, fraction_len)) = fraction(rest)? {
        millisecond = ms;
        rest = &rest[1 + fraction_len..];
    }
    let offset_minutes = zone_offset_minutes(rest)?;
    let days = days_from_civil(year, month, day);
    let local_ms = days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + millisecond;
    Some(local_ms - offset_minutes * 60_000)
}

/// The value of ASCII decimal digits; `None` if empty or any byte is not a digit.
pub fn digits(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() {
        return None;
    }
    bytes.iter().try_fold(0i64, |value, c| c.is_ascii_digit().then(|| value * 10 + i64::from(c - b'0')))
}

/// A fraction of a second at the start of `rest` (`.` and at least one digit): its whole
/// milliseconds (digits beyond the third truncated) and its number of digits;
/// `Some(None)` when `rest` does not start with `.`; `None` (malformed) if the dot has no
/// digit.
pub fn fraction(rest: &[u8]) -> Option<Option<(i64, usize)>> {
    if rest.first() != Some(&b'.') {
        return Some(None);
    }
    let len = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if len == 0 {
        return None;
    }
    let ms = [100i64, 10, 1].iter().zip(&rest[1..1 + len]).map(|(place, digit)| i64::from(digit - b'0') * place).sum();
    Some(Some((ms, len)))
}

/// A zone designator, the whole of `zone`: `Z` or `±hh:mm` (at most ±14:00), in minutes
/// east of UTC; `None` otherwise.
pub fn zone_offset_minutes(zone: &[u8]) -> Option<i64> {
    match zone {
        [b'Z'] => Some(0),
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = digits(&[*h1, *h2])?;
            let minutes = digits(&[*m1, *m2])?;
            if hours > 14 || minutes > 59 {
                return None;
            }
            let total = hours * 60 + minutes;
            Some(if *sign == b'-' { -total } else { total })
        }
        _ => None,
    }
}

pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        _ => 0,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = u32::try_from(day_of_year - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_instant(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_instant(1_795_923_554_123), "2026-11-29T03:39:14.123Z");
        assert_eq!(format_instant(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(format_http_date(784_111_777_000), "Sun, 06 Nov 1994 08:49:37 GMT");
    }

    #[test]
    fn parses_what_it_formats_and_offsets() {
        for ms in [0, 1_795_923_554_123, 951_782_400_000, -86_400_001] {
            assert_eq!(parse_instant(&format_instant(ms)), Some(ms));
        }
        assert_eq!(parse_instant("2026-11-29T04:39:14+01:00"), Some(1_795_923_554_000));
        assert_eq!(parse_instant("2026-11-29T03:39:14.1234567Z"), Some(1_795_923_554_123));
        for bad in ["2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-29T03:39:14", "2026-11-29", "x"] {
            assert_eq!(parse_instant(bad), None, "{bad}");
        }
    }
}
