//! How one variable's text becomes a typed value, as serde
//! `deserialize_with` readers shared by every section. Each refusal is the
//! one-line message the README documents, quoting the value, so the error
//! can name the variable (figment supplies which) and say what was wrong.

use std::str::FromStr;
use std::time::Duration;

use serde::de::{Deserializer, Error as _};
use serde::Deserialize;

/// Ten years is far past any sensible token lifetime; refusing more keeps
/// later timestamp arithmetic from overflowing.
const LONGEST: Duration = Duration::from_secs(10 * 365 * 86_400);

/// A network timeout or a timer period goes up to a day.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(86_400);

/// A whole number that fits `T` (so `PORT=70000` is refused by `u16`).
pub(super) fn number<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
{
    let raw = String::deserialize(d)?;
    raw.parse()
        .map(Some)
        .map_err(|_| D::Error::custom(format!("expected a whole number in range, got {raw:?}")))
}

/// The spellings a `.env` written for the Python service uses (`True`).
pub(super) fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let raw = String::deserialize(d)?.to_ascii_lowercase();
    match raw.as_str() {
        "true" | "1" | "yes" | "on" => Ok(Some(true)),
        "false" | "0" | "no" | "off" => Ok(Some(false)),
        other => Err(D::Error::custom(format!(
            "expected true or false, got {other:?}"
        ))),
    }
}

/// A lifetime or window: humantime's forms (`30s`, `15m`, `12h`, `7d`,
/// `1h 30m`) in whole seconds, since tokens and links carry their expiry in
/// seconds. Zero is allowed here; the sections say where it is not.
pub(super) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let raw = String::deserialize(d)?;
    parse_duration(&raw).map(Some).ok_or_else(|| {
        D::Error::custom(format!(
            "expected a duration like 30s, 15m, 12h or 7d, got {raw:?}"
        ))
    })
}

/// A network timeout or a timer period: the usual durations plus
/// milliseconds (`500ms`), so tests can use short ones, above zero (zero
/// would refuse every request) and at most a day.
pub(super) fn timeout<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let raw = String::deserialize(d)?;
    match humantime::parse_duration(&raw) {
        Ok(t) if !t.is_zero() && t <= LONGEST_TIMEOUT => Ok(Some(t)),
        _ => Err(D::Error::custom(format!(
            "expected a duration above zero and at most 1d, like 500ms, 10s or 1m, got {raw:?}"
        ))),
    }
}

/// Parses a lifetime: a humantime duration (`15m`, `7d`, `0s`, `1h 30m`) of
/// whole seconds, at most ten years. A bare number has no unit and is
/// refused rather than guessed.
pub fn parse_duration(raw: &str) -> Option<Duration> {
    humantime::parse_duration(raw.trim())
        .ok()
        .filter(|d| d.subsec_nanos() == 0 && *d <= LONGEST)
}

/// A comma-separated list, blanks between commas skipped.
pub(super) fn list(raw: &str) -> impl Iterator<Item = &str> {
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_unit_suffixes() {
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("12h"), Some(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        // humantime's compound and long forms.
        assert_eq!(parse_duration("1h 30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("90min"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("2days"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("1.5h"), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_duration("1000ms"), Some(Duration::from_secs(1)));
        for bad in [
            "",
            "15",
            "m",
            "-5m",
            "0.5s",
            "soon",
            "500ms",
            "11y",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
    }
}
