//! FHIR dates as time ranges: a date covers its whole precision (R4 search, "date").

use medvault_base::time::{days_from_civil, days_in_month, digits as number, fraction, zone_offset_minutes};

const MS_PER_DAY: i64 = 86_400_000;

/// The range, inclusive at both ends in epoch milliseconds (UTC), that a FHIR `date`,
/// `dateTime`, `instant` or search date covers: `2020` → the whole year, `2020-03` → the
/// month, `2020-03-04` → the day, `…T10:00` → the minute, `…T10:00:05` → the second,
/// fractions → the unit of their last digit (`.5` → 100 ms, `.123` and longer → 1 ms).
///
/// A time without a zone is read as UTC: FHIR leaves it to the server's zone, and this
/// server's zone is UTC. A date without a time has no zone either, so `2020-03-04` is the
/// UTC day. `None` if malformed (years 0001–9999).
pub(crate) fn date_range(text: &str) -> Option<(i64, i64)> {
    let b = text.as_bytes();
    let year = number(b.get(0..4)?)?;
    if year == 0 {
        return None;
    }
    if b.len() == 4 {
        let start = days_from_civil(year, 1, 1) * MS_PER_DAY;
        return Some((start, days_from_civil(year + 1, 1, 1) * MS_PER_DAY - 1));
    }
    if b.get(4) != Some(&b'-') {
        return None;
    }
    let month = u32::try_from(number(b.get(5..7)?)?).ok().filter(|month| (1..=12).contains(month))?;
    if b.len() == 7 {
        let start = days_from_civil(year, month, 1) * MS_PER_DAY;
        let end = start + i64::from(days_in_month(year, month)) * MS_PER_DAY - 1;
        return Some((start, end));
    }
    if b.get(7) != Some(&b'-') {
        return None;
    }
    let day =
        u32::try_from(number(b.get(8..10)?)?).ok().filter(|day| *day >= 1 && *day <= days_in_month(year, month))?;
    let day_start = days_from_civil(year, month, day) * MS_PER_DAY;
    if b.len() == 10 {
        return Some((day_start, day_start + MS_PER_DAY - 1));
    }
    if b.get(10) != Some(&b'T') || b.get(13) != Some(&b':') {
        return None;
    }
    let hour = number(b.get(11..13)?)?;
    let minute = number(b.get(14..16)?)?;
    if hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = &b[16..];
    let mut start = day_start + (hour * 60 + minute) * 60_000;
    let mut width_ms = 60_000;
    if rest.first() == Some(&b':') {
        let second = number(rest.get(1..3)?)?;
        if second > 59 {
            return None;
        }
        start += second * 1000;
        width_ms = 1000;
        rest = &rest[3..];
        if let Some((ms, digits)) = fraction(rest)? {
            start += ms;
            width_ms = [100, 10, 1][digits.min(3) - 1];
            rest = &rest[1 + digits..];
        }
    }
    // No zone: UTC (see above).
    let offset_minutes = if rest.is_empty() { 0 } else { zone_offset_minutes(rest)? };
    let start = start - offset_minutes * 60_000;
    Some((start, start + width_ms - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use medvault_base::time::{format_instant, parse_instant};

    fn range(text: &str) -> (String, String) {
        let (low, high) = date_range(text).unwrap_or_else(|| panic!("{text} parses"));
        (format_instant(low), format_instant(high))
    }

    #[test]
    fn partial_dates_cover_their_precision() {
        assert_eq!(range("2020"), ("2020-01-01T00:00:00.000Z".into(), "2020-12-31T23:59:59.999Z".into()));
        assert_eq!(range("2020-02"), ("2020-02-01T00:00:00.000Z".into(), "2020-02-29T23:59:59.999Z".into()));
        assert_eq!(range("2019-02"), ("2019-02-01T00:00:00.000Z".into(), "2019-02-28T23:59:59.999Z".into()));
        assert_eq!(range("2013-01-14"), ("2013-01-14T00:00:00.000Z".into(), "2013-01-14T23:59:59.999Z".into()));
        assert_eq!(range("2013-01-14T10:00"), ("2013-01-14T10:00:00.000Z".into(), "2013-01-14T10:00:59.999Z".into()));
        assert_eq!(
            range("2013-01-14T10:00:05"),
            ("2013-01-14T10:00:05.000Z".into(), "2013-01-14T10:00:05.999Z".into())
        );
        assert_eq!(
            range("2013-01-14T10:00:05.5Z"),
            ("2013-01-14T10:00:05.500Z".into(), "2013-01-14T10:00:05.599Z".into())
        );
        assert_eq!(
            range("2013-01-14T10:00:05.123456Z"),
            ("2013-01-14T10:00:05.123Z".into(), "2013-01-14T10:00:05.123Z".into())
        );
        assert_eq!(
            range("2013-01-14T10:00:05+01:00"),
            ("2013-01-14T09:00:05.000Z".into(), "2013-01-14T09:00:05.999Z".into())
        );
        assert_eq!(range("2013-12-31T23:30:00-01:00").0, "2014-01-01T00:30:00.000Z");
    }

    #[test]
    fn instants_agree_with_the_base_parser() {
        for text in ["2026-11-29T03:39:14.123Z", "2000-02-29T00:00:00Z", "1969-12-31T23:59:59.999+05:30"] {
            assert_eq!(date_range(text).map(|(low, _)| low), parse_instant(text), "{text}");
        }
    }

    #[test]
    fn malformed_dates_are_refused() {
        for bad in [
            "",
            "20",
            "0000",
            "2020-13",
            "2020-00",
            "2020-02-30",
            "2020-1-01",
            "2020-01-01T",
            "2020-01-01T24:00",
            "2020-01-01T10:60",
            "2020-01-01T10:00:61",
            "2020-01-01T10:00:00.",
            "2020-01-01T10:00:00+15:00",
            "2020-01-01T10:00:00+01",
            "2020-01-01 10:00",
            "abcd",
            "2020-01-01Z",
            "２０２０",
        ] {
            assert_eq!(date_range(bad), None, "{bad:?}");
        }
    }
}
