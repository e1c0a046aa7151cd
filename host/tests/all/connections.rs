//! The HTTP edge under slow, idle, oversized and numerous clients, on raw
//! sockets: what a hostile client can hold, and for how long.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::{Host, PATIENCE, Receiver, Site, endpoint};

/// A site with no flows and these `[http]` settings.
fn site_with(http: &str) -> Site {
    Site::new(&[], &format!("[http]\n{http}\n"))
}

async fn connect(host: &Host) -> TcpStream {
    TcpStream::connect(&host.addr).await.unwrap()
}

/// Reads until the server closes the connection (or resets it); returns
/// what it sent. Meanwhile writes one byte of `trickle` every 200 ms, as a
/// slowloris client does, to show that bytes do not keep a head alive.
/// Panics if the connection is still open after [`PATIENCE`].
async fn wait_closed(stream: &mut TcpStream, trickle: &[u8]) -> String {
    let mut received = Vec::new();
    let mut trickle = trickle.iter();
    let closed = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            tokio::select! {
                read = stream.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                },
                () = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(byte) = trickle.next() {
                        let _ = stream.write_all(&[*byte]).await;
                    }
                }
            }
        }
    })
    .await;
    let received = String::from_utf8_lossy(&received).into_owned();
    assert!(
        closed.is_ok(),
        "the connection is still open after {PATIENCE:?}; it got {received:?}"
    );
    received
}

/// Reads one response to a request whose body is `ok`-sized or known to
/// end with `end`; returns the bytes read.
async fn read_until(stream: &mut TcpStream, end: &str) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&received).contains(end) {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "closed before {end:?}: {:?}",
                String::from_utf8_lossy(&received)
            );
            received.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let received = String::from_utf8_lossy(&received).into_owned();
    assert!(read.is_ok(), "no {end:?} after {PATIENCE:?}: {received:?}");
    received
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: flowhost\r\n\r\n";

#[tokio::test]
async fn a_half_sent_head_is_closed_after_the_header_timeout() {
    let site = site_with("header_read_timeout = \"1s\"\nidle_timeout = \"1h\"");
    let host = site.start().await;

    let mut slow = connect(&host).await;
    slow.write_all(b"POST /endpoint/x HTTP/1.1\r\nHost: flowhost\r\nX-Slow: ")
        .await
        .unwrap();
    // Trickled header bytes, one every 200 ms, for longer than PATIENCE if
    // they were all sent: the head never ends.
    let trickle = vec![b'a'; 1000];
    let answer = wait_closed(&mut slow, &trickle).await;
    assert!(!answer.contains(" 2"), "{answer}");

    // The same for a client that stops in the middle of the HTTP/2
    // preface, before hyper knows which protocol it speaks.
    let mut preface = connect(&host).await;
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    wait_closed(&mut preface, &[]).await;

    // The server is fine.
    let mut fine = connect(&host).await;
    fine.write_all(HEALTHZ).await.unwrap();
    assert!(
        read_until(&mut fine, "ok")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let site = site_with("header_read_timeout = \"1s\"\nidle_timeout = \"1s\"");
    let host = site.start().await;

    // Opened, and nothing sent.
    let mut silent = connect(&host).await;
    assert_eq!(wait_closed(&mut silent, &[]).await, "");

    // Kept alive after a request, and nothing more sent.
    let mut kept = connect(&host).await;
    kept.write_all(HEALTHZ).await.unwrap();
    let answer = read_until(&mut kept, "ok").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("connection: close"), "{answer}");
    assert_eq!(wait_closed(&mut kept, &[]).await, "");
}

/// hyper reads a request with both `Content-Length` and `Transfer-Encoding`
/// as chunked and closes the connection after answering it (RFC 9112,
/// section 6.3), so bytes that a proxy reading the length would take for a
/// second request are never read as one.
#[tokio::test]
async fn a_request_with_both_lengths_is_read_as_chunked_and_its_connection_closed() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["echo"], &endpoint("echo", "echo", &receiver));
    let host = site.start().await;
    let url = host.url("echo");
    let path = &url[url.find("/endpoint/").unwrap()..];

    let message = |text: &str| format!(r#"{{"userId":"u","sessionId":"s","text":"{text}"}}"#);
    let smuggled = message("smuggled");
    let second = format!(
        "POST {path} HTTP/1.1\r\nHost: flowhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let first = message("chunked");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: flowhost\r\nContent-Type: application/json\r\n\
         Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n0\r\n\r\n{second}",
        first.len()
    );
    let mut stream = connect(&host).await;
    stream.write_all(request.as_bytes()).await.unwrap();
    let answer = wait_closed(&mut stream, &[]).await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");

    crate::support::send(&url, "s", "after").await;
    let texts: Vec<_> = receiver
        .wait_for(2)
        .await
        .iter()
        .map(|r| r.text().to_owned())
        .collect();
    assert_eq!(texts, ["chunked", "after"]);
}

