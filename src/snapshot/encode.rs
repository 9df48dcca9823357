//! SELECT values (binary protocol) → the bytes the binlog row image holds for the same value,
//! so that a snapshot chunk is a [`RowsChunk`] like any rows event and is rendered by the
//! decoder's own renderer ([`crate::decode::value::push_value_in`]): nothing can drift.
//!
//! The session must be set up by [`super::chunk::prepare_session`]: `time_zone = '+00:00'`
//! (TIMESTAMP values come back in UTC, the binlog stores the UTC epoch) and
//! `character_set_results = NULL` (text comes back in the column's own character set, as the
//! binlog has it). ENUM/SET columns are selected as `col+0` (index / bitmask, as the binlog
//! stores them); BIT comes back as big-endian bytes, DECIMAL as text, MySQL JSON as text (turned
//! into binary JSON by [`super::jsonb`]), MariaDB UUID/INET4/INET6 as text.

use mysql_async::Value;

use crate::decode::rows::{decimal_bin_size, Cell};
use crate::decode::table::{ColKind, ColumnSchema, SpecialType};

type Res = Result<(), String>;

fn push_le(out: &mut Vec<u8>, v: u64, n: usize) {
    out.extend_from_slice(&v.to_le_bytes()[..n]);
}

fn push_be(out: &mut Vec<u8>, v: u64, n: usize) {
    out.extend_from_slice(&v.to_be_bytes()[8 - n..]);
}

fn as_i128(v: &Value) -> Result<i128, String> {
    match v {
        Value::Int(i) => Ok(*i as i128),
        Value::UInt(u) => Ok(*u as i128),
        // MySQL types `enum_col+0` as DOUBLE
        Value::Double(d) if d.fract() == 0.0 && d.abs() < 1.9e19 => Ok(*d as i128),
        Value::Bytes(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.trim().parse::<i128>().ok())
            .ok_or_else(|| format!("integer expected, got {:?}", String::from_utf8_lossy(b))),
        other => Err(format!("integer expected, got {other:?}")),
    }
}

/// Fraction bytes of TIME2/DATETIME2/TIMESTAMP2 (big-endian) for `fsp`.
fn push_frac(out: &mut Vec<u8>, micros: u32, fsp: u8) {
    match fsp {
        1 | 2 => out.push((micros / 10_000) as u8),
        3 | 4 => push_be(out, (micros / 100) as u64, 2),
        5 | 6 => push_be(out, micros as u64, 3),
        _ => {}
    }
}

/// Days from 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Appends the binary DECIMAL(precision, scale) of `text` (`-12.50`, `.5`, `3`).
pub fn encode_decimal(text: &str, precision: u8, scale: u8, out: &mut Vec<u8>) -> Res {
    const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
    let bad = || format!("DECIMAL({precision},{scale}): {text:?} is not a decimal");
    let t = text.trim();
    let (neg, t) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    if !int.bytes().all(|c| c.is_ascii_digit()) || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    if int.is_empty() && frac.is_empty() {
        return Err(bad());
    }
    let intg = (precision - scale) as usize;
    let int = int.trim_start_matches('0');
    if int.len() > intg {
        return Err(format!(
            "DECIMAL({precision},{scale}): {text} has more integer digits than {intg}"
        ));
    }
    let s = scale as usize;
    if frac.len() > s && frac[s..].bytes().any(|c| c != b'0') {
        return Err(format!(
            "DECIMAL({precision},{scale}): {text} has more fraction digits than {s}"
        ));
    }
    // digits: integer part left-padded to intg, fraction right-padded to scale
    // (on the stack: intg + s = precision <= 255; a heap Vec here was one allocation per value)
    let mut buf = [0u8; 256];
    let digits = &mut buf[..intg + s];
    for (d, c) in digits[intg - int.len()..intg].iter_mut().zip(int.bytes()) {
        *d = c - b'0';
    }
    for (d, c) in digits[intg..].iter_mut().zip(frac.bytes()) {
        *d = c - b'0';
    }
    let digits = &*digits;
    let start = out.len();
    let (int_digits, frac_digits) = digits.split_at(intg);
    let group = |ds: &[u8]| ds.iter().fold(0u64, |a, &d| a * 10 + d as u64);
    // integer: leading partial group, then groups of 9
    let lead = intg % 9;
    if lead > 0 {
        push_be(out, group(&int_digits[..lead]), DIG2BYTES[lead]);
    }
    for g in int_digits[lead..].chunks(9) {
        push_be(out, group(g), 4);
    }
    // fraction: groups of 9, then a trailing partial group
    for g in frac_digits.chunks(9) {
        push_be(out, group(g), DIG2BYTES[g.len()]);
    }
    let size = decimal_bin_size(precision, scale);
    if out.len() - start != size {
        return Err(format!(
            "DECIMAL({precision},{scale}): encoded {} bytes, expected {size}",
            out.len() - start
        ));
    }
    let is_zero = digits.iter().all(|&d| d == 0);
    if neg && !is_zero {
        for b in &mut out[start..] {
            *b = !*b;
        }
    }
    out[start] ^= 0x80;
    Ok(())
}

