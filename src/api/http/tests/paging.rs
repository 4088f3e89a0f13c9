//! Listing walks: paging styles, filters, duplicates.

use super::*;
use axum::extract::{Query, State};
use axum::http::HeaderMap as AxHeaders;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// A list endpoint with three paging styles, a filter that is ignored, and duplicates.
async fn folders(
    State(seen): State<Shared>,
    headers: AxHeaders,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    record(&seen, &headers);
    let parent = q.get("parentId").cloned().unwrap_or_default();
    let page: usize = q["page"].parse().unwrap();
    let size: usize = q["pageSize"].parse().unwrap();
    assert_eq!(size, 100);
    match parent.as_str() {
        // Bare envelope, filter ignored: a child of "p" sneaks in.
        "bare" => axum::Json(serde_json::json!({"data": [
            folder("1", Some("bare")), folder("2", Some("p")), folder("1", Some("bare"))
        ]}))
        .into_response(),
        // Paged without lastPage/total; server caps pageSize at 2.
        "nolast" => {
            let all: Vec<_> = (0..5)
                .map(|i| folder(&format!("n{i}"), Some("nolast")))
                .collect();
            let data: Vec<_> = all.iter().skip((page - 1) * 2).take(2).cloned().collect();
            axum::Json(serde_json::json!({"page": page, "pageSize": 2, "data": data}))
                .into_response()
        }
        // 120 items served 50 a page while the answer echoes the pageSize asked for
        // (with `total`, or with no count at all).
        "echo" | "echo-nototal" => {
            let all: Vec<_> = (0..120)
                .map(|i| folder(&format!("e{i:03}"), Some(parent.as_str())))
                .collect();
            let data: Vec<_> = all.iter().skip((page - 1) * 50).take(50).cloned().collect();
            let mut body = serde_json::json!({"page": page, "pageSize": size, "data": data});
            if parent == "echo" {
                body["total"] = 120.into();
            }
            axum::Json(body).into_response()
        }
        // 250 items, lastPage given; item 099 shows up again on page 2.
        _ => {
            let all: Vec<_> = (0..250).map(|i| folder(&format!("{i:03}"), None)).collect();
            let start = ((page - 1) * 100).saturating_sub(usize::from(page == 2));
            let take = 100 + usize::from(page == 2);
            let data: Vec<_> = all.iter().skip(start).take(take).cloned().collect();
            axum::Json(serde_json::json!({
                "total": 250, "page": page, "pageSize": 100, "lastPage": 3, "data": data
            }))
            .into_response()
        }
    }
}

#[tokio::test]
async fn lists_walk_pages_filter_and_dedup() {
    let seen = Shared::default();
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/folders", get(folders))
            .with_state(seen.clone()),
    )
    .await;
    let c = client(&base);

    let root = c.list_folders(&Parent::Root).await.unwrap();
    let ids: Vec<_> = root.iter().map(|f| f.id.clone()).collect();
    let want: Vec<_> = (0..250).map(|i| format!("{i:03}")).collect();
    assert_eq!(ids, want, "all pages, in order, no duplicates");
    assert_eq!(seen.calls.load(Ordering::SeqCst), 3);

    let bare = c
        .list_folders(&Parent::Folder("bare".into()))
        .await
        .unwrap();
    assert_eq!(
        bare,
        vec![serde_json::from_value(folder("1", Some("bare"))).unwrap()]
    );
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        4,
        "bare envelope: one call"
    );

    let nolast = c
        .list_folders(&Parent::Folder("nolast".into()))
        .await
        .unwrap();
    assert_eq!(nolast.len(), 5);
    assert_eq!(
        seen.calls.load(Ordering::SeqCst),
        7,
        "pages of 2,2,1: stop at the short page"
    );
    let auth = seen.auth.lock().unwrap();
    assert!(auth
        .iter()
        .all(|a| a.as_deref() == Some(&*format!("Bearer {TOKEN}"))));
}

#[tokio::test]
async fn a_page_size_echoed_but_not_served_does_not_end_the_walk_early() {
    let seen = Shared::default();
    let base = serve(
        Router::new()
            .route("/api/v1/media-manager/folders", get(folders))
            .with_state(seen.clone()),
    )
    .await;
    let c = client(&base);
    for parent in ["echo", "echo-nototal"] {
        let before = seen.calls.load(Ordering::SeqCst);
        let got = c
            .list_folders(&Parent::Folder(parent.into()))
            .await
            .unwrap();
        let ids: Vec<_> = got.iter().map(|f| f.id.clone()).collect();
        let want: Vec<_> = (0..120).map(|i| format!("e{i:03}")).collect();
        assert_eq!(ids, want, "{parent}: every item, in order");
        assert_eq!(
            seen.calls.load(Ordering::SeqCst) - before,
            3,
            "{parent}: pages of 50, 50, 20"
        );
    }
}
