//! One entry of a route's plugin chain ([`ChainEntry`]) and the idle instances it keeps
//! for reuse under worker isolation.

use std::sync::Arc;

use super::instance::load_budget;
use super::state::PluginContext;
use super::suspension::Suspension;
use super::{Image, Instance, LoadedPlugin, Phases, PluginFailure, PluginMetrics, message};
use crate::config::{Isolation, PluginSettings, PluginUse};

/// With `isolation = "worker"`, at most this many idle instances are kept per entry.
const MAX_IDLE_INSTANCES: usize = 64;

/// One entry of a route's plugin chain: a loaded plugin with that route's config and
/// limits.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    /// The plugin.
    pub plugin: Arc<LoadedPlugin>,
    /// Its limits and failure policy on this route.
    pub settings: PluginSettings,
    /// The route's use of the plugin as configured (a reload keeps an entry whose use
    /// and plugin version did not change, with its idle instances).
    pub usage: PluginUse,
    /// The phases called on this route: what the plugin asked for after `init` with
    /// the route's config (a subset of the plugin's phases).
    pub phases: Phases,
    pub(super) ctx: Arc<PluginContext>,
    /// The header edits this route's `init` declared, made by the gateway at the
    /// plugin's place without a call.
    pub(crate) declared: Option<Arc<message::DeclaredEdits>>,
    /// The request headers the plugin reads, sent with each request-phase call, when
    /// that phase takes one crossing (`on-request`, since 0.1.8); `None` for a plugin
    /// built for an earlier version, whose phase is `on-request-headers`.
    pub(crate) reads: Option<Arc<[http::HeaderName]>>,
    /// What instances start from: a snapshot taken after this route's `init` when one
    /// could be taken, else the plugin as loaded.
    pub(super) image: Arc<Image>,
    /// Boxed, as in [`ChainRun`](super::ChainRun): an instance is a few hundred bytes,
    /// and it moves between the idle list and a request's chain on every request.
    #[allow(clippy::vec_box)]
    pub(super) idle: Arc<std::sync::Mutex<Vec<Box<Instance>>>>,
    /// Whether its failures have it set aside for a while.
    pub(super) suspension: Arc<Suspension>,
}

impl ChainEntry {
    /// An instance for one request: fresh with request isolation; with worker
    /// isolation, a reused one when an idle one exists.
    pub async fn instantiate(&self) -> Result<Box<Instance>, PluginFailure> {
        self.instance(false).await
    }

    /// [`ChainEntry::instantiate`] for a request, which a fresh instance counts as its
    /// first use (a reused one counts each of its requests when it is taken).
    pub(crate) async fn instantiate_for_request(&self) -> Result<Box<Instance>, PluginFailure> {
        self.instance(true).await
    }

    /// A fresh instance for the gateway's load-time calls, under [`load_budget`]; give it
    /// the route's timeout back before releasing it to requests.
    pub(crate) async fn instantiate_for_load(&self) -> Result<Box<Instance>, PluginFailure> {
        Box::pin(Instance::new(
            &self.image,
            self.ctx.clone(),
            self.settings.memory_limit,
            load_budget(self.settings.timeout),
        ))
        .await
        .map(Box::new)
    }

    async fn instance(&self, for_request: bool) -> Result<Box<Instance>, PluginFailure> {
        if self.settings.isolation == Isolation::Worker {
            let reused = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop();
            if let Some(mut instance) = reused {
                instance.reset_for_request();
                return Ok(instance);
            }
        }
        // Boxed for the same reason as a fiber call: instantiation's future is large.
        let mut instance = Box::pin(Instance::new(
            &self.image,
            self.ctx.clone(),
            self.settings.memory_limit,
            self.settings.timeout,
        ))
        .await?;
        if for_request {
            instance.uses = 1;
        }
        Ok(Box::new(instance))
    }

    /// Hands back an instance after a request it served without failing. Request
    /// isolation drops it; worker isolation keeps it for reuse until it has served
    /// `max_reuse` requests, unless a call into it was abandoned half-way (the request
    /// was dropped mid-call).
    pub(crate) fn release(&self, instance: Box<Instance>) {
        // `uses` counts the requests it served: one per `instantiate_for_request` that
        // returned it (none for the instance `configure` made to ask for the phases).
        if self.settings.isolation != Isolation::Worker
            || instance.uses >= self.settings.max_reuse
            || !instance.finished
        {
            return;
        }
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < MAX_IDLE_INSTANCES {
            idle.push(instance);
        }
    }

    /// Whether instances start from a snapshot taken after this route's `init`.
    pub fn preinitialised(&self) -> bool {
        self.image.preinitialised
    }

    /// Why instances do not start from a snapshot (`None` when they do): the WASI
    /// interfaces this route's `init` called, say.
    pub fn not_preinitialised_because(&self) -> Option<String> {
        if self.preinitialised() {
            return None;
        }
        Some(
            super::preinit::fallback(&self.plugin.version, &self.usage.config_json).map_or_else(
                || "no snapshot could be taken".to_owned(),
                |why| why.to_string(),
            ),
        )
    }

    /// What the plugin reported through the metrics import.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.ctx.metrics
    }
}
