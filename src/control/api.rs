//! The HTTP API: routing, authentication and the JSON bodies of each endpoint. The paths are
//! listed in docs/operations.md ("Control plane").
//!
//! A VIP in a path is its canonical text with the `/` before the protocol percent-encoded
//! (`/v1/vips/192.0.2.10:80%2Ftcp`), or left as it is: a path segment `tcp` or `udp` right
//! after the VIP's `ADDR:PORT` is joined to it (`/v1/vips/192.0.2.10:80/tcp/backends`).
//! Brackets of IPv6 addresses may be sent as they are or percent-encoded.

use hdrhistogram::Histogram;

use super::diff::diff;
use super::messages::{
    ApplyReport, BackendList, BackendReply, BackendRequest, Done, ErrorBody, SnapshotReport,
    StatsReport, VipList, VipReply, VipRequest, VipView, WeightRequest,
};
use super::metrics::{self, MetricsInput};
use super::plane::Plane;
use super::state::{parse_backend, parse_vip, ApiError};
use crate::addr::{BackendAddr, VipKey};
use crate::config::{self, Token};

/// Largest request body accepted (a configuration file with thousands of backends fits).
pub const MAX_BODY: usize = 4 << 20;

/// A request, as the router sees it.
pub struct ApiRequest<'a> {
    pub method: &'a str,
    /// Path and query, as sent.
    pub url: &'a str,
    /// The `Authorization` header's value.
    pub authorization: Option<&'a str>,
    pub body: &'a [u8],
}

pub struct ApiResponse {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

impl ApiResponse {
    fn json<T: serde::Serialize>(status: u16, value: &T) -> ApiResponse {
        let mut body = serde_json::to_vec_pretty(value).unwrap_or_else(|e| {
            format!("{{\"error\": \"cannot serialize the response: {e}\"}}").into_bytes()
        });
        body.push(b'\n');
        ApiResponse {
            status,
            content_type: JSON,
            body,
        }
    }

    pub fn error(e: ApiError) -> ApiResponse {
        ApiResponse::json(e.status, &ErrorBody { error: e.message })
    }

    fn text(content_type: &'static str, body: String) -> ApiResponse {
        ApiResponse {
            status: 200,
            content_type,
            body: body.into_bytes(),
        }
    }
}

/// The message of a 413 answer.
pub fn too_large() -> String {
    format!("request body larger than {MAX_BODY} bytes; split the change into smaller requests")
}

/// Checks the `Authorization` header against the daemon's token (none: anyone may call).
pub fn authorize(token: Option<&Token>, authorization: Option<&str>) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Ok(());
    };
    // The scheme is case-insensitive (RFC 9110); the token is not.
    let presented = authorization
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    if presented.is_some_and(|p| token.matches(p)) {
        return Ok(());
    }
    let problem = if presented.is_some() {
        "wrong"
    } else {
        "missing"
    };
    Err(ApiError {
        status: 401,
        message: format!("{problem} API token; send the daemon's token as `Authorization: Bearer TOKEN` (the CLI: --token or FULCRUM_TOKEN)"),
    })
}

/// Answers one complete request: what the control thread does with each request the HTTP
/// side hands it, and what [`super::DetachedApi`] does without one.
pub fn handle(plane: &mut Plane, request: &ApiRequest) -> ApiResponse {
    if request.body.len() > MAX_BODY {
        return ApiResponse::error(ApiError {
            status: 413,
            message: too_large(),
        });
    }
    route(plane, request)
}

/// Answers one request.
pub fn route(plane: &mut Plane, request: &ApiRequest) -> ApiResponse {
    if let Err(e) = authorize(plane.token(), request.authorization) {
        return ApiResponse::error(e);
    }
    match dispatch(plane, request) {
        Ok(response) => response,
        Err(e) => {
            if e.status >= 500 {
                tracing::error!("{} {}: {}", request.method, request.url, e.message);
            }
            ApiResponse::error(e)
        }
    }
}

