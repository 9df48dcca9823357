//! Renders one cell as JSON, by the event-format rules in the README:
//! lossless numbers, DECIMAL as exact string, FLOAT as the f32 it is, text transcoded to UTF-8,
//! binary as base64, temporal types as ISO-8601 strings (TIMESTAMP in UTC), ENUM/SET labels,
//! BIT and YEAR as numbers, JSON nested (DECIMALs in MySQL JSON as exact numbers), MariaDB
//! UUID/INET4/INET6 as SELECT prints them.

use mysql_common::binlog::jsonb;

use super::charset::{decode_in_pieces, transcode_into, TextEncoding};
use super::json_text::{json_span, push_span, Span};
use super::rows::{decimal_bin_size, fixed_size, le_uint, DIG2BYTES};
use super::table::{ColKind, ColumnSchema, SpecialType};

/// Why a value could not be rendered (names the column where the caller adds context).
pub type ValueError = String;

/// Appends `s` as a JSON string literal.
#[inline]
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    write_json_bytes(out, s.as_bytes());
}

/// Bit `k` set when byte `k` of `c` is one a JSON string escapes (`"`, `\\`, control
/// characters).
#[inline(always)]
fn escape_mask(c: &[u8; 32]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of the x86_64 baseline; the loads are unaligned loads of the 32
    // bytes `c` borrows.
    unsafe {
        use std::arch::x86_64::*;
        let quote = _mm_set1_epi8(b'"' as i8);
        let slash = _mm_set1_epi8(b'\\' as i8);
        let ctl = _mm_set1_epi8(0x1f);
        let half = |p: *const u8| {
            let v = _mm_loadu_si128(p as *const __m128i);
            let hit = _mm_or_si128(
                _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, slash)),
                // v <= 0x1f (unsigned): max(v, 0x1f) == 0x1f
                _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl),
            );
            _mm_movemask_epi8(hit) as u32 & 0xffff
        };
        half(c.as_ptr()) | (half(c.as_ptr().add(16)) << 16)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let mut m = 0u32;
        for (k, &b) in c.iter().enumerate() {
            m |= (((b < 0x20) | (b == b'"') | (b == b'\\')) as u32) << k;
        }
        m
    }
}

/// For each byte a JSON string escapes: its escape sequence (up to 6 bytes) in the first
/// bytes, its length in the last.
const ESCAPES: [[u8; 8]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut t = [[0u8; 8]; 256];
    let mut b = 0;
    while b < 0x20 {
        t[b] = [b'\\', b'u', b'0', b'0', HEX[b >> 4], HEX[b & 15], 0, 6];
        b += 1;
    }
    t[b'\n' as usize] = [b'\\', b'n', 0, 0, 0, 0, 0, 2];
    t[b'\r' as usize] = [b'\\', b'r', 0, 0, 0, 0, 0, 2];
    t[b'\t' as usize] = [b'\\', b't', 0, 0, 0, 0, 0, 2];
    t[b'"' as usize] = [b'\\', b'"', 0, 0, 0, 0, 0, 2];
    t[b'\\' as usize] = [b'\\', b'\\', 0, 0, 0, 0, 0, 2];
    t
};

/// Escapes the `valid` (≤ 32) bytes at `src[i..]` onto `out`. `src` must hold 64 bytes from
/// `i` on: every copy is a fixed 32-byte copy (a couple of vector moves instead of a `memcpy`
/// call per run between escapes) of which only the run's bytes are kept; the bytes past it are
/// overwritten by what follows or lie past the vector's length.
#[inline(always)]
fn escape_block(out: &mut Vec<u8>, src: &[u8], i: usize, valid: usize) {
    assert!(src.len() >= i + 64 && valid <= 32);
    let Some(c) = src[i..].first_chunk::<32>() else {
        return;
    };
    let mut m = escape_mask(c);
    if valid < 32 {
        m &= (1u32 << valid) - 1;
    }
    // worst case: 32 bytes escaped as 6 each, plus the last fixed copy's 32
    out.reserve(32 * 6 + 32);
    // SAFETY: reads: `src[i + s..i + s + 32]` with `s <= 32` lies within `src[i..i + 64]`
    // (asserted); `ESCAPES` rows are 8 bytes. Writes: at most `valid * 6 + 32` bytes past the
    // length (reserved above). The new length counts only bytes written from `src` runs and
    // escape sequences, in order.
    unsafe {
        let base = out.as_mut_ptr().add(out.len());
        let mut dst = base;
        let p = src.as_ptr().add(i);
        let mut s = 0usize;
        while m != 0 {
            let j = m.trailing_zeros() as usize;
            std::ptr::copy_nonoverlapping(p.add(s), dst, 32);
            dst = dst.add(j - s);
            let e = &ESCAPES[*p.add(j) as usize];
            std::ptr::copy_nonoverlapping(e.as_ptr(), dst, 8);
            dst = dst.add(e[7] as usize);
            s = j + 1;
            m &= m - 1;
        }
        if s < valid {
            std::ptr::copy_nonoverlapping(p.add(s), dst, 32);
            dst = dst.add(valid - s);
        }
        let written = dst.offset_from(base) as usize;
        out.set_len(out.len() + written);
    }
}

/// Appends `bytes` (text the caller knows to be UTF-8) as a JSON string literal: `"`, `\\`
/// and control characters escaped, everything else copied as it is. Looks at 32 bytes at a
/// time (SSE2 compares); a block without escapes is one 32-byte copy.
#[inline]
pub fn write_json_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    escape_into(out, bytes);
    out.push(b'"');
}

/// [`write_json_bytes`] without the quotes: the escaped text of `bytes` (a string written in
/// pieces, each of whole characters).
pub fn escape_into(out: &mut Vec<u8>, bytes: &[u8]) {
    let n = bytes.len();
    let mut i = 0;
    while i + 64 <= n {
        escape_block(out, bytes, i, 32);
        i += 32;
    }
    if i == n {
        return;
    }
    // The last 1..63 bytes. Where they need no escape, they are copied from the text's last 32
    // bytes (issue 16: the padded copy below was most of a short value's escaping, e.g.
    // sysbench's CHAR(60)): first a plain 32-byte block if more than 32 are left, then the
    // last 32 bytes written over the plain bytes just written before them, which they repeat.
    // (After the loop above `n - i` is at least 32 unless it did not run; so `w <= i` below
    // means either `w == i`, or the plain block just written holds `bytes[w..i]`.)
    if n >= 32 {
        if n - i > 32 {
            if let Some(c) = bytes[i..].first_chunk::<32>() {
                if escape_mask(c) == 0 {
                    put(out, c);
                    i += 32;
                }
            }
        }
        let w = n - 32;
        if i >= w {
            if let Some(c) = bytes[w..].first_chunk::<32>() {
                if escape_mask(c) >> (i - w) == 0 {
                    out.reserve(32);
                    // SAFETY: the output's last `i - w` bytes are `bytes[w..i]` as they are
                    // (none, or the plain block just written), so the 32 bytes from
                    // `len - (i - w)` end `n - i` bytes past the length, within the 32
                    // reserved; `c` is 32 readable bytes.
                    unsafe {
                        let at = out.len() - (i - w);
                        std::ptr::copy_nonoverlapping(c.as_ptr(), out.as_mut_ptr().add(at), 32);
                        out.set_len(out.len() + (n - i));
                    }
                    return;
                }
            }
        }
    }
    // otherwise from a padded copy, so that every block has 64 bytes to read
    let mut pad = [b'a'; 96];
    let rest = n - i;
    copy_short(&mut pad, &bytes[i..]);
    let mut k = 0;
    while k < rest {
        escape_block(out, &pad, k, (rest - k).min(32));
        k += 32;
    }
}

/// Copies `src` (fewer than 64 bytes) to the start of `dst` with two overlapping fixed-size
/// copies (no `memcpy` call for a short tail).
#[inline(always)]
fn copy_short(dst: &mut [u8; 96], src: &[u8]) {
    let r = src.len();
    if r >= 32 {
        dst[..32].copy_from_slice(&src[..32]);
        dst[r - 32..r].copy_from_slice(&src[r - 32..]);
    } else if r >= 16 {
        dst[..16].copy_from_slice(&src[..16]);
        dst[r - 16..r].copy_from_slice(&src[r - 16..]);
    } else if r >= 8 {
        dst[..8].copy_from_slice(&src[..8]);
        dst[r - 8..r].copy_from_slice(&src[r - 8..]);
    } else if r >= 4 {
        dst[..4].copy_from_slice(&src[..4]);
        dst[r - 4..r].copy_from_slice(&src[r - 4..]);
    } else {
        dst[..r].copy_from_slice(src);
    }
}

