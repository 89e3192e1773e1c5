//! Bandwidth limits: the setting (bytes per second with a suffix, `off`,
//! or rclone's timetable), and the throttle that every byte of an object
//! this process sends or receives passes through.
//!
//! The throttle paces rather than counts: each piece of data reserves the
//! time it takes at the rate in force, one reservation after the other, so
//! the bytes of all movers together never go faster than the limit, however
//! many movers there are and however fast the server is.

use chrono::{Datelike, Local, Timelike};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// A bandwidth limit as the user wrote it: one rate, `off`, or a
/// timetable of `[Day-]HH:MM,rate` entries (local time), as rclone's
/// `--bwlimit` takes them.
#[derive(Clone, PartialEq, Eq)]
pub struct BandwidthLimit {
    text: String,
    /// Sorted by their minute of the week; empty means no limit ever.
    slots: Vec<Slot>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    /// Minutes since Monday 00:00.
    minute: u32,
    /// Bytes per second; none means unlimited.
    rate: Option<u64>,
}

const DAY: u32 = 24 * 60;
const WEEK: u32 = 7 * DAY;
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bandwidth limit {input:?}: {problem}")]
pub struct InvalidLimit {
    input: String,
    problem: String,
}

impl BandwidthLimit {
    /// No limit.
    pub fn off() -> BandwidthLimit {
        BandwidthLimit {
            text: "off".into(),
            slots: Vec::new(),
        }
    }

    /// Reads a limit. The grammar is exactly [`PATTERN`]'s (the API
    /// document publishes it), so that what the document allows is what
    /// is accepted.
    /// A number of bytes per second, at every hour.
    fn bytes(n: u64) -> BandwidthLimit {
        BandwidthLimit {
            text: n.to_string(),
            slots: vec![Slot {
                minute: 0,
                rate: Some(n),
            }],
        }
    }

    pub fn parse(input: &str) -> Result<BandwidthLimit, InvalidLimit> {
        let fail = |problem: String| InvalidLimit {
            input: input.to_string(),
            problem,
        };
        let words: Vec<&str> = input.split(SPACE).filter(|w| !w.is_empty()).collect();
        let text = words.join(" ");
        if text.is_empty() {
            return Err(fail(
                "empty: give a rate such as 512k or 20M, off, or a timetable such as \"08:00,2M 23:00,off\"".into(),
            ));
        }
        if !text.contains(',') {
            if words.len() > 1 {
                return Err(fail(
                    "one rate, or a timetable of [Day-]HH:MM,rate entries".into(),
                ));
            }
            let rate = parse_rate(&text).map_err(fail)?;
            let slots = match rate {
                None => Vec::new(),
                Some(_) => vec![Slot { minute: 0, rate }],
            };
            return Ok(BandwidthLimit { text, slots });
        }
        let mut slots: Vec<Slot> = Vec::new();
        for entry in words {
            let (when, rate) = entry.split_once(',').ok_or_else(|| {
                fail(format!("timetable entry {entry:?} is not [Day-]HH:MM,rate"))
            })?;
            let rate = parse_rate(rate).map_err(|p| fail(format!("entry {entry:?}: {p}")))?;
            let (days, time) = match when.split_once('-') {
                Some((day, time)) => {
                    let lower = day.to_ascii_lowercase();
                    let index = DAYS.iter().position(|d| *d == lower).ok_or_else(|| {
                        fail(format!(
                            "entry {entry:?}: {day:?} is not a day (Mon, Tue, Wed, Thu, Fri, Sat, Sun)"
                        ))
                    })?;
                    (vec![index as u32], time)
                }
                None => ((0..7).collect(), when),
            };
            let minute = parse_time(time).map_err(|p| fail(format!("entry {entry:?}: {p}")))?;
            for day in days {
                let minute = day * DAY + minute;
                // A later entry for the same moment wins.
                slots.retain(|s| s.minute != minute);
                slots.push(Slot { minute, rate });
            }
        }
        slots.sort_by_key(|s| s.minute);
        if slots.iter().all(|s| s.rate.is_none()) {
            slots.clear();
        }
        Ok(BandwidthLimit { text, slots })
    }

    /// The rate in force at a moment of the week (minutes since Monday
    /// 00:00, local time): that of the latest entry at or before it, else
    /// that of the week's last entry, which still runs from last week.
    fn rate_at_minute(&self, minute: u32) -> Option<u64> {
        let slot = self
            .slots
            .iter()
            .rev()
            .find(|s| s.minute <= minute)
            .or(self.slots.last())?;
        slot.rate
    }