#[tokio::test]
async fn an_oversized_head_is_refused() {
    let site = site_with("max_header_size = \"16 KiB\"");
    let host = site.start().await;

    // One header over the head's size limit (hyper's default is ~400 KB).
    let mut big = connect(&host).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: flowhost\r\nX-Big: {}\r\n\r\n",
        "b".repeat(32 << 10)
    );
    // The server may close before it has read all of it.
    let _ = big.write_all(head.as_bytes()).await;
    let answer = wait_closed(&mut big, &[]).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );

    // More header fields than allowed (hyper's default is 100).
    let mut many = connect(&host).await;
    let mut head = String::from("GET /healthz HTTP/1.1\r\nHost: flowhost\r\n");
    for i in 0..80 {
        head.push_str(&format!("X-Header-{i}: {i}\r\n"));
    }
    head.push_str("\r\n");
    let _ = many.write_all(head.as_bytes()).await;
    let answer = wait_closed(&mut many, &[]).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
}

#[tokio::test]
async fn past_max_connections_new_connections_wait_for_one_to_close() {
    let site =
        site_with("max_connections = 2\nheader_read_timeout = \"1h\"\nidle_timeout = \"1h\"");
    let host = site.start().await;

    // Two connections, each served once and kept open.
    let mut first = connect(&host).await;
    let mut second = connect(&host).await;
    for held in [&mut first, &mut second] {
        held.write_all(HEALTHZ).await.unwrap();
        assert!(read_until(held, "ok").await.starts_with("HTTP/1.1 200"));
    }
    host.wait_for_log(&["connection limit reached", "max_connections=2"])
        .await;

    // A third one connects (the kernel's backlog takes it) but is not
    // served while both are open.
    let mut third = connect(&host).await;
    third.write_all(HEALTHZ).await.unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(500), third.read(&mut buf)).await;
    assert!(early.is_err(), "served past the limit: {early:?}");

    // Once one closes, it is.
    drop(first);
    assert!(
        read_until(&mut third, "ok")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // And the one still open is still served.
    second.write_all(HEALTHZ).await.unwrap();
    assert!(
        read_until(&mut second, "ok")
            .await
            .starts_with("HTTP/1.1 200")
    );
}

#[tokio::test]
async fn request_bodies_being_read_share_a_byte_budget() {
    let receiver = Receiver::start().await;
    let site = Site::new(
        &["echo"],
        &format!(
            "max_body_size = \"1 KiB\"\n[http]\nmax_buffered_body_bytes = \"2 KiB\"\n{}",
            endpoint("open", "echo", &receiver)
        ),
    );
    let host = site.start().await;
    let url = host.url("open");
    let path = &url[url.find("/endpoint/").unwrap()..];
    let body = format!(
        r#"{{"userId":"u","sessionId":"s","text":"{}"}}"#,
        "t".repeat(900)
    );
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: flowhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );

    // Two slow bodies: each is let in (100 Continue: its body is being
    // read) and sends half of its body.
    let mut slow = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&host).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        read_until(&mut stream, "100 Continue\r\n\r\n").await;
        stream
            .write_all(&body.as_bytes()[..body.len() / 2])
            .await
            .unwrap();
        slow.push(stream);
    }

    // A third body does not fit: 503 with Retry-After, before its body.
    let mut third = connect(&host).await;
    third.write_all(head.as_bytes()).await.unwrap();
    let answer = read_until(&mut third, "}").await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");

    // The first finishes its body and is accepted; its share is given back.
    let mut first = slow.remove(0);
    first
        .write_all(&body.as_bytes()[body.len() / 2..])
        .await
        .unwrap();
    let answer = read_until(&mut first, "}").await;
    assert!(answer.contains("HTTP/1.1 202"), "{answer}");

    // So there is room for another.
    let mut fourth = connect(&host).await;
    fourth
        .write_all(format!("{head}{body}").as_bytes())
        .await
        .unwrap();
    let answer = read_until(&mut fourth, "}").await;
    assert!(answer.contains("HTTP/1.1 202"), "{answer}");
    receiver.wait_for(2).await;
}

