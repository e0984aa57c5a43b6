//! HTTP plumbing shared by every route: the server loop, extractors, the schema checks of
//! bodies and queries, paging, problems and middleware.

pub mod contract;
pub mod extract;
pub mod middleware;
pub mod paging;
pub mod problem;
pub mod server;
