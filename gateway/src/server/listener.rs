//! Listening sockets: one per worker on the same address (`SO_REUSEPORT`), so the kernel
//! spreads connections over workers without a shared accept lock.
//!
//! `SO_REUSEPORT` would also let a second process join the port and silently take half
//! the connections, so the address is first claimed by a socket without it: if anything
//! listens there already, that bind fails and the gateway does not start. The sanctioned
//! way to start a second process on the same address is a hand-over
//! ([`crate::handover`]): the sockets are inherited, not bound again, and sorted here
//! into the client and the admin listener.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

use crate::handover::{ADMIN_NAME, InheritedSocket, SERVER_NAME};

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

/// Whether a socket listening on `actual` serves a listener configured as `configured`:
/// the same address, where port 0 stands for any port and `0.0.0.0` and `[::]` for each
/// other (systemd's `ListenStream=PORT` is `[::]`, dual-stack).
pub(crate) fn fits(configured: SocketAddr, actual: SocketAddr) -> bool {
    let port = configured.port() == 0 || configured.port() == actual.port();
    let ip = configured.ip() == actual.ip()
        || (configured.ip().is_unspecified() && actual.ip().is_unspecified());
    port && ip
}

/// Inherited sockets sorted into the client listener's and the admin listener's.
#[derive(Debug, Default)]
pub(crate) struct Sorted {
    pub(crate) server: Vec<TcpListener>,
    pub(crate) admin: Option<TcpListener>,
}

/// Sorts `sockets` by their names (`server`, `admin`), or, for any other name, by
/// which of the configured addresses they have (a configured port beating port 0). A socket that fits no listener, fits
/// both, or has another address than its fellows is an error: the message says what to
/// change.
pub(crate) fn sort_inherited(
    sockets: Vec<InheritedSocket>,
    server: SocketAddr,
    admin: SocketAddr,
) -> Result<Sorted, String> {
    let mut sorted = Sorted::default();
    let mut server_addr: Option<SocketAddr> = None;
    for socket in sockets {
        let is_server = match socket.name.as_str() {
            SERVER_NAME if fits(server, socket.addr) => true,
            SERVER_NAME => {
                return Err(format!(
                    "{socket} is the client listener, but [server] listen is {server}"
                ));
            }
            ADMIN_NAME if fits(admin, socket.addr) => false,
            ADMIN_NAME => {
                return Err(format!(
                    "{socket} is the admin listener, but [admin] listen is {admin}"
                ));
            }
            _ => match (fits(server, socket.addr), fits(admin, socket.addr)) {
                (true, false) => true,
                (false, true) => false,
                // Both fit: a configured port (not 0) beats a wildcard.
                (true, true) if server.port() != 0 && admin.port() == 0 => true,
                (true, true) if admin.port() != 0 && server.port() == 0 => false,
                (true, true) => {
                    return Err(format!(
                        "{socket} fits both [server] listen ({server}) and [admin] listen \
                         ({admin}): name it \"{SERVER_NAME}\" or \"{ADMIN_NAME}\" \
                         (systemd: FileDescriptorName=)"
                    ));
                }
                (false, false) => {
                    return Err(format!(
                        "{socket} fits neither [server] listen ({server}) nor [admin] \
                         listen ({admin})"
                    ));
                }
            },
        };
        if is_server {
            if let Some(first) = server_addr
                && first != socket.addr
            {
                return Err(format!(
                    "{socket} and another inherited client socket ({first}) listen on \
                     different addresses; the gateway serves one"
                ));
            }
            server_addr = Some(socket.addr);
            sorted.server.push(socket.listener);
        } else if sorted.admin.is_some() {
            return Err(format!("{socket} is a second admin listener"));
        } else {
            sorted.admin = Some(socket.listener);
        }
    }
    Ok(sorted)
}

