//! The gallery's media location: the folder its stored disk paths begin
//! with. It comes from `IMMICH_MEDIA_LOCATION` when set, else from what
//! the gallery recorded in `system_metadata` (`MediaLocation`), else the
//! gallery's own defaults. When the variable and the record disagree, the
//! gallery is about to rewrite its paths (it does so on its next start), so
//! no migration may begin until they agree.

use crate::config::absolute_folder;
use crate::db::{gallery, DbConn, DbError};
use std::path::Path;

/// Where the location in force came from, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `IMMICH_MEDIA_LOCATION`.
    Variable,
    /// The gallery's `system_metadata`.
    Recorded,
    /// Neither: `/data` when it exists, else `/usr/src/app/upload`.
    Default,
}

/// The media location in force, and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaLocation {
    pub path: String,
    pub source: Source,
}

/// Why the media location cannot be trusted right now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaMismatch {
    #[error("IMMICH_MEDIA_LOCATION is {variable} but the gallery recorded {recorded} as its media location (system_metadata, key MediaLocation); the gallery rewrites its paths to the new location on its next start: set IMMICH_MEDIA_LOCATION to the location the gallery really uses, let the gallery finish starting, then start the migration")]
    Variable { variable: String, recorded: String },
    #[error("the gallery's recorded media location is now {recorded} (system_metadata, key MediaLocation) but noodle-migrate started with {in_force}: restart noodle-migrate so that it reads the new location")]
    Changed { in_force: String, recorded: String },
}

/// The location the gallery recorded, if valid. A record that is not an
/// absolute folder cannot be what the gallery's paths start with: it is
/// ignored, with a warning.
pub async fn recorded(conn: &mut DbConn) -> Result<Option<String>, DbError> {
    let Some(value) = gallery::media_location(conn).await? else {
        return Ok(None);
    };
    match absolute_folder("MediaLocation", &value) {
        Ok(path) => Ok(Some(path)),
        Err(e) => {
            tracing::warn!(error = %e, "Ignoring the gallery's recorded media location");
            Ok(None)
        }
    }
}

/// The location in force at start-up.
pub fn resolve(variable: Option<&str>, recorded: Option<&str>) -> MediaLocation {
    match (variable, recorded) {
        (Some(v), _) => MediaLocation {
            path: v.to_string(),
            source: Source::Variable,
        },
        (None, Some(r)) => MediaLocation {
            path: r.to_string(),
            source: Source::Recorded,
        },
        (None, None) => MediaLocation {
            path: if Path::new("/data").is_dir() {
                "/data".into()
            } else {
                "/usr/src/app/upload".into()
            },
            source: Source::Default,
        },
    }
}

/// Checks the location in force against what the gallery records now.
pub fn check(in_force: &MediaLocation, recorded: Option<&str>) -> Result<(), MediaMismatch> {
    match recorded {
        Some(r) if r != in_force.path => Err(match in_force.source {
            Source::Variable => MediaMismatch::Variable {
                variable: in_force.path.clone(),
                recorded: r.to_string(),
            },
            Source::Recorded | Source::Default => MediaMismatch::Changed {
                in_force: in_force.path.clone(),
                recorded: r.to_string(),
            },
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_wins_but_must_agree() {
        let m = resolve(Some("/srv/media"), Some("/data"));
        assert_eq!(m.path, "/srv/media");
        let err = check(&m, Some("/data")).unwrap_err().to_string();
        assert!(err.contains("/srv/media") && err.contains("/data"), "{err}");
        assert!(check(&m, Some("/srv/media")).is_ok());
        assert!(check(&m, None).is_ok());
    }

    #[test]
    fn the_record_applies_when_the_variable_is_unset() {
        let m = resolve(None, Some("/photos"));
        assert_eq!(m.source, Source::Recorded);
        assert_eq!(m.path, "/photos");
        assert!(check(&m, Some("/photos")).is_ok());
        assert!(matches!(
            check(&m, Some("/elsewhere")),
            Err(MediaMismatch::Changed { .. })
        ));
    }
}
