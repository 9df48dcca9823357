//! Checks, before a rows event joins a batch, that every value in it can be rendered.
//!
//! Sinks render values when they write a batch; a value that cannot be rendered there fails the
//! whole batch, and with it the complete transactions ahead of it in the same batch. So the
//! decoder checks the values whose rendering can fail (DECIMAL digit groups, MySQL binary JSON
//! and partial-JSON diffs, VECTOR, ENUM indexes, text that is not valid in its character set)
//! as each rows event arrives; a failure stops the stream *before* the event, and everything
//! ahead of it is still handed on (invariant 4). Values that cannot fail (integers, temporal
//! types, binary strings: sizes already checked by the row splitter) are not looked at again.
//!
//! The checks do not render: [`check_value`] fails exactly when rendering would (DECIMAL digit
//! groups decoded into a stack buffer, ENUM indexes against the labels, text validated in its
//! character set — a MariaDB JSON column's text too: text that is not JSON is rendered as a
//! string, so only its character set can fail). A checked chunk is marked `text_checked`, and
//! the sinks then copy its UTF-8 text without validating it a second time.

use super::charset::TextEncoding;
use super::rows::{Cell, RowsChunk};
use super::table::{ColKind, ColumnSchema, TableSchema};
use super::value::check_value;
use super::DecodeError;

/// The columns whose rendering can fail on the value's bytes: DECIMAL, MySQL JSON, VECTOR,
/// ENUM, and text (a character set other than binary).
pub fn checked_columns(columns: &[ColumnSchema]) -> Vec<usize> {
    columns
        .iter()
        .enumerate()
        .filter(|(_, c)| match c.kind {
            ColKind::Decimal { .. }
            | ColKind::Json { .. }
            | ColKind::Vector { .. }
            | ColKind::Enum { .. } => true,
            // (a MariaDB JSON column's text that is not JSON is emitted as a string)
            ColKind::Str { .. } | ColKind::Blob { .. } => {
                !matches!(c.text, None | Some(TextEncoding::Binary))
            }
            _ => false,
        })
        .map(|(i, _)| i)
        .collect()
}

fn malformed(t: &TableSchema, col: &ColumnSchema, row: usize, m: String) -> DecodeError {
    DecodeError::Malformed(format!(
        "{}.{} column {} row {row}: {m}; binlogd stops before this row change (everything before it \
         is handed on) rather than emit a wrong value",
        t.db, t.table, col.name
    ))
}

/// Checks one row image of `t` (`image`: its cells into `data`; no partial JSON), as
/// [`check_chunk`] checks each image of a chunk: a snapshot read checks each row as it
/// arrives, while the server sends the next ones.
pub fn check_image(
    t: &TableSchema,
    data: &[u8],
    image: &[Cell],
    row: usize,
) -> Result<(), DecodeError> {
    for &i in &t.checked_columns {
        let (Some(col), Some(&cell)) = (t.columns.get(i), image.get(i)) else {
            continue;
        };
        if cell.is_null() || cell.is_absent() {
            continue;
        }
        let v = data
            .get(cell.start as usize..(cell.start + cell.len) as usize)
            .ok_or_else(|| malformed(t, col, row, "value outside the row data".into()))?;
        check_value(col, v).map_err(|m| malformed(t, col, row, m))?;
    }
    Ok(())
}

/// Checks every value of `chunk`.
pub fn check_chunk(chunk: &RowsChunk) -> Result<(), DecodeError> {
    let t = &chunk.table;
    let fallible = &t.checked_columns;
    if fallible.is_empty() {
        return Ok(());
    }
    let data: &[u8] = &chunk.data;
    let value = |cell: Cell| &data[cell.start as usize..(cell.start + cell.len) as usize];
    for r in 0..chunk.rows as usize {
        for (after, image) in [(false, chunk.before(r)), (true, chunk.after(r))] {
            let Some(image) = image else { continue };
            for &i in fallible {
                let (Some(col), Some(&cell)) = (t.columns.get(i), image.get(i)) else {
                    continue;
                };
                if cell.is_null() || cell.is_absent() {
                    continue;
                }
                let v = value(cell);
                let bad = |m: String| malformed(t, col, chunk.first_row as usize + r, m);
                if after && chunk.is_partial(r, i) {
                    let before = chunk
                        .before(r)
                        .and_then(|b| b.get(i).copied())
                        .filter(|c| !c.is_null() && !c.is_absent())
                        .ok_or_else(|| bad("partial JSON update without a before value".into()))?;
                    let mut doc = super::value::mysql_json_value(value(before)).map_err(bad)?;
                    super::jsondiff::apply(&mut doc, v).map_err(bad)?;
                    continue;
                }
                check_value(col, v).map_err(bad)?;
            }
        }
    }
    Ok(())
}
