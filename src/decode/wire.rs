//! Wire guards: checks that an event's body is as long as its own fields say, run before
//! mysql_common parses it (mysql_common trusts those lengths and can panic or over-allocate on
//! a malformed event), and the fake ROTATE's trailing CRC.

use mysql_common::binlog::events::Event;

/// The first (fake) ROTATE arrives before the FORMAT_DESCRIPTION event, so its trailing CRC32
/// was not recognised as a checksum and sits at the end of the file name: detect it by checking.
pub(crate) fn fake_rotate_has_crc(ev: &Event) -> bool {
    let h = ev.header();
    let d = ev.data();
    if d.len() < 4 {
        return false;
    }
    let mut hdr = Vec::with_capacity(19);
    hdr.extend(h.timestamp().to_le_bytes());
    hdr.push(h.event_type_raw());
    hdr.extend(h.server_id().to_le_bytes());
    hdr.extend(h.event_size().to_le_bytes());
    hdr.extend(h.log_pos().to_le_bytes());
    hdr.extend(h.flags_raw().to_le_bytes());
    let mut c = crc32fast::Hasher::new();
    c.update(&hdr);
    c.update(&d[..d.len() - 4]);
    c.finalize()
        == u32::from_le_bytes([
            d[d.len() - 4],
            d[d.len() - 3],
            d[d.len() - 2],
            d[d.len() - 1],
        ])
}

/// Checks the counts in a PREVIOUS_GTIDS body against its length before mysql_common parses it:
/// mysql_common reserves `n_sids` and `n_intervals` entries up front, so a corrupt count would
/// ask for petabytes and abort the process.
pub(crate) fn previous_gtids_fits(d: &[u8]) -> Result<(), String> {
    let bad = |what: &str| {
        format!(
            "PREVIOUS_GTIDS event: {what} does not fit in its {} bytes",
            d.len()
        )
    };
    let u64_at = |p: usize| -> Option<u64> {
        d.get(p..p + 8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_le_bytes)
    };
    let header = u64_at(0).ok_or_else(|| bad("the header"))?;
    let tagged = (header >> 56) != 0;
    let n_sids = if tagged {
        (header >> 8) & ((1u64 << 48) - 1)
    } else {
        header & ((1u64 << 56) - 1)
    };
    // every sid takes at least 24 bytes (uuid + interval count)
    if n_sids > (d.len() as u64 - 8) / 24 {
        return Err(bad(&format!("a count of {n_sids} GTID sources")));
    }
    let mut p = 8usize;
    for _ in 0..n_sids {
        p = p.checked_add(16).ok_or_else(|| bad("a uuid"))?;
        if tagged {
            // MySQL's variable-length integer: the trailing ones of the first byte say how
            // many more bytes follow (0xFF: 8 more)
            let first = *d.get(p).ok_or_else(|| bad("a tag length"))?;
            let ones = first.trailing_ones() as usize;
            let (len, tag_len) = if ones == 8 {
                (9, u64_at(p + 1).ok_or_else(|| bad("a tag length"))?)
            } else {
                let n = ones + 1;
                let b = d.get(p..p + n).ok_or_else(|| bad("a tag length"))?;
                let mut raw = [0u8; 8];
                raw[..n].copy_from_slice(b);
                (n, u64::from_le_bytes(raw) >> n)
            };
            let tag_len = usize::try_from(tag_len).map_err(|_| bad("a tag"))?;
            p = p
                .checked_add(len)
                .and_then(|p| p.checked_add(tag_len))
                .filter(|p| *p <= d.len())
                .ok_or_else(|| bad("a tag"))?;
        }
        let n_intervals = u64_at(p).ok_or_else(|| bad("an interval count"))?;
        p += 8;
        let room = (d.len().saturating_sub(p) / 16) as u64;
        if n_intervals > room {
            return Err(bad(&format!("a count of {n_intervals} GTID intervals")));
        }
        p += n_intervals as usize * 16;
    }
    Ok(())
}

