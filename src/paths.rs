//! Path mapping between the gallery's conventions: absolute disk paths
//! under the media location, and S3 paths in one of two forms (the object
//! key itself, or `s3://bucket/prefix/key`). Pure functions, so every rule
//! is unit-tested.
//!
//! Stored disk paths name the media location as the gallery sees it (often
//! `/data` inside its container); the files themselves are read and written
//! under the media folder as this machine sees it. The two differ only in
//! their root.
//!
//! It must never produce a location outside the media location or the
//! configured prefix: anything it cannot map safely is refused with a reason.

use crate::model::Direction;
use std::path::{Path, PathBuf};

/// How the gallery writes the path of a file it keeps in S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathStyle {
    /// The object's key itself, relative (`upload/…`): the Noodle Gallery,
    /// configured with `IMMICH_STORAGE_BACKEND`. It reads exactly that key.
    Key,
    /// `s3://<bucket>/<prefix>/<relative path>`: the gallery configured with
    /// `IMMICH_STORAGE_ENGINE`.
    S3Url,
}

/// Where the files live on both sides.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Absolute, without a trailing slash (`/data`): the root of every
    /// stored disk path.
    pub media_location: String,
    /// The same folder as this machine sees it.
    pub media_dir: PathBuf,
    pub bucket: String,
    /// Without leading or trailing slashes; empty when unset.
    pub prefix: String,
    pub style: PathStyle,
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
    pub fn code(&self) -> crate::model::Reason {
        use crate::model::Reason;
        match self {
            Refusal::OutsideMediaLocation(_) => Reason::OutsideMediaLocation,
            Refusal::OtherBucket { .. } => Reason::OtherBucket,
            Refusal::OutsidePrefix(_) => Reason::OutsidePrefix,
            Refusal::Unsafe(_) => Reason::UnsafePath,
        }
    }
}

