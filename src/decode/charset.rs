//! Column charsets: collation id → how to turn the column's bytes into UTF-8.
//!
//! The collation table is read from the server (`information_schema.COLLATIONS`) at connect
//! time, so every id the server can write is known; a built-in table covers the common ids for
//! offline use (replay from binlog files).

use encoding_rs::Encoding;
use std::collections::HashMap;

/// How the bytes of a character column are turned into a JSON string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// Already UTF-8 (utf8mb3 / utf8mb4 / ascii-compatible subsets validated as UTF-8).
    Utf8,
    /// `binary` (charset 63): not text; emitted as base64.
    Binary,
    /// Transcoded with encoding_rs.
    Other(&'static Encoding),
    /// UTF-32 big-endian (not in encoding_rs).
    Utf32,
}

/// Maps a MySQL character-set name to its encoding; `None` for sets binlogd cannot transcode.
pub fn encoding_for_charset(name: &str) -> Option<TextEncoding> {
    use encoding_rs::*;
    Some(match name {
        "utf8mb4" | "utf8mb3" | "utf8" => TextEncoding::Utf8,
        "binary" => TextEncoding::Binary,
        // MySQL's latin1 is really cp1252; ascii is a subset of it.
        "latin1" | "ascii" => TextEncoding::Other(WINDOWS_1252),
        "latin2" => TextEncoding::Other(ISO_8859_2),
        "latin5" => TextEncoding::Other(WINDOWS_1254),
        "latin7" => TextEncoding::Other(ISO_8859_13),
        "greek" => TextEncoding::Other(ISO_8859_7),
        "hebrew" => TextEncoding::Other(ISO_8859_8),
        "cp1250" => TextEncoding::Other(WINDOWS_1250),
        "cp1251" => TextEncoding::Other(WINDOWS_1251),
        "cp1256" => TextEncoding::Other(WINDOWS_1256),
        "cp1257" => TextEncoding::Other(WINDOWS_1257),
        "cp866" => TextEncoding::Other(IBM866),
        "koi8r" => TextEncoding::Other(KOI8_R),
        "koi8u" => TextEncoding::Other(KOI8_U),
        "macroman" => TextEncoding::Other(MACINTOSH),
        "tis620" => TextEncoding::Other(WINDOWS_874),
        "big5" => TextEncoding::Other(BIG5),
        "gbk" | "gb2312" => TextEncoding::Other(GBK),
        "gb18030" => TextEncoding::Other(GB18030),
        "sjis" | "cp932" => TextEncoding::Other(SHIFT_JIS),
        "ujis" | "eucjpms" => TextEncoding::Other(EUC_JP),
        "euckr" => TextEncoding::Other(EUC_KR),
        "ucs2" | "utf16" => TextEncoding::Other(UTF_16BE),
        "utf16le" => TextEncoding::Other(UTF_16LE),
        "utf32" => TextEncoding::Utf32,
        _ => return None,
    })
}

/// Collation id → character-set name.
#[derive(Debug, Clone)]
pub struct CollationMap {
    by_id: HashMap<u16, String>,
}

impl Default for CollationMap {
    fn default() -> Self {
        Self::builtin()
    }
}

impl CollationMap {
    /// The ids shared by MySQL 8/9 and MariaDB for the common character sets.
    pub fn builtin() -> Self {
        let mut by_id = HashMap::new();
        let mut put = |ids: &[u16], cs: &str| {
            for &i in ids {
                by_id.insert(i, cs.to_string());
            }
        };
        put(&[5, 8, 15, 31, 47, 48, 49, 94], "latin1");
        put(&[11, 65], "ascii");
        put(&[63], "binary");
        put(&[33, 76, 83], "utf8mb3");
        put(&[45, 46, 255], "utf8mb4");
        put(&[2, 9, 21, 27, 77], "latin2");
        put(&[7, 74], "koi8r");
        put(&[22, 75], "koi8u");
        put(&[14, 23, 50, 51, 52], "cp1251");
        put(&[26, 34, 44, 66, 99], "cp1250");
        put(&[1, 84], "big5");
        put(&[28, 87], "gbk");
        put(&[248, 249, 250], "gb18030");
        put(&[13, 88], "sjis");
        put(&[95, 96], "cp932");
        put(&[19, 85], "euckr");
        put(&[12, 91], "ujis");
        put(&[35, 90], "ucs2");
        put(&[54, 55], "utf16");
        put(&[56, 62], "utf16le");
        put(&[60, 61], "utf32");
        put(&[25, 70], "greek");
        put(&[16, 71], "hebrew");
        put(&[30, 78], "latin5");
        put(&[20, 41, 42, 79], "latin7");
        put(&[57, 67], "cp1256");
        put(&[29, 58, 59], "cp1257");
        put(&[39, 53], "macroman");
        put(&[18, 89], "tis620");
        put(&[36, 68], "cp866");
        // utf8mb4 collations above 255 (MySQL 8 uca0900 family: 255..=323; MariaDB uca1400: 2048+)
        for i in 224..=247 {
            by_id.insert(i, "utf8mb4".into());
        }
        for i in 192..=215 {
            by_id.insert(i, "utf8mb3".into());
        }
        for i in 255..=323 {
            by_id.insert(i, "utf8mb4".into());
        }
        CollationMap { by_id }
    }

