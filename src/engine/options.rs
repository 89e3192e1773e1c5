//! The options of one migration, said once: this type is the start body's
//! contract. The HTTP handlers deserialize and validate it, the batch
//! stores it as it is, a retry reads it back, the CLI builds and sends it,
//! and the OpenAPI document derives from it. A new option is one field
//! here.
//!
//! Omitted fields and `null` take their defaults (the gallery's own
//! validation treats `null` as omitted); unknown fields are refused.

use crate::bandwidth::BandwidthLimit;
use crate::model::{Direction, FileKind, PerKind};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;

/// Files moved in parallel unless the start says otherwise.
pub const DEFAULT_CONCURRENCY: u8 = 5;
/// The most files a run moves in parallel.
pub const MAX_CONCURRENCY: u8 = 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartOptions {
    pub direction: Direction,
    /// Delete each source once its new path is committed.
    #[serde(default)]
    #[schema(value_type = Option<bool>, default = false)]
    pub delete_source: bool,
    /// Files moved in parallel, 1–20.
    #[serde(default)]
    #[schema(value_type = Option<u8>, minimum = 1, maximum = 20, default = 5)]
    pub concurrency: Concurrency,
    /// Kinds to move; omitted kinds are included.
    #[serde(default)]
    #[schema(value_type = Option<FileTypes>)]
    pub file_types: FileTypes,
    /// Check originals against `asset.checksum` before committing them.
    #[serde(default)]
    #[schema(value_type = Option<bool>, default = false)]
    pub verify: bool,
    /// Dump the database to the active backend before the first file.
    #[serde(default)]
    #[schema(value_type = Option<bool>, default = false)]
    pub dump_database: bool,
    /// Start even when the gallery's `move_history` has rows (stale rows
    /// of moves that failed).
    #[serde(default)]
    #[schema(value_type = Option<bool>, default = false)]
    pub ignore_move_history: bool,
    /// Bytes per second for all the transfers of a process, both ways:
    /// `512k`, `20M` (binary multiples), a number, `off`, or rclone's
    /// timetable in local time (`"08:00,2M 23:00,off"`, `"Sat-09:00,off"`).
    /// Omitted: no limit. Changed during a run with `PATCH
    /// /storage-migration/run`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, example = "08:00,2M 23:00,off")]
    pub bandwidth_limit: Option<BandwidthLimit>,
}

impl StartOptions {
    /// The defaults for a direction: every kind, concurrency 5, nothing
    /// deleted, verified or dumped.
    pub fn new(direction: Direction) -> StartOptions {
        StartOptions {
            direction,
            delete_source: false,
            concurrency: Concurrency::default(),
            file_types: FileTypes::default(),
            verify: false,
            dump_database: false,
            ignore_move_history: false,
            bandwidth_limit: None,
        }
    }

    /// The selected kinds, in walking order.
    pub fn kinds(&self) -> Vec<FileKind> {
        self.file_types.kinds()
    }

    /// Parses and validates a start body. Every refusal names what is
    /// wrong, with a stable code.
    pub fn from_json(body: &[u8]) -> Result<StartOptions, InvalidOptions> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            InvalidOptions::new(
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        StartOptions::from_value(value)
    }

    /// As [`StartOptions::from_json`], from a parsed body (a stored batch's
    /// options, too).
    pub fn from_value(mut value: Value) -> Result<StartOptions, InvalidOptions> {
        let Some(fields) = value.as_object_mut() else {
            return Err(InvalidOptions::new(
                "invalid_body",
                "the request body must be a JSON object",
            ));
        };
        fields.retain(|_, v| !v.is_null());
        if !fields.contains_key("direction") {
            return Err(InvalidOptions::new(
                "invalid_direction",
                "direction is required: toS3 or toDisk",
            ));
        }
        let options: StartOptions =
            serde_path_to_error::deserialize(value).map_err(InvalidOptions::from_serde)?;
        if options.file_types.kinds().is_empty() {
            return Err(InvalidOptions::new(
                "no_file_types",
                "select at least one file type",
            ));
        }
        Ok(options)
    }

