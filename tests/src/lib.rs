//! Test harness for takgate: fake upstreams, certificates, clients.
