//! The vocabulary shared by every layer: migration directions and the eight
//! file kinds, with the exact strings the gallery uses for them in its API
//! and in `storage_migration_log`.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Which way files travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
pub enum Direction {
    #[serde(rename = "toS3")]
    ToS3,
    #[serde(rename = "toDisk")]
    ToDisk,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ToS3 => "toS3",
            Direction::ToDisk => "toDisk",
        }
    }

    pub fn parse(value: &str) -> Option<Direction> {
        match value {
            "toS3" => Some(Direction::ToS3),
            "toDisk" => Some(Direction::ToDisk),
            _ => None,
        }
    }

    /// The storage backend new uploads must go to while this migration runs.
    pub fn target_backend(self) -> Backend {
        match self {
            Direction::ToS3 => Backend::S3,
            Direction::ToDisk => Backend::Disk,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The gallery's storage backend for new uploads (`IMMICH_STORAGE_BACKEND`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Disk,
    S3,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Disk => "disk",
            Backend::S3 => "s3",
        }
    }
}

/// One of the eight kinds of file a gallery keeps. The order of `ALL` is the
/// order in which a migration walks them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FileKind {
    Originals,
    Thumbnails,
    Previews,
    Fullsize,
    Sidecars,
    EncodedVideos,
    PersonThumbnails,
    ProfileImages,
}

impl FileKind {
    pub const ALL: [FileKind; 8] = [
        FileKind::Originals,
        FileKind::Thumbnails,
        FileKind::Previews,
        FileKind::Fullsize,
        FileKind::Sidecars,
        FileKind::EncodedVideos,
        FileKind::PersonThumbnails,
        FileKind::ProfileImages,
    ];

    /// The keys of the API's `fileTypes` and `fileCounts` objects, in
    /// walking order.
    pub const API_KEYS: [&'static str; 8] = {
        let mut keys = [""; 8];
        let mut i = 0;
        while i < keys.len() {
            keys[i] = FileKind::ALL[i].api_key();
            i += 1;
        }
        keys
    };

    /// The key used in the API's `fileTypes` and `fileCounts` objects.
    pub const fn api_key(self) -> &'static str {
        match self {
            FileKind::Originals => "originals",
            FileKind::Thumbnails => "thumbnails",
            FileKind::Previews => "previews",
            FileKind::Fullsize => "fullsize",
            FileKind::Sidecars => "sidecars",
            FileKind::EncodedVideos => "encodedVideos",
            FileKind::PersonThumbnails => "personThumbnails",
            FileKind::ProfileImages => "profileImages",
        }
    }

    pub fn from_api_key(key: &str) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|k| k.api_key() == key)
    }

    /// `asset_file."type"` for the kinds stored in that table.
    pub fn asset_file_type(self) -> Option<&'static str> {
        match self {
            FileKind::Thumbnails => Some("thumbnail"),
            FileKind::Previews => Some("preview"),
            FileKind::Fullsize => Some("fullsize"),
            FileKind::Sidecars => Some("sidecar"),
            FileKind::EncodedVideos => Some("encoded_video"),
            _ => None,
        }
    }

    /// `storage_migration_log."entityType"`, as the gallery writes it.
    pub fn log_entity_type(self) -> &'static str {
        match self {
            FileKind::Originals | FileKind::EncodedVideos => "asset",
            FileKind::Thumbnails | FileKind::Previews | FileKind::Fullsize | FileKind::Sidecars => {
                "assetFile"
            }
            FileKind::PersonThumbnails => "person",
            FileKind::ProfileImages => "user",
        }
    }

    /// `storage_migration_log."fileType"`, as the gallery writes it.
    pub fn log_file_type(self) -> Option<&'static str> {
        match self {
            FileKind::Originals => Some("original"),
            FileKind::Thumbnails => Some("thumbnail"),
            FileKind::Previews => Some("preview"),
            FileKind::Fullsize => Some("fullsize"),
            FileKind::Sidecars => Some("sidecar"),
            FileKind::EncodedVideos => Some("encodedVideo"),
            FileKind::PersonThumbnails | FileKind::ProfileImages => None,
        }
    }
}

