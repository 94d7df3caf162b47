//! TLS for PostgreSQL connections, set up only when a server agrees to it.
//!
//! Building a native-tls connector loads the system's CA certificates: tens of milliseconds
//! that every command would otherwise pay before connecting, although a local server usually
//! answers `sslmode=prefer`'s request with "no TLS". Here the connector is built when the server
//! has said yes (or when `sslmode=require` insists), and connects exactly as
//! `postgres_native_tls` does.

use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::Socket;
use postgres_native_tls::{TlsConnector, TlsStream};
use std::future::Future;
use std::pin::Pin;

/// Hands out [`LazyTlsConnect`]s: no certificates are loaded until a TLS handshake starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct LazyTls;

/// A TLS connection to one host, not yet set up.
#[derive(Debug)]
pub struct LazyTlsConnect {
    domain: String,
}

impl MakeTlsConnect<Socket> for LazyTls {
    type Stream = TlsStream<Socket>;
    type TlsConnect = LazyTlsConnect;
    type Error = native_tls::Error;

    fn make_tls_connect(&mut self, domain: &str) -> Result<LazyTlsConnect, native_tls::Error> {
        Ok(LazyTlsConnect {
            domain: domain.to_owned(),
        })
    }
}

impl TlsConnect<Socket> for LazyTlsConnect {
    type Stream = TlsStream<Socket>;
    type Error = native_tls::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<TlsStream<Socket>, native_tls::Error>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        match native_tls::TlsConnector::new() {
            Ok(connector) => TlsConnector::new(connector, &self.domain).connect(stream),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}
