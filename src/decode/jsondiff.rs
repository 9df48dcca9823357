//! Applies MySQL partial JSON updates (`binlog_row_value_options=PARTIAL_JSON`): the after image
//! holds a list of (operation, path, value) diffs against the before image's document.

use mysql_common::binlog::jsondiff::{JsonDiff, JsonDiffOperation};
use mysql_common::io::ParseBuf;
use serde_json::Value;

#[derive(Debug, PartialEq)]
enum Leg {
    Key(String),
    Index(usize),
}

/// Parses the JSON paths MySQL writes in diffs: `$`, `.key`, `."quoted key"`, `[n]`.
fn parse_path(p: &str) -> Result<Vec<Leg>, String> {
    let b = p.as_bytes();
    if b.first() != Some(&b'$') {
        return Err(format!("JSON path {p:?} does not start with $"));
    }
    let mut i = 1;
    let mut legs = Vec::new();
    while i < b.len() {
        match b[i] {
            b'.' => {
                i += 1;
                if b.get(i) == Some(&b'"') {
                    // quoted key with \" and \\ escapes
                    i += 1;
                    let mut k = String::new();
                    loop {
                        match b.get(i) {
                            None => return Err(format!("unterminated key in JSON path {p:?}")),
                            Some(b'"') => {
                                i += 1;
                                break;
                            }
                            Some(b'\\') => {
                                let c = p[i + 1..].chars().next().ok_or("bad escape")?;
                                k.push(c);
                                i += 1 + c.len_utf8();
                            }
                            Some(_) => {
                                let c = p[i..].chars().next().ok_or("bad path")?;
                                k.push(c);
                                i += c.len_utf8();
                            }
                        }
                    }
                    legs.push(Leg::Key(k));
                } else {
                    let start = i;
                    while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                        i += 1;
                    }
                    legs.push(Leg::Key(p[start..i].to_string()));
                }
            }
            b'[' => {
                let end = p[i..]
                    .find(']')
                    .ok_or_else(|| format!("unterminated [ in JSON path {p:?}"))?
                    + i;
                let n = p[i + 1..end]
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad array index in JSON path {p:?}"))?;
                legs.push(Leg::Index(n));
                i = end + 1;
            }
            _ => return Err(format!("unexpected character in JSON path {p:?}")),
        }
    }
    Ok(legs)
}

fn walk<'v>(doc: &'v mut Value, legs: &[Leg]) -> Option<&'v mut Value> {
    let mut cur = doc;
    for l in legs {
        cur = match (l, cur) {
            (Leg::Key(k), Value::Object(m)) => m.get_mut(k)?,
            (Leg::Index(n), Value::Array(a)) => a.get_mut(*n)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Applies the binary diff list `diff` to `doc`.
pub fn apply(doc: &mut Value, diff: &[u8]) -> Result<(), String> {
    let mut buf = ParseBuf(diff);
    while !buf.is_empty() {
        let d: JsonDiff<'_> = buf
            .parse(())
            .map_err(|e| format!("partial JSON diff: {e}"))?;
        let path = d.path_str().into_owned();
        let legs = parse_path(&path)?;
        // DECIMAL values come out as numbers with their exact digits, as in full images
        let value = match d.value() {
            Some(v) => Some(
                super::value::jsonb_to_json(v.clone())
                    .map_err(|e| format!("partial JSON value: {e}"))?,
            ),
            None => None,
        };
        let (parent_legs, last) = match legs.split_last() {
            Some((last, parent)) => (parent, Some(last)),
            None => (&legs[..], None),
        };
        let missing = || format!("partial JSON diff path {path} not found in the before image");
        match (d.operation(), last) {
            (JsonDiffOperation::REPLACE, None) => *doc = value.ok_or("REPLACE without value")?,
            (_, None) => {
                return Err(format!(
                    "partial JSON diff {:?} on the document root",
                    d.operation()
                ))
            }
            (op, Some(last)) => {
                let parent = walk(doc, parent_legs).ok_or_else(missing)?;
                match (op, last, parent) {
                    (JsonDiffOperation::REPLACE, Leg::Key(k), Value::Object(m)) => {
                        let slot = m.get_mut(k).ok_or_else(missing)?;
                        *slot = value.ok_or("REPLACE without value")?;
                    }
                    (JsonDiffOperation::REPLACE, Leg::Index(n), Value::Array(a)) => {
                        let slot = a.get_mut(*n).ok_or_else(missing)?;
                        *slot = value.ok_or("REPLACE without value")?;
                    }
                    (JsonDiffOperation::INSERT, Leg::Key(k), Value::Object(m)) => {
                        m.insert(k.clone(), value.ok_or("INSERT without value")?);
                    }
                    (JsonDiffOperation::INSERT, Leg::Index(n), Value::Array(a)) => {
                        let at = (*n).min(a.len());
                        a.insert(at, value.ok_or("INSERT without value")?);
                    }
                    (JsonDiffOperation::REMOVE, Leg::Key(k), Value::Object(m)) => {
                        m.remove(k);
                    }
                    (JsonDiffOperation::REMOVE, Leg::Index(n), Value::Array(a)) => {
                        if *n < a.len() {
                            a.remove(*n);
                        }
                    }
                    _ => return Err(missing()),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("$.a[2].\"b c\"").unwrap(),
            vec![Leg::Key("a".into()), Leg::Index(2), Leg::Key("b c".into())]
        );
        assert!(parse_path("a.b").is_err());
        assert!(parse_path("$[x]").is_err());
    }
}
