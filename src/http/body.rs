//! Moving message bodies after their head: known lengths are spliced, chunked
//! bodies are passed through unchanged while [`ChunkedScanner`] finds their
//! end (chunk data of a useful size is spliced too, only the framing is read
//! into a buffer). When either side is a TLS client, bytes cannot be spliced:
//! they go through one 64 KiB buffer from the worker's free list.

use std::io;
use std::time::Duration;

use monoio::time::Instant;

use crate::proxy::splice::{splice_exact, splice_to_eof, PipePool, SpliceError};

use super::chunked::{ChunkError, ChunkedScanner};
use super::io::Io;

/// Chunk data at least this large (and not yet buffered) is spliced rather
/// than read and written.
const SPLICE_CHUNK_MIN: u64 = 16 * 1024;

/// Why a body could not be forwarded.
#[derive(Debug)]
pub enum BodyError {
    /// Reading the sender failed, it closed early, or it stalled.
    Src(io::Error),
    /// Writing the receiver failed or stalled.
    Dst(io::Error),
    /// The sender's chunked framing is invalid.
    Framing(ChunkError),
}

impl std::fmt::Display for BodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BodyError::Src(e) => write!(f, "reading body: {e}"),
            BodyError::Dst(e) => write!(f, "writing body: {e}"),
            BodyError::Framing(e) => write!(f, "chunked body: {e}"),
        }
    }
}

impl From<SpliceError> for BodyError {
    fn from(e: SpliceError) -> BodyError {
        match e {
            SpliceError::Src(e) => BodyError::Src(e),
            SpliceError::Dst(e) => BodyError::Dst(e),
        }
    }
}

/// Where a body moves and how long either side may stall.
pub struct Pipe<'a, 'b> {
    pub pipes: &'a PipePool,
    pub src: &'a mut Io<'b>,
    pub dst: &'a mut Io<'b>,
    pub stall: Duration,
}

impl Pipe<'_, '_> {
    /// Forwards exactly `n` more body bytes, which are still in `src`.
    pub async fn length(&mut self, n: u64) -> Result<(), BodyError> {
        if self.src.is_tls() || self.dst.is_tls() {
            return self.copy(Some(n)).await.map(|_| ());
        }
        splice_exact(
            self.pipes,
            self.src.stream(),
            self.dst.stream(),
            n,
            self.stall,
        )
        .await
        .map_err(BodyError::from)
    }

    /// Forwards everything until `src` closes; returns the byte count.
    pub async fn until_close(&mut self) -> Result<u64, BodyError> {
        if self.src.is_tls() || self.dst.is_tls() {
            return self.copy(None).await;
        }
        splice_to_eof(self.pipes, self.src.stream(), self.dst.stream(), self.stall)
            .await
            .map_err(BodyError::from)
    }

    /// Reads and writes (through TLS on one side): exactly `limit` bytes,
    /// or until `src` closes.
    async fn copy(&mut self, limit: Option<u64>) -> Result<u64, BodyError> {
        // 64 KiB at a time: one read from the plain side, and toward a TLS
        // client four records sealed into one write.
        let mut buf = crate::tls::bufs::take_body();
        let r = async {
            let mut moved = 0u64;
            loop {
                let cap = buf.capacity() as u64;
                let want = match limit {
                    Some(n) if moved >= n => return Ok(moved),
                    Some(n) => (n - moved).min(cap),
                    None => cap,
                };
                buf.clear();
                let deadline = Instant::now() + self.stall;
                match self.src.read(&mut buf, want as usize, deadline).await {
                    Ok(0) if limit.is_none() => return Ok(moved),
                    Ok(0) => {
                        return Err(BodyError::Src(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "peer closed inside a body",
                        )))
                    }
                    Ok(_) => {}
                    Err(e) => return Err(BodyError::Src(e)),
                }
                let len = buf.len();
                self.dst
                    .write_all(&mut buf, 0..len, self.stall)
                    .await
                    .map_err(BodyError::Dst)?;
                moved += len as u64;
            }
        }
        .await;
        crate::tls::bufs::put_body(buf);
        r
    }

    /// Forwards the rest of a chunked body whose earlier bytes `scanner` has
    /// seen. `buf` must hold no unforwarded body bytes on entry; on success it
    /// holds exactly the bytes that followed the body (the next message).
    /// Returns the body bytes moved.
    pub async fn chunked(
        &mut self,
        scanner: &mut ChunkedScanner,
        buf: &mut Vec<u8>,
    ) -> Result<u64, BodyError> {
        buf.clear();
        let mut moved = 0u64;
        while !scanner.is_done() {
            let data = scanner.data_remaining();
            if data >= SPLICE_CHUNK_MIN {
                self.length(data).await?;
                scanner.consume_data(data);
                moved += data;
                continue;
            }
            let deadline = Instant::now() + self.stall;
            let cap = buf.capacity().max(super::buf::BUF_SIZE);
            match self.src.read(buf, cap, deadline).await {
                Ok(0) => {
                    return Err(BodyError::Src(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "peer closed inside a chunked body",
                    )))
                }
                Ok(_) => {}
                Err(e) => return Err(BodyError::Src(e)),
            }
            let p = scanner.advance(buf).map_err(BodyError::Framing)?;
            self.dst
                .write_all(buf, 0..p.consumed, self.stall)
                .await
                .map_err(BodyError::Dst)?;
            moved += p.consumed as u64;
            buf.drain(..p.consumed);
        }
        Ok(moved)
    }
}