/// Checks a TRANSACTION_PAYLOAD header before mysql_common parses it: mysql_common skips unknown
/// fields by their claimed length and unwraps the compression type, panicking on bad values.
pub(crate) fn transaction_payload_fits(d: &[u8]) -> Result<(), String> {
    let bad = |what: &str| {
        format!(
            "TRANSACTION_PAYLOAD event: {what} in its {}-byte header",
            d.len()
        )
    };
    let lenenc = |p: &mut usize| -> Result<u64, String> {
        let first = *d.get(*p).ok_or_else(|| bad("a truncated field"))?;
        *p += 1;
        let n = match first {
            0..=0xfa => return Ok(first as u64),
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            _ => {
                return Err(bad(&format!(
                    "an invalid length-encoded integer (0x{first:02x})"
                )))
            }
        };
        let b = d.get(*p..*p + n).ok_or_else(|| bad("a truncated field"))?;
        *p += n;
        let mut raw = [0u8; 8];
        raw[..n].copy_from_slice(b);
        Ok(u64::from_le_bytes(raw))
    };
    let mut p = 0usize;
    while p < d.len() {
        let field = lenenc(&mut p)?;
        if field == 0 {
            return Ok(()); // end of the header; mysql_common checks the payload size
        }
        let len = lenenc(&mut p)?;
        match field {
            1 | 3 => {
                lenenc(&mut p)?;
            }
            2 => {
                let alg = lenenc(&mut p)?;
                if alg != 0 && alg != 255 {
                    return Err(bad(&format!("an unknown compression type {alg}")));
                }
            }
            _ => {
                p = usize::try_from(len)
                    .ok()
                    .and_then(|l| p.checked_add(l))
                    .filter(|e| *e <= d.len())
                    .ok_or_else(|| bad(&format!("field {field} of {len} bytes")))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod transaction_payload_tests {
    use super::transaction_payload_fits;

    #[test]
    fn header_fields_must_fit() {
        // compression NONE, payload size 3, end mark, payload
        assert!(transaction_payload_fits(&[2, 3, 0xfc, 0xff, 0x00, 1, 1, 3, 0, 9, 9, 9]).is_ok());
        assert!(transaction_payload_fits(&[2, 1, 0, 3, 1, 5, 1, 1, 3, 0, 9, 9, 9]).is_ok());
        // an unknown compression type (mysql_common unwraps it)
        assert!(transaction_payload_fits(&[2, 1, 7, 1, 1, 3, 0])
            .unwrap_err()
            .contains("compression type 7"));
        // an unknown field longer than the event (mysql_common slices past the end)
        assert!(transaction_payload_fits(&[9, 73, 1, 2])
            .unwrap_err()
            .contains("field 9"));
        assert!(transaction_payload_fits(&[1, 0xfe, 1]).is_err());
        assert!(transaction_payload_fits(&[0xff]).is_err());
    }
}

#[cfg(test)]
mod previous_gtids_tests {
    use super::previous_gtids_fits;

    fn body(tagged: bool, sids: &[(&str, &[(u64, u64)])]) -> Vec<u8> {
        let n = sids.len() as u64;
        let mut d = if tagged {
            ((1u64 << 56) | (n << 8)).to_le_bytes().to_vec()
        } else {
            n.to_le_bytes().to_vec()
        };
        for (tag, ivs) in sids {
            d.extend_from_slice(&[7u8; 16]);
            if tagged {
                d.push((tag.len() as u8) << 1); // one-byte varlen
                d.extend_from_slice(tag.as_bytes());
            }
            d.extend_from_slice(&(ivs.len() as u64).to_le_bytes());
            for (a, b) in *ivs {
                d.extend_from_slice(&a.to_le_bytes());
                d.extend_from_slice(&b.to_le_bytes());
            }
        }
        d
    }

    #[test]
    fn counts_must_fit_the_body() {
        assert!(previous_gtids_fits(&body(false, &[])).is_ok());
        assert!(
            previous_gtids_fits(&body(false, &[("", &[(1, 5)]), ("", &[(1, 2), (4, 9)])])).is_ok()
        );
        assert!(previous_gtids_fits(&body(true, &[("tag", &[(1, 5)]), ("", &[])])).is_ok());
        // a corrupt source count (what once aborted with a 14 PB allocation)
        let mut d = body(false, &[("", &[(1, 5)])]);
        d[..8].copy_from_slice(&(1u64 << 50).to_le_bytes());
        assert!(previous_gtids_fits(&d)
            .unwrap_err()
            .contains("GTID sources"));
        // a corrupt interval count
        let mut d = body(false, &[("", &[(1, 5)])]);
        d[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(previous_gtids_fits(&d)
            .unwrap_err()
            .contains("GTID intervals"));
        // a tag longer than the body
        let mut d = body(true, &[("tag", &[])]);
        d[24] = 100 << 1;
        assert!(previous_gtids_fits(&d).is_err());
        assert!(previous_gtids_fits(&[1, 2, 3]).is_err());
    }
}
