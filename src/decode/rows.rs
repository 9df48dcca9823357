//! The row loop: splits a rows event's body into per-column cells (offset/length into the
//! event bytes) without copying or allocating per row. Values are rendered later, by the sinks
//! that need them ([`super::value`]).

use super::table::{ColKind, TableSchema};
use super::DecodeError;
use crate::binlog::event_type as et;
use std::io::Read;

/// One column of one row image: a byte range of [`RowsChunk::data`], or NULL, or absent
/// (the column is not part of this image).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub start: u32,
    pub len: u32,
}

impl Cell {
    pub const NULL: Cell = Cell {
        start: 0,
        len: u32::MAX - 1,
    };
    pub const ABSENT: Cell = Cell {
        start: 0,
        len: u32::MAX,
    };
    pub fn is_null(self) -> bool {
        self.len == u32::MAX - 1
    }
    pub fn is_absent(self) -> bool {
        self.len == u32::MAX
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    Delete,
    /// A table's rows were removed or replaced without row events (TRUNCATE, DROP TABLE,
    /// partition operations, RENAME): one change per table, no images.
    Truncate,
    /// A snapshot read (`src/snapshot/`): a row as it is in the table, after image only.
    /// `last`: the chunk holding the table's last read event(s) (`source.snapshot` is `"last"`
    /// instead of `"true"`).
    Read {
        last: bool,
    },
}

impl Op {
    pub fn code(self) -> &'static str {
        match self {
            Op::Insert => "c",
            Op::Update => "u",
            Op::Delete => "d",
            Op::Truncate => "t",
            Op::Read { .. } => "r",
        }
    }
}

/// The kind of rows event, from its type code.
#[derive(Debug, Clone, Copy)]
pub struct RowsEventKind {
    pub op: Op,
    /// v2 events carry an extra-data block after the flags.
    pub v2: bool,
    /// MariaDB compressed rows events (166..=171): the rows part is zlib-compressed.
    pub compressed: bool,
    /// MySQL PARTIAL_UPDATE_ROWS_EVENT (binlog_row_value_options=PARTIAL_JSON).
    pub partial: bool,
}

impl RowsEventKind {
    pub fn from_type(t: u8) -> Option<RowsEventKind> {
        let k = |op, v2, compressed, partial| {
            Some(RowsEventKind {
                op,
                v2,
                compressed,
                partial,
            })
        };
        match t {
            et::WRITE_ROWS_V1 => k(Op::Insert, false, false, false),
            et::UPDATE_ROWS_V1 => k(Op::Update, false, false, false),
            et::DELETE_ROWS_V1 => k(Op::Delete, false, false, false),
            et::WRITE_ROWS => k(Op::Insert, true, false, false),
            et::UPDATE_ROWS => k(Op::Update, true, false, false),
            et::DELETE_ROWS => k(Op::Delete, true, false, false),
            et::PARTIAL_UPDATE_ROWS => k(Op::Update, true, false, true),
            et::MARIADB_WRITE_ROWS_COMPRESSED_V1 => k(Op::Insert, false, true, false),
            et::MARIADB_UPDATE_ROWS_COMPRESSED_V1 => k(Op::Update, false, true, false),
            et::MARIADB_DELETE_ROWS_COMPRESSED_V1 => k(Op::Delete, false, true, false),
            et::MARIADB_WRITE_ROWS_COMPRESSED => k(Op::Insert, true, true, false),
            et::MARIADB_UPDATE_ROWS_COMPRESSED => k(Op::Update, true, true, false),
            et::MARIADB_DELETE_ROWS_COMPRESSED => k(Op::Delete, true, true, false),
            _ => None,
        }
    }
}