/// Appends a short byte string (a column key, a number, a date) with inline copies: for up
/// to 32 bytes two overlapping fixed-size copies instead of a `memcpy` call (issue 16: the
/// calls for short values were 3–4% of the wide workload).
#[inline(always)]
pub fn put(out: &mut Vec<u8>, s: &[u8]) {
    let n = s.len();
    if n > 32 {
        out.extend_from_slice(s);
        return;
    }
    out.reserve(32);
    // SAFETY: 32 bytes of spare capacity were reserved; every copy below reads within `s`
    // (`n` bytes: each pair of copies covers 0..k and n-k..n with k <= n) and writes within
    // the first `n` bytes past the length, which are then all written.
    unsafe {
        let src = s.as_ptr();
        let dst = out.as_mut_ptr().add(out.len());
        if n >= 16 {
            std::ptr::copy_nonoverlapping(src, dst, 16);
            std::ptr::copy_nonoverlapping(src.add(n - 16), dst.add(n - 16), 16);
        } else if n >= 8 {
            std::ptr::copy_nonoverlapping(src, dst, 8);
            std::ptr::copy_nonoverlapping(src.add(n - 8), dst.add(n - 8), 8);
        } else if n >= 4 {
            std::ptr::copy_nonoverlapping(src, dst, 4);
            std::ptr::copy_nonoverlapping(src.add(n - 4), dst.add(n - 4), 4);
        } else {
            for i in 0..n {
                *dst.add(i) = *src.add(i);
            }
        }
        out.set_len(out.len() + n);
    }
}

#[inline]
fn push_int<I: itoa::Integer>(out: &mut Vec<u8>, v: I) {
    put(out, itoa::Buffer::new().format(v).as_bytes());
}

fn push_2(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&DIGIT_PAIRS[(v % 100) as usize]);
}

fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut b = itoa::Buffer::new();
    let s = b.format(v);
    for _ in s.len()..width {
        out.push(b'0');
    }
    out.extend_from_slice(s.as_bytes());
}

/// `.ffffff` cut to `fsp` digits (none for fsp 0).
fn push_frac(out: &mut Vec<u8>, micros: u32, fsp: u8) {
    if fsp == 0 {
        return;
    }
    out.push(b'.');
    let m = micros % 1_000_000;
    let mut b = [0u8; 6];
    b[0..2].copy_from_slice(&DIGIT_PAIRS[(m / 10_000) as usize]);
    b[2..4].copy_from_slice(&DIGIT_PAIRS[(m / 100 % 100) as usize]);
    b[4..6].copy_from_slice(&DIGIT_PAIRS[(m % 100) as usize]);
    put(out, &b[..(fsp as usize).min(6)]);
}

/// Date/time parts; `iso` chooses `T` between date and time, else MySQL's own space.
///
/// Written into a stack buffer and appended once (one capacity check instead of ~25 pushes:
/// temporal columns were ~370 instructions each on the wide workload, issue 16); a year past
/// 9999 (only in a malformed image) takes the general path, which prints all its digits.
#[allow(clippy::too_many_arguments)]
#[inline]
fn push_datetime(
    out: &mut Vec<u8>,
    y: u32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    us: u32,
    fsp: u8,
    zulu: bool,
) {
    if y > 9999 {
        return push_datetime_general(out, y, mo, d, h, mi, s, us, fsp, zulu);
    }
    let zero = y == 0 || mo == 0 || d == 0;
    let pair = |v: u32| DIGIT_PAIRS[(v % 100) as usize];
    let mut b = [0u8; 32];
    b[0] = b'"';
    b[1..3].copy_from_slice(&pair(y / 100));
    b[3..5].copy_from_slice(&pair(y));
    b[5] = b'-';
    b[6..8].copy_from_slice(&pair(mo));
    b[8] = b'-';
    b[9..11].copy_from_slice(&pair(d));
    b[11] = if zero { b' ' } else { b'T' };
    b[12..14].copy_from_slice(&pair(h));
    b[14] = b':';
    b[15..17].copy_from_slice(&pair(mi));
    b[17] = b':';
    b[18..20].copy_from_slice(&pair(s));
    let mut n = 20;
    if fsp > 0 {
        b[20] = b'.';
        let m = us % 1_000_000;
        b[21..23].copy_from_slice(&pair(m / 10_000));
        b[23..25].copy_from_slice(&pair(m / 100));
        b[25..27].copy_from_slice(&pair(m));
        n = 21 + fsp.min(6) as usize;
    }
    if zulu && !zero {
        b[n] = b'Z';
        n += 1;
    }
    b[n] = b'"';
    put(out, &b[..n + 1]);
}

/// [`push_datetime`] for any year (digit by digit).
#[allow(clippy::too_many_arguments)]
#[cold]
fn push_datetime_general(
    out: &mut Vec<u8>,
    y: u32,
    mo: u32,
    d: u32,
    h: u32,
    mi: u32,
    s: u32,
    us: u32,
    fsp: u8,
    zulu: bool,
) {
    let zero = y == 0 || mo == 0 || d == 0;
    out.push(b'"');
    push_padded(out, y as u64, 4);
    out.push(b'-');
    push_2(out, mo);
    out.push(b'-');
    push_2(out, d);
    out.push(if zero { b' ' } else { b'T' });
    push_2(out, h);
    out.push(b':');
    push_2(out, mi);
    out.push(b':');
    push_2(out, s);
    push_frac(out, us, fsp);
    if zulu && !zero {
        out.push(b'Z');
    }
    out.push(b'"');
}

fn be_uint(b: &[u8]) -> u64 {
    b.iter().fold(0u64, |a, &x| (a << 8) | x as u64)
}

/// Fraction bytes (big-endian) of TIME2/DATETIME2/TIMESTAMP2 → microseconds.
fn frac_micros(b: &[u8], fsp: u8) -> u32 {
    match fsp {
        1 | 2 => b[0] as u32 * 10_000,
        3 | 4 => be_uint(&b[..2]) as u32 * 100,
        5 | 6 => be_uint(&b[..3]) as u32,
        _ => 0,
    }
}

/// Days since 1970-01-01 → (year, month, day) (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push_timestamp(out: &mut Vec<u8>, secs: u64, micros: u32, fsp: u8) {
    if secs == 0 && micros == 0 {
        // MySQL's zero timestamp
        push_datetime(out, 0, 0, 0, 0, 0, 0, 0, fsp, false);
        return;
    }
    let days = (secs / 86_400) as i64;
    let rem = (secs % 86_400) as u32;
    let (y, m, d) = civil_from_days(days);
    push_datetime(
        out,
        y as u32,
        m,
        d,
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        micros,
        fsp,
        true,
    );
}

fn push_time(out: &mut Vec<u8>, neg: bool, hours: u64, mi: u32, s: u32, us: u32, fsp: u8) {
    out.push(b'"');
    if neg {
        out.push(b'-');
    }
    push_padded(out, hours, 2);
    out.push(b':');
    push_2(out, mi);
    out.push(b':');
    push_2(out, s);
    push_frac(out, us, fsp);
    out.push(b'"');
}

/// Decodes a binary DECIMAL into its exact string (as MySQL prints it, with `scale` digits),
/// as a JSON string literal.
pub fn decimal_to_string(
    b: &[u8],
    precision: u8,
    scale: u8,
    out: &mut Vec<u8>,
) -> Result<(), ValueError> {
    let mut text = [0u8; DECIMAL_TEXT_MAX];
    let n = decimal_into(b, precision, scale, &mut text)?;
    out.push(b'"');
    put(out, &text[..n]);
    out.push(b'"');
    Ok(())
}

/// Decodes a binary DECIMAL into its exact digits (`-12.50`; never `-0`).
pub fn decimal_text(b: &[u8], precision: u8, scale: u8) -> Result<String, ValueError> {
    let mut text = [0u8; DECIMAL_TEXT_MAX];
    let n = decimal_into(b, precision, scale, &mut text)?;
    Ok(text[..n].iter().map(|&c| c as char).collect())
}

/// Longest DECIMAL text: sign, 65 digits, point, and a leading `0` (`-0.123…`).
const DECIMAL_TEXT_MAX: usize = 72;

