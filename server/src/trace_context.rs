//! W3C Trace Context (`traceparent`): parsing the caller's, and making this server's.
//!
//! `traceparent: 00-<trace-id: 32 hex>-<parent-id: 16 hex>-<flags: 2 hex>`. An invalid header is
//! ignored and a new trace is started, as the specification requires. The ids are computed here
//! so propagation works (and the trace id reaches the logs) whether or not spans are exported;
//! with OTLP export on, the exported span uses the same parent.

use axum::http::{HeaderMap, HeaderValue};

use crate::ids;

/// A parsed or freshly made trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// Reads the caller's `traceparent`; `None` when absent or invalid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        Self::parse(headers.get("traceparent")?.to_str().ok()?)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        // Version 00 has exactly four fields; a later version may append more.
        if version.len() != 2 || !is_lower_hex(version) || version == "ff" {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        if trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return None;
        }
        if !(is_lower_hex(trace) && is_lower_hex(span) && is_lower_hex(flags)) {
            return None;
        }
        let trace_id = u128::from_str_radix(trace, 16).ok()?;
        let span_id = u64::from_str_radix(span, 16).ok()?;
        let flags = u8::from_str_radix(flags, 16).ok()?;
        if trace_id == 0 || span_id == 0 {
            return None;
        }
        Some(Self { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// This server's context: the caller's trace with a new span id, or a new sampled trace.
    pub fn child_of(parent: Option<&TraceParent>) -> Self {
        let span_id = ids::nonzero_u64();
        match parent {
            Some(p) => Self { trace_id: p.trace_id, span_id, sampled: p.sampled },
            None => Self { trace_id: ids::nonzero_u128(), span_id, sampled: true },
        }
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn header_value(&self) -> HeaderValue {
        let mut s = *b"00-00000000000000000000000000000000-0000000000000000-00";
        ids::write_hex(&mut s[3..35], self.trace_id);
        ids::write_hex(&mut s[36..52], u128::from(self.span_id));
        ids::write_hex(&mut s[53..55], u128::from(u8::from(self.sampled)));
        // Only hex digits and dashes: always a valid header value.
        HeaderValue::from_bytes(&s).unwrap_or_else(|_| HeaderValue::from_static(""))
    }
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example() {
        let p = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").expect("valid");
        assert_eq!(p.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.span_id, 0x00f0_67aa_0ba9_02b7);
        assert!(p.sampled);
    }

    #[test]
    fn rejects_invalid_headers() {
        for bad in [
            "",
            "garbage",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A future version may carry more fields.
        assert!(TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x").is_some());
    }

    #[test]
    fn a_child_keeps_the_trace_and_gets_a_new_span() {
        let p = TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").expect("valid");
        let c = TraceParent::child_of(Some(&p));
        assert_eq!(c.trace_id, p.trace_id);
        assert_ne!(c.span_id, p.span_id);
        assert!(!c.sampled, "the sampling decision is the caller's");
        let round = TraceParent::parse(c.header_value().to_str().expect("ascii")).expect("valid");
        assert_eq!(round, c);
        let fresh = TraceParent::child_of(None);
        assert_ne!(fresh.trace_id, 0);
        assert!(fresh.sampled);
    }
}