impl fmt::Display for FileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.api_key())
    }
}

/// A value per file kind, serialised with the API's keys plus a `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerKind<T> {
    values: [T; 8],
}

impl<T: Copy + Default> PerKind<T> {
    pub fn get(&self, kind: FileKind) -> T {
        self.values[kind as usize]
    }

    pub fn set(&mut self, kind: FileKind, value: T) {
        self.values[kind as usize] = value;
    }

    pub fn iter(&self) -> impl Iterator<Item = (FileKind, T)> + '_ {
        FileKind::ALL.into_iter().map(|k| (k, self.get(k)))
    }
}

impl PerKind<i64> {
    pub fn add(&mut self, kind: FileKind, value: i64) {
        self.values[kind as usize] += value;
    }

    pub fn total(&self) -> i64 {
        self.values.iter().sum()
    }

    /// One entry per kind (the gallery's keys), plus `total`.
    pub fn to_map(&self) -> std::collections::BTreeMap<String, i64> {
        let mut map: std::collections::BTreeMap<String, i64> = self
            .iter()
            .map(|(kind, value)| (kind.api_key().to_string(), value))
            .collect();
        map.insert("total".to_string(), self.total());
        map
    }

    /// The JSON object the API returns: one key per kind, then `total`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self.to_map()).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_round_trip() {
        for kind in FileKind::ALL {
            assert_eq!(FileKind::from_api_key(kind.api_key()), Some(kind));
        }
        assert_eq!(FileKind::from_api_key("photos"), None);
    }

    #[test]
    fn log_values_match_the_gallery() {
        assert_eq!(FileKind::EncodedVideos.log_entity_type(), "asset");
        assert_eq!(
            FileKind::EncodedVideos.log_file_type(),
            Some("encodedVideo")
        );
        assert_eq!(FileKind::Sidecars.log_entity_type(), "assetFile");
        assert_eq!(FileKind::ProfileImages.log_file_type(), None);
    }

    #[test]
    fn per_kind_json_has_total() {
        let mut counts = PerKind::<i64>::default();
        counts.add(FileKind::Originals, 3);
        counts.add(FileKind::ProfileImages, 2);
        let json = counts.to_json();
        assert_eq!(json["originals"], 3);
        assert_eq!(json["profileImages"], 2);
        assert_eq!(json["total"], 5);
    }
}

