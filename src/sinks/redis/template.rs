//! Key templates: `"user:{id}"`, `"user:{tenant}:{id}"`. `{column}` is replaced by the
//! column's value rendered as in the event format (numbers as written, DECIMAL as its exact
//! string, strings unquoted, binary as base64); `{{` and `}}` are literal braces, so a Redis
//! hash tag around a value is `"user:{{{id}}}"` → `user:{42}`.

use crate::decode::rows::{Cell, RowsChunk};
use crate::decode::table::TableSchema;
use crate::decode::value::push_value;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Col(String),
}

/// A parsed template, not yet bound to a table.
#[derive(Debug, Clone)]
pub struct KeyTemplate {
    pub text: String,
    parts: Vec<Part>,
}

/// A template bound to one table schema: column names resolved to indices.
#[derive(Debug, Clone)]
pub struct BoundTemplate {
    parts: Vec<BoundPart>,
}

#[derive(Debug, Clone)]
enum BoundPart {
    Lit(Box<[u8]>),
    Col(usize),
}

/// Why a key could not be rendered for one row.
#[derive(Debug, PartialEq)]
pub enum RenderSkip {
    /// A template column is NULL in this image: the key does not exist; skip it.
    Null,
}

impl KeyTemplate {
    pub fn parse(text: &str) -> Result<KeyTemplate, String> {
        if text.is_empty() {
            return Err("key template is empty".into());
        }
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut it = text.chars().peekable();
        while let Some(c) = it.next() {
            match c {
                '{' if it.peek() == Some(&'{') => {
                    it.next();
                    lit.push('{');
                }
                '}' if it.peek() == Some(&'}') => {
                    it.next();
                    lit.push('}');
                }
                '{' => {
                    let mut col = String::new();
                    loop {
                        match it.next() {
                            Some('}') => break,
                            Some('{') | None => {
                                return Err(format!(
                                    "key template {text:?}: unclosed '{{'; write {{column}}, or {{{{ for a literal brace"
                                ))
                            }
                            Some(ch) => col.push(ch),
                        }
                    }
                    if col.trim().is_empty() {
                        return Err(format!(
                            "key template {text:?}: empty {{}}; name a column, e.g. {{id}}"
                        ));
                    }
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Col(col));
                }
                '}' => {
                    return Err(format!(
                        "key template {text:?}: unmatched '}}'; write }}}} for a literal brace"
                    ))
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(KeyTemplate {
            text: text.to_string(),
            parts,
        })
    }

    /// The key itself when the template names no column (e.g. `"users:count"`).
    pub fn literal(&self) -> Option<&str> {
        match self.parts.as_slice() {
            [Part::Lit(l)] => Some(l),
            _ => None,
        }
    }

    /// Columns the template names, in order.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Col(c) => Some(c.as_str()),
            Part::Lit(_) => None,
        })
    }

    /// Resolves column names against `table`; the error names the template, table and column.
    pub fn bind(&self, table: &TableSchema) -> Result<BoundTemplate, String> {
        let mut parts = Vec::with_capacity(self.parts.len());
        for p in &self.parts {
            parts.push(match p {
                Part::Lit(s) => BoundPart::Lit(s.as_bytes().into()),
                Part::Col(c) => {
                    let i = table
                        .columns
                        .iter()
                        .position(|col| col.name == *c)
                        .ok_or_else(|| {
                            let known: Vec<&str> =
                                table.columns.iter().map(|c| c.name.as_str()).collect();
                            format!(
                                "key template {:?} names column {c:?}, which table {}.{} does not have (columns: {}); fix the template or the rule's table pattern",
                                self.text,
                                table.db,
                                table.table,
                                known.join(", ")
                            )
                        })?;
                    BoundPart::Col(i)
                }
            });
        }
        Ok(BoundTemplate { parts })
    }
}

impl BoundTemplate {
    /// Renders the key for one row image into `out` (cleared first). `scratch` is reused.
    pub fn render(
        &self,
        chunk: &RowsChunk,
        image: &[Cell],
        partial_after: Option<usize>,
        out: &mut Vec<u8>,
        scratch: &mut Vec<u8>,
    ) -> Result<Result<(), RenderSkip>, String> {
        out.clear();
        for p in &self.parts {
            match p {
                BoundPart::Lit(s) => out.extend_from_slice(s),
                BoundPart::Col(i) => {
                    let cell = image[*i];
                    let col = &chunk.table.columns[*i];
                    if cell.is_null() {
                        return Ok(Err(RenderSkip::Null));
                    }
                    if cell.is_absent() {
                        return Err(format!(
                            "column {} of {}.{} is missing from the row image; set binlog_row_image=FULL on the server",
                            col.name, chunk.table.db, chunk.table.table
                        ));
                    }
                    if partial_after.is_some_and(|r| chunk.is_partial(r, *i)) {
                        return Err(format!(
                            "column {} of {}.{} is a partial JSON update; key templates cannot use it (set binlog_row_value_options='' or key on another column)",
                            col.name, chunk.table.db, chunk.table.table
                        ));
                    }
                    let v = &chunk.data[cell.start as usize..(cell.start + cell.len) as usize];
                    scratch.clear();
                    push_value(scratch, col, v).map_err(|e| {
                        format!(
                            "column {} of {}.{}: {e}",
                            col.name, chunk.table.db, chunk.table.table
                        )
                    })?;
                    if scratch.first() == Some(&b'"') {
                        // a JSON string: the key holds its text, unquoted and unescaped
                        let s: String = serde_json::from_slice(scratch)
                            .map_err(|e| format!("column {}: {e}", col.name))?;
                        out.extend_from_slice(s.as_bytes());
                    } else {
                        out.extend_from_slice(scratch);
                    }
                }
            }
        }
        Ok(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_templates() {
        let t = KeyTemplate::parse("user:{tenant}:{id}").unwrap();
        assert_eq!(t.columns().collect::<Vec<_>>(), vec!["tenant", "id"]);
        let t = KeyTemplate::parse("users:list").unwrap();
        assert_eq!(t.columns().count(), 0);
        let t = KeyTemplate::parse("user:{{{id}}}").unwrap();
        assert_eq!(
            t.parts,
            vec![
                Part::Lit("user:{".into()),
                Part::Col("id".into()),
                Part::Lit("}".into())
            ]
        );
        for bad in ["", "user:{id", "user:{}", "user:id}", "a{b{c}}"] {
            assert!(KeyTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
