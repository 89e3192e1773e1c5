//! Dump file names, in the gallery's own scheme, so that the gallery lists
//! and restores our dumps and we recognise its own:
//!
//! - `immich-db-backup-<yyyyMMdd'T'HHmmss>-v<version>-pg<pg version>.sql.gz`
//! - `immich-db-backup-<unix milliseconds>.sql.gz` (older gallery releases)
//!
//! Anything else in the backups folder is not a dump: never listed, never
//! deleted.

use chrono::{NaiveDateTime, TimeZone};

const PREFIX: &str = "immich-db-backup-";
const SUFFIX: &str = ".sql.gz";
const STAMP_FORMAT: &str = "%Y%m%dT%H%M%S";

/// A valid dump name and the moment it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpName {
    name: String,
    /// Seconds since the epoch as written in the name (local time of the
    /// machine that made the dump, for the timestamped form).
    stamp: i64,
}

impl DumpName {
    /// The name for a dump taken now.
    /// `pg_version` is the server's version as the gallery writes it
    /// (`15.19`); anything but digits and dots is left out.
    pub fn new(
        now: chrono::DateTime<chrono::Local>,
        gallery_version: &str,
        pg_version: &str,
    ) -> DumpName {
        let version: String = gallery_version
            .trim_start_matches('v')
            .chars()
            .filter(|c| version_char(*c))
            .take(40)
            .collect();
        let version = if version.is_empty() {
            "0.0.0".to_string()
        } else {
            version
        };
        let pg: String = pg_version
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '.')
            .take(20)
            .collect();
        let pg = if pg.is_empty() { "0".to_string() } else { pg };
        let name = format!(
            "{PREFIX}{}-v{version}-pg{pg}{SUFFIX}",
            now.format(STAMP_FORMAT)
        );
        let stamp = now.naive_local().and_utc().timestamp();
        DumpName { name, stamp }
    }

    /// Parses a name; `None` for anything that is not a dump's name,
    /// including anything with a path separator in it.
    pub fn parse(name: &str) -> Option<DumpName> {
        let stamp = match shape(name)? {
            Stamp::Millis(millis) => millis.parse::<i64>().ok()? / 1000,
            Stamp::Local(stamp) => {
                let when = NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT).ok()?;
                chrono::Utc.from_utc_datetime(&when).timestamp()
            }
        };
        Some(DumpName {
            name: name.to_string(),
            stamp,
        })
    }

    /// Whether `name` has a dump's shape (its time need not be a real
    /// one): what a name given to delete must look like. The pattern of
    /// [`NAME_PATTERN`].
    pub fn has_shape(name: &str) -> bool {
        shape(name).is_some()
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// For ordering: newer dumps have larger stamps.
    pub fn stamp(&self) -> i64 {
        self.stamp
    }
}

/// A dump's name, as a regular expression (for the API's document): what
/// [`DumpName::has_shape`] accepts.
pub const NAME_PATTERN: &str = r"^immich-db-backup-([0-9]{13}|[0-9]{8}T[0-9]{6}-v[0-9A-Za-z.+_-]{1,40}-pg[0-9.]{1,20})\.sql\.gz$";

/// The time part of a dump's name.
enum Stamp<'a> {
    /// The gallery's older names: milliseconds since 1970.
    Millis(&'a str),
    /// `yyyyMMdd'T'HHmmss`, local time.
    Local(&'a str),
}

fn shape(name: &str) -> Option<Stamp<'_>> {
    let middle = name.strip_prefix(PREFIX)?.strip_suffix(SUFFIX)?;
    if middle.len() == 13 && middle.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Stamp::Millis(middle));
    }
    // <stamp>-v<version>-pg<pg>
    let (stamp, rest) = middle.split_once("-v")?;
    let (version, pg) = rest.rsplit_once("-pg")?;
    let stamp_bytes = stamp.as_bytes();
    let valid = stamp_bytes.len() == 15
        && stamp_bytes[..8].iter().all(u8::is_ascii_digit)
        && stamp_bytes[8] == b'T'
        && stamp_bytes[9..].iter().all(u8::is_ascii_digit)
        && !version.is_empty()
        && version.len() <= 40
        && version.chars().all(version_char)
        && !pg.is_empty()
        && pg.len() <= 20
        && pg.chars().all(|c| c.is_ascii_digit() || c == '.');
    valid.then_some(Stamp::Local(stamp))
}

fn version_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+' | '_')
}

impl std::fmt::Display for DumpName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_name_parses_back() {
        let now = chrono::Local
            .with_ymd_and_hms(2026, 11, 23, 8, 5, 9)
            .single()
            .expect("a valid local time");
        let name = DumpName::new(now, "v2.5.6", "15.19");
        assert_eq!(
            name.as_str(),
            "immich-db-backup-20261123T080509-v2.5.6-pg15.19.sql.gz"
        );
        let parsed = DumpName::parse(name.as_str()).expect("parses");
        assert_eq!(parsed.stamp(), name.stamp());
    }

    #[test]
    fn gallery_names_are_dumps() {
        for name in [
            "immich-db-backup-20240102T030405-v1.106.4-pg14.10.sql.gz",
            "immich-db-backup-1718000000000.sql.gz",
        ] {
            assert!(DumpName::parse(name).is_some(), "{name}");
        }
        let old = DumpName::parse("immich-db-backup-20240102T030405-v1.106.4-pg14.sql.gz");
        let older = DumpName::parse("immich-db-backup-1704000000000.sql.gz");
        assert!(old.expect("old").stamp() > older.expect("older").stamp());
    }

    #[test]
    fn anything_else_is_not() {
        for name in [
            "",
            "notes.txt",
            "immich-db-backup-.sql.gz",
            "immich-db-backup-20240102T030405-v1.0-pg15.sql",
            "immich-db-backup-20241302T030405-v1.0-pg15.sql.gz",
            "immich-db-backup-20240102T030405-v1.0-pg15.sql.gz.tmp",
            "immich-db-backup-20240102T030405-v../x-pg15.sql.gz",
            "../immich-db-backup-1718000000000.sql.gz",
            "immich-db-backup-20240102T030405-v1/2-pg15.sql.gz",
            "immich-db-backup-20240102T030405-v1.0-pg1 5.sql.gz",
            ".immich-db-backup-1718000000000.sql.gz.noodle-tmp-abc",
        ] {
            assert!(DumpName::parse(name).is_none(), "{name:?}");
        }
    }
}
