//! Path mapping between the gallery's two conventions: absolute disk paths
//! under the media location, and relative object keys (optionally written as
//! `s3://bucket/prefix/key`). Pure functions, so every rule is unit-tested.
//!
//! It must never produce a location outside the media location or the
//! configured prefix: anything it cannot map safely is refused with a reason.

use crate::model::Direction;
use std::path::PathBuf;

/// Where the files live on both sides.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Absolute, without a trailing slash (`/data`).
    pub media_location: String,
    pub bucket: String,
    /// Without leading or trailing slashes; empty when unset.
    pub prefix: String,
}

/// One place a file can be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Disk(PathBuf),
    /// The full object key in the bucket (prefix included).
    Object(String),
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Disk(p) => write!(f, "{}", p.display()),
            Location::Object(k) => write!(f, "s3 key {k}"),
        }
    }
}

/// What moving one row means: copy `source` to `target`, then store `new_path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub source: Location,
    pub target: Location,
    pub new_path: String,
}

/// Why a row's path cannot be migrated. Each is a stable, low-cardinality code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("path is outside the media location {0}")]
    OutsideMediaLocation(String),
    #[error("path is an object in bucket {found}, not the configured bucket {expected}")]
    OtherBucket { found: String, expected: String },
    #[error("object key is outside the configured prefix {0}")]
    OutsidePrefix(String),
    #[error("unsafe path: {0}")]
    Unsafe(&'static str),
}

impl Refusal {
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::OutsideMediaLocation(_) => "outside_media_location",
            Refusal::OtherBucket { .. } => "other_bucket",
            Refusal::OutsidePrefix(_) => "outside_prefix",
            Refusal::Unsafe(_) => "unsafe_path",
        }
    }
}

impl Layout {
    pub fn new(media_location: &str, bucket: &str, prefix: &str) -> Layout {
        let media = media_location.trim_end_matches('/');
        Layout {
            media_location: if media.is_empty() {
                "/".into()
            } else {
                media.into()
            },
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }

    /// The media location followed by a slash: what every disk path starts with.
    pub fn media_root(&self) -> String {
        if self.media_location == "/" {
            "/".into()
        } else {
            format!("{}/", self.media_location)
        }
    }

    /// The object key that holds a relative gallery path.
    pub fn object_key(&self, relative: &str) -> String {
        if self.prefix.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{}", self.prefix, relative)
        }
    }

    pub fn disk_path(&self, relative: &str) -> PathBuf {
        PathBuf::from(format!("{}{}", self.media_root(), relative))
    }

    /// Maps a path stored in the database to the copy it needs.
    pub fn plan(&self, direction: Direction, stored: &str) -> Result<Plan, Refusal> {
        match direction {
            Direction::ToS3 => {
                let relative = stored
                    .strip_prefix(&self.media_root())
                    .ok_or_else(|| Refusal::OutsideMediaLocation(self.media_location.clone()))?;
                check_relative(relative)?;
                Ok(Plan {
                    source: Location::Disk(self.disk_path(relative)),
                    target: Location::Object(self.object_key(relative)),
                    new_path: relative.to_string(),
                })
            }
            Direction::ToDisk => {
                let (key, relative) = self.key_of_stored_object(stored)?;
                check_relative(&relative)?;
                let disk = self.disk_path(&relative);
                Ok(Plan {
                    source: Location::Object(key),
                    target: Location::Disk(disk.clone()),
                    new_path: disk.to_string_lossy().into_owned(),
                })
            }
        }
    }

    /// The object key a stored S3 path names, if it is in our bucket and
    /// prefix.
    pub fn stored_object_key(&self, stored: &str) -> Option<String> {
        let (key, relative) = self.key_of_stored_object(stored).ok()?;
        check_relative(&relative).ok()?;
        Some(key)
    }

    /// For a stored S3 path, the object key and the gallery-relative path.
    fn key_of_stored_object(&self, stored: &str) -> Result<(String, String), Refusal> {
        if stored.starts_with('/') {
            return Err(Refusal::Unsafe(
                "absolute path where an object key was expected",
            ));
        }
        let Some(url_rest) = stored.strip_prefix("s3://") else {
            return Ok((self.object_key(stored), stored.to_string()));
        };
        let (bucket, key) = url_rest
            .split_once('/')
            .ok_or(Refusal::Unsafe("s3:// path without a key"))?;
        if bucket != self.bucket {
            return Err(Refusal::OtherBucket {
                found: bucket.to_string(),
                expected: self.bucket.clone(),
            });
        }
        let relative = if self.prefix.is_empty() {
            key.to_string()
        } else {
            key.strip_prefix(&format!("{}/", self.prefix))
                .ok_or_else(|| Refusal::OutsidePrefix(self.prefix.clone()))?
                .to_string()
        };
        Ok((key.to_string(), relative))
    }
}

