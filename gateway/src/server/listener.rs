//! Listening sockets: one per worker on the same address (`SO_REUSEPORT`), so the kernel
//! spreads connections over workers without a shared accept lock.
//!
//! `SO_REUSEPORT` would also let a second process join the port and silently take half
//! the connections, so the address is first claimed by a socket without it: if anything
//! listens there already, that bind fails and the gateway does not start.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds `count` listeners to `addr`, which nothing else may be listening on. With port 0
/// the first bind picks the port and the rest join it.
pub(crate) fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_unclaimed(addr)?;
    }
    let mut listeners = Vec::with_capacity(count);
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.set_tcp_nodelay(true)?;
        socket.bind(&addr.into())?;
        socket.listen(4096)?;
        let listener: TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}

/// Fails with `AddrInUse` when a socket already listens on `addr`, even one that allows
/// port sharing: a socket without `SO_REUSEPORT` cannot bind beside it.
fn ensure_unclaimed(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Connections of a previous run in TIME_WAIT do not count.
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "the address is already in use (is another weir running?)",
            )
        } else {
            e
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_group_on_a_listening_address_is_refused() {
        let first = bind_reuseport("127.0.0.1:0".parse().unwrap(), 2).unwrap();
        let addr = first[0].local_addr().unwrap();
        let second = bind_reuseport(addr, 2).expect_err("the address is taken");
        assert_eq!(second.kind(), io::ErrorKind::AddrInUse);
        assert!(second.to_string().contains("another weir"), "{second}");
        drop(first);
        assert!(
            bind_reuseport(addr, 2).is_ok(),
            "free again once the first closes"
        );
    }
}
