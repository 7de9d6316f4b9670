//! Sizes as `qemu-img` takes them: plain bytes or a number with a binary suffix.

use std::fmt;

/// A size that does not parse: the message says what was given and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseSizeError(String);

impl fmt::Display for ParseSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseSizeError {}

impl ParseSizeError {
    /// Whether the message contains `s` (for tests).
    #[cfg(test)]
    fn contains(&self, s: &str) -> bool {
        self.0.contains(s)
    }
}

/// Parses `512`, `64K`, `1M`, `64G`, `2T`, `1.5G`, `4096B` (suffixes B, K, M, G, T, P, E in
/// either case, powers of 1024). A fraction must come to a whole number of bytes.
///
/// ```
/// assert_eq!(parallels_image::parse_size("64G"), Ok(64 << 30));
/// assert_eq!(parallels_image::parse_size("1.5K"), Ok(1536));
/// assert!(parallels_image::parse_size("1X").is_err());
/// ```
pub fn parse_size(text: &str) -> Result<u64, ParseSizeError> {
    parse(text).map_err(ParseSizeError)
}

fn parse(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {text:?} (expected bytes or a number with K, M, G, T, P or E)");
    let t = text.trim();
    if t.starts_with('-') {
        return Err(format!(
            "size {text:?} is negative (a size is a number of bytes, 0 or more)"
        ));
    }
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, suffix) = t.split_at(split);
    let shift = match suffix.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        "E" | "EB" | "EIB" => 60,
        _ => return Err(bad()),
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(bad());
    }
    let too_big = || format!("size {text:?} is too large (more than 2^64 - 1 bytes)");
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_big())?
    };
    let mut value = whole
        .checked_shl(shift)
        .filter(|v| *v <= u128::from(u64::MAX))
        .ok_or_else(too_big)?;
    if !frac.is_empty() {
        if frac.len() > 18 {
            return Err(bad());
        }
        let digits: u128 = frac.parse().map_err(|_| bad())?;
        let scale = 10u128.pow(frac.len() as u32);
        let scaled = digits << shift;
        if !scaled.is_multiple_of(scale) {
            return Err(format!("size {text:?} is not a whole number of bytes"));
        }
        value += scaled / scale;
    }
    u64::try_from(value).map_err(|_| too_big())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512"), Ok(512));
        assert_eq!(parse_size("4096B"), Ok(4096));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn binary_suffixes_either_case() {
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1M"), Ok(1048576));
        assert_eq!(parse_size("64G"), Ok(68719476736));
        assert_eq!(parse_size("2T"), Ok(2199023255552));
        assert_eq!(parse_size("1P"), Ok(1125899906842624));
        assert_eq!(parse_size("15E"), Ok(15 << 60));
        assert_eq!(parse_size("1KiB"), Ok(1024));
    }

    #[test]
    fn fractions_must_be_whole_bytes() {
        assert_eq!(parse_size("1.5G"), Ok(1610612736));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size(".5M"), Ok(524288));
        assert!(parse_size("1.1").unwrap_err().contains("whole number"));
        assert!(parse_size("0.3K").unwrap_err().contains("whole number"));
    }

    #[test]
    fn rejects_garbage_and_overflow() {
        for bad in ["", "G", "-1", "1X", "1.2.3K", "0x10", "1 G G", "."] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("16E").unwrap_err().contains("too large"));
        assert!(parse_size("18446744073709551616").unwrap_err().contains("too large"));
        assert!(parse_size("99999999999999999999999999999999999999999")
            .unwrap_err()
            .contains("too large"));
    }
}
