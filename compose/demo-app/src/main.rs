//! `demo-app`: the service the seed scenario scales. Standard library only,
//! so it links statically against musl and runs in a `FROM scratch` image.
//!
//! - `demo-app serve [addr]` (default `0.0.0.0:8080`): `GET /work?ms=N`
//!   burns N ms of CPU (default 200) and answers with the container's
//!   hostname; `GET /health` answers 200; `GET /` answers the hostname;
//!   `GET /metrics` gives Prometheus `demo_app_busy_seconds_total`, the CPU
//!   time `/work` has burned.
//! - `demo-app check [path]`: the image's `HEALTHCHECK`: exits 0 if
//!   `GET http://127.0.0.1:8080{path}` (default `/health`) answers 200.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Microseconds `/work` has spent burning CPU.
static BUSY_US: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(args.get(1).map_or("0.0.0.0:8080", String::as_str)),
        Some("check") => std::process::exit(check(args.get(1).map_or("/health", String::as_str))),
        Some(other) => {
            eprintln!("usage: demo-app [serve [addr] | check [path]]; unknown `{other}`");
            std::process::exit(2)
        }
    }
}

fn serve(addr: &str) {
    let listener = TcpListener::bind(addr).unwrap_or_else(|e| {
        eprintln!("demo-app: cannot listen on {addr}: {e}");
        std::process::exit(1)
    });
    eprintln!("demo-app: listening on {addr}");
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = handle(stream);
        });
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn handle(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // Drain the headers; requests here carry no body.
    let mut line = String::new();
    while reader.read_line(&mut line)? > 2 {
        line.clear();
    }
    let target = request_line.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match path {
        "/health" => ("200 OK", "ok\n".to_owned()),
        "/work" => {
            let ms = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("ms="))
                .and_then(|v| v.parse().ok())
                .unwrap_or(200u64);
            burn(Duration::from_millis(ms.min(10_000)));
            ("200 OK", format!("worked {ms} ms on {}\n", hostname()))
        }
        "/" => ("200 OK", format!("{}\n", hostname())),
        "/metrics" => (
            "200 OK",
            format!(
                "# HELP demo_app_busy_seconds_total CPU time spent in /work.\n\
                 # TYPE demo_app_busy_seconds_total counter\n\
                 demo_app_busy_seconds_total {}\n",
                BUSY_US.load(Ordering::Relaxed) as f64 / 1e6
            ),
        ),
        _ => ("404 Not Found", "not found\n".to_owned()),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Spin for `d` (what a CPU-heavy request looks like to Prometheus).
fn burn(d: Duration) {
    let start = Instant::now();
    let mut x: u64 = 1;
    while start.elapsed() < d {
        for _ in 0..10_000 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
    }
    BUSY_US.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
}

fn check(path: &str) -> i32 {
    let run = || -> std::io::Result<bool> {
        let mut s =
            TcpStream::connect_timeout(&"127.0.0.1:8080".parse().unwrap(), Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        s.read_to_string(&mut response)?;
        Ok(response.starts_with("HTTP/1.1 200"))
    };
    match run() {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => {
            eprintln!("demo-app check: {e}");
            1
        }
    }
}
