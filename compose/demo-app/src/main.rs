//! `demo-app`: the service the seed scenario scales. Standard library only,
//! so it links statically against musl and runs in a `FROM scratch` image.
//!
//! - `demo-app serve [addr]` (default `0.0.0.0:8080`): `GET /work?ms=N`
//!   burns N ms of CPU (default 200) and answers with the container's
//!   hostname; `GET /health` answers 200; `GET /` answers the hostname;
//!   `GET /metrics` gives Prometheus `demo_app_busy_seconds_total` (the
//!   wall time `/work` has spent burning), `demo_app_cpu_seconds_total` (the
//!   CPU time the process has used, from `/proc/self/stat`: the container's
//!   CPU, as the app is its only process) and `demo_app_requests_total`
//!   (`/work` requests served, so a load balancer's split can be seen).
//! - `demo-app check [path]`: the image's `HEALTHCHECK`: exits 0 if
//!   `GET http://127.0.0.1:8080{path}` (default `/health`) answers 200.
//! - `demo-app load URL [clients] [pause_ms]`: the load generator: `clients`
//!   (default 4) loops of `GET URL` (an `http://host:port/path`), each
//!   pausing `pause_ms` (default 0) between requests, until killed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Microseconds `/work` has spent burning CPU.
static BUSY_US: AtomicU64 = AtomicU64::new(0);
/// `/work` requests served.
static REQUESTS: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        None | Some("serve") => serve(args.get(1).map_or("0.0.0.0:8080", String::as_str)),
        Some("check") => std::process::exit(check(args.get(1).map_or("/health", String::as_str))),
        Some("load") => load(
            args.get(1).map_or("http://lb:8080/work", String::as_str),
            args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4),
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(0),
        ),
        Some(other) => {
            eprintln!(
                "usage: demo-app [serve [addr] | check [path] | load URL [clients] [pause_ms]]; unknown `{other}`"
            );
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
            REQUESTS.fetch_add(1, Ordering::Relaxed);
            ("200 OK", format!("worked {ms} ms on {}\n", hostname()))
        }
        "/" => ("200 OK", format!("{}\n", hostname())),
        "/metrics" => (
            "200 OK",
            format!(
                "# HELP demo_app_busy_seconds_total Wall time spent in /work.\n\
                 # TYPE demo_app_busy_seconds_total counter\n\
                 demo_app_busy_seconds_total {}\n\
                 # HELP demo_app_cpu_seconds_total CPU time used by the process (user + system).\n\
                 # TYPE demo_app_cpu_seconds_total counter\n\
                 demo_app_cpu_seconds_total {}\n\
                 # HELP demo_app_requests_total /work requests served.\n\
                 # TYPE demo_app_requests_total counter\n\
                 demo_app_requests_total {}\n",
                BUSY_US.load(Ordering::Relaxed) as f64 / 1e6,
                cpu_seconds(),
                REQUESTS.load(Ordering::Relaxed),
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

/// User + system CPU seconds of this process, from `/proc/self/stat`
/// (fields 14 and 15, in clock ticks: USER_HZ, 100 on Linux).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The command name (field 2) may hold spaces; count after its `)`.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // After `)`, field 3 (state) is index 0, so utime (14) is 11, stime 12.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// The load generator: `clients` threads asking for `url` in a loop.
fn load(url: &str, clients: usize, pause_ms: u64) {
    let Some((addr, path)) = url.strip_prefix("http://").map(|rest| {
        rest.split_once('/')
            .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")))
    }) else {
        eprintln!("demo-app load: `{url}` is not an http:// URL");
        std::process::exit(2)
    };
    eprintln!("demo-app: {clients} clients on {url}");
    let threads: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let (addr, path) = (addr.to_owned(), path.clone());
            std::thread::spawn(move || {
                loop {
                    if get(&addr, &path).is_err() {
                        // Not there yet (or restarting): try again shortly.
                        std::thread::sleep(Duration::from_millis(500));
                    }
                    std::thread::sleep(Duration::from_millis(pause_ms));
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// One `GET path` from `addr` (`host:port`, resolved each time, so the
/// name's addresses may change), read to the end.
fn get(addr: &str, path: &str) -> std::io::Result<()> {
    use std::net::ToSocketAddrs;
    let to = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = Vec::new();
    s.read_to_end(&mut response)?;
    if response.starts_with(b"HTTP/1.1 200") || response.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other("not 200"))
    }
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
