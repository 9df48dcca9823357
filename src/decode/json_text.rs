//! MariaDB JSON columns (LONGTEXT + `CHECK (json_valid(..))`) hold JSON as text: a value is
//! emitted nested when it is JSON. This module answers "is it JSON, and where does the value
//! start and end" in one pass over the bytes, for the common case, and leaves every doubt to
//! serde_json (the reference: what it accepts is nested, what it refuses falls back to a
//! string). A scan that says "JSON" is never wrong about it: [`json_span`] answers
//! `Some` only for text serde_json takes too, with the same value span (property-tested against
//! serde_json's `RawValue` in the tests below).
//!
//! It exists for speed (issue 16): serde_json's validation cost ~3,000 instructions per
//! 200-byte document on the wide-rows workload, most of a MariaDB JSON column's rendering.

/// Deepest nesting the scan follows; deeper text is left to serde_json (whose own limit is
/// 128).
const MAX_DEPTH: usize = 100;

/// Where the one JSON value in `b` lies (leading and trailing JSON whitespace excluded), and
/// whether the text holds a line break (`\n` or `\r`; in valid JSON only whitespace between
/// tokens can). `None`: not JSON, or a case left to serde_json (nesting deeper than
/// [`MAX_DEPTH`], `\u` escapes of surrogates).
pub fn json_span(b: &[u8]) -> Option<Span> {
    let mut s = Scan {
        b,
        i: 0,
        breaks: false,
    };
    s.ws();
    let start = s.i;
    // true: object, false: array (one per open container)
    let mut stack = [false; MAX_DEPTH];
    let mut depth = 0usize;
    'value: loop {
        match *s.b.get(s.i)? {
            c @ (b'{' | b'[') => {
                let object = c == b'{';
                s.i += 1;
                s.ws();
                if s.peek() == Some(if object { b'}' } else { b']' }) {
                    s.i += 1;
                } else {
                    if depth == MAX_DEPTH {
                        return None;
                    }
                    stack[depth] = object;
                    depth += 1;
                    if object {
                        s.key()?;
                    }
                    continue 'value;
                }
            }
            b'"' => {
                s.i += 1;
                s.string()?;
            }
            b't' => s.word(b"true")?,
            b'f' => s.word(b"false")?,
            b'n' => s.word(b"null")?,
            b'-' | b'0'..=b'9' => s.number()?,
            _ => return None,
        }
        // after a value: close containers, or a comma and the next value
        loop {
            if depth == 0 {
                let end = s.i;
                s.ws();
                return (s.i == s.b.len()).then_some(Span {
                    start,
                    end,
                    breaks: s.breaks,
                });
            }
            s.ws();
            let object = stack[depth - 1];
            match s.peek()? {
                b',' => {
                    s.i += 1;
                    s.ws();
                    if object {
                        s.key()?;
                    }
                    continue 'value;
                }
                b'}' if object => {
                    s.i += 1;
                    depth -= 1;
                }
                b']' if !object => {
                    s.i += 1;
                    depth -= 1;
                }
                _ => return None,
            }
        }
    }
}

/// The value's bytes `start..end` of the scanned text; `breaks`: the text holds `\n` or
/// `\r` (whitespace between tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub breaks: bool,
}

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
    breaks: bool,
}

impl Scan<'_> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.breaks = true,
                _ => return,
            }
            self.i += 1;
        }
    }

    /// An object key (a string), whitespace and the colon; leaves `i` at the value.
    #[inline]
    fn key(&mut self) -> Option<()> {
        if self.peek()? != b'"' {
            return None;
        }
        self.i += 1;
        self.string()?;
        self.ws();
        if self.peek()? != b':' {
            return None;
        }
        self.i += 1;
        self.ws();
        Some(())
    }

    fn word(&mut self, w: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + w.len())? != w {
            return None;
        }
        self.i += w.len();
        Some(())
    }

    /// After the opening quote: to past the closing one. Bytes of 0x80 and above are taken
    /// as they are (the caller passes UTF-8 text).
    fn string(&mut self) -> Option<()> {
        loop {
            // skip 16 plain bytes at a time
            while let Some(c) = self.b.get(self.i..).and_then(|r| r.first_chunk::<16>()) {
                let m = special16(c);
                if m == 0 {
                    self.i += 16;
                } else {
                    self.i += m.trailing_zeros() as usize;
                    break;
                }
            }
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    self.i += 1;
                    match *self.b.get(self.i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let h = self.b.get(self.i + 1..self.i + 5)?;
                            let mut cp = 0u32;
                            for &d in h {
                                cp = cp * 16 + (d as char).to_digit(16)?;
                            }
                            if (0xD800..0xE000).contains(&cp) {
                                // surrogates: serde_json decides
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                c if c < 0x20 => return None,
                _ => self.i += 1,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.i;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.i += 1;
        }
        self.i - from
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }
}

/// Bit `k` set when byte `k` of `c` ends a run of plain string bytes (`"`, `\\`, control
/// characters).
#[inline(always)]
fn special16(c: &[u8; 16]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: SSE2 is part of the x86_64 baseline; an unaligned load of the 16 bytes `c`
    // borrows.
    unsafe {
        use std::arch::x86_64::*;
        let v = _mm_loadu_si128(c.as_ptr() as *const __m128i);
        let ctl = _mm_set1_epi8(0x1f);
        let hit = _mm_or_si128(
            _mm_or_si128(
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8)),
                _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8)),
            ),
            _mm_cmpeq_epi8(_mm_max_epu8(v, ctl), ctl),
        );
        _mm_movemask_epi8(hit) as u32 & 0xffff
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