fn hex_nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// MariaDB UUID/INET4/INET6 as SELECT prints them → their binary form.
fn encode_special(t: SpecialType, v: &[u8], out: &mut Vec<u8>) -> Res {
    let s = std::str::from_utf8(v).map_err(|_| "special type value is not text".to_string())?;
    match t {
        SpecialType::Uuid => {
            let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
            if hex.len() != 32 {
                return Err(format!("{s:?} is not a UUID"));
            }
            for p in hex.chunks(2) {
                let (Some(a), Some(b)) = (hex_nibble(p[0]), hex_nibble(p[1])) else {
                    return Err(format!("{s:?} is not a UUID"));
                };
                out.push(a << 4 | b);
            }
        }
        SpecialType::Inet4 => {
            let a: std::net::Ipv4Addr = s.parse().map_err(|_| format!("{s:?} is not INET4"))?;
            out.extend_from_slice(&a.octets());
        }
        SpecialType::Inet6 => {
            let a: std::net::Ipv6Addr = s.parse().map_err(|_| format!("{s:?} is not INET6"))?;
            out.extend_from_slice(&a.octets());
        }
    }
    Ok(())
}

/// Appends the binlog row-image bytes of one non-NULL value of `col` (without a length prefix:
/// a [`Cell`] covers the value only).
pub fn encode_value(col: &ColumnSchema, v: &Value, out: &mut Vec<u8>) -> Res {
    match (col.kind, v) {
        (ColKind::Int(n), v) => {
            let x = as_i128(v)?;
            push_le(out, x as u64, n as usize);
        }
        (ColKind::Year, v) => {
            let y = as_i128(v)?;
            out.push(if y == 0 { 0 } else { (y - 1900) as u8 });
        }
        (ColKind::Float, Value::Float(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (ColKind::Float, Value::Double(d)) => out.extend_from_slice(&(*d as f32).to_le_bytes()),
        (ColKind::Double, Value::Double(d)) => out.extend_from_slice(&d.to_le_bytes()),
        (ColKind::Double, Value::Float(f)) => out.extend_from_slice(&(*f as f64).to_le_bytes()),
        (ColKind::Decimal { precision, scale }, Value::Bytes(b)) => {
            let t = std::str::from_utf8(b).map_err(|_| "DECIMAL text is not ASCII".to_string())?;
            encode_decimal(t, precision, scale, out)?;
        }
        (ColKind::Date, Value::Date(y, m, d, ..)) => {
            let x = (*y as u64) * 16 * 32 + (*m as u64) * 32 + *d as u64;
            push_le(out, x, 3);
        }
        (ColKind::Time2 { fsp }, Value::Time(neg, days, h, mi, s, us)) => {
            let hours = *days as i64 * 24 + *h as i64;
            let hms = (hours << 12) | ((*mi as i64) << 6) | *s as i64;
            let mut packed = (hms << 24) + *us as i64;
            if *neg {
                packed = -packed;
            }
            const OFS: i64 = 0x80_0000;
            match fsp {
                0 => push_be(out, ((packed >> 24) + OFS) as u64, 3),
                1 | 2 => {
                    push_be(out, ((packed >> 24) + OFS) as u64, 3);
                    out.push(((packed % (1 << 24)) / 10_000) as i8 as u8);
                }
                3 | 4 => {
                    push_be(out, ((packed >> 24) + OFS) as u64, 3);
                    push_be(out, ((packed % (1 << 24)) / 100) as i16 as u16 as u64, 2);
                }
                _ => push_be(out, (packed + 0x8000_0000_0000) as u64, 6),
            }
        }
        (ColKind::TimeOld, Value::Time(neg, days, h, mi, s, _)) => {
            let x = (*days as i64 * 24 + *h as i64) * 10_000 + *mi as i64 * 100 + *s as i64;
            let x = if *neg { -x } else { x };
            push_le(out, x as u64, 3);
        }
        (ColKind::DateTime2 { fsp }, Value::Date(y, m, d, h, mi, s, us)) => {
            let ym = *y as u64 * 13 + *m as u64;
            let ymd = (ym << 5) | *d as u64;
            let hms = ((*h as u64) << 12) | ((*mi as u64) << 6) | *s as u64;
            push_be(out, ((ymd << 17) | hms) + 0x80_0000_0000, 5);
            push_frac(out, *us, fsp);
        }
        (ColKind::DateTimeOld, Value::Date(y, m, d, h, mi, s, _)) => {
            let x = ((*y as u64 * 100 + *m as u64) * 100 + *d as u64) * 1_000_000
                + (*h as u64 * 100 + *mi as u64) * 100
                + *s as u64;
            push_le(out, x, 8);
        }
        (
            ColKind::Timestamp2 { .. } | ColKind::TimestampOld,
            Value::Date(y, m, d, h, mi, s, us),
        ) => {
            let secs = if *y == 0 && *m == 0 && *d == 0 {
                0
            } else {
                days_from_civil(*y as i64, *m as u32, *d as u32) * 86_400
                    + *h as i64 * 3600
                    + *mi as i64 * 60
                    + *s as i64
            };
            if !(0..=u32::MAX as i64).contains(&secs) {
                return Err(format!("TIMESTAMP out of range ({secs} s)"));
            }
            match col.kind {
                ColKind::Timestamp2 { fsp } => {
                    push_be(out, secs as u64, 4);
                    push_frac(out, *us, fsp);
                }
                _ => push_le(out, secs as u64, 4),
            }
        }
        (ColKind::Str { .. } | ColKind::Blob { .. }, Value::Bytes(b)) => match col.special {
            Some(t) => encode_special(t, b, out)?,
            None => out.extend_from_slice(b),
        },
        (ColKind::Json { .. }, Value::Bytes(b)) => super::jsonb::encode_json_text(b, out)?,
        (ColKind::Geometry { .. } | ColKind::Vector { .. }, Value::Bytes(b)) => {
            out.extend_from_slice(b)
        }
        (ColKind::Enum { bytes } | ColKind::Set { bytes }, Value::Bytes(b))
            if std::str::from_utf8(b)
                .map(|s| s.parse::<u64>().is_err())
                .unwrap_or(true) =>
        {
            // a label (list): selected without `+0`
            let s = std::str::from_utf8(b).map_err(|_| "ENUM/SET label is not UTF-8")?;
            let labels = col.labels.as_deref().unwrap_or(&[]);
            let x: u64 = if matches!(col.kind, ColKind::Enum { .. }) {
                labels
                    .iter()
                    .position(|l| l == s)
                    .map_or(0, |i| i as u64 + 1)
            } else {
                let mut m = 0u64;
                for part in s.split(',').filter(|p| !p.is_empty()) {
                    let i = labels
                        .iter()
                        .position(|l| l == part)
                        .ok_or_else(|| format!("SET member {part:?} is not a label"))?;
                    m |= 1 << i;
                }
                m
            };
            push_le(out, x, bytes as usize);
        }
        (ColKind::Enum { bytes } | ColKind::Set { bytes }, v) => {
            push_le(out, as_i128(v)? as u64, bytes as usize);
        }
        (ColKind::Bit { bits }, Value::Bytes(b)) => {
            let n = (bits as usize).div_ceil(8);
            if b.len() > n {
                return Err(format!("BIT({bits}) value of {} bytes", b.len()));
            }
            out.extend(std::iter::repeat_n(0u8, n - b.len()));
            out.extend_from_slice(b);
        }
        (ColKind::Bit { bits }, v) => {
            push_be(out, as_i128(v)? as u64, (bits as usize).div_ceil(8));
        }
        (kind, v) => return Err(format!("a {v:?} value for a {kind:?} column")),
    }
    Ok(())
}

/// Encodes one row (`values` in column order) into `data`, pushing one cell per column.
pub fn encode_row(
    columns: &[ColumnSchema],
    values: &[Value],
    data: &mut Vec<u8>,
    cells: &mut Vec<Cell>,
) -> Result<(), (usize, String)> {
    if values.len() != columns.len() {
        return Err((
            0,
            format!("{} values for {} columns", values.len(), columns.len()),
        ));
    }
    for (i, (col, v)) in columns.iter().zip(values).enumerate() {
        if matches!(v, Value::NULL) {
            cells.push(Cell::NULL);
            continue;
        }
        let start = data.len();
        encode_value(col, v, data).map_err(|m| (i, m))?;
        let len = data.len() - start;
        if data.len() > u32::MAX as usize - 2 {
            return Err((i, "chunk larger than 4 GiB".into()));
        }
        cells.push(Cell {
            start: start as u32,
            len: len as u32,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::charset::TextEncoding;
    use crate::decode::value::{civil_from_days, decimal_text, push_value};

    fn col(kind: ColKind) -> ColumnSchema {
        ColumnSchema {
            name: "c".into(),
            json_key: "\"c\":".into(),
            type_code: 0,
            kind,
            unsigned: false,
            text: None,
            json_text: false,
            labels: None,
            binary_pad: None,
            special: None,
            json_origin: None,
        }
    }

    fn render(c: &ColumnSchema, v: Value) -> String {
        let mut b = Vec::new();
        encode_value(c, &v, &mut b).unwrap();
        let mut o = Vec::new();
        push_value(&mut o, c, &b).unwrap();
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn decimals_round_trip_through_the_decoder() {
        for (p, s, t, want) in [
            (5, 2, "123.45", "123.45"),
            (5, 2, "-123.45", "-123.45"),
            (5, 2, "0.05", "0.05"),
            (5, 2, "-0.05", "-0.05"),
            (5, 2, "0.00", "0.00"),
            (10, 0, "9999999999", "9999999999"),
            (10, 0, "-1", "-1"),
            (12, 4, "-98765432.1234", "-98765432.1234"),
            (
                65,
                30,
                "-12345678901234567890123456789012345.123456789012345678901234567891",
                "-12345678901234567890123456789012345.123456789012345678901234567891",
            ),
            (
                65,
                30,
                "0.000000000000000000000000000001",
                "0.000000000000000000000000000001",
            ),
            (18, 9, "123456789.123456789", "123456789.123456789"),
            (3, 3, "-0.001", "-0.001"),
        ] {
            let mut b = Vec::new();
            encode_decimal(t, p, s, &mut b).unwrap();
            assert_eq!(decimal_text(&b, p, s).unwrap(), want, "{p},{s} {t}");
        }
        let mut b = Vec::new();
        assert!(encode_decimal("1234.5", 5, 2, &mut b).is_err());
        assert!(encode_decimal("1.x", 5, 2, &mut b).is_err());
    }

    #[test]
    fn temporal_round_trip_through_the_decoder() {
        for fsp in 0..=6u8 {
            let c = col(ColKind::Time2 { fsp });
            let us = [0u32, 500_000, 100_000, 123_400, 123_456][fsp as usize % 5];
            let us = us - us % 10u32.pow(6 - fsp as u32);
            for neg in [false, true] {
                for (days, h, m, s) in [(0u32, 0u8, 0u8, 0u8), (34, 22, 59, 59), (0, 1, 2, 3)] {
                    let v = Value::Time(neg, days, h, m, s, us);
                    let hours = days * 24 + h as u32;
                    let frac = if fsp == 0 {
                        String::new()
                    } else {
                        format!(".{:06}", us)[..fsp as usize + 1].to_string()
                    };
                    let zero = hours == 0 && m == 0 && s == 0 && us == 0;
                    let sign = if neg && !zero { "-" } else { "" };
                    assert_eq!(
                        render(&c, v),
                        format!("\"{sign}{hours:02}:{m:02}:{s:02}{frac}\""),
                        "fsp {fsp}"
                    );
                }
            }
            let c = col(ColKind::DateTime2 { fsp });
            assert_eq!(
                render(&c, Value::Date(2024, 2, 29, 23, 59, 58, us)),
                format!(
                    "\"2024-02-29T23:59:58{}\"",
                    if fsp == 0 {
                        String::new()
                    } else {
                        format!(".{:06}", us)[..fsp as usize + 1].to_string()
                    }
                )
            );
            let c = col(ColKind::Timestamp2 { fsp });
            assert_eq!(
                render(&c, Value::Date(2038, 1, 19, 3, 14, 7, 0)),
                format!(
                    "\"2038-01-19T03:14:07{}Z\"",
                    if fsp == 0 {
                        String::new()
                    } else {
                        format!(".{}", "0".repeat(fsp as usize))
                    }
                )
            );
        }
        assert_eq!(
            render(
                &col(ColKind::Timestamp2 { fsp: 0 }),
                Value::Date(0, 0, 0, 0, 0, 0, 0)
            ),
            "\"0000-00-00 00:00:00\""
        );
        assert_eq!(
            render(&col(ColKind::Date), Value::Date(1000, 1, 1, 0, 0, 0, 0)),
            "\"1000-01-01\""
        );
        for d in [-719_468i64, -1, 0, 1, 19_782, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn ints_enums_bits() {
        let mut c = col(ColKind::Int(1));
        assert_eq!(render(&c, Value::Int(-128)), "-128");
        c.unsigned = true;
        assert_eq!(render(&c, Value::UInt(255)), "255");
        let mut c = col(ColKind::Int(8));
        c.unsigned = true;
        assert_eq!(render(&c, Value::UInt(u64::MAX)), u64::MAX.to_string());
        let c = col(ColKind::Int(3));
        assert_eq!(render(&c, Value::Int(-8_388_608)), "-8388608");
        let mut e = col(ColKind::Enum { bytes: 1 });
        e.labels = Some(vec!["a".to_string(), "b".to_string()].into());
        assert_eq!(render(&e, Value::UInt(2)), "\"b\"");
        assert_eq!(render(&e, Value::Bytes(b"a".to_vec())), "\"a\"");
        let mut s = col(ColKind::Set { bytes: 1 });
        s.labels = Some(vec!["a".to_string(), "b".to_string(), "c".to_string()].into());
        assert_eq!(render(&s, Value::UInt(5)), "\"a,c\"");
        assert_eq!(render(&s, Value::Bytes(b"b,c".to_vec())), "\"b,c\"");
        let b = col(ColKind::Bit { bits: 10 });
        assert_eq!(render(&b, Value::Bytes(vec![0x02, 0xaa])), "682");
        assert_eq!(render(&col(ColKind::Year), Value::Int(2155)), "2155");
        assert_eq!(render(&col(ColKind::Year), Value::Int(0)), "0");
        assert_eq!(
            render(&col(ColKind::Float), Value::Float(1.25e-3)),
            "0.00125"
        );
        let mut t = col(ColKind::Str { len_bytes: 1 });
        t.text = Some(TextEncoding::Binary);
        t.binary_pad = Some(16);
        t.special = Some(SpecialType::Inet6);
        assert_eq!(
            render(&t, Value::Bytes(b"::ffff:1.2.3.4".to_vec())),
            "\"::ffff:1.2.3.4\""
        );
        t.special = Some(SpecialType::Uuid);
        let u = "123e4567-e89b-12d3-a456-426655440000";
        assert_eq!(render(&t, Value::Bytes(u.into())), format!("\"{u}\""));
    }
}