    /// The form a batch keeps its options in.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A start body that cannot be used, with a stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct InvalidOptions {
    pub code: &'static str,
    pub message: String,
}

impl InvalidOptions {
    fn new(code: &'static str, message: impl Into<String>) -> InvalidOptions {
        InvalidOptions {
            code,
            message: message.into(),
        }
    }

    /// Names the field that failed, and the code that goes with it.
    fn from_serde(e: serde_path_to_error::Error<serde_json::Error>) -> InvalidOptions {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let unknown = inner.starts_with("unknown field");
        let field = path.split('.').next().unwrap_or_default();
        let code = match field {
            "fileTypes" if unknown => "unknown_file_type",
            _ if unknown => "unknown_field",
            "direction" => "invalid_direction",
            "concurrency" => "invalid_concurrency",
            "bandwidthLimit" => "invalid_bandwidth_limit",
            _ => "invalid_field",
        };
        if unknown {
            InvalidOptions::new(code, inner)
        } else {
            InvalidOptions::new(code, format!("{path}: {inner}"))
        }
    }
}

/// A change to a run in progress (`PATCH /storage-migration/run`): what
/// is given takes effect within a second, in every process of the batch.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunChange {
    /// Files moved in parallel, 1–20, per process.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = u8, minimum = 1, maximum = 20)]
    pub concurrency: Option<Concurrency>,
    /// As in the start body; `off` lifts the limit.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = String, example = "20M")]
    pub bandwidth_limit: Option<BandwidthLimit>,
}

/// A field given must hold a value: in a change, `null` would say
/// nothing.
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

impl RunChange {
    /// Parses and validates a change body: an object with at least one of
    /// its fields.
    pub fn from_json(body: &[u8]) -> Result<RunChange, InvalidOptions> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            InvalidOptions::new(
                "malformed_json",
                format!("the request body is not valid JSON: {e}"),
            )
        })?;
        if !value.is_object() {
            return Err(InvalidOptions::new(
                "invalid_body",
                "the request body must be a JSON object",
            ));
        }
        let change: RunChange =
            serde_path_to_error::deserialize(value).map_err(InvalidOptions::from_serde)?;
        if change.concurrency.is_none() && change.bandwidth_limit.is_none() {
            return Err(InvalidOptions::new(
                "no_change",
                "give concurrency (1-20), bandwidthLimit (such as \"20M\" or \"off\"), or both",
            ));
        }
        Ok(change)
    }

    /// The change, applied to a run's options.
    pub fn apply_to(&self, options: &mut StartOptions) {
        if let Some(c) = self.concurrency {
            options.concurrency = c;
        }
        if let Some(limit) = &self.bandwidth_limit {
            options.bandwidth_limit = (!limit.is_off()).then(|| limit.clone());
        }
    }
}

/// How many files a run moves at once: a whole number from 1 to 20.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Concurrency(u8);

impl Concurrency {
    pub fn new(n: u8) -> Option<Concurrency> {
        (1..=MAX_CONCURRENCY).contains(&n).then_some(Concurrency(n))
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for Concurrency {
    fn default() -> Concurrency {
        Concurrency(DEFAULT_CONCURRENCY)
    }
}

impl<'de> Deserialize<'de> for Concurrency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Concurrency, D::Error> {
        struct Whole;
        impl Whole {
            fn check<E: de::Error>(n: f64) -> Result<Concurrency, E> {
                // 13.0 is the whole number 13 (JSON Schema says so too).
                if n.fract() == 0.0 && n >= 1.0 && n <= f64::from(MAX_CONCURRENCY) {
                    Ok(Concurrency(n as u8))
                } else {
                    Err(E::custom(format!(
                        "concurrency must be a whole number from 1 to {MAX_CONCURRENCY}, got {n}"
                    )))
                }
            }
        }
        impl Visitor<'_> for Whole {
            type Value = Concurrency;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a whole number from 1 to {MAX_CONCURRENCY}")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Concurrency, E> {
                Whole::check(n.min(u64::from(u32::MAX)) as f64)
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Concurrency, E> {
                Whole::check(n.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as f64)
            }
            fn visit_f64<E: de::Error>(self, n: f64) -> Result<Concurrency, E> {
                Whole::check(n)
            }
        }
        d.deserialize_any(Whole)
    }
}

