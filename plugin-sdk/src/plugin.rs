//! The [`Plugin`] trait, the phases, and the glue between them and the generated
//! bindings.

use std::cell::RefCell;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;

use crate::bindings::exports::weir::plugin::handler::Guest;
use crate::bindings::weir::plugin::types as wit;
use crate::error::Error;
use crate::message::{Action, Body, Request, Response};

/// A phase of the request pipeline: the type the WIT's `phase` enum generates, so the
/// gateway, the ABI and the SDK share one list. A plugin's phases are the `on_*`
/// methods its `#[plugin]` block implements; [`Plugin::phases`] can narrow them per
/// config.
pub use crate::bindings::weir::plugin::types::Phase;

/// Every phase, in pipeline order.
pub(crate) const ALL: [Phase; 5] = [
    Phase::RequestHeaders,
    Phase::RequestBody,
    Phase::ResponseHeaders,
    Phase::ResponseBody,
    Phase::Log,
];

/// The [`Plugin`] method that implements `phase`. An exhaustive match: a phase added
/// to the WIT does not build until it has its method here.
pub(crate) const fn method(phase: Phase) -> &'static str {
    match phase {
        Phase::RequestHeaders => "on_request_headers",
        Phase::RequestBody => "on_request_body",
        Phase::ResponseHeaders => "on_response_headers",
        Phase::ResponseBody => "on_response_body",
        Phase::Log => "on_log",
    }
}

/// The phase a method implements, for the `#[plugin]` attribute; a compile-time error
/// for a name that is not a phase method.
#[doc(hidden)]
pub const fn phase_of(name: &str) -> Phase {
    let mut i = 0;
    while i < ALL.len() {
        if eq(method(ALL[i]).as_bytes(), name.as_bytes()) {
            return ALL[i];
        }
        i += 1;
    }
    panic!("an `on_*` method that is not a phase of weir_plugin_sdk::Plugin")
}

const fn eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// What a phase returns: what to do next, or an [`Error`] that fails the call.
pub type PhaseResult = Result<Action, Error>;

