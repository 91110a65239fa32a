//! (e) raw TCP round trip on loopback: a fixed-size message echoed back on a kept-open
//! connection. TCP has no streams, so each call in flight has its own connection.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use crate::load::Echo;

/// An echo server that answers every read with the same bytes.
pub async fn server() -> anyhow::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 || socket.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok((addr, task))
}

/// A pool of connections, one per call in flight (each call takes a free one).
pub struct TcpEcho {
    free: Mutex<Vec<TcpStream>>,
    addr: SocketAddr,
}

impl TcpEcho {
    pub async fn connect(addr: SocketAddr, connections: usize) -> anyhow::Result<Arc<Self>> {
        let mut free = Vec::with_capacity(connections);
        for _ in 0..connections {
            let socket = TcpStream::connect(addr).await?;
            socket.set_nodelay(true)?;
            free.push(socket);
        }
        Ok(Arc::new(Self {
            free: Mutex::new(free),
            addr,
        }))
    }
}

impl Echo for TcpEcho {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        let taken = self.free.lock().await.pop();
        let mut socket = match taken {
            Some(socket) => socket,
            None => TcpStream::connect(self.addr).await?,
        };
        socket.write_all(&payload).await?;
        let mut reply = vec![0u8; payload.len()];
        socket.read_exact(&mut reply).await?;
        self.free.lock().await.push(socket);
        Ok(Bytes::from(reply))
    }
}
