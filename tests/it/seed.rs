//! Seeds a gallery database and its media folder with a small library of
//! real files of every kind, shaped like a real Noodle Gallery's: storage
//! template and plain upload paths, old `-thumbnail.webp` names, sidecars,
//! encoded videos, people and users with and without pictures, an external
//! library, and a row outside the media location.
//!
//! Shared by the integration tests and `make demo` (examples/seed.rs).

use noodle_migrate::model::FileKind;
use sha1::Digest as _;
use std::path::{Path, PathBuf};
use tokio_postgres::Client;
use uuid::Uuid;

pub const GALLERY_SCHEMA: &str = include_str!("fixtures/gallery_schema.sql");
pub const GALLERY_LOG_TABLE: &str = include_str!("fixtures/gallery_log_table.sql");

#[derive(Debug, Clone)]
pub struct SeedSpec {
    pub users: usize,
    pub assets_per_user: usize,
    /// Largest original, in bytes (sizes vary below it).
    pub max_size: usize,
}

impl Default for SeedSpec {
    fn default() -> Self {
        SeedSpec {
            users: 2,
            assets_per_user: 12,
            max_size: 40_000,
        }
    }
}

/// One file the migration must move.
#[derive(Debug, Clone)]
pub struct SeededFile {
    pub kind: FileKind,
    /// The row whose path column holds `path`.
    pub row_id: Uuid,
    /// What the log's `entityId` must say.
    pub entity_id: Uuid,
    /// The path as stored before any migration (absolute, under the media location).
    pub path: String,
    pub content: Vec<u8>,
}

impl SeededFile {
    /// The path relative to the media location, i.e. the S3 form.
    pub fn relative(&self, media: &Path) -> String {
        let root = format!("{}/", media.display());
        self.path
            .strip_prefix(&root)
            .unwrap_or(&self.path)
            .to_string()
    }
}

#[derive(Debug, Default)]
pub struct Seeded {
    pub files: Vec<SeededFile>,
    /// External-library originals and sidecars: never moved.
    pub external: Vec<SeededFile>,
    /// A non-external original outside the media location: refused.
    pub outside: Vec<SeededFile>,
    pub users: Vec<Uuid>,
}

impl Seeded {
    pub fn of_kind(&self, kind: FileKind) -> impl Iterator<Item = &SeededFile> {
        self.files.iter().filter(move |f| f.kind == kind)
    }
}

/// Deterministic content of a given size, different for every `n`.
pub fn content(n: u64, size: usize) -> Vec<u8> {
    let mut state = n
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..size)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn write(path: &str, data: &[u8]) {
    let p = PathBuf::from(path);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir).expect("create seed folder");
    }
    std::fs::write(&p, data).expect("write seed file");
}

fn shard(id: &Uuid) -> String {
    let s = id.simple().to_string();
    format!("{}/{}", &s[0..2], &s[2..4])
}

pub async fn create_schema(client: &Client, with_log_table: bool) {
    client
        .batch_execute(GALLERY_SCHEMA)
        .await
        .expect("gallery schema");
    if with_log_table {
        client
            .batch_execute(GALLERY_LOG_TABLE)
            .await
            .expect("gallery log table");
    }
}

