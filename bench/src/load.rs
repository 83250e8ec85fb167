//! A small HTTP/1.1 load driver for the ingest figure: prepared requests sent over a few
//! keep-alive connections, each connection one request at a time, every answer read in full
//! and checked. Plain tokio sockets, so the bench stays out of the `cc` room's reqwest and its
//! own cost per request is a write and a read (the requests are built and signed before the
//! clock starts).

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::BenchError;

/// A whole HTTP/1.1 `POST` request, ready to write.
pub fn post(addr: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// Send every request over `conns` connections (request i on connection i % conns) and require
/// `want` as every answer's status. Returns the time from the first write to the last answer.
pub async fn drive(
    addr: &str,
    requests: Vec<Vec<u8>>,
    conns: usize,
    want: u16,
) -> Result<Duration, BenchError> {
    let conns = conns.clamp(1, requests.len().max(1));
    let mut lanes: Vec<Vec<Vec<u8>>> = vec![Vec::new(); conns];
    for (i, r) in requests.into_iter().enumerate() {
        lanes[i % conns].push(r);
    }
    let mut sockets = Vec::with_capacity(conns);
    for _ in 0..conns {
        let s = TcpStream::connect(addr)
            .await
            .map_err(|e| BenchError::Setup(format!("connecting to {addr}: {e}")))?;
        s.set_nodelay(true)
            .map_err(|e| BenchError::Setup(format!("TCP_NODELAY: {e}")))?;
        sockets.push(s);
    }
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(conns);
    for (mut s, lane) in sockets.into_iter().zip(lanes) {
        tasks.push(tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            for req in lane {
                s.write_all(&req).await.map_err(io)?;
                let status = read_answer(&mut s, &mut buf).await?;
                if status != want {
                    return Err(BenchError::Setup(format!(
                        "ingest answered {status} (wanted {want}): {}",
                        String::from_utf8_lossy(&buf)
                    )));
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| BenchError::Setup(format!("load task: {e}")))??;
    }
    Ok(started.elapsed())
}

fn io(e: std::io::Error) -> BenchError {
    BenchError::Setup(format!("ingest connection: {e}"))
}

/// Read one answer (head and `Content-Length` body) from `s`; its body is left in `buf`.
async fn read_answer(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<u16, BenchError> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(BenchError::Setup(
                "ingest closed the connection before answering".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| BenchError::Setup(format!("not an HTTP answer: {head}")))?;
    let length = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .ok_or_else(|| BenchError::Setup(format!("an answer without Content-Length: {head}")))?;
    while buf.len() < head_end + length {
        let n = s.read(&mut chunk).await.map_err(io)?;
        if n == 0 {
            return Err(BenchError::Setup(
                "ingest closed the connection mid-answer".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.drain(..head_end);
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One keep-alive connection answering `statuses` in turn, each body split over two writes.
    async fn server(statuses: &'static [&'static str]) -> (String, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut chunk = [0u8; 1024];
            for status in statuses {
                // Each request ends with its 5-byte body "hello".
                while !seen.ends_with(b"hello") {
                    let n = s.read(&mut chunk).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    seen.extend_from_slice(&chunk[..n]);
                }
                seen.clear();
                let head = format!("HTTP/1.1 {status}\r\ncontent-length: 8\r\n\r\n{{\"a\":");
                s.write_all(head.as_bytes()).await.unwrap();
                s.write_all(b"12}").await.unwrap();
            }
        });
        (addr, task)
    }

    #[tokio::test]
    async fn answers_are_read_whole_over_keep_alive() {
        let (addr, task) = server(&["202 Accepted", "202 Accepted"]).await;
        let req = post(&addr, "/x", &[("Content-Type", "text/plain")], b"hello");
        let r = drive(&addr, vec![req.clone(), req], 1, 202).await;
        assert!(r.is_ok(), "{r:?}");
        task.await.unwrap();
    }

    #[tokio::test]
    async fn another_status_fails_the_run_and_names_it() {
        let (addr, task) = server(&["202 Accepted", "503 Service Unavailable"]).await;
        let req = post(&addr, "/x", &[], b"hello");
        let r = drive(&addr, vec![req.clone(), req], 1, 202).await;
        let e = r.expect_err("a 503 is not a 202").to_string();
        assert!(e.contains("503") && e.contains("{\"a\":12}"), "{e}");
        task.await.unwrap();
    }
}
