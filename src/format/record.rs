//! Records exactly as they appear in a backup file, before validation.
//!
//! Ids and timestamps are kept as text here so that the validator can report every bad one with
//! its position instead of stopping at the first. Unknown fields are refused (never dropped):
//! the error names the field and its position.

use crate::model::Finding;
use serde::Deserialize;
use serde_json::{Map, Value};

/// An analysis as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAnalysis {
    pub id: String,
    pub url: String,
    pub content_type: String,
    pub status: String,
    pub created_at: String,
    pub findings: Vec<Finding>,
    pub chunks: Vec<RawChunk>,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub artifact: Option<RawArtifact>,
}

/// A chunk as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChunk {
    pub id: String,
    pub content: String,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub section_title: Option<String>,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub section_path: Option<String>,
    pub content_type: String,
    pub chunk_index: i64,
}

/// An artifact as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawArtifact {
    pub id: String,
    /// Required, may be `null`.
    #[serde(deserialize_with = "Option::deserialize")]
    pub summary: Option<String>,
    #[serde(deserialize_with = "unique_values")]
    pub key_findings: Vec<Value>,
    #[serde(deserialize_with = "unique_map")]
    pub metadata: Map<String, Value>,
}

/// Free-form JSON read with each key once per object, at every depth: serde_json's `Map`
/// keeps the last of two equal keys silently, where the fixed fields refuse a duplicate.
struct UniqueKeys {
    /// Only an object is accepted (for a field that is a map).
    object: bool,
}

impl<'de> serde::de::Visitor<'de> for UniqueKeys {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.object {
            "a map"
        } else {
            "any JSON value"
        })
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        any_unique(d)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element::<Unique>()? {
            out.push(v.0);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(serde::de::Error::custom(format_args!(
                    "duplicate key {key:?} in free-form JSON"
                )));
            }
            let value: Unique = map.next_value()?;
            out.insert(key, value.0);
        }
        Ok(Value::Object(out))
    }
}

struct Unique(Value);

impl<'de> Deserialize<'de> for Unique {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        any_unique(d).map(Unique)
    }
}

fn any_unique<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    d.deserialize_any(UniqueKeys { object: false })
}

/// A JSON object whose keys, at every depth, appear once.
pub fn unique_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    match d.deserialize_map(UniqueKeys { object: true })? {
        Value::Object(m) => Ok(m),
        _ => unreachable!("visit_map is the only way an object visitor returns"),
    }
}

/// [`unique_map`], absent or `null` allowed.
pub fn unique_map_opt<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Map<String, Value>>, D::Error> {
    Option::<UniqueObject>::deserialize(d).map(|o| o.map(|u| u.0))
}

/// JSON values whose objects, at every depth, have each key once.
pub fn unique_values<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Value>, D::Error> {
    Vec::<Unique>::deserialize(d).map(|v| v.into_iter().map(|u| u.0).collect())
}

struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        unique_map(d).map(UniqueObject)
    }
}
