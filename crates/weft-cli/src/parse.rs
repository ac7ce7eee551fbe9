//! Parsers of flag values that need no server: sizes, signals, `--security-opt`.

/// Parses a Docker-style size: bytes, or a number with b, k, m or g.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, unit) = match lower.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => lower.split_at(i),
        None => (lower.as_str(), "b"),
    };
    let value: f64 =
        number.parse().map_err(|_| format!("--memory {text:?}: expected a size like 64m or 1g"))?;
    let scale: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("--memory {text:?}: unknown unit {unit:?} (use b, k, m or g)")),
    };
    let bytes = (value * scale as f64) as u64;
    if bytes == 0 {
        return Err(format!("--memory {text:?}: must be more than zero"));
    }
    Ok(bytes)
}

/// Parses a signal given by number or by name, with or without `SIG`, in any case.
pub(crate) fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(n) = text.parse::<i32>() {
        return Ok(n);
    }
    let name = text.trim_start_matches("SIG").to_ascii_uppercase();
    let n = match name.as_str() {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "STOP" => 19,
        "WINCH" => 28,
        _ => return Err(format!("unknown signal {text:?} (use a number or a name like TERM, KILL, HUP)")),
    };
    Ok(n)
}

/// A `--security-opt` as sent to weftd: a seccomp profile given by path is read here, as the
/// docker client does, so the profile travels as text.
pub(crate) fn security_opt(option: &str) -> Result<String, String> {
    match option.split_once(['=', ':']) {
        Some(("seccomp", "unconfined")) => Ok(option.to_string()),
        Some(("seccomp", path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--security-opt seccomp={path}: cannot read the profile: {e}"))?;
            Ok(format!("seccomp={text}"))
        }
        _ => Ok(option.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_signals() {
        assert_eq!(parse_size("64m").unwrap(), 64 << 20);
        assert_eq!(parse_size("1g").unwrap(), 1 << 30);
        assert_eq!(parse_size("1.5k").unwrap(), 1536);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5x").unwrap_err().contains("unknown unit"));
        assert_eq!(parse_signal("SIGTERM").unwrap(), 15);
        assert_eq!(parse_signal("hup").unwrap(), 1);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("BOGUS").is_err());
    }
}
