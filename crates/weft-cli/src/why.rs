//! `weft net why SRC DST [--port N/tcp|udp]`: the path between two containers (or a container
//! and a host, or two hosts) checked hop by hop by the leader from fresh reports of the hosts on
//! it; the first broken hop is printed last, as the answer. Exit 0 when the path is clear, 1 when
//! something blocks it.

use clap::Args;
use weft_proto::v1 as pb;

use crate::failure::Failure;
use crate::output::{Format, json};
use crate::rpc::{ClusterApi, err};

/// `weft net why`'s arguments.
#[derive(Debug, Args)]
pub(crate) struct WhyArgs {
    /// A port to check on the destination, N/tcp or N/udp (tcp when the protocol is left out):
    /// towards a host, which container publishes it and whether that one runs.
    #[arg(long)]
    port: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Where the path starts: a container (name or id) on any host, or a host name.
    src: String,
    /// Where it goes: a container, a host name or an address.
    dst: String,
}

/// `N/tcp`, `N/udp` or `N` as (port, protocol).
pub(crate) fn parse_port(text: &str) -> Result<(u32, String), String> {
    let (port, protocol) = text.split_once('/').unwrap_or((text, "tcp"));
    let protocol = protocol.to_ascii_lowercase();
    if protocol != "tcp" && protocol != "udp" {
        return Err(format!("--port {text:?}: the protocol must be tcp or udp"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok((u32::from(p), protocol)),
        _ => Err(format!("--port {text:?}: expected a port from 1 to 65535, like 8080/tcp")),
    }
}

fn hop_json(h: &pb::Hop) -> serde_json::Value {
    serde_json::json!({ "place": h.place, "what": h.what, "ok": h.ok, "detail": h.detail })
}

/// The answer as JSON: the same content as the table.
pub(crate) fn why_json(src: &str, dst: &str, r: &pb::WhyResponse) -> serde_json::Value {
    serde_json::json!({
        "src": src,
        "dst": dst,
        "clear": r.clear,
        "hops": r.hops.iter().map(hop_json).collect::<Vec<_>>(),
        "answer": (!r.clear).then(|| r.hops.get(r.blocked_at as usize).map(hop_json)).flatten(),
        "report_age_ms": r.report_age_ms,
    })
}

/// The answer as text: one line per hop, then the answer.
pub(crate) fn why_text(src: &str, dst: &str, r: &pb::WhyResponse) -> String {
    let place_w = r.hops.iter().map(|h| h.place.len()).max().unwrap_or(0);
    let what_w = r.hops.iter().map(|h| h.what.len()).max().unwrap_or(0);
    let mut out = format!("{src} -> {dst} (hosts' reports at most {} ms old)\n", r.report_age_ms);
    for h in &r.hops {
        let mark = if h.ok { "ok  " } else { "FAIL" };
        out.push_str(&format!("  {mark}  {:<place_w$}  {:<what_w$}  {}\n", h.place, h.what, h.detail));
    }
    match r.hops.get(r.blocked_at as usize).filter(|_| !r.clear) {
        Some(h) => out.push_str(&format!("blocked at {}, {}: {}\n", h.place, h.what, h.detail)),
        None => out.push_str("the path is clear\n"),
    }
    out
}

/// Asks the cluster and prints the path.
pub(crate) async fn why(api: &mut ClusterApi, args: WhyArgs) -> Result<u8, Failure> {
    let (port, protocol) = match &args.port {
        Some(p) => parse_port(p)?,
        None => (0, String::new()),
    };
    let request = pb::WhyRequest { src: args.src.clone(), dst: args.dst.clone(), port, protocol };
    let r = api.why(request).await.map_err(err)?.into_inner();
    match args.format {
        Format::Json => json(&why_json(&args.src, &args.dst, &r)),
        Format::Table => print!("{}", why_text(&args.src, &args.dst, &r)),
    }
    Ok(if r.clear { 0 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_with_and_without_a_protocol() {
        assert_eq!(parse_port("8080/tcp"), Ok((8080, "tcp".into())));
        assert_eq!(parse_port("53/UDP"), Ok((53, "udp".into())));
        assert_eq!(parse_port("80"), Ok((80, "tcp".into())));
        assert!(parse_port("80/sctp").unwrap_err().contains("tcp or udp"));
        assert!(parse_port("0").unwrap_err().contains("1 to 65535"));
        assert!(parse_port("http").unwrap_err().contains("1 to 65535"));
    }

    #[test]
    fn the_first_broken_hop_is_printed_last() {
        let hop = |ok, what: &str| pb::Hop {
            place: "h1".into(),
            what: what.into(),
            ok,
            detail: format!("{what} detail"),
        };
        let r = pb::WhyResponse {
            hops: vec![hop(true, "container a"), hop(false, "FDB entry"), hop(false, "container b")],
            clear: false,
            blocked_at: 1,
            report_age_ms: 12,
        };
        let text = why_text("a", "b", &r);
        assert!(
            text.lines().last().unwrap().starts_with("blocked at h1, FDB entry: FDB entry detail"),
            "{text}"
        );
        assert!(text.contains("  FAIL  h1  FDB entry  "), "{text}");
        let j = why_json("a", "b", &r);
        assert_eq!(j["answer"]["what"], "FDB entry");
        assert_eq!(j["hops"].as_array().unwrap().len(), 3);
        let clear =
            pb::WhyResponse { hops: vec![hop(true, "x")], clear: true, blocked_at: 0, report_age_ms: 1 };
        assert!(why_text("a", "b", &clear).ends_with("the path is clear\n"));
        assert!(why_json("a", "b", &clear)["answer"].is_null());
    }
}
