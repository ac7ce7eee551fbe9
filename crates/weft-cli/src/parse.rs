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

/// Parses a signal given by number, or by name in any case, with or without `SIG` (`TERM`,
/// `term`, `SIGTERM`, `sigterm`), as Docker does.
pub(crate) fn parse_signal(text: &str) -> Result<i32, String> {
    if let Ok(n) = text.parse::<i32>() {
        return Ok(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.trim_start_matches("SIG");
    let n = match name {
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
        assert_eq!(parse_signal("sigterm").unwrap(), 15, "Docker takes any case, with SIG too");
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("BOGUS").is_err());
    }

    #[test]
    fn sizes_take_units_in_any_case_with_an_optional_b() {
        assert_eq!(parse_size("512b").unwrap(), 512);
        assert_eq!(parse_size("64mb").unwrap(), 64 << 20);
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("8kB").unwrap(), 8 << 10);
        assert_eq!(parse_size(" 1m ").unwrap(), 1 << 20);
        assert_eq!(parse_size("0.5g").unwrap(), 512 << 20);
    }

    #[test]
    fn sizes_refuse_zero_empty_and_garbage_naming_the_flag() {
        assert!(parse_size("0").unwrap_err().contains("more than zero"));
        assert!(parse_size("0m").unwrap_err().contains("more than zero"));
        assert!(parse_size("").unwrap_err().contains("expected a size"));
        assert!(parse_size("m").unwrap_err().contains("expected a size"));
        assert!(parse_size("1t").unwrap_err().contains("unknown unit"));
        assert!(parse_size("-1m").is_err());
        assert!(parse_size("lots").unwrap_err().starts_with("--memory \"lots\""));
    }

    #[test]
    fn signals_by_number_and_every_known_name() {
        let names = [
            ("HUP", 1),
            ("INT", 2),
            ("QUIT", 3),
            ("KILL", 9),
            ("USR1", 10),
            ("USR2", 12),
            ("TERM", 15),
            ("CONT", 18),
            ("STOP", 19),
            ("WINCH", 28),
        ];
        for (name, number) in names {
            assert_eq!(parse_signal(name).unwrap(), number, "{name}");
            assert_eq!(parse_signal(&format!("SIG{name}")).unwrap(), number, "SIG{name}");
            assert_eq!(parse_signal(&name.to_ascii_lowercase()).unwrap(), number, "{name} in lower case");
        }
        // Numbers pass through unchecked: the server says whether it knows the signal.
        assert_eq!(parse_signal("0").unwrap(), 0);
        assert_eq!(parse_signal("64").unwrap(), 64);
        assert!(parse_signal("").is_err());
        assert!(parse_signal("SIG").is_err());
        assert!(parse_signal("BOGUS").unwrap_err().contains("unknown signal \"BOGUS\""));
    }

    #[test]
    fn security_opts_pass_through_except_a_seccomp_profile_path() {
        for option in [
            "seccomp=unconfined",
            "seccomp:unconfined",
            "no-new-privileges",
            "no-new-privileges=true",
            "no-new-privileges:false",
            "apparmor=unconfined",
            "label=disable",
        ] {
            assert_eq!(security_opt(option).unwrap(), option);
        }
    }

    #[test]
    fn a_seccomp_profile_path_is_read_and_sent_as_text() {
        let path = std::env::temp_dir().join(format!("weft-cli-seccomp-{}.json", std::process::id()));
        let profile = r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#;
        std::fs::write(&path, profile).unwrap();
        let sent = security_opt(&format!("seccomp={}", path.display()));
        let sent_colon = security_opt(&format!("seccomp:{}", path.display()));
        std::fs::remove_file(&path).unwrap();
        assert_eq!(sent.unwrap(), format!("seccomp={profile}"));
        assert_eq!(sent_colon.unwrap(), format!("seccomp={profile}"));
        let missing = security_opt("seccomp=/nonexistent/weft-profile.json").unwrap_err();
        assert!(missing.starts_with("--security-opt seccomp=/nonexistent/weft-profile.json: cannot read"));
    }
}
