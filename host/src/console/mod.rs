//! The operator's console: server-rendered HTML under `/ui`, no
//! JavaScript at all (the incident list refreshes itself with a meta tag),
//! its stylesheet embedded in the binary.
//!
//! Logging in takes an API token; the host keeps a session for it and
//! sets a cookie that is `HttpOnly` and `SameSite=Strict` and expires
//! (`admin.console_session_secs`, 8 h by default). Every form carries the
//! session's CSRF token and every POST checks it. A session has its
//! token's scope: a `read` login sees no control that changes anything,
//! and its POSTs are refused like the API's. Pages read the store and the
//! registry directly; what they change goes through the same calls as the
//! API.

pub(crate) mod pages;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Form, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};

pub use crate::api::Guard;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::api::ApiState;
use crate::api::auth::Principal;
use crate::config::TokenScope;

/// The session cookie's name.
pub const COOKIE: &str = "eventpulse_session";

/// Sessions kept at most; past it the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// Logged-in consoles, by session id. In memory: a restart logs everyone
/// out, which is the safe direction.
pub struct Sessions {
    live: Mutex<HashMap<String, Session>>,
    ttl: Duration,
}

/// One login.
#[derive(Debug, Clone)]
pub struct Session {
    /// Whose token logged in.
    pub principal: Principal,
    /// What every form of this session must carry.
    pub csrf: String,
    expires: Instant,
}

impl Session {
    /// Whether it may change things.
    pub fn admin(&self) -> bool {
        self.principal.scope == TokenScope::Admin
    }
}

impl Sessions {
    /// Sessions that last `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            live: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn create(&self, principal: Principal) -> (String, Session) {
        let id = hex::encode(rand::random::<[u8; 32]>());
        let session = Session {
            principal,
            csrf: hex::encode(rand::random::<[u8; 32]>()),
            expires: Instant::now() + self.ttl,
        };
        let mut live = self.live.lock().expect("sessions lock");
        let now = Instant::now();
        live.retain(|_, s| s.expires > now);
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            live.remove(&oldest);
        }
        live.insert(id.clone(), session.clone());
        (id, session)
    }

    fn get(&self, id: &str) -> Option<Session> {
        let mut live = self.live.lock().expect("sessions lock");
        match live.get(id) {
            Some(s) if s.expires > Instant::now() => Some(s.clone()),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    fn end(&self, id: &str) {
        self.live.lock().expect("sessions lock").remove(id);
    }
}

fn session_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// Pages need a live session: a GET without one goes to the login page, a
/// POST is refused. A POST also needs the `admin` scope.
pub(crate) async fn require_session(
    State(s): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let session = session_id(request.headers()).and_then(|id| s.sessions.get(id));
    let is_get = request.method() == axum::http::Method::GET;
    match session {
        None if is_get => Redirect::to("/ui/login").into_response(),
        None => refused(
            StatusCode::FORBIDDEN,
            "Not logged in",
            "Log in again: this session is over.",
        ),
        Some(session) if !is_get && !session.admin() && request.uri().path() != "/ui/logout" => {
            refused(
                StatusCode::FORBIDDEN,
                "Read-only",
                &format!(
                    "Token `{}` has the `read` scope; changing anything needs `admin`.",
                    session.principal.name
                ),
            )
        }
        Some(session) => {
            request.extensions_mut().insert(session);
            next.run(request).await
        }
    }
}

/// A form's fields; each POST checks `csrf` against its session's.
pub(crate) type Fields = HashMap<String, String>;

/// A 403 unless the form's CSRF token is its session's.
pub(crate) fn csrf_refused(session: &Session, form: &Fields) -> Option<Response> {
    let given = form.get("csrf").map(String::as_bytes).unwrap_or_default();
    if constant_time_eq::constant_time_eq(given, session.csrf.as_bytes()) {
        None
    } else {
        Some(refused(
            StatusCode::FORBIDDEN,
            "Refused",
            "This form did not carry this session's CSRF token. Reload the page and try again.",
        ))
    }
}

/// Every page's `<head>`.
fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · EventPulse" }
            link rel="stylesheet" href="/ui/style.css";
        }
    }
}

