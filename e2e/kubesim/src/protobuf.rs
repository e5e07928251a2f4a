//! Just enough of the API server's protobuf wire format to accept what kubectl's typed
//! `kubectl create namespace|configmap|secret|serviceaccount` generators send: the `k8s\0`
//! envelope (`runtime.Unknown`) around a Namespace, ConfigMap, Secret or ServiceAccount with
//! name, namespace, labels, annotations and data. Anything else is refused with 415 by the caller.

use base64::Engine as _;
use serde_json::{Map, Value, json};

/// One protobuf field: number and value.
enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint too long".into())
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Field<'_>)>, String> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        let field = match wire {
            0 => Field::Varint(varint(buf, &mut pos)?),
            2 => {
                let len = usize::try_from(varint(buf, &mut pos)?).map_err(|e| e.to_string())?;
                let end = pos
                    .checked_add(len)
                    .filter(|e| *e <= buf.len())
                    .ok_or("truncated field")?;
                let b = &buf[pos..end];
                pos = end;
                Field::Bytes(b)
            }
            1 => {
                pos += 8;
                Field::Varint(0)
            }
            5 => {
                pos += 4;
                Field::Varint(0)
            }
            other => return Err(format!("unsupported protobuf wire type {other}")),
        };
        out.push((number, field));
    }
    Ok(out)
}

fn string(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|e| e.to_string())
}

/// A `map<string, string>` (or bytes, base64-encoded as JSON does) entry.
fn map_entry(b: &[u8], bytes_value: bool) -> Result<(String, Value), String> {
    let mut key = String::new();
    let mut value = Value::String(String::new());
    for (n, f) in fields(b)? {
        if let Field::Bytes(v) = f {
            match n {
                1 => key = string(v)?,
                2 if bytes_value => {
                    value = Value::String(base64::engine::general_purpose::STANDARD.encode(v));
                }
                2 => value = Value::String(string(v)?),
                _ => {}
            }
        }
    }
    Ok((key, value))
}

fn object_meta(b: &[u8]) -> Result<Value, String> {
    let mut meta = Map::new();
    let mut labels = Map::new();
    let mut annotations = Map::new();
    for (n, f) in fields(b)? {
        match (n, f) {
            (1, Field::Bytes(v)) => {
                meta.insert("name".into(), json!(string(v)?));
            }
            (2, Field::Bytes(v)) => {
                meta.insert("generateName".into(), json!(string(v)?));
            }
            (3, Field::Bytes(v)) => {
                meta.insert("namespace".into(), json!(string(v)?));
            }
            (11, Field::Bytes(v)) => {
                let (k, val) = map_entry(v, false)?;
                labels.insert(k, val);
            }
            (12, Field::Bytes(v)) => {
                let (k, val) = map_entry(v, false)?;
                annotations.insert(k, val);
            }
            _ => {}
        }
    }
    if !labels.is_empty() {
        meta.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    Ok(Value::Object(meta))
}

/// Decodes a protobuf request body into the JSON object it stands for.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let inner = body
        .strip_prefix(b"k8s\0")
        .ok_or("protobuf body without the k8s envelope")?;
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    for (n, f) in fields(inner)? {
        match (n, f) {
            (1, Field::Bytes(tm)) => {
                for (tn, tf) in fields(tm)? {
                    if let Field::Bytes(v) = tf {
                        match tn {
                            1 => api_version = string(v)?,
                            2 => kind = string(v)?,
                            _ => {}
                        }
                    }
                }
            }
            (2, Field::Bytes(r)) => raw = r,
            _ => {}
        }
    }
    let mut obj = Map::new();
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    let mut data = Map::new();
    let mut binary = Map::new();
    for (n, f) in fields(raw)? {
        let Field::Bytes(v) = f else {
            if let (4 | 5, Field::Varint(x)) = (n, f)
                && (kind == "ConfigMap" && n == 4 || kind == "Secret" && n == 5)
            {
                obj.insert("immutable".into(), json!(x != 0));
            }
            continue;
        };
        match (kind.as_str(), n) {
            (_, 1) => {
                obj.insert("metadata".into(), object_meta(v)?);
            }
            ("ConfigMap", 2) => {
                let (k, val) = map_entry(v, false)?;
                data.insert(k, val);
            }
            ("ConfigMap", 3) => {
                let (k, val) = map_entry(v, true)?;
                binary.insert(k, val);
            }
            ("Secret", 2) => {
                let (k, val) = map_entry(v, true)?;
                data.insert(k, val);
            }
            ("Secret", 3) => {
                obj.insert("type".into(), json!(string(v)?));
            }
            ("Namespace" | "ServiceAccount", _) => {}
            (other, _) => return Err(format!("kubesim does not decode protobuf {other} objects")),
        }
    }
    if !data.is_empty() {
        obj.insert("data".into(), Value::Object(data));
    }
    if !binary.is_empty() {
        obj.insert("binaryData".into(), Value::Object(binary));
    }
    if !matches!(
        kind.as_str(),
        "Namespace" | "ConfigMap" | "Secret" | "ServiceAccount"
    ) {
        return Err(format!("kubesim does not decode protobuf {kind} objects"));
    }
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(n: u8, b: &[u8]) -> Vec<u8> {
        let mut out = vec![(n << 3) | 2, u8::try_from(b.len()).unwrap()];
        out.extend_from_slice(b);
        out
    }

    fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
        let mut tm = field(1, api_version.as_bytes());
        tm.extend(field(2, kind.as_bytes()));
        let mut unknown = field(1, &tm);
        unknown.extend(field(2, raw));
        let mut out = b"k8s\0".to_vec();
        out.extend(unknown);
        out
    }

    fn entry(k: &str, v: &[u8]) -> Vec<u8> {
        let mut e = field(1, k.as_bytes());
        e.extend(field(2, v));
        e
    }

    #[test]
    fn decodes_a_namespace() {
        let mut meta = field(1, b"team");
        meta.extend(field(11, &entry("env", b"dev")));
        let raw = field(1, &meta);
        let v = decode(&envelope("v1", "Namespace", &raw)).unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team", "labels": {"env": "dev"}}})
        );
    }

    #[test]
    fn decodes_configmaps_and_secrets() {
        let mut raw = field(1, &field(1, b"cfg"));
        raw.extend(field(2, &entry("a", b"1")));
        raw.extend(field(3, &entry("bin", b"\x00\x01")));
        let v = decode(&envelope("v1", "ConfigMap", &raw)).unwrap();
        assert_eq!(v["data"], json!({"a": "1"}));
        assert_eq!(v["binaryData"], json!({"bin": "AAE="}));
        let mut raw = field(1, &field(1, b"s"));
        raw.extend(field(2, &entry("p", b"pw")));
        raw.extend(field(3, b"Opaque"));
        let v = decode(&envelope("v1", "Secret", &raw)).unwrap();
        assert_eq!(v["data"], json!({"p": "cHc="}));
        assert_eq!(v["type"], "Opaque");
    }

    #[test]
    fn refuses_what_it_cannot_decode() {
        assert!(decode(b"{}").is_err());
        assert!(
            decode(&envelope(
                "apps/v1",
                "Deployment",
                &field(1, &field(1, b"d"))
            ))
            .is_err()
        );
        assert!(decode(b"k8s\0\x0a\xff").is_err());
    }
}
