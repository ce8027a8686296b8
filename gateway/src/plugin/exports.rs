//! The handler's functions in a plugin's component: found once at load by index, and
//! type-checked in an instance only when it first calls that phase. (Looking up and
//! checking all seven on every instantiation was a measurable share of a fresh
//! instance's cost; a request usually calls one or two.)

use wasmtime::component::{Component, ComponentExportIndex, Resource, TypedFunc};

use super::bindings::types;

/// The interface every plugin exports.
pub(crate) const HANDLER: &str = concat!("weir:plugin/handler@", env!("WEIR_WIT_VERSION"));

/// Where each handler function is in a component.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exports {
    pub(crate) init: ComponentExportIndex,
    pub(crate) phases: ComponentExportIndex,
    pub(crate) on_request_headers: ComponentExportIndex,
    pub(crate) on_request_body: ComponentExportIndex,
    pub(crate) on_response_headers: ComponentExportIndex,
    pub(crate) on_response_body: ComponentExportIndex,
    pub(crate) on_log: ComponentExportIndex,
    /// `header-reads` and `on-request` (since 0.1.8): the request-headers phase in one
    /// crossing. A plugin built for an earlier version has neither.
    pub(crate) one_crossing: Option<OneCrossing>,
}

/// The functions of the one-crossing request phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneCrossing {
    pub(crate) header_reads: ComponentExportIndex,
    pub(crate) on_request: ComponentExportIndex,
}

impl Exports {
    /// Finds the handler's functions, or says which is missing.
    pub(crate) fn new(component: &Component) -> Result<Exports, String> {
        let handler = component
            .get_export_index(None, HANDLER)
            .ok_or_else(|| format!("it does not export {HANDLER}"))?;
        let func = |name: &str| {
            component
                .get_export_index(Some(&handler), name)
                .ok_or_else(|| format!("its {HANDLER} has no function `{name}`"))
        };
        Ok(Exports {
            init: func("init")?,
            phases: func("phases")?,
            on_request_headers: func("on-request-headers")?,
            on_request_body: func("on-request-body")?,
            on_response_headers: func("on-response-headers")?,
            on_response_body: func("on-response-body")?,
            on_log: func("on-log")?,
            one_crossing: match (func("header-reads"), func("on-request")) {
                (Ok(header_reads), Ok(on_request)) => Some(OneCrossing {
                    header_reads,
                    on_request,
                }),
                (Err(_), Err(_)) => None,
                (Err(missing), _) | (_, Err(missing)) => {
                    return Err(format!(
                        "{missing}: `header-reads` and `on-request` come together (since 0.1.8)"
                    ));
                }
            },
        })
    }
}

/// `on-request-headers`.
pub(crate) type RequestHeadersFn = TypedFunc<(Resource<types::Request>,), (types::Action,)>;
/// `header-reads`.
pub(crate) type HeaderReadsFn = TypedFunc<(), (Vec<String>,)>;
/// `on-request`.
pub(crate) type RequestFn =
    TypedFunc<(Resource<types::Request>, types::RequestGiven), (types::RequestOutcome,)>;
/// `on-request-body`.
pub(crate) type RequestBodyFn<'a> =
    TypedFunc<(Resource<types::Request>, &'a [u8]), (types::BodyAction,)>;
/// `on-response-headers`.
pub(crate) type ResponseHeadersFn =
    TypedFunc<(Resource<types::Request>, Resource<types::Response>), (types::Action,)>;
/// `on-response-body`.
pub(crate) type ResponseBodyFn<'a> = TypedFunc<
    (
        Resource<types::Request>,
        Resource<types::Response>,
        &'a [u8],
    ),
    (types::BodyAction,),
>;
/// `on-log`.
pub(crate) type LogFn = TypedFunc<(Resource<types::Request>, Resource<types::Response>), ()>;
