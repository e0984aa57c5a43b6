//! List pages: keyset pagination with an opaque cursor.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    jobs::Job,
    keys::KeyInfo,
    operators::AuditEntry,
    sagas::Saga,
    schedules::Schedule,
    webhooks::{Delivery, Endpoint},
};

/// The largest page a list gives.
pub const MAX_PAGE_LIMIT: u32 = 200;

/// Where a list goes on from: a page's `next_cursor`, passed back as `cursor`. (The 22
/// characters are the last item's id, in base64url; a made-up one that has this form is
/// not refused, it only starts the list somewhere.)
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[schema(pattern = r"^[A-Za-z0-9_-]{21}[AQgw]$")]
pub struct Cursor(pub String);

macro_rules! page {
    ($(#[$doc:meta])* $name:ident of $item:ty) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
        pub struct $name {
            pub data: Vec<$item>,
            /// Pass as `cursor` for the next page; `null` on the last one.
            pub next_cursor: Option<Cursor>,
        }
    };
}

page!(
    /// A page of jobs, newest first.
    JobPage of Job
);
page!(
    /// A page of sagas, newest first.
    SagaPage of Saga
);
page!(
    /// A page of schedules.
    SchedulePage of Schedule
);
page!(
    /// A page of webhook endpoints.
    EndpointPage of Endpoint
);
page!(
    /// A page of deliveries, newest first.
    DeliveryPage of Delivery
);
page!(
    /// A page of the audit log, newest first.
    AuditLogPage of AuditEntry
);
page!(
    /// A page of API keys, newest first.
    KeyPage of KeyInfo
);

/// The paging of a list that takes no filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// Page size (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 200)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
}