/// The two ASCII digits of 0..=99.
static DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut t = [[0u8; 2]; 100];
    let mut i = 0;
    while i < 100 {
        t[i] = [b'0' + (i / 10) as u8, b'0' + (i % 10) as u8];
        i += 1;
    }
    t
};

/// Writes `v` (< 10^`w`, `w` ≤ 9: one DECIMAL digit group) as exactly `w` decimal digits
/// (zero-padded) at `dst[*at..]`, two digits per step (issue 16: a division per digit was
/// most of a DECIMAL's rendering on the wide workload).
#[inline]
fn put_digits(dst: &mut [u8], at: &mut usize, mut v: u32, w: usize) {
    let mut k = *at + w;
    while k >= *at + 2 {
        k -= 2;
        dst[k..k + 2].copy_from_slice(&DIGIT_PAIRS[(v % 100) as usize]);
        v /= 100;
    }
    if k > *at {
        dst[*at] = b'0' + (v % 10) as u8;
    }
    *at += w;
}

/// 10^d: a DECIMAL digit group of `d` digits holds less.
const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// The DECIMAL's parameters and size checked; `mask`: all ones for a negative value (stored
/// complemented), else 0.
#[inline]
fn decimal_start(b: &[u8], precision: u8, scale: u8) -> Result<u32, ValueError> {
    if precision == 0 || precision > 65 || scale > 30 || scale > precision {
        return Err(format!("bad DECIMAL({precision},{scale})"));
    }
    let size = decimal_bin_size(precision, scale);
    if b.len() != size || size == 0 {
        return Err(format!(
            "DECIMAL({precision},{scale}) needs {size} bytes, got {}",
            b.len()
        ));
    }
    Ok(if b[0] & 0x80 == 0 { u32::MAX } else { 0 })
}

/// The next digit group (`d` of 1..=9 digits) of a DECIMAL at `b[*p..]`: the sign bit of the
/// first byte flipped back, a negative value's complement undone. A stored value of `d + 1`
/// or more digits is not a DECIMAL the server wrote (MySQL's bin2decimal rejects it too).
#[inline(always)]
fn decimal_group(
    b: &[u8],
    p: &mut usize,
    d: usize,
    mask: u32,
    precision: u8,
    scale: u8,
) -> Result<u32, ValueError> {
    let n = DIG2BYTES[d];
    let g = b.get(*p..*p + n).ok_or("DECIMAL too short")?;
    let mut v = 0u32;
    for &x in g {
        v = (v << 8) | x as u32;
    }
    if *p == 0 {
        v ^= 0x80 << (8 * (n - 1));
    }
    *p += n;
    v ^= mask >> (32 - 8 * n);
    if v >= POW10[d] {
        return Err(format!(
            "corrupt DECIMAL({precision},{scale}): a {d}-digit group holds {v}"
        ));
    }
    Ok(v)
}

/// Fails exactly when [`decimal_into`] does, with its error, without producing the digits.
pub fn decimal_check(b: &[u8], precision: u8, scale: u8) -> Result<(), ValueError> {
    let mask = decimal_start(b, precision, scale)?;
    let intg = (precision - scale) as usize;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale as usize / 9, scale as usize % 9);
    let mut p = 0usize;
    if intg0x > 0 {
        decimal_group(b, &mut p, intg0x, mask, precision, scale)?;
    }
    for _ in 0..intg0 + frac0 {
        decimal_group(b, &mut p, 9, mask, precision, scale)?;
    }
    if frac0x > 0 {
        decimal_group(b, &mut p, frac0x, mask, precision, scale)?;
    }
    Ok(())
}

/// Decodes a binary DECIMAL into `text` (no allocation); returns the length. Errors on what
/// the server cannot have written: a bad precision/scale, a wrong size, or a digit group
/// holding more digits than it may.
pub fn decimal_into(
    b: &[u8],
    precision: u8,
    scale: u8,
    text: &mut [u8; DECIMAL_TEXT_MAX],
) -> Result<usize, ValueError> {
    let mask = decimal_start(b, precision, scale)?;
    let neg = mask != 0;
    let intg = (precision - scale) as usize;
    let (intg0, intg0x) = (intg / 9, intg % 9);
    let (frac0, frac0x) = (scale as usize / 9, scale as usize % 9);
    let mut p = 0usize;
    let take = |d: usize, p: &mut usize| decimal_group(b, p, d, mask, precision, scale);
    // integer digits, zero-padded per group, at text[1..]; text[0] is kept for the sign
    let mut at = 1usize;
    if intg0x > 0 {
        let v = take(intg0x, &mut p)?;
        put_digits(text, &mut at, v, intg0x);
    }
    for _ in 0..intg0 {
        let v = take(9, &mut p)?;
        put_digits(text, &mut at, v, 9);
    }
    // leading zeros dropped; no digit left is "0"
    let first = text[1..at]
        .iter()
        .position(|&c| c != b'0')
        .map_or(at, |k| k + 1);
    let (int_start, int_end) = if first == at {
        text[at] = b'0';
        (at, at + 1)
    } else {
        (first, at)
    };
    let mut nonzero = first != at;
    // the sign goes right before the integer part
    let start = if neg { int_start - 1 } else { int_start };
    let mut at = int_end;
    if scale > 0 {
        text[at] = b'.';
        at += 1;
        let frac_start = at;
        for _ in 0..frac0 {
            let v = take(9, &mut p)?;
            put_digits(text, &mut at, v, 9);
        }
        if frac0x > 0 {
            let v = take(frac0x, &mut p)?;
            put_digits(text, &mut at, v, frac0x);
        }
        nonzero |= text[frac_start..at].iter().any(|&c| c != b'0');
    }
    // "-0.00" is how MySQL prints negative zero? It prints "0.00": normalise.
    let start = if neg && nonzero {
        text[start] = b'-';
        start
    } else {
        int_start
    };
    text.copy_within(start..at, 0);
    Ok(at - start)
}

/// The base64 alphabet (standard, padded).
const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Two base64 characters for each 12-bit value (first character in the low byte): 8 KiB, two
/// look-ups per 3 input bytes instead of four.
static B64_PAIRS: [u16; 4096] = {
    let mut t = [0u16; 4096];
    let mut i = 0;
    while i < 4096 {
        t[i] = B64[i >> 6] as u16 | (B64[i & 63] as u16) << 8;
        i += 1;
    }
    t
};

/// Appends `v` as a base64 (standard alphabet, padded) JSON string. Written straight into the
/// vector's spare capacity, 6 input bytes to 8 characters at a time: the `base64` crate's
/// `encode_slice` wants an initialised slice, and zeroing it first cost as much as encoding
/// (issue 16).
fn push_b64(out: &mut Vec<u8>, v: &[u8]) {
    let n = v.len().div_ceil(3) * 4;
    out.reserve(n + 2);
    out.push(b'"');
    let spare = &mut out.spare_capacity_mut()[..n];
    let groups = v.chunks_exact(6);
    let rest = groups.remainder();
    let (full, last) = spare.split_at_mut(v.len() / 6 * 8);
    for (k, (d, c)) in full.chunks_exact_mut(8).zip(groups).enumerate() {
        // one 8-byte load where the input has 2 more bytes after the group
        let x = match v.get(k * 6..k * 6 + 8).and_then(|b| b.first_chunk::<8>()) {
            Some(b) => u64::from_be_bytes(*b) >> 16,
            None => {
                (c[0] as u64) << 40
                    | (c[1] as u64) << 32
                    | (c[2] as u64) << 24
                    | (c[3] as u64) << 16
                    | (c[4] as u64) << 8
                    | c[5] as u64
            }
        };
        let w = B64_PAIRS[(x >> 36) as usize & 4095] as u64
            | (B64_PAIRS[(x >> 24) as usize & 4095] as u64) << 16
            | (B64_PAIRS[(x >> 12) as usize & 4095] as u64) << 32
            | (B64_PAIRS[x as usize & 4095] as u64) << 48;
        let d: &mut [std::mem::MaybeUninit<u8>; 8] = match d.try_into() {
            Ok(d) => d,
            Err(_) => continue, // (chunks_exact_mut(8): never)
        };
        // SAFETY: `d` is 8 bytes of the vector's spare capacity; an unaligned 8-byte store.
        unsafe { std::ptr::write_unaligned(d.as_mut_ptr() as *mut u64, w.to_le()) };
    }
    // 0..5 bytes left: a full group of 3, then 1 or 2 bytes with padding
    let mut at = 0;
    for c in rest.chunks(3) {
        let x = (c[0] as u32) << 16
            | (c.get(1).copied().unwrap_or(0) as u32) << 8
            | c.get(2).copied().unwrap_or(0) as u32;
        let ch = [
            B64[(x >> 18) as usize & 63],
            B64[(x >> 12) as usize & 63],
            if c.len() > 1 {
                B64[(x >> 6) as usize & 63]
            } else {
                b'='
            },
            if c.len() > 2 {
                B64[x as usize & 63]
            } else {
                b'='
            },
        ];
        for (d, b) in last[at..at + 4].iter_mut().zip(ch) {
            d.write(b);
        }
        at += 4;
    }
    // SAFETY: the `n` bytes past the length were all written above: `full` 8 at a time, and
    // `last` (4 per started group of 3 of the remainder: `n` - `full.len()` bytes).
    unsafe { out.set_len(out.len() + n) };
    out.push(b'"');
}