#[tokio::test]
async fn running_out_of_file_descriptors_is_logged_and_survived() {
    let site = site_with("header_read_timeout = \"1h\"\nidle_timeout = \"1h\"");
    // A hard limit, which flowhost cannot raise, well below max_connections.
    let host = site
        .start_under(&["prlimit", "--nofile=128:128", "--"])
        .await;
    host.wait_for_log(&["flows folder loaded"]).await;

    // More connections than it has descriptors for: the kernel completes
    // them all (the listen backlog), and accepting them fails part way.
    let mut held = Vec::new();
    for _ in 0..160 {
        held.push(connect(&host).await);
    }
    host.wait_for_log(&["cannot accept connections"]).await;

    // Once they are gone, it accepts and serves again.
    drop(held);
    host.wait_for_log(&["accepting connections again"]).await;
    let mut fine = connect(&host).await;
    fine.write_all(HEALTHZ).await.unwrap();
    assert!(
        read_until(&mut fine, "ok")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Each run of failures is logged once, when it starts, and its end once:
    // the two lines alternate. (A descriptor freed by other work can end a
    // run early and start another: one line each, still.)
    let log = host.log();
    let marks: Vec<&str> = log
        .lines()
        .filter_map(|line| {
            if line.contains("cannot accept connections") {
                Some("failing")
            } else if line.contains("accepting connections again") {
                Some("again")
            } else {
                None
            }
        })
        .collect();
    assert_eq!(marks.first(), Some(&"failing"), "{log}");
    assert!(
        marks.windows(2).all(|pair| pair[0] != pair[1]),
        "one line per run of failures, not per failure:\n{log}"
    );
}

/// Not a regression test: serving connections ourselves must keep what
/// `axum::serve` did on SIGTERM.
#[tokio::test]
async fn a_stop_answers_requests_in_progress_and_accepts_no_more() {
    let receiver = Receiver::start().await;
    let site = Site::new(&["echo"], &endpoint("open", "echo", &receiver));
    let host = site.start().await;
    let url = host.url("open");
    let path = &url[url.find("/endpoint/").unwrap()..];
    let body = r#"{"userId":"u","sessionId":"s","text":"in flight"}"#;

    // A request in progress: its head read, half of its body sent.
    let mut in_flight = connect(&host).await;
    in_flight
        .write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: flowhost\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    read_until(&mut in_flight, "100 Continue\r\n\r\n").await;
    in_flight.write_all(&body.as_bytes()[..10]).await.unwrap();
    // And an idle one, which must not hold up the stop.
    let mut idle = connect(&host).await;
    idle.write_all(HEALTHZ).await.unwrap();
    read_until(&mut idle, "ok").await;

    host.sigterm();
    host.wait_for_log(&["stopping: no new requests"]).await;
    let refused = tokio::time::timeout(PATIENCE, async {
        while TcpStream::connect(&host.addr).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(refused.is_ok(), "still accepting after the stop");
    assert_eq!(wait_closed(&mut idle, &[]).await, "");

    in_flight.write_all(&body.as_bytes()[10..]).await.unwrap();
    let answer = read_until(&mut in_flight, "}").await;
    assert!(answer.contains("HTTP/1.1 202"), "{answer}");
    host.wait_for_log(&["stopped"]).await;
}

/// Not a regression test: HTTP/2 with prior knowledge must still be
/// served now that hyper-util's auto builder tells the protocols apart.
#[tokio::test]
async fn http2_with_prior_knowledge_is_still_served() {
    let site = site_with("");
    let host = site.start().await;
    flowhost::tls::install_crypto_provider();
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for _ in 0..3 {
        let response = client
            .get(format!("http://{}/healthz", host.addr))
            .send()
            .await
            .unwrap();
        assert_eq!(response.version(), reqwest::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.unwrap(), "ok");
    }
}
