//! The little of RFC 1035 the server needs: read one question, write answers of type A or AAAA,
//! or an error code. No I/O.

use std::net::IpAddr;

/// Record type A.
pub const TYPE_A: u16 = 1;
/// Record type AAAA.
pub const TYPE_AAAA: u16 = 28;
/// The EDNS0 OPT pseudo-record type.
const TYPE_OPT: u16 = 41;
/// Class IN.
pub const CLASS_IN: u16 = 1;
const HEADER_LEN: usize = 12;

/// Why a packet could not be read as a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsError {
    /// Shorter than what it announces.
    #[error("truncated message")]
    Truncated,
    /// A response, or not exactly one question.
    #[error("not a single-question query")]
    NotAQuery,
    /// A name that breaks the label rules (compression in a question, labels over 63 bytes).
    #[error("malformed name")]
    BadName,
}

/// Response codes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rcode {
    /// Answered (possibly with no records of the asked type).
    NoError = 0,
    /// The query could not be read.
    FormErr = 1,
    /// Forwarding failed.
    ServFail = 2,
    /// The name does not exist.
    NxDomain = 3,
    /// The client may not ask this server.
    Refused = 5,
}

/// The one question of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Message id.
    pub id: u16,
    /// The name asked, lower case, without the trailing dot.
    pub name: String,
    /// Record type asked.
    pub qtype: u16,
    /// Record class asked.
    pub qclass: u16,
    /// Recursion desired.
    pub recursion_desired: bool,
    /// The UDP payload size the client's EDNS0 OPT record offers, if it sent one.
    pub edns_size: Option<u16>,
    /// Where the question ends in the packet.
    question_end: usize,
}

fn u16_at(packet: &[u8], at: usize) -> Result<u16, DnsError> {
    let bytes = packet.get(at..at + 2).ok_or(DnsError::Truncated)?;
    Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
}

/// Reads the question of a query packet.
pub fn parse_query(packet: &[u8]) -> Result<Query, DnsError> {
    if packet.len() < HEADER_LEN {
        return Err(DnsError::Truncated);
    }
    let id = u16_at(packet, 0)?;
    let flags = u16_at(packet, 2)?;
    if flags & 0x8000 != 0 || u16_at(packet, 4)? != 1 {
        return Err(DnsError::NotAQuery);
    }
    let mut at = HEADER_LEN;
    let mut labels: Vec<String> = Vec::new();
    loop {
        let len = *packet.get(at).ok_or(DnsError::Truncated)? as usize;
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return Err(DnsError::BadName);
        }
        let label = packet.get(at..at + len).ok_or(DnsError::Truncated)?;
        labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
        at += len;
        if at - HEADER_LEN > 255 {
            return Err(DnsError::BadName);
        }
    }
    let qtype = u16_at(packet, at)?;
    let qclass = u16_at(packet, at + 2)?;
    // An OPT pseudo-record (root name, type 41) right after the question: its class is the UDP
    // payload size the client can take (RFC 6891).
    let additional = u16_at(packet, 10)?;
    let edns_size =
        (additional > 0 && packet.get(at + 4) == Some(&0) && u16_at(packet, at + 5).ok() == Some(TYPE_OPT))
            .then(|| u16_at(packet, at + 7).ok())
            .flatten();
    Ok(Query {
        id,
        name: labels.join("."),
        qtype,
        qclass,
        recursion_desired: flags & 0x0100 != 0,
        edns_size,
        question_end: at + 4,
    })
}

fn header(query: &Query, packet: &[u8], rcode: Rcode, answers: u16) -> Vec<u8> {
    let opcode = u16_at(packet, 2).unwrap_or(0) & 0x7800;
    let mut flags: u16 = 0x8000 | opcode | 0x0400 | 0x0080 | rcode as u16;
    if query.recursion_desired {
        flags |= 0x0100;
    }
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&query.id.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&answers.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&packet[HEADER_LEN..query.question_end]);
    out
}

/// The UDP payload size weft's replies offer in their own OPT record.
const EDNS_SIZE: u16 = 4096;

/// The length of an OPT record without options.
const OPT_LEN: usize = 11;

/// Ends a reply: an OPT record when the query had one (RFC 6891: a responder that understands
/// EDNS answers with it), counted in the additional section.
fn finish(mut out: Vec<u8>, query: &Query) -> Vec<u8> {
    if query.edns_size.is_some() {
        out.push(0);
        out.extend_from_slice(&TYPE_OPT.to_be_bytes());
        out.extend_from_slice(&EDNS_SIZE.to_be_bytes());
        out.extend_from_slice(&[0; 6]);
        out[10..12].copy_from_slice(&1u16.to_be_bytes());
    }
    out
}

