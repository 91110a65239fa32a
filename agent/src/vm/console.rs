//! Serial console log: readiness detection and chunked reads for streaming.

use std::io::SeekFrom;
use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Largest chunk handed to a console stream (keeps messages well under transport limits).
pub const CHUNK: usize = 32 * 1024;
const POLL: Duration = Duration::from_millis(25);

/// Reads up to [`CHUNK`] bytes at `offset`; empty when there is nothing new (or no file yet).
pub async fn read_chunk(path: &Path, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset)).await?;
    let mut buf = vec![0; CHUNK];
    let n = file.read(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

/// Finds a marker in a byte stream fed in chunks of any size, keeping only the tail that a
/// marker split across two chunks needs.
pub struct MarkerScanner {
    needle: Vec<u8>,
    window: Vec<u8>,
}

impl MarkerScanner {
    pub fn new(marker: &str) -> Self {
        MarkerScanner {
            needle: marker.as_bytes().to_vec(),
            window: Vec::new(),
        }
    }

    /// Feeds the next chunk; true once the marker has been seen.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        self.window.extend_from_slice(chunk);
        if contains(&self.window, &self.needle) {
            return true;
        }
        let keep = self.needle.len().saturating_sub(1).min(self.window.len());
        self.window.drain(..self.window.len() - keep);
        false
    }
}

/// Resolves once `marker` appears in the log at or after `from`. Polls the file.
pub async fn wait_for_marker(path: &Path, marker: &str, from: u64) {
    let mut scanner = MarkerScanner::new(marker);
    let mut offset = from;
    loop {
        match read_chunk(path, offset).await {
            Ok(chunk) if !chunk.is_empty() => {
                offset += chunk.len() as u64;
                if scanner.feed(&chunk) {
                    return;
                }
            }
            _ => tokio::time::sleep(POLL).await,
        }
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn scanner_finds_a_marker_split_across_chunks_and_nothing_else() {
        let mut s = MarkerScanner::new("READY");
        assert!(!s.feed(b"booting R"));
        assert!(!s.feed(b""));
        assert!(!s.feed(b"EA"));
        assert!(s.feed(b"DY\n"));
        let mut s = MarkerScanner::new("READY");
        for chunk in [&b"RE"[..], b"AD", b"Y"] {
            let found = s.feed(chunk);
            assert_eq!(found, chunk == b"Y");
        }
        let mut s = MarkerScanner::new("READY");
        assert!(!s.feed(b"REA DY READ"));
        assert!(!s.feed(b"x READ"), "a partial marker does not count");
    }

    #[tokio::test]
    async fn marker_after_the_offset_is_found_and_one_before_it_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        std::fs::write(&path, b"old boot READY\n").expect("write");
        let from = std::fs::metadata(&path).expect("meta").len();
        assert_eq!(read_chunk(&path, from).await.expect("read"), b"");
        let p = path.clone();
        let waiter = tokio::spawn(async move { wait_for_marker(&p, "READY", from).await });
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"booting RE").expect("write");
        f.flush().expect("flush");
        f.write_all(b"ADY\n").expect("write");
        tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("marker found")
            .expect("join");
    }

    #[tokio::test]
    async fn missing_log_reads_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunk = read_chunk(&dir.path().join("none"), 0).await.expect("read");
        assert!(chunk.is_empty());
    }
}
