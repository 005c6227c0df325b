//! The HTTP/1.1 codec of the forwarding fast path: pure functions over byte slices (no
//! I/O, no allocation on the common path), so every framing rule is enforced where the
//! bytes are parsed and can be tested at every split point.
//!
//! - [`head`]: a request head parsed into borrowed slices, its framing decided, and the
//!   heads the fast path must not guess at declined (handed to hyper whole).
//! - [`chunked`]: a chunked body validated as it passes, forwarded unchanged.
//! - [`decode`]: a response body taken out of its framing as it arrives.
//! - [`write`]: an upstream request head written into a reused buffer, framed as hyper
//!   frames it.
//! - [`response`]: an upstream response head parsed into borrowed slices, its framing
//!   decided from the request's method, the heads a proxy must not relay refused.

pub mod chunked;
pub mod decode;
pub mod head;
pub mod response;
pub mod write;
