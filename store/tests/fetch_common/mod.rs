//! A tiny HTTP/1.1 server on 127.0.0.1 for the fetch tests (std only, one
//! thread per connection, `Connection: close`), with per-path hit counters.
//! Shared with the evaluator's and builder's fetch tests through `#[path]`.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a path answers.
#[derive(Clone)]
pub enum Route {
    Body(Vec<u8>),
    Redirect(String),
    Status(u16),
    /// Answers 503 to the first `n` requests, then the body.
    FailThen(usize, Vec<u8>),
    /// Sends the headers and part of the body, then goes silent.
    Stall(Vec<u8>),
}

pub struct Server {
    pub addr: SocketAddr,
    hits: Arc<Mutex<HashMap<String, usize>>>,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
    pub fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

pub fn serve(routes: Vec<(&str, Route)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let routes: Arc<HashMap<String, Route>> = Arc::new(
        routes
            .into_iter()
            .map(|(p, r)| (p.to_string(), r))
            .collect(),
    );
    let hits = Arc::new(Mutex::new(HashMap::new()));
    let h2 = hits.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let routes = routes.clone();
            let hits = h2.clone();
            std::thread::spawn(move || {
                let _ = handle(conn, &routes, &hits);
            });
        }
    });
    Server { addr, hits }
}

fn handle(
    mut conn: TcpStream,
    routes: &HashMap<String, Route>,
    hits: &Mutex<HashMap<String, usize>>,
) -> std::io::Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let n = {
        let mut m = hits.lock().unwrap();
        let e = m.entry(path.clone()).or_insert(0);
        *e += 1;
        *e
    };
    let respond = |conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        conn.write_all(head.as_bytes())?;
        conn.write_all(body)
    };
    match routes.get(&path) {
        None => respond(&mut conn, "404 Not Found", "", b"not found"),
        Some(Route::Body(b)) => respond(&mut conn, "200 OK", "", b),
        Some(Route::Redirect(to)) => {
            respond(&mut conn, "302 Found", &format!("Location: {to}\r\n"), b"")
        }
        Some(Route::Status(s)) => respond(&mut conn, &format!("{s} Status"), "", b"error"),
        Some(Route::FailThen(k, b)) => {
            if n <= *k {
                respond(&mut conn, "503 Service Unavailable", "", b"busy")
            } else {
                respond(&mut conn, "200 OK", "", b)
            }
        }
        Some(Route::Stall(b)) => {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                b.len()
            );
            conn.write_all(head.as_bytes())?;
            conn.write_all(&b[..b.len() / 2])?;
            conn.flush()?;
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
    }
}
