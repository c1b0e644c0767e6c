//! takgate: the HTTP edge that replaces nginx in the OpenTAK Server pod.

pub mod http;
