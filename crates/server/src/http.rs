//! The HTTP/JSON API on the HTTP port, after VoltDB's: `GET` or `POST` to
//! `/api/1.0/` or `/api/2.0/` with
//!
//! * `Procedure` — the procedure to call (required),
//! * `Parameters` — its parameters as a JSON array,
//! * `User` and `Password`, or `Hashedpassword` (hex SHA-256 or SHA-1 of the
//!   password) when the server has users,
//! * `jsonp` — a callback name to wrap the answer in.
//!
//! The answer is a JSON object: `status`, `statusstring`, `appstatus`,
//! `appstatusstring`, and `results`, whose shape depends on the version, as
//! in VoltDB:
//!
//! * 1.0: an array, one object per result table with its `status`,
//!   `schema` (column `name` and VoltDB wire `type`) and `data` (rows as
//!   arrays);
//! * 2.0: an object keyed by the table's position (`"0"`, `"1"`, …), each
//!   an array of rows as objects keyed by column name.
//!
//! Timestamps are microseconds since the epoch, DECIMALs strings, VARBINARY
//! hex strings. A refused login answers 401.

use crate::connection::authenticate_plain;
use crate::convert::STATUS_GRACEFUL_FAILURE;
use crate::ServerContext;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response as HttpResponse};
use axum::routing::get;
use axum::{Form, Router};
use joule_common::{DataType, Value};
use joule_txn::{Response, ResponseSink};
use joule_wire::VoltType;
use serde_json::{json, Map, Value as Json};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

type Args = HashMap<String, String>;

pub(crate) async fn serve(listener: TcpListener, ctx: Arc<ServerContext>) {
    let mut app = Router::new();
    for (path, version) in [
        ("/api/1.0/", ApiVersion::V1),
        ("/api/1.0", ApiVersion::V1),
        ("/api/2.0/", ApiVersion::V2),
        ("/api/2.0", ApiVersion::V2),
    ] {
        app = app.route(
            path,
            get(move |state, query| get_call(state, query, version))
                .post(move |state, query, form| post_call(state, query, form, version)),
        );
    }
    let app = app
        .route("/metrics", get(metrics))
        .route("/", get(console_page))
        .route("/console/stats", get(console_stats))
        .with_state(ctx.clone());
    let mut shutdown = ctx.shutdown.subscribe();
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        eprintln!("joule: HTTP server failed: {e}");
    }
}

/// The web console: one page, embedded in the binary, that polls
/// `/console/stats` and draws its charts itself (no outside scripts).
async fn console_page() -> HttpResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], include_str!("console.html")).into_response()
}

async fn console_stats(State(ctx): State<Arc<ServerContext>>) -> HttpResponse {
    match tokio::task::spawn_blocking(move || crate::metrics::console_json(&ctx)).await {
        Ok(v) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "statistics failed").into_response(),
    }
}

/// `/metrics`: Prometheus text, gathered off the I/O threads.
async fn metrics(State(ctx): State<Arc<ServerContext>>) -> HttpResponse {
    match tokio::task::spawn_blocking(move || crate::metrics::prometheus(&ctx)).await {
        Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "metrics failed").into_response(),
    }
}

/// Which of VoltDB's JSON answer shapes a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ApiVersion {
    V1,
    V2,
}

async fn get_call(
    State(ctx): State<Arc<ServerContext>>,
    Query(args): Query<Args>,
    version: ApiVersion,
) -> HttpResponse {
    call(ctx, args, version).await
}

async fn post_call(
    State(ctx): State<Arc<ServerContext>>,
    Query(mut args): Query<Args>,
    Form(form): Form<Args>,
    version: ApiVersion,
) -> HttpResponse {
    args.extend(form);
    call(ctx, args, version).await
}

/// Hands one answer to the waiting request.
struct Reply(std::sync::Mutex<Option<oneshot::Sender<Response>>>);