/// The path's segments, percent-decoded, with a VIP's `ADDR:PORT` and `PROTO` joined.
fn segments(path: &str) -> Result<Vec<String>, ApiError> {
    let mut out: Vec<String> = Vec::new();
    for raw in path.split('/').filter(|s| !s.is_empty()) {
        let segment = percent_decode(raw)?;
        let joins_vip = out.len() == 3
            && out[1] == "vips"
            && !out[2].contains('/')
            && (segment.eq_ignore_ascii_case("tcp") || segment.eq_ignore_ascii_case("udp"));
        if joins_vip {
            out[2] = format!("{}/{}", out[2], segment);
        } else {
            out.push(segment);
        }
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<String, ApiError> {
    // The decoder passes a malformed escape through as it is; the API refuses it instead.
    let malformed = text.match_indices('%').any(|(i, _)| {
        !text
            .get(i + 1..i + 3)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return Err(ApiError::bad_request(format!(
            "bad percent-encoding in path segment {text:?}"
        )));
    }
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|decoded| decoded.into_owned())
        .map_err(|_| ApiError::bad_request(format!("path segment {text:?} is not UTF-8")))
}

fn query_flag(query: &str, name: &str) -> Result<bool, ApiError> {
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if key == name {
            return match value {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                other => Err(ApiError::bad_request(format!(
                    "{name}={other} is not a boolean; use {name}=true or {name}=false"
                ))),
            };
        }
    }
    Ok(false)
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8], example: &str) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(format!(
            "the request needs a JSON body, e.g. {example}"
        )));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!("malformed JSON body: {e}; send e.g. {example}"))
    })
}

const VIP_EXAMPLE: &str = r#"{"vip": "192.0.2.10:80/tcp", "encap": "ipip"}"#;
const BACKEND_EXAMPLE: &str = r#"{"address": "198.51.100.7", "weight": 1}"#;
const WEIGHT_EXAMPLE: &str = r#"{"weight": 5}"#;

fn not_allowed(method: &str, path: &str, allowed: &str) -> ApiError {
    ApiError {
        status: 405,
        message: format!("{method} is not allowed on {path}; use {allowed}"),
    }
}

