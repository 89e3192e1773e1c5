//! Where the gallery keeps each kind's path, said once: the four tables
//! that hold file paths, their path columns, and which kinds live in each.
//! Every statement that reads or writes paths (candidates, the ledger,
//! rollback, the orphan streams) builds its SQL from these.
//!
//! Names here are SQL identifiers, already quoted where the gallery's
//! camelCase or reserved words need it; nothing from outside ever reaches
//! them.

use crate::model::FileKind;

/// A gallery table with a path column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathTable {
    Asset,
    AssetFile,
    Person,
    User,
}

impl PathTable {
    pub const ALL: [PathTable; 4] = [
        PathTable::Asset,
        PathTable::AssetFile,
        PathTable::Person,
        PathTable::User,
    ];

    /// The table, as SQL names it.
    pub fn name(self) -> &'static str {
        match self {
            PathTable::Asset => "asset",
            PathTable::AssetFile => "asset_file",
            PathTable::Person => "person",
            PathTable::User => r#""user""#,
        }
    }

    /// The short name statements give it.
    pub fn alias(self) -> &'static str {
        match self {
            PathTable::Asset => "a",
            PathTable::AssetFile => "f",
            PathTable::Person => "p",
            PathTable::User => "u",
        }
    }

    /// Its path column, as SQL names it.
    pub fn path(self) -> &'static str {
        match self {
            PathTable::Asset => r#""originalPath""#,
            PathTable::AssetFile => "path",
            PathTable::Person => r#""thumbnailPath""#,
            PathTable::User => r#""profileImagePath""#,
        }
    }

    /// The kinds whose paths it holds.
    pub fn kinds(self) -> impl Iterator<Item = FileKind> {
        FileKind::ALL.into_iter().filter(move |k| table(*k) == self)
    }

    /// `(… , …)`: the API keys of its kinds, as a SQL list of strings.
    pub fn kind_list(self) -> String {
        let keys: Vec<String> = self.kinds().map(|k| format!("'{}'", k.api_key())).collect();
        format!("({})", keys.join(", "))
    }
}

/// The table that holds a kind's paths.
pub fn table(kind: FileKind) -> PathTable {
    match kind {
        FileKind::Originals => PathTable::Asset,
        FileKind::Thumbnails
        | FileKind::Previews
        | FileKind::Fullsize
        | FileKind::Sidecars
        | FileKind::EncodedVideos => PathTable::AssetFile,
        FileKind::PersonThumbnails => PathTable::Person,
        FileKind::ProfileImages => PathTable::User,
    }
}

/// How a row of `alias`'s table is found from an id in `id`: by its own
/// id, except an encoded video, which the gallery logs by its asset's id.
pub fn row_by_entity(kind: FileKind, alias: &str, id: &str) -> String {
    match (kind, kind.asset_file_type()) {
        (FileKind::EncodedVideos, Some(file_type)) => {
            format!(r#"{alias}."assetId" = {id} AND {alias}."type" = '{file_type}'"#)
        }
        _ => format!("{alias}.id = {id}"),
    }
}

/// Where a log row's path lives, by its `entityType` and `fileType`: the
/// table, and how its row is found from the log's `entityId` (`v.id`), as
/// the gallery's own rollback finds it (any `assetFile` row by its id;
/// person and user rows whatever their file type).
pub fn log_target(entity_type: &str, file_type: Option<&str>) -> Option<(PathTable, String)> {
    if entity_type == "assetFile" && file_type.is_some() {
        return Some((PathTable::AssetFile, "t.id = v.id".into()));
    }
    let kind = FileKind::ALL.into_iter().find(|k| {
        k.log_entity_type() == entity_type
            && (k.log_file_type() == file_type || k.log_file_type().is_none())
    })?;
    Some((table(kind), row_by_entity(kind, "t", "v.id")))
}

/// Every non-empty path of the four tables, as one `UNION ALL` of
/// `SELECT <path> AS path …`: external libraries' included (their files are
/// not ours to call orphans either).
pub fn every_path() -> String {
    PathTable::ALL
        .iter()
        .map(|t| {
            format!(
                "SELECT {col} AS path FROM {table} WHERE {col} <> ''",
                col = t.path(),
                table = t.name()
            )
        })
        .collect::<Vec<_>>()
        .join("\n   UNION ALL ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_lives_in_one_table_and_each_table_lists_its_kinds() {
        for kind in FileKind::ALL {
            assert!(table(kind).kinds().any(|k| k == kind));
            assert_eq!(
                kind.asset_file_type().is_some(),
                table(kind) == PathTable::AssetFile
            );
        }
        assert_eq!(
            PathTable::AssetFile.kind_list(),
            "('thumbnails', 'previews', 'fullsize', 'sidecars', 'encodedVideos')"
        );
    }

    #[test]
    fn log_rows_lead_where_the_gallery_wrote_them() {
        for kind in FileKind::ALL {
            let (found, _) = log_target(kind.log_entity_type(), kind.log_file_type())
                .expect("every kind's own log values");
            assert_eq!(found, table(kind), "{kind}");
        }
        let video = log_target("asset", Some("encodedVideo")).expect("encoded video");
        assert_eq!(video.0, PathTable::AssetFile);
        assert!(video.1.contains(r#""assetId" = v.id"#));
        assert_eq!(
            log_target("asset", Some("original")).map(|t| t.1),
            Some("t.id = v.id".into())
        );
        assert_eq!(log_target("asset", None), None);
        assert_eq!(log_target("assetFile", None), None);
        assert_eq!(log_target("album", Some("original")), None);
        assert_eq!(
            log_target("person", Some("x")).map(|t| t.0),
            Some(PathTable::Person)
        );
    }

    #[test]
    fn encoded_videos_are_found_by_their_asset() {
        assert_eq!(
            row_by_entity(FileKind::EncodedVideos, "t", "v.id"),
            r#"t."assetId" = v.id AND t."type" = 'encoded_video'"#
        );
        assert_eq!(
            row_by_entity(FileKind::Sidecars, "t", "v.id"),
            "t.id = v.id"
        );
    }
}