/// Why a file did not move: the reasons of failure records, status and
/// metrics, said once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    // Failed: retried by a later run.
    SourceMissing,
    TargetInUse,
    ChecksumMismatch,
    VerificationFailed,
    SourceChanged,
    S3Error,
    DiskError,
    DatabaseError,
    Internal,
    // Skipped: left where it is, nothing to retry.
    RowChanged,
    OutsideMediaLocation,
    OtherBucket,
    OutsidePrefix,
    UnsafePath,
    ExternalLibrary,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::SourceMissing,
        Reason::TargetInUse,
        Reason::ChecksumMismatch,
        Reason::VerificationFailed,
        Reason::SourceChanged,
        Reason::S3Error,
        Reason::DiskError,
        Reason::DatabaseError,
        Reason::Internal,
        Reason::RowChanged,
        Reason::OutsideMediaLocation,
        Reason::OtherBucket,
        Reason::OutsidePrefix,
        Reason::UnsafePath,
        Reason::ExternalLibrary,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::SourceMissing => "source_missing",
            Reason::TargetInUse => "target_in_use",
            Reason::ChecksumMismatch => "checksum_mismatch",
            Reason::VerificationFailed => "verification_failed",
            Reason::SourceChanged => "source_changed",
            Reason::S3Error => "s3_error",
            Reason::DiskError => "disk_error",
            Reason::DatabaseError => "database_error",
            Reason::Internal => "internal",
            Reason::RowChanged => "row_changed",
            Reason::OutsideMediaLocation => "outside_media_location",
            Reason::OtherBucket => "other_bucket",
            Reason::OutsidePrefix => "outside_prefix",
            Reason::UnsafePath => "unsafe_path",
            Reason::ExternalLibrary => "external_library",
        }
    }

    /// A failure (retried later) rather than a skip.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            Reason::SourceMissing
                | Reason::TargetInUse
                | Reason::ChecksumMismatch
                | Reason::VerificationFailed
                | Reason::SourceChanged
                | Reason::S3Error
                | Reason::DiskError
                | Reason::DatabaseError
                | Reason::Internal
        )
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a batch stands: `noodle_migrate_batch.state`, and the status's
/// `state`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    diesel::expression::AsExpression,
    diesel::deserialize::FromSqlRow,
)]
#[diesel(sql_type = diesel::sql_types::Text)]
#[serde(rename_all = "snake_case")]
pub enum BatchState {
    Running,
    /// Running, with a cancel asked for: the files in flight finish, in
    /// every process of the batch, and then it closes as cancelled.
    Cancelling,
    /// Open, with no new files handed out (`POST /storage-migration/pause`)
    /// until it is resumed; the files in flight finish.
    Paused,
    Completed,
    CompletedWithFailures,
    Failed,
    /// Its process stopped (or lost the lock) before the end: a start of
    /// the same direction resumes it.
    Interrupted,
    /// Stopped on request: a start of the same direction resumes it.
    Cancelled,
    RolledBack,
}

impl BatchState {
    pub const ALL: [BatchState; 9] = [
        BatchState::Running,
        BatchState::Cancelling,
        BatchState::Paused,
        BatchState::Completed,
        BatchState::CompletedWithFailures,
        BatchState::Failed,
        BatchState::Interrupted,
        BatchState::Cancelled,
        BatchState::RolledBack,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchState::Running => "running",
            BatchState::Cancelling => "cancelling",
            BatchState::Paused => "paused",
            BatchState::Completed => "completed",
            BatchState::CompletedWithFailures => "completed_with_failures",
            BatchState::Failed => "failed",
            BatchState::Interrupted => "interrupted",
            BatchState::Cancelled => "cancelled",
            BatchState::RolledBack => "rolled_back",
        }
    }

    /// Closed: nothing works on it any more.
    pub fn is_final(self) -> bool {
        !self.is_open()
    }

    /// Worked on, or waiting to be resumed.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            BatchState::Running | BatchState::Cancelling | BatchState::Paused
        )
    }

    pub fn parse(value: &str) -> Option<BatchState> {
        BatchState::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

impl fmt::Display for BatchState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg> for BatchState {
    fn to_sql<'b>(
        &'b self,
        out: &mut diesel::serialize::Output<'b, '_, diesel::pg::Pg>,
    ) -> diesel::serialize::Result {
        <str as diesel::serialize::ToSql<diesel::sql_types::Text, diesel::pg::Pg>>::to_sql(
            self.as_str(),
            out,
        )
    }
}

impl diesel::deserialize::FromSql<diesel::sql_types::Text, diesel::pg::Pg> for BatchState {
    fn from_sql(bytes: diesel::pg::PgValue<'_>) -> diesel::deserialize::Result<BatchState> {
        let text = <String as diesel::deserialize::FromSql<
            diesel::sql_types::Text,
            diesel::pg::Pg,
        >>::from_sql(bytes)?;
        BatchState::parse(&text).ok_or_else(|| format!("unknown batch state {text:?}").into())
    }
}

#[cfg(test)]
mod state_tests {
    use super::BatchState;

    #[test]
    fn states_round_trip_and_serialise_as_stored() {
        for state in BatchState::ALL {
            assert_eq!(BatchState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::from(state.as_str())
            );
        }
        assert_eq!(BatchState::parse("done"), None);
    }
}