fn dispatch(plane: &mut Plane, request: &ApiRequest) -> Result<ApiResponse, ApiError> {
    let (path, query) = request.url.split_once('?').unwrap_or((request.url, ""));
    let parts = segments(path)?;
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    let method = request.method;
    match (method, parts.as_slice()) {
        ("GET", ["metrics"]) => Ok(metrics_text(plane)),
        (_, ["metrics"]) => Err(not_allowed(method, path, "GET")),

        ("GET", ["v1", "vips"]) => Ok(ApiResponse::json(
            200,
            &VipList {
                version: plane.version(),
                vips: plane.vip_views(),
            },
        )),
        ("POST", ["v1", "vips"]) => {
            let body: VipRequest = json_body(request.body, VIP_EXAMPLE)?;
            let (_, key) = plane.change(|desired, ids| {
                let key = desired.add_vip(&body, ids)?;
                let n = body.backends.len();
                Ok((format!("vip {key} added ({}, {n} backends)", body.encap), key))
            })?;
            Ok(ApiResponse::json(201, &vip_reply(plane, &key)?))
        }
        (_, ["v1", "vips"]) => Err(not_allowed(method, path, "GET or POST")),

        ("GET", ["v1", "vips", vip]) => {
            let key = parse_vip(vip)?;
            Ok(ApiResponse::json(200, &vip_reply(plane, &key)?))
        }
        ("DELETE", ["v1", "vips", vip]) => {
            let key = parse_vip(vip)?;
            let (version, message) = plane.change(|desired, _| {
                let removed = desired.remove_vip(&key)?;
                let message =
                    format!("vip {key} removed (with {} backends)", removed.backends.len());
                Ok((message.clone(), message))
            })?;
            Ok(ApiResponse::json(200, &Done { version, message }))
        }
        (_, ["v1", "vips", _]) => Err(not_allowed(method, path, "GET or DELETE")),

        ("GET", ["v1", "vips", vip, "backends"]) => {
            let key = parse_vip(vip)?;
            let backends = vip_reply(plane, &key)?.vip.backends;
            Ok(ApiResponse::json(
                200,
                &BackendList {
                    version: plane.version(),
                    vip: key,
                    backends,
                },
            ))
        }
        ("POST", ["v1", "vips", vip, "backends"]) => {
            let key = parse_vip(vip)?;
            let body: BackendRequest = json_body(request.body, BACKEND_EXAMPLE)?;
            let (_, address) = plane.change(|desired, ids| {
                let address = desired.add_backend(&key, &body, ids)?;
                let weight = body.weight.unwrap_or(1);
                let message = format!("backend {address} added to vip {key} (weight {weight})");
                Ok((message, address))
            })?;
            Ok(ApiResponse::json(201, &backend_reply(plane, &key, &address)?))
        }
        (_, ["v1", "vips", _, "backends"]) => Err(not_allowed(method, path, "GET or POST")),

        ("GET", ["v1", "vips", vip, "backends", backend]) => {
            let (key, address) = (parse_vip(vip)?, parse_backend(backend)?);
            Ok(ApiResponse::json(200, &backend_reply(plane, &key, &address)?))
        }
        ("PATCH", ["v1", "vips", vip, "backends", backend]) => {
            let (key, address) = (parse_vip(vip)?, parse_backend(backend)?);
            let body: WeightRequest = json_body(request.body, WEIGHT_EXAMPLE)?;
            plane.change(|desired, _| {
                let old = desired.vip(&key)?.backend(&address).map(|b| b.weight);
                desired.set_weight(&key, &address, body.weight)?;
                let old = old.map_or_else(String::new, |w| format!("{w} -> "));
                let message = format!("backend {address} of vip {key}: weight {old}{}", body.weight);
                Ok((message, ()))
            })?;
            Ok(ApiResponse::json(200, &backend_reply(plane, &key, &address)?))
        }
        ("DELETE", ["v1", "vips", vip, "backends", backend]) => {
            let (key, address) = (parse_vip(vip)?, parse_backend(backend)?);
            let (version, message) = plane.change(|desired, _| {
                desired.remove_backend(&key, &address)?;
                let message = format!("backend {address} removed from vip {key}");
                Ok((message.clone(), message))
            })?;
            Ok(ApiResponse::json(200, &Done { version, message }))
        }
        (_, ["v1", "vips", _, "backends", _]) => {
            Err(not_allowed(method, path, "GET, PATCH or DELETE"))
        }

        ("POST", ["v1", "vips", vip, "backends", backend, action @ ("drain" | "undrain")]) => {
            let (key, address) = (parse_vip(vip)?, parse_backend(backend)?);
            let drain = *action == "drain";
            plane.change(|desired, _| {
                desired.set_drained(&key, &address, drain)?;
                Ok((format!("backend {address} of vip {key} {action}ed"), ()))
            })?;
            Ok(ApiResponse::json(200, &backend_reply(plane, &key, &address)?))
        }
        (_, ["v1", "vips", _, "backends", _, "drain" | "undrain"]) => {
            Err(not_allowed(method, path, "POST"))
        }

        ("GET", ["v1", "health"]) => Ok(ApiResponse::json(200, &plane.health_report())),
        ("GET", ["v1", "stats"]) => {
            let (report, _, _) = stats(plane);
            Ok(ApiResponse::json(200, &report))
        }
        ("GET", ["v1", "snapshot"]) => Ok(ApiResponse::json(
            200,
            &SnapshotAnswer {
                report: plane.snapshot_report(),
                adoption: plane.adoption().stats().report(),
            },
        )),
        ("GET", ["v1", "config"]) => {
            let config = plane.running_config()?.redacted();
            let text = toml::to_string(&config)
                .map_err(|e| ApiError::internal(format!("cannot print the configuration: {e}")))?;
            Ok(ApiResponse::text(
                TEXT,
                format!("# fulcrum running configuration, snapshot version {}\n{text}", plane.version()),
            ))
        }
        ("POST", ["v1", "config"]) => {
            let dry_run = query_flag(query, "dry_run")?;
            let report = apply_config(plane, request.body, dry_run)?;
            Ok(ApiResponse::json(200, &report))
        }
        (_, ["v1", "health" | "stats" | "snapshot"]) => Err(not_allowed(method, path, "GET")),
        (_, ["v1", "config"]) => Err(not_allowed(method, path, "GET or POST")),
        _ => Err(ApiError::not_found(format!(
            "no such endpoint: {method} {path}; the API's paths start with /v1/vips, /v1/health, /v1/stats, /v1/config, /v1/snapshot or /metrics (docs/operations.md, \"Control plane\")"
        ))),
    }
}

/// `GET /v1/snapshot`: the workers' versions and how fast they adopt new ones.
#[derive(serde::Serialize)]
struct SnapshotAnswer<'a> {
    #[serde(flatten)]
    report: SnapshotReport,
    adoption: &'a super::adoption::AdoptionReport,
}

fn vip_reply(plane: &Plane, key: &VipKey) -> Result<VipReply, ApiError> {
    Ok(VipReply {
        version: plane.version(),
        vip: plane.vip_view(key)?,
    })
}