/// The bytes a chunk's cells index into: the rows part of the binlog event itself, shared
/// with it rather than copied (`Event`: the event and where its rows part starts), or bytes of
/// their own (a decompressed rows event, a snapshot read, a truncate).
#[derive(Debug, Clone)]
pub enum ChunkData {
    Owned(Vec<u8>),
    Event(std::sync::Arc<mysql_common::binlog::events::Event>, usize),
}

impl std::ops::Deref for ChunkData {
    type Target = [u8];
    #[inline]
    fn deref(&self) -> &[u8] {
        match self {
            ChunkData::Owned(v) => v,
            ChunkData::Event(e, at) => e.data().get(*at..).unwrap_or_default(),
        }
    }
}

impl From<Vec<u8>> for ChunkData {
    fn from(v: Vec<u8>) -> Self {
        ChunkData::Owned(v)
    }
}

impl Default for ChunkData {
    fn default() -> Self {
        ChunkData::Owned(Vec::new())
    }
}

/// The decoded rows of one rows event.
#[derive(Debug)]
pub struct RowsChunk {
    pub table: std::sync::Arc<TableSchema>,
    pub op: Op,
    /// The rows part of the event (decompressed where needed). Cells index into it.
    pub data: ChunkData,
    /// `rows × images × columns` cells, images = 2 for updates (before, after), else 1.
    pub cells: Vec<Cell>,
    pub rows: u32,
    /// For JSON columns of a partial update: which after-image cells hold a binary diff.
    pub partial_json: Vec<(u32, u16)>,
    /// Binlog file, start offset of the event (the transaction payload's, for compressed
    /// MySQL transactions) and the index of this chunk's first row in that event.
    pub pos: u64,
    pub first_row: u32,
    /// Server id and timestamp (ms) from the event header.
    pub server_id: u32,
    pub ts_ms: u64,
    /// Set by [`super::validate::check_chunk`]: every text value is valid in its character set,
    /// so rendering need not check UTF-8 again.
    pub text_checked: bool,
}

impl RowsChunk {
    /// Cells of the before image of row `r` (updates and deletes).
    pub fn before(&self, r: usize) -> Option<&[Cell]> {
        let n = self.table.columns.len();
        match self.op {
            Op::Insert | Op::Truncate | Op::Read { .. } => None,
            Op::Update => Some(&self.cells[2 * r * n..(2 * r + 1) * n]),
            Op::Delete => Some(&self.cells[r * n..(r + 1) * n]),
        }
    }

    /// Cells of the after image of row `r` (inserts and updates).
    pub fn after(&self, r: usize) -> Option<&[Cell]> {
        let n = self.table.columns.len();
        match self.op {
            Op::Delete | Op::Truncate => None,
            Op::Update => Some(&self.cells[(2 * r + 1) * n..(2 * r + 2) * n]),
            Op::Insert | Op::Read { .. } => Some(&self.cells[r * n..(r + 1) * n]),
        }
    }

    pub fn bytes(&self) -> usize {
        self.data.len() + self.cells.len() * std::mem::size_of::<Cell>()
    }

    /// `true` when the after-image cell `col` of row `r` is a partial JSON diff.
    pub fn is_partial(&self, r: usize, col: usize) -> bool {
        !self.partial_json.is_empty()
            && self
                .partial_json
                .binary_search(&(r as u32, col as u16))
                .is_ok()
    }
}

/// Reads a little-endian unsigned integer of `n` bytes.
#[inline]
pub(crate) fn le_uint(b: &[u8]) -> u64 {
    let mut v = 0u64;
    for (i, &x) in b.iter().enumerate().take(8) {
        v |= (x as u64) << (8 * i);
    }
    v
}

fn lenenc(buf: &[u8], p: &mut usize) -> Option<u64> {
    let first = *buf.get(*p)?;
    *p += 1;
    let n = match first {
        0..=250 => return Some(first as u64),
        0xfc => 2,
        0xfd => 3,
        0xfe => 8,
        _ => return None,
    };
    let v = le_uint(buf.get(*p..*p + n)?);
    *p += n;
    Some(v)
}