/// The largest reply a client can take: 512 bytes over UDP unless its EDNS0 record offers more
/// (at most 4096 here), 65 535 over TCP.
pub fn reply_limit(query: &Query, tcp: bool) -> usize {
    if tcp {
        return usize::from(u16::MAX);
    }
    query.edns_size.map_or(512, |size| usize::from(size).clamp(512, 4096))
}

/// An authoritative answer to `query` (read from `packet`) with the records of `ips` that match
/// the asked type: A for IPv4, AAAA for IPv6. No matching record is a NOERROR with no answers, as
/// for any name that exists. TTL 0: containers come and go, nothing should cache them. Records
/// that do not fit in `limit` bytes are left out and the TC bit says so: the client asks again
/// over TCP.
pub fn answer(packet: &[u8], query: &Query, ips: &[IpAddr], limit: usize) -> Vec<u8> {
    let in_class = query.qclass == CLASS_IN || query.qclass == 255;
    let wanted: Vec<&IpAddr> = ips
        .iter()
        .filter(|_| in_class)
        .filter(|ip| match query.qtype {
            TYPE_A => ip.is_ipv4(),
            TYPE_AAAA => ip.is_ipv6(),
            255 => true,
            _ => false,
        })
        .collect();
    let mut out = header(query, packet, Rcode::NoError, 0);
    let mut count: u16 = 0;
    let opt = if query.edns_size.is_some() { OPT_LEN } else { 0 };
    for ip in wanted {
        let record_len = 12 + if ip.is_ipv4() { 4 } else { 16 };
        if out.len() + record_len + opt > limit || count == u16::MAX {
            out[2] |= 0x02; // TC: truncated
            break;
        }
        count += 1;
        out.extend_from_slice(&[0xC0, HEADER_LEN as u8]);
        let (kind, data): (u16, Vec<u8>) = match ip {
            IpAddr::V4(v4) => (TYPE_A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (TYPE_AAAA, v6.octets().to_vec()),
        };
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(&data);
    }
    out[6..8].copy_from_slice(&count.to_be_bytes());
    finish(out, query)
}

/// A reply carrying only `rcode` (and the question).
pub fn error(packet: &[u8], query: &Query, rcode: Rcode) -> Vec<u8> {
    finish(header(query, packet, rcode, 0), query)
}

/// A FORMERR reply to a packet that could not be parsed, when at least its id is readable.
pub fn format_error(packet: &[u8]) -> Option<Vec<u8>> {
    let id = u16_at(packet, 0).ok()?;
    let mut out = Vec::with_capacity(HEADER_LEN);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&(0x8000u16 | Rcode::FormErr as u16).to_be_bytes());
    out.extend_from_slice(&[0; 8]);
    Some(out)
}