/// A relative path is safe when it cannot climb out of its root.
pub fn check_relative(relative: &str) -> Result<(), Refusal> {
    if relative.is_empty() {
        return Err(Refusal::Unsafe("empty path"));
    }
    if relative.contains('\0') {
        return Err(Refusal::Unsafe("NUL byte in path"));
    }
    if relative.starts_with('/') {
        return Err(Refusal::Unsafe("absolute part in path"));
    }
    for segment in relative.split('/') {
        match segment {
            "" => return Err(Refusal::Unsafe("empty segment in path")),
            "." | ".." => return Err(Refusal::Unsafe("dot segment in path")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(prefix: &str) -> Layout {
        Layout::new("/data", "photos", prefix)
    }

    #[test]
    fn to_s3_strips_the_media_location() {
        let plan = layout("")
            .plan(Direction::ToS3, "/data/upload/u/ab/cd/x.jpg")
            .unwrap();
        assert_eq!(plan.new_path, "upload/u/ab/cd/x.jpg");
        assert_eq!(plan.target, Location::Object("upload/u/ab/cd/x.jpg".into()));
        assert_eq!(
            plan.source,
            Location::Disk("/data/upload/u/ab/cd/x.jpg".into())
        );
    }

    #[test]
    fn prefix_goes_into_the_key_not_the_database() {
        let plan = layout("/gallery/")
            .plan(Direction::ToS3, "/data/thumbs/a.webp")
            .unwrap();
        assert_eq!(plan.new_path, "thumbs/a.webp");
        assert_eq!(
            plan.target,
            Location::Object("gallery/thumbs/a.webp".into())
        );
    }

    #[test]
    fn to_disk_prepends_the_media_location() {
        let plan = layout("p")
            .plan(Direction::ToDisk, "library/x/2024/a.jpg")
            .unwrap();
        assert_eq!(
            plan.source,
            Location::Object("p/library/x/2024/a.jpg".into())
        );
        assert_eq!(plan.new_path, "/data/library/x/2024/a.jpg");
    }

    #[test]
    fn s3_urls_are_objects() {
        let plan = layout("p")
            .plan(Direction::ToDisk, "s3://photos/p/upload/a.jpg")
            .unwrap();
        assert_eq!(plan.source, Location::Object("p/upload/a.jpg".into()));
        assert_eq!(plan.new_path, "/data/upload/a.jpg");
        let plan = layout("")
            .plan(Direction::ToDisk, "s3://photos/upload/a.jpg")
            .unwrap();
        assert_eq!(plan.source, Location::Object("upload/a.jpg".into()));
    }

    #[test]
    fn s3_urls_of_other_buckets_or_prefixes_are_refused() {
        let err = layout("")
            .plan(Direction::ToDisk, "s3://other/upload/a.jpg")
            .unwrap_err();
        assert_eq!(err.code(), "other_bucket");
        let err = layout("p")
            .plan(Direction::ToDisk, "s3://photos/q/a.jpg")
            .unwrap_err();
        assert_eq!(err.code(), "outside_prefix");
    }

    #[test]
    fn paths_outside_the_media_location_are_refused() {
        let err = layout("")
            .plan(Direction::ToS3, "/mnt/external/a.jpg")
            .unwrap_err();
        assert_eq!(err.code(), "outside_media_location");
        // A sibling folder that merely shares the prefix is outside too.
        let err = layout("")
            .plan(Direction::ToS3, "/data2/a.jpg")
            .unwrap_err();
        assert_eq!(err.code(), "outside_media_location");
    }

    #[test]
    fn climbing_paths_are_refused() {
        for bad in [
            "/data/../etc/passwd",
            "/data/upload//a",
            "/data/a/./b",
            "/data/a\0b",
        ] {
            let err = layout("").plan(Direction::ToS3, bad).unwrap_err();
            assert_eq!(err.code(), "unsafe_path", "{bad}");
        }
        for bad in ["upload/../../x", "/abs", "s3://photos/../x"] {
            assert!(layout("").plan(Direction::ToDisk, bad).is_err(), "{bad}");
        }
    }
}