/// Bytes of a stored DECIMAL digit group of `d` digits.
pub(crate) const DIG2BYTES: [usize; 10] = [0, 1, 1, 2, 2, 3, 3, 4, 4, 4];

pub(crate) fn decimal_bin_size(precision: u8, scale: u8) -> usize {
    // saturating: a scale above the precision is rejected by the callers, never an overflow
    let intg = precision.saturating_sub(scale) as usize;
    let s = scale as usize;
    (intg / 9) * 4 + DIG2BYTES[intg % 9] + (s / 9) * 4 + DIG2BYTES[s % 9]
}

/// Byte length of a fixed-size value (`None` for length-prefixed kinds).
#[inline]
pub(crate) fn fixed_size(kind: ColKind) -> Option<usize> {
    Some(match kind {
        ColKind::Int(n) => n as usize,
        ColKind::Year => 1,
        ColKind::Float => 4,
        ColKind::Double => 8,
        ColKind::Decimal { precision, scale } => decimal_bin_size(precision, scale),
        ColKind::Date | ColKind::TimeOld => 3,
        ColKind::Time2 { fsp } => 3 + (fsp as usize).div_ceil(2),
        ColKind::DateTimeOld => 8,
        ColKind::DateTime2 { fsp } => 5 + (fsp as usize).div_ceil(2),
        ColKind::TimestampOld => 4,
        ColKind::Timestamp2 { fsp } => 4 + (fsp as usize).div_ceil(2),
        ColKind::Enum { bytes } | ColKind::Set { bytes } => bytes as usize,
        ColKind::Bit { bits } => (bits as usize).div_ceil(8),
        ColKind::Str { .. }
        | ColKind::Blob { .. }
        | ColKind::Json { .. }
        | ColKind::Geometry { .. }
        | ColKind::Vector { .. } => return None,
    })
}

/// The most zlib can expand (deflate's maximum ratio is 1032:1).
const MAX_ZLIB_RATIO: usize = 1032;
/// The buffer for inflated data starts at most this large and grows as data arrives.
const INITIAL_INFLATE_CAPACITY: usize = 1 << 20;

/// Decompresses a MariaDB compressed rows part: `0x80|lenlen`, big-endian length, zlib stream.
pub fn mariadb_uncompress(comp: &[u8]) -> Result<Vec<u8>, String> {
    let first = *comp.first().ok_or("empty compressed rows")?;
    if first & 0xe0 != 0x80 {
        return Err(format!("bad compression header byte 0x{first:02x}"));
    }
    let lenlen = (first & 7) as usize;
    if lenlen == 0 || lenlen > 4 || comp.len() < 1 + lenlen {
        return Err("bad compressed length field".into());
    }
    let mut ulen = 0usize;
    for &b in &comp[1..1 + lenlen] {
        ulen = (ulen << 8) | b as usize;
    }
    if ulen > 1 << 30 {
        return Err(format!("uncompressed length {ulen} exceeds 1 GiB"));
    }
    // zlib cannot expand more than 1032:1: a larger claim is a corrupt header, refused before
    // allocating; the buffer then grows with the data actually inflated.
    let zlen = comp.len() - 1 - lenlen;
    if ulen > zlen.saturating_mul(MAX_ZLIB_RATIO) {
        return Err(format!(
            "header says {ulen} bytes uncompressed, more than {zlen} compressed bytes can hold"
        ));
    }
    let mut out = Vec::with_capacity(ulen.min(INITIAL_INFLATE_CAPACITY));
    flate2::read::ZlibDecoder::new(&comp[1 + lenlen..])
        .take(ulen as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("zlib: {e}"))?;
    if out.len() != ulen {
        return Err(format!(
            "decompressed {} bytes, header says {ulen}",
            out.len()
        ));
    }
    Ok(out)
}

