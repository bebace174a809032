//! The API described as OpenAPI 3.1, generated from the handlers' own
//! request and response types (`utoipa`). Which token a route takes comes
//! from the router's route list ([`super::routes`]), so the document and
//! the guards cannot disagree.

use axum::Json;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr, Response, ResponseBuilder, SecurityRequirement};

use super::{Guard, approvals, ingest, lists, plugins, records, replay, routes};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "EventPulse",
        description = "Alerts in, sandboxed rules and runbook actions out: the admin and ingest API."
    ),
    paths(
        plugins::list_plugins, plugins::reload, plugins::plugin, plugins::enable,
        plugins::disable, plugins::reset_breaker, plugins::dry_run,
        lists::incidents, records::incident, lists::acknowledge, lists::unacknowledge,
        lists::alerts, lists::actions, lists::notifications, lists::decisions,
        records::dead_letters, records::replay_dead_letter, records::audit_log,
        records::breakers, records::silences, records::create_silence,
        records::expire_silence, approvals::approvals, approvals::approve, approvals::reject,
        ingest::ingest_alertmanager, ingest::ingest_event, ingest::ingest_kubernetes,
                replay::replay, document,
    ),
    components(schemas(super::ErrorBody)),
    tags(
        (name = "incidents", description = "incidents, their alerts, actions, notifications and decisions"),
        (name = "plugins", description = "the plugin registry"),
        (name = "operations", description = "dead letters, audit, breakers, silences"),
        (name = "approvals", description = "actions waiting for a person"),
                (name = "ingest", description = "alerts and events in"),
        (name = "replay", description = "a rule over stored events, diffed with what was decided"),
        (name = "meta", description = "this document"),
    )
)]
struct ApiDoc;

/// The document, with each operation's security and its 401/403 answers
/// set from the route list.
pub fn spec() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    let components = doc.components.get_or_insert_with(Default::default);
    let bearer = |what: &str| {
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some(what))
                .build(),
        )
    };
    components.add_security_scheme(
        "api_token",
        bearer("an API token: `read` scope for GET, `admin` for everything"),
    );
    components.add_security_scheme("ingest_token", bearer("`ingest.token`, when one is set"));
    let error = |text: &str| -> RefOr<Response> {
        ResponseBuilder::new()
            .description(text)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build()
            .into()
    };
    for route in routes() {
        let Some(item) = doc.paths.paths.get_mut(route.path) else {
            continue;
        };
        let op = match route.method {
            "GET" => item.get.as_mut(),
            "POST" => item.post.as_mut(),
            "DELETE" => item.delete.as_mut(),
            _ => None,
        };
        let Some(op) = op else { continue };
        let scheme = match route.guard {
            Guard::Scoped => "api_token",
            Guard::Ingest => "ingest_token",
            _ => continue,
        };
        let required = SecurityRequirement::new::<_, _, &str>(scheme, []);
        op.security = Some(if route.guard == Guard::Ingest {
            // Only when `ingest.token` is set: an empty requirement makes
            // the token optional.
            vec![required, SecurityRequirement::default()]
        } else {
            vec![required]
        });
        op.responses
            .responses
            .entry("401".into())
            .or_insert_with(|| error("missing or wrong token"));
        if route.guard == Guard::Scoped && route.method != "GET" {
            op.responses
                .responses
                .entry("403".into())
                .or_insert_with(|| error("the token's scope does not cover this route"));
        }
        if route.guard == Guard::Scoped {
            op.responses
                .responses
                .entry("503".into())
                .or_insert_with(|| error("the store is unavailable; retry"));
        }
    }
    doc
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
pub(super) async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(spec())
}
