//! JSON text as MySQL SELECT prints a JSON column → MySQL binary JSON (the format the binlog
//! holds and [`crate::decode::value::push_mysql_json`] renders).
//!
//! SELECT text loses which numbers were doubles and which DECIMALs; what matters is that the
//! rendering is the same. The decoder renders an integer by its digits, a double as serde_json
//! prints it (shortest round-trip digits, `1e+300`) and a DECIMAL by its exact digits. So a number token is encoded as:
//! an integer when it has no `.`/exponent; a DECIMAL with the token's digits when no double
//! prints so (a trailing fraction zero, `1.50`, unless the double's rendering is the token
//! itself, `3.0`; or more than 17 significant digits); otherwise a double. MySQL prints a
//! double without exponent for magnitudes in [1e-15, 1e15) (`0.00000015`, measured on 9.7.4)
//! and with one outside; either parses back to the same f64 (at most 17 significant digits),
//! which renders as the binlog double does (`1.5e-7`).
//!
//! Known gap: a DECIMAL inside JSON with at most 17 digits, no trailing zero, whose double
//! rendering differs from its digits (e.g. `CAST(0.0000001 AS DECIMAL(8,7))` in a JSON
//! document: the binlog renders `0.0000001`, the snapshot `1e-7`).
//!
//! Not covered: opaque scalars other than DECIMAL (DATE/TIME/DATETIME values put into JSON by
//! `CAST(… AS JSON)`): SELECT prints them as strings, and they would come out as strings here,
//! where the decoder renders them through mysql_common.

use serde_json::Value as J;

const T_SMALL_OBJ: u8 = 0x00;
const T_LARGE_OBJ: u8 = 0x01;
const T_SMALL_ARR: u8 = 0x02;
const T_LARGE_ARR: u8 = 0x03;
const T_LITERAL: u8 = 0x04;
const T_INT16: u8 = 0x05;
const T_INT32: u8 = 0x07;
const T_INT64: u8 = 0x09;
const T_UINT64: u8 = 0x0a;
const T_DOUBLE: u8 = 0x0b;
const T_STRING: u8 = 0x0c;
const T_OPAQUE: u8 = 0x0f;
const NEWDECIMAL: u8 = 246;

/// Parses `text` (a JSON document) and appends its binary JSON.
pub fn encode_json_text(text: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
    let v: J = serde_json::from_slice(text).map_err(|e| format!("JSON column text: {e}"))?;
    let (t, body) = encode(&v, 0)?;
    out.push(t);
    out.extend_from_slice(&body);
    Ok(())
}