    /// Adds (or replaces) ids read from the server.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = (u16, String)>) {
        for (id, cs) in rows {
            self.by_id.insert(id, cs);
        }
    }

    pub fn charset_name(&self, id: u16) -> Option<&str> {
        self.by_id.get(&id).map(String::as_str)
    }

    pub fn encoding(&self, id: u16) -> Result<TextEncoding, String> {
        match self.charset_name(id) {
            Some(name) => encoding_for_charset(name).ok_or_else(|| {
                format!("character set {name} (collation id {id}) cannot be transcoded to UTF-8 by binlogd; convert the column to utf8mb4")
            }),
            None => Err(format!(
                "unknown collation id {id}; the server did not list it in information_schema.COLLATIONS"
            )),
        }
    }
}

/// Appends `bytes` in `enc` to `out` as UTF-8. Invalid sequences are an error (never replaced
/// silently): the caller names the column.
pub fn transcode_into(enc: TextEncoding, bytes: &[u8], out: &mut String) -> Result<(), String> {
    match enc {
        TextEncoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => {
                out.push_str(s);
                Ok(())
            }
            Err(e) => Err(format!("invalid UTF-8 at byte {}", e.valid_up_to())),
        },
        TextEncoding::Binary => Err("binary value is not text".into()),
        TextEncoding::Other(e) => {
            let (s, had_errors) = e.decode_without_bom_handling(bytes);
            if had_errors {
                return Err(format!("invalid {} byte sequence", e.name()));
            }
            out.push_str(&s);
            Ok(())
        }
        TextEncoding::Utf32 => {
            if !bytes.len().is_multiple_of(4) {
                return Err("UTF-32 value length is not a multiple of 4".into());
            }
            for c in bytes.chunks_exact(4) {
                let cp = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                out.push(char::from_u32(cp).ok_or("invalid UTF-32 code point")?);
            }
            Ok(())
        }
    }
}

/// Transcodes `bytes` in `e` to UTF-8 without allocating: hands the text to `piece` in
/// pieces of whole characters (up to 256 bytes each; ASCII text in an ASCII-compatible encoding in
/// one piece, as it is). Fails exactly when [`transcode_into`] does, with its error (issue 16:
/// the `String`s of `decode_without_bom_handling` were most of a latin1 column's rendering).
pub fn decode_in_pieces(
    e: &'static Encoding,
    bytes: &[u8],
    mut piece: impl FnMut(&[u8]),
) -> Result<(), String> {
    if e.is_ascii_compatible() && bytes.is_ascii() {
        piece(bytes);
        return Ok(());
    }
    let mut d = e.new_decoder_without_bom_handling();
    let mut buf = [0u8; 256];
    let mut src = bytes;
    loop {
        let (r, read, written) = d.decode_to_utf8_without_replacement(src, &mut buf, true);
        if written > 0 {
            piece(&buf[..written]);
        }
        src = &src[read..];
        match r {
            encoding_rs::DecoderResult::InputEmpty => return Ok(()),
            encoding_rs::DecoderResult::OutputFull => {}
            encoding_rs::DecoderResult::Malformed(..) => {
                return Err(format!("invalid {} byte sequence", e.name()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latin1_is_cp1252() {
        let m = CollationMap::builtin();
        let enc = m.encoding(8).unwrap();
        let mut s = String::new();
        transcode_into(enc, &[0x63, 0x61, 0x66, 0xE9, 0x80], &mut s).unwrap();
        assert_eq!(s, "café€");
    }

    proptest::proptest! {
        /// The pieces make the text `transcode_into` makes, and fail exactly when it does, with
        /// its message: every encoding binlogd transcodes with encoding_rs, values up to 5 KiB
        /// (many 256-byte pieces), ASCII or not.
        #[test]
        fn pieces_match_transcode(
            which in 0usize..64,
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..5000),
            ascii in proptest::bool::ANY,
        ) {
            let names = [
                "latin1", "latin2", "latin5", "latin7", "greek", "hebrew", "cp1250", "cp1251",
                "cp1256", "cp1257", "cp866", "koi8r", "koi8u", "macroman", "tis620", "big5",
                "gbk", "gb18030", "sjis", "ujis", "euckr", "ucs2", "utf16le",
            ];
            let name = names[which % names.len()];
            let Some(TextEncoding::Other(e)) = encoding_for_charset(name) else {
                panic!("{name} is transcoded by encoding_rs");
            };
            let bytes: Vec<u8> = if ascii {
                bytes.iter().map(|b| b & 0x7f).collect()
            } else {
                bytes
            };
            let mut want = String::new();
            let want = transcode_into(TextEncoding::Other(e), &bytes, &mut want).map(|()| want);
            let mut got = Vec::new();
            let got = decode_in_pieces(e, &bytes, |p| {
                assert!(std::str::from_utf8(p).is_ok(), "a piece of whole characters");
                got.extend_from_slice(p)
            })
            .map(|()| String::from_utf8(got).unwrap());
            proptest::prop_assert_eq!(got, want, "{}", name);
        }
    }

    #[test]
    fn utf8_checked_and_unknown_named() {
        let m = CollationMap::builtin();
        let mut s = String::new();
        assert!(transcode_into(m.encoding(45).unwrap(), &[0xff], &mut s).is_err());
        assert!(m.encoding(9999).unwrap_err().contains("9999"));
        assert_eq!(m.encoding(63).unwrap(), TextEncoding::Binary);
    }
}