/// Which kinds a run moves, as the API's `fileTypes` object: one boolean
/// per kind, by its API key; an omitted kind is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileTypes(PerKind<bool>);

impl FileTypes {
    /// Only these kinds.
    pub fn only(kinds: &[FileKind]) -> FileTypes {
        let mut selected = PerKind::default();
        for &kind in kinds {
            selected.set(kind, true);
        }
        FileTypes(selected)
    }

    pub fn kinds(&self) -> Vec<FileKind> {
        self.0
            .iter()
            .filter(|(_, on)| *on)
            .map(|(k, _)| k)
            .collect()
    }
}

impl Default for FileTypes {
    fn default() -> FileTypes {
        FileTypes::only(&FileKind::ALL)
    }
}

impl Serialize for FileTypes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(FileKind::ALL.len()))?;
        for (kind, on) in self.0.iter() {
            map.serialize_entry(kind.api_key(), &on)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FileTypes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FileTypes, D::Error> {
        struct Types;
        impl<'de> Visitor<'de> for Types {
            type Value = FileTypes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of booleans keyed by file type")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<FileTypes, A::Error> {
                let mut types = FileTypes::default();
                while let Some(key) = map.next_key::<String>()? {
                    let Some(kind) = FileKind::from_api_key(&key) else {
                        return Err(de::Error::unknown_field(&key, &FileKind::API_KEYS));
                    };
                    // null, like an omitted kind, selects it.
                    let on: Option<bool> = map.next_value()?;
                    types.0.set(kind, on.unwrap_or(true));
                }
                Ok(types)
            }
        }
        d.deserialize_map(Types)
    }
}

impl utoipa::PartialSchema for FileTypes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Type};
        let mut object = ObjectBuilder::new()
            .description(Some(
                "One boolean per kind; an omitted (or null) kind is included.",
            ))
            .additional_properties(Some(AdditionalProperties::FreeForm(false)));
        for key in FileKind::API_KEYS {
            object = object.property(
                key,
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
                        Type::Boolean,
                        Type::Null,
                    ]))
                    .default(Some(Value::Bool(true))),
            );
        }
        utoipa::openapi::RefOr::T(object.into())
    }
}

