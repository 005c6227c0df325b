//! TLS 1.0 and 1.1 offered by hand: rustls cannot speak them, so a ClientHello record
//! for the old version is written byte by byte and the server's first bytes read back.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A legacy protocol version as it appears on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Legacy {
    Tls10,
    Tls11,
}

impl Legacy {
    fn wire(self) -> [u8; 2] {
        match self {
            Self::Tls10 => [3, 1],
            Self::Tls11 => [3, 2],
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Tls10 => "TLS 1.0",
            Self::Tls11 => "TLS 1.1",
        }
    }
}

/// CBC suites every TLS 1.0/1.1 server speaks: ECDHE with ECDSA or RSA, plain RSA.
const SUITES: [u16; 6] = [0xc009, 0xc00a, 0xc013, 0xc014, 0x002f, 0x0035];

fn push_u16(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
}

fn push_u24(out: &mut Vec<u8>, n: usize) {
    let n = u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&n[1..]);
}

/// A whole TLS record holding a ClientHello for `version` only: no
/// `supported_versions` extension, so the server cannot pick anything newer. `sni` is
/// the DNS name to name (none for an IP address).
pub(crate) fn client_hello(version: Legacy, random: [u8; 32], sni: Option<&str>) -> Vec<u8> {
    let mut extensions = Vec::new();
    if let Some(name) = sni {
        // server_name: a list holding one host_name entry.
        let mut list = vec![0u8];
        push_u16(&mut list, name.len());
        list.extend_from_slice(name.as_bytes());
        extensions.extend_from_slice(&[0x00, 0x00]);
        push_u16(&mut extensions, list.len() + 2);
        push_u16(&mut extensions, list.len());
        extensions.extend_from_slice(&list);
    }
    // supported_groups: x25519, secp256r1, secp384r1.
    extensions.extend_from_slice(&[
        0x00, 0x0a, 0x00, 0x08, 0x00, 0x06, 0x00, 0x1d, 0x00, 0x17, 0x00, 0x18,
    ]);
    // ec_point_formats: uncompressed.
    extensions.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    // renegotiation_info, empty (RFC 5746).
    extensions.extend_from_slice(&[0xff, 0x01, 0x00, 0x01, 0x00]);

    let mut hello = Vec::new();
    hello.extend_from_slice(&version.wire());
    hello.extend_from_slice(&random);
    hello.push(0); // no session id
    push_u16(&mut hello, SUITES.len() * 2);
    for suite in SUITES {
        hello.extend_from_slice(&suite.to_be_bytes());
    }
    hello.extend_from_slice(&[1, 0]); // compression: null only
    push_u16(&mut hello, extensions.len());
    hello.extend_from_slice(&extensions);

    let mut handshake = vec![0x01]; // client_hello
    push_u24(&mut handshake, hello.len());
    handshake.extend_from_slice(&hello);

    let mut record = vec![0x16]; // handshake
    record.extend_from_slice(&version.wire());
    push_u16(&mut record, handshake.len());
    record.extend_from_slice(&handshake);
    record
}

/// What the server did with an old ClientHello.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// An alert, a close or a reset: the version is refused.
    Refused(String),
    /// A ServerHello: the version is spoken.
    Accepted,
    /// Something else, or nothing in time.
    Unclear(String),
}

/// Offers `version` to `host:port` and reads the first bytes of the answer.
pub(crate) async fn offer(host: &str, port: u16, version: Legacy, wait: Duration) -> Verdict {
    let sni = host.parse::<std::net::IpAddr>().is_err().then_some(host);
    let random = random_bytes();
    let exchange = async {
        let mut stream = TcpStream::connect((host, port))
            .await
            .map_err(|e| Verdict::Unclear(format!("cannot connect: {e}")))?;
        stream
            .write_all(&client_hello(version, random, sni))
            .await
            .map_err(|e| Verdict::Refused(format!("the write failed ({e})")))?;
        let mut head = [0u8; 6];
        let mut read = 0;
        while read < head.len() {
            match stream.read(&mut head[read..]).await {
                Ok(0) => break,
                Ok(n) => read += n,
                Err(e) if read == 0 => return Ok(Verdict::Refused(format!("reset ({e})"))),
                Err(_) => break,
            }
        }
        Ok(match (read, head[0], head[5]) {
            (0, _, _) => Verdict::Refused("closed the connection".into()),
            (_, 0x15, _) => Verdict::Refused("answered with an alert".into()),
            (6, 0x16, 0x02) => Verdict::Accepted,
            _ => Verdict::Unclear(format!("answered {read} unexpected bytes")),
        })
    };
    match tokio::time::timeout(wait, exchange).await {
        Ok(Ok(verdict) | Err(verdict)) => verdict,
        Err(_) => Verdict::Unclear(format!("no answer within {}s", wait.as_secs())),
    }
}

