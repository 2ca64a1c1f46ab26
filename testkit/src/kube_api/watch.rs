//! `GET /api/v1/nodes?watch=true`: a chunked stream of one JSON event per line, from a
//! resourceVersion (or synthetic ADDED events for the current state), with bookmarks, the 410
//! ERROR event of a compacted resourceVersion, `timeoutSeconds`, and the end of every watch when
//! the server stops.
// The error of these handlers is the HTTP response itself, made once per request.
#![allow(clippy::result_large_err)]
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::api::{
    Reply, Shared, at_error, bad_request, expired, label_selector, lock, name_selector, parse_rv,
    status,
};
use super::store::{At, Change};

fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

/// `?watch=true`: a chunked stream of one JSON event per line.
pub(super) fn watch(shared: &Arc<Shared>, q: &HashMap<String, String>) -> Reply {
    label_selector(q)?;
    let only = name_selector(q)?;
    if q.get("sendInitialEvents").is_some_and(|v| v == "true") {
        return Err(status(
            422,
            "Invalid",
            "sendInitialEvents: Forbidden: sendInitialEvents is not served by this test API server (WatchList)",
            None,
        ));
    }
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let timeout = match q.get("timeoutSeconds").filter(|s| !s.is_empty()) {
        Some(t) => Duration::from_secs(
            t.parse()
                .map_err(|_| bad_request(&format!("invalid timeoutSeconds \"{t}\"")))?,
        ),
        None => shared.default_watch_timeout,
    };
    let rv_param = q.get("resourceVersion").filter(|s| !s.is_empty()).cloned();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(1024);
    let store = lock(&shared.store);
    let live = store.tx.subscribe();
    // What to send first: synthetic ADDED events for the current state (no resourceVersion,
    // or "0"), or the changes after the given one.
    let mut first: Vec<Bytes> = Vec::new();
    let mut last_sent = store.resource_version();
    let keep = |name: &str| only.as_deref().is_none_or(|o| o == name);
    match rv_param.as_deref() {
        None | Some("0") => {
            for (name, obj) in store.objects_at(last_sent).unwrap_or_default() {
                if keep(&name) {
                    first.push(event_line("ADDED", &obj));
                }
            }
        }
        Some(r) => {
            let rv = parse_rv(r)?;
            match store.check(rv) {
                Ok(()) => {
                    for c in store.changes_after(rv) {
                        if keep(&c.name) {
                            first.push(event_line(c.kind.as_str(), &c.object));
                        }
                    }
                }
                Err(At::Compacted { requested, oldest }) => {
                    first.push(event_line("ERROR", &expired(requested, oldest)));
                    last_sent = u64::MAX;
                }
                Err(e @ At::TooLarge { .. }) => return Err(at_error(e)),
            }
        }
    }
    drop(store);
    let stopped = lock(&shared.stopped).clone();
    let shared = Arc::clone(shared);
    tokio::spawn(async move {
        for line in first {
            if tx.send(Ok(line)).await.is_err() {
                return;
            }
        }
        if last_sent == u64::MAX {
            return;
        }
        stream_changes(
            &shared, tx, live, last_sent, only, bookmarks, timeout, stopped,
        )
        .await;
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut r = Response::new(Body::from_stream(stream));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::TRANSFER_ENCODING,
        HeaderValue::from_static("chunked"),
    );
    Ok(r)
}

#[allow(clippy::too_many_arguments)]
async fn stream_changes(
    shared: &Shared,
    tx: mpsc::Sender<Result<Bytes, Infallible>>,
    mut live: broadcast::Receiver<Change>,
    mut last_sent: u64,
    only: Option<String>,
    bookmarks: bool,
    timeout: Duration,
    stopped: CancellationToken,
) {
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut tick = tokio::time::interval(shared.bookmark_interval);
    tick.tick().await;
    let send = |c: &Change| {
        (only.as_deref().is_none_or(|o| o == c.name))
            .then(|| event_line(c.kind.as_str(), &c.object))
    };
    loop {
        tokio::select! {
            _ = stopped.cancelled() => return,
            _ = &mut deadline => return,
            _ = tx.closed() => return,
            change = live.recv() => match change {
                Ok(c) if c.rv > last_sent => {
                    last_sent = c.rv;
                    if let Some(line) = send(&c)
                        && tx.send(Ok(line)).await.is_err()
                    {
                        return;
                    }
                }
                Ok(_) => {}
                // A watcher too slow for the event rate is dropped, as the watch cache does.
                Err(_) => return,
            },
            _ = tick.tick(), if bookmarks => {
                // Every change up to `current` is already in the channel (changes are sent
                // under the store lock): send them, then the bookmark.
                let current = lock(&shared.store).resource_version();
                while let Ok(c) = live.try_recv() {
                    if c.rv > last_sent {
                        last_sent = c.rv;
                        if let Some(line) = send(&c)
                            && tx.send(Ok(line)).await.is_err()
                        {
                            return;
                        }
                    }
                }
                let bookmark = json!({"kind": "Node", "apiVersion": "v1",
                    "metadata": {"resourceVersion": current.max(last_sent).to_string()}});
                if tx.send(Ok(event_line("BOOKMARK", &bookmark))).await.is_err() {
                    return;
                }
            }
        }
    }
}
