//! The end-to-end suite, built as one test binary: each module drives a real gateway
//! over real sockets. One binary instead of one per file keeps the link step (wasmtime,
//! Cranelift and hyper linked into every test executable) and the target directory
//! small.

mod access_log;
mod admin;
mod cli;
mod client_limits;
mod config_errors;
mod direct_response;
mod examples;
mod failover;
mod failures;
mod first_party;
mod forwarding;
mod h2_floods;
mod hostile_clients;
mod hostile_plugins;
mod jwt_tokens;
mod metrics;
mod mirror;
mod observability;
mod plugin_api_key;
mod plugin_cors;
mod plugin_headers;
mod plugin_ip_filter;
mod plugin_jwt_auth;
mod plugin_rate_limit;
mod plugins;
mod pooling;
mod reload;
mod routing;
mod routing_traffic;
mod shutdown;
mod streaming;
mod tls;
mod upgrade;
mod upstream_balancing;
mod upstream_config;
mod upstream_dns;
mod upstream_grpc;
mod upstream_health;
mod upstream_http2;
mod upstream_limits;
mod upstream_outlier;
mod upstream_retries;
mod upstream_tls;
