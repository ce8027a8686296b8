//! The [`Plugin`] trait and the glue between it and the generated bindings.

use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::bindings::exports::weir::plugin::handler::Guest;
use crate::bindings::weir::plugin::types as wit;
use crate::message::{Action, Request, Response};

/// A phase of the request pipeline; a plugin lists the ones it implements in
/// [`Plugin::PHASES`], and the gateway calls only those.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// [`Plugin::on_request_headers`].
    RequestHeaders,
    /// [`Plugin::on_request_body`].
    RequestBody,
    /// [`Plugin::on_response_headers`].
    ResponseHeaders,
    /// [`Plugin::on_response_body`].
    ResponseBody,
    /// [`Plugin::on_log`].
    Log,
}

/// A gateway plugin. Implement the phases you need (each defaults to continuing
/// unchanged), list them in [`Plugin::PHASES`], and export the type with
/// [`export_plugin!`](crate::export_plugin).
///
/// The value is built by [`Plugin::new`] from the route's configuration once, when the
/// gateway loads the route: it runs `new` in an instance and snapshots that instance's
/// memory, and every later instance (a worker's instances under `isolation = "worker"`,
/// the default; a fresh one per request with `"request"`) starts from the snapshot with
/// the value already built. So
/// parse keys, compile regexes and build tables in `new`: that cost is paid once per
/// route, not per request.
///
/// Two rules follow. `new` must not print, read the clock or the environment (any WASI
/// call): the snapshot cannot keep what those hold, so such a plugin is instead built
/// anew in every fresh instance (correct, but slow). And whatever `new` leaves in memory
/// is the starting state of every instance, hash-map seeds included: do not generate
/// per-instance secrets there.
pub trait Plugin: Sized + 'static {
    /// The plugin's configuration: the route's `config = { ... }` table, deserialised
    /// with serde (from JSON the gateway makes of the TOML).
    type Config: DeserializeOwned;

    /// The phases this plugin implements.
    const PHASES: &'static [Phase];

    /// The phases this plugin needs with its configuration: [`Plugin::PHASES`] unless
    /// overridden. A route's config that leaves a phase with nothing to do can leave it
    /// out, and the gateway then skips that call on the route (each call costs about a
    /// microsecond). Only phases listed in [`Plugin::PHASES`] count.
    fn phases(&self) -> &[Phase] {
        Self::PHASES
    }

    /// Header edits this configuration makes on every request and every response,
    /// whatever they carry; none unless overridden. The gateway makes them itself at
    /// the plugin's place in the chain (request edits just before
    /// [`Plugin::on_request_headers`] would run, response edits just before
    /// [`Plugin::on_response_headers`] would), without calling the plugin: a plugin
    /// whose phase has nothing else to do leaves it out of [`Plugin::phases`] and costs
    /// nothing per request. Asked once, after [`Plugin::new`]; needs a gateway speaking
    /// `weir:plugin` 0.1.2 or later. In native tests, apply them with
    /// [`HeaderEdit::apply`](crate::HeaderEdit::apply).
    fn static_edits(&self) -> crate::StaticEdits {
        crate::StaticEdits::default()
    }

    /// Builds the plugin from its configuration. An error here makes the gateway refuse
    /// the route's config at load time, with this message.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// After routing, before the upstream: read and edit the request, or answer it.
    fn on_request_headers(&self, _request: &mut Request<'_>) -> Action {
        Action::Continue
    }

    /// With the whole request body (up to the plugin's `max_body_bytes`); edit it in
    /// place. The request's headers and path can still be edited.
    fn on_request_body(&self, _request: &mut Request<'_>, _body: &mut Vec<u8>) -> Action {
        Action::Continue
    }

    /// With the response head, in reverse chain order: edit it, or replace the response.
    /// It is the upstream's response or a local one: a later plugin's, or the gateway's
    /// own 502, 503 or 504 when the upstream failed.
    fn on_response_headers(&self, _request: &Request<'_>, _response: &mut Response<'_>) -> Action {
        Action::Continue
    }

    /// With the whole response body (up to the plugin's `max_body_bytes`).
    fn on_response_body(
        &self,
        _request: &Request<'_>,
        _response: &Response<'_>,
        _body: &mut Vec<u8>,
    ) -> Action {
        Action::Continue
    }

    /// After the response was written. It cannot change or delay the response.
    fn on_log(&self, _request: &Request<'_>, _response: &Response<'_>) {}
}

/// Parses the configuration and builds the plugin.
pub fn build<P: Plugin>() -> Result<P, String> {
    let json = crate::host::config_json();
    P::new(parse_config(&json)?)
}

/// Deserialises a plugin's JSON config; an error names the key it is about
/// (`` `limits.burst`: invalid type... ``) rather than a position in JSON the operator
/// never wrote (the gateway converts their TOML).
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    let mut deserializer = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let mut message = e.into_inner().to_string();
        if let Some(at) = message.rfind(" at line ") {
            message.truncate(at);
        }
        if path == "." {
            format!("invalid configuration: {message}")
        } else {
            format!("`{path}`: {message}")
        }
    })
}