/// A gateway plugin. Implement it in a block marked `#[weir_plugin_sdk::plugin]`: the
/// phases the gateway calls are the `on_*` methods written there (each left out
/// continues unchanged and costs nothing), and the attribute exports the type as the
/// component's plugin. There is no list of phases to keep in step.
///
/// # What lives how long
///
/// - **The plugin value** is built by [`Plugin::new`] from the route's configuration
///   once, when the gateway loads the route: it runs `new` in an instance and snapshots
///   that instance's memory, and every later instance starts from the snapshot with the
///   value already built. It is immutable afterwards (phases get `&self`). So parse
///   keys, compile regexes and build tables in `new`: that is paid once per route.
/// - **The per-request state** ([`Plugin::State`]) is created (with `Default`) when a
///   request first reaches the plugin, lent `&mut` to every phase of that request,
///   handed by value to [`Plugin::on_log`], and gone when the request ends: no other
///   request ever sees it, under either isolation mode. Pass data from the request
///   phase to the response or log phase here. (A failed call ends it early: later
///   phases of that request start from `Default`.)
/// - **Statics and interior mutability** (a `static`, a `Cell` or `Mutex` in the plugin
///   value) live as long as the instance. Under `isolation = "worker"` (the default) an
///   instance serves many requests one after another, so such data is shared between
///   requests (from different clients) until the instance is recycled; under
///   `isolation = "request"` each request gets a fresh instance. Use them only for
///   caches you would be happy for any client to read, on your own responsibility;
///   data that must outlive a request belongs in the key-value store
///   ([`host::kv`](crate::host::kv)).
///
/// # Pre-initialisation
///
/// `new` must not make a WASI call (print, read the clock, the environment or random
/// bytes): the snapshot cannot keep what those hold, so such a plugin is instead built
/// anew in every fresh instance (correct, but slow; `weir check` and `weir plugin
/// inspect` say so). `std::collections::HashMap` seeds itself from random bytes when
/// created: in the plugin value use a `BTreeMap`, or a `HashMap` with a fixed hasher
/// (`HashMap::with_hasher(BuildHasherDefault::<DefaultHasher>::default())`). And
/// whatever `new` leaves in memory is the starting state of every instance: do not
/// generate per-instance secrets there.
pub trait Plugin: Sized + 'static {
    /// The plugin's configuration: the route's `config = { ... }` table, deserialised
    /// with serde (from JSON the gateway makes of the TOML). Give its fields serde
    /// defaults so that the plugin loads with no `config` at all where it can.
    type Config: DeserializeOwned;

    /// Per-request state: `()` for none. See "What lives how long" above.
    type State: Default;

    /// The phases implemented in the `#[plugin]` block; written by the attribute.
    #[doc(hidden)]
    const __PHASES_FROM_PLUGIN_ATTRIBUTE: &'static [Phase];

    /// Builds the plugin from its configuration. An error here makes the gateway refuse
    /// the route's config at load time, with this message.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The phases this configuration needs, among those implemented (all of them
    /// unless overridden). A route's config that leaves a phase with nothing to do can
    /// leave it out, and the gateway then skips that call on the route (each call costs
    /// about a microsecond). Phases not implemented are ignored.
    fn phases(&self) -> &[Phase] {
        Self::__PHASES_FROM_PLUGIN_ATTRIBUTE
    }

    /// Header edits this configuration makes on every request and every response,
    /// whatever they carry; none unless overridden. The gateway makes them itself at
    /// the plugin's place in the chain (request edits just before
    /// [`Plugin::on_request_headers`] would run, response edits just before
    /// [`Plugin::on_response_headers`] would), without calling the plugin: the fast
    /// path of [`Request::response_headers`](crate::Request::response_headers) for
    /// edits that do not depend on the request. A plugin whose phase has nothing else
    /// to do leaves it out of [`Plugin::phases`] and costs nothing per request. Asked
    /// once, after [`Plugin::new`].
    fn static_edits(&self) -> crate::StaticEdits {
        crate::StaticEdits::default()
    }

    /// The request headers [`Plugin::on_request_headers`] reads, by name (any case):
    /// none unless overridden. The gateway sends their fields with each call, so
    /// reading them costs nothing, where reading another header is a call into the
    /// gateway (~0.2 µs). Reading any header works either way: this only makes the
    /// ones listed free. Asked once, after [`Plugin::new`]; more than 64 names, or one
    /// that is not a valid header name, refuses the route's config.
    ///
    /// ```
    /// # struct Tenant { header: String }
    /// # impl Tenant {
    /// fn header_reads(&self) -> Vec<&str> {
    ///     vec!["authorization", &self.header]
    /// }
    /// # }
    /// ```
    fn header_reads(&self) -> Vec<&str> {
        Vec::new()
    }

    /// After routing, before the upstream: read and edit the request, or answer it.
    /// Inside the gateway (from WIT 0.1.8 on) the whole phase is one call: the headers
    /// in [`Plugin::header_reads`] come with it, and its header edits (of the request
    /// and, through [`Request::response_headers`], of the response) go back with its
    /// result; each is checked by the gateway's rules as it is made here, so a refused
    /// edit is an `Err` at once.
    fn on_request_headers(
        &self,
        _request: &mut Request<'_>,
        _state: &mut Self::State,
    ) -> PhaseResult {
        Ok(Action::Continue)
    }

    /// With the whole request body (up to the plugin's `max_body_bytes`); change it
    /// through [`Body`]. The request's headers and path can still be edited.
    fn on_request_body(
        &self,
        _request: &mut Request<'_>,
        _body: &mut Body,
        _state: &mut Self::State,
    ) -> PhaseResult {
        Ok(Action::Continue)
    }

    /// With the response head, in reverse chain order: edit it, or replace the response.
    /// It is the upstream's response or a local one: a later plugin's, or the gateway's
    /// own 502, 503 or 504 when the upstream failed.
    fn on_response_headers(
        &self,
        _request: &Request<'_>,
        _response: &mut Response<'_>,
        _state: &mut Self::State,
    ) -> PhaseResult {
        Ok(Action::Continue)
    }

    /// With the whole response body (up to the plugin's `max_body_bytes`).
    fn on_response_body(
        &self,
        _request: &Request<'_>,
        _response: &Response<'_>,
        _body: &mut Body,
        _state: &mut Self::State,
    ) -> PhaseResult {
        Ok(Action::Continue)
    }

    /// After the response was written: the request's last phase, with its state. It
    /// cannot change or delay the response.
    fn on_log(&self, _request: &Request<'_>, _response: &Response<'_>, _state: Self::State) {}
}

/// The phases `plugin` asks for: those it implements, narrowed by [`Plugin::phases`],
/// in pipeline order.
pub(crate) fn active_phases<P: Plugin>(plugin: Option<&P>) -> Vec<Phase> {
    let wanted = plugin.map_or(P::__PHASES_FROM_PLUGIN_ATTRIBUTE, P::phases);
    ALL.into_iter()
        .filter(|p| P::__PHASES_FROM_PLUGIN_ATTRIBUTE.contains(p) && wanted.contains(p))
        .collect()
}

