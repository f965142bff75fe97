//! Domain types, parsed at the edge so the core never re-validates.

pub mod appointment;
pub mod ids;
pub mod lane;
pub mod message;
pub mod money;
pub mod phone;
pub mod records;

pub use ids::{MessageId, PhoneNumberId, TenantId};
pub use lane::Lane;
pub use message::{MessageError, MessageState, NewMessage, StatusUpdate, TimelineEvent};
pub use money::Money;
pub use phone::E164;