/// `v` as UTF-8 text (SIMD validation; std's for the position of an error).
#[inline]
pub fn utf8(v: &[u8]) -> Result<&str, ValueError> {
    match simdutf8::basic::from_utf8(v) {
        Ok(s) => Ok(s),
        Err(_) => {
            std::str::from_utf8(v).map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))
        }
    }
}

/// `text_checked`: the value was checked by [`check_value`] (valid in its character set).
fn push_text(
    out: &mut Vec<u8>,
    enc: TextEncoding,
    v: &[u8],
    text_checked: bool,
) -> Result<(), ValueError> {
    match enc {
        TextEncoding::Utf8 if text_checked => write_json_bytes(out, v),
        TextEncoding::Utf8 => write_json_str(out, utf8(v)?),
        TextEncoding::Binary => push_b64(out, v),
        TextEncoding::Other(e) => {
            // transcoded in pieces straight into the escaping (no String per value)
            let at = out.len();
            out.push(b'"');
            if let Err(m) = decode_in_pieces(e, v, |p| escape_into(out, p)) {
                out.truncate(at);
                return Err(m);
            }
            out.push(b'"');
        }
        TextEncoding::Utf32 => {
            let mut s = String::with_capacity(v.len());
            transcode_into(enc, v, &mut s)?;
            write_json_str(out, &s);
        }
    }
    Ok(())
}

/// Renders MySQL binary JSON as JSON text.
pub fn push_mysql_json(out: &mut Vec<u8>, v: &[u8]) -> Result<(), ValueError> {
    let val = mysql_json_value(v)?;
    serde_json::to_writer(&mut *out, &val).map_err(|e| format!("JSON: {e}"))
}

pub fn mysql_json_value(v: &[u8]) -> Result<serde_json::Value, ValueError> {
    use mysql_common::io::ParseBuf;
    let jv: jsonb::Value<'_> = ParseBuf(v)
        .parse(())
        .map_err(|e| format!("binary JSON: {e}"))?;
    jsonb_to_json(jv)
}

/// Deeper documents are not MySQL's (it refuses more than 100 levels): an error, not a stack
/// overflow.
const MAX_JSON_DEPTH: usize = 200;

/// Converts one binary JSON value (a document, or a value in a partial-update diff) to a JSON
/// value as SELECT prints it: DECIMAL scalars become numbers with their exact digits (`1.50`),
/// other opaque scalars (dates, times) strings as mysql_common renders them.
pub fn jsonb_to_json(v: jsonb::Value<'_>) -> Result<serde_json::Value, ValueError> {
    jsonb_at(v, 0)
}

fn jsonb_at(v: jsonb::Value<'_>, depth: usize) -> Result<serde_json::Value, ValueError> {
    use serde_json::Value as J;
    let bad = |e: std::io::Error| format!("binary JSON: {e}");
    if depth > MAX_JSON_DEPTH {
        return Err(format!(
            "binary JSON nested deeper than {MAX_JSON_DEPTH} levels"
        ));
    }
    Ok(match v {
        jsonb::Value::Null => J::Null,
        jsonb::Value::Bool(b) => J::Bool(b),
        jsonb::Value::I16(x) => J::from(x),
        jsonb::Value::U16(x) => J::from(x),
        jsonb::Value::I32(x) => J::from(x),
        jsonb::Value::U32(x) => J::from(x),
        jsonb::Value::I64(x) => J::from(x),
        jsonb::Value::U64(x) => J::from(x),
        // infinities and NaN are not in MySQL JSON; rendered as 0 as mysql_common does
        jsonb::Value::F64(x) => J::Number(
            serde_json::Number::from_f64(x).unwrap_or_else(|| serde_json::Number::from(0u8)),
        ),
        jsonb::Value::String(s) => J::String(
            std::str::from_utf8(s.str_raw())
                .map_err(|e| format!("binary JSON: string is not UTF-8: {e}"))?
                .to_owned(),
        ),
        jsonb::Value::SmallArray(a) => {
            let mut items = Vec::with_capacity(a.element_count().min(1024) as usize);
            for x in a.iter() {
                items.push(jsonb_at(x.map_err(bad)?, depth + 1)?);
            }
            J::Array(items)
        }
        jsonb::Value::LargeArray(a) => {
            let mut items = Vec::with_capacity(a.element_count().min(1024) as usize);
            for x in a.iter() {
                items.push(jsonb_at(x.map_err(bad)?, depth + 1)?);
            }
            J::Array(items)
        }
        jsonb::Value::SmallObject(o) => {
            let mut m = serde_json::Map::new();
            for kv in o.iter() {
                let (k, x) = kv.map_err(bad)?;
                m.insert(k.value().into_owned(), jsonb_at(x, depth + 1)?);
            }
            J::Object(m)
        }
        jsonb::Value::LargeObject(o) => {
            let mut m = serde_json::Map::new();
            for kv in o.iter() {
                let (k, x) = kv.map_err(bad)?;
                m.insert(k.value().into_owned(), jsonb_at(x, depth + 1)?);
            }
            J::Object(m)
        }
        jsonb::Value::Opaque(o)
            if o.value_type() == mysql_common::constants::ColumnType::MYSQL_TYPE_NEWDECIMAL =>
        {
            json_decimal(o.data_raw())?
        }
        other @ jsonb::Value::Opaque(_) => J::from(other.parse().map_err(bad)?),
    })
}

/// A DECIMAL scalar of binary JSON (precision, scale, binary DECIMAL) as a JSON number with
/// the digits SELECT prints (`1.50`, `0.000`, `12345678901234567890.123`).
fn json_decimal(data: &[u8]) -> Result<serde_json::Value, ValueError> {
    let (precision, scale, bin) = match data {
        [p, s, rest @ ..] => (*p, *s, rest),
        _ => return Err("binary JSON: DECIMAL without precision and scale".into()),
    };
    if precision == 0 || precision > 65 || scale > 30 || scale > precision {
        return Err(format!("binary JSON: bad DECIMAL({precision},{scale})"));
    }
    let size = decimal_bin_size(precision, scale);
    let bin = bin.get(..size).ok_or_else(|| {
        format!(
            "binary JSON: DECIMAL({precision},{scale}) needs {size} bytes, got {}",
            bin.len()
        )
    })?;
    let text = decimal_text(bin, precision, scale)?;
    // serde_json's arbitrary_precision keeps the text as it is, trailing zeros included
    let n: serde_json::Number = text
        .parse()
        .map_err(|e| format!("binary JSON: DECIMAL {text}: {e}"))?;
    Ok(serde_json::Value::Number(n))
}

/// MariaDB JSON (LONGTEXT + CHECK json_valid, recognised from today's information_schema):
/// the text as nested JSON. A value that does not parse (written before the column became
/// JSON, or JSON MariaDB takes and serde_json does not, e.g. nested deeper than 128) is
/// emitted as the string a text column gives, with a rate-limited warning and a metric.
#[inline]
fn push_json_text(
    out: &mut Vec<u8>,
    col: &ColumnSchema,
    enc: TextEncoding,
    v: &[u8],
    text_checked: bool,
) -> Result<(), ValueError> {
    // UTF-8 checked by `check_value` already: the one-pass scan answers for the common case
    if enc == TextEncoding::Utf8 && text_checked {
        if let Some(span) = json_span(v) {
            push_span(out, v, span);
            return Ok(());
        }
    }
    let owned;
    let s: &str = match enc {
        TextEncoding::Utf8 => utf8(v)?,
        other => {
            let mut t = String::with_capacity(v.len());
            transcode_into(other, v, &mut t)?;
            owned = t;
            &owned
        }
    };
    if let Some(span) = json_span(s.as_bytes()) {
        push_span(out, s.as_bytes(), span);
        return Ok(());
    }
    // not JSON, or a case the scan leaves to serde_json
    match serde_json::from_str::<&serde_json::value::RawValue>(s) {
        Ok(raw) => {
            let start = raw.get().as_ptr() as usize - s.as_ptr() as usize;
            let span = Span {
                start,
                end: start + raw.get().len(),
                breaks: s.contains(['\n', '\r']),
            };
            push_span(out, s.as_bytes(), span);
        }
        Err(e) => {
            report_json_fallback(col, &e);
            write_json_str(out, s);
        }
    }
    Ok(())
}

