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

/// Resolves once `marker` appears in the log at or after `from`. Polls; a marker split across
/// two reads is still found because the tail of the previous read is kept.
pub async fn wait_for_marker(path: &Path, marker: &str, from: u64) {
    let needle = marker.as_bytes();
    let mut offset = from;
    let mut window: Vec<u8> = Vec::new();
    loop {
        match read_chunk(path, offset).await {
            Ok(chunk) if !chunk.is_empty() => {
                offset += chunk.len() as u64;
                window.extend_from_slice(&chunk);
                if contains(&window, needle) {
                    return;
                }
                let keep = needle.len().saturating_sub(1).min(window.len());
                window.drain(..window.len() - keep);
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

    #[tokio::test]
    async fn marker_split_across_writes_is_found_after_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        std::fs::write(&path, b"old boot READY\n").expect("write");
        let from = std::fs::metadata(&path).expect("meta").len();
        let p = path.clone();
        let waiter = tokio::spawn(async move { wait_for_marker(&p, "READY", from).await });
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !waiter.is_finished(),
            "marker from an earlier boot must not count"
        );
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"booting RE").expect("write");
        f.flush().expect("flush");
        tokio::time::sleep(Duration::from_millis(250)).await;
        f.write_all(b"ADY\n").expect("write");
        tokio::time::timeout(Duration::from_secs(5), waiter)
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
