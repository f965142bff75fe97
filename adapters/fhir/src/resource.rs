//! The `resourceType`-tagged [`Resource`] enum and the parse entry points.

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::bundle::Bundle;
use crate::datatypes::Meta;
use crate::error::FhirError;
use crate::outcome::{CapabilityStatement, OperationOutcome};
use crate::resources::*;

/// A typed resource model.
pub trait FhirResource: Sized + Serialize {
    /// The `resourceType`.
    const TYPE: &'static str;
    /// Logical id.
    fn id(&self) -> Option<&str>;
    /// Metadata.
    fn meta(&self) -> Option<&Meta>;
    /// Wrap into [`Resource`].
    fn into_resource(self) -> Resource;
    /// Unwrap from [`Resource`]; gives it back when the type differs.
    fn from_resource(resource: Resource) -> Result<Self, Resource>;
    /// Borrow from [`Resource`].
    fn cast(resource: &Resource) -> Option<&Self>;
}

macro_rules! resources {
    ($($name:ident),+ $(,)?) => {
        /// Any resource: the modelled types, or [`Resource::Other`] with the raw JSON.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Resource {
            $(
                #[doc = concat!("`", stringify!($name), "`")]
                $name(Box<$name>),
            )+
            /// A resource type this crate does not model, kept as received (with `resourceType`).
            Other(Value),
        }

        impl Resource {
            /// The `resourceType`.
            pub fn resource_type(&self) -> &str {
                match self {
                    $(Resource::$name(_) => stringify!($name),)+
                    Resource::Other(v) => v.get("resourceType").and_then(Value::as_str).unwrap_or(""),
                }
            }

            /// Logical id.
            pub fn id(&self) -> Option<&str> {
                match self {
                    $(Resource::$name(r) => r.id.as_deref(),)+
                    Resource::Other(v) => v.get("id").and_then(Value::as_str),
                }
            }

            /// `meta.versionId`.
            pub fn version_id(&self) -> Option<&str> {
                match self {
                    $(Resource::$name(r) => r.meta.as_ref().and_then(|m| m.version_id.as_deref()),)+
                    Resource::Other(v) => v.pointer("/meta/versionId").and_then(Value::as_str),
                }
            }

            /// Parse a JSON value whose `resourceType` selects the model.
            pub fn from_value(value: Value) -> Result<Resource, FhirError> {
                let rt = match value.get("resourceType") {
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => return Err(FhirError::NotAResource("resourceType is not a string".into())),
                    None if value.is_object() => return Err(FhirError::NotAResource("no resourceType".into())),
                    None => return Err(FhirError::NotAResource("not a JSON object".into())),
                };
                match rt.as_str() {
                    $(stringify!($name) => typed::<$name>(value, &rt).map(|r| Resource::$name(Box::new(r))),)+
                    _ => Ok(Resource::Other(value)),
                }
            }

            /// Serialise to a JSON value with `resourceType`.
            pub fn to_value(&self) -> Result<Value, FhirError> {
                let (mut v, rt) = match self {
                    $(Resource::$name(r) => (serde_json::to_value(r)?, stringify!($name)),)+
                    Resource::Other(v) => return Ok(v.clone()),
                };
                if let Value::Object(m) = &mut v {
                    m.insert("resourceType".into(), Value::String(rt.into()));
                }
                Ok(v)
            }
        }

        $(
            impl FhirResource for $name {
                const TYPE: &'static str = stringify!($name);
                fn id(&self) -> Option<&str> { self.id.as_deref() }
                fn meta(&self) -> Option<&Meta> { self.meta.as_ref() }
                fn into_resource(self) -> Resource { Resource::$name(Box::new(self)) }
                fn from_resource(resource: Resource) -> Result<Self, Resource> {
                    match resource { Resource::$name(r) => Ok(*r), other => Err(other) }
                }
                fn cast(resource: &Resource) -> Option<&Self> {
                    match resource { Resource::$name(r) => Some(r), _ => None }
                }
            }
        )+
    };
}

resources!(
    Appointment,
    Patient,
    Practitioner,
    Location,
    DiagnosticReport,
    DocumentReference,
    Binary,
    MedicationRequest,
    Encounter,
    Communication,
    Bundle,
    OperationOutcome,
    Parameters,
    SubscriptionStatus,
    CapabilityStatement,
    Composition,
);

fn typed<T: serde::de::DeserializeOwned>(value: Value, rt: &str) -> Result<T, FhirError> {
    serde_path_to_error::deserialize::<_, T>(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            rt.to_owned()
        } else {
            format!("{rt}.{path}")
        };
        FhirError::invalid(rt, path, e.into_inner().to_string())
    })
}

impl Resource {
    /// Borrow as a typed model.
    pub fn as_type<T: FhirResource>(&self) -> Option<&T> {
        T::cast(self)
    }

    /// Convert into a typed model, or an error naming both types.
    pub fn into_type<T: FhirResource>(self) -> Result<T, FhirError> {
        T::from_resource(self).map_err(|other| FhirError::WrongResourceType {
            expected: T::TYPE.into(),
            found: other.resource_type().into(),
        })
    }

    /// Serialise to compact JSON bytes.
    pub fn to_json(&self) -> Result<Vec<u8>, FhirError> {
        Ok(serde_json::to_vec(&self.to_value()?)?)
    }
}

impl Serialize for Resource {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_value().map_err(ser::Error::custom)?.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Resource {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Resource::from_value(v).map_err(de::Error::custom)
    }
}

/// Parse any resource from JSON bytes.
pub fn parse_resource(bytes: &[u8]) -> Result<Resource, FhirError> {
    let value: Value = serde_json::from_slice(bytes)?;
    Resource::from_value(value)
}

/// Parse a resource of an expected type from JSON bytes.
pub fn parse_as<T: FhirResource>(bytes: &[u8]) -> Result<T, FhirError> {
    parse_resource(bytes)?.into_type()
}

/// Serialise a typed model with its `resourceType`.
pub fn to_json<T: FhirResource + Clone>(resource: &T) -> Result<Vec<u8>, FhirError> {
    resource.clone().into_resource().to_json()
}
