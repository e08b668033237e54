//! Durations in definitions: `90s`, `15m`, `2h`, `1d`, `500ms`, or combined `1h30m`.

use crate::error::quote;

/// Longest duration text taken: `1d23h59m59s999ms` is 16 bytes.
const MAX_TEXT_BYTES: usize = 64;

/// Parses a duration into milliseconds. Overflow is an error, never a wrap.
pub fn parse_ms(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("is empty (expected e.g. 30s, 15m, 2h, 1d)".into());
    }
    if s.len() > MAX_TEXT_BYTES {
        return Err(format!(
            "is {} bytes long, not a duration (expected e.g. 30s, 15m, 2h, 1d)",
            s.len()
        ));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Err(format!(
                "{} is not a duration (expected e.g. 30s, 15m, 2h, 1d)",
                quote(s)
            ));
        }
        let n: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("{}: number too large", quote(s)))?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(|c| c.is_ascii_alphabetic()).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("{}: missing unit (ms, s, m, h, d)", quote(s))),
            u => {
                return Err(format!(
                    "{}: unknown unit {} (ms, s, m, h, d)",
                    quote(s),
                    quote(u)
                ))
            }
        };
        total = n
            .checked_mul(factor)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("{}: too long", quote(s)))?;
    }
    Ok(total)
}

/// Parses a duration that may be at most `max` ms. When `publishing`, a
/// longer one is refused; otherwise (a definition published before the
/// bound existed) it is clamped to `max`, so that adding it to a time can
/// never overflow.
pub fn parse_bounded_ms(s: &str, max: u64, publishing: bool) -> Result<u64, String> {
    let ms = parse_ms(s)?;
    if ms > max && publishing {
        return Err(format!(
            "{} is longer than the maximum of {}",
            quote(s.trim()),
            crate::limits::describe_ms(max)
        ));
    }
    Ok(ms.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_combinations() {
        assert_eq!(parse_ms("2h"), Ok(7_200_000));
        assert_eq!(parse_ms("1h30m"), Ok(5_400_000));
        assert_eq!(parse_ms("500ms"), Ok(500));
        assert_eq!(parse_ms("2s"), Ok(2_000));
        assert!(parse_ms("2").unwrap_err().contains("missing unit"));
        assert!(parse_ms("2w").unwrap_err().contains("unknown unit"));
        assert!(parse_ms("h").is_err());
    }

    #[test]
    fn overflow_and_huge_input_are_errors_that_quote_little() {
        assert!(parse_ms("99999999999999999999d")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_ms("9999999999999999d")
            .unwrap_err()
            .contains("too long"));
        let huge = format!("{}s", "1".repeat(100_000));
        let err = parse_ms(&huge).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }

    #[test]
    fn bounded_durations_are_refused_at_publish_and_clamped_after() {
        let year = crate::limits::MAX_DELAY_MS;
        assert_eq!(parse_bounded_ms("366d", year, true), Ok(year));
        let err = parse_bounded_ms("36500d", year, true).unwrap_err();
        assert!(err.contains("longer than the maximum of 366d"), "{err}");
        assert_eq!(parse_bounded_ms("36500d", year, false), Ok(year));
    }
}
