//! The HTTP version forwarding speaks to Refold, as explicit state: HTTP/1.1 until a
//! connection of the forwarding pool negotiates HTTP/2 over ALPN, HTTP/2 from then on.

use std::sync::atomic::{AtomicBool, Ordering};

/// The HTTP version forwarding speaks to Refold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 over the forwarding pool: until a connection negotiates anything else.
    Http1,
    /// HTTP/2 over the multiplexing client, once Refold chose it over ALPN: for good.
    Http2,
}

/// The protocol Refold chose, learnt by the forwarding pool as it connects. It only
/// moves from HTTP/1.1 to HTTP/2.
#[derive(Debug, Default)]
pub(crate) struct ProtocolChoice {
    http2: AtomicBool,
}

impl ProtocolChoice {
    /// The protocol forwarding uses now.
    pub(crate) fn current(&self) -> Protocol {
        if self.http2.load(Ordering::Relaxed) {
            Protocol::Http2
        } else {
            Protocol::Http1
        }
    }

    /// Records that Refold chose HTTP/2; true the first time only.
    pub(crate) fn choose_http2(&self) -> bool {
        !self.http2.swap(true, Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_moves_to_http2_once_and_stays() {
        let choice = ProtocolChoice::default();
        assert_eq!(choice.current(), Protocol::Http1);
        assert!(choice.choose_http2());
        assert_eq!(choice.current(), Protocol::Http2);
        assert!(!choice.choose_http2());
        assert_eq!(choice.current(), Protocol::Http2);
    }
}
