//! The two transports of the host<->enclave link, behind one stream type:
//! a Unix socket (hsm and dev modes, and every test) and vsock (an AWS
//! Nitro Enclave and its parent instance). The framed protocol above
//! ([`crate::link`]) is the same on both, so the vsock path differs from
//! the tested one only in how the socket is made.

use crate::link::LinkAddr;
use std::io;
use tokio::io::{AsyncRead, AsyncWrite};

/// A connected link, whichever the transport.
pub trait LinkIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> LinkIo for T {}

/// A connected link stream.
pub type LinkStream = Box<dyn LinkIo>;

/// Where the enclave accepts its host.
pub enum LinkListener {
    /// A Unix socket, owner-only (0600).
    Unix(tokio::net::UnixListener),
    /// A vsock port.
    Vsock(tokio_vsock::VsockListener),
}

/// The vsock address of a link address (none for a Unix one).
pub fn vsock_addr(addr: &LinkAddr) -> Option<tokio_vsock::VsockAddr> {
    match addr {
        LinkAddr::Vsock { cid, port } => Some(tokio_vsock::VsockAddr::new(*cid, *port)),
        LinkAddr::Unix(_) => None,
    }
}

impl LinkListener {
    /// Listens at `addr`; a stale Unix socket file from a previous run is
    /// replaced.
    pub fn bind(addr: &LinkAddr) -> io::Result<LinkListener> {
        match addr {
            LinkAddr::Unix(path) => {
                if path.exists() {
                    std::fs::remove_file(path)?;
                }
                let listener = tokio::net::UnixListener::bind(path)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
                Ok(LinkListener::Unix(listener))
            }
            LinkAddr::Vsock { .. } => {
                let vsock = vsock_addr(addr).expect("a vsock address");
                Ok(LinkListener::Vsock(tokio_vsock::VsockListener::bind(vsock)?))
            }
        }
    }

    /// The next host connection.
    pub async fn accept(&mut self) -> io::Result<LinkStream> {
        Ok(match self {
            LinkListener::Unix(l) => Box::new(l.accept().await?.0),
            LinkListener::Vsock(l) => Box::new(l.accept().await?.0),
        })
    }
}

/// Connects to the enclave at `addr`.
pub async fn connect(addr: &LinkAddr) -> io::Result<LinkStream> {
    Ok(match addr {
        LinkAddr::Unix(path) => Box::new(tokio::net::UnixStream::connect(path).await?),
        LinkAddr::Vsock { .. } => Box::new(tokio_vsock::VsockStream::connect(vsock_addr(addr).expect("a vsock address")).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vsock address keeps the configured CID and port (the socket
    /// itself is never opened here: the machines' vsock device is not ours).
    #[test]
    fn vsock_addresses_carry_cid_and_port() {
        let addr: LinkAddr = "vsock:16:5000".parse().unwrap();
        let vsock = vsock_addr(&addr).unwrap();
        assert_eq!((vsock.cid(), vsock.port()), (16, 5000));
        let any: LinkAddr = "vsock:4294967295:5000".parse().unwrap();
        assert_eq!(vsock_addr(&any).unwrap().cid(), tokio_vsock::VMADDR_CID_ANY);
        assert!(vsock_addr(&"unix:/tmp/x".parse().unwrap()).is_none());
    }
}