/// (db, table, column)
type ColumnKey = (String, String, String);

/// One warning per column per this many seconds.
const JSON_FALLBACK_WARN_EVERY_S: u64 = 60;

/// Metric and rate-limited warning for a JSON column value emitted as a string (cold path).
#[cold]
#[inline(never)]
fn report_json_fallback(col: &ColumnSchema, err: &serde_json::Error) {
    use std::collections::HashMap;
    use std::sync::Mutex;
    // (db, table, column) → (unix seconds of the last warning, values since not warned about)
    static WARNED: Mutex<Option<HashMap<ColumnKey, (u64, u64)>>> = Mutex::new(None);
    let Some(o) = col.json_origin.as_deref() else {
        tracing::debug!(column = %col.name, error = %err, "JSON column value is not JSON: emitted as a string");
        return;
    };
    crate::metrics::get()
        .json_fallback
        .get_or_create(&crate::metrics::ColumnLabels {
            db: o.db.clone(),
            table: o.table.clone(),
            column: o.column.clone(),
        })
        .inc();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let suppressed = {
        let mut g = match WARNED.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let key = (o.db.clone(), o.table.clone(), o.column.clone());
        let e = g
            .get_or_insert_with(HashMap::new)
            .entry(key)
            .or_insert((0, 0));
        if e.0 != 0 && now < e.0.saturating_add(JSON_FALLBACK_WARN_EVERY_S) {
            e.1 += 1;
            return;
        }
        e.0 = now.max(1);
        std::mem::take(&mut e.1)
    };
    tracing::warn!(
        db = %o.db,
        table = %o.table,
        column = %o.column,
        error = %err,
        suppressed,
        "a value of a column the server now declares JSON is not JSON (written before the \
         column became JSON?): emitted as a JSON string; at most one such warning per column \
         per minute, `suppressed` counts the values since the last one; see metric \
         binlogd_json_fallback_total"
    );
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// MariaDB UUID/INET4/INET6 as SELECT prints them. `v` is at most the type's length (the
/// server strips trailing 0x00 in the binlog: padded back here).
fn push_special(out: &mut Vec<u8>, t: SpecialType, v: &[u8]) {
    let n = t.binary_len() as usize;
    let mut b = [0u8; 16];
    b[..v.len()].copy_from_slice(v);
    let b = &b[..n];
    out.push(b'"');
    match t {
        SpecialType::Uuid => {
            // MariaDB logs the in-memory (text-order) form, whatever the UUID version: its
            // record form swaps segments for versions 1-5, but Field_uuid::pack converts back.
            for (i, x) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    out.push(b'-');
                }
                out.push(HEX_DIGITS[(x >> 4) as usize]);
                out.push(HEX_DIGITS[(x & 15) as usize]);
            }
        }
        SpecialType::Inet4 => push_ipv4(out, b),
        SpecialType::Inet6 => push_ipv6(out, b),
    }
    out.push(b'"');
}

fn push_ipv4(out: &mut Vec<u8>, b: &[u8]) {
    for (i, x) in b.iter().take(4).enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_int(out, *x);
    }
}

/// MariaDB's `Inet6::to_string`: the longest run of zero groups (the first of equal runs,
/// even a single group) becomes `::`; `::a.b.c.d` when the first six groups are zero,
/// `::ffff:a.b.c.d` for IPv4-mapped; lowercase hex without leading zeros.
fn push_ipv6(out: &mut Vec<u8>, b: &[u8]) {
    let mut w = [0u16; 8];
    for (i, x) in w.iter_mut().enumerate() {
        *x = u16::from_be_bytes([b[2 * i], b[2 * i + 1]]);
    }
    // (pos, len) of the first longest zero run
    let (mut gap_pos, mut gap_len) = (usize::MAX, 0usize);
    let mut i = 0;
    while i < 8 {
        if w[i] == 0 {
            let start = i;
            while i < 8 && w[i] == 0 {
                i += 1;
            }
            if i - start > gap_len {
                (gap_pos, gap_len) = (start, i - start);
            }
        } else {
            i += 1;
        }
    }
    let mut i = 0;
    while i < 8 {
        if i == gap_pos {
            if i == 0 {
                out.push(b':');
            }
            out.push(b':');
            i += gap_len;
            continue;
        }
        if i == 6 && gap_pos == 0 && (gap_len == 6 || (gap_len == 5 && w[5] == 0xffff)) {
            push_ipv4(out, &b[12..16]);
            return;
        }
        let x = w[i];
        let mut started = false;
        for shift in [12u16, 8, 4, 0] {
            let d = (x >> shift) & 15;
            if d != 0 || started || shift == 0 {
                out.push(HEX_DIGITS[d as usize]);
                started = true;
            }
        }
        if i + 1 != 8 {
            out.push(b':');
        }
        i += 1;
    }
}

/// Text that is not valid in its character set: the error rendering it gives.
fn check_text(enc: TextEncoding, v: &[u8]) -> Result<(), ValueError> {
    match enc {
        TextEncoding::Utf8 => utf8(v).map(|_| ()),
        TextEncoding::Binary => Ok(()),
        TextEncoding::Other(e) => decode_in_pieces(e, v, |_| {}),
        TextEncoding::Utf32 => transcode_into(enc, v, &mut String::new()),
    }
}

/// Checks, without rendering, that [`push_value`] renders `v`: fails exactly when it would,
/// with its error, for the kinds whose rendering depends on the value's bytes (DECIMAL digit
/// groups, MySQL binary JSON, VECTOR, ENUM indexes, text in its character set; sizes and
/// column attributes as `push_value` checks them). The value checks before a rows event joins
/// a batch (`validate.rs`) use it.
pub fn check_value(col: &ColumnSchema, v: &[u8]) -> Result<(), ValueError> {
    if let Some(n) = fixed_size(col.kind) {
        if v.len() != n {
            return Err(format!(
                "{} bytes for a {:?} value, which takes {n}",
                v.len(),
                col.kind
            ));
        }
    }
    match col.kind {
        ColKind::Int(n) if !(1..=8).contains(&n) => Err(format!("integer of {n} bytes")),
        ColKind::Time2 { fsp } | ColKind::DateTime2 { fsp } | ColKind::Timestamp2 { fsp }
            if fsp > 6 =>
        {
            Err(format!("fractional-seconds precision {fsp} (at most 6)"))
        }
        ColKind::Decimal { precision, scale } => decimal_check(v, precision, scale),
        ColKind::Json { .. } => mysql_json_value(v).map(|_| ()),
        ColKind::Vector { .. } if !v.len().is_multiple_of(4) => {
            Err("VECTOR length is not a multiple of 4".into())
        }
        ColKind::Enum { .. } => {
            let idx = le_uint(v) as usize;
            match &col.labels {
                Some(l) if idx > l.len() => Err(format!(
                    "ENUM index {idx} out of range ({} labels)",
                    l.len()
                )),
                _ => Ok(()),
            }
        }
        ColKind::Str { .. } | ColKind::Blob { .. } => {
            let enc = col.text.unwrap_or(TextEncoding::Binary);
            if enc == TextEncoding::Binary {
                // base64, or MariaDB UUID/INET: cannot fail
                return Ok(());
            }
            // text, or MariaDB JSON text (which falls back to a string when it is not JSON):
            // only the character set can fail
            check_text(enc, v)
        }
        _ => Ok(()),
    }
}

/// Appends the JSON rendering of one non-NULL value.
pub fn push_value(out: &mut Vec<u8>, col: &ColumnSchema, v: &[u8]) -> Result<(), ValueError> {
    push_value_in(out, col, v, false)
}

/// [`push_value`] for a value already checked by [`check_value`] when `text_checked` (text is
/// then copied without checking its UTF-8 again).
pub fn push_value_in(
    out: &mut Vec<u8>,
    col: &ColumnSchema,
    v: &[u8],
    text_checked: bool,
) -> Result<(), ValueError> {
    push_value_inline(out, col, v, text_checked)
}