/// Parsed rows-event header: table id, present-column bitmaps, offset of the rows part.
pub struct RowsHeader {
    pub table_id: u64,
    pub ncols: usize,
    pub present_before: Vec<u8>,
    pub present_after: Vec<u8>,
    pub rows_offset: usize,
}

pub fn parse_rows_header(
    kind: RowsEventKind,
    body: &[u8],
    post_header_len: usize,
) -> Result<RowsHeader, String> {
    let id_len = if post_header_len == 6 { 4 } else { 6 };
    let mut p = 0usize;
    let table_id = le_uint(body.get(..id_len).ok_or("truncated table id")?);
    p += id_len;
    // flags (end of statement, foreign-key/unique checks off): nothing binlogd needs
    body.get(p..p + 2).ok_or("truncated flags")?;
    p += 2;
    if kind.v2 {
        let extra = le_uint(body.get(p..p + 2).ok_or("truncated extra-data length")?) as usize;
        if extra < 2 {
            return Err(format!("bad extra-data length {extra}"));
        }
        p += extra;
    }
    let ncols = lenenc(body, &mut p).ok_or("truncated column count")? as usize;
    let bm = ncols.div_ceil(8);
    let present_before = body
        .get(p..p + bm)
        .ok_or("truncated column bitmap")?
        .to_vec();
    p += bm;
    let present_after = if kind.op == Op::Update {
        let v = body
            .get(p..p + bm)
            .ok_or("truncated after-image bitmap")?
            .to_vec();
        p += bm;
        v
    } else {
        present_before.clone()
    };
    Ok(RowsHeader {
        table_id,
        ncols,
        present_before,
        present_after,
        rows_offset: p,
    })
}

fn bit(bm: &[u8], i: usize) -> bool {
    bm[i / 8] & (1 << (i % 8)) != 0
}

/// How a column's value is laid out in a row image, worked out once per rows event instead of
/// once per value (issue 16: `read_image` 56.3M -> 50.0M instructions on 60 MB of the wide
/// workload).
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Always this many bytes.
    Fixed(u32),
    /// A little-endian length of this many bytes, then the value.
    Prefixed(u8),
    /// A kind whose length the image cannot tell (not written by a server).
    Unknown,
}

impl Layout {
    fn of(kind: ColKind) -> Layout {
        if let Some(n) = fixed_size(kind) {
            return Layout::Fixed(n as u32);
        }
        match kind {
            ColKind::Str { len_bytes }
            | ColKind::Blob { len_bytes }
            | ColKind::Json { len_bytes }
            | ColKind::Geometry { len_bytes }
            | ColKind::Vector { len_bytes } => Layout::Prefixed(len_bytes),
            _ => Layout::Unknown,
        }
    }
}

/// Splits one row image starting at `*p`, pushing one cell per table column (`layouts`: one
/// per column, [`Layout::of`] its kind).
fn read_image(
    t: &TableSchema,
    layouts: &[Layout],
    present: &[u8],
    npresent: usize,
    data: &[u8],
    p: &mut usize,
    cells: &mut Vec<Cell>,
) -> Result<(), String> {
    let nb = npresent.div_ceil(8);
    let nulls = data
        .get(*p..*p + nb)
        .ok_or_else(|| "truncated NULL bitmap".to_string())?;
    *p += nb;
    let mut k = 0usize;
    for (i, (col, &layout)) in t.columns.iter().zip(layouts).enumerate() {
        if !bit(present, i) {
            cells.push(Cell::ABSENT);
            continue;
        }
        let is_null = nulls[k / 8] & (1 << (k % 8)) != 0;
        k += 1;
        if is_null {
            cells.push(Cell::NULL);
            continue;
        }
        let (pre, len) = match layout {
            Layout::Fixed(n) => (0, n as usize),
            Layout::Prefixed(lb) => {
                let lb = lb as usize;
                let b = data
                    .get(*p..*p + lb)
                    .ok_or_else(|| format!("truncated value of column {}", col.name))?;
                (lb, le_uint(b) as usize)
            }
            Layout::Unknown => return Err(format!("truncated value of column {}", col.name)),
        };
        let left = data.len() - *p;
        if left < pre + len {
            return Err(format!(
                "value of column {} needs {} bytes, {} left",
                col.name,
                pre + len,
                left
            ));
        }
        let start = *p + pre;
        if start + len > u32::MAX as usize - 2 {
            return Err("rows event larger than 4 GiB".into());
        }
        cells.push(Cell {
            start: start as u32,
            len: len as u32,
        });
        *p = start + len;
    }
    Ok(())
}

