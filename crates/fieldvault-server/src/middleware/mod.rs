//! Middleware applied to every request, outermost first: access log (with request id, client IP
//! and metrics), security headers, then the body-size and time limits.

pub mod access_log;
pub mod client_ip;
pub mod security_headers;
