//! A minimal HTTP/1.1 keep-alive client over one TCP connection, and the parsing of `http://` URLs.
//!
//! The load generator shares two cores with the gateway and RabbitMQ, so every microsecond it
//! spends is taken from what it measures: requests are written as one pre-serialised buffer and
//! responses are parsed in place with `httparse`, with no pool, no TLS and no redirects. Responses
//! must carry `content-length` (actix always sets it for the bodies the gateway and the admin
//! listeners send).

use std::io;
use std::net::SocketAddr;

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where to send requests: the socket address, the `host` header and the path.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
}

impl Target {
    /// Parses `http://host:port/path` (no TLS: the bench only talks to local processes).
    pub async fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("http://").context("only http:// URLs are supported")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let with_port = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .with_context(|| format!("resolving {host}"))?
            .next()
            .with_context(|| format!("{host} has no address"))?;
        Ok(Self { addr, host: host.to_owned(), path: path.to_owned() })
    }

    /// The same server, another path.
    pub fn with_path(&self, path: &str) -> Self {
        Self { path: path.to_owned(), ..self.clone() }
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// The server announced `connection: close`; the caller must reconnect.
    pub closed: bool,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        // Requests are written whole; Nagle would only add delay to every round trip.
        stream.set_nodelay(true)?;
        Ok(Self { stream, buf: Vec::with_capacity(8192), closed: false })
    }

    /// Writes one complete request (head and body) and reads its response.
    pub async fn round_trip(&mut self, request: &[u8], keep_body: bool) -> io::Result<Response> {
        self.stream.write_all(request).await?;
        self.buf.clear();
        loop {
            let parsed = parse_head(&self.buf)?;
            if let Some((head_len, status, body_len, close)) = parsed {
                while self.buf.len() < head_len + body_len {
                    self.read_more().await?;
                }
                self.closed = close;
                let body = if keep_body { self.buf[head_len..head_len + body_len].to_vec() } else { Vec::new() };
                return Ok(Response { status, body });
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> io::Result<()> {
        self.buf.reserve(4096);
        if self.stream.read_buf(&mut self.buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the server closed the connection"));
        }
        Ok(())
    }
}

/// `Some((head length, status, body length, connection: close))` once the head is complete.
fn parse_head(buf: &[u8]) -> io::Result<Option<(usize, u16, usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
    };
    let status = response.code.unwrap_or(0);
    let mut body_len = 0;
    let mut close = false;
    for h in response.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            body_len = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad content-length"))?;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(io::Error::new(io::ErrorKind::Unsupported, "chunked responses are not supported"));
        } else if h.name.eq_ignore_ascii_case("connection") && h.value.eq_ignore_ascii_case(b"close") {
            close = true;
        }
    }
    Ok(Some((head_len, status, body_len, close)))
}

/// One GET on a fresh connection: readiness probes and metric scrapes.
pub async fn get(addr: SocketAddr, path: &str) -> io::Result<Response> {
    let mut conn = Conn::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n");
    conn.round_trip(request.as_bytes(), true).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_read_only_once_complete_and_its_body_length_is_known() {
        let full = b"HTTP/1.1 202 Accepted\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        assert_eq!(parse_head(&full[..20]).unwrap(), None);
        assert_eq!(parse_head(full).unwrap(), Some((full.len() - 5, 202, 5, true)));
        let chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        assert!(parse_head(chunked).is_err());
    }
}
