//! Durations as Docker writes them (Go's `time.ParseDuration`): a sequence of decimal numbers,
//! each with a unit, such as `300ms`, `1.5h`, `1m30s` or `0`. Dockerfile `HEALTHCHECK` flags and
//! `weft run --health-*` take them; both must read them the same way.

use std::time::Duration;

/// Parses `text`; the error says what is wrong with it.
pub fn parse(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{text:?} is not a duration ({why}; e.g. 500ms, 30s, 1m30s)");
    let mut rest = text.trim();
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(bad("empty"));
    }
    if rest.starts_with('-') {
        return Err(bad("negative"));
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if number_len == 0 {
            return Err(bad("a number must come before each unit"));
        }
        let number: f64 = rest[..number_len].parse().map_err(|_| bad("not a number"))?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let nanos_per = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => return Err(bad("missing unit")),
            _ => return Err(bad("unknown unit; use ns, us, ms, s, m or h")),
        };
        rest = &rest[unit_len..];
        total += number * nanos_per;
    }
    if total > u64::MAX as f64 {
        return Err(bad("too long"));
    }
    Ok(Duration::from_nanos(total.round() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_durations() {
        let ms = |n| Duration::from_millis(n);
        for (text, want) in [
            ("0", Duration::ZERO),
            ("30s", ms(30_000)),
            ("500ms", ms(500)),
            ("1m30s", ms(90_000)),
            ("1.5h", ms(5_400_000)),
            ("2h45m", ms(9_900_000)),
            ("10us", Duration::from_micros(10)),
            ("7ns", Duration::from_nanos(7)),
        ] {
            assert_eq!(parse(text), Ok(want), "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("5", "missing unit"),
            ("5x", "unknown unit"),
            ("-1s", "negative"),
            ("s", "number"),
        ] {
            assert!(parse(text).unwrap_err().contains(why), "{text}: {:?}", parse(text));
        }
    }
}