impl utoipa::ToSchema for FileTypes {}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(body: &str) -> &'static str {
        StartOptions::from_json(body.as_bytes())
            .expect_err(body)
            .code
    }

    #[test]
    fn defaults_fill_what_is_omitted_or_null() {
        let options = StartOptions::from_json(
            br#"{"direction":"toS3","concurrency":null,"fileTypes":{"sidecars":false,"previews":null}}"#,
        )
        .unwrap();
        assert_eq!(options.concurrency.get(), 5);
        assert!(!options.delete_source);
        assert_eq!(options.kinds().len(), 7);
        assert!(!options.kinds().contains(&FileKind::Sidecars));
    }

    #[test]
    fn a_whole_number_may_be_written_with_a_point() {
        let options =
            StartOptions::from_json(br#"{"direction":"toDisk","concurrency":13.0}"#).unwrap();
        assert_eq!(options.concurrency.get(), 13);
    }

    #[test]
    fn each_refusal_has_its_code() {
        assert_eq!(refusal("{"), "malformed_json");
        assert_eq!(refusal(""), "malformed_json");
        assert_eq!(refusal("[]"), "invalid_body");
        assert_eq!(refusal("null"), "invalid_body");
        assert_eq!(refusal("{}"), "invalid_direction");
        assert_eq!(refusal(r#"{"direction":"up"}"#), "invalid_direction");
        assert_eq!(refusal(r#"{"direction":3}"#), "invalid_direction");
        for c in ["0", "21", "2.5", "-1", "\"five\"", "1e30"] {
            let body = format!(r#"{{"direction":"toS3","concurrency":{c}}}"#);
            assert_eq!(refusal(&body), "invalid_concurrency", "{body}");
        }
        assert_eq!(
            refusal(r#"{"direction":"toS3","deleteSource":1}"#),
            "invalid_field"
        );
        assert_eq!(
            refusal(r#"{"direction":"toS3","extra":true}"#),
            "unknown_field"
        );
        assert_eq!(
            refusal(r#"{"direction":"toS3","fileTypes":{"photos":true}}"#),
            "unknown_file_type"
        );
        assert_eq!(
            refusal(r#"{"direction":"toS3","fileTypes":{"originals":"yes"}}"#),
            "invalid_field"
        );
        assert_eq!(
            refusal(r#"{"direction":"toS3","fileTypes":[]}"#),
            "invalid_field"
        );
        let none = FileKind::API_KEYS
            .iter()
            .map(|k| format!(r#""{k}":false"#))
            .collect::<Vec<_>>()
            .join(",");
        assert_eq!(
            refusal(&format!(r#"{{"direction":"toS3","fileTypes":{{{none}}}}}"#)),
            "no_file_types"
        );
    }

    #[test]
    fn the_stored_form_reads_back_as_the_same_options() {
        let mut options = StartOptions::new(Direction::ToDisk);
        options.delete_source = true;
        options.concurrency = Concurrency::new(12).unwrap();
        options.file_types = FileTypes::only(&[FileKind::Originals, FileKind::ProfileImages]);
        options.ignore_move_history = true;
        options.bandwidth_limit = Some(BandwidthLimit::parse("08:00,2M 23:00,off").unwrap());
        let stored = options.to_value();
        assert_eq!(stored["bandwidthLimit"], "08:00,2M 23:00,off");
        assert_eq!(stored["fileTypes"]["thumbnails"], false);
        assert_eq!(StartOptions::from_value(stored).unwrap(), options);
    }

    #[test]
    fn a_bad_bandwidth_limit_names_itself() {
        assert_eq!(
            refusal(r#"{"direction":"toS3","bandwidthLimit":"fast"}"#),
            "invalid_bandwidth_limit"
        );
        let e = StartOptions::from_json(br#"{"direction":"toS3","bandwidthLimit":0}"#).unwrap_err();
        assert!(e.message.contains("bandwidthLimit"), "{}", e.message);
        let ok = StartOptions::from_json(br#"{"direction":"toS3","bandwidthLimit":"2M"}"#).unwrap();
        assert_eq!(ok.bandwidth_limit.unwrap().as_str(), "2M");
    }

    #[test]
    fn a_run_change_needs_a_field_and_checks_each() {
        let code = |b: &str| RunChange::from_json(b.as_bytes()).unwrap_err().code;
        assert_eq!(code("{}"), "no_change");
        assert_eq!(code(r#"{"concurrency":null}"#), "invalid_concurrency");
        assert_eq!(
            code(r#"{"bandwidthLimit":null}"#),
            "invalid_bandwidth_limit"
        );
        assert_eq!(code(r#"{"concurrency":0}"#), "invalid_concurrency");
        assert_eq!(code(r#"{"bandwidthLimit":"x"}"#), "invalid_bandwidth_limit");
        assert_eq!(code(r#"{"direction":"toS3"}"#), "unknown_field");
        assert_eq!(code("[1]"), "invalid_body");
        let change = RunChange::from_json(br#"{"concurrency":3,"bandwidthLimit":"off"}"#).unwrap();
        let mut options = StartOptions::new(Direction::ToS3);
        options.bandwidth_limit = Some(BandwidthLimit::parse("1M").unwrap());
        change.apply_to(&mut options);
        assert_eq!(options.concurrency.get(), 3);
        assert_eq!(options.bandwidth_limit, None);
    }

    #[test]
    fn concurrency_is_bounded() {
        assert!(Concurrency::new(0).is_none());
        assert!(Concurrency::new(21).is_none());
        assert_eq!(Concurrency::new(20).map(Concurrency::get), Some(20));
    }
}