/// Splits the rows part `data` into cells. For partial updates, the after image's JSON columns
/// flagged in the partial bitmap hold binary diffs; they are recorded in `partial_json`.
pub fn split_rows(
    t: &TableSchema,
    op: Op,
    partial: bool,
    hdr: &RowsHeader,
    data: &[u8],
    cells: &mut Vec<Cell>,
    partial_json: &mut Vec<(u32, u16)>,
) -> Result<u32, DecodeError> {
    let ncols = t.columns.len();
    if hdr.ncols != ncols {
        return Err(DecodeError::Malformed(format!(
            "rows event for {}.{} has {} columns, its TABLE_MAP {}",
            t.db, t.table, hdr.ncols, ncols
        )));
    }
    let count = |bm: &[u8]| (0..ncols).filter(|&i| bit(bm, i)).count();
    let nb = count(&hdr.present_before);
    let na = count(&hdr.present_after);
    let json_cols: Vec<usize> = if partial {
        t.columns
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.kind, ColKind::Json { .. }))
            .map(|(i, _)| i)
            .collect()
    } else {
        Vec::new()
    };
    let layouts: Vec<Layout> = t.columns.iter().map(|c| Layout::of(c.kind)).collect();
    let mut p = 0usize;
    let mut rows = 0u32;
    let m = |e: String| DecodeError::Malformed(format!("{}.{}: {e}", t.db, t.table));
    while p < data.len() {
        let row_start = p;
        match op {
            Op::Insert | Op::Read { .. } => {
                read_image(t, &layouts, &hdr.present_after, na, data, &mut p, cells).map_err(m)?
            }
            Op::Delete => {
                read_image(t, &layouts, &hdr.present_before, nb, data, &mut p, cells).map_err(m)?
            }
            Op::Truncate => return Err(m("a rows event cannot be a truncate".into())),
            Op::Update => {
                read_image(t, &layouts, &hdr.present_before, nb, data, &mut p, cells).map_err(m)?;
                if partial {
                    // value_options (lenenc) then, if PARTIAL_JSON_UPDATES, one bit per JSON column.
                    let opts =
                        lenenc(data, &mut p).ok_or_else(|| m("truncated value_options".into()))?;
                    if opts & 1 != 0 && !json_cols.is_empty() {
                        let bl = json_cols.len().div_ceil(8);
                        let bm = data
                            .get(p..p + bl)
                            .ok_or_else(|| m("truncated partial bitmap".into()))?;
                        for (j, &ci) in json_cols.iter().enumerate() {
                            if bit(bm, j) {
                                partial_json.push((rows, ci as u16));
                            }
                        }
                        p += bl;
                    }
                }
                read_image(t, &layouts, &hdr.present_after, na, data, &mut p, cells).map_err(m)?;
            }
        }
        if p == row_start {
            // A row image with no present column takes no bytes: the rest of the event would
            // repeat it forever (an endless loop filling memory with cells).
            return Err(m(format!(
                "row {rows} takes no bytes (no column is present in its image); {} bytes left",
                data.len() - p
            )));
        }
        rows = rows
            .checked_add(1)
            .ok_or_else(|| m("more than 4G rows in one event".into()))?;
    }
    Ok(rows)
}