impl Layout {
    /// `media_dir` is where the media location is on this machine, when it
    /// is mounted elsewhere.
    pub fn new(
        media_location: &str,
        media_dir: Option<&Path>,
        bucket: &str,
        prefix: &str,
        style: PathStyle,
    ) -> Layout {
        let media = media_location.trim_end_matches('/');
        let media_location: String = if media.is_empty() {
            "/".into()
        } else {
            media.into()
        };
        Layout {
            media_dir: media_dir
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(&media_location)),
            media_location,
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            style,
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

    /// The file on this machine for a path relative to the media location.
    pub fn disk_path(&self, relative: &str) -> PathBuf {
        self.media_dir.join(relative)
    }

    /// The disk path the gallery stores for a relative path.
    pub fn stored_disk_path(&self, relative: &str) -> String {
        format!("{}{}", self.media_root(), relative)
    }

    /// The file on this machine that a stored disk path names, when it is
    /// under the media location.
    pub fn local_path(&self, stored: &str) -> Option<PathBuf> {
        let relative = stored.strip_prefix(&self.media_root())?;
        check_relative(relative).ok()?;
        Some(self.disk_path(relative))
    }

    /// The path the gallery stores for an object key.
    pub fn stored_object_path(&self, key: &str) -> String {
        match self.style {
            PathStyle::Key => key.to_string(),
            PathStyle::S3Url => format!("s3://{}/{}", self.bucket, key),
        }
    }

    /// Maps a path stored in the database to the copy it needs.
    pub fn plan(&self, direction: Direction, stored: &str) -> Result<Plan, Refusal> {
        match direction {
            Direction::ToS3 => {
                let relative = stored
                    .strip_prefix(&self.media_root())
                    .ok_or_else(|| Refusal::OutsideMediaLocation(self.media_location.clone()))?;
                check_relative(relative)?;
                let key = self.object_key(relative);
                Ok(Plan {
                    source: Location::Disk(self.disk_path(relative)),
                    new_path: self.stored_object_path(&key),
                    target: Location::Object(key),
                })
            }
            Direction::ToDisk => {
                let (key, relative) = self.key_of_stored_object(stored)?;
                check_relative(&relative)?;
                Ok(Plan {
                    source: Location::Object(key),
                    target: Location::Disk(self.disk_path(&relative)),
                    new_path: self.stored_disk_path(&relative),
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
            // A relative path is the object's key, exactly: that is what
            // the gallery reads. Under a prefix of ours it names the file
            // at the rest of the key.
            let relative = match self.prefix.as_str() {
                "" => stored,
                prefix => stored
                    .strip_prefix(prefix)
                    .and_then(|rest| rest.strip_prefix('/'))
                    .unwrap_or(stored),
            };
            return Ok((stored.to_string(), relative.to_string()));
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
        let style = if prefix.is_empty() {
            PathStyle::Key
        } else {
            PathStyle::S3Url
        };
        Layout::new("/data", None, "photos", prefix, style)
    }

    #[test]
    fn to_s3_stores_the_key_itself() {
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
    fn s3_urls_carry_bucket_and_prefix() {
        let plan = layout("/gallery/")
            .plan(Direction::ToS3, "/data/thumbs/a.webp")
            .unwrap();
        assert_eq!(plan.new_path, "s3://photos/gallery/thumbs/a.webp");
        assert_eq!(
            plan.target,
            Location::Object("gallery/thumbs/a.webp".into())
        );
        let plan = Layout::new("/data", None, "photos", "", PathStyle::S3Url)
            .plan(Direction::ToS3, "/data/thumbs/a.webp")
            .unwrap();
        assert_eq!(plan.new_path, "s3://photos/thumbs/a.webp");
    }

    #[test]
    fn the_media_folder_may_be_mounted_elsewhere() {
        let l = Layout::new(
            "/data",
            Some(Path::new("/mnt/gallery")),
            "photos",
            "",
            PathStyle::Key,
        );
        let plan = l.plan(Direction::ToS3, "/data/upload/a.jpg").unwrap();
        assert_eq!(
            plan.source,
            Location::Disk("/mnt/gallery/upload/a.jpg".into())
        );
        assert_eq!(plan.new_path, "upload/a.jpg");
        let plan = l.plan(Direction::ToDisk, "upload/a.jpg").unwrap();
        assert_eq!(
            plan.target,
            Location::Disk("/mnt/gallery/upload/a.jpg".into())
        );
        assert_eq!(plan.new_path, "/data/upload/a.jpg");
        assert_eq!(
            l.local_path("/data/upload/a.jpg"),
            Some(PathBuf::from("/mnt/gallery/upload/a.jpg"))
        );
        assert_eq!(l.local_path("/mnt/external/a.jpg"), None);
    }

    #[test]
    fn to_disk_prepends_the_media_location() {
        let plan = layout("")
            .plan(Direction::ToDisk, "library/x/2024/a.jpg")
            .unwrap();
        assert_eq!(plan.source, Location::Object("library/x/2024/a.jpg".into()));
        assert_eq!(plan.new_path, "/data/library/x/2024/a.jpg");
    }

    #[test]
    fn a_relative_path_is_always_the_key_itself() {
        // The gallery wrote it without our prefix: the key is what it reads.
        let plan = layout("p").plan(Direction::ToDisk, "upload/a.jpg").unwrap();
        assert_eq!(plan.source, Location::Object("upload/a.jpg".into()));
        assert_eq!(plan.new_path, "/data/upload/a.jpg");
        // Under the prefix, the file is the rest of the key.
        let plan = layout("p")
            .plan(Direction::ToDisk, "p/upload/a.jpg")
            .unwrap();
        assert_eq!(plan.source, Location::Object("p/upload/a.jpg".into()));
        assert_eq!(plan.new_path, "/data/upload/a.jpg");
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
        assert_eq!(err.code().as_str(), "other_bucket");
        let err = layout("p")
            .plan(Direction::ToDisk, "s3://photos/q/a.jpg")
            .unwrap_err();
        assert_eq!(err.code().as_str(), "outside_prefix");
    }

    #[test]
    fn paths_outside_the_media_location_are_refused() {
        let err = layout("")
            .plan(Direction::ToS3, "/mnt/external/a.jpg")
            .unwrap_err();
        assert_eq!(err.code().as_str(), "outside_media_location");
        // A sibling folder that merely shares the prefix is outside too.
        let err = layout("")
            .plan(Direction::ToS3, "/data2/a.jpg")
            .unwrap_err();
        assert_eq!(err.code().as_str(), "outside_media_location");
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
            assert_eq!(err.code().as_str(), "unsafe_path", "{bad}");
        }
        for bad in ["upload/../../x", "/abs", "s3://photos/../x", "p/../x"] {
            assert!(layout("p").plan(Direction::ToDisk, bad).is_err(), "{bad}");
        }
    }
}
