//! TLS for PostgreSQL connections, set up only when a server agrees to it.
//!
//! rustls (ring provider) with the operating system's certificate store through
//! rustls-platform-verifier (on Linux: `SSL_CERT_FILE` / `SSL_CERT_DIR` or the distribution's
//! bundle; the Keychain on macOS; the certificate store on Windows) — the roots native-tls used,
//! without linking libssl. Loading that store takes tens of milliseconds that every command
//! would otherwise pay before connecting, although a local server usually answers
//! `sslmode=prefer`'s request with "no TLS"; so the configuration is built when the server has
//! said yes (or when `sslmode=require` insists), and the handshake is tokio-postgres-rustls's
//! (SCRAM channel binding included).

use postgres::tls::{MakeTlsConnect, TlsConnect};
use postgres::Socket;
use rustls_platform_verifier::BuilderVerifierExt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The stream of an established TLS connection.
type Stream = <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream;

/// Hands out [`LazyTlsConnect`]s: no certificates are loaded until a TLS handshake starts.
#[derive(Debug, Clone, Copy, Default)]
pub struct LazyTls;

/// A TLS connection to one host, not yet set up.
#[derive(Debug)]
pub struct LazyTlsConnect {
    domain: String,
}

impl MakeTlsConnect<Socket> for LazyTls {
    type Stream = Stream;
    type TlsConnect = LazyTlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<LazyTlsConnect> {
        Ok(LazyTlsConnect {
            domain: domain.to_owned(),
        })
    }
}

impl TlsConnect<Socket> for LazyTlsConnect {
    type Stream = Stream;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Stream>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        let connect = client_config().map(|config| {
            let mut make = MakeRustlsConnect::new(config);
            MakeTlsConnect::<Socket>::make_tls_connect(&mut make, &self.domain)
                .unwrap_or_else(|never| match never {})
        });
        match connect {
            Ok(connect) => Box::pin(connect.connect(stream)),
            Err(e) => Box::pin(std::future::ready(Err(e))),
        }
    }
}

/// A client configuration that verifies the server's certificate chain and host name against
/// the operating system's roots.
fn client_config() -> io::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_platform_verifier())
        .map_err(io::Error::other)?
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use postgres::config::SslMode;
    use std::io::{Read, Write};

    /// The configuration builds: ring provider, the system's roots (the machine has a CA
    /// bundle, as any that connects with TLS must).
    #[test]
    fn client_config_loads_the_system_roots() {
        client_config().expect("a client configuration from the system's roots");
    }

    /// `sslmode=require` against a server that accepts TLS: after the server's "S" the client
    /// sends a TLS handshake record (a rustls ClientHello), and a server that then hangs up is
    /// an error, not a plain-text session.
    #[test]
    fn a_server_that_accepts_tls_gets_a_client_hello() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut request = [0u8; 8];
            socket.read_exact(&mut request).unwrap();
            socket.write_all(b"S").unwrap();
            let mut record = [0u8; 3];
            socket.read_exact(&mut record).unwrap();
            (request, record)
        });
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(port)
            .user("u")
            .dbname("d")
            .ssl_mode(SslMode::Require);
        assert!(config.connect(LazyTls).is_err());
        let (request, record) = server.join().unwrap();
        // SSLRequest: length 8, code 80877103.
        assert_eq!(request, [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]);
        // A TLS record of type handshake (22), protocol version 3.x.
        assert_eq!(record[..2], [0x16, 0x03], "{record:?}");
    }
}
