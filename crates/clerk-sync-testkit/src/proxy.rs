//! A TCP proxy on 127.0.0.1:0 in front of a real service, to cut or stall the path in tests
//! without touching the shared service itself.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

const OPEN: u8 = 0;
/// Existing connections are closed and new ones are refused (accepted, then dropped).
const CUT: u8 = 1;
/// Connections stay open but no byte is forwarded: a network partition as TCP sees it.
const STALLED: u8 = 2;

pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<AtomicU8>,
    changes: watch::Sender<u8>,
    task: tokio::task::JoinHandle<()>,
}

impl TcpProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let state = Arc::new(AtomicU8::new(OPEN));
        let (changes, _) = watch::channel(OPEN);
        let task = {
            let state = state.clone();
            let changes = changes.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    if state.load(Ordering::SeqCst) == CUT {
                        drop(client);
                        continue;
                    }
                    tokio::spawn(pipe(client, target, state.clone(), changes.subscribe()));
                }
            })
        };
        Self { addr, state, changes, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes every proxied connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.set(CUT);
    }

    /// Stops forwarding bytes while keeping the connections open.
    pub fn stall(&self) {
        self.set(STALLED);
    }

    pub fn restore(&self) {
        self.set(OPEN);
    }

    fn set(&self, value: u8) {
        self.state.store(value, Ordering::SeqCst);
        self.changes.send_replace(value);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.set(CUT);
        self.task.abort();
    }
}

async fn pipe(client: TcpStream, target: SocketAddr, state: Arc<AtomicU8>, mut changes: watch::Receiver<u8>) {
    let Ok(server) = TcpStream::connect(target).await else { return };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sbuf = vec![0u8; 16 * 1024];
    loop {
        if state.load(Ordering::SeqCst) == CUT {
            return;
        }
        if state.load(Ordering::SeqCst) == STALLED {
            // Hold the sockets open, read nothing, until the state changes.
            if changes.changed().await.is_err() {
                return;
            }
            continue;
        }
        tokio::select! {
            r = cr.read(&mut cbuf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if sw.write_all(&cbuf[..n]).await.is_err() { return },
            },
            r = sr.read(&mut sbuf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => if cw.write_all(&sbuf[..n]).await.is_err() { return },
            },
            r = changes.changed() => if r.is_err() { return },
        }
    }
}
