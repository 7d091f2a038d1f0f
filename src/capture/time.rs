//! Calendar dates to epoch seconds, for imported timestamps.

/// Years an imported timestamp may have. Far outside them the arithmetic
/// below overflows (the fuzzer found `startedDateTime` years of 19 digits);
/// no capture of real traffic is dated there.
pub const YEARS: std::ops::RangeInclusive<i64> = 0..=9999;

/// Seconds since the Unix epoch of a UTC date and time; `None` for a year
/// outside [`YEARS`].
pub fn epoch_seconds(year: i64, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> Option<i64> {
    if !YEARS.contains(&year) || month > 12 || day > 31 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second))
}

/// `+01:00`, `-0700`, `Z` → seconds east of UTC.
pub fn offset_seconds(text: &str) -> Option<i64> {
    if text == "Z" || text == "z" {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let digits: String = rest.chars().filter(|c| *c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let hours: i64 = digits[..2].parse().ok()?;
    let minutes: i64 = digits[2..].parse().ok()?;
    Some(sign * (hours * 3600 + minutes * 60))
}

/// An RFC 3339 / ISO 8601 date-time with an offset
/// (`2026-11-29T01:27:44.658+01:00`) as fractional epoch seconds.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let text = text.trim();
    let (date, time) = text.split_once(['T', 't', ' '])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    let offset_at = time.find(['Z', 'z', '+', '-']).unwrap_or(time.len());
    let (clock, offset) = time.split_at(offset_at);
    let offset = if offset.is_empty() { 0 } else { offset_seconds(offset)? };
    let mut clock_parts = clock.split(':');
    let hour: u32 = clock_parts.next()?.parse().ok()?;
    let minute: u32 = clock_parts.next()?.parse().ok()?;
    let seconds: f64 = clock_parts.next().unwrap_or("0").parse().ok()?;
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || !(0.0..61.0).contains(&seconds)
    {
        return None;
    }
    let whole = epoch_seconds(year, month, day, hour, minute, 0)? - offset;
    Some(whole as f64 + seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_offsets() {
        assert_eq!(epoch_seconds(1970, 1, 1, 0, 0, 0), Some(0));
        assert_eq!(epoch_seconds(2026, 11, 29, 1, 27, 44), Some(1_795_915_664));
        // Found by the fuzzer (import_har): a 19-digit year overflowed.
        assert_eq!(parse_rfc3339("9223372036854775807-11-29T01:27:44Z"), None);
        assert_eq!(epoch_seconds(-4_000_000_000_000_000, 1, 1, 0, 0, 0), None);
        assert_eq!(parse_rfc3339("2026-11-29T01:27:44.5Z"), Some(1_795_915_664.5));
        assert_eq!(parse_rfc3339("2026-11-29T02:27:44.5+01:00"), Some(1_795_915_664.5));
        assert_eq!(parse_rfc3339("2026-11-28T18:27:44-0700"), Some(1_795_915_664.0));
        assert_eq!(parse_rfc3339("yesterday"), None);
        assert_eq!(offset_seconds("-0700"), Some(-25_200));
    }
}