fn var_len(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A value: (type byte, bytes as stored where the value is not inlined).
fn encode(v: &J, depth: usize) -> Result<(u8, Vec<u8>), String> {
    if depth > 150 {
        return Err("JSON nested too deep".into());
    }
    Ok(match v {
        J::Null => (T_LITERAL, vec![0x00]),
        J::Bool(true) => (T_LITERAL, vec![0x01]),
        J::Bool(false) => (T_LITERAL, vec![0x02]),
        J::Number(n) => number(&n.to_string())?,
        J::String(s) => {
            let mut b = Vec::with_capacity(s.len() + 2);
            var_len(&mut b, s.len());
            b.extend_from_slice(s.as_bytes());
            (T_STRING, b)
        }
        J::Array(a) => {
            let items: Vec<(u8, Vec<u8>)> = a
                .iter()
                .map(|x| encode(x, depth + 1))
                .collect::<Result<_, _>>()?;
            match container(&[], &items, false) {
                Some(b) => (T_SMALL_ARR, b),
                None => (
                    T_LARGE_ARR,
                    container(&[], &items, true).ok_or("JSON array larger than 4 GiB")?,
                ),
            }
        }
        J::Object(o) => {
            // MySQL's key order: by length, then bytes
            let mut entries: Vec<(&String, &J)> = o.iter().collect();
            entries.sort_by(|a, b| (a.0.len(), a.0.as_bytes()).cmp(&(b.0.len(), b.0.as_bytes())));
            let keys: Vec<&[u8]> = entries.iter().map(|(k, _)| k.as_bytes()).collect();
            let items: Vec<(u8, Vec<u8>)> = entries
                .iter()
                .map(|(_, x)| encode(x, depth + 1))
                .collect::<Result<_, _>>()?;
            match container(&keys, &items, false) {
                Some(b) => (T_SMALL_OBJ, b),
                None => (
                    T_LARGE_OBJ,
                    container(&keys, &items, true).ok_or("JSON object larger than 4 GiB")?,
                ),
            }
        }
    })
}

fn number(tok: &str) -> Result<(u8, Vec<u8>), String> {
    let bad = || format!("JSON number {tok:?}");
    if !tok.contains(['.', 'e', 'E']) {
        if let Ok(i) = tok.parse::<i64>() {
            return Ok(if let Ok(x) = i16::try_from(i) {
                (T_INT16, x.to_le_bytes().to_vec())
            } else if let Ok(x) = i32::try_from(i) {
                (T_INT32, x.to_le_bytes().to_vec())
            } else {
                (T_INT64, i.to_le_bytes().to_vec())
            });
        }
        if let Ok(u) = tok.parse::<u64>() {
            return Ok((T_UINT64, u.to_le_bytes().to_vec()));
        }
    }
    let d: f64 = tok.parse().map_err(|_| bad())?;
    let has_exp = tok.contains(['e', 'E']);
    let digits = tok.trim_start_matches('-');
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let significant = format!("{int}{frac}").trim_start_matches('0').len();
    // DECIMAL only where a double cannot print so: a trailing fraction zero (`1.50`; a double
    // prints `x.0` at most, which the double's rendering matches) or more than 17 digits
    let decimal = !has_exp
        && d.is_finite()
        && double_text(d) != tok
        && (frac.ends_with('0') || significant > 17);
    if !decimal {
        return Ok((T_DOUBLE, d.to_le_bytes().to_vec()));
    }
    let int = int.trim_start_matches('0');
    let scale = frac.len();
    let precision = (int.len() + scale).max(1);
    if precision > 65 || scale > 30 {
        return Ok((T_DOUBLE, d.to_le_bytes().to_vec()));
    }
    let mut bin = Vec::new();
    super::encode::encode_decimal(tok, precision as u8, scale as u8, &mut bin)?;
    let mut data = Vec::with_capacity(bin.len() + 2);
    data.push(precision as u8);
    data.push(scale as u8);
    data.extend_from_slice(&bin);
    let mut b = vec![NEWDECIMAL];
    var_len(&mut b, data.len());
    b.extend_from_slice(&data);
    Ok((T_OPAQUE, b))
}

/// How the decoder renders a double of binary JSON (through serde_json: `1e+300`, `2.5`).
fn double_text(d: f64) -> String {
    serde_json::Number::from_f64(d)
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// Inlined in the value entry: literals and 16-bit ints (and 32-bit ints in the large format).
fn inlined(t: u8, large: bool) -> bool {
    matches!(t, T_LITERAL | T_INT16 | 0x06) || (large && matches!(t, T_INT32 | 0x08))
}

/// An array (`keys` empty) or object body; `None` when the small format cannot hold it.
fn container(keys: &[&[u8]], items: &[(u8, Vec<u8>)], large: bool) -> Option<Vec<u8>> {
    let o = if large { 4 } else { 2 };
    let n = items.len();
    let is_obj = !keys.is_empty();
    let header = 2 * o + if is_obj { n * (o + 2) } else { 0 } + n * (o + 1);
    let max = if large {
        u32::MAX as usize
    } else {
        u16::MAX as usize
    };
    let put = |b: &mut Vec<u8>, v: usize| {
        if large {
            b.extend_from_slice(&(v as u32).to_le_bytes());
        } else {
            b.extend_from_slice(&(v as u16).to_le_bytes());
        }
    };
    let mut tail: Vec<u8> = Vec::new();
    let mut key_entries = Vec::with_capacity(n * (o + 2));
    for k in keys {
        let off = header + tail.len();
        if off > max || k.len() > u16::MAX as usize {
            return None;
        }
        put(&mut key_entries, off);
        key_entries.extend_from_slice(&(k.len() as u16).to_le_bytes());
        tail.extend_from_slice(k);
    }
    let mut value_entries = Vec::with_capacity(n * (o + 1));
    for (t, body) in items {
        value_entries.push(*t);
        if inlined(*t, large) {
            let mut b = body.clone();
            b.resize(o, 0);
            value_entries.extend_from_slice(&b[..o]);
        } else {
            let off = header + tail.len();
            if off > max {
                return None;
            }
            put(&mut value_entries, off);
            tail.extend_from_slice(body);
        }
    }
    let total = header + tail.len();
    if total > max {
        return None;
    }
    let mut b = Vec::with_capacity(total);
    put(&mut b, n);
    put(&mut b, total);
    b.extend_from_slice(&key_entries);
    b.extend_from_slice(&value_entries);
    b.extend_from_slice(&tail);
    Some(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::value::push_mysql_json;

    fn round(text: &str) -> String {
        let mut b = Vec::new();
        encode_json_text(text.as_bytes(), &mut b).unwrap();
        let mut o = Vec::new();
        push_mysql_json(&mut o, &b).unwrap();
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn documents_render_as_the_decoder_renders_binary_json() {
        for (text, want) in [
            ("null", "null"),
            ("true", "true"),
            ("-5", "-5"),
            ("70000", "70000"),
            ("12345678901234567890", "12345678901234567890"),
            ("-9223372036854775808", "-9223372036854775808"),
            ("2.5", "2.5"),
            ("1.50", "1.50"),
            ("-0.001", "-0.001"),
            ("3.0", "3.0"),
            ("1e300", "1e+300"),
            ("1E-7", "1e-7"),
            ("0.1", "0.1"),
            ("0.00000015", "1.5e-7"),
            ("100000000000000.0", "100000000000000.0"),
            ("12345678901234567890.123", "12345678901234567890.123"),
            ("1.8446744073709552e19", "1.8446744073709552e+19"),
            ("\"x\\\"y\"", "\"x\\\"y\""),
            ("[]", "[]"),
            ("{}", "{}"),
            (
                "{\"k\": [1, 2.5, \"x\", null, true], \"nested\": {\"e\": \"😀 ünï\"}, \"big\": 12345678901234567890}",
                "{\"big\":12345678901234567890,\"k\":[1,2.5,\"x\",null,true],\"nested\":{\"e\":\"😀 ünï\"}}",
            ),
        ] {
            assert_eq!(round(text), want, "{text}");
        }
        // large format: a string longer than 64 KiB inside an array and an object
        let long = "a".repeat(70_000);
        let doc = format!("[\"{long}\", 1, {{\"k\": \"{long}\", \"n\": 70000}}]");
        assert_eq!(
            round(&doc),
            format!("[\"{long}\",1,{{\"k\":\"{long}\",\"n\":70000}}]")
        );
    }
}
