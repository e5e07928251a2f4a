//! Deserialising untrusted YAML/JSON into `serde_json::Value` within a size budget.
//!
//! serde_yaml expands aliases while it deserialises; its own repetition limit stops the classic
//! "billion laughs", but a file can still expand a long aliased string or a big aliased mapping
//! many times within that limit. Counting every produced value (and string byte) against a
//! budget while building stops any expansion as soon as it exceeds what we are willing to hold.
//! It also applies YAML merge keys (`<<`), which Kubernetes' own YAML reader honours.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Approximate cost of one value besides its string bytes.
const VALUE_COST: usize = 32;

/// How much a deserialisation may still produce, in approximate bytes.
#[derive(Debug)]
pub struct Budget {
    remaining: Cell<usize>,
    limit: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Self {
            remaining: Cell::new(limit),
            limit,
        }
    }

    fn charge<E: de::Error>(&self, cost: usize) -> Result<(), E> {
        let remaining = self.remaining.get();
        if cost > remaining {
            self.remaining.set(0);
            return Err(E::custom(format!(
                "document expands to more than {} bytes of values (a YAML alias bomb?)",
                self.limit
            )));
        }
        self.remaining.set(remaining - cost);
        Ok(())
    }
}

/// Deserialises one value, charging `budget` for everything it builds.
pub struct BoundedValue<'b> {
    pub budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for BoundedValue<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(ValueVisitor {
            budget: self.budget,
        })
    }
}

struct ValueVisitor<'b> {
    budget: &'b Budget,
}

impl<'de> Visitor<'de> for ValueVisitor<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can carry")))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.charge(VALUE_COST)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.charge(VALUE_COST)?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(BoundedValue {
            budget: self.budget,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.charge(VALUE_COST)?;
        let mut out = Map::new();
        let mut merged: Vec<Value> = Vec::new();
        while let Some(key) = map.next_key_seed(KeySeed {
            budget: self.budget,
        })? {
            let value = map.next_value_seed(BoundedValue {
                budget: self.budget,
            })?;
            if key == "<<" {
                merged.push(value);
                continue;
            }
            out.insert(key, value);
        }
        for source in merged {
            merge_into(&mut out, source).map_err(de::Error::custom)?;
        }
        Ok(Value::Object(out))
    }
}

/// Applies a YAML merge key: keys already present win; in a list of mappings, earlier wins.
fn merge_into(out: &mut Map<String, Value>, source: Value) -> Result<(), &'static str> {
    match source {
        Value::Object(fields) => {
            for (key, value) in fields {
                out.entry(key).or_insert(value);
            }
            Ok(())
        }
        Value::Array(sources) => {
            for source in sources {
                match source {
                    Value::Object(_) => merge_into(out, source)?,
                    _ => return Err("a merge key (<<) list must contain only mappings"),
                }
            }
            Ok(())
        }
        _ => Err("a merge key (<<) must refer to a mapping or a list of mappings"),
    }
}

/// Mapping keys become strings, as Kubernetes' YAML-to-JSON conversion does.
struct KeySeed<'b> {
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<String, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string, number or boolean mapping key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        self.budget.charge(VALUE_COST + v.len())?;
        Ok(v)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        self.visit_string(v.to_string())
    }

    fn visit_unit<E: de::Error>(self) -> Result<String, E> {
        self.visit_string("null".to_owned())
    }
}
