//! Binlog files on disk (`binlogd replay --binlog-file`): splits a file into events.
//!
//! mysql_common's `BinlogFile` trusts the event size in each header: a truncated or corrupt
//! file makes it panic (`read_exact(..).unwrap()`, and a checksum slice below zero) or
//! allocate whatever the header claims. This reader checks the framing first (size within
//! bounds, the whole event present, the end position in the header agreeing with the file
//! offset) and hands mysql_common only complete, in-memory events. Every error names the file
//! and the byte offset of the event.

use crate::binlog::event_type::{FORMAT_DESCRIPTION, TRANSACTION_PAYLOAD};
use mysql_common::binlog::consts::{BinlogChecksumAlg, BinlogVersion};
use mysql_common::binlog::events::{Event, TransactionPayloadEvent};
use mysql_common::binlog::EventStreamReader;
use std::collections::VecDeque;
use std::io::{BufRead, Read};

use crate::decode::DecodeError;

/// Bytes of the common event header.
const HEADER_LEN: usize = 19;
/// The largest event binlogd accepts: the server's packet limit (1 GiB) plus headers.
pub const MAX_EVENT_BYTES: u64 = (1 << 30) + (1 << 16);
/// Buffers for an event start at most this large and grow as the bytes arrive, so a corrupt
/// size in a header does not allocate what it claims.
const INITIAL_CAPACITY: usize = 1 << 20;
const MAGIC: [u8; 4] = [0xfe, b'b', b'i', b'n'];

pub struct BinlogFileReader<R> {
    name: String,
    input: R,
    esr: EventStreamReader,
    /// Offset of the next event in the file.
    pos: u64,
    /// Events unpacked from a TRANSACTION_PAYLOAD, not handed out yet.
    inner: VecDeque<Event>,
}

impl<R: BufRead> BinlogFileReader<R> {
    /// Checks the file magic. `name` is used in errors.
    pub fn new(name: &str, mut input: R) -> Result<Self, DecodeError> {
        let mut magic = [0u8; 4];
        let n = read_full(&mut input, &mut magic).map_err(|e| framing(name, 0, e.to_string()))?;
        if n < 4 || magic != MAGIC {
            return Err(framing(
                name,
                0,
                "not a binlog file (no 0xfe 'bin' magic)".into(),
            ));
        }
        Ok(BinlogFileReader {
            name: name.to_string(),
            input,
            esr: EventStreamReader::new(BinlogVersion::Version4),
            pos: 4,
            inner: VecDeque::new(),
        })
    }

    /// Offset of the next event in the file.
    pub fn pos(&self) -> u64 {
        self.pos
    }

    fn err(&self, pos: u64, message: String) -> DecodeError {
        framing(&self.name, pos, message)
    }

    /// The next event: `Ok(None)` at the end of the file. Events inside a MySQL
    /// TRANSACTION_PAYLOAD come right after the payload event itself.
    pub fn next_event(&mut self) -> Result<Option<Event>, DecodeError> {
        if let Some(e) = self.inner.pop_front() {
            return Ok(Some(e));
        }
        let at = self.pos;
        let mut header = [0u8; HEADER_LEN];
        let n = read_full(&mut self.input, &mut header).map_err(|e| self.err(at, e.to_string()))?;
        if n == 0 {
            return Ok(None);
        }
        if n < HEADER_LEN {
            return Err(self.err(
                at,
                format!("truncated event header ({n} of {HEADER_LEN} bytes; the file ends there)"),
            ));
        }
        let event_type = header[4];
        let size = u32::from_le_bytes([header[9], header[10], header[11], header[12]]) as u64;
        let log_pos = u32::from_le_bytes([header[13], header[14], header[15], header[16]]) as u64;
        let min = self.min_event_len(event_type) as u64;
        if size < min || size > MAX_EVENT_BYTES {
            return Err(self.err(
                at,
                format!("event type {event_type}: corrupt header: event size {size} (must be {min}..={MAX_EVENT_BYTES})"),
            ));
        }
        // In a binlog file the header's end position is the offset after the event (0 in
        // some events written outside the file, e.g. by old relay logs); anything else is a
        // corrupt header, and trusting its size would misread every event after it.
        if log_pos != 0 && log_pos != at + size {
            return Err(self.err(
                at,
                format!(
                    "event type {event_type}: corrupt header: says it ends at {log_pos}, but its size {size} ends it at {}",
                    at + size
                ),
            ));
        }
        // A file has one FORMAT_DESCRIPTION, at offset 4; another one would silently change
        // how every later event is read (e.g. turn checksum verification off).
        if event_type == FORMAT_DESCRIPTION && at != 4 {
            return Err(self.err(
                at,
                "corrupt header: a FORMAT_DESCRIPTION event after the start of the file".into(),
            ));
        }
        let mut buf = Vec::with_capacity((size as usize).min(INITIAL_CAPACITY));
        buf.extend_from_slice(&header);
        (&mut self.input)
            .take(size - HEADER_LEN as u64)
            .read_to_end(&mut buf)
            .map_err(|e| self.err(at, e.to_string()))?;
        if (buf.len() as u64) < size {
            return Err(self.err(
                at,
                format!(
                    "event type {event_type}: truncated: the event takes {size} bytes, the file ends after {}",
                    buf.len()
                ),
            ));
        }
        self.pos = at + size;
        let ev = self
            .esr
            .read(&buf[..])
            .map_err(|e| self.err(at, format!("event type {event_type}: {e}")))?
            .ok_or_else(|| self.err(at, "empty event".into()))?;
        if event_type == TRANSACTION_PAYLOAD {
            self.unpack_payload(&ev, at)?;
        }
        Ok(Some(ev))
    }

