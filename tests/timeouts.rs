//! Read deadlines (HTTP_HEADER_TIMEOUT, HTTP_BODY_TIMEOUT) over raw TCP: a
//! client that sends part of a request and stalls, or trickles it, is cut
//! off, while well-behaved clients of the same server are served.

mod common;

use std::time::{Duration, Instant};

use common::{Backend, TestApp, PASSWORD};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_millis(400);
/// Scheduling slack on a busy 2-core machine; far below the 10 s default, so
/// a test passing proves the configured deadline was used.
const MARGIN: Duration = Duration::from_millis(1500);

async fn spawn() -> TestApp {
    TestApp::spawn_with(
        Backend::Sqlite,
        &[
            ("HTTP_HEADER_TIMEOUT", "400ms"),
            ("HTTP_BODY_TIMEOUT", "400ms"),
        ],
    )
    .await
}

/// Sends `first`, then reads until the server closes the connection.
/// Returns what it answered and how long after `first` the close came.
async fn send_and_wait_for_close(app: &TestApp, first: &[u8]) -> (String, Duration) {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    let started = Instant::now();
    let answer = read_to_close(&mut stream).await;
    (answer, started.elapsed())
}

async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    // A reset instead of a clean FIN also means "cut off".
    let read = tokio::time::timeout(TIMEOUT + MARGIN * 2, stream.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the server kept the stalled connection open");
    String::from_utf8_lossy(&answer).into_owned()
}

fn assert_cut_off_in_time(elapsed: Duration) {
    assert!(
        elapsed >= TIMEOUT - Duration::from_millis(50),
        "closed after {elapsed:?}, before the deadline: something else closed it"
    );
    assert!(elapsed < TIMEOUT + MARGIN, "closed only after {elapsed:?}");
}

async fn still_serves(app: &TestApp) {
    let res = app.get("/health").await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .post_json(
            "/api/auth/register",
            json!({"name": "Dr Jane Smith", "email": "jane@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_line_is_cut_off_after_the_header_timeout() {
    let app = spawn().await;
    let (answer, elapsed) = send_and_wait_for_close(&app, b"GET /hea").await;
    assert_cut_off_in_time(elapsed);
    assert!(!answer.contains("200 OK"), "{answer}");
    still_serves(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_end_are_cut_off_even_when_trickled() {
    let app = spawn().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    // One header line every 100 ms: each byte arrives well within the
    // deadline, but the headers as a whole do not.
    let trickle = async {
        for i in 0.. {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let line = format!("X-Slow-{i}: y\r\n");
            if stream.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let mut probe = [0u8; 1];
            // Closed by the server: reading gives EOF (or a reset).
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), stream.peek(&mut probe)).await
            {
                break;
            }
        }
    };
    tokio::time::timeout(TIMEOUT + MARGIN * 2, trickle)
        .await
        .expect("the server kept reading trickled headers");
    assert_cut_off_in_time(started.elapsed());
    still_serves(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let app = spawn().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    // The first answer arrives, then nothing more is asked.
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let started = Instant::now();
    let rest = read_to_close(&mut stream).await;
    assert_cut_off_in_time(started.elapsed());
    assert!(!rest.contains("HTTP/1.1"), "{rest}");
}

async fn expect_408(answer: &str) {
    let (head, body) = answer.split_once("\r\n\r\n").expect("a full HTTP answer");
    assert!(head.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    let body: Value = serde_json::from_str(body).expect("the API's JSON error body");
    assert_eq!(body["error"]["code"], "request_timeout", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_gets_408_and_the_connection_is_closed() {
    let app = spawn().await;
    let head = "POST /api/auth/login HTTP/1.1\r\nHost: localhost\r\n\
                Content-Type: application/json\r\nContent-Length: 100\r\n\r\n";
    let request = format!("{head}{{\"email\":");
    let (answer, elapsed) = send_and_wait_for_close(&app, request.as_bytes()).await;
    assert_cut_off_in_time(elapsed);
    expect_408(&answer).await;
    still_serves(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_body_gets_408_at_the_deadline_for_the_whole_body() {
    let app = spawn().await;
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /api/auth/register HTTP/1.1\r\nHost: localhost\r\n\
              Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
        )
        .await
        .unwrap();
    let started = Instant::now();
    let (reader, mut writer) = stream.split();
    // A space every 50 ms: never a gap near the deadline, yet the body as
    // a whole would take 50 s.
    let trickle = async {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if writer.write_all(b" ").await.is_err() {
                break;
            }
        }
    };
    let mut answer = Vec::new();
    let mut reader = reader;
    let read = async { reader.read_to_end(&mut answer).await };
    tokio::select! {
        () = trickle => {},
        _ = read => {},
        () = tokio::time::sleep(TIMEOUT + MARGIN * 2) => panic!("the trickled body was read for too long"),
    }
    // The answer may still be in flight when the writer sees the reset.
    let _ = tokio::time::timeout(MARGIN, reader.read_to_end(&mut answer)).await;
    assert_cut_off_in_time(started.elapsed());
    expect_408(&String::from_utf8_lossy(&answer)).await;
}
