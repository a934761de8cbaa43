//! PutMedia client.