/// An error page.
pub(crate) fn refused(status: StatusCode, title: &str, text: &str) -> Response {
    let body = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body { main class="narrow" { h1 { (title) } p { (text) } p { a href="/ui" { "Back to the console" } } } }
        }
    };
    (status, page_headers(), Html(body.into_string())).into_response()
}

fn page_headers() -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; script-src 'none'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    ]
}

/// A page of the console: the header with its navigation and who is
/// logged in, then `body`.
pub(crate) fn layout(title: &str, session: &Session, current: &str, body: Markup) -> Response {
    let nav = [
        ("/ui", "Incidents"),
        ("/ui/plugins", "Plugins"),
        ("/ui/dead-letters", "Dead letters"),
        ("/ui/audit", "Audit"),
        ("/ui/replay", "Replay"),
    ];
    let page = html! {
        (DOCTYPE)
        html lang="en" {
                        (head(title))
            body {
                header class="top" {
                    a class="brand" href="/ui" { "EventPulse" }
                    nav { @for (href, name) in nav {
                        a href=(href) class=[(href == current).then_some("current")] { (name) }
                    } }
                    div class="who" {
                        span { (session.principal.name) " · " (session.principal.scope.as_str()) }
                        form method="post" action="/ui/logout" {
                            (csrf_field(session))
                            button class="link" type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    (page_headers(), Html(page.into_string())).into_response()
}

/// The hidden CSRF field every form carries.
pub(crate) fn csrf_field(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("console.css"),
    )
        .into_response()
}

pub(crate) async fn login_page() -> Response {
    login_form(None)
}

fn login_form(error: Option<&str>) -> Response {
    let page = html! {
        (DOCTYPE)
        html lang="en" {
                        (head("Log in"))
            body { main class="narrow login" {
                h1 { "EventPulse" }
                p class="muted" { "Log in with an API token: " code { "read" } " to look, " code { "admin" } " to act." }
                @if let Some(e) = error { p class="error" { (e) } }
                form method="post" action="/ui/login" {
                    label { "Token" input type="password" name="token" autocomplete="off" required autofocus; }
                    button type="submit" { "Log in" }
                }
            } }
        }
    };
    let status = if error.is_some() {
        StatusCode::UNAUTHORIZED
    } else {
        StatusCode::OK
    };
    (status, page_headers(), Html(page.into_string())).into_response()
}

pub(crate) async fn login(State(s): State<ApiState>, Form(form): Form<Fields>) -> Response {
    let token = form.get("token").map(String::as_str).unwrap_or_default();
    let Some(principal) = s.tokens.verify(token).cloned() else {
        return login_form(Some("That token is not one this host knows."));
    };
    tracing::info!(token = %principal.name, "console login");
    let (id, _) = s.sessions.create(principal);
    let cookie = format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}",
        s.sessions.ttl.as_secs()
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/ui")).into_response()
}

pub(crate) async fn logout(
    State(s): State<ApiState>,
    headers: HeaderMap,
    axum::Extension(session): axum::Extension<Session>,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = csrf_refused(&session, &form) {
        return r;
    }
    if let Some(id) = session_id(&headers) {
        s.sessions.end(id);
    }
    let clear = format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    ([(header::SET_COOKIE, clear)], Redirect::to("/ui/login")).into_response()
}

/// A time in ms as `YYYY-MM-DD HH:MM:SS` UTC.
pub(crate) fn when(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A status or severity as a coloured badge.
pub(crate) fn badge(text: &str) -> Markup {
    html! { span class={ "badge " (text.to_ascii_lowercase()) } { (text) } }
}

/// Text that is JSON, pretty if it parses.
pub(crate) fn json_text(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

/// Marks up nothing: a placeholder for an empty cell.
pub(crate) fn none() -> Markup {
    PreEscaped("<span class=\"muted\">—</span>".to_owned())
}