fn backend_reply(
    plane: &Plane,
    key: &VipKey,
    address: &BackendAddr,
) -> Result<BackendReply, ApiError> {
    let vip = vip_reply(plane, key)?.vip;
    let backend = vip
        .backends
        .into_iter()
        .find(|b| b.address == *address)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "backend {address} is not part of vip {key} (try: fulcrum backend list {key})"
            ))
        })?;
    Ok(BackendReply {
        version: plane.version(),
        vip: *key,
        backend,
    })
}

/// `GET /v1/stats`'s report, after the housekeeping that collects the workers' histograms,
/// with the VIP views and the burst histogram it was made from (`/metrics` shows them too).
fn stats(plane: &mut Plane) -> (StatsReport, Vec<VipView>, Histogram<u64>) {
    plane.housekeeping();
    let views = plane.vip_views();
    let burst = metrics::burst_histogram(plane.dataplane());
    let report = metrics::stats_report(
        plane.version(),
        plane.started().elapsed().as_secs_f64(),
        plane.dataplane(),
        &views,
        &burst,
        plane.api_counters().read(),
    );
    (report, views, burst)
}

fn metrics_text(plane: &mut Plane) -> ApiResponse {
    let (report, views, burst) = stats(plane);
    let health = plane.health_report();
    let workers = plane.worker_versions();
    let text = metrics::prometheus(&MetricsInput {
        report: &report,
        vips: &views,
        health: &health,
        workers: &workers,
        burst: &burst,
        adoption: plane.adoption().stats(),
    });
    ApiResponse::text(PROMETHEUS, text)
}

/// `POST /v1/config`: the file's VIPs replace the running ones, all at once or not at all.
fn apply_config(plane: &mut Plane, body: &[u8], dry_run: bool) -> Result<ApplyReport, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the configuration is not UTF-8 text"))?;
    let new =
        config::from_str(text, "request body").map_err(|e| ApiError::bad_request(e.to_string()))?;
    let base = plane.base();
    let mut restart_only = Vec::new();
    if new.dataplane != base.dataplane {
        restart_only.push("[dataplane]");
    }
    if new.ports != base.ports {
        restart_only.push("[[port]]");
    }
    if new.control != base.control {
        restart_only.push("[control]");
    }
    if !restart_only.is_empty() {
        return Err(ApiError::conflict(format!(
            "the file changes {}, which take effect only when fulcrum restarts; config apply changes [[vip]] tables only: make the other sections match the running configuration (fulcrum config show), or restart fulcrum with the new file",
            restart_only.join(" and ")
        )));
    }
    let running = plane.running_config()?;
    let changes = diff(&running.vips, &new.vips);
    if dry_run || changes.is_empty() {
        return Ok(ApplyReport {
            version: plane.version(),
            dry_run,
            applied: false,
            changes,
        });
    }
    let (version, ()) = plane.change(|desired, ids| {
        desired.replace_vips(&new.vips, ids)?;
        Ok((
            format!("configuration applied ({} changes)", changes.len()),
            (),
        ))
    })?;
    for change in &changes {
        tracing::info!(version, "version {version}: {change}");
    }
    Ok(ApplyReport {
        version,
        dry_run,
        applied: true,
        changes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vip_paths_take_either_form() {
        for path in [
            "/v1/vips/192.0.2.10:80%2Ftcp/backends",
            "/v1/vips/192.0.2.10:80%2ftcp/backends",
            "/v1/vips/192.0.2.10:80/tcp/backends",
            "/v1/vips/192.0.2.10%3A80%2Ftcp/backends/",
        ] {
            assert_eq!(
                segments(path).unwrap(),
                vec!["v1", "vips", "192.0.2.10:80/tcp", "backends"],
                "{path}"
            );
        }
        assert_eq!(
            segments("/v1/vips/%5B2001:db8::10%5D:443/udp/backends/%5B2001:db8::7%5D:443").unwrap(),
            vec![
                "v1",
                "vips",
                "[2001:db8::10]:443/udp",
                "backends",
                "[2001:db8::7]:443"
            ]
        );
        assert!(segments("/v1/vips/%zz").is_err());
    }

    #[test]
    fn query_flags() {
        assert!(query_flag("dry_run=true", "dry_run").unwrap());
        assert!(query_flag("x=1&dry_run", "dry_run").unwrap());
        assert!(!query_flag("", "dry_run").unwrap());
        assert!(query_flag("dry_run=maybe", "dry_run").is_err());
    }
}
