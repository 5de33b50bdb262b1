//! What the engine's HTTP clients (the YooKassa client, event delivery) share.

/// What went wrong on the way, in words that carry no request data.
pub(crate) fn transport_failure(error: &ureq::Error) -> &'static str {
    match error {
        ureq::Error::Timeout(_) => "timed out",
        ureq::Error::HostNotFound => "host not found",
        ureq::Error::ConnectionFailed => "connection failed",
        ureq::Error::Io(_) => "connection error",
        ureq::Error::Tls(_) | ureq::Error::Rustls(_) => "TLS error",
        _ => "invalid response",
    }
}
