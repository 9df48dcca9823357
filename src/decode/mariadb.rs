//! MariaDB-only events, which mysql_common reports as unknown: parsed here from the raw body.

/// GTID event flags2 bit: a standalone event group (DDL), no BEGIN/COMMIT follow.
pub const FL_STANDALONE: u8 = 1;
/// GTID event flags2 bits: a commit id follows (group commit); the group is an XA PREPARE
/// (its rows, ending in XA_PREPARE_LOG) or an XA COMMIT/ROLLBACK; with either XA bit the xid
/// follows.
pub const FL_GROUP_COMMIT_ID: u8 = 2;
pub const FL_PREPARED_XA: u8 = 64;
pub const FL_COMPLETED_XA: u8 = 128;

/// The xid an XA GTID event carries: (formatID, gtrid, bqual). MariaDB writes no `XA START`
/// query: the GTID event of the PREPARE group names the transaction.
pub fn parse_gtid_xid(d: &[u8]) -> Result<Option<super::statement::Xid>, String> {
    let Some(&flags2) = d.get(12) else {
        return Ok(None);
    };
    if flags2 & (FL_PREPARED_XA | FL_COMPLETED_XA) == 0 {
        return Ok(None);
    }
    let mut p = 13;
    if flags2 & FL_GROUP_COMMIT_ID != 0 {
        p += 8;
    }
    let bad = || format!("XA GTID event of {} bytes is truncated", d.len());
    let fid = d
        .get(p..p + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(|b| i32::from_le_bytes(b) as i64 as u64)
        .ok_or_else(bad)?;
    let gl = *d.get(p + 4).ok_or_else(bad)? as usize;
    let bl = *d.get(p + 5).ok_or_else(bad)? as usize;
    let data = d.get(p + 6..p + 6 + gl + bl).ok_or_else(bad)?;
    Ok(Some(super::statement::Xid {
        format_id: fid,
        gtrid: data[..gl].to_vec(),
        bqual: data[gl..].to_vec(),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MariaGtid {
    pub domain: u32,
    pub server: u32,
    pub seq: u64,
    pub flags2: u8,
}

pub fn parse_gtid(d: &[u8], server_id: u32) -> Result<MariaGtid, String> {
    if d.len() < 13 {
        return Err(format!("GTID event body has {} bytes, needs 13", d.len()));
    }
    let seq = u64::from_le_bytes(d[0..8].try_into().map_err(|_| "GTID seq")?);
    let domain = u32::from_le_bytes(d[8..12].try_into().map_err(|_| "GTID domain")?);
    Ok(MariaGtid {
        domain,
        server: server_id,
        seq,
        flags2: d[12],
    })
}

/// GTID_LIST: the binlog state at the start of a file: (domain, server, seq) triples.
pub fn parse_gtid_list(d: &[u8]) -> Result<Vec<(u32, u32, u64)>, String> {
    if d.len() < 4 {
        return Err("GTID_LIST event too short".into());
    }
    let n = (u32::from_le_bytes([d[0], d[1], d[2], d[3]]) & 0x0fff_ffff) as usize;
    let need = 4 + n.checked_mul(16).ok_or("GTID_LIST count overflow")?;
    if d.len() < need {
        return Err(format!(
            "GTID_LIST lists {n} GTIDs but has {} bytes",
            d.len()
        ));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = 4 + 16 * i;
        let dom = u32::from_le_bytes([d[p], d[p + 1], d[p + 2], d[p + 3]]);
        let srv = u32::from_le_bytes([d[p + 4], d[p + 5], d[p + 6], d[p + 7]]);
        let seq = u64::from_le_bytes(d[p + 8..p + 16].try_into().map_err(|_| "GTID_LIST seq")?);
        out.push((dom, srv, seq));
    }
    Ok(out)
}

/// QUERY_COMPRESSED: the query event body with the query text zlib-compressed; returns the
/// (schema, query) pair.
pub fn parse_query_compressed(
    d: &[u8],
    post_header_len: usize,
) -> Result<(String, String), String> {
    // post-header: thread_id 4, exec_time 4, db_len 1, error_code 2, status_vars_len 2
    if d.len() < post_header_len.max(13) {
        return Err("compressed QUERY event too short".into());
    }
    let db_len = d[8] as usize;
    let sv_len = u16::from_le_bytes([d[11], d[12]]) as usize;
    let p = post_header_len + sv_len;
    let db = d
        .get(p..p + db_len)
        .ok_or("compressed QUERY: truncated schema")?;
    let q = d
        .get(p + db_len + 1..)
        .ok_or("compressed QUERY: truncated query")?;
    let text = super::rows::mariadb_uncompress(q)?;
    Ok((
        String::from_utf8_lossy(db).into_owned(),
        String::from_utf8_lossy(&text).into_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gtid_and_list() {
        let mut d = 12u64.to_le_bytes().to_vec();
        d.extend(3u32.to_le_bytes());
        d.push(FL_STANDALONE);
        let g = parse_gtid(&d, 1).unwrap();
        assert_eq!((g.domain, g.server, g.seq), (3, 1, 12));
        assert!(parse_gtid(&d[..5], 1).is_err());

        let mut l = 1u32.to_le_bytes().to_vec();
        l.extend(0u32.to_le_bytes());
        l.extend(1u32.to_le_bytes());
        l.extend(14u64.to_le_bytes());
        assert_eq!(parse_gtid_list(&l).unwrap(), vec![(0, 1, 14)]);
        assert!(parse_gtid_list(&l[..10]).is_err());
        let mut huge = 0x0fff_ffffu32.to_le_bytes().to_vec();
        huge.extend([0u8; 16]);
        assert!(parse_gtid_list(&huge).is_err());
    }
}