    /// The rate in force now, in bytes per second; none when unlimited.
    pub fn rate_now(&self) -> Option<u64> {
        if self.slots.is_empty() {
            return None;
        }
        let now = Local::now();
        let minute = now.weekday().num_days_from_monday() * DAY + now.hour() * 60 + now.minute();
        self.rate_at_minute(minute % WEEK)
    }

    pub fn is_off(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for BandwidthLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for BandwidthLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BandwidthLimit({:?})", self.text)
    }
}

impl std::str::FromStr for BandwidthLimit {
    type Err = InvalidLimit;
    fn from_str(s: &str) -> Result<BandwidthLimit, InvalidLimit> {
        BandwidthLimit::parse(s)
    }
}

impl Serialize for BandwidthLimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

/// A string as above, or a number of bytes per second.
impl<'de> Deserialize<'de> for BandwidthLimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<BandwidthLimit, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bytes(u64),
            // 488.0 is the whole number 488 (JSON Schema says so too).
            Float(f64),
            Text(String),
        }
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected bytes per second: a whole number, a string such as \"512k\", \"20M\" or \"off\", or a timetable such as \"08:00,2M 23:00,off\"",
            )
        })? {
            Raw::Float(f) if f.fract() == 0.0 && f >= 1.0 && f <= MAX_BYTES as f64 => {
                Ok(BandwidthLimit::bytes(f as u64))
            }
            Raw::Float(f) => Err(serde::de::Error::custom(format!(
                "{f} bytes per second: give a whole number from 1 to {MAX_BYTES}, or \"off\""
            ))),
            Raw::Bytes(n) if (1..=MAX_BYTES).contains(&n) => Ok(BandwidthLimit::bytes(n)),
            Raw::Bytes(n) => Err(serde::de::Error::custom(format!(
                "{n} bytes per second: give 1 to {MAX_BYTES}, or \"off\""
            ))),
            Raw::Text(t) => BandwidthLimit::parse(&t).map_err(serde::de::Error::custom),
        }
    }
}

/// What separates the entries of a timetable (and may surround a limit).
const SPACE: [char; 3] = [' ', '\t', '\n'];

/// The largest rate a number of bytes per second may give.
pub const MAX_BYTES: u64 = 1_000_000_000_000_000_000;

/// The limits [`BandwidthLimit::parse`] accepts, as a regular expression
/// (ECMA 262, for the API document).
pub fn pattern() -> String {
    let any_case = |word: &str| -> String {
        word.chars()
            .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
            .collect()
    };
    let off = any_case("off");
    let rate = format!(
        "({off}|[1-9][0-9]{{0,11}}[bB]?|[1-9][0-9]{{0,5}}(\\.[0-9]{{1,3}})?[kKmMgGtT]([iI]?[bB]|[iI])?)"
    );
    let days = DAYS
        .iter()
        .map(|d| any_case(d))
        .collect::<Vec<_>>()
        .join("|");
    let entry = format!("(({days})-)?([01]?[0-9]|2[0-3]):[0-5][0-9],{rate}");
    format!("^[ \\t\\n]*({rate}|{entry}([ \\t\\n]+{entry})*)[ \\t\\n]*$")
}

/// `512k`, `20M`, `1.5G`, `100` (bytes), `off`: binary multiples, as
/// rclone reads them. A fraction needs a multiple and a whole part of at
/// least 1 (`1.5M`; `512k`, not `0.5M`): then no rate is below 1 byte.
fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    let bad = || {
        format!(
            "{text:?} is not a rate: a whole number of bytes per second (up to 12 digits), or up to 6 digits with up to 3 decimals and a multiple k, M, G or T; or off"
        )
    };
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(digits);
    let multiple: f64 = match suffix.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" | "ki" => 1024.0,
        "m" | "mb" | "mib" | "mi" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" | "ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (number, None),
    };
    let whole_max = if multiple == 1.0 { 12 } else { 6 };
    let whole_ok = !whole.is_empty()
        && whole.len() <= whole_max
        && !whole.starts_with('0')
        && whole.bytes().all(|b| b.is_ascii_digit());
    let fraction_ok = match fraction {
        None => true,
        Some(f) => {
            multiple > 1.0 && (1..=3).contains(&f.len()) && f.bytes().all(|b| b.is_ascii_digit())
        }
    };
    if number.is_empty() {
        return Err(format!(
            "{text:?} is not a rate: it must start with a number"
        ));
    }
    if !whole_ok || !fraction_ok {
        return Err(bad());
    }
    let value: f64 = number.parse().map_err(|_| bad())?;
    Ok(Some((value * multiple) as u64))
}

