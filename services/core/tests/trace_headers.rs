//! Record headers through the embedded log: what carries a message's trace
//! context from stage to stage in `ternd`. Its own test binary, because
//! turning tracing on is process-wide.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use tern_core::embedded::{EmbeddedLog, EmbeddedLogConfig};
use tern_core::log::{EventLog, Record, StartFrom};

#[tokio::test]
async fn headers_come_back_with_their_records_once_tracing_is_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(&EmbeddedLogConfig {
        path: EmbeddedLog::path_in(dir.path()),
        partitions: 1,
        cache_bytes: 1 << 20,
    })
    .unwrap();
    let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let headers = vec![
        ("traceparent".to_owned(), Bytes::from(traceparent)),
        ("tracestate".to_owned(), Bytes::from_static(b"")),
    ];
    log.append(
        "t",
        vec![
            Record::new("k", "traced").with_headers(headers.clone()),
            Record::new("k", "plain"),
        ],
    )
    .await
    .unwrap();
    tern_core::trace::enable();
    let mut sub = log.subscribe("t", "g", StartFrom::Earliest).await.unwrap();
    let got = sub.poll(10).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].value, "traced");
    assert_eq!(got[0].headers, headers);
    assert_eq!(got[1].value, "plain");
    assert!(got[1].headers.is_empty());
}