/// Seeds `spec` into the database and under `media`; `outside_root` is a
/// folder outside the media location for external-library files.
pub async fn seed(client: &Client, media: &Path, outside_root: &Path, spec: &SeedSpec) -> Seeded {
    let media_s = media.display().to_string();
    let mut out = Seeded::default();
    let mut n: u64 = 1;
    let mut next = |size: usize| {
        n += 1;
        content(n, size.max(1))
    };

    client
        .execute(
            r#"INSERT INTO system_metadata ("key", "value") VALUES ('MediaLocation', $1::text::jsonb)"#,
            &[&format!(r#"{{"location": "{media_s}"}}"#)],
        )
        .await
        .expect("media location");

    for u in 0..spec.users {
        let user_id = Uuid::now_v7();
        out.users.push(user_id);
        let label = (u == 0).then(|| "alice".to_string());
        let profile = if u % 2 == 0 {
            let p = format!("{media_s}/profile/{user_id}/{}.jpg", Uuid::new_v4());
            let data = next(3000 + u * 100);
            write(&p, &data);
            out.files.push(SeededFile {
                kind: FileKind::ProfileImages,
                row_id: user_id,
                entity_id: user_id,
                path: p.clone(),
                content: data,
            });
            p
        } else {
            String::new()
        };
        client
            .execute(
                r#"INSERT INTO "user" ("id", "email", "name", "storageLabel", "profileImagePath") VALUES ($1, $2, $3, $4, $5)"#,
                &[&user_id, &format!("user{u}@example.test"), &format!("User {u}"), &label, &profile],
            )
            .await
            .expect("user");

        for i in 0..spec.assets_per_user {
            let asset_id = Uuid::now_v7();
            let video = i % 5 == 4;
            let ext = if video { "mp4" } else { "jpg" };
            let original = match (&label, i % 3) {
                (Some(l), 0) => format!(
                    "{media_s}/library/{l}/2024/2024-01-{:02}/IMG_{i:04}.{ext}",
                    1 + i % 28
                ),
                _ => format!(
                    "{media_s}/upload/{user_id}/{}/{asset_id}.{ext}",
                    shard(&asset_id)
                ),
            };
            let size = 500 + ((i * 7919 + u * 104729) % spec.max_size.max(1000));
            let data = next(size);
            write(&original, &data);
            let checksum = sha1::Sha1::digest(&data).to_vec();
            client
                .execute(
                    r#"INSERT INTO asset ("id", "deviceAssetId", "ownerId", "deviceId", "type", "originalPath",
                         "fileCreatedAt", "fileModifiedAt", "localDateTime", "checksum", "originalFileName")
                       VALUES ($1, $2, $3, 'seed', $4, $5, now(), now(), now(), $6, $7)"#,
                    &[
                        &asset_id,
                        &format!("dev-{i}"),
                        &user_id,
                        &(if video { "VIDEO" } else { "IMAGE" }),
                        &original,
                        &checksum,
                        &format!("IMG_{i:04}.{ext}"),
                    ],
                )
                .await
                .expect("asset");
            if i % 7 != 6 {
                let known: Option<i64> = (i % 4 != 0).then_some(data.len() as i64);
                client
                    .execute(
                        r#"INSERT INTO asset_exif ("assetId", "fileSizeInByte") VALUES ($1, $2)"#,
                        &[&asset_id, &known],
                    )
                    .await
                    .expect("exif");
            }
            out.files.push(SeededFile {
                kind: FileKind::Originals,
                row_id: asset_id,
                entity_id: asset_id,
                path: original.clone(),
                content: data,
            });

            let thumbs = format!("{media_s}/thumbs/{user_id}/{}", shard(&asset_id));
            let thumb_name = if i % 4 == 1 {
                format!("{asset_id}-thumbnail.webp")
            } else {
                format!("{asset_id}_thumbnail.webp")
            };
            let mut files = vec![
                (
                    FileKind::Thumbnails,
                    format!("{thumbs}/{thumb_name}"),
                    1500 + i * 10,
                ),
                (
                    FileKind::Previews,
                    format!("{thumbs}/{asset_id}_preview.jpeg"),
                    8000 + i * 13,
                ),
            ];
            if i % 3 == 0 {
                files.push((
                    FileKind::Fullsize,
                    format!("{thumbs}/{asset_id}_fullsize.jpeg"),
                    12000 + i,
                ));
            }
            if i % 4 == 2 {
                files.push((FileKind::Sidecars, format!("{original}.xmp"), 400 + i));
            }
            if video {
                files.push((
                    FileKind::EncodedVideos,
                    format!(
                        "{media_s}/encoded-video/{user_id}/{}/{asset_id}.mp4",
                        shard(&asset_id)
                    ),
                    20000 + i * 3,
                ));
            }
            for (kind, path, size) in files {
                let file_id = Uuid::now_v7();
                let data = next(size);
                write(&path, &data);
                client
                    .execute(
                        r#"INSERT INTO asset_file ("id", "assetId", "type", "path") VALUES ($1, $2, $3, $4)"#,
                        &[&file_id, &asset_id, &kind.asset_file_type().unwrap_or_default(), &path],
                    )
                    .await
                    .expect("asset_file");
                out.files.push(SeededFile {
                    kind,
                    row_id: file_id,
                    entity_id: if kind == FileKind::EncodedVideos {
                        asset_id
                    } else {
                        file_id
                    },
                    path,
                    content: data,
                });
            }
        }

        for p in 0..2 {
            let person_id = Uuid::now_v7();
            let thumb = if p == 0 {
                let path = format!(
                    "{media_s}/thumbs/{user_id}/{}/{person_id}.jpeg",
                    shard(&person_id)
                );
                let data = next(2500 + p);
                write(&path, &data);
                out.files.push(SeededFile {
                    kind: FileKind::PersonThumbnails,
                    row_id: person_id,
                    entity_id: person_id,
                    path: path.clone(),
                    content: data,
                });
                path
            } else {
                String::new()
            };
            client
                .execute(
                    r#"INSERT INTO person ("id", "ownerId", "name", "thumbnailPath") VALUES ($1, $2, $3, $4)"#,
                    &[&person_id, &user_id, &format!("Person {p}"), &thumb],
                )
                .await
                .expect("person");
        }
    }

    // An external library: its originals and sidecars stay where they are;
    // the thumbnails the gallery made for them live in the media location.
    let owner = out.users[0];
    let import = outside_root.join("external");
    let library_id = Uuid::now_v7();
    client
        .execute(
            r#"INSERT INTO library ("id", "name", "ownerId", "importPaths") VALUES ($1, 'NAS', $2, $3)"#,
            &[&library_id, &owner, &vec![import.display().to_string()]],
        )
        .await
        .expect("library");
    for e in 0..2 {
        let asset_id = Uuid::now_v7();
        let path = format!("{}/2019/DSC_{e:04}.jpg", import.display());
        let data = next(5000 + e);
        write(&path, &data);
        let checksum = sha1::Sha1::digest(&data).to_vec();
        client
            .execute(
                r#"INSERT INTO asset ("id", "deviceAssetId", "ownerId", "deviceId", "type", "originalPath",
                     "fileCreatedAt", "fileModifiedAt", "localDateTime", "checksum", "originalFileName",
                     "libraryId", "isExternal")
                   VALUES ($1, $2, $3, 'library-import', 'IMAGE', $4, now(), now(), now(), $5, $6, $7, true)"#,
                &[&asset_id, &format!("ext-{e}"), &owner, &path, &checksum, &format!("DSC_{e:04}.jpg"), &library_id],
            )
            .await
            .expect("external asset");
        out.external.push(SeededFile {
            kind: FileKind::Originals,
            row_id: asset_id,
            entity_id: asset_id,
            path: path.clone(),
            content: data,
        });
        let sidecar = format!("{path}.xmp");
        let sidecar_data = next(300);
        write(&sidecar, &sidecar_data);
        let sidecar_id = Uuid::now_v7();
        client
            .execute(
                r#"INSERT INTO asset_file ("id", "assetId", "type", "path") VALUES ($1, $2, 'sidecar', $3)"#,
                &[&sidecar_id, &asset_id, &sidecar],
            )
            .await
            .expect("external sidecar");
        out.external.push(SeededFile {
            kind: FileKind::Sidecars,
            row_id: sidecar_id,
            entity_id: sidecar_id,
            path: sidecar,
            content: sidecar_data,
        });
        let thumb = format!(
            "{media_s}/thumbs/{owner}/{}/{asset_id}_thumbnail.webp",
            shard(&asset_id)
        );
        let thumb_data = next(1200);
        write(&thumb, &thumb_data);
        let thumb_id = Uuid::now_v7();
        client
            .execute(
                r#"INSERT INTO asset_file ("id", "assetId", "type", "path") VALUES ($1, $2, 'thumbnail', $3)"#,
                &[&thumb_id, &asset_id, &thumb],
            )
            .await
            .expect("external thumbnail");
        out.files.push(SeededFile {
            kind: FileKind::Thumbnails,
            row_id: thumb_id,
            entity_id: thumb_id,
            path: thumb,
            content: thumb_data,
        });
    }

    // An upload whose path lies outside the media location (a moved volume):
    // not external, but not safe to move either.
    let stray_id = Uuid::now_v7();
    let stray = format!("{}/elsewhere/stray.jpg", outside_root.display());
    let stray_data = next(700);
    write(&stray, &stray_data);
    client
        .execute(
            r#"INSERT INTO asset ("id", "deviceAssetId", "ownerId", "deviceId", "type", "originalPath",
                 "fileCreatedAt", "fileModifiedAt", "localDateTime", "checksum", "originalFileName")
               VALUES ($1, 'stray', $2, 'seed', 'IMAGE', $3, now(), now(), now(), $4, 'stray.jpg')"#,
            &[&stray_id, &owner, &stray, &sha1::Sha1::digest(&stray_data).to_vec()],
        )
        .await
        .expect("stray asset");
    out.outside.push(SeededFile {
        kind: FileKind::Originals,
        row_id: stray_id,
        entity_id: stray_id,
        path: stray,
        content: stray_data,
    });
    out
}