/// A query packet for `name` (tests and the CLI's troubleshooting use it).
pub fn query_packet(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    for label in name.trim_end_matches('.').split('.').filter(|l| !l.is_empty()) {
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out
}

/// [`query_packet`] with an EDNS0 OPT record offering `udp_size` bytes.
pub fn query_packet_edns(id: u16, name: &str, qtype: u16, udp_size: u16) -> Vec<u8> {
    let mut out = query_packet(id, name, qtype);
    out[10..12].copy_from_slice(&1u16.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&TYPE_OPT.to_be_bytes());
    out.extend_from_slice(&udp_size.to_be_bytes());
    out.extend_from_slice(&[0; 6]);
    out
}

/// True when a response has the TC (truncated) bit: the full answer is over TCP.
pub fn is_truncated(packet: &[u8]) -> bool {
    packet.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

/// The response code and the addresses of the A/AAAA records of a response.
pub fn parse_answers(packet: &[u8]) -> Result<(u16, Vec<IpAddr>), DnsError> {
    let rcode = u16_at(packet, 2)? & 0x000F;
    let questions = u16_at(packet, 4)?;
    let answers = u16_at(packet, 6)?;
    let mut at = HEADER_LEN;
    let skip_name = |mut at: usize| -> Result<usize, DnsError> {
        loop {
            let len = *packet.get(at).ok_or(DnsError::Truncated)?;
            if len & 0xC0 == 0xC0 {
                return Ok(at + 2);
            }
            at += 1 + len as usize;
            if len == 0 {
                return Ok(at);
            }
        }
    };
    for _ in 0..questions {
        at = skip_name(at)? + 4;
    }
    let mut ips = Vec::new();
    for _ in 0..answers {
        at = skip_name(at)?;
        let kind = u16_at(packet, at)?;
        let len = u16_at(packet, at + 8)? as usize;
        let data = packet.get(at + 10..at + 10 + len).ok_or(DnsError::Truncated)?;
        match (kind, len) {
            (TYPE_A, 4) => ips.push(IpAddr::from(<[u8; 4]>::try_from(data).expect("4 bytes"))),
            (TYPE_AAAA, 16) => ips.push(IpAddr::from(<[u8; 16]>::try_from(data).expect("16 bytes"))),
            _ => {}
        }
        at += 10 + len;
    }
    Ok((rcode, ips))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_round_trips_through_answer() {
        let packet = query_packet(0x1234, "DB.", TYPE_A);
        let q = parse_query(&packet).unwrap();
        assert_eq!((q.id, q.name.as_str(), q.qtype, q.qclass), (0x1234, "db", TYPE_A, CLASS_IN));
        let ips: Vec<IpAddr> = vec!["10.44.0.2".parse().unwrap(), "fd00::2".parse().unwrap()];
        let reply = answer(&packet, &q, &ips, 512);
        assert_eq!(&reply[..2], &[0x12, 0x34]);
        assert_eq!(parse_answers(&reply).unwrap(), (0, vec![ips[0]]));
        let q6 = parse_query(&query_packet(7, "db", TYPE_AAAA)).unwrap();
        let reply6 = answer(&query_packet(7, "db", TYPE_AAAA), &q6, &ips, 512);
        assert_eq!(parse_answers(&reply6).unwrap(), (0, vec![ips[1]]));
    }

    #[test]
    fn answers_that_do_not_fit_are_truncated_with_the_tc_bit() {
        let ips: Vec<IpAddr> = (1..=60).map(|i| IpAddr::from([10, 44, 0, i])).collect();
        let plain = query_packet(1, "svc", TYPE_A);
        let q = parse_query(&plain).unwrap();
        assert_eq!((q.edns_size, reply_limit(&q, false), reply_limit(&q, true)), (None, 512, 65535));
        let udp = answer(&plain, &q, &ips, reply_limit(&q, false));
        assert!(udp.len() <= 512 && is_truncated(&udp));
        let (_, some) = parse_answers(&udp).unwrap();
        assert!(!some.is_empty() && some.len() < 60, "{}", some.len());
        let tcp = answer(&plain, &q, &ips, reply_limit(&q, true));
        assert!(!is_truncated(&tcp));
        assert_eq!(parse_answers(&tcp).unwrap().1, ips);
        // An EDNS0 client offering 4096 bytes gets all 60 over UDP.
        let edns = query_packet_edns(2, "svc", TYPE_A, 4096);
        let q = parse_query(&edns).unwrap();
        assert_eq!(q.edns_size, Some(4096));
        let big = answer(&edns, &q, &ips, reply_limit(&q, false));
        assert!(!is_truncated(&big));
        assert_eq!(parse_answers(&big).unwrap().1.len(), 60);
        // The reply carries its own OPT record (additional count 1, type 41 at the end).
        assert_eq!(u16_at(&big, 10).unwrap(), 1);
        assert_eq!(u16_at(&big, big.len() - 10).unwrap(), TYPE_OPT);
        assert_eq!(u16_at(&udp, 10).unwrap(), 0, "no OPT without one in the query");
    }

    #[test]
    fn errors_and_garbage() {
        let packet = query_packet(9, "nope", TYPE_A);
        let q = parse_query(&packet).unwrap();
        assert_eq!(parse_answers(&error(&packet, &q, Rcode::NxDomain)).unwrap(), (3, vec![]));
        assert_eq!(parse_query(&packet[..5]), Err(DnsError::Truncated));
        let mut response = packet.clone();
        response[2] |= 0x80;
        assert_eq!(parse_query(&response), Err(DnsError::NotAQuery));
        let mut long = packet.clone();
        long[12] = 64;
        assert_eq!(parse_query(&long), Err(DnsError::BadName));
        assert_eq!(parse_answers(&format_error(&packet).unwrap()).unwrap().0, 1);
        for cut in 0..packet.len() {
            let _ = parse_query(&packet[..cut]);
            let _ = parse_answers(&packet[..cut]);
        }
    }
}