/// Appends `text[span]` with its line breaks (whitespace between tokens) turned into spaces:
/// one event per line in the file sink, whatever whitespace the application stored.
pub fn push_span(out: &mut Vec<u8>, text: &[u8], span: Span) {
    let at = out.len();
    out.extend_from_slice(&text[span.start..span.end]);
    if span.breaks {
        for c in &mut out[at..] {
            if *c == b'\n' || *c == b'\r' {
                *c = b' ';
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json makes of `t`: the raw value's span, or not JSON.
    fn serde_span(t: &str) -> Option<(usize, usize)> {
        let raw = serde_json::from_str::<&serde_json::value::RawValue>(t).ok()?;
        let start = raw.get().as_ptr() as usize - t.as_ptr() as usize;
        Some((start, start + raw.get().len()))
    }

    fn check(t: &str) {
        let ours = json_span(t.as_bytes());
        let theirs = serde_span(t);
        if let Some(s) = ours {
            assert_eq!(Some((s.start, s.end)), theirs, "{t:?}");
            assert_eq!(s.breaks, t.contains(['\n', '\r']), "{t:?}");
        }
    }

    #[test]
    fn agrees_with_serde_json_on_hand_picked_text() {
        let cases = [
            "{}",
            "[]",
            " {\"a\": 1} ",
            "{\"a\":\n [1, 2.5e-3, -0, true, false, null, \"x\\\"y\\\\\\u00e9\\n\"]}\r\n",
            "\"just a string\"",
            "12",
            "-",
            "01",
            "1.",
            "1e",
            "1e+",
            ".5",
            "1e999",
            "-0.0E-0",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "[1,]",
            "[1 2]",
            "{\"a\":1}}",
            "[[[[]]]]",
            "{\"k\":{\"k\":{\"k\":[{}]}}}",
            "\"\\ud800\"",
            "\"\\ud83d\\ude00\"",
            "\"\\uZZZZ\"",
            "\"\\x\"",
            "\"tab\tinside\"",
            "\"é 日本語 🚀\"",
            "tru",
            "nul",
            "true false",
            "",
            "   ",
            "{\"a\":\"0123456789abcdef0123456789abcdef\\\"0123456789abcdef\"}",
            "[\"unterminated",
            "\u{feff}{}",
            "{\"a\":1}\u{0}",
        ];
        for t in cases {
            check(t);
        }
        // the common cases are answered here, not left to serde_json
        for t in [
            "{}",
            " {\"a\": 1} ",
            "[\"é\", 1.5, {\"b\": null}]",
            "\"\\ud83d\"x",
        ] {
            assert_eq!(
                json_span(t.as_bytes()).is_some(),
                serde_span(t).is_some() && !t.contains("\\ud"),
                "{t:?}"
            );
        }
        // (an empty innermost container is not pushed: 101 brackets are 100 levels to follow)
        let deep = format!("{}{}", "[".repeat(101), "]".repeat(101));
        assert!(json_span(deep.as_bytes()).is_some());
        let deeper = format!("{}1{}", "[".repeat(101), "]".repeat(101));
        assert!(json_span(deeper.as_bytes()).is_none());
        check(&deeper);
    }

    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            ".{0,40}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                prop::collection::btree_map(".{0,12}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]

        /// Real JSON, compact or pretty, is recognised and spans what serde_json's does.
        #[test]
        fn real_json_is_recognised(v in json_value(), pretty in any::<bool>(), pad in "[ \t\r\n]{0,3}") {
            let body = if pretty {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                serde_json::to_string(&v).unwrap()
            };
            let t = format!("{pad}{body}{pad}");
            let s = json_span(t.as_bytes());
            prop_assert!(s.is_some() || t.contains("\\ud"), "{t:?}");
            check(&t);
        }

        /// Damaged JSON: whatever the scan says "JSON" to, serde_json does too, same span.
        #[test]
        fn damaged_json_never_passes_alone(v in json_value(), cut in any::<prop::sample::Index>(),
                                            ins in prop::sample::select(vec!["", ",", "]", "}", "\"", "\\", ":", "\n", "1", "e", "-", ".", "\u{1}"]),
                                            del in any::<bool>()) {
            let body = serde_json::to_string(&v).unwrap();
            let mut b = body.clone().into_bytes();
            let at = cut.index(b.len() + 1);
            if del && at < b.len() {
                b.remove(at);
            }
            b.splice(at..at, ins.bytes());
            if let Ok(t) = String::from_utf8(b) {
                check(&t);
            }
        }

        /// Arbitrary short text made of JSON's own characters.
        #[test]
        fn json_alphabet_soup(t in "[\\[\\]{}:,\" \\\\\n0-9eE.+\\-tfrunlsa]{0,24}") {
            check(&t);
        }
    }

    #[test]
    fn line_breaks_become_spaces() {
        let t = b" {\"a\":\r\n [1,\n2]}\n";
        let s = json_span(t).unwrap();
        let mut out = b"x".to_vec();
        push_span(&mut out, t, s);
        assert_eq!(out, b"x{\"a\":   [1, 2]}");
        let v: serde_json::Value = serde_json::from_slice(&out[1..]).unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, 2]}));
    }
}