/// Deals `sockets` out to `workers` workers: round robin when there are at least as
/// many sockets (some workers then accept on several), else each worker gets one and
/// workers share (duplicates of the same socket, which the kernel lets any of them
/// accept from).
pub(crate) fn deal(sockets: Vec<TcpListener>, workers: usize) -> io::Result<Vec<Vec<TcpListener>>> {
    let workers = workers.max(1);
    let count = sockets.len();
    let mut dealt: Vec<Vec<TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    if count >= workers {
        for (i, socket) in sockets.into_iter().enumerate() {
            dealt[i % workers].push(socket);
        }
    } else if count > 0 {
        for i in count..workers {
            let shared = sockets[i % count].try_clone()?;
            dealt[i].push(shared);
        }
        for (i, socket) in sockets.into_iter().enumerate() {
            dealt[i].push(socket);
        }
    }
    Ok(dealt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inherited(name: &str, listener: TcpListener) -> InheritedSocket {
        InheritedSocket {
            fd: 3,
            name: name.to_owned(),
            addr: listener.local_addr().unwrap(),
            listener,
        }
    }

    #[test]
    fn fits_treats_port_zero_and_unspecified_addresses_as_wildcards() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(fits(a("127.0.0.1:0"), a("127.0.0.1:4000")));
        assert!(fits(a("127.0.0.1:4000"), a("127.0.0.1:4000")));
        assert!(fits(a("0.0.0.0:80"), a("[::]:80")));
        assert!(!fits(a("127.0.0.1:4000"), a("127.0.0.1:4001")));
        assert!(!fits(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(!fits(a("127.0.0.2:0"), a("127.0.0.1:80")));
    }

    #[test]
    fn inherited_sockets_are_sorted_by_name_then_by_address() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let (s, a) = (server.local_addr().unwrap(), admin.local_addr().unwrap());
        let any = "127.0.0.1:0".parse().unwrap();
        // By name, with port-0 configs that would fit either.
        let sorted = sort_inherited(
            vec![
                inherited("server", server.try_clone().unwrap()),
                inherited("admin", admin.try_clone().unwrap()),
            ],
            any,
            any,
        )
        .unwrap();
        assert_eq!(sorted.server.len(), 1);
        assert_eq!(sorted.admin.unwrap().local_addr().unwrap(), a);
        // By address when the name says nothing (systemd's default is the unit's name).
        let sorted = sort_inherited(
            vec![inherited("weir.socket", server.try_clone().unwrap())],
            s,
            "127.0.0.1:9901".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(sorted.server[0].local_addr().unwrap(), s);
        assert!(sorted.admin.is_none());
        // The configured port wins over the admin listener's port 0.
        let sorted =
            sort_inherited(vec![inherited("", server.try_clone().unwrap())], s, any).unwrap();
        assert_eq!(sorted.server.len(), 1);
        // Ambiguous, mismatched, or fitting nothing: errors that say what to do.
        let both =
            sort_inherited(vec![inherited("", server.try_clone().unwrap())], any, any).unwrap_err();
        assert!(both.contains("FileDescriptorName"), "{both}");
        let wrong = sort_inherited(
            vec![inherited("server", server.try_clone().unwrap())],
            a,
            any,
        )
        .unwrap_err();
        assert!(wrong.contains("[server] listen is"), "{wrong}");
        let neither = sort_inherited(vec![inherited("x", server)], a, a).unwrap_err();
        assert!(neither.contains("fits neither"), "{neither}");
    }

    #[test]
    fn sockets_are_dealt_to_any_number_of_workers() {
        let group = bind_reuseport("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = group[0].local_addr().unwrap();
        let clones = |n: usize| -> Vec<TcpListener> {
            group[..n].iter().map(|l| l.try_clone().unwrap()).collect()
        };
        let sizes =
            |dealt: &Vec<Vec<TcpListener>>| -> Vec<usize> { dealt.iter().map(Vec::len).collect() };
        assert_eq!(sizes(&deal(clones(3), 3).unwrap()), [1, 1, 1]);
        assert_eq!(sizes(&deal(clones(3), 2).unwrap()), [2, 1]);
        let shared = deal(clones(1), 4).unwrap();
        assert_eq!(sizes(&shared), [1, 1, 1, 1]);
        assert!(shared.iter().all(|w| w[0].local_addr().unwrap() == addr));
    }

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
