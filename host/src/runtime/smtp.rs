//! The `smtp` capability: the host sends a plugin's mail through the one
//! server its manifest grants, as the granted sender, with the granted
//! credentials (lettre; plain, STARTTLS or implicit TLS). The plugin never
//! sees the password; every send is audited with its outcome.
//!
//! Errors: a permanent (5xx) reply or a message lettre cannot build is
//! `failed`; anything that may pass later (4xx reply, connection refused,
//! timeout) is `unavailable`.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use super::bindings::eventpulse::plugin::{smtp, types};
use super::host::HostState;
use super::manifest::SmtpGrant;

type CapResult<T> = Result<T, types::CapabilityError>;

/// At most this many recipients per message.
const MAX_RECIPIENTS: usize = 50;

fn failed(what: impl std::fmt::Display) -> types::CapabilityError {
    types::CapabilityError::Failed(format!("smtp: {what}"))
}

impl HostState {
    fn smtp_transport(&self, grant: &SmtpGrant) -> CapResult<AsyncSmtpTransport<Tokio1Executor>> {
        let tls = || -> CapResult<TlsParameters> {
            let mut builder = TlsParameters::builder(grant.server.clone());
            if let Some(path) = &grant.ca_file {
                let pem = std::fs::read(path)
                    .map_err(|e| failed(format!("ca_file {}: {e}", path.display())))?;
                builder =
                    builder.add_root_certificate(Certificate::from_pem(&pem).map_err(failed)?);
            }
            builder.build_rustls().map_err(failed)
        };
        let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&grant.server);
        let builder = match grant.tls.as_str() {
            "none" => builder.tls(Tls::None),
            "starttls" => builder.tls(Tls::Required(tls()?)),
            "tls" => builder.tls(Tls::Wrapper(tls()?)),
            other => {
                return Err(failed(format!(
                    "tls `{other}` in the grant is not one of none, starttls, tls"
                )));
            }
        };
        let mut builder = builder
            .port(grant.port)
            .timeout(Some(Duration::from_millis(grant.timeout_ms)));
        if let Some(user) = &grant.username {
            let password = grant
                .password_secret
                .as_ref()
                .and_then(|name| self.env.secrets.get(name))
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(builder.build())
    }

    fn smtp_message(grant: &SmtpGrant, mail: smtp::Mail) -> CapResult<(Message, String)> {
        if mail.to.is_empty() || mail.to.len() > MAX_RECIPIENTS {
            return Err(failed(format!(
                "1 to {MAX_RECIPIENTS} recipients, got {}",
                mail.to.len()
            )));
        }
        let from: Mailbox = grant
            .from
            .parse()
            .map_err(|e| failed(format!("sender `{}` in the grant: {e}", grant.from)))?;
        let domain = from.email.domain().to_owned();
        let id = format!("<{}@{domain}>", uuid::Uuid::now_v7());
        let mut builder = Message::builder()
            .from(from)
            .subject(mail.subject)
            .message_id(Some(id.clone()));
        for to in &mail.to {
            let to: Mailbox = to
                .parse()
                .map_err(|e| failed(format!("recipient `{to}`: {e}")))?;
            builder = builder.to(to);
        }
        let message = match mail.html_body {
            Some(html) => {
                builder.multipart(MultiPart::alternative_plain_html(mail.text_body, html))
            }
            None => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(mail.text_body),
            ),
        }
        .map_err(failed)?;
        Ok((message, id))
    }
}

impl smtp::Host for HostState {
    async fn send(&mut self, mail: smtp::Mail) -> CapResult<String> {
        let Some(grant) = self.env.manifest.grants.smtp.clone() else {
            self.env.refuse_call("smtp", "send", "", "not granted");
            return Err(self.deny("smtp"));
        };
        let target = format!("{}:{} to {}", grant.server, grant.port, mail.to.join(","));
        // Built before the await: nothing of `self` is held across it.
        let prepared =
            Self::smtp_message(&grant, mail).and_then(|m| Ok((m, self.smtp_transport(&grant)?)));
        let sent = match prepared {
            Ok(((message, id), transport)) => {
                let span = super::host::capability_span("smtp", "send");
                let sent = tracing::Instrument::instrument(transport.send(message), span).await;
                sent.map(|_| id).map_err(|e| {
                    // lettre's errors name the server, never the password; redact anyway.
                    let text = self.env.redact(&format!("smtp: {e}"));
                    if e.is_permanent() || e.is_client() || e.is_tls() {
                        types::CapabilityError::Failed(text)
                    } else {
                        types::CapabilityError::Unavailable(text)
                    }
                })
            }
            Err(e) => Err(e),
        };
        let detail = sent.as_ref().err().map(|e| format!("{e:?}"));
        let outcome = detail.as_deref().map_or(Ok(()), Err);
        self.env.audit_call("smtp", "send", &target, outcome);
        sent
    }
}
