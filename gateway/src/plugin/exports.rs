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
        })
    }
}

/// `on-request-headers`.
pub(crate) type RequestHeadersFn = TypedFunc<(Resource<types::Request>,), (types::Action,)>;
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