/// Parses the configuration and builds the plugin.
pub fn build<P: Plugin>() -> Result<P, String> {
    let json = crate::host::config_json();
    P::new(parse_config(&json)?)
}

/// Deserialises a plugin's JSON config; an error names the key it is about
/// (`` `limits.burst`: invalid type... ``) rather than a position in JSON the operator
/// never wrote (the gateway converts their TOML).
///
/// A route that gives no config hands the plugin `{}`; a plugin without configuration
/// can say `type Config = ();`, which takes that too.
pub fn parse_config<C: DeserializeOwned>(json: &str) -> Result<C, String> {
    if json.trim() == "{}"
        && let Ok(config) = serde_json::from_str::<C>("null")
        && serde_json::from_str::<C>(json).is_err()
    {
        return Ok(config);
    }
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

/// Whether `S` holds nothing, so per-request state needs no bookkeeping.
const fn stateless<S>() -> bool {
    std::mem::size_of::<S>() == 0 && !std::mem::needs_drop::<S>()
}

/// An instance's current request state: the request's serial and its state.
#[doc(hidden)]
pub type StateSlot<S> = RefCell<Option<(u64, S)>>;

/// The glue the export macro instantiates for a plugin type `P`.
#[doc(hidden)]
#[derive(Debug)]
pub struct Adapter<P>(std::marker::PhantomData<P>);

/// Where an instance keeps its plugin value and the current request's state; written by
/// the export macro. A Wasm instance is single-threaded and serves one request at a
/// time, and a fresh instance starts with both empty.
#[doc(hidden)]
pub trait Slot: Plugin {
    fn slot() -> &'static OnceLock<Result<Self, String>>;
    fn state() -> &'static std::thread::LocalKey<StateSlot<Self::State>>;
    fn crosses_phases() -> &'static std::thread::LocalKey<std::cell::OnceCell<bool>>;
}

fn instance<P: Slot>() -> Result<&'static P, &'static str> {
    P::slot()
        .get_or_init(build::<P>)
        .as_ref()
        .map_err(String::as_str)
}

/// Runs `f` with the current request's state, created when the request is new to this
/// instance (dropping the previous request's, if it was not handed to `on_log`).
fn with_state<P: Slot, R>(f: impl FnOnce(&mut P::State) -> R) -> R {
    if stateless::<P::State>() || !state_crosses_phases::<P>() {
        return f(&mut P::State::default());
    }
    let serial = crate::host::request_serial();
    P::state().with(|cell| {
        let mut slot = cell.borrow_mut();
        if !matches!(&*slot, Some((s, _)) if *s == serial) {
            *slot = Some((serial, P::State::default()));
        }
        let (_, state) = slot.as_mut().expect("set just above");
        f(state)
    })
}

/// Whether the plugin, as configured, has two phases or more, so that a request's
/// state can pass from one to another; with one, each call gets a fresh state and the
/// instance keeps none (one host call less per request). Worked out once per instance.
fn state_crosses_phases<P: Slot>() -> bool {
    P::crosses_phases().with(|crosses| {
        *crosses.get_or_init(|| {
            let plugin = match P::slot().get() {
                Some(Ok(plugin)) => Some(plugin),
                _ => None,
            };
            active_phases::<P>(plugin).len() > 1
        })
    })
}

/// Takes the current request's state out, for `on_log`: nothing is left behind.
fn take_state<P: Slot>() -> P::State {
    if stateless::<P::State>() || !state_crosses_phases::<P>() {
        return P::State::default();
    }
    let serial = crate::host::request_serial();
    P::state().with(|cell| match cell.borrow_mut().take() {
        Some((s, state)) if s == serial => state,
        _ => P::State::default(),
    })
}

/// The bytes a one-crossing phase's edit buffer starts with: a typical phase's edits.
const EDITS_CAPACITY: usize = 256;

/// The names [`Plugin::header_reads`] gives, lower-case: asked once per instance (the
/// plugin value does not change, and an instance holds one plugin).
fn reads<P: Plugin>(plugin: &P) -> &'static [String] {
    static READS: OnceLock<Vec<String>> = OnceLock::new();
    READS.get_or_init(|| {
        plugin
            .header_reads()
            .into_iter()
            .map(str::to_ascii_lowercase)
            .collect()
    })
}