/// [`push_value_in`], inlined into the row renderer's column loop (issue 16: a call per value).
#[inline(always)]
pub fn push_value_inline(
    out: &mut Vec<u8>,
    col: &ColumnSchema,
    v: &[u8],
    text_checked: bool,
) -> Result<(), ValueError> {
    // The row splitter cuts fixed-size values to their size; checked again here so that no
    // caller can make the decoders below index past a value.
    if let Some(n) = fixed_size(col.kind) {
        if v.len() != n {
            return Err(format!(
                "{} bytes for a {:?} value, which takes {n}",
                v.len(),
                col.kind
            ));
        }
    }
    match col.kind {
        ColKind::Int(n) if !(1..=8).contains(&n) => {
            return Err(format!("integer of {n} bytes"));
        }
        ColKind::Time2 { fsp } | ColKind::DateTime2 { fsp } | ColKind::Timestamp2 { fsp }
            if fsp > 6 =>
        {
            return Err(format!("fractional-seconds precision {fsp} (at most 6)"));
        }
        _ => {}
    }
    match col.kind {
        ColKind::Int(n) => {
            let raw = le_uint(v);
            if col.unsigned {
                push_int(out, raw);
            } else {
                let shift = 64 - 8 * n as u32;
                push_int(out, ((raw << shift) as i64) >> shift);
            }
        }
        ColKind::Year => push_int(out, if v[0] == 0 { 0 } else { 1900 + v[0] as u32 }),
        ColKind::Float => {
            let f = f32::from_le_bytes([v[0], v[1], v[2], v[3]]);
            if f.is_finite() {
                put(out, ryu::Buffer::new().format_finite(f).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        ColKind::Double => {
            let f = f64::from_le_bytes(v[..8].try_into().map_err(|_| "bad DOUBLE")?);
            if f.is_finite() {
                put(out, ryu::Buffer::new().format_finite(f).as_bytes());
            } else {
                out.extend_from_slice(b"null");
            }
        }
        ColKind::Decimal { precision, scale } => decimal_to_string(v, precision, scale, out)?,
        ColKind::Date => {
            let x = le_uint(&v[..3]) as u32;
            out.push(b'"');
            push_padded(out, (x >> 9) as u64, 4);
            out.push(b'-');
            push_2(out, (x >> 5) & 15);
            out.push(b'-');
            push_2(out, x & 31);
            out.push(b'"');
        }
        ColKind::TimeOld => {
            let raw = le_uint(&v[..3]) as u32;
            let x = ((raw << 8) as i32) >> 8;
            let a = x.unsigned_abs();
            push_time(out, x < 0, (a / 10000) as u64, a / 100 % 100, a % 100, 0, 0);
        }
        ColKind::Time2 { fsp } => {
            const OFS: i64 = 0x80_0000;
            let intpart = be_uint(&v[..3]) as i64 - OFS;
            let packed: i64 = match fsp {
                0 => intpart << 24,
                1 | 2 => {
                    let (mut ip, mut frac) = (intpart, v[3] as i64);
                    if ip < 0 && frac != 0 {
                        ip += 1;
                        frac -= 0x100;
                    }
                    (ip << 24) + frac * 10_000
                }
                3 | 4 => {
                    let (mut ip, mut frac) = (intpart, be_uint(&v[3..5]) as i64);
                    if ip < 0 && frac != 0 {
                        ip += 1;
                        frac -= 0x1_0000;
                    }
                    (ip << 24) + frac * 100
                }
                _ => be_uint(&v[..6]) as i64 - 0x8000_0000_0000,
            };
            let neg = packed < 0;
            let a = packed.unsigned_abs();
            let hms = a >> 24;
            let us = (a % (1 << 24)) as u32;
            push_time(
                out,
                neg,
                (hms >> 12) % (1 << 10),
                ((hms >> 6) % 64) as u32,
                (hms % 64) as u32,
                us,
                fsp,
            );
        }
        ColKind::DateTimeOld => {
            let x = le_uint(&v[..8]);
            let (d, t) = (x / 1_000_000, x % 1_000_000);
            push_datetime(
                out,
                (d / 10000) as u32,
                (d / 100 % 100) as u32,
                (d % 100) as u32,
                (t / 10000) as u32,
                (t / 100 % 100) as u32,
                (t % 100) as u32,
                0,
                0,
                false,
            );
        }
        ColKind::DateTime2 { fsp } => {
            let intpart = be_uint(&v[..5]) as i64 - 0x80_0000_0000;
            let us = frac_micros(&v[5..], fsp);
            let ymd = (intpart >> 17) as u64;
            let ym = ymd >> 5;
            let hms = (intpart % (1 << 17)) as u64;
            push_datetime(
                out,
                (ym / 13) as u32,
                (ym % 13) as u32,
                (ymd % 32) as u32,
                (hms >> 12) as u32,
                ((hms >> 6) % 64) as u32,
                (hms % 64) as u32,
                us,
                fsp,
                false,
            );
        }
        ColKind::TimestampOld => push_timestamp(out, le_uint(&v[..4]), 0, 0),
        ColKind::Timestamp2 { fsp } => {
            push_timestamp(out, be_uint(&v[..4]), frac_micros(&v[4..], fsp), fsp)
        }
        ColKind::Str { .. } | ColKind::Blob { .. } => {
            let enc = col.text.unwrap_or(TextEncoding::Binary);
            if col.json_text && enc != TextEncoding::Binary {
                push_json_text(out, col, enc, v, text_checked)?;
            } else if let (Some(n), TextEncoding::Binary) = (col.binary_pad, enc) {
                if let Some(t) = col.special.filter(|t| v.len() <= t.binary_len() as usize) {
                    push_special(out, t, v);
                } else if v.len() < n as usize {
                    let mut padded = v.to_vec();
                    padded.resize(n as usize, 0);
                    push_b64(out, &padded);
                } else {
                    push_b64(out, v);
                }
            } else {
                push_text(out, enc, v, text_checked)?;
            }
        }
        ColKind::Json { .. } => push_mysql_json(out, v)?,
        ColKind::Geometry { .. } => push_b64(out, v),
        ColKind::Vector { .. } => {
            if !v.len().is_multiple_of(4) {
                return Err("VECTOR length is not a multiple of 4".into());
            }
            out.push(b'[');
            for (i, c) in v.chunks_exact(4).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                let f = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                put(out, ryu::Buffer::new().format_finite(f).as_bytes());
            }
            out.push(b']');
        }
        ColKind::Enum { .. } => {
            let idx = le_uint(v) as usize;
            match &col.labels {
                Some(l) if idx == 0 => write_json_str(out, ""),
                Some(l) => {
                    let s = l.get(idx - 1).ok_or_else(|| {
                        format!("ENUM index {idx} out of range ({} labels)", l.len())
                    })?;
                    write_json_str(out, s);
                }
                None => push_int(out, idx),
            }
        }
        ColKind::Set { .. } => {
            let mask = le_uint(v);
            match &col.labels {
                Some(l) => {
                    // the labels escaped one by one into the string (no String per value)
                    out.push(b'"');
                    let mut first = true;
                    for (i, lab) in l.iter().enumerate().take(64) {
                        if mask & (1 << i) != 0 {
                            if !first {
                                out.push(b',');
                            }
                            first = false;
                            escape_into(out, lab.as_bytes());
                        }
                    }
                    out.push(b'"');
                }
                None => push_int(out, mask),
            }
        }
        ColKind::Bit { .. } => push_int(out, be_uint(v)),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_appends_like_extend_from_slice_at_every_length() {
        let src: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        for pre in [0usize, 1, 7, 31] {
            for n in 0..=40 {
                let mut a = vec![9u8; pre];
                let mut b = a.clone();
                put(&mut a, &src[3..3 + n]);
                b.extend_from_slice(&src[3..3 + n]);
                assert_eq!(a, b, "prefix {pre}, length {n}");
            }
        }
    }

    fn dec(bytes: &[u8], p: u8, s: u8) -> String {
        let mut o = Vec::new();
        decimal_to_string(bytes, p, s, &mut o).unwrap();
        String::from_utf8(o).unwrap()
    }

    #[test]
    fn decimals() {
        // 1234567890.1234 as DECIMAL(14,4): from MySQL's documentation example layout
        // DECIMAL(5,2) 123.45 → intg 3 (2 bytes), frac 2 (1 byte): 0x80 0x7b 0x2d
        assert_eq!(dec(&[0x80, 0x7b, 0x2d], 5, 2), "\"123.45\"");
        // -123.45 is the bitwise complement
        assert_eq!(dec(&[0x7f, 0x84, 0xd2], 5, 2), "\"-123.45\"");
        assert_eq!(dec(&[0x80, 0x00, 0x05], 5, 2), "\"0.05\"");
    }

    /// The escaping before the word-at-a-time loop, as the reference.
    fn json_str_reference(out: &mut Vec<u8>, bytes: &[u8]) {
        out.push(b'"');
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            let esc: &[u8] = match b {
                b'"' => b"\\\"",
                b'\\' => b"\\\\",
                b'\n' => b"\\n",
                b'\r' => b"\\r",
                b'\t' => b"\\t",
                0..=0x1f => {
                    out.extend_from_slice(&bytes[start..i]);
                    out.extend_from_slice(format!("\\u{:04x}", b).as_bytes());
                    start = i + 1;
                    continue;
                }
                _ => continue,
            };
            out.extend_from_slice(&bytes[start..i]);
            out.extend_from_slice(esc);
            start = i + 1;
        }
        out.extend_from_slice(&bytes[start..]);
        out.push(b'"');
    }

    #[test]
    fn json_escaping_matches_the_reference() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for case in 0..20_000 {
            let len = (next() % 300) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| match case % 4 {
                    3 if next() % 50 != 0 => b'a' + (next() % 26) as u8,
                    0 => next() as u8,
                    1 => b"ab\"\\\n\x01\x1f\x7f \xc3\xa9xyz"[(next() % 14) as usize],
                    _ => 0x18 + (next() % 0x70) as u8,
                })
                .collect();
            // the output vector already holds something (a row's earlier columns)
            let (mut a, mut b) = (b"x".repeat(case % 40), b"x".repeat(case % 40));
            write_json_bytes(&mut a, &v);
            json_str_reference(&mut b, &v);
            assert_eq!(a, b, "{v:?}");
        }
        for b in 0..=255u8 {
            for (at, len) in (0..12)
                .map(|a| (a, 12))
                .chain((0..200).map(|l| (l / 2, l + 1)))
                .chain((0..200).map(|l| (l, 200)))
            {
                let mut v = vec![b'a'; len];
                v[at] = b;
                let (mut x, mut y) = (Vec::new(), Vec::new());
                write_json_bytes(&mut x, &v);
                json_str_reference(&mut y, &v);
                assert_eq!(x, y);
            }
        }
    }

    #[test]
    fn base64_matches_the_base64_crate() {
        use base64::Engine;
        let mut seed = 7u64;
        for len in 0..300usize {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            let mut out = b"x".repeat(len % 7);
            push_b64(&mut out, &v);
            let want = format!(
                "{}\"{}\"",
                "x".repeat(len % 7),
                base64::engine::general_purpose::STANDARD.encode(&v)
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    /// The DECIMAL decoder before it wrote into a stack buffer, as the reference.
    fn decimal_text_reference(b: &[u8], precision: u8, scale: u8) -> Result<String, ValueError> {
        const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];
        const POW10: [u64; 10] = [
            1,
            10,
            100,
            1_000,
            10_000,
            100_000,
            1_000_000,
            10_000_000,
            100_000_000,
            1_000_000_000,
        ];
        if precision == 0 || precision > 65 || scale > 30 || scale > precision {
            return Err(format!("bad DECIMAL({precision},{scale})"));
        }
        let size = decimal_bin_size(precision, scale);
        if b.len() != size || size == 0 {
            return Err(format!(
                "DECIMAL({precision},{scale}) needs {size} bytes, got {}",
                b.len()
            ));
        }
        let neg = b[0] & 0x80 == 0;
        let mask: u8 = if neg { 0xff } else { 0 };
        let mut buf = [0u8; 40];
        buf[..size].copy_from_slice(b);
        buf[0] ^= 0x80;
        for x in &mut buf[..size] {
            *x ^= mask;
        }
        let intg = (precision - scale) as usize;
        let (intg0, intg0x) = (intg / 9, intg % 9);
        let (frac0, frac0x) = (scale as usize / 9, scale as usize % 9);
        let mut p = 0usize;
        let mut digits = String::with_capacity(precision as usize + 2);
        // A group of `d` digits is stored in DIG2BYTES[d] bytes; a stored value of `d + 1` or more
        // digits is not a DECIMAL the server wrote (MySQL's bin2decimal rejects it too).
        let take = |d: usize, p: &mut usize| -> Result<u64, ValueError> {
            let n = DIG2BYTES[d];
            let v = be_uint(buf.get(*p..*p + n).ok_or("DECIMAL too short")?);
            *p += n;
            if v >= POW10[d] {
                return Err(format!(
                    "corrupt DECIMAL({precision},{scale}): a {d}-digit group holds {v}"
                ));
            }
            Ok(v)
        };
        if intg0x > 0 {
            let v = take(intg0x, &mut p)?;
            digits.push_str(&format!("{v:0w$}", w = intg0x));
        }
        for _ in 0..intg0 {
            let v = take(9, &mut p)?;
            digits.push_str(&format!("{v:09}"));
        }
        let int_part = digits.trim_start_matches('0');
        let mut s = String::with_capacity(precision as usize + 3);
        if neg {
            s.push('-');
        }
        s.push_str(if int_part.is_empty() { "0" } else { int_part });
        if scale > 0 {
            s.push('.');
            for _ in 0..frac0 {
                let v = take(9, &mut p)?;
                s.push_str(&format!("{v:09}"));
            }
            if frac0x > 0 {
                let v = take(frac0x, &mut p)?;
                s.push_str(&format!("{v:0w$}", w = frac0x));
            }
        }
        // "-0.00" is how MySQL prints negative zero? It prints "0.00": normalise.
        if neg && s[1..].bytes().all(|c| c == b'0' || c == b'.') {
            s.remove(0);
        }
        Ok(s)
    }

    #[test]
    fn decimal_text_matches_the_reference() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for precision in 1..=65u8 {
            for scale in 0..=precision.min(30) {
                let size = decimal_bin_size(precision, scale);
                for case in 0..60 {
                    let mut b: Vec<u8> = (0..size).map(|_| next() as u8).collect();
                    if case % 3 == 0 {
                        // mostly valid: small digit groups, either sign
                        for v in b.iter_mut().skip(1) {
                            *v &= 0x0f;
                        }
                    }
                    if case % 7 == 0 {
                        // zero, positive or negative
                        let neg = case % 2 == 0;
                        for v in b.iter_mut() {
                            *v = if neg { 0xff } else { 0 };
                        }
                        b[0] ^= 0x80;
                    }
                    let want = decimal_text_reference(&b, precision, scale);
                    assert_eq!(
                        decimal_check(&b, precision, scale),
                        want.clone().map(|_| ()),
                        "check {precision},{scale} {b:?}"
                    );
                    assert_eq!(
                        decimal_text(&b, precision, scale),
                        want,
                        "{precision},{scale} {b:?}"
                    );
                }
            }
        }
        assert_eq!(
            decimal_text(&[0x80], 0, 0),
            decimal_text_reference(&[0x80], 0, 0)
        );
        assert_eq!(
            decimal_text(&[0x80], 5, 2),
            decimal_text_reference(&[0x80], 5, 2)
        );
    }

    #[test]
    fn civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let mut o = Vec::new();
        push_timestamp(&mut o, 2_147_483_647, 0, 0);
        assert_eq!(o, b"\"2038-01-19T03:14:07Z\"");
    }

    fn special(t: SpecialType, hex: &str) -> String {
        let b: Vec<u8> = (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let mut o = Vec::new();
        push_special(&mut o, t, &b);
        String::from_utf8(o).unwrap()
    }

    /// SELECT output of MariaDB 10.11.19 for these INET6 values (HEX(i6) → i6).
    #[test]
    fn inet6_as_mariadb_prints_it() {
        for (hex, want) in [
            ("20010DB8000000000000000000000001", "2001:db8::1"),
            ("00000000000000000000FFFF01020304", "::ffff:1.2.3.4"),
            ("00000000000000000000000000000000", "::"),
            ("00000000000000000000000000000001", "::1"),
            ("00000000000000000000000001020304", "::1.2.3.4"),
            ("00000000000000000000000000000100", "::100"),
            ("20010DB8000000010001000100010001", "2001:db8::1:1:1:1:1"),
            ("20010000000000010000000000000001", "2001:0:0:1::1"),
            ("20010DB8000000000001000000000001", "2001:db8::1:0:0:1"),
            ("00010000000000000000000000000000", "1::"),
            ("FE800000000000000000000000010002", "fe80::1:2"),
            ("0000000000000000FFFF000001020304", "::ffff:0:102:304"),
            ("00000000000000000000FFFF00000000", "::ffff:0.0.0.0"),
            ("00000000000000000000000100000000", "::1:0:0"),
            ("00010002000300040005000600070008", "1:2:3:4:5:6:7:8"),
            (
                "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            ),
            ("00000000000000000000FFFFFFFFFFFF", "::ffff:255.255.255.255"),
            ("00010000000100000000000000010000", "1:0:1::1:0"),
            ("00000000000000010000000000000000", "0:0:0:1::"),
            ("00000000000000000000FFFE01020304", "::fffe:102:304"),
            ("00000000000000000000000000010000", "::0.1.0.0"),
        ] {
            assert_eq!(
                special(SpecialType::Inet6, hex),
                format!("\"{want}\""),
                "{hex}"
            );
        }
        // trailing zero bytes stripped in the binlog
        assert_eq!(special(SpecialType::Inet6, "20010DB8"), "\"2001:db8::\"");
        assert_eq!(special(SpecialType::Inet6, ""), "\"::\"");
    }

    #[test]
    fn uuid_and_inet4() {
        assert_eq!(
            special(SpecialType::Uuid, "123E4567E89B12D3A456426655440000"),
            "\"123e4567-e89b-12d3-a456-426655440000\""
        );
        assert_eq!(
            special(SpecialType::Uuid, "123E4567E89B12D3A4564266554400"),
            "\"123e4567-e89b-12d3-a456-426655440000\""
        );
        assert_eq!(
            special(SpecialType::Uuid, ""),
            "\"00000000-0000-0000-0000-000000000000\""
        );
        assert_eq!(special(SpecialType::Inet4, "C0A80001"), "\"192.168.0.1\"");
        assert_eq!(special(SpecialType::Inet4, "0A"), "\"10.0.0.0\"");
    }

    #[test]
    fn json_decimals_keep_their_digits() {
        // DECIMAL(3,2) 1.50 as an opaque binary JSON scalar, alone and in an array
        let one_fifty = [0x0f, 0xf6, 0x04, 0x03, 0x02, 0x81, 0x32];
        let mut o = Vec::new();
        push_mysql_json(&mut o, &one_fifty).unwrap();
        assert_eq!(o, b"1.50");
        let arr = [
            0x02, 0x01, 0x00, 0x0d, 0x00, 0x0f, 0x07, 0x00, 0xf6, 0x04, 0x03, 0x02, 0x81, 0x32,
        ];
        o.clear();
        push_mysql_json(&mut o, &arr).unwrap();
        assert_eq!(o, b"[1.50]");
        // -0.001 as DECIMAL(3,3); 0 as DECIMAL(65,30) (exact zeros, no sign)
        let mut neg = vec![0x0f, 0xf6, 0x04, 0x03, 0x03];
        neg.extend([0x7f, 0xfe]); // ~(0x80 0x01) for frac group 001 (2 bytes)
        o.clear();
        push_mysql_json(&mut o, &neg).unwrap();
        assert_eq!(o, b"-0.001");
        let mut bin = vec![0u8; decimal_bin_size(65, 30)];
        let mut zero = vec![0x0f, 0xf6, 2 + bin.len() as u8, 65, 30];
        bin[0] = 0x80;
        zero.extend(&bin);
        o.clear();
        push_mysql_json(&mut o, &zero).unwrap();
        assert_eq!(
            String::from_utf8(o.clone()).unwrap(),
            format!("0.{}", "0".repeat(30))
        );
        // precision/scale out of range and short data are errors, not panics
        assert!(mysql_json_value(&[0x0f, 0xf6, 0x02, 0x00, 0x00]).is_err());
        assert!(mysql_json_value(&[0x0f, 0xf6, 0x03, 0x03, 0x02, 0x81]).is_err());
        assert!(mysql_json_value(&[0x0f, 0xf6, 0x02, 66, 0x00]).is_err());
    }

    #[test]
    fn json_text_that_is_not_json_is_a_string() {
        let mut col = ColumnSchema {
            name: "j".into(),
            json_key: "\"j\":".into(),
            type_code: 252,
            kind: ColKind::Blob { len_bytes: 4 },
            unsigned: false,
            text: Some(TextEncoding::Utf8),
            json_text: true,
            labels: None,
            binary_pad: None,
            special: None,
            json_origin: Some(std::sync::Arc::new(super::super::table::ColumnOrigin::new(
                "unit_db", "unit_t", "j",
            ))),
        };
        let mut o = Vec::new();
        push_value(&mut o, &col, b" {\"a\": [1, 2.50]} ").unwrap();
        assert_eq!(o, b"{\"a\": [1, 2.50]}");
        o.clear();
        push_value(&mut o, &col, b"not \"json\" {").unwrap();
        assert_eq!(String::from_utf8(o.clone()).unwrap(), r#""not \"json\" {""#);
        o.clear();
        push_value(&mut o, &col, b"").unwrap();
        assert_eq!(o, b"\"\"");
        let m = crate::metrics::get().encode();
        assert!(
            m.contains(r#"binlogd_json_fallback_total{db="unit_db",table="unit_t",column="j"} 2"#),
            "{m}"
        );
        col.json_origin = None;
        o.clear();
        push_value(&mut o, &col, b"[1,").unwrap();
        assert_eq!(o, b"\"[1,\"");
    }

    proptest::proptest! {
        /// Escaping at every length (blocks, the plain tail copied from the last 32 bytes, the
        /// padded tail) gives text JSON reads back as the input, and the same bytes as a
        /// plain byte-by-byte escaper. Escapes placed anywhere, often near the end.
        #[test]
        fn escaping_at_every_length_and_position(
            plain in proptest::collection::vec(
                proptest::sample::select(vec!['a', 'z', '0', ' ', 'é', '🚀']),
                0..140,
            ),
            escapes in proptest::collection::vec(
                (
                    proptest::num::usize::ANY,
                    proptest::sample::select(vec!['"', '\\', '\n', '\t', '\u{1}', '\u{1f}']),
                ),
                0..3,
            ),
        ) {
            // plain text with 0..2 escapes at any position (a block, the tail, its last byte)
            let mut chars = plain;
            for (at, c) in escapes {
                chars.insert(at % (chars.len() + 1), c);
            }
            let text: String = chars.into_iter().collect();
            let mut got = Vec::new();
            write_json_bytes(&mut got, text.as_bytes());
            proptest::prop_assert_eq!(&got, &escaped_slowly(text.as_bytes()));
            let back: String = serde_json::from_slice(&got).map_err(|e| {
                proptest::test_runner::TestCaseError::fail(e.to_string())
            })?;
            proptest::prop_assert_eq!(back, text);
        }
    }

    /// The reference: byte by byte.
    fn escaped_slowly(text: &[u8]) -> Vec<u8> {
        let mut want = vec![b'"'];
        for &b in text {
            let e = &ESCAPES[b as usize];
            if e[7] == 0 {
                want.push(b);
            } else {
                want.extend_from_slice(&e[..e[7] as usize]);
            }
        }
        want.push(b'"');
        want
    }

    /// Every length up to 200 with no escape, and one or two escapes at every position (the
    /// blocks, both tail paths and their edges).
    #[test]
    fn escaping_every_length_and_escape_position() {
        for n in 0..200usize {
            for e in [b'"', b'\\', b'\n', 0x01, 0x1f] {
                for p in 0..=n {
                    for q in [None, Some(n.saturating_sub(1)), Some(p / 2)] {
                        let mut text = vec![b'a'; n];
                        if p < n {
                            text[p] = e;
                        }
                        if let Some(q) = q.filter(|&q| q < n) {
                            text[q] = b'\t';
                        }
                        let mut got = Vec::new();
                        write_json_bytes(&mut got, &text);
                        assert_eq!(
                            got,
                            escaped_slowly(&text),
                            "length {n}, escape at {p}, {q:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn escapes() {
        let mut o = Vec::new();
        write_json_str(&mut o, "a\"b\\c\n\u{1}é");
        assert_eq!(String::from_utf8(o).unwrap(), "\"a\\\"b\\\\c\\n\\u0001é\"");
    }
}