impl ResponseSink for Reply {
    fn deliver(&self, _handle: u64, response: Response) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(response);
        }
    }
}

async fn call(ctx: Arc<ServerContext>, args: Args, version: ApiVersion) -> HttpResponse {
    let jsonp = args.get("jsonp").cloned();
    let user = args.get("User").cloned().unwrap_or_default();
    let allowed = authenticate_plain(
        &ctx.config.users,
        &user,
        args.get("Password").map(String::as_str),
        args.get("Hashedpassword").map(String::as_str),
    );
    if !allowed {
        let body = failure_json(version, STATUS_GRACEFUL_FAILURE, "[J4005 42501] authentication failed");
        return respond(StatusCode::UNAUTHORIZED, body, jsonp);
    }
    let Some(procedure) = args.get("Procedure").cloned() else {
        return respond(
            StatusCode::OK,
            failure_json(version, STATUS_GRACEFUL_FAILURE, "Procedure was not given"),
            jsonp,
        );
    };
    let params = match args.get("Parameters").map(|p| parse_params(p)).transpose() {
        Ok(p) => p.unwrap_or_default(),
        Err(e) => return respond(StatusCode::OK, failure_json(version, STATUS_GRACEFUL_FAILURE, &e), jsonp),
    };
    if ctx.paused.load(std::sync::atomic::Ordering::Relaxed) {
        let body =
            failure_json(version, crate::convert::STATUS_SERVER_UNAVAILABLE, "the database is paused (admin mode)");
        return respond(StatusCode::OK, body, jsonp);
    }
    if let Some(e) = crate::cluster::refused_here(&ctx, &procedure) {
        return respond(
            StatusCode::OK,
            failure_json(version, crate::convert::refusal_status(&e), &e.to_string()),
            jsonp,
        );
    }
    if matches!(procedure.as_str(), "@Shutdown" | "@Pause" | "@Resume" | "@StopNode" | "@ElasticRemove")
        || crate::durable::needs_admin(&procedure)
    {
        let body = failure_json(
            version,
            STATUS_GRACEFUL_FAILURE,
            "[J4005 42501] admin procedures are not available over HTTP",
        );
        return respond(StatusCode::OK, body, jsonp);
    }
    let (tx, rx) = oneshot::channel();
    let sink: Arc<dyn ResponseSink> = Arc::new(Reply(std::sync::Mutex::new(Some(tx))));
    let mut client = ctx.host.client();
    if crate::durable::handles(&procedure) {
        crate::durable::invoke(&ctx, &mut client, &procedure, params, 0, sink);
    } else {
        client.call_async(&procedure, params, 0, sink);
    }
    let body = match rx.await {
        Ok(r) => response_json(&r, version),
        Err(_) => failure_json(version, crate::convert::STATUS_SERVER_UNAVAILABLE, "the server is shutting down"),
    };
    respond(StatusCode::OK, body, jsonp)
}

fn respond(code: StatusCode, body: Json, jsonp: Option<String>) -> HttpResponse {
    let text = body.to_string();
    match jsonp.filter(|f| !f.is_empty() && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')) {
        Some(f) => (code, [(header::CONTENT_TYPE, "application/javascript")], format!("{f}({text})")).into_response(),
        None => (code, [(header::CONTENT_TYPE, "application/json")], text).into_response(),
    }
}

/// `Parameters`: a JSON array of numbers, strings, booleans, nulls and
/// arrays of those (an array parameter, as for `IN ?`).
fn parse_params(text: &str) -> Result<Vec<Value>, String> {
    let parsed: Json = serde_json::from_str(text).map_err(|e| format!("Parameters is not valid JSON: {e}"))?;
    let Json::Array(items) = parsed else {
        return Err("Parameters must be a JSON array".to_string());
    };
    items.into_iter().map(|v| json_param(v, true)).collect()
}