/// Fails the call with `error` (the gateway ignores what the call returns).
fn fail(error: &Error) {
    crate::host::fail(error.message());
}

fn action(result: PhaseResult) -> wit::Action {
    match result {
        Ok(Action::Continue) => wit::Action::Continue,
        Ok(Action::Respond(r)) => wit::Action::Respond(r.into_wit()),
        Err(e) => {
            fail(&e);
            wit::Action::Continue
        }
    }
}

fn body_action(result: PhaseResult, body: Body) -> wit::BodyAction {
    match result {
        Ok(Action::Continue) => {
            wit::BodyAction::Continue(body.is_changed().then(|| body.into_bytes()))
        }
        Ok(Action::Respond(r)) => wit::BodyAction::Respond(r.into_wit()),
        Err(e) => {
            fail(&e);
            wit::BodyAction::Continue(None)
        }
    }
}

/// The instance's plugin, or `None` after failing the call with why it could not be
/// built.
fn built<P: Slot>() -> Option<&'static P> {
    instance::<P>().map_err(crate::host::fail).ok()
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
        let plugin = match P::slot().get() {
            Some(Ok(plugin)) => Some(plugin),
            _ => None,
        };
        active_phases::<P>(plugin)
    }

    fn on_request_headers(request: &wit::Request) -> wit::Action {
        let Some(plugin) = built::<P>() else {
            return wit::Action::Continue;
        };
        let mut request = Request::from_host(request);
        action(with_state::<P, _>(|state| {
            plugin.on_request_headers(&mut request, state)
        }))
    }

    fn header_reads() -> Vec<String> {
        match P::slot().get() {
            Some(Ok(plugin)) => reads(plugin).to_vec(),
            _ => Vec::new(),
        }
    }

    fn on_request(request: &wit::Request, given: wit::RequestGiven) -> wit::RequestOutcome {
        let Some(plugin) = built::<P>() else {
            return wit::RequestOutcome {
                action: wit::Action::Continue,
                edits: Vec::new(),
            };
        };
        // The request's edits and those queued for the response, in one buffer: one
        // allocation for the phase, however many edits.
        let edits = RefCell::new(Vec::with_capacity(EDITS_CAPACITY));
        let mut request = Request::from_call(request, reads(plugin), given, &edits);
        let result = with_state::<P, _>(|state| plugin.on_request_headers(&mut request, state));
        drop(request);
        wit::RequestOutcome {
            action: action(result),
            edits: edits.into_inner(),
        }
    }

    fn on_request_body(request: &wit::Request, body: Vec<u8>) -> wit::BodyAction {
        let Some(plugin) = built::<P>() else {
            return wit::BodyAction::Continue(None);
        };
        let mut request = Request::from_host(request);
        let mut body = Body::new(body);
        let result =
            with_state::<P, _>(|state| plugin.on_request_body(&mut request, &mut body, state));
        body_action(result, body)
    }

    fn on_response_headers(request: &wit::Request, response: &wit::Response) -> wit::Action {
        let Some(plugin) = built::<P>() else {
            return wit::Action::Continue;
        };
        let request = Request::from_host(request);
        let mut response = Response::from_host(response);
        action(with_state::<P, _>(|state| {
            plugin.on_response_headers(&request, &mut response, state)
        }))
    }

    fn on_response_body(
        request: &wit::Request,
        response: &wit::Response,
        body: Vec<u8>,
    ) -> wit::BodyAction {
        let Some(plugin) = built::<P>() else {
            return wit::BodyAction::Continue(None);
        };
        let request = Request::from_host(request);
        let response = Response::from_host(response);
        let mut body = Body::new(body);
        let result = with_state::<P, _>(|state| {
            plugin.on_response_body(&request, &response, &mut body, state)
        });
        body_action(result, body)
    }

    fn on_log(request: &wit::Request, response: &wit::Response) {
        if let Some(plugin) = built::<P>() {
            plugin.on_log(
                &Request::from_host(request),
                &Response::from_host(response),
                take_state::<P>(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_has_its_method_and_back() {
        for (i, phase) in ALL.into_iter().enumerate() {
            assert_eq!(phase_of(method(phase)), phase);
            assert_eq!(phase as usize, i, "ALL is in the WIT's order");
        }
    }

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

    #[test]
    fn no_config_is_a_unit_config() {
        parse_config::<()>("{}").unwrap();
        assert!(parse_config::<()>(r#"{"a": 1}"#).is_err());
        // An optional config is absent when none is given.
        assert!(parse_config::<Option<Inner>>("{}").unwrap().is_none());
    }
}
