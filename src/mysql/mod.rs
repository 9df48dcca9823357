//! The MySQL client helpers every stage uses: connection options (URL, password, TLS), the one
//! classification of server errors, what the server is and whether it is set up for binlogd,
//! and information_schema look-ups. Imports only the leaves (`binlog`, `tls`, `units`,
//! `finding`, `filter`) and the decoder's schema types.

pub mod errors;
pub mod opts;
pub mod requirements;
pub mod schema;
pub mod server;

pub use errors::QueryError;