/// The ClientHello's random: unpredictability is not needed to be refused.
fn random_bytes() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0u8; 32];
    for chunk in out.chunks_mut(8) {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u8(0);
        chunk.copy_from_slice(&hasher.finish().to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tls10_client_hello_is_one_well_formed_record() {
        let record = client_hello(Legacy::Tls10, [7; 32], Some("a.example"));
        // Record: handshake, TLS 1.0, length of the rest.
        assert_eq!(&record[..3], &[0x16, 3, 1]);
        assert_eq!(
            usize::from(u16::from_be_bytes([record[3], record[4]])),
            record.len() - 5
        );
        // Handshake: client_hello, 24-bit length of the rest.
        assert_eq!(record[5], 0x01);
        let len =
            usize::from(record[6]) << 16 | usize::from(record[7]) << 8 | usize::from(record[8]);
        assert_eq!(len, record.len() - 9);
        // client_version, the random, an empty session id, six suites.
        assert_eq!(&record[9..11], &[3, 1]);
        assert_eq!(&record[11..43], &[7; 32]);
        assert_eq!(record[43], 0);
        assert_eq!(&record[44..46], &[0, 12]);
        assert_eq!(&record[46..48], &[0xc0, 0x09]);
        assert_eq!(&record[56..58], &[0x00, 0x35]);
        assert_eq!(&record[58..60], &[1, 0]);
        // Extensions: their length, then server_name naming the host first.
        assert_eq!(
            usize::from(u16::from_be_bytes([record[60], record[61]])),
            record.len() - 62
        );
        assert_eq!(&record[62..64], &[0, 0]);
        assert_eq!(&record[64..66], &[0, 14]);
        assert_eq!(&record[66..68], &[0, 12]);
        assert_eq!(record[68], 0);
        assert_eq!(&record[69..71], &[0, 9]);
        assert_eq!(&record[71..80], b"a.example");
        // No supported_versions (43): nothing newer than TLS 1.0 is on offer.
        assert!(!record[62..].windows(2).any(|w| w == [0x00, 0x2b]));
    }

    #[test]
    fn the_tls11_client_hello_names_tls11_and_no_server_name_for_an_address() {
        let with = client_hello(Legacy::Tls11, [0; 32], Some("x.example"));
        let without = client_hello(Legacy::Tls11, [0; 32], None);
        assert_eq!(&without[..3], &[0x16, 3, 2]);
        assert_eq!(&without[9..11], &[3, 2]);
        assert_eq!(with.len() - without.len(), 4 + 2 + 3 + "x.example".len());
        assert_eq!(&without[62..64], &[0x00, 0x0a]);
    }

    #[tokio::test]
    async fn a_server_hello_is_accepted_and_an_alert_or_close_refused() {
        use tokio::net::TcpListener;
        for (reply, expect_accepted) in [
            (&[0x16u8, 3, 1, 0, 40, 0x02][..], true),
            (&[0x15, 3, 1, 0, 2, 2, 70][..], false),
            (&[][..], false),
        ] {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
            let reply = reply.to_vec();
            let server = tokio::spawn(async move {
                if let Ok((mut stream, _)) = listener.accept().await {
                    let mut buf = [0u8; 512];
                    let _ = stream.read(&mut buf).await;
                    let _ = stream.write_all(&reply).await;
                }
            });
            let verdict = offer("127.0.0.1", port, Legacy::Tls10, Duration::from_secs(10)).await;
            assert_eq!(verdict == Verdict::Accepted, expect_accepted, "{verdict:?}");
            assert!(
                matches!(verdict, Verdict::Accepted | Verdict::Refused(_)),
                "{verdict:?}"
            );
            let _ = server.await;
        }
    }
}