/// The glue the export macro instantiates for a plugin type `P`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Adapter<P>(std::marker::PhantomData<P>);

/// Holds the instance's plugin value; a Wasm instance is single-threaded, and a fresh
/// instance starts with this empty.
#[doc(hidden)]
pub trait Slot: Plugin {
    fn slot() -> &'static OnceLock<Result<Self, String>>;
}

fn instance<P: Slot>() -> Result<&'static P, &'static str> {
    P::slot()
        .get_or_init(build::<P>)
        .as_ref()
        .map_err(String::as_str)
}

fn failed(message: &str) -> wit::LocalResponse {
    crate::host::log(crate::host::Level::Error, message);
    wit::LocalResponse {
        status: 500,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

impl<P: Slot> Guest for Adapter<P> {
    fn init() -> Result<(), String> {
        let plugin = instance::<P>().map_err(str::to_owned)?;
        let edits = plugin.static_edits();
        if edits.is_empty() {
            return Ok(());
        }
        edits.declare()
    }

    fn phases() -> Vec<wit::Phase> {
        // Built (after `init` for a route): what this config needs; before, all.
        let phases = match P::slot().get() {
            Some(Ok(plugin)) => plugin.phases(),
            _ => P::PHASES,
        };
        phases
            .iter()
            .filter(|p| P::PHASES.contains(p))
            .map(|p| match p {
                Phase::RequestHeaders => wit::Phase::RequestHeaders,
                Phase::RequestBody => wit::Phase::RequestBody,
                Phase::ResponseHeaders => wit::Phase::ResponseHeaders,
                Phase::ResponseBody => wit::Phase::ResponseBody,
                Phase::Log => wit::Phase::Log,
            })
            .collect()
    }

    fn on_request_headers(request: &wit::Request) -> wit::Action {
        let plugin = match instance::<P>() {
            Ok(p) => p,
            Err(e) => return wit::Action::Respond(failed(e)),
        };
        action(plugin.on_request_headers(&mut Request::from_host(request)))
    }

    fn on_request_body(request: &wit::Request, mut body: Vec<u8>) -> wit::BodyAction {
        let plugin = match instance::<P>() {
            Ok(p) => p,
            Err(e) => return wit::BodyAction::Respond(failed(e)),
        };
        let original = body.clone();
        match plugin.on_request_body(&mut Request::from_host(request), &mut body) {
            Action::Continue => wit::BodyAction::Continue((body != original).then_some(body)),
            Action::Respond(r) => wit::BodyAction::Respond(r.into_wit()),
        }
    }

    fn on_response_headers(request: &wit::Request, response: &wit::Response) -> wit::Action {
        let plugin = match instance::<P>() {
            Ok(p) => p,
            Err(e) => return wit::Action::Respond(failed(e)),
        };
        action(plugin.on_response_headers(
            &Request::from_host(request),
            &mut Response::from_host(response),
        ))
    }

    fn on_response_body(
        request: &wit::Request,
        response: &wit::Response,
        mut body: Vec<u8>,
    ) -> wit::BodyAction {
        let plugin = match instance::<P>() {
            Ok(p) => p,
            Err(e) => return wit::BodyAction::Respond(failed(e)),
        };
        let original = body.clone();
        match plugin.on_response_body(
            &Request::from_host(request),
            &Response::from_host(response),
            &mut body,
        ) {
            Action::Continue => wit::BodyAction::Continue((body != original).then_some(body)),
            Action::Respond(r) => wit::BodyAction::Respond(r.into_wit()),
        }
    }

    fn on_log(request: &wit::Request, response: &wit::Response) {
        if let Ok(plugin) = instance::<P>() {
            plugin.on_log(&Request::from_host(request), &Response::from_host(response));
        }
    }
}

fn action(action: Action) -> wit::Action {
    match action {
        Action::Continue => wit::Action::Continue,
        Action::Respond(r) => wit::Action::Respond(r.into_wit()),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_config;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code, reason = "only deserialised")]
    struct Config {
        limit: u32,
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "only deserialised")]
    struct Inner {
        names: Vec<String>,
    }

    #[test]
    fn config_errors_name_the_key_not_a_json_position() {
        let e = parse_config::<Config>(r#"{"limit": -1}"#).unwrap_err();
        assert!(e.starts_with("`limit`: invalid value: integer `-1`"), "{e}");
        assert!(!e.contains("line"), "{e}");
        let e = parse_config::<Config>(r#"{"limit": 1, "inner": {"names": [1]}}"#).unwrap_err();
        assert!(e.starts_with("`inner.names[0]`: invalid type"), "{e}");
        let e = parse_config::<Config>(r#"{"limit": 1, "limt": 2}"#).unwrap_err();
        assert!(e.starts_with("`limt`: unknown field `limt`"), "{e}");
        assert_eq!(parse_config::<Config>(r#"{"limit": 3}"#).unwrap().limit, 3);
    }
}