fn json_param(v: Json, array_allowed: bool) -> Result<Value, String> {
    match v {
        Json::Null => Ok(Value::Null),
        Json::Bool(b) => Ok(Value::Boolean(b)),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Ok(Value::Integer(i)),
            None => n.as_f64().map(Value::Float).ok_or_else(|| format!("{n} is not a usable number")),
        },
        Json::String(s) => Ok(Value::String(s)),
        Json::Array(items) if array_allowed => {
            Ok(Value::Array(items.into_iter().map(|v| json_param(v, false)).collect::<Result<Vec<_>, _>>()?.into()))
        }
        other => Err(format!("parameter {other} is neither a number, a string, a boolean, null nor an array of those")),
    }
}

fn failure_json(version: ApiVersion, status: i8, message: &str) -> Json {
    let results = match version {
        ApiVersion::V1 => json!([]),
        ApiVersion::V2 => json!({}),
    };
    json!({"status": status, "statusstring": message, "appstatus": -128, "appstatusstring": null, "results": results})
}

fn cell(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Boolean(b) => json!(i64::from(*b)),
        Value::Integer(i) => json!(i),
        Value::Float(f) => json!(f),
        Value::Decimal(d) => json!(d.to_string()),
        Value::String(s) => json!(s),
        Value::Binary(b) => json!(b.iter().map(|x| format!("{x:02X}")).collect::<String>()),
        Value::Timestamp(t) => json!(t),
        Value::Array(items) => Json::Array(items.iter().map(cell).collect()),
    }
}

fn response_json(r: &Response, version: ApiVersion) -> Json {
    let results = match version {
        ApiVersion::V1 => results_v1(r),
        ApiVersion::V2 => results_v2(r),
    };
    json!({
        "status": r.status as i8,
        "statusstring": r.status_string(),
        "appstatus": r.app_status,
        "appstatusstring": r.app_status_string,
        "results": results,
    })
}

/// 2.0: `{"0": [{"COLUMN": value, …}, …], "1": …}`.
fn results_v2(r: &Response) -> Json {
    let mut tables = Map::new();
    for (i, t) in r.results.iter().enumerate() {
        let rows = t
            .rows
            .iter()
            .map(|row| Json::Object(t.columns.iter().zip(row).map(|(c, v)| (c.name.clone(), cell(v))).collect()))
            .collect();
        tables.insert(i.to_string(), Json::Array(rows));
    }
    Json::Object(tables)
}

/// 1.0: `[{"status": -128, "schema": [{"name", "type"}, …], "data": [[…], …]}, …]`.
fn results_v1(r: &Response) -> Json {
    let tables = r
        .results
        .iter()
        .map(|t| {
            let schema: Vec<Json> = t
                .columns
                .iter()
                .map(|c| json!({"name": c.name, "type": VoltType::of(c.data_type.unwrap_or(DataType::Varchar)).code()}))
                .collect();
            let data: Vec<Json> = t.rows.iter().map(|row| Json::Array(row.iter().map(cell).collect())).collect();
            let mut m = Map::new();
            m.insert("status".into(), json!(-128));
            m.insert("schema".into(), Json::Array(schema));
            m.insert("data".into(), Json::Array(data));
            Json::Object(m)
        })
        .collect();
    Json::Array(tables)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_a_json_array() {
        assert_eq!(
            parse_params(r#"[1, "a", null, 2.5, true]"#).unwrap(),
            vec![Value::Integer(1), Value::String("a".into()), Value::Null, Value::Float(2.5), Value::Boolean(true)]
        );
        assert!(parse_params("{}").is_err());
        let array = parse_params(r#"[[1, "a"]]"#).unwrap();
        assert_eq!(array, vec![Value::Array(vec![Value::Integer(1), Value::String("a".into())].into())]);
        assert!(parse_params("[[[1]]]").is_err());
        assert!(parse_params(r#"[{"a": 1}]"#).is_err());
        assert!(parse_params("[1,").is_err());
    }
}