/// `HH:MM` or `H:MM`, 00:00 to 23:59: minutes since midnight.
fn parse_time(text: &str) -> Result<u32, String> {
    let bad = || format!("{text:?} is not a time of day HH:MM (00:00 to 23:59)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if h.is_empty() || h.len() > 2 || m.len() != 2 || !digits(h) || !digits(m) {
        return Err(bad());
    }
    let h: u32 = h.parse().map_err(|_| bad())?;
    let m: u32 = m.parse().map_err(|_| bad())?;
    if h > 23 || m > 59 {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

/// Paces bytes to the limit in force. One per process, shared by every
/// transfer; without a limit it costs one lock per piece.
#[derive(Default)]
pub struct Throttle {
    pace: Mutex<Pace>,
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Pace {
    limit: Option<BandwidthLimit>,
    /// The rate the reservations below were made at.
    rate: Option<u64>,
    /// When the last reservation ends.
    free_at: Option<Instant>,
}

impl Throttle {
    /// Puts a limit in force (none: unlimited). Transfers waiting under
    /// the old one reserve again under the new one at once.
    pub fn set(&self, limit: Option<BandwidthLimit>) {
        let limit = limit.filter(|l| !l.is_off());
        {
            let mut pace = self.lock();
            if pace.limit == limit {
                return;
            }
            pace.limit = limit;
            pace.rate = None;
            pace.free_at = None;
        }
        self.changed.notify_waiters();
    }

    /// The limit in force, if any.
    pub fn limit(&self) -> Option<BandwidthLimit> {
        self.lock().limit.clone()
    }

    /// Waits until `bytes` may go: the time they take at the rate in force
    /// follows every earlier reservation. The first piece goes at once.
    pub async fn pass(&self, bytes: u64) {
        if bytes == 0 {
            return;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = {
                let mut pace = self.lock();
                let Some(rate) = pace.limit.as_ref().and_then(BandwidthLimit::rate_now) else {
                    return;
                };
                let now = Instant::now();
                if pace.rate != Some(rate) {
                    // A timetable moved on: the old pace no longer holds.
                    pace.rate = Some(rate);
                    pace.free_at = None;
                }
                let start = pace.free_at.map_or(now, |t| t.max(now));
                pace.free_at = Some(start + Duration::from_secs_f64(bytes as f64 / rate as f64));
                start - now
            };
            if wait.is_zero() {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => return,
                _ = &mut changed => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pace> {
        // Every change under this lock is a plain assignment: a panic
        // elsewhere cannot leave it torn.
        self.pace.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_take_binary_suffixes_and_off() {
        let rate = |s: &str| BandwidthLimit::parse(s).unwrap().rate_at_minute(0);
        assert_eq!(rate("512k"), Some(512 * 1024));
        assert_eq!(rate("20M"), Some(20 * 1024 * 1024));
        assert_eq!(rate("1.5G"), Some(1536 * 1024 * 1024));
        assert!(BandwidthLimit::parse("0.5M").is_err(), "written 512k");
        assert_eq!(rate("100"), Some(100));
        assert_eq!(rate("2MiB"), Some(2 * 1024 * 1024));
        assert_eq!(rate("off"), None);
        assert!(BandwidthLimit::parse("OFF").unwrap().is_off());
    }

    #[test]
    fn a_timetable_follows_the_clock_and_wraps_around() {
        let t = BandwidthLimit::parse("08:00,2M   23:00,off").unwrap();
        assert_eq!(t.as_str(), "08:00,2M 23:00,off");
        let at = |day: u32, h: u32, m: u32| t.rate_at_minute(day * DAY + h * 60 + m);
        assert_eq!(
            at(0, 7, 59),
            None,
            "before 08:00 the 23:00 entry still holds"
        );
        assert_eq!(at(0, 8, 0), Some(2 * 1024 * 1024));
        assert_eq!(at(3, 22, 59), Some(2 * 1024 * 1024));
        assert_eq!(at(6, 23, 30), None);
    }

    #[test]
    fn a_timetable_can_name_days() {
        let t = BandwidthLimit::parse("Mon-00:00,512k Sat-09:00,off Sun-20:00,1M").unwrap();
        let at = |day: u32, h: u32| t.rate_at_minute(day * DAY + h * 60);
        assert_eq!(at(0, 1), Some(512 * 1024));
        assert_eq!(at(4, 23), Some(512 * 1024));
        assert_eq!(at(5, 10), None);
        assert_eq!(at(6, 21), Some(1024 * 1024));
    }

    #[test]
    fn bad_limits_say_what_is_wrong() {
        for (input, says) in [
            ("", "empty"),
            ("fast", "not a rate"),
            ("0", "not a rate"),
            ("1.5", "not a rate"),
            ("007k", "not a rate"),
            ("1234567M", "not a rate"),
            ("2M 3M", "one rate"),
            ("-5M", "not a rate"),
            ("M", "must start with a number"),
            ("+7:00,1M", "not a time of day"),
            ("8:00,1M 25:00,off", "not a time of day"),
            ("Xyz-08:00,1M", "not a day"),
            ("08:00,1M 23:00", "not [Day-]HH:MM,rate"),
            ("08:00,quick", "not a rate"),
            ("10M:100k", "not a rate"),
        ] {
            let e = BandwidthLimit::parse(input).unwrap_err().to_string();
            assert!(e.contains(says), "{input:?}: {e}");
        }
    }

    #[test]
    fn the_published_pattern_accepts_exactly_what_parses() {
        let pattern = regex_lite::Regex::new(&pattern()).unwrap();
        for input in [
            "2M",
            "512k",
            "512KiB",
            "1.5G",
            "1.125t",
            "100",
            "100b",
            "999999999999",
            "off",
            "OFF",
            " 20M\n",
            "08:00,2M 23:00,off",
            "8:00,2M\t23:00,OFF",
            "Mon-00:00,512k Sat-09:00,off",
            "sun-23:59,1k",
            "",
            " ",
            "0",
            "0.5M",
            "1.5",
            "1.2345k",
            "1234567M",
            "9999999999999",
            "2M 3M",
            "24:00,1M",
            "8:60,1M",
            "+7:00,1M",
            "Xyz-08:00,1M",
            "08:00,2M,3M",
            "08:00 2M",
            "10M:100k",
            "2 M",
            "-5M",
            "M",
            "1e3",
            "08:00,",
            ",2M",
            "Mon08:00,1M",
            "２M",
            "2M\u{a0}",
        ] {
            assert_eq!(
                pattern.is_match(input),
                BandwidthLimit::parse(input).is_ok(),
                "{input:?}: {:?}",
                BandwidthLimit::parse(input)
            );
        }
    }

    #[test]
    fn json_takes_a_string_or_a_number() {
        let from = |v: &str| serde_json::from_str::<BandwidthLimit>(v);
        assert_eq!(from("\"2M\"").unwrap().rate_at_minute(0), Some(2 << 20));
        assert_eq!(from("4096").unwrap().rate_at_minute(0), Some(4096));
        assert!(from("true").is_err());
        assert!(from("0").is_err());
        assert!(from("1.5").is_err());
        assert_eq!(from("488.0").unwrap().as_str(), "488");
        assert!(from("1000000000000000001").is_err());
        assert_eq!(
            serde_json::to_string(&BandwidthLimit::parse("08:00,2M 23:00,off").unwrap()).unwrap(),
            "\"08:00,2M 23:00,off\""
        );
    }

    #[tokio::test]
    async fn the_throttle_paces_every_piece_after_the_first() {
        let throttle = Throttle::default();
        throttle.set(Some(BandwidthLimit::parse("1M").unwrap()));
        let started = Instant::now();
        for _ in 0..4 {
            throttle.pass(64 * 1024).await;
        }
        // Three pieces wait for the 62.5 ms each one before took: a lower
        // bound, which no slowness of the machine can break.
        let waited = started.elapsed();
        assert!(waited >= Duration::from_micros(187_500), "{waited:?}");
    }

    #[tokio::test]
    async fn a_new_limit_frees_the_waiters_at_once() {
        let throttle = std::sync::Arc::new(Throttle::default());
        throttle.set(Some(BandwidthLimit::parse("1k").unwrap()));
        throttle.pass(1024 * 1024).await;
        let waiter = tokio::spawn({
            let throttle = throttle.clone();
            async move { throttle.pass(1024).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !waiter.is_finished(),
            "a megabyte at 1k/s holds the next piece for 1024 s"
        );
        throttle.set(Some(BandwidthLimit::parse("off").unwrap()));
        assert!(throttle.limit().is_none());
        tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .expect("released when the limit went")
            .unwrap();
    }
}