    /// The smallest valid event of this type under the current FORMAT_DESCRIPTION: the header
    /// plus the checksum when events are checksummed (mysql_common slices it off unchecked).
    fn min_event_len(&self, event_type: u8) -> usize {
        if event_type == FORMAT_DESCRIPTION {
            return HEADER_LEN;
        }
        match self.esr.get_fde().footer().get_checksum_alg() {
            Ok(None) | Ok(Some(BinlogChecksumAlg::BINLOG_CHECKSUM_ALG_OFF)) => HEADER_LEN,
            _ => HEADER_LEN + 4,
        }
    }

    /// Decompresses a MySQL TRANSACTION_PAYLOAD and splits its inner events (which carry no
    /// checksums) with the same framing checks.
    fn unpack_payload(&mut self, ev: &Event, at: u64) -> Result<(), DecodeError> {
        let err = |m: String| framing(&self.name, at, format!("TRANSACTION_PAYLOAD: {m}"));
        crate::decode::transaction_payload_fits(ev.data()).map_err(&err)?;
        let tpe: TransactionPayloadEvent<'_> = ev.read_event().map_err(|e| err(e.to_string()))?;
        let want = tpe.uncompressed_size();
        if want > MAX_EVENT_BYTES.saturating_mul(4) {
            return Err(err(format!("uncompressed size {want} is implausible")));
        }
        let reader = tpe.decompressed().map_err(|e| err(e.to_string()))?;
        let mut data = Vec::with_capacity((want as usize).min(INITIAL_CAPACITY));
        reader
            .take(want + 1)
            .read_to_end(&mut data)
            .map_err(|e| err(format!("decompression: {e}")))?;
        if data.len() as u64 != want {
            return Err(err(format!(
                "decompressed {} bytes, the event says {want}",
                data.len()
            )));
        }
        let mut off = 0usize;
        while off < data.len() {
            let h = data
                .get(off..off + HEADER_LEN)
                .ok_or_else(|| err(format!("truncated inner event header at offset {off}")))?;
            let size = u32::from_le_bytes([h[9], h[10], h[11], h[12]]) as usize;
            if size < HEADER_LEN || off + size > data.len() {
                return Err(err(format!(
                    "inner event at offset {off}: size {size} does not fit the {} bytes left",
                    data.len() - off
                )));
            }
            let inner = self
                .esr
                .read_decompressed(&data[off..off + size])
                .map_err(|e| err(format!("inner event at offset {off}: {e}")))?
                .ok_or_else(|| err(format!("inner event at offset {off}: empty")))?;
            self.inner.push_back(inner);
            off += size;
        }
        Ok(())
    }
}

fn framing(file: &str, pos: u64, message: String) -> DecodeError {
    DecodeError::Framing {
        file: file.to_string(),
        pos,
        message,
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match input.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
